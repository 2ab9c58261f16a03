"""Decoded renders for the images pane, cached so moving back and forth decodes nothing twice.

Image paths come from the results database, relative to the state folder; a path that leads
outside it (a tampered database) is not opened.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from PIL import Image, UnidentifiedImageError

#: Renders are shown at terminal resolution: no need to keep more pixels than this.
MAX_SIDE = 256
CACHE_SIZE = 96


class RenderCache:
    """Thread-safe LRU of decoded, downscaled RGB renders keyed by relative path."""

    def __init__(self, state_dir: Path, size: int = CACHE_SIZE) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.size = size
        self._images: OrderedDict[str, Image.Image | None] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, relative: str | None) -> Image.Image | None:
        """The render at ``state_dir / relative``, or None when missing, unreadable or outside."""
        if not relative:
            return None
        with self._lock:
            if relative in self._images:
                self._images.move_to_end(relative)
                return self._images[relative]
        image = self._load(relative)
        with self._lock:
            self._images[relative] = image
            while len(self._images) > self.size:
                self._images.popitem(last=False)
        return image

    def _load(self, relative: str) -> Image.Image | None:
        path = (self.state_dir / relative).resolve()
        if not path.is_relative_to(self.state_dir) or not path.is_file():
            return None
        try:
            with Image.open(path) as opened:
                image = opened.convert("RGB")
        except (OSError, UnidentifiedImageError, ValueError):
            return None
        image.thumbnail((MAX_SIDE, MAX_SIDE))
        return image
