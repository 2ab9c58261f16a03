"""The TUI: rank and compare the checkpoints of one run, live.

:func:`make_app` builds the app for the CLI (`lorasel tui PATH`) and for the tests alike. The
app holds the data (results, loss, ranking, the person's :class:`ViewState`) and never blocks:
loading, ranking, evaluating and exporting run as thread workers (:mod:`lorasel.tui.jobs`)
that report through :mod:`lorasel.tui.messages`. :class:`MainScreen` shows it all. Exporting
and evaluating are the mixins of :mod:`lorasel.tui.app_actions`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from textual import events
from textual.app import App
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from lorasel.errors import ConfigError, ResultsError
from lorasel.rank import DEFAULT_WEIGHTS, LossLog, Ranking, Weights, choose, read_loss
from lorasel.results import BASE, RENDER_METRICS, Results
from lorasel.rundir import RunDir
from lorasel.tui import jobs
from lorasel.tui import messages as msg
from lorasel.tui.app_actions import EvaluationMixin, ReportsMixin, store_stamp
from lorasel.tui.evaluation import EvaluateFn, default_evaluate
from lorasel.tui.jobs import LossLoader, ResultsLoader
from lorasel.tui.render_cache import RenderCache
from lorasel.tui.screens.help import HelpScreen
from lorasel.tui.screens.main import MainScreen
from lorasel.tui.screens.no_results import NoResultsScreen
from lorasel.tui.screens.too_small import MIN_HEIGHT, MIN_WIDTH, TooSmallScreen
from lorasel.tui.session import ViewState
from lorasel.tui.text import clean
from lorasel.tui.views import RankingIndex, ResultsIndex
from lorasel.tui.widgets.render_view import GRAPHICS

#: Terminals at least this wide show the pane beside the table instead of below it.
WIDE = 150


def _fingerprint(results: Results, loss: LossLog | None) -> tuple:
    """Cheap identity of what a ranking depends on: a reload that changed nothing re-ranks nothing."""
    r = results.renders
    metrics = float(r[list(RENDER_METRICS)].sum().sum())
    losses = None if loss is None else (loss.source, len(loss.steps), float(loss.steps["loss"].sum()))
    return (len(r), metrics, tuple(sorted(map(str, results.checkpoints["checkpoint"]))),
            repr(sorted(results.settings.items())), losses)  # fmt: skip


def _shown_order(state: ViewState) -> tuple:
    """What of a view state decides the table's order and marks (the rest is the weights line)."""
    return (state.sort, state.reverse, state.by_loss, state.compare)


