"""Checkpoint files on disk: safetensors only, header first, content hash memoised.

A safetensors file is an 8-byte little-endian header length, a JSON header (tensor
names, dtypes, shapes, byte ranges, and a ``__metadata__`` dict of strings), then the
tensor bytes. Reading the header alone is enough for discovery (names, metadata,
whether the file is complete), so 100 checkpoints are listed without loading a tensor.

Files come from strangers: the header is checked before anything trusts it, pickle
formats are refused by suffix without being opened, metadata values are kept as
plain strings that callers must treat as hostile text, and tensors are checked finite.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from lorasel.errors import CheckpointError

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
# safetensors itself refuses headers above 100 MB; so do we, before allocating.
MAX_HEADER_BYTES = 100 * 1024 * 1024
_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's entry in a safetensors header."""

    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Header:
    """A parsed, checked safetensors header: tensor infos by key, and string metadata."""

    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    data_offset: int  # where the tensor bytes start in the file


def refuse_pickle(path: Path) -> None:
    """Raise for pickle checkpoint formats, judged by suffix only: never opened."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path} is a pickle file ({path.suffix}); lorasel never loads pickle, it can run code",
            hint="convert it to .safetensors (e.g. with kohya's convert scripts) or ask for a .safetensors release",
        )


def _bad(path: Path, what: str) -> CheckpointError:
    return CheckpointError(
        f"{path} is not a valid safetensors file: {what}",
        hint="the file may be truncated (an interrupted download or save) or not a safetensors file; "
        "re-download or re-save it",
    )


def parse_header(path: Path, head: bytes, file_size: int) -> Header:
    """Check and parse the header bytes ``head`` (starting at offset 0) of a file of ``file_size``.

    ``head`` must hold at least the 8-byte length and the JSON header; callers read just
    that much for discovery, or the whole file when loading.
    """
    if file_size < 8 or len(head) < 8:
        raise _bad(path, f"only {file_size} bytes long")
    n = int.from_bytes(head[:8], "little")
    if n < 2 or n > MAX_HEADER_BYTES or 8 + n > file_size:
        raise _bad(path, f"corrupt header (declared header length {n}, file size {file_size})")
    if len(head) < 8 + n:
        raise _bad(path, "header cut short")
    try:
        raw = json.loads(head[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(path, f"corrupt header ({exc.__class__.__name__})") from None
    if not isinstance(raw, dict):
        raise _bad(path, "corrupt header (not a JSON object)")
    metadata = raw.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise _bad(path, "corrupt header (__metadata__ is not an object)")
    # The format says str -> str; anything else is coerced so that no caller meets a non-string.
    meta = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    tensors: dict[str, TensorInfo] = {}
    end = 0
    for key, info in raw.items():
        try:
            dtype, shape, (start, stop) = info["dtype"], info["shape"], info["data_offsets"]
            shape = tuple(int(d) for d in shape)
            start, stop = int(start), int(stop)
        except (KeyError, TypeError, ValueError):
            raise _bad(path, f"corrupt header entry for tensor {key!r}") from None
        if dtype not in _DTYPE_BYTES or any(d < 0 for d in shape) or not 0 <= start <= stop:
            raise _bad(path, f"corrupt header entry for tensor {key!r}")
        numel = 1
        for d in shape:
            numel *= d
        if stop - start != numel * _DTYPE_BYTES[dtype]:
            raise _bad(path, f"tensor {key!r} has {stop - start} bytes for shape {list(shape)} {dtype}")
        tensors[key] = TensorInfo(dtype=dtype, shape=shape)
        end = max(end, stop)
    data_offset = 8 + n
    if data_offset + end > file_size:
        raise _bad(
            path, f"truncated: the header needs {data_offset + end} bytes but the file has {file_size}"
        )
    return Header(tensors=tensors, metadata=meta, data_offset=data_offset)


def check_path(path: str | os.PathLike) -> Path:
    """The path as a ``Path`` if it is an existing ``.safetensors`` file, else a CheckpointError."""
    p = Path(path).expanduser()
    refuse_pickle(p)
    if not p.exists():
        raise CheckpointError(f"checkpoint {p} not found", hint="check the path")
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} is not a file", hint="pass a .safetensors file")
    if p.suffix.lower() != ".safetensors":
        raise CheckpointError(
            f"{p} is not a .safetensors file",
            hint="lorasel reads LoRA checkpoints in safetensors format only",
        )
    return p


def read_header(path: str | os.PathLike) -> Header:
    """Parse the header of a checkpoint without reading its tensors (for discovery)."""
    p = check_path(path)
    size = p.stat().st_size
    try:
        with open(p, "rb") as handle:
            first = handle.read(8)
            n = int.from_bytes(first, "little") if len(first) == 8 else 0
            rest = handle.read(n) if 2 <= n <= MAX_HEADER_BYTES and 8 + n <= size else b""
    except OSError as exc:
        raise CheckpointError(f"cannot read {p}: {exc.strerror}", hint="check file permissions") from None
    return parse_header(p, first + rest, size)


_HASHES: dict[tuple[str, int, int], str] = {}


def _stat_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def file_hash(path: str | os.PathLike) -> str:
    """SHA-256 of the file's bytes: the render-cache key of a checkpoint.

    Memoised by (path, size, mtime): a rerun over 100 unchanged checkpoints hashes nothing twice.
    """
    p = Path(path).expanduser()
    try:
        key = _stat_key(p)
    except OSError:
        raise CheckpointError(f"checkpoint {p} not found", hint="check the path") from None
    cached = _HASHES.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    with open(p, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def read_bytes_hashed(path: Path) -> bytes:
    """The file's bytes, recording their SHA-256 in the ``file_hash`` memo on the way."""
    try:
        key = _stat_key(path)
        data = path.read_bytes()
        unchanged = _stat_key(path) == key  # not rewritten while we read it
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}", hint="check file permissions") from None
    if unchanged and key not in _HASHES:
        _HASHES[key] = hashlib.sha256(data).hexdigest()
    return data


def check_finite(path: Path, key: str, t: torch.Tensor) -> None:
    if not t.is_floating_point() or t.numel() == 0:
        return
    # One float32 reduction is NaN/Inf iff an element is (bar an absurd overflow, which the exact
    # check below rules out): much faster than an element-wise isfinite on half-precision tensors.
    wide = t if t.element_size() > 1 else t.float()  # float8 has no reductions
    if math.isfinite(float(wide.sum(dtype=torch.float32))):
        return
    if not bool(torch.isfinite(t).all()):
        bad = "NaN" if bool(torch.isnan(t).any()) else "Inf"
        raise CheckpointError(
            f"{path}: tensor {key!r} contains {bad} values",
            hint="training diverged or the file is corrupt; use an earlier checkpoint",
        )
