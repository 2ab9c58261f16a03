"""The TUI's background jobs, run in thread workers: they compute, then ``post`` a message.

Each job gets everything it needs as arguments (no widget, no app state) and reports only
through :mod:`lorasel.tui.messages`, so the UI thread alone touches the screen. ``post`` is
the app's thread-safe ``post_message``.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.message import Message

from lorasel.errors import LoraselError
from lorasel.rank import LossLog, LossLogWarning, Ranking, rank
from lorasel.results import Results
from lorasel.rundir import RunDir
from lorasel.tui import messages as msg
from lorasel.tui.evaluation import EvaluateFn, EvaluationRequest, run_evaluation
from lorasel.tui.render_cache import RenderCache
from lorasel.tui.session import ViewState
from lorasel.tui.views import RankingIndex

Post = Callable[[Message], Any]
ResultsLoader = Callable[[Path, Path | None], Results]
LossLoader = Callable[[Path], LossLog | None]

#: Seconds between progress updates the evaluation sends to the UI (the last of a phase always goes).
PROGRESS_INTERVAL = 0.1


def read_loss(loss_loader: LossLoader, root: Path) -> tuple[LossLog | None, list[str]]:
    """The training loss of the run, and lorasel's warnings about an unusable log as text."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LossLogWarning)
        loss = loss_loader(root)
    return loss, [str(w.message) for w in caught if issubclass(w.category, LossLogWarning)]


def load_results(
    loader: ResultsLoader, loss_loader: LossLoader, path: Path, run: RunDir, *, initial: bool, post: Post
) -> None:
    """Read the results and the loss; post ResultsLoaded, or ResultsFailed (never raises: a
    store being written can fail in many ways, and the table shown must survive it)."""
    try:
        results = loader(path, run.workdir)
        loss, notes = read_loss(loss_loader, run.root)
    except LoraselError as exc:
        post(msg.ResultsFailed(exc.message, exc.hint, initial))
        return
    except Exception as exc:
        post(msg.ResultsFailed(f"{type(exc).__name__}: {exc}", None, initial))
        return
    post(msg.ResultsLoaded(results, loss, notes))


def ranking_for(results: Results, state: ViewState, loss: LossLog | None, n_boot: int) -> Ranking:
    """The ranking ``state`` asks for (its weights and strength filter), as `lorasel rank` computes it."""
    strengths = [state.strength] if state.strength is not None else None
    return rank(results, weights=state.weights, strengths=strengths, loss=loss, n_boot=n_boot)


def rank_results(
    results: Results, state: ViewState, loss: LossLog | None, n_boot: int, generation: int, post: Post
) -> None:
    try:
        ranking = ranking_for(results, state, loss, n_boot)
    except LoraselError as exc:
        post(msg.RankingFailed(exc.message, exc.hint, generation))
        return
    post(msg.RankingReady(ranking, generation, RankingIndex(ranking)))


def write_reports(
    results: Results,
    ranking: Ranking,
    run: RunDir,
    *,
    write: bool,
    opener: Callable[[str], bool] | None,
    post: Post,
) -> None:
    """Write report/scores.csv and report/report.html (unless ``write`` is False: they are up
    to date), then open the HTML with ``opener`` if given."""
    from lorasel.report import write_csv, write_html

    csv_path, html_path = run.report / "scores.csv", run.report / "report.html"
    try:
        if write:
            write_csv(ranking, csv_path)
            write_html(results, ranking, html_path, run.state, title=run.root.name)
    except LoraselError as exc:
        post(msg.ExportFailed(exc.message, exc.hint))
        return
    except OSError as exc:
        post(msg.ExportFailed(f"cannot write {run.report}: {exc}", "check the folder's permissions"))
        return
    opened = None
    if opener is not None:
        try:
            opened = bool(opener(html_path.as_uri()))
        except Exception:  # a viewer that fails to start is not the TUI's failure
            opened = False
    post(msg.ExportFinished([csv_path, html_path] if write else [], opened=opened, html=html_path))


def open_in_viewer(uri: str) -> bool:
    """Open ``uri`` in the system's graphical viewer; False when there is none.

    On Linux without a display (typically over SSH) Python's webbrowser falls back to text
    browsers, which would take the terminal away from the TUI: then nothing is opened.
    """
    import webbrowser

    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return False
    return webbrowser.open(uri)


def decode_renders(cache: RenderCache, token: Any, paths: dict[str, str | None], post: Post) -> None:
    post(msg.ImagesReady(token, {slot: cache.get(path) for slot, path in paths.items()}))


def evaluate_in_stages(
    evaluate: EvaluateFn,
    request: EvaluationRequest,
    *,
    evaluated: list[float],
    loss_loader: LossLoader,
    root: Path,
    cancelled: Callable[[], bool],
    post: Post,
) -> None:
    """Run the evaluation stage by stage (see :mod:`lorasel.tui.evaluation`): post throttled
    progress, the results of every stage, and how it ended."""
    last: dict[str, Any] = {"at": 0.0, "phase": None}

    def on_progress(stage: int, stages: int, event: Any) -> None:
        phase = str(getattr(event, "phase", ""))
        text = str(getattr(event, "message", "") or "")
        if phase == "warning":
            post(msg.EvaluationWarning(text))
            return
        done, total = int(getattr(event, "done", 0) or 0), int(getattr(event, "total", 0) or 0)
        now = time.monotonic()
        if (phase, stage) == last["phase"] and now - last["at"] < PROGRESS_INTERVAL and done < total:
            return
        last.update(at=now, phase=(phase, stage))
        post(msg.EvaluationProgress(stage, stages, phase, done, total, text))

    def on_results(results: Results, stage: int, stages: int) -> None:
        loss, notes = read_loss(loss_loader, root)
        post(msg.ResultsLoaded(results, loss, notes, source="evaluation"))

    try:
        finished = run_evaluation(
            evaluate, request, evaluated=evaluated, on_progress=on_progress, on_results=on_results,
            should_stop=cancelled,
        )  # fmt: skip
    except LoraselError as exc:
        post(msg.EvaluationFinished(stopped=cancelled(), error=(exc.message, exc.hint)))
        return
    except Exception as exc:  # keep the TUI (and the results so far) alive; say what happened
        post(msg.EvaluationFinished(error=(f"{type(exc).__name__}: {exc}", None)))
        return
    post(msg.EvaluationFinished(stopped=not finished))
