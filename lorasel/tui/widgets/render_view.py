"""One render with its caption, drawn with the best terminal graphics available.

Drawing uses textual-image: Sixel or the Kitty graphics protocol where the terminal answers
that it supports them (asked once, before the app starts), otherwise coloured half-block
cells, which work in any colour terminal and over SSH. ``graphics`` forces one method
(``halfcell`` makes screenshots deterministic); ``none`` shows captions only.
"""

from __future__ import annotations

from PIL import Image
from rich.text import Text
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import Static

GRAPHICS = ("auto", "halfcell", "sixel", "tgp", "none")


def image_widget_class(graphics: str) -> type[Widget] | None:
    """The textual-image widget class for ``graphics`` (None for ``none``)."""
    if graphics == "none":
        return None
    import textual_image.widget as tiw

    if graphics == "halfcell":
        return tiw.HalfcellImage
    if graphics == "sixel":
        return tiw.SixelImage
    if graphics == "tgp":
        return tiw.TGPImage
    # auto: textual-image's detection, but half-blocks rather than grey shading off a TTY.
    return tiw.HalfcellImage if tiw.Image is tiw.UnicodeImage else tiw.Image


class RenderView(Vertical):
    """A caption above one image; :meth:`show` replaces both."""

    DEFAULT_CSS = """
    RenderView { width: 1fr; height: 1fr; padding: 0 1 0 0; }
    RenderView > .caption { height: 2; }
    RenderView > .picture { width: auto; height: 1fr; max-width: 100%; }
    RenderView > .missing { height: 1fr; color: $text-muted; }
    """

    def __init__(self, graphics: str = "auto", **kwargs) -> None:
        super().__init__(**kwargs)
        self._image_class = image_widget_class(graphics)

    def compose(self):
        yield Static("", classes="caption")
        if self._image_class is not None:
            yield self._image_class(None, classes="picture")
        yield Static("", classes="missing")

    def show(self, caption: Text, image: Image.Image | None, missing: str = "") -> None:
        self.query_one(".caption", Static).update(caption)
        note = self.query_one(".missing", Static)
        if self._image_class is None:
            note.update(Text(missing or "images off (--graphics none); o opens the report", style="dim"))
            return
        picture = self.query_one(".picture")
        picture.image = image
        picture.display = image is not None
        note.display = image is None
        note.update(Text(missing, style="dim"))
