"""The render plan: checkpoint × strength × prompt × seed, cut into deterministic batches.

Common random numbers: a render's seed depends only on (prompt text, seed index) — a stable
hash, never Python's ``hash()`` — so every checkpoint and strength sees the same noise and
comparisons are paired. Strength 0 is the base model, rendered once per prompt and seed.

Batches are fixed chunks of the (prompt, seed) list of one (checkpoint, strength), so a resumed
run re-renders exactly the batches an uninterrupted run would have, and gets identical images.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from lorasel.evaluate.prompts import Prompt
from lorasel.results import BASE

SEED_BITS = 63  # fits SQLite's signed 64-bit INTEGER and torch.Generator.manual_seed


@dataclass(frozen=True)
class RenderSettings:
    """Everything besides checkpoint, strength, prompt and seed that changes an image."""

    base: str  # the spec the base was loaded from ("toy", a folder, a hub id, a file)
    base_fingerprint: str  # configs + a sample of the weights, so a changed base is noticed
    scheduler: str  # class name and config
    steps: int
    guidance: float
    width: int
    height: int
    negative: str
    dtype: str
    device_type: str
    # CLIP layers counted from the end whose output conditions the UNet, as A1111 and kohya count
    # them: 1 the last (SD's own), 2 the one before (kohya's --clip_skip 2, anime SD 1.x models).
    clip_skip: int = 1
    # Classifier-free guidance rescaled towards the conditional prediction's spread (φ of "Common
    # Diffusion Noise Schedules and Sample Steps are Flawed"; diffusers' guidance_rescale): 0 off.
    cfg_rescale: float = 0.0

    def key(self) -> str:
        """Stable hash of the settings: part of every render's cache key. ``clip_skip`` 1 and
        ``cfg_rescale`` 0 are left out, so renders cached before those settings existed keep
        their keys."""
        fields = asdict(self)
        if fields["clip_skip"] == 1:
            del fields["clip_skip"]
        if fields["cfg_rescale"] == 0:
            del fields["cfg_rescale"]
        return _sha256(json.dumps(fields, sort_keys=True))[:32]


@dataclass(frozen=True)
class Candidate:
    """One checkpoint in the plan (or the base model, ``checkpoint == BASE``)."""

    checkpoint: str  # id: path relative to the evaluated folder, posix; BASE for the base model
    hash: str  # content hash; "base" for the base model


@dataclass(frozen=True)
class RenderItem:
    checkpoint: str
    checkpoint_hash: str
    strength: float
    prompt: Prompt
    seed_index: int
    seed: int
    key: str  # the render's cache key


@dataclass(frozen=True)
class Batch:
    """A deterministic unit of work: one (checkpoint, strength), a fixed chunk of (prompt, seed)."""

    checkpoint: str
    checkpoint_hash: str
    strength: float
    items: tuple[RenderItem, ...]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(item.key for item in self.items)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def canonical_strength(strength: float) -> float:
    """Strengths are compared and keyed after rounding, so 0.1 + 0.2 and 0.3 are one strength."""
    return round(float(strength), 4) + 0.0  # + 0.0 turns -0.0 into 0.0


def render_seed(prompt_text: str, seed_index: int) -> int:
    """The seed of a render: a stable function of (prompt text, seed index) only."""
    digest = hashlib.sha256(f"lorasel-seed\x00{prompt_text}\x00{seed_index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - SEED_BITS)


def render_key(checkpoint_hash: str, strength: float, prompt_text: str, seed: int, settings_key: str) -> str:
    """The cache key of one render."""
    payload = json.dumps(
        [checkpoint_hash, repr(canonical_strength(strength)), prompt_text, seed, settings_key]
    )
    return _sha256(payload)


def build_plan(
    candidates: Sequence[Candidate],
    strengths: Sequence[float],
    prompts: Sequence[Prompt],
    seeds: int,
    batch_size: int,
    settings_key: str,
) -> list[Batch]:
    """Every batch of the evaluation: the base model at strength 0 first, then each checkpoint
    at each strength, in order; each (checkpoint, strength) cut into chunks of ``batch_size``.

    Within a (checkpoint, strength) the renders go seed by seed (every prompt with seed 0, then
    seed 1, ...): evaluating again with more seeds keeps every earlier batch as it was, so only
    the new seeds are rendered (plus, at most, the one batch that straddles old and new)."""
    pairs = [(c, s) for c in candidates for s in strengths]
    return plan_of_pairs(pairs, prompts, range(seeds), batch_size, settings_key)


def plan_of_pairs(
    pairs: Sequence[tuple[Candidate, float]],
    prompts: Sequence[Prompt],
    seeds: range,
    batch_size: int,
    settings_key: str,
) -> list[Batch]:
    """The batches of the base model and the (checkpoint, strength) ``pairs`` (strength 0 is
    the base's) on the seed indices ``seeds``: :func:`build_plan`'s, and ``lorasel eval
    --refine``'s for a few pairs on more seeds. A render's key and seed depend on neither the
    pairs nor the range, so a later ``--seeds`` evaluation reuses a refinement's renders."""
    groups = [(Candidate(BASE, BASE), 0.0)]
    groups += [(c, canonical_strength(s)) for c, s in pairs if canonical_strength(s) != 0.0]
    units = [(p, i, render_seed(p.text, i)) for i in seeds for p in prompts]
    batches = []
    for candidate, strength in groups:
        items = [
            RenderItem(
                checkpoint=candidate.checkpoint,
                checkpoint_hash=candidate.hash,
                strength=strength,
                prompt=prompt,
                seed_index=index,
                seed=seed,
                key=render_key(candidate.hash, strength, prompt.text, seed, settings_key),
            )
            for prompt, index, seed in units
        ]
        for start in range(0, len(items), batch_size):
            chunk = tuple(items[start : start + batch_size])
            batches.append(Batch(candidate.checkpoint, candidate.hash, strength, chunk))
    return batches


def shard(batches: Sequence[Batch], index: int, count: int) -> list[Batch]:
    """Process ``index`` of ``count``'s contiguous share of the batches (as accelerate's
    ``split_between_processes``: the first ``len % count`` shares get one batch more).
    Contiguous shares keep each process's checkpoint switches few."""
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"bad shard {index} of {count}")
    per, extra = divmod(len(batches), count)
    start = index * per + min(index, extra)
    end = start + per + (1 if index < extra else 0)
    return list(batches[start:end])
