"""Device and dtype defaults: CUDA in half precision when present, else CPU in float32."""

from __future__ import annotations

import torch


def default_device(device: str | torch.device | None = None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device, dtype: torch.dtype | str | None = None) -> torch.dtype:
    if isinstance(dtype, str):
        names = {
            "fp32": torch.float32,
            "float32": torch.float32,
            "fp16": torch.float16,
            "float16": torch.float16,
            "bf16": torch.bfloat16,
            "bfloat16": torch.bfloat16,
        }
        if dtype not in names:
            from lorasel.errors import ConfigError

            raise ConfigError(f"unknown dtype {dtype!r}", hint="use fp32, fp16 or bf16")
        return names[dtype]
    if dtype is not None:
        return dtype
    return torch.float16 if device.type == "cuda" else torch.float32
