"""LoHa (LyCORIS): ΔW = γ · (w1a @ w1b) ⊙ (w2a @ w2b) (REFERENCE §2).

Plain: ``w1a``/``w2a`` [out, r], ``w1b``/``w2b`` [r, in·k·k] (convs flattened).
Tucker: ``w1a``/``w2a`` [r, out], ``w1b``/``w2b`` [r, in], cores ``t1``/``t2`` [r, r, k, k].
"""

from __future__ import annotations

import torch


def _tucker(t: torch.Tensor, wa: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
    """W[o, i, ...] = Σ_pq t[p, q, ...] · wa[p, o] · wb[q, i]."""
    return torch.einsum("pq...,po,qi->oi...", t.float(), wa.float(), wb.float())


def loha_delta(
    w1a: torch.Tensor,
    w1b: torch.Tensor,
    w2a: torch.Tensor,
    w2b: torch.Tensor,
    t1: torch.Tensor | None = None,
    t2: torch.Tensor | None = None,
    scale: float = 1.0,
) -> torch.Tensor:
    """γ·ΔW in float32: [out, in, k, k] with Tucker cores, else [out, in·k·k] (reshape to the weight)."""
    if t1 is not None and t2 is not None:
        return _tucker(t1, w1a, w1b) * _tucker(t2, w2a, w2b) * scale
    # γ on the small factor and the product in place: one full-size pass besides the two matmuls.
    first = (w1a.float() * scale) @ w1b.float().reshape(w1b.shape[0], -1)
    return first.mul_(w2a.float() @ w2b.float().reshape(w2b.shape[0], -1))