class LoraselTUI(ReportsMixin, EvaluationMixin, App[dict | None]):
    """Rank (checkpoint, strength) pairs, adjust the weights, compare renders. See :func:`make_app`."""

    CSS_PATH = "app.tcss"
    TITLE = "lorasel"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("e", "export", "export"),
        Binding("o", "open_report", "report"),
        Binding("v", "evaluate", "eval"),
        Binding("p", "print_pick", "pick"),
        Binding("question_mark", "help", "help", key_display="?"),
        Binding("q", "quit", "quit"),
        Binding("ctrl+c", "quit", "quit", show=False),
    ]

    def __init__(
        self,
        run: RunDir,
        *,
        path: Path,
        results_loader: ResultsLoader,
        loss_loader: LossLoader,
        evaluate: EvaluateFn,
        eval_options: Mapping[str, Any],
        weights: Weights,
        n_boot: int,
        graphics: str,
        poll_interval: float | None,
        opener: Callable[[str], bool],
        print_pick: bool,
    ) -> None:
        super().__init__()
        self.run_dir, self.path = run, path
        self._load_results, self._load_loss, self._evaluate = results_loader, loss_loader, evaluate
        self._eval_options = dict(eval_options)
        self.default_weights = weights
        self.state = ViewState(weights=weights)
        self._n_boot, self._graphics, self._poll_interval = n_boot, graphics, poll_interval
        self._opener, self._print_pick = opener, print_pick
        self.results: Results | None = None
        self.loss: LossLog | None = None
        self.index: ResultsIndex | None = None
        self.ranking: Ranking | None = None
        self.ranked: RankingIndex | None = None
        self.waiting = True  # for the first ranking, or for the news that there are no results
        self.renders = RenderCache(run.state)
        self._fingerprint: tuple | None = None
        self._generation = self._ranked_generation = 0
        self._warnings: list[str] = []  # each shown once, not on every re-rank
        self._exported_generation = -1
        self._stamp: tuple | None = None
        self._evaluation: Worker | None = None
        self._no_results: NoResultsScreen | None = None
        self._too_small: TooSmallScreen | None = None
        self.main = MainScreen(run.root.name, graphics)

    def get_default_screen(self) -> Screen:
        return self.main

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Reports and the pick need a ranking: their keys are off (and out of the footer) until then."""
        return self.ranking is not None or action not in ("export", "open_report", "print_pick")

    def on_mount(self) -> None:
        self._check_size()
        self._stamp = store_stamp(self.run_dir)
        self.load()
        if self._poll_interval:
            self.set_interval(self._poll_interval, self._poll)

    # ------------------------------------------------------------------ terminal size, screens

    def on_resize(self, event: events.Resize) -> None:
        self._check_size(event.size.width, event.size.height)

    def _check_size(self, width: int | None = None, height: int | None = None) -> None:
        """Below 80×24 a clear message replaces every screen (no garbled layout) until resized."""
        if width is None or height is None:
            width, height = self.size
        self.main.set_class(width >= WIDE, "-wide")
        small = width < MIN_WIDTH or height < MIN_HEIGHT
        if small and self._too_small is None:
            self._too_small = TooSmallScreen()
            self.push_screen(self._too_small)
        elif small and self._too_small is not None and self._too_small.is_mounted:
            self._too_small.show_size(width, height)
        elif not small and self._too_small is not None:
            screen, self._too_small = self._too_small, None
            if self.screen is screen:
                self.pop_screen()

    def _push(self, screen: Screen, callback=None) -> None:
        """Push ``screen`` below the too-small screen, if that is showing."""
        if self._too_small is not None and self.screen is self._too_small:
            self.pop_screen()
            self.push_screen(screen, callback)
            self.push_screen(self._too_small)
        else:
            self.push_screen(screen, callback)

    # ------------------------------------------------------------------ loading and watching

    def load(self) -> None:
        """Read the results in a worker (ResultsLoaded or ResultsFailed follows)."""
        work = partial(
            jobs.load_results, self._load_results, self._load_loss, self.path, self.run_dir,
            initial=self.results is None, post=self.post_message,
        )  # fmt: skip
        self.run_worker(work, thread=True, exclusive=True, group="load", exit_on_error=False)

    def _poll(self) -> None:
        """Reload when the results database changed (another `lorasel eval` wrote to it)."""
        if self._evaluation is not None or any(w.group == "load" and w.is_running for w in self.workers):
            return
        stamp = store_stamp(self.run_dir)
        if stamp != self._stamp:
            self._stamp = stamp
            self.load()

    def on_results_loaded(self, message: msg.ResultsLoaded) -> None:
        for note in dict.fromkeys(message.warnings):
            self.notify(clean(note), severity="warning", markup=False)
        if self._no_results is not None:
            screen, self._no_results = self._no_results, None
            screen.dismiss(False)
        fingerprint = _fingerprint(message.results, message.loss)
        if fingerprint == self._fingerprint:
            return
        self.results, self.loss, self._fingerprint = message.results, message.loss, fingerprint
        self.index = ResultsIndex(message.results)
        if self.state.strength is not None and self.state.strength not in self.strengths():
            self.state = replace(self.state, strength=None)
        self.request_ranking()

    def on_results_failed(self, message: msg.ResultsFailed) -> None:
        if not message.initial:
            self.notify(
                f"could not reload the results, showing the previous ones: {clean(message.message)}",
                severity="warning",
                markup=False,
            )
            return
        self.waiting = False
        self.main.stop_loading()
        if self._no_results is not None:
            self._no_results.show_error(message.message, message.hint)
            return
        self._no_results = NoResultsScreen(message.message, message.hint, self._plan_text())
        self._push(self._no_results, self._after_no_results)

    def _after_no_results(self, start: bool | None) -> None:
        self._no_results = None
        if start:
            self.action_evaluate()

    def strengths(self) -> list[float]:
        """The evaluated strengths (the base model's 0 aside)."""
        if self.results is None:
            return []
        s = self.results.renders.loc[self.results.renders["checkpoint"] != BASE, "strength"]
        return sorted({round(float(v), 6) for v in s})

    # ------------------------------------------------------------------ view state and ranking

    def set_state(self, state: ViewState) -> None:
        """Adopt ``state``: re-rank when the weights or the filter changed, else redraw."""
        old, self.state = self.state, state
        self.main.show_state(state)
        if (old.weights, old.strength) != (state.weights, state.strength):
            self.request_ranking()
        elif self.ranking is not None and _shown_order(old) != _shown_order(state):
            self.main.show_order(self.ranking, state)

    def request_ranking(self) -> None:
        if self.results is None:
            return
        self._generation += 1
        work = partial(
            jobs.rank_results, self.results, self.state, self.loss, self._n_boot, self._generation,
            self.post_message,
        )  # fmt: skip
        self.run_worker(work, thread=True, exclusive=True, group="rank", exit_on_error=False)

    def on_ranking_ready(self, message: msg.RankingReady) -> None:
        if message.generation != self._generation:
            return  # a newer request is on its way
        first, self.waiting = self.ranking is None, False
        self.ranking, self.ranked = message.ranking, message.index
        self._ranked_generation = message.generation
        self.main.show_ranking(message.ranking, self.state)
        warnings = message.ranking.warnings(rerun="the evaluation (press v)")
        for note in warnings:
            if note not in self._warnings:
                self.notify(clean(note), severity="warning", markup=False)
        self._warnings = warnings
        if first:
            self.refresh_bindings()

    def on_ranking_failed(self, message: msg.RankingFailed) -> None:
        if message.generation == self._generation:
            self.waiting = False
            self.main.stop_loading()
            self.notify(f"cannot rank: {clean(message.message)}", severity="error", markup=False)

    # ------------------------------------------------------------------ pick, quit, help

    def pick_json(self) -> dict | None:
        """``lorasel pick --json`` for the current weights and strength filter (None before any
        results): from the ranking shown, or a fresh one if a re-rank is still on its way."""
        if self.results is None:
            return None
        ranking = self.ranking
        if ranking is None or self._ranked_generation != self._generation:
            ranking = jobs.ranking_for(self.results, self.state, self.loss, self._n_boot)
        return choose(ranking).to_json()

    def action_print_pick(self) -> None:
        if self.results is None:
            self.notify("nothing to pick yet: no evaluation results", severity="warning")
            return
        self.exit(self.pick_json())

    async def action_quit(self) -> None:
        if self._evaluation is not None:
            self._evaluation.cancel()
        self.exit(self.pick_json() if self._print_pick else None)

    def action_help(self) -> None:
        self._push(HelpScreen(self.main.keys()))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A job that raised (a bug, not bad input: jobs report those as messages) is said, not hidden."""
        if event.state != WorkerState.ERROR:
            return
        error = event.worker.error
        self.notify(f"internal error in {event.worker.group}: {type(error).__name__}: {clean(error)}",
                    severity="error", markup=False, timeout=15)  # fmt: skip
        if event.worker is self._evaluation:
            self.on_evaluation_finished(
                msg.EvaluationFinished(error=(f"{type(error).__name__}: {error}", None))
            )
        if event.worker.group == "rank":
            self.waiting = False
            self.main.stop_loading()


def make_app(
    path: str | Path,
    *,
    workdir: str | Path | None = None,
    results_loader: ResultsLoader | None = None,
    loss_loader: LossLoader | None = None,
    evaluate: EvaluateFn | None = None,
    eval_options: Mapping[str, Any] | None = None,
    weights: Weights | None = None,
    n_boot: int = 1000,
    graphics: str = "auto",
    poll_interval: float | None = 2.0,
    opener: Callable[[str], bool] | None = None,
    print_pick: bool = False,
) -> LoraselTUI:
    """The TUI for the run or checkpoint folder at ``path`` (the CLI and the tests use this).

    ``results_loader(path, workdir)`` reads the evaluation (default: the evaluator's store via
    ``lorasel.rank.inputs.load_inputs``); ``loss_loader(root)`` the training loss (default
    :func:`lorasel.rank.read_loss`); ``evaluate`` runs an evaluation from the TUI (default
    ``lorasel.evaluate.evaluate``) with ``eval_options`` overriding the stored settings.
    ``graphics``: auto | halfcell | sixel | tgp | none. ``poll_interval``: seconds between
    checks of the results database for changes (None: never). ``opener(uri)`` shows the report
    (default :func:`lorasel.tui.jobs.open_in_viewer`). ``print_pick``: quitting returns the pick's JSON.
    The app's ``run()`` returns the pick as ``lorasel pick --json``'s object, or None.
    Raises ResultsError for a PATH that is not a folder, ConfigError for bad options.
    """
    run = RunDir.at(path, workdir)
    if not run.root.is_dir():
        what = "does not exist" if not run.root.exists() else "is not a folder"
        raise ResultsError(f"{run.root} {what}", hint="give a run directory or a folder of checkpoints")
    if graphics not in GRAPHICS:
        raise ConfigError(f"--graphics {graphics!r} is not one of {', '.join(GRAPHICS)}", hint="use auto")
    if poll_interval is not None and not poll_interval > 0:
        raise ConfigError(f"poll interval {poll_interval!r} must be positive", hint="use e.g. 2")

    if graphics != "none":
        # textual-image asks the terminal what it can draw when imported: that has to happen
        # now, before Textual owns the terminal and would read the answers as key presses.
        import textual_image.widget  # noqa: F401

    def load_results(p: Path, w: Path | None) -> Results:
        from lorasel.rank import inputs

        return inputs.load_inputs(p, w)

    return LoraselTUI(
        run,
        path=Path(path),
        results_loader=results_loader or load_results,
        loss_loader=loss_loader or read_loss,
        evaluate=evaluate or default_evaluate,
        eval_options=eval_options or {},
        weights=weights or DEFAULT_WEIGHTS,
        n_boot=n_boot,
        graphics=graphics,
        poll_interval=poll_interval,
        opener=opener or jobs.open_in_viewer,
        print_pick=print_pick,
    )
