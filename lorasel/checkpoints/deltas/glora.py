"""GLoRA (LyCORIS' ``glora``): ΔW = γ·(W·A + B), where A = a_up·a_down [in, in] acts on the base
weight's input side and B = up·down is a LoRA (LoCon on a convolution).

The file holds ``a1``, ``a2``, ``b1``, ``b2`` (+ ``alpha``, γ = alpha / rank). LyCORIS 2 and later
store a1 [in, r], a2 [r, in], b1 [out, r], b2 [r, in(, k, k)]: A = a1·a2, B = b1·b2. LyCORIS 1.x
stored them the other way round, a1 [r, in], a2 [in, r], b1 [r, in], b2 [out, r]: A = a2·a1,
B = b2·b1 (the layout A1111's loader reads). ``formats`` maps both onto the names used here:
``a_up`` [in, r], ``a_down`` [r, in], ``up`` [out, r], ``down`` [r, in(, k, k)].

ΔW depends on W, so it is computed from the base weight when a checkpoint is merged. It is
linear in the strength, as LyCORIS' multiplier and ComfyUI's strength are: W(s) = W + s·ΔW.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from lorasel.checkpoints.deltas.lora import lora_delta


def glora_delta(w0: torch.Tensor, t: Mapping[str, torch.Tensor], scale: float) -> torch.Tensor:
    """γ·(W·A + B) in float32, shaped like ``w0`` (a Linear's or a convolution's weight)."""
    a_up = t["a_up"].float().reshape(t["a_up"].shape[0], -1)
    a_down = t["a_down"].float().reshape(t["a_down"].shape[0], -1)
    w = w0.float()
    # W·A along the input axis as (W·a_up)·a_down, never the [in, in] product. On a Linear, W·A + B
    # is one matmul of the factors side by side: [W·a_up | up]·[a_down; down].
    if w.dim() == 2 and t["down"].dim() == 2:
        left = torch.cat([w @ a_up, t["up"].float().reshape(w.shape[0], -1)], 1)
        return (left @ torch.cat([a_down, t["down"].float()], 0)).mul_(scale)
    # A convolution: its input axis moved last for the matmuls, its kernel axes carried through.
    wa = ((w.movedim(1, -1) @ a_up) @ a_down).movedim(-1, 1)
    return wa.add_(lora_delta(t["down"], t["up"]).reshape(w.shape)).mul_(scale)
