"""OFT: an orthogonal rotation of a layer's output rows, W' = R·W (LyCORIS' ``diag-oft`` and
``boft``, kohya's ``networks.oft``).

The file holds ``oft_blocks`` B; the rotation of each block is Cayley's transform of its skew part,
R = (I + Q)(I − Q)⁻¹ with Q = B − Bᵀ, the whole Q scaled down to norm ``constraint`` when it is longer
(LyCORIS' and kohya's constraint: the file's ``alpha`` times the output width; 0 means none).

- ``diag-oft`` (and kohya's OFT), B shaped [blocks, size, size]: the output rows, cut into
  consecutive blocks of ``size``, are each rotated by their Rᵀ (both tools' einsum
  ``k n m, k n … -> k m …``).
- ``boft``, B shaped [stages, blocks, size, size]: stage i permutes the rows so that rows 2^i·size/2
  apart fall in one block, rotates each block by its R, and permutes back (a butterfly).
- ``rescale`` ([out, 1, …], LyCORIS' ``rescaled``) then scales each output row.

ΔW = W' − W depends on W, so it is computed from the base weight when a checkpoint is merged.
Strength s means W(s) = W + s·ΔW, as for DoRA: kohya's and LyCORIS' own multiplier for a
diag-OFT without rescale, and how A1111 and ComfyUI merge every OFT. (LyCORIS' runtime
multiplier bends each BOFT stage and leaves ``rescale`` whole, so at s ≠ 1 those differ.)
"""

from __future__ import annotations

import torch

from lorasel.checkpoints.model import OFT_KINDS

__all__ = ["OFT_KINDS", "cayley", "check_layout", "oft_delta", "rotated_weight"]


def cayley(blocks: torch.Tensor, constraint: float) -> torch.Tensor:
    """Each block's rotation R = (I + Q)(I − Q)⁻¹, Q = B − Bᵀ (norm-capped at ``constraint`` > 0)."""
    b = blocks.float()
    q = b - b.transpose(-1, -2)
    if constraint > 0:
        length = float(torch.linalg.vector_norm(q)) + 1e-8
        if length > constraint:
            q = q * (constraint / length)
    eye = torch.eye(q.shape[-1], dtype=q.dtype, device=q.device)
    # (I + Q) and (I − Q)⁻¹ commute: R = (I − Q)⁻¹(I + Q), one solve per block.
    return torch.linalg.solve(eye - q, eye + q)


def _butterfly_order(rows: int, half: int, device) -> torch.Tensor:
    """Row order of one BOFT stage: in each group of 2·half rows, row j of the first half and row
    j of the second become neighbours, so blocks of the permuted rows mix rows ``half`` apart."""
    return torch.arange(rows, device=device).reshape(-1, 2, half).transpose(1, 2).reshape(-1)


def rotated_weight(
    w0: torch.Tensor, blocks: torch.Tensor, rescale: torch.Tensor | None, constraint: float
) -> torch.Tensor:
    """W' (float32, shaped like ``w0``) for diag-OFT (3-D ``blocks``) or BOFT (4-D)."""
    w = w0.float()
    r = cayley(blocks.to(w.device), constraint)
    rows, size = w.shape[0], r.shape[-1]
    flat = w.reshape(rows, -1)
    if r.dim() == 3:
        out = torch.einsum("knm,knc->kmc", r, flat.reshape(-1, size, flat.shape[1]))
        out = out.reshape(w.shape)
    else:
        out = flat
        for stage, rotations in enumerate(r):
            order = _butterfly_order(rows, 2**stage * size // 2, w.device)
            mixed = torch.einsum("kij,kjc->kic", rotations, out[order].reshape(-1, size, flat.shape[1]))
            out = torch.empty_like(out)
            out[order] = mixed.reshape(rows, -1)
        out = out.reshape(w.shape)
    if rescale is not None:
        out = out * rescale.float().to(w.device).reshape(rows, *[1] * (w.dim() - 1))
    return out


def oft_delta(w0: torch.Tensor, module) -> torch.Tensor:
    """ΔW = W' − W of an OFT/BOFT ``LoraModule`` on the base weight ``w0``, float32."""
    t = module.tensors
    constraint = (module.alpha or 0.0) * module.out_features
    return rotated_weight(w0, t["blocks"], t.get("rescale"), constraint).sub_(w0.float())  # W' is new


def check_layout(blocks_shape: tuple[int, ...]) -> str | None:
    """Why ``oft_blocks`` of this shape cannot be an OFT/BOFT, or None when it can."""
    if len(blocks_shape) not in (3, 4) or blocks_shape[-1] != blocks_shape[-2] or 0 in blocks_shape:
        return "oft_blocks should be [blocks, size, size] (OFT) or [stages, blocks, size, size] (BOFT)"
    if len(blocks_shape) == 4:
        stages, count, size = blocks_shape[0], blocks_shape[1], blocks_shape[2]
        if size % 2 or count % (2 ** (stages - 1)):
            return f"a BOFT of {stages} stages cannot pair {count} blocks of {size}"
    return None
