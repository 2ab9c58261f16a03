"""DoRA: W' = (W0 + γΔW) · m / ‖W0 + γΔW‖ (REFERENCE §2, DESIGN "Strength by merging").

The norm is taken per output row when the magnitude ``m`` is shaped [out, 1, ...]
(LyCORIS' default ``wd_on_output``; PEFT's ``lora_magnitude_vector``) and per input
column when it is shaped [1, in, ...]. lorasel defines strength s for DoRA as
W(s) = W0 + s · (W' − W0): s = 0 is the base, s = 1 is what the checkpoint trained.
"""

from __future__ import annotations

import torch


def dora_weight(
    w0: torch.Tensor, delta: torch.Tensor, magnitude: torch.Tensor, on_output: bool
) -> torch.Tensor:
    """W' in float32; ``delta`` is γΔW already shaped like ``w0``."""
    w = w0.float() + delta.float()
    ones = [1] * (w.dim() - 1)
    if on_output:
        norm = w.reshape(w.shape[0], -1).norm(dim=1).reshape(w.shape[0], *ones)
    else:
        cols = w.transpose(0, 1).reshape(w.shape[1], -1).norm(dim=1)
        norm = cols.reshape(w.shape[1], *ones).transpose(0, 1)
    m = magnitude.float().reshape(norm.shape)
    return w.mul_(m / norm.clamp_min(torch.finfo(torch.float32).tiny))  # w is this function's own


def dora_delta(
    w0: torch.Tensor, delta: torch.Tensor, magnitude: torch.Tensor, on_output: bool
) -> torch.Tensor:
    """W' − W0 in float32: what strength s scales."""
    return dora_weight(w0, delta, magnitude, on_output).sub_(w0.float())
