"""Pure ΔW maths, one module per algorithm (REFERENCE §2); γ is applied exactly once.

Everything is computed in float32 on whatever device the factors are on.
"""

from __future__ import annotations

import torch

from lorasel.checkpoints.deltas.dora import dora_delta, dora_weight
from lorasel.checkpoints.deltas.loha import loha_delta
from lorasel.checkpoints.deltas.lokr import lokr_delta
from lorasel.checkpoints.deltas.lora import lora_delta
from lorasel.checkpoints.deltas.oft import OFT_KINDS, oft_delta
from lorasel.checkpoints.model import LoraModule

__all__ = [
    "dora_delta", "dora_weight", "loha_delta", "lokr_delta", "lora_delta", "module_delta", "oft_delta",
]  # fmt: skip


def module_delta(module: LoraModule, device: torch.device | str | None = None) -> torch.Tensor:
    """γ·ΔW of one module at full strength, float32 (the low-rank part; DoRA's rescale needs W0).
    An OFT's ΔW is the base weight's rotation: ``oft_delta(w0, module)``."""
    if module.kind in OFT_KINDS:
        raise ValueError(f"{module.name}: an OFT's ΔW depends on the base weight (use oft_delta)")
    t = {k: v.to(device) if device is not None else v for k, v in module.tensors.items()}
    return factor_delta(module.kind, t, module.scale)


def factor_delta(kind: str, t: dict[str, torch.Tensor], scale: float) -> torch.Tensor:
    """Dispatch on the factorisation; ``t`` holds the canonical factor names."""
    if kind == "lora":
        return lora_delta(t["down"], t["up"], t.get("mid"), scale=scale)
    if kind == "loha":
        return loha_delta(t["w1a"], t["w1b"], t["w2a"], t["w2b"], t.get("t1"), t.get("t2"), scale=scale)
    if kind == "lokr":
        names = ("w1", "w1a", "w1b", "w2", "w2a", "w2b", "t2")
        return lokr_delta(**{n: t.get(n) for n in names}, scale=scale)
    if kind == "full":
        return t["diff"].float() * scale  # LyCORIS "full": ΔW itself
    if kind == "norm":
        return t["w"].float() * scale  # LyCORIS train_norm: Δ of a norm layer's weight
    raise ValueError(f"unknown factorisation {kind!r}")
