"""Write LoRA checkpoints as A1111, ComfyUI and kohya tools expect them.

safetensors only, written atomically (temp file + rename) so that an evaluator
watching the folder never reads a partial file, with kohya's precomputed hashes
(``sshs_model_hash``, ``sshs_legacy_hash``) that sd-webui-additional-networks reads.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save

from lorasel.io import atomic_write_bytes


def _hash_tensor_bytes(blob: bytes) -> str:
    """SHA-256 of what follows the safetensors header (kohya's addnet_hash_safetensors)."""
    header_len = int.from_bytes(blob[:8], "little")
    return hashlib.sha256(blob[8 + header_len :]).hexdigest()


def _legacy_hash(blob: bytes) -> str:
    """kohya's addnet_hash_legacy: SHA-256 of 64 KiB at offset 1 MiB, first 8 hex digits."""
    return hashlib.sha256(blob[0x100000 : 0x100000 + 0x10000]).hexdigest()[:8]


def model_hashes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> dict[str, str]:
    """The hashes kohya precomputes: over the file serialised with only ``ss_*`` metadata."""
    ss_only = {k: v for k, v in metadata.items() if k.startswith("ss_")}
    blob = save(dict(tensors), metadata=ss_only)
    return {"sshs_model_hash": _hash_tensor_bytes(blob), "sshs_legacy_hash": _legacy_hash(blob)}


def save_checkpoint(
    path: str | os.PathLike,
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
    *,
    add_hashes: bool = True,
) -> Path:
    """Save ``tensors`` to ``path`` atomically, with string metadata and kohya's hashes."""
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    if add_hashes:
        meta.update(model_hashes(contiguous, meta))
    target = Path(path)
    atomic_write_bytes(target, save(contiguous, metadata=meta))
    return target
