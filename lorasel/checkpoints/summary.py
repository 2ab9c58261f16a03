"""What ``lorasel inspect`` reports about a checkpoint: the JSON contract and a one-line summary.

``delta_norm`` is the Frobenius norm of a module's full-strength γ·ΔW. It is computed
without forming ΔW where the algebra allows (LoRA: ‖UD‖² = ⟨UᵀU, DDᵀ⟩; LoKr:
‖W1 ⊗ W2‖ = ‖W1‖·‖W2‖), so inspecting an SDXL LoRA takes milliseconds, not a minute.
DoRA's, OFT's, GLoRA's and (IA)³'s ΔW depend on the base weights, so their norm is null without a base.
"""

from __future__ import annotations

import math
from collections import Counter

import torch

from lorasel.checkpoints.deltas import BASE_KINDS, OFT_KINDS, lokr_delta, module_delta
from lorasel.checkpoints.metadata import PREDICTION_WORDS
from lorasel.checkpoints.model import LoraCheckpoint, LoraModule
from lorasel.text import counted

FAMILY_LABELS = {"sd1": "SD1", "sd2": "SD2", "sdxl": "SDXL", "unknown": "an unknown base"}


def delta_norm(module: LoraModule) -> float | None:
    """‖γ·ΔW‖_F at full strength; None for DoRA and ``BASE_KINDS`` (their ΔW needs the base weights)."""
    if module.dora_scale is not None or module.kind in BASE_KINDS:
        return None
    t = module.tensors
    if module.kind == "lora" and "mid" not in t:
        up = t["up"].double().reshape(t["up"].shape[0], -1)
        down = t["down"].double().reshape(t["down"].shape[0], -1)
        squared = float(((up.T @ up) * (down @ down.T)).sum())
        return abs(module.scale) * math.sqrt(max(squared, 0.0))
    if module.kind == "lokr":
        first = t["w1"].double() if "w1" in t else t["w1a"].double() @ t["w1b"].double()
        second = lokr_delta(w1=torch.ones(1, 1), **{k: t.get(k) for k in ("w2", "w2a", "w2b", "t2")})
        return abs(module.scale) * float(first.norm()) * float(second.double().norm())
    return float(module_delta(module).double().norm())


def checkpoint_info(checkpoint: LoraCheckpoint) -> dict:
    """The object ``lorasel inspect --json`` prints (DESIGN.md)."""
    return {
        "path": str(checkpoint.path),
        "format": checkpoint.format,
        "base_family": checkpoint.base_family,
        "epoch": checkpoint.epoch,
        "step": checkpoint.step,
        "metadata": dict(checkpoint.metadata),
        "embeddings": {
            name: {component: list(v.shape) for component, v in vectors.items()}
            for name, vectors in checkpoint.embeddings.items()
        },
        "modules": [
            {
                "name": m.name,
                "algo": m.algo,
                "rank": m.rank,
                "alpha": m.alpha,
                "scale": m.scale,
                "delta_norm": delta_norm(m),
            }
            for m in checkpoint.modules
        ],
    }


def _number(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:g}"


def summary_line(checkpoint: LoraCheckpoint) -> str:
    """Algorithms, module count, rank/alpha, epoch/step and trigger in one line."""
    algos = Counter(m.algo for m in checkpoint.modules)
    algo_text = ", ".join(f"{n} {a}" for a, n in algos.most_common())
    parts = [
        f"{checkpoint.format} checkpoint for {FAMILY_LABELS.get(checkpoint.base_family, checkpoint.base_family)}",
        f"{counted(len(checkpoint.modules), 'module')} ({algo_text})",
    ]
    pairs = Counter((m.rank, m.alpha) for m in checkpoint.modules if m.kind not in (*OFT_KINDS, "ia3"))
    if pairs:
        ranks = ", ".join(f"{_number(r)}/{_number(a)}" for (r, a), _ in pairs.most_common(3))
        parts.append(f"rank/alpha {ranks}{', …' if len(pairs) > 3 else ''}")
    constraints = Counter(m.alpha or 0.0 for m in checkpoint.modules if m.kind in OFT_KINDS)
    if constraints:  # an OFT's alpha is its rotation's constraint (0: none)
        values = ", ".join(f"{c:g}" if c > 0 else "none" for c, _ in constraints.most_common(3))
        parts.append(f"OFT constraint {values}{', …' if len(constraints) > 3 else ''}")
    progress = []
    if checkpoint.epoch is not None:
        progress.append(f"epoch {checkpoint.epoch}")
    if checkpoint.step is not None:
        progress.append(f"step {checkpoint.step}")
    parts.append(", ".join(progress) if progress else "epoch/step unknown")
    if checkpoint.trigger:
        trigger = f"trigger {checkpoint.trigger!r}"
        if checkpoint.class_word:
            trigger += f" (class {checkpoint.class_word!r})"
        parts.append(trigger)
    else:
        parts.append("no trigger in metadata")
    if checkpoint.trains_text_encoder:
        parts.append("trains the text encoder")
    for name, vectors in checkpoint.embeddings.items():
        count = next(iter(vectors.values())).shape[0]
        parts.append(f"bundles the embedding {name!r} ({counted(count, 'vector')})")
    if checkpoint.prediction in ("v", "v-ztsnr"):
        parts.append(f"trained for {PREDICTION_WORDS[checkpoint.prediction]}")
    return " · ".join(parts)
