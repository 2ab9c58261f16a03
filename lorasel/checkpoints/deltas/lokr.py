"""LoKr (LyCORIS): ΔW = γ · kron(W1, W2) (REFERENCE §2).

W1 is ``w1`` [a, c] or ``w1a`` @ ``w1b``; W2 is ``w2`` [b, d(, k, k)], ``w2a`` @ ``w2b``
([b, r] @ [r, d·k·k]), or a Tucker rebuild from ``t2`` [r, r, k, k], ``w2a`` [r, b], ``w2b`` [r, d].
For convs W1 is broadcast over the kernel: kron([a, c, 1, 1], [b, d, k, k]) = [ab, cd, k, k].
"""

from __future__ import annotations

import torch


def lokr_delta(
    w1: torch.Tensor | None = None,
    w1a: torch.Tensor | None = None,
    w1b: torch.Tensor | None = None,
    w2: torch.Tensor | None = None,
    w2a: torch.Tensor | None = None,
    w2b: torch.Tensor | None = None,
    t2: torch.Tensor | None = None,
    scale: float = 1.0,
) -> torch.Tensor:
    """γ·ΔW in float32, [a·b, c·d(, k, k)] (a factored conv W2 gives [a·b, c·d·k·k])."""
    first = w1.float() if w1 is not None else w1a.float() @ w1b.float()
    if w2 is not None:
        second = w2.float()
    elif t2 is not None:
        second = torch.einsum("pq...,pb,qd->bd...", t2.float(), w2a.float(), w2b.float())
    else:
        rank, d, *kernel = w2b.shape
        second = (w2a.float() @ w2b.float().reshape(rank, -1)).reshape(w2a.shape[0], d, *kernel)
    while first.dim() < second.dim():
        first = first.unsqueeze(-1)
    # torch.kron needs a contiguous operand (the Tucker rebuild is a strided view).
    return torch.kron(first * scale, second.contiguous())
