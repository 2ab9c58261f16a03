"""Apply a checkpoint to a pipeline at a strength, in place, and restore it bit-exactly.

``apply`` writes W = W0 + s·ΔW into the touched weights (DoRA and OFT: W0 + s·(W' − W0); GLoRA and
(IA)³: ΔW computed from W0; LyCORIS' full and norm modules also b = b0 + s·Δb into biases), so a
render runs at base-model speed; ``restore`` copies the pristine W0 back, so a thousand
switches never drift. Per pipeline, a registry keeps:

- a pristine copy of every weight any checkpoint touched (made once, on the model's
  device and in its dtype; kept across checkpoints so a switch copies nothing new);
- the layer indexes (built once);
- the current checkpoint's effective ΔW in float32 (within ``DELTA_CACHE_BYTES``), so a
  strength change for the same checkpoint is one fused add per weight, no matmul.

Embeddings bundled with a LoRA (pivotal tuning) become tokens of the pipeline's tokenizers while
the checkpoint is applied, through diffusers' own textual-inversion loader, at full strength at
every LoRA strength (as A1111 loads them); ``restore`` takes them out again.

The pristine copies assume nobody else writes those weights while a checkpoint is
managed here; call ``restore(pipeline, release=True)`` before changing the base.
"""

from __future__ import annotations

import contextlib
import math
import os
import weakref
from dataclasses import dataclass, field

import torch

from lorasel.checkpoints.deltas import BASE_KINDS, base_delta, dora_delta, module_delta
from lorasel.checkpoints.model import LoraCheckpoint
from lorasel.checkpoints.targets import Resolver, Target
from lorasel.errors import CheckpointError, ConfigError

# Effective ΔW kept for the current checkpoint (float32): SD1.5 attention + FF at any rank is
# ~1.3 GB; above the budget the rest is recomputed on each strength change.
DELTA_CACHE_BYTES = 2 << 30


@dataclass
class _State:
    resolver: Resolver
    pristine: dict[str, torch.Tensor] = field(default_factory=dict)
    layers: dict[str, torch.nn.Module] = field(default_factory=dict)
    applied: set[str] = field(default_factory=set)
    current: tuple[str, float] | None = None  # (checkpoint sha256, strength)
    plan_for: str | None = None  # sha256 whose targets and deltas are cached
    targets: list[Target] = field(default_factory=list)
    deltas: dict[str, torch.Tensor] = field(default_factory=dict)
    embedded: str | None = None  # sha256 whose bundled embeddings are tokens now
    # (encoder, tokens added, its vocabulary size and its eos_token_id before)
    tokens: list[tuple[str, list[str], int, int | None]] = field(default_factory=list)


_STATES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _state(pipeline) -> _State:
    state = _STATES.get(pipeline)
    if state is None:
        state = _State(resolver=Resolver(pipeline))
        _STATES[pipeline] = state
    return state


def _family(pipeline) -> str:
    from lorasel.models.base import base_family

    if isinstance(pipeline, torch.nn.Module):
        return "unknown"
    try:
        return base_family(pipeline)
    except AttributeError:
        return "unknown"


def current(pipeline) -> tuple[str, float] | None:
    """(sha256, strength) of the checkpoint applied to ``pipeline`` now, or None for the base."""
    state = _STATES.get(pipeline)
    return state.current if state else None


@torch.no_grad()
def restore(pipeline, *, release: bool = False) -> None:
    """Put back the base weights, bit-exactly. ``release`` also frees the pristine copies and caches."""
    state = _STATES.get(pipeline)
    if state is None:
        return
    for key in state.applied:
        _param(state, key).copy_(state.pristine[key])
    _remove_embeddings(state, pipeline)
    state.applied = set()
    state.current = None
    if release:
        del _STATES[pipeline]


_TOKENIZERS = {"text_encoder": "tokenizer", "text_encoder_2": "tokenizer_2"}


@contextlib.contextmanager
def _quiet_transformers():
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)


