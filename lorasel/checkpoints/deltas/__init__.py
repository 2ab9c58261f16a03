"""Pure ΔW maths, one module per algorithm (REFERENCE §2); γ is applied exactly once.

Everything is computed in float32 on whatever device the factors are on.
"""

from __future__ import annotations

import torch

from lorasel.checkpoints.deltas.dora import dora_delta, dora_weight
from lorasel.checkpoints.deltas.glora import glora_delta
from lorasel.checkpoints.deltas.ia3 import ia3_delta
from lorasel.checkpoints.deltas.loha import loha_delta
from lorasel.checkpoints.deltas.lokr import lokr_delta
from lorasel.checkpoints.deltas.lora import lora_delta
from lorasel.checkpoints.deltas.oft import OFT_KINDS, oft_delta
from lorasel.checkpoints.model import LoraModule

__all__ = [
    "BASE_KINDS", "OFT_KINDS", "base_delta", "dora_delta", "dora_weight", "glora_delta", "ia3_delta",
    "loha_delta", "lokr_delta", "lora_delta", "module_delta", "oft_delta",
]  # fmt: skip

#: Factorisations whose ΔW is a function of the base weight (OFT's rotation, GLoRA's W·A, (IA)³'s
#: channel scale): computed by ``base_delta`` when a checkpoint is merged, never without a base.
BASE_KINDS = (*OFT_KINDS, "glora", "ia3")


def module_delta(module: LoraModule, device: torch.device | str | None = None) -> torch.Tensor:
    """γ·ΔW of one module at full strength, float32 (the low-rank part; DoRA's rescale needs W0).
    OFT's, GLoRA's and (IA)³'s ΔW are functions of the base weight: ``base_delta(w0, module)``."""
    if module.kind in BASE_KINDS:
        raise ValueError(
            f"{module.name}: a {module.kind} module's ΔW depends on the base weight (use base_delta)"
        )
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


def base_delta(w0: torch.Tensor, module: LoraModule) -> torch.Tensor:
    """γ·ΔW at full strength of a module of ``BASE_KINDS`` on the base weight ``w0``, float32, shaped like it."""
    if module.kind in OFT_KINDS:
        return oft_delta(w0, module)
    if module.kind == "glora":
        return glora_delta(w0, module.tensors, module.scale)
    if module.kind == "ia3":
        return ia3_delta(w0, module.tensors["w"], module.on_input)
    raise ValueError(f"{module.name}: a {module.kind} module's ΔW does not depend on the base weight")
