"""Renders as small inline PNGs (``data:`` URIs) for a report that opens offline."""

from __future__ import annotations

import base64
import io
from pathlib import Path

#: Longest side of a thumbnail in the render grid, in pixels (also its display size).
THUMB_SIZE = 96


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def thumbnail(state_dir: Path, relative: str, size: int = THUMB_SIZE) -> str | None:
    """A PNG data URI of the render at ``state_dir / relative``, at most ``size`` px a side.

    None when the file is missing, unreadable or outside ``state_dir`` (the path comes from the
    results store; it is never followed out of the state folder).
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(state_dir).resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    try:
        with Image.open(path) as image:
            if image.format == "PNG" and max(image.size) <= size and path.stat().st_size <= 65536:
                return data_uri(path.read_bytes())  # already small: embed as is
            image = image.convert("RGB")
            image.thumbnail((size, size), Image.Resampling.LANCZOS)
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", optimize=True)
            return data_uri(buffer.getvalue())
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None
