"""Shown instead of a garbled layout when the terminal is smaller than the TUI needs."""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Static

MIN_WIDTH, MIN_HEIGHT = 80, 24


def too_small_text(width: int, height: int) -> str:
    return f"terminal too small (need {MIN_WIDTH}×{MIN_HEIGHT}, have {width}×{height})"


class TooSmallScreen(Screen[None]):
    """A centred message; the app removes it when the terminal is large enough again."""

    DEFAULT_CSS = """
    TooSmallScreen { align: center middle; }
    TooSmallScreen > Static { width: 100%; height: auto; text-align: center; }
    #too-small { text-style: bold; color: $foreground; }
    #too-small-hint { color: $text-muted; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "app.quit", "quit"),
        Binding("ctrl+c", "app.quit", "quit", show=False),
    ]

    def compose(self):
        yield Static(markup=False, id="too-small")
        yield Static("resize the terminal, or press q to quit", markup=False, id="too-small-hint")

    def on_mount(self) -> None:
        self.show_size(self.app.size.width, self.app.size.height)

    def show_size(self, width: int, height: int) -> None:
        self.query_one("#too-small", Static).update(too_small_text(width, height))
