"""(IA)³ (LyCORIS' ``ia3``): a learned scale per channel of the base weight,
ΔW = W·diag(w) on the output rows, or on the input columns when the file's ``on_input`` is 1
(LyCORIS' ``train_on_input``, its preset's choice for the feed-forward output layers).

ΔW depends on W, so it is computed from the base weight when a checkpoint is merged; it is
linear in the strength, as LyCORIS' multiplier is: W(s) = W + s·ΔW. No alpha, γ = 1.
"""

from __future__ import annotations

import torch


def ia3_delta(w0: torch.Tensor, w: torch.Tensor, on_input: bool) -> torch.Tensor:
    """W scaled channel by channel by ``w`` (one value per output row, or per input column), float32."""
    shape = [1] * w0.dim()
    shape[1 if on_input else 0] = -1
    return w0.float() * w.float().reshape(shape)