def _remove_embeddings(state: _State, pipeline) -> None:
    while state.tokens:
        component, tokens, vocab, eos = state.tokens.pop()
        encoder = getattr(pipeline, component)
        pipeline.unload_textual_inversion(
            tokens=tokens, tokenizer=getattr(pipeline, _TOKENIZERS[component]), text_encoder=encoder
        )
        encoder.config.vocab_size = vocab  # diffusers leaves the grown size (the base's identity)
        getattr(encoder, "text_model", encoder).eos_token_id = eos
    state.embedded = None


def _add_embeddings(state: _State, pipeline, checkpoint: LoraCheckpoint) -> None:
    """Make the checkpoint's bundled embeddings tokens of the pipeline (the previous one's out)."""
    if state.embedded == checkpoint.sha256:
        return
    _remove_embeddings(state, pipeline)
    if not checkpoint.embeddings or isinstance(pipeline, torch.nn.Module):
        return
    for name, parts in checkpoint.embeddings.items():
        for component, vectors in parts.items():
            encoder = getattr(pipeline, component, None)
            tokenizer = getattr(pipeline, _TOKENIZERS[component], None)
            if encoder is None or tokenizer is None or not hasattr(pipeline, "load_textual_inversion"):
                raise CheckpointError(
                    f"{checkpoint.path} bundles the embedding {name!r} for a {component} this base lacks",
                    hint="use the base model the LoRA was trained on (--base)",
                )
            width = encoder.get_input_embeddings().weight.shape[1]
            if vectors.shape[1] != width:
                raise CheckpointError(
                    f"{checkpoint.path}: the bundled embedding {name!r} is {vectors.shape[1]} wide; "
                    f"the base's {component} takes {width}",
                    hint="use the base model the LoRA was trained on (--base)",
                )
            if name in tokenizer.get_vocab():
                raise CheckpointError(
                    f"{checkpoint.path}: the bundled embedding's name {name!r} is already a token of the base",
                    hint="rename the embedding when training; its name must be a new word",
                )
            tokens = [name] + [f"{name}_{i}" for i in range(1, vectors.shape[0])]
            vocab = encoder.config.vocab_size
            # Configs from before transformers#24773 (SD's, SDXL's) say eos_token_id 2, and CLIP then
            # pools at the largest token id: a new token's, not the end of the prompt where A1111 and
            # ComfyUI pool SDXL's second encoder. The tokenizer knows the real one.
            text_model = getattr(encoder, "text_model", encoder)
            eos = getattr(text_model, "eos_token_id", None)
            weight = encoder.get_input_embeddings().weight
            try:
                with _quiet_transformers():  # its note on initialising new rows: ours are overwritten
                    pipeline.load_textual_inversion(
                        vectors.to(device=weight.device, dtype=weight.dtype), token=name,
                        tokenizer=tokenizer, text_encoder=encoder,
                    )  # fmt: skip
            except (ValueError, RuntimeError) as exc:  # diffusers' own refusals (a token taken, ...)
                raise CheckpointError(
                    f"{checkpoint.path}: cannot add the bundled embedding {name!r}: {str(exc)[:200]}",
                    hint="use the base model the LoRA was trained on (--base)",
                ) from None
            state.tokens.append((component, tokens, vocab, eos))
            if eos == 2 and tokenizer.eos_token_id is not None:
                text_model.eos_token_id = tokenizer.eos_token_id
    state.embedded = checkpoint.sha256


def _effective_delta(target: Target, pristine: torch.Tensor) -> torch.Tensor:
    """What strength scales for this layer, float32 on the weight's device, shaped like it."""
    module = target.module
    if module.kind in BASE_KINDS:
        return base_delta(pristine, module)
    delta = module_delta(module, device=pristine.device).reshape(pristine.shape)
    if module.dora_scale is not None:
        magnitude = module.dora_scale.to(pristine.device)
        delta = dora_delta(pristine, delta, magnitude, module.dora_on_output)
    return delta


