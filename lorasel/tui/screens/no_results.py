"""Shown when the folder has no evaluation results yet: what is missing, and a key to start."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Static

from lorasel.tui.text import clean
from lorasel.tui.widgets.key_bar import KeyBar


class NoResultsScreen(Screen[bool]):
    """Dismissed with True when the person asks to start the evaluation."""

    DEFAULT_CSS = """
    NoResultsScreen { align: center middle; }
    NoResultsScreen > Vertical { width: 76; height: auto; border: round $warning; padding: 1 2; }
    NoResultsScreen KeyBar { dock: bottom; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("v", "start", "start the evaluation"),
        Binding("q", "app.quit", "quit"),
    ]

    def __init__(self, message: str, hint: str | None, plan: str) -> None:
        super().__init__()
        self._message, self._hint, self._plan = message, hint, plan

    def _text(self) -> Text:
        text = Text()
        text.append("No evaluation results to rank yet\n\n", style="bold")
        text.append(clean(self._message))
        if self._hint:
            text.append("\n(" + clean(self._hint) + ")", style="dim")
        text.append("\n\nPress v to evaluate here and watch the table fill in: ")
        text.append(clean(self._plan))
        text.append(".\nOr run `lorasel eval` elsewhere: this screen updates when results appear.")
        return text

    def compose(self):
        with Vertical():
            yield Static(self._text(), id="no-results")
        yield KeyBar(screen_only=True)

    def show_error(self, message: str, hint: str | None) -> None:
        """The store was read again and still has no results: say why, this time."""
        self._message, self._hint = message, hint
        if self.is_mounted:
            self.query_one("#no-results", Static).update(self._text())

    def action_start(self) -> None:
        self.dismiss(True)
