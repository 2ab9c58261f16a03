"""Progress of an evaluation as plain events, so the CLI, the TUI and scripts can all show it.

The core never prints: ``evaluate(..., progress=callback)`` calls ``callback(event)`` with a
:class:`ProgressEvent` after each batch (and for warnings); a callback that raises stops the
evaluation cleanly (everything finished so far is kept, and a rerun resumes from there).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

PHASES = ("start", "render", "score", "warning", "done")


@dataclass(frozen=True)
class ProgressEvent:
    """One step of an evaluation.

    ``phase``: start | render | score | warning | done. For ``render``: ``done`` of ``total``
    renders of the plan are finished (``cached`` of them were finished before this run),
    ``rate`` renders per second in this run, ``eta_s`` the seconds left at that rate.
    """

    phase: str
    done: int = 0
    total: int = 0
    cached: int = 0
    rate: float | None = None
    eta_s: float | None = None
    message: str = ""
    checkpoint: str | None = None
    strength: float | None = None


ProgressCallback = Callable[[ProgressEvent], None]


class RenderProgress:
    """Counts renders and turns them into events with a rate and an ETA."""

    def __init__(self, callback: ProgressCallback | None, total: int, cached: int, clock=time.perf_counter):
        self.callback = callback
        self.total = total
        self.cached = cached
        self.done = cached
        self._clock = clock
        self._start = clock()

    def emit(self, event: ProgressEvent) -> None:
        if self.callback is not None:
            self.callback(event)

    def warn(self, message: str) -> None:
        self.emit(ProgressEvent("warning", self.done, self.total, self.cached, message=message))

    def advance(self, n: int, *, checkpoint: str, strength: float) -> None:
        self.done += n
        rendered = self.done - self.cached
        elapsed = self._clock() - self._start
        rate = rendered / elapsed if elapsed > 0 and rendered > 0 else None
        eta = (self.total - self.done) / rate if rate else None
        self.emit(
            ProgressEvent(
                "render",
                self.done,
                self.total,
                self.cached,
                rate,
                eta,
                checkpoint=checkpoint,
                strength=strength,
            )
        )