def _plan(state: _State, pipeline, checkpoint: LoraCheckpoint) -> list[Target]:
    if state.plan_for != checkpoint.sha256:
        state.plan_for, state.targets, state.deltas = None, [], {}
        state.targets = state.resolver.resolve(checkpoint, _family(pipeline))
        state.plan_for = checkpoint.sha256
    return state.targets


#: A slot is one tensor a checkpoint changes: a layer's weight (the target's key), or its bias
#: (the key with this suffix: LyCORIS' full and norm modules change biases too).
_BIAS = ":bias"


def _param(state: _State, slot: str) -> torch.Tensor:
    layer = state.layers[slot]
    return layer.bias if slot.endswith(_BIAS) else layer.weight


def _slots(targets: list[Target]) -> set[str]:
    return {t.key for t in targets} | {t.key + _BIAS for t in targets if t.module.bias_delta is not None}


def _write(state: _State, targets: list[Target], s: float) -> None:
    budget = DELTA_CACHE_BYTES - sum(d.numel() * 4 for d in state.deltas.values())
    for target, slot in [(t, t.key) for t in targets] + [
        (t, t.key + _BIAS) for t in targets if t.module.bias_delta is not None
    ]:
        bias = slot.endswith(_BIAS)
        param = target.layer.bias if bias else target.weight
        pristine = state.pristine.get(slot)
        if pristine is None:
            pristine = state.pristine[slot] = param.detach().clone()
            state.layers[slot] = target.layer
        elif pristine.device != param.device or pristine.dtype != param.dtype:
            # The pipeline was moved or cast (at base, as documented): follow it.
            pristine = state.pristine[slot] = pristine.to(device=param.device, dtype=param.dtype)
            state.deltas.pop(slot, None)
        delta = state.deltas.get(slot)
        if delta is None:
            if bias:
                delta = target.module.bias_delta.to(device=pristine.device, dtype=torch.float32)
            else:
                delta = _effective_delta(target, pristine)
            if delta.numel() * 4 <= budget:
                state.deltas[slot] = delta
                budget -= delta.numel() * 4
        if param.dtype == torch.float32:
            torch.add(pristine, delta, alpha=s, out=param)
        else:  # compute in float32, store in the model's dtype
            param.copy_(torch.add(pristine, delta, alpha=s))


@torch.no_grad()
def apply(pipeline, checkpoint: LoraCheckpoint | str | os.PathLike, strength: float) -> None:
    """Merge ``checkpoint`` into ``pipeline`` at ``strength``: W = W0 + s·ΔW on every touched weight.

    ``pipeline`` is a diffusers pipeline (UNet and text encoders) or a bare UNet module;
    ``checkpoint`` a ``LoraCheckpoint`` (read it once, apply it many times) or a path.
    Any previously applied checkpoint is restored first; strength 0 is the base model.
    Raises ``CheckpointError`` (the pipeline then holds the base weights) when the file
    does not fit the pipeline.
    """
    if not isinstance(checkpoint, LoraCheckpoint):
        from lorasel.checkpoints.read import read_checkpoint

        checkpoint = read_checkpoint(checkpoint)
    s = float(strength)
    if not math.isfinite(s):
        raise ConfigError(f"strength {strength!r} is not a finite number", hint="use e.g. 0.5, 0.75 or 1.0")
    state = _state(pipeline)
    if state.current == (checkpoint.sha256, s):
        return
    if s == 0.0:
        restore(pipeline)
        return
    try:
        targets = _plan(state, pipeline, checkpoint)
    except Exception:
        restore(pipeline)
        raise
    wanted = _slots(targets)
    for key in state.applied - wanted:  # tensors only the previous checkpoint touched
        _param(state, key).copy_(state.pristine[key])
    try:
        _write(state, targets, s)
        _add_embeddings(state, pipeline, checkpoint)
    except BaseException:  # out of memory mid-way: never leave a half-applied model
        for key in (state.applied | wanted) & state.pristine.keys():
            _param(state, key).copy_(state.pristine[key])
        _remove_embeddings(state, pipeline)
        state.applied, state.current = set(), None
        raise
    state.applied = wanted
    state.current = (checkpoint.sha256, s)
