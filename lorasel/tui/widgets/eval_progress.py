"""The evaluation's progress: stage, phase and a bar (hidden when no evaluation runs)."""

from __future__ import annotations

from rich.text import Text
from textual.containers import Horizontal
from textual.widgets import ProgressBar, Static

from lorasel.tui.text import clean


class EvalProgress(Horizontal):
    """A one-line progress display for the evaluation worker."""

    DEFAULT_CSS = """
    EvalProgress { height: 1; display: none; padding: 0 1; background: $boost; }
    EvalProgress.-running { display: block; }
    EvalProgress > Static { width: 1fr; }
    EvalProgress > ProgressBar { width: 32; }
    """

    def compose(self):
        yield Static("", id="eval-label")
        yield ProgressBar(total=None, show_eta=False, id="eval-bar")

    def start(self, message: str) -> None:
        self.add_class("-running")
        self.query_one("#eval-label", Static).update(Text(clean(message), no_wrap=True, overflow="ellipsis"))
        self.query_one("#eval-bar", ProgressBar).update(total=None, progress=0)

    def advance(self, stage: int, stages: int, phase: str, done: int, total: int, message: str) -> None:
        label = f"evaluating {stage}/{stages}: {phase}"
        if message:
            label += f" ({message})"
        self.query_one("#eval-label", Static).update(Text(clean(label), no_wrap=True, overflow="ellipsis"))
        bar = self.query_one("#eval-bar", ProgressBar)
        if total > 0:
            bar.update(total=total, progress=min(done, total))
        else:
            bar.update(total=None)

    def stop(self) -> None:
        self.remove_class("-running")
