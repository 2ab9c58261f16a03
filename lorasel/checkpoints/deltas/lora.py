"""LoRA, LoCon and LoCon-Tucker: ΔW = γ · up @ down (REFERENCE §2).

Shapes as kohya and LyCORIS store them: ``down`` [r, in(, k, k)], ``up`` [out, r(, 1, 1)],
optional Tucker core ``mid`` [r, r, k, k] (then ``down`` is [r, in, 1, 1]).
"""

from __future__ import annotations

import torch


def lora_delta(
    down: torch.Tensor, up: torch.Tensor, mid: torch.Tensor | None = None, scale: float = 1.0
) -> torch.Tensor:
    """γ·ΔW in float32, shaped [out, in, *kernel] like the weight it adds to.

    With a Tucker core: ΔW[o, i, ...] = Σ_pq mid[p, q, ...] · up[o, p] · down[q, i].
    γ multiplies the small ``up`` factor, not the large product.
    """
    u = up.float().reshape(up.shape[0], -1) * scale
    d = down.float().reshape(down.shape[0], -1)
    if mid is None:
        kernel = down.shape[2:]
        return (u @ d).reshape(up.shape[0], down.shape[1], *kernel)
    # down is [r, in, 1, 1] here: its kernel lives in mid.
    d = down.float().reshape(down.shape[0], down.shape[1])
    return torch.einsum("pq...,op,qi->oi...", mid.float(), u, d)
