"""Renders as small inline PNGs (``data:`` URIs) for a report that opens offline.

A report holds one thumbnail per prompt × candidate, so their size is the report's size:
thumbnails are made at display size and stored as 256-colour palette PNGs (about 10 KB for a
96 px photo-like render instead of 25 KB). They are cached in ``STATE/thumbs/`` by the render's
path, size and modification time, so rerunning ``lorasel report`` does not recompute them.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
from pathlib import Path

from lorasel.io import atomic_write_bytes

#: Longest side of a thumbnail in the render grid, in pixels (also its display size).
THUMB_SIZE = 96
#: Small PNGs up to this many bytes are embedded as they are.
EMBED_AS_IS = 32 * 1024
CACHE_DIRNAME = "thumbs"


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _make_thumbnail(path: Path, size: int) -> tuple[bytes, bool] | None:
    """(PNG bytes, whether they were made here) or None for an unreadable image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.format == "PNG" and max(image.size) <= size and path.stat().st_size <= EMBED_AS_IS:
                return path.read_bytes(), False  # already small: embed as is
            image = image.convert("RGB")
            image.thumbnail((size, size), Image.Resampling.LANCZOS)
            # Fast octree: about 100x faster than median cut, for a barely visible difference.
            image = image.quantize(colors=256, method=Image.Quantize.FASTOCTREE)
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", optimize=True)
            return buffer.getvalue(), True
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None


def thumbnail(state_dir: Path, relative: str, size: int = THUMB_SIZE, cache: bool = True) -> str | None:
    """A PNG data URI of the render at ``state_dir / relative``, at most ``size`` px a side.

    None when the file is missing, unreadable or outside ``state_dir`` (the path comes from the
    results store; it is never followed out of the state folder).
    """
    root = Path(state_dir).resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    stat = path.stat()
    key = hashlib.sha256(
        f"{path.relative_to(root)}|{size}|{stat.st_mtime_ns}|{stat.st_size}".encode()
    ).hexdigest()
    cached = root / CACHE_DIRNAME / f"{key[:32]}.png"
    if cache and cached.is_file():
        return data_uri(cached.read_bytes())
    made = _make_thumbnail(path, size)
    if made is None:
        return None
    png, fresh = made
    if cache and fresh:
        # A read-only state folder: the report still works, only slower next time.
        with contextlib.suppress(OSError):
            atomic_write_bytes(cached, png)
    return data_uri(png)
