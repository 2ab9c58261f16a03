"""Messages from the TUI's background workers to the UI thread.

Workers (loading results, ranking, evaluating, exporting, decoding images) never touch a
widget: they post one of these and the app updates the screen in its handler. Frequent
progress messages replace each other in the queue (:meth:`EvaluationProgress.can_replace`), so
a fast evaluator cannot flood the UI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual.message import Message

if TYPE_CHECKING:
    from PIL import Image

    from lorasel.rank import LossLog, Ranking
    from lorasel.results import Results
    from lorasel.tui.views import RankingIndex


@dataclass
class ResultsLoaded(Message):
    """New results to show: read from the store, or delivered by a stage of an evaluation."""

    results: Results
    loss: LossLog | None
    warnings: list[str] = field(default_factory=list)
    source: str = "store"  # store | evaluation


@dataclass
class ResultsFailed(Message):
    """Reading the results failed; ``initial`` when nothing has been shown yet."""

    message: str
    hint: str | None
    initial: bool


@dataclass
class RankingReady(Message):
    """A ranking for request ``generation`` (older generations are dropped), with its look-ups."""

    ranking: Ranking
    generation: int
    index: RankingIndex


@dataclass
class RankingFailed(Message):
    message: str
    hint: str | None
    generation: int


@dataclass
class EvaluationProgress(Message):
    """Progress of the evaluation: ``done`` of ``total`` in ``phase`` of stage ``stage``/``stages``."""

    stage: int
    stages: int
    phase: str
    done: int
    total: int
    message: str = ""

    def can_replace(self, message: Message) -> bool:
        # A newer count supersedes an older one of the same phase; phase changes are kept.
        return (
            isinstance(message, EvaluationProgress)
            and message.stage == self.stage
            and message.phase == self.phase
        )


@dataclass
class EvaluationWarning(Message):
    message: str


@dataclass
class EvaluationFinished(Message):
    """The evaluation ended: ``stopped`` by the user, ``error`` (message, hint) if it failed."""

    stopped: bool = False
    error: tuple[str, str | None] | None = None


@dataclass
class ExportFinished(Message):
    """Reports written (``paths``; empty when they were up to date); ``opened``: whether the
    system viewer took ``html`` (None when it was not asked to)."""

    paths: list[Path]
    opened: bool | None = None
    html: Path | None = None


@dataclass
class ExportFailed(Message):
    message: str
    hint: str | None


@dataclass
class ImagesReady(Message):
    """Decoded renders for the images pane, for the selection ``key`` they were asked for."""

    key: Any
    images: dict[str, Image.Image | None]
