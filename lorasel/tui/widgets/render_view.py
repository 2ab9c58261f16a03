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
CAPTION_ROWS = 2


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
    RenderView > .picture { width: 1; height: 1; }
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
        self._fit()

    def on_resize(self) -> None:
        self._fit()

    def _fit(self) -> None:
        """Size the picture to the largest that fits below the caption with the image's aspect
        (terminal cells are not square; textual-image knows their size in pixels)."""
        if self._image_class is None:
            return
        picture = self.query_one(".picture")
        image = picture.image
        columns, rows = self.content_size.width, self.content_size.height - CAPTION_ROWS
        if image is None or columns < 1 or rows < 1:
            return
        from textual_image._terminal import get_cell_size

        cell = get_cell_size()
        width, height = image.size
        fit = min(columns, int(rows * cell.height * width / (height * cell.width)))
        fit = max(1, fit)
        picture.styles.width = fit
        picture.styles.height = max(1, round(fit * cell.width * height / (width * cell.height)))
