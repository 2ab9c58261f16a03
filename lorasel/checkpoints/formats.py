"""Every LoRA key format, normalised into validated ``LoraModule`` records.

- kohya / LyCORIS: ``lora_unet_<path>`` / ``lora_te_`` / ``lora_te1_`` / ``lora_te2_`` (and
  LyCORIS' standalone ``lycoris_``) + ``.lora_down.weight`` / ``.lora_up.weight`` /
  ``.lora_mid.weight`` / ``.alpha`` / ``.dora_scale`` / ``.hada_*`` / ``.lokr_*``, and LyCORIS'
  full-rank ``.diff`` / ``.diff_b`` ("full") and ``.w_norm`` / ``.b_norm`` (``train_norm``), and
  OFT's ``.oft_blocks`` (+ ``.rescale``): LyCORIS' diag-oft (3-D) and boft (4-D), kohya's
  ``networks.oft`` (``oft_unet_`` keys), their ``.alpha`` the rotation's constraint, and
  GLoRA's ``.a1.weight`` … ``.b2.weight`` (either of LyCORIS' layouts) and (IA)³'s ``.weight``
  + ``.on_input`` (kohya and LyCORIS prefixes only: elsewhere a bare ``.weight`` is a model's).
- OMI (OneTrainer's "OMI" files and backups, InvokeAI): ``unet.`` + the SGM path
  (``input_blocks.4.1.…``) / ``clip_l.`` / ``clip_g.`` + dotted path, with kohya's suffixes; the
  UNet stems go through the same SGM map as kohya's SDXL ones.
- ComfyUI (its Train LoRA node, and Extract and Save Lora): ``diffusion_model.`` + the SGM path,
  ``text_encoders.clip_l.transformer.`` / ``text_encoders.clip_g.transformer.`` + dotted path,
  with kohya's suffixes and LyCORIS' ``diff`` / ``diff_b`` (norm weights and biases it trains).
- PEFT: ``base_model.model.<dotted path>.lora_A.weight`` / ``.lora_B.weight`` /
  ``.lora_magnitude_vector`` (and PEFT's LoHa/LoKr tensors, named like LyCORIS'); alpha
  from the adapter config.
- diffusers: ``unet.`` / ``text_encoder.`` / ``text_encoder_2.`` + PEFT suffixes, or the
  older ``.lora.down.weight`` / ``.lora_linear_layer.up.weight`` / ``processor.to_q_lora``
  spellings, which diffusers' own key maps turn into PEFT ones.

The scale γ follows REFERENCE §2: alpha / rank (alpha missing or 0 → γ = 1), LoKr with
both factors full → γ = 1 (kohya/LyCORIS files), PEFT rsLoRA → alpha / √rank.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch

from lorasel.checkpoints.deltas import BASE_KINDS, factor_delta, lora_delta
from lorasel.checkpoints.deltas.oft import OFT_KINDS, check_layout
from lorasel.checkpoints.embeddings import BUNDLE_PREFIX
from lorasel.checkpoints.files import check_finite
from lorasel.checkpoints.keys import classify, modernise_diffusers_keys, natural_key, original_stem
from lorasel.checkpoints.metadata import PREDICTION_MARKERS
from lorasel.checkpoints.model import LoraModule
from lorasel.errors import CheckpointError

# LyCORIS algorithms lorasel does not merge (yet): named so the error says what the file is.
_UNSUPPORTED = {
    "oft_diag": "OFT in an older layout", "oft_R": "OFT/BOFT in an older layout",
    "bm.weight": "GLoRA with a Tucker factor",
    # T-LoRA masks its rank by timestep and subtracts an SVD of the base the file does not hold.
    "lambda_layer": "T-LoRA",
}  # fmt: skip


def _not_a_lora(path: Path, keys: list[str]) -> CheckpointError:
    sample = ", ".join(repr(k) for k in sorted(keys)[:3])
    full = any(
        k.startswith(("model.diffusion_model.", "first_stage_model.", "cond_stage_model.")) for k in keys
    )
    full = full or any(k.startswith(("conditioner.", "down_blocks.", "text_model.")) for k in keys)
    what = "its keys look like a full model, not a LoRA" if full else "no key is a LoRA key"
    return CheckpointError(
        f"{path} is not a LoRA checkpoint: {what} (e.g. {sample or 'no tensors at all'})",
        hint="pass a LoRA file (kohya, LyCORIS, PEFT or diffusers keys); a full model is a base (--base)",
    )


def _unsupported(path: Path, keys: list[str]) -> CheckpointError | None:
    for key in keys:
        for suffix, algo in _UNSUPPORTED.items():
            if key.endswith("." + suffix):
                return CheckpointError(
                    f"{path} uses the LyCORIS algorithm {algo} (key {key!r}), which lorasel does not merge",
                    hint="lorasel reads LoRA, LoCon, LoHa, LoKr, Tucker, DoRA, OFT, BOFT, GLoRA, (IA)^3, "
                    "full and norm files",
                )
    return None


def _scalar(path: Path, key: str, t: torch.Tensor) -> float:
    if t.numel() != 1:
        raise CheckpointError(
            f"{path}: {key} should be one number but has shape {list(t.shape)}",
            hint="the file is corrupt or not a LoRA",
        )
    value = float(t.float().reshape(()))
    if not math.isfinite(value):
        raise CheckpointError(f"{path}: {key} is {value}", hint="the file is corrupt")
    return value


def _kind(path: Path, stem: str, kinds: set[str]) -> str:
    if len(kinds) != 1:
        raise CheckpointError(
            f"{path}: module {stem!r} mixes tensors of different algorithms ({', '.join(sorted(kinds))})",
            hint="the file is corrupt or in a format lorasel does not know",
        )
    return next(iter(kinds))


_REQUIRED = {
    "lora": [("down",), ("up",)],
    "loha": [("w1a",), ("w1b",), ("w2a",), ("w2b",)],
    "lokr": [("w1", "w1a"), ("w2", "w2a")],
    "full": [("diff",)],
    "norm": [("w",)],
    "oft": [("blocks",)],
    "boft": [("blocks",)],
    "glora": [("a1",), ("a2",), ("b1",), ("b2",)],
    "ia3": [("w",)],
}


def _check_complete(path: Path, stem: str, kind: str, t: dict[str, torch.Tensor]) -> None:
    missing = [" or ".join(alts) for alts in _REQUIRED[kind] if not any(a in t for a in alts)]
    pairs = (
        [("w1a", "w1b"), ("w2a", "w2b"), ("t1", "t2")] if kind == "loha" else [("w1a", "w1b"), ("w2a", "w2b")]
    )
    missing += [f"{b} (with {a})" for a, b in pairs if kind != "lora" and (a in t) != (b in t)]
    if kind == "lokr" and "t2" in t and "w2a" not in t:
        missing.append("w2a/w2b (with t2)")
    if missing:
        raise CheckpointError(
            f"{path}: module {stem!r} is incomplete: missing {', '.join(missing)}",
            hint="the file is corrupt or was cut while saving",
        )


def _rank(kind: str, t: dict[str, torch.Tensor]) -> int | None:
    if kind in ("full", "norm", "ia3", *OFT_KINDS):
        return None  # full-rank: ΔW itself; OFT: a rotation, in blocks; (IA)³: a scale per channel
    if kind == "glora":
        return int(t["a_down"].shape[0])
    if kind == "lora":
        return int(t["down"].shape[0])
    if kind == "loha":
        return int(t["w1b"].shape[0])
    if "w1b" in t:
        return int(t["w1b"].shape[0])
    if "w2b" in t:
        return int(t["w2b"].shape[0])
    return None  # LoKr with both factors full: no rank


def _algo(kind: str, t: dict[str, torch.Tensor], dora: bool) -> str:
    if dora:
        return "dora"
    if kind != "lora":
        return kind
    if "mid" in t:
        return "lora_tucker"
    return "locon" if any(k > 1 for k in t["down"].shape[2:]) else "lora"


def _delta_shape(path: Path, stem: str, kind: str, t: dict[str, torch.Tensor]) -> tuple[int, ...]:
    """ΔW's shape, found by running the maths on shape-only tensors: a mismatch is a clear error.
    An OFT's ΔW takes the base weight's shape; its blocks fix the output rows only: (rows,)."""
    if kind in OFT_KINDS:
        blocks = tuple(t["blocks"].shape)
        problem = check_layout(blocks)
        if problem:
            raise CheckpointError(
                f"{path}: module {stem!r}: {problem}, not {list(blocks)}", hint="the file is corrupt"
            )
        rows = blocks[-3] * blocks[-1]
        rescale = t.get("rescale")
        if rescale is not None and rescale.numel() != rows:
            raise CheckpointError(
                f"{path}: module {stem!r} rescales {rescale.numel()} rows; its rotation turns {rows}",
                hint="the file is corrupt",
            )
        return (rows,)
    if kind == "ia3":
        return (t["w"].numel(),)  # the channels it scales
    meta = {k: torch.empty(v.shape, device="meta") for k, v in t.items()}
    try:
        if kind == "glora":  # B's shape (_glora_factors fitted A to it)
            return tuple(lora_delta(meta["down"], meta["up"]).shape)
        return tuple(factor_delta(kind, meta, 1.0).shape)
    except (RuntimeError, ValueError, IndexError):
        shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in sorted(t.items()))
        raise CheckpointError(
            f"{path}: the factors of module {stem!r} do not fit together ({shapes})",
            hint="the file is corrupt or in a format lorasel does not know",
        ) from None


def _peft_value(config: Mapping, pattern_field: str, field: str, target: str, default):
    """A per-module value from a PEFT config: ``*_pattern`` (PEFT's own matching) else the field."""
    pattern = config.get(pattern_field) or {}
    if isinstance(pattern, Mapping) and pattern:
        from peft.utils.other import get_pattern_key

        # Pattern keys are regexes from a stranger's file: cap their length.
        keys = [k for k in pattern if isinstance(k, str) and len(k) <= 256]
        hit = get_pattern_key(keys, target)
        if hit in pattern:
            return pattern[hit]
    value = config.get(field)
    return default if value is None else value


def _number(path: Path, where: str, value, positive: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (positive and value <= 0):
        raise CheckpointError(
            f"{path}: adapter config value {where} = {str(value)[:40]!r} is not a valid number",
            hint="fix or remove the adapter config (adapter_config.json or lora_adapter_metadata)",
        )
    return float(value)


def _kohya_scale(kind: str, t, rank: int | None, alpha: float | None) -> tuple[float | None, float]:
    """(alpha as reported, γ) for kohya/LyCORIS files."""
    if kind in ("full", "norm", "ia3", *OFT_KINDS):
        return alpha, 1.0  # ΔW itself, a rotation (alpha its constraint) or a channel scale: no γ
    if kind == "lokr" and "w1" in t and "w2" in t:
        return alpha, 1.0  # both factors full: LyCORIS, A1111 and ComfyUI use γ = 1
    if not alpha:
        return float(rank), 1.0  # missing or zero alpha means alpha = rank
    return alpha, alpha / rank


def _peft_scale(
    path: Path, kind: str, rank: int | None, config: Mapping, target: str
) -> tuple[int | None, float | None, float]:
    """(rank, alpha, γ) for PEFT/diffusers files, from the adapter config (none: alpha = r)."""
    if rank is None:  # PEFT LoKr with both factors full still scales by alpha / r
        raw_r = _peft_value(config, "rank_pattern", "r", target, None)
        rank = int(_number(path, f"r of {target}", raw_r, positive=True)) if raw_r is not None else None
    alpha_field = "lora_alpha" if kind == "lora" else "alpha"
    raw = _peft_value(config, "alpha_pattern", alpha_field, target, None)
    alpha = _number(path, f"{alpha_field} of {target}", raw) if raw is not None else None
    if rank is None:
        return None, alpha, 1.0
    if not alpha:
        return rank, float(rank), 1.0
    denom = math.sqrt(rank) if config.get("use_rslora") is True else rank
    return rank, alpha, alpha / denom


def _component_config(config: Mapping | None, component: str | None) -> Mapping:
    """diffusers packs several adapters' configs as ``unet.r``, ``text_encoder.lora_alpha``, ..."""
    if not config:
        return {}
    if component:
        prefix = component + "."
        scoped = {k[len(prefix) :]: v for k, v in config.items() if k.startswith(prefix)}
        if scoped:
            return scoped
    return config


def parse_modules(
    path: Path,
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str],
    peft_config: Mapping | None = None,
) -> tuple[str, tuple[LoraModule, ...]]:
    """(format, modules) of a file's tensors; raises CheckpointError naming what is wrong."""
    keys = list(tensors)
    groups: dict[str, dict[str, tuple[str | None, str, torch.Tensor]]] = {}
    styles: dict[str, tuple[str, str | None, str, bool]] = {}
    unknown: list[str] = []
    for new_key, original in modernise_diffusers_keys(keys).items():
        if original in PREDICTION_MARKERS and tensors[original].numel() == 0:
            continue  # a statement of what the base predicts (stated_prediction), not a weight
        if original.startswith(BUNDLE_PREFIX):
            continue  # a bundled embedding (parse_embeddings)
        hit = classify(new_key)
        if hit is None:
            unknown.append(original)
            continue
        stem, (kind, factor), style = hit
        groups.setdefault(stem, {})[factor] = (kind, original, tensors[original])
        styles[stem] = style
    weighted = {s: g for s, g in groups.items() if any(kind for kind, _, _ in g.values())}
    if not weighted:
        raise _unsupported(path, keys) or _not_a_lora(path, keys)
    if unknown:
        raise _unsupported(path, unknown) or CheckpointError(
            f"{path}: {len(unknown)} tensor(s) are not LoRA keys lorasel knows, e.g. "
            + ", ".join(repr(k) for k in unknown[:3]),
            hint="the file mixes a LoRA with other weights, or uses a format lorasel does not read",
        )
    formats = {styles[s][0] for s in weighted}
    if len(formats - {"lycoris"}) > 1:
        raise CheckpointError(
            f"{path} mixes key formats ({', '.join(sorted(formats))})",
            hint="the file is a merge of incompatible LoRAs; re-save it in one format",
        )
    # An alpha without weights (kohya writes some for untrained layers) has nothing to apply.
    modules = tuple(
        _module(path, stem, weighted[stem], styles[stem], peft_config)
        for stem in sorted(weighted, key=natural_key)
    )
    return _file_format(formats, modules, metadata), modules


def _module(path: Path, stem: str, group, style, peft_config: Mapping | None) -> LoraModule:
    fmt, component, target, dotted = style
    for _, key, tensor in group.values():
        check_finite(path, key, tensor)
    kind = _kind(path, stem, {k for k, _, _ in group.values() if k})
    t = {name: tensor for name, (k, _, tensor) in group.items() if k}
    if kind == "oft" and t["blocks"].dim() == 4:
        kind = "boft"  # LyCORIS' butterfly: stages of blocks
    if "rescale" in group:
        if kind not in OFT_KINDS:
            raise CheckpointError(
                f"{path}: module {stem!r} has an OFT rescale without an OFT rotation",
                hint="the file is corrupt or in a format lorasel does not know",
            )
        t["rescale"] = group["rescale"][2]
    if kind in BASE_KINDS and "dora_scale" in group:
        raise CheckpointError(
            f"{path}: module {stem!r} mixes {_BASE_WHAT[kind]} with a DoRA magnitude",
            hint="the file is corrupt or in a format lorasel does not know",
        )
    _check_complete(path, stem, kind, t)
    on_input = False
    if kind == "ia3":
        on_input = _ia3_on_input(path, stem, group)
    if kind == "glora":
        t = _glora_factors(path, stem, t)
    shape = _delta_shape(path, stem, kind, t)
    rank = _rank(kind, t)
    if rank == 0:
        raise CheckpointError(f"{path}: module {stem!r} has rank 0", hint="the file is corrupt")
    if fmt in ("kohya", "lycoris", "omi", "comfyui"):
        alpha = _scalar(path, group["alpha"][1], group["alpha"][2]) if "alpha" in group else None
        alpha, scale = _kohya_scale(kind, t, rank, alpha)
    else:
        config = _component_config(peft_config, component)
        rank, alpha, scale = _peft_scale(path, kind, rank, config, target)
    dora = group["dora_scale"][2] if "dora_scale" in group else None
    bias = group["bias"][2] if "bias" in group else None
    if bias is not None and (bias.dim() != 1 or bias.numel() != shape[0]):
        raise CheckpointError(
            f"{path}: module {stem!r} has a bias change of shape {list(bias.shape)} for {shape[0]} outputs",
            hint="the file is corrupt",
        )
    on_output = True
    if dora is not None:
        if fmt in ("peft", "diffusers"):
            dora = dora.reshape(-1)  # PEFT stores [out] or [1, out, 1, 1]: always per output row
        else:
            on_output = not (dora.dim() >= 2 and dora.shape[0] == 1 and dora.numel() > 1)
        if on_output and dora.numel() != shape[0]:
            raise CheckpointError(
                f"{path}: module {stem!r} has a DoRA magnitude of {dora.numel()} values "
                f"for {shape[0]} output rows",
                hint="the file is corrupt",
            )
    first_key = next(key for k, key, _ in group.values() if k)
    return LoraModule(
        name=original_stem(first_key, stem),
        algo=_algo(kind, t, dora is not None),
        kind=kind,
        rank=rank,
        alpha=alpha,
        scale=scale,
        tensors=t,
        component=component,
        target=target,
        dotted=dotted,
        delta_shape=shape,
        dora_scale=dora,
        dora_on_output=on_output,
        bias_delta=bias,
        on_input=on_input,
    )


_BASE_WHAT = {
    "oft": "an OFT rotation",
    "boft": "an OFT rotation",
    "glora": "a GLoRA",
    "ia3": "an (IA)^3 scale",
}


def _ia3_on_input(path: Path, stem: str, group) -> bool:
    """Which side an (IA)³ scales: its ``on_input`` (LyCORIS writes it with every module)."""
    if "on_input" not in group:
        raise CheckpointError(
            f"{path}: module {stem!r} is incomplete: missing on_input (with an (IA)^3 weight)",
            hint="the file is corrupt or was cut while saving",
        )
    _, key, tensor = group["on_input"]
    value = _scalar(path, key, tensor)
    if value not in (0.0, 1.0):
        raise CheckpointError(f"{path}: {key} is {value:g}, not 0 or 1", hint="the file is corrupt")
    return value == 1.0


def _glora_factors(path: Path, stem: str, t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """GLoRA's a1/a2/b1/b2 as ``a_up``, ``a_down``, ``up``, ``down`` (``deltas/glora.py``), in
    either layout: LyCORIS 2's (a1 [in, r], …) or LyCORIS 1's (a1 [r, in], …, Linear layers only)."""
    a1, a2, b1, b2 = (tuple(t[n].shape) for n in ("a1", "a2", "b1", "b2"))

    def fits(a_up, a_down, up, down) -> bool:  # [in, r], [r, in], [out, r], [r, in(, k, k)]
        rank, width = a_down[0], math.prod(a_down[1:])
        return (
            len(down) >= 2
            and math.prod(a_up[1:]) == rank == math.prod(up[1:]) == down[0]
            and (a_up[0] == width == down[1])
        )

    current = fits(a1, a2, b1, b2)
    first = all(len(s) == 2 for s in (a1, a2, b1, b2)) and fits(a2, a1, b2, b1)
    if current and first:  # a square layer: the rank is the narrow side of a2
        current = a2[0] <= a2[1]
    if current:
        return {"a_up": t["a1"], "a_down": t["a2"], "up": t["b1"], "down": t["b2"]}
    if first:
        return {"a_up": t["a2"], "a_down": t["a1"], "up": t["b2"], "down": t["b1"]}
    shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in sorted(t.items()))
    raise CheckpointError(
        f"{path}: the GLoRA factors of module {stem!r} do not fit together ({shapes})",
        hint="the file is corrupt or in a GLoRA layout lorasel does not know",
    )


def _file_format(formats: set[str], modules: tuple[LoraModule, ...], metadata: Mapping[str, str]) -> str:
    if "diffusers" in formats:
        return "diffusers"
    if "peft" in formats:
        return "peft"
    if "omi" in formats:
        return "omi"
    if "comfyui" in formats:
        return "comfyui"
    if modules and all(m.name.startswith("oft_unet_") for m in modules):
        return "kohya"  # kohya's networks.oft
    lycoris = "lycoris" in formats or any(m.kind != "lora" for m in modules)
    lycoris = lycoris or "lycoris" in metadata.get("ss_network_module", "").lower()
    return "lycoris" if lycoris else "kohya"
