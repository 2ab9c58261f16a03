"""The TUI: rank and compare the checkpoints of one run, live.

:func:`make_app` builds the app for the CLI (`lorasel tui PATH`) and for the tests alike. The
app never blocks on work: loading results, ranking, evaluating, exporting and decoding images
run in thread workers that report through :mod:`lorasel.tui.messages`; handlers here update
the widgets. What the person chose to see is one immutable :class:`ViewState`.
"""

from __future__ import annotations

import time
import warnings
import webbrowser
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import events, on, work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.containers import Container
from textual.screen import Screen
from textual.widgets import ContentSwitcher, DataTable, Static
from textual.worker import Worker, get_current_worker

from lorasel.errors import ConfigError, LoraselError, ResultsError
from lorasel.rank import DEFAULT_WEIGHTS, LossLog, LossLogWarning, Ranking, Weights, choose, rank, read_loss
from lorasel.results import BASE, Results
from lorasel.rundir import RunDir
from lorasel.tui import messages as msg
from lorasel.tui.evaluation import (
    EvaluateFn,
    EvaluationRequest,
    continued_options,
    default_evaluate,
    run_evaluation,
)
from lorasel.tui.render_cache import RenderCache
from lorasel.tui.screens.help import HelpScreen
from lorasel.tui.screens.no_results import NoResultsScreen
from lorasel.tui.screens.too_small import MIN_HEIGHT, MIN_WIDTH, TooSmallScreen
from lorasel.tui.session import SORT_KEYS, WEIGHT_STEP, CandidateKey, ViewState
from lorasel.tui.text import clean
from lorasel.tui.views import ResultsIndex
from lorasel.tui.widgets.detail_pane import DetailPane
from lorasel.tui.widgets.eval_progress import EvalProgress
from lorasel.tui.widgets.images_pane import ImagesPane
from lorasel.tui.widgets.key_bar import KeyBar
from lorasel.tui.widgets.pick_bar import PickBar
from lorasel.tui.widgets.ranking_table import RankingTable
from lorasel.tui.widgets.render_view import GRAPHICS
from lorasel.tui.widgets.weights_bar import WeightsBar

ResultsLoader = Callable[[Path, Path | None], Results]
LossLoader = Callable[[Path], LossLog | None]
#: Seconds between progress updates the evaluation worker sends to the UI.
PROGRESS_INTERVAL = 0.1
#: Terminals at least this wide show the detail pane beside the table instead of below it.
WIDE = 150


def _store_stamp(run: RunDir) -> tuple:
    """What changes when the results database is written (the file, or its SQLite journal)."""
    out = []
    for path in (run.results_db, run.results_db.with_name(run.results_db.name + "-wal")):
        try:
            st = path.stat()
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


def _fingerprint(results: Results) -> tuple:
    r = results.renders
    return (len(r), len(results.checkpoints), float(r[["fidelity", "flexibility", "preservation"]].sum().sum()),
            tuple(sorted(map(str, results.checkpoints["checkpoint"]))), repr(sorted(results.settings.items())))  # fmt: skip


def _loss_fingerprint(loss: LossLog | None) -> tuple | None:
    if loss is None:
        return None
    return (loss.source, len(loss.steps), float(loss.steps["loss"].sum()))


class LoraselTUI(App[dict | None]):
    """Rank (checkpoint, strength) pairs, adjust the weights, compare renders. See :func:`make_app`."""

    CSS_PATH = "app.tcss"
    TITLE = "lorasel"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "next_sort", "sort"),
        Binding("r", "reverse_sort", "reverse"),
        Binding("w", "next_weight", "weight"),
        Binding("plus", "weight(1)", "adjust", key_display="+/-"),
        Binding("equals_sign", "weight(1)", "adjust", show=False),
        Binding("minus", "weight(-1)", "adjust", show=False),
        Binding("0", "reset_weights", "reset"),
        Binding("f", "filter_strength", "strength"),
        Binding("l", "toggle_loss", "loss"),
        Binding("c", "compare", "compare"),
        Binding("right_square_bracket", "unit(1)", "prompt", key_display="[/]"),
        Binding("left_square_bracket", "unit(-1)", "prompt", show=False),
        Binding("i", "toggle_pane", "images"),
        Binding("z", "zoom", "zoom"),
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
        self._default_weights = weights
        self.state = ViewState(weights=weights)
        self._n_boot, self._graphics, self._poll_interval = n_boot, graphics, poll_interval
        self._opener, self._print_pick = opener, print_pick
        self.results: Results | None = None
        self.loss: LossLog | None = None
        self.index: ResultsIndex | None = None
        self.ranking: Ranking | None = None
        self._fingerprint: tuple | None = None
        self._generation = self._ranked_generation = 0
        self._exported_generation = -1
        self._stamp: tuple | None = None
        self._unit = 0
        self._pane_shows: tuple | None = None
        self._pending_images: tuple | None = None
        self._evaluation: Worker | None = None
        self._no_results: NoResultsScreen | None = None
        self._too_small: TooSmallScreen | None = None
        self.renders = RenderCache(run.state)

    # ------------------------------------------------------------------ layout

    def compose(self):
        yield Static(Text(f"lorasel  {clean(self.run_dir.root.name, 40)}", style="bold"), id="title")
        yield WeightsBar(id="weights")
        yield PickBar(id="pick")
        with Container(id="body"):
            yield RankingTable(id="table")
            with Container(id="pane"):
                yield Static(id="pane-title")
                with ContentSwitcher(initial="detail", id="switcher"):
                    yield DetailPane(id="detail")
                    yield ImagesPane(self._graphics, id="images")
        yield EvalProgress(id="progress")
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one(WeightsBar).show(self.state)
        self.query_one(RankingTable).loading = True
        self._update_pane_title()
        self._check_size()
        self._stamp = _store_stamp(self.run_dir)
        self.load()
        if self._poll_interval:
            self.set_interval(self._poll_interval, self._poll)

    def on_resize(self, event: events.Resize) -> None:
        self._check_size(event.size.width, event.size.height)

    def _check_size(self, width: int | None = None, height: int | None = None) -> None:
        if width is None or height is None:
            width, height = self.size
        self.screen.set_class(width >= WIDE, "-wide")
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

    def _poll(self) -> None:
        if self._evaluation is not None or any(w.group == "load" and w.is_running for w in self.workers):
            return
        stamp = _store_stamp(self.run_dir)
        if stamp != self._stamp:
            self._stamp = stamp
            self.load()

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def load(self) -> None:
        initial = self.results is None
        try:
            results = self._load_results(self.path, self.run_dir.workdir)
            loss, notes = self._read_loss()
        except LoraselError as exc:
            self.post_message(msg.ResultsFailed(exc.message, exc.hint, initial))
            return
        except Exception as exc:  # a store being written can fail in many ways: keep the old table
            self.post_message(msg.ResultsFailed(f"{type(exc).__name__}: {exc}", None, initial))
            return
        self.post_message(msg.ResultsLoaded(results, loss, notes))

    def _read_loss(self) -> tuple[LossLog | None, list[str]]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", LossLogWarning)
            loss = self._load_loss(self.run_dir.root)
        return loss, [str(w.message) for w in caught if issubclass(w.category, LossLogWarning)]

    def on_results_loaded(self, message: msg.ResultsLoaded) -> None:
        for note in dict.fromkeys(message.warnings):
            self.notify(clean(note), severity="warning", markup=False)
        if self._no_results is not None:
            screen, self._no_results = self._no_results, None
            screen.dismiss(False)
        fingerprint = (_fingerprint(message.results), _loss_fingerprint(message.loss))
        if fingerprint == self._fingerprint:
            return
        self.results, self.loss, self._fingerprint = message.results, message.loss, fingerprint
        self.index = ResultsIndex(message.results)
        self._unit = min(self._unit, max(0, len(self.index.units) - 1))
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
        self.query_one(RankingTable).loading = False
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
        if self.results is None:
            return []
        s = self.results.renders.loc[self.results.renders["checkpoint"] != BASE, "strength"]
        return sorted({round(float(v), 6) for v in s})

    # ------------------------------------------------------------------ ranking

    def request_ranking(self) -> None:
        if self.results is None:
            return
        self._generation += 1
        self._rank(self._generation, self.results, self.state, self.loss)

    def _ranking_for(self, results: Results, state: ViewState, loss: LossLog | None) -> Ranking:
        strengths = [state.strength] if state.strength is not None else None
        return rank(results, weights=state.weights, strengths=strengths, loss=loss, n_boot=self._n_boot)

    @work(thread=True, exclusive=True, group="rank", exit_on_error=False)
    def _rank(self, generation: int, results: Results, state: ViewState, loss: LossLog | None) -> None:
        try:
            ranking = self._ranking_for(results, state, loss)
        except LoraselError as exc:
            self.post_message(msg.RankingFailed(exc.message, exc.hint, generation))
            return
        self.post_message(msg.RankingReady(ranking, generation))

    def on_ranking_ready(self, message: msg.RankingReady) -> None:
        if message.generation != self._generation:
            return  # a newer request is on its way
        self.ranking, self._ranked_generation = message.ranking, message.generation
        table = self.query_one(RankingTable)
        if table.loading:
            table.loading = False
            table.focus()
        self.refresh_view()

    def on_ranking_failed(self, message: msg.RankingFailed) -> None:
        if message.generation == self._generation:
            self.query_one(RankingTable).loading = False
            self.notify(f"cannot rank: {clean(message.message)}", severity="error", markup=False)

    def refresh_view(self) -> None:
        """Bars and table from the current ranking and state; then the selected row's pane."""
        self.query_one(WeightsBar).show(self.state)
        if self.ranking is None:
            return
        self.query_one(PickBar).show(self.ranking, self.state.by_loss)
        self.query_one(RankingTable).show(self.ranking, self.state)
        self._update_title()
        self.refresh_selection()

    def _update_title(self) -> None:
        if self.ranking is None:
            return
        table = self.ranking.table[self.ranking.table["checkpoint"] != BASE]
        units = sum(self.ranking.units.values())
        title = Text(f"lorasel  {clean(self.run_dir.root.name, 40)}", style="bold")
        title.append(
            f"   {table['checkpoint'].nunique()} checkpoints × {table['strength'].nunique()} strengths"
            f" × {units} (prompt, seed) units",
            style="",
        )
        self.query_one("#title", Static).update(title)

    # ------------------------------------------------------------------ selection and panes

    @property
    def selected(self) -> CandidateKey | None:
        return self.query_one(RankingTable).selected

    @on(DataTable.RowHighlighted)
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.refresh_selection()

    @on(DataTable.HeaderSelected)
    def _header_selected(self, event: DataTable.HeaderSelected) -> None:
        if event.column_key.value in SORT_KEYS:
            self._set_state(self.state.sorted_by(str(event.column_key.value)), rerank=False)

    def refresh_selection(self, *, force: bool = False) -> None:
        """The lower pane for the row under the cursor (skipped when nothing it shows changed)."""
        pane = self.query_one(ContentSwitcher).current
        shown = (pane, self.selected, id(self.ranking), self.state.compare, self._unit)
        if shown == self._pane_shows and not force:
            return
        self._pane_shows = shown
        if pane == "detail":
            self.query_one(DetailPane).show(self.selected, self.ranking, self.index)
        else:
            self._show_images()

    def _slots(self) -> dict[str, CandidateKey | None]:
        base = (
            (BASE, 0.0)
            if self.results is not None and (self.results.renders["checkpoint"] == BASE).any()
            else None
        )
        return {"selected": self.selected, "compare": self.state.compare, "base": base}

    def _show_images(self) -> None:
        pane = self.query_one(ImagesPane)
        units = self.index.units if self.index is not None else []
        unit = units[self._unit] if units else None
        pane.show_unit(unit, self._unit, len(units))
        slots = self._slots()
        labels = {}
        if self.ranking is not None:
            table = self.ranking.table
            for slot, key in slots.items():
                if key is not None:
                    rows = table[table["checkpoint"] == key[0]]
                    labels[slot] = str(rows["label"].iloc[0]) if len(rows) else key[0]
        paths = {
            slot: self.index.image(key, unit) if key is not None and unit is not None and self.index else None
            for slot, key in slots.items()
        }
        token = (tuple(slots.items()), unit)
        self._pending_images = (token, slots, labels, unit)
        self._decode(token, paths)

    @work(thread=True, exclusive=True, group="images", exit_on_error=False)
    def _decode(self, token: Any, paths: dict[str, str | None]) -> None:
        images = {slot: self.renders.get(path) for slot, path in paths.items()}
        self.post_message(msg.ImagesReady(token, images))

    def on_images_ready(self, message: msg.ImagesReady) -> None:
        pending = self._pending_images
        if pending is None or pending[0] != message.key:
            return
        _, slots, labels, unit = pending
        self.query_one(ImagesPane).show(slots, labels, unit, self.index, message.images)

    def _update_pane_title(self) -> None:
        current = self.query_one(ContentSwitcher).current
        text = Text("detail" if current == "detail" else "images", style="bold")
        text.append("   i: " + ("images" if current == "detail" else "detail") + "   z: zoom", style="dim")
        self.query_one("#pane-title", Static).update(text)

    # ------------------------------------------------------------------ actions: view

    def _set_state(self, state: ViewState, *, rerank: bool) -> None:
        """Adopt ``state``; re-rank when weights or filter changed, else redraw what depends on it."""
        old, self.state = self.state, state
        self.query_one(WeightsBar).show(state)
        if rerank:
            self.request_ranking()
        elif self.ranking is not None and (old.sort, old.reverse, old.by_loss, old.compare) != (
            state.sort, state.reverse, state.by_loss, state.compare
        ):  # fmt: skip
            self.query_one(PickBar).show(self.ranking, state.by_loss)
            self.query_one(RankingTable).show(self.ranking, state)
            self.refresh_selection()

    def action_next_sort(self) -> None:
        self._set_state(self.state.next_sort(), rerank=False)

    def action_reverse_sort(self) -> None:
        self._set_state(
            self.state.sorted_by(self.state.sort) if not self.state.by_loss else self.state, rerank=False
        )

    def action_next_weight(self) -> None:
        self._set_state(self.state.next_weight(), rerank=False)

    def action_weight(self, direction: int) -> None:
        try:
            state = self.state.adjust_weight(direction * WEIGHT_STEP)
        except ConfigError as exc:
            self.notify(f"{exc.message} ({exc.hint})", severity="warning", markup=False)
            return
        if state != self.state:
            self._set_state(state, rerank=True)

    def action_reset_weights(self) -> None:
        if self.state.weights != self._default_weights:
            self._set_state(self.state.reset_weights(self._default_weights), rerank=True)

    def action_filter_strength(self) -> None:
        if self.results is not None:
            self._set_state(self.state.cycle_strength(self.strengths()), rerank=True)

    def action_toggle_loss(self) -> None:
        if self.ranking is not None and self.ranking.lowest_loss is None and not self.state.by_loss:
            self.notify(
                "no training loss log found (logs/loss.csv or TensorBoard events)", severity="warning"
            )
            return
        self._set_state(replace(self.state, by_loss=not self.state.by_loss), rerank=False)

    def action_compare(self) -> None:
        self._set_state(self.state.toggle_compare(self.selected), rerank=False)

    def action_unit(self, step: int) -> None:
        if self.index is None or not self.index.units:
            return
        self._unit = (self._unit + step) % len(self.index.units)
        if self.query_one(ContentSwitcher).current != "images":
            self.query_one(ContentSwitcher).current = "images"
            self._update_pane_title()
        self.refresh_selection()

    def action_toggle_pane(self) -> None:
        switcher = self.query_one(ContentSwitcher)
        switcher.current = "images" if switcher.current == "detail" else "detail"
        self._update_pane_title()
        self.refresh_selection()

    def action_zoom(self) -> None:
        self.screen.toggle_class("-zoom")

    def action_help(self) -> None:
        keys = [(b.key_display or self.get_key_display(b), b.action) for b in self._help_bindings()]
        self._push(HelpScreen(keys))

    def _help_bindings(self) -> list[Binding]:
        seen, out = set(), []
        for binding in self.BINDINGS:
            if isinstance(binding, Binding) and binding.show and binding.action not in seen:
                seen.add(binding.action)
                out.append(binding)
        return out

    # ------------------------------------------------------------------ actions: output

    def pick_json(self) -> dict | None:
        """``lorasel pick --json`` for the current weights and strength filter (None before
        any results): the ranking shown, or a fresh one if a re-rank is still on its way."""
        if self.results is None:
            return None
        ranking = self.ranking
        if ranking is None or self._ranked_generation != self._generation:
            ranking = self._ranking_for(self.results, self.state, self.loss)
        return choose(ranking).to_json()

    def action_print_pick(self) -> None:
        if self.results is None:
            self.notify("nothing to pick yet: no evaluation results", severity="warning")
            return
        self.exit(self.pick_json())

    async def action_quit(self) -> None:
        self._stop_evaluation()
        self.exit(self.pick_json() if self._print_pick else None)

    def action_export(self) -> None:
        self._export(open_after=False)

    def action_open_report(self) -> None:
        self._export(open_after=True)

    def _export(self, *, open_after: bool) -> None:
        if self.ranking is None or self.results is None:
            self.notify("nothing to export yet: no ranking", severity="warning")
            return
        fresh = (
            self._exported_generation == self._ranked_generation
            and (self.run_dir.report / "report.html").is_file()
        )
        self._write_reports(self.results, self.ranking, self._ranked_generation, write=not (open_after and fresh),
                            open_after=open_after)  # fmt: skip

    @work(thread=True, exclusive=True, group="export", exit_on_error=False)
    def _write_reports(
        self, results: Results, ranking: Ranking, generation: int, *, write: bool, open_after: bool
    ):
        from lorasel.report import write_csv, write_html

        report = self.run_dir.report
        csv_path, html_path = report / "scores.csv", report / "report.html"
        try:
            if write:
                write_csv(ranking, csv_path)
                write_html(results, ranking, html_path, self.run_dir.state, title=self.run_dir.root.name)
                self._exported_generation = generation
        except LoraselError as exc:
            self.post_message(msg.ExportFailed(exc.message, exc.hint))
            return
        except OSError as exc:
            self.post_message(
                msg.ExportFailed(f"cannot write {report}: {exc}", "check the folder's permissions")
            )
            return
        opened = None
        if open_after:
            try:
                opened = bool(self._opener(html_path.as_uri()))
            except Exception:  # a viewer that fails to start is not the TUI's failure
                opened = False
        self.post_message(
            msg.ExportFinished(
                [csv_path, html_path] if write else [], html_path if opened is not None else None
            )
        )

    def on_export_finished(self, message: msg.ExportFinished) -> None:
        if message.paths:
            self.notify("wrote " + " and ".join(clean(p) for p in message.paths), markup=False)
        if message.open_path is not None:
            self.notify(f"opened {clean(message.open_path)} in the system viewer", markup=False)

    def on_export_failed(self, message: msg.ExportFailed) -> None:
        hint = f" ({clean(message.hint)})" if message.hint else ""
        self.notify(f"export failed: {clean(message.message)}{hint}", severity="error", markup=False)

    # ------------------------------------------------------------------ evaluation

    def _eval_request(self) -> EvaluationRequest:
        settings = self.results.settings if self.results is not None else {}
        options = continued_options(settings, self._eval_options)
        return EvaluationRequest(self.path, self.run_dir.workdir, options)

    def _plan_text(self) -> str:
        options = self._eval_request().options
        shown = ", ".join(f"{k} {clean(v, 40)}" for k, v in options.items() if k != "strengths") or "defaults"
        return f"evaluator settings: {shown}"

    def action_evaluate(self) -> None:
        if self._evaluation is not None:
            self._stop_evaluation()
            self.notify("stopping the evaluation after the current batch (finished renders are kept)")
            return
        request = self._eval_request()
        self.query_one(EvalProgress).start("starting the evaluation (loading models)…")
        self._evaluation = self._run_evaluation(request, self.strengths())

    def _stop_evaluation(self) -> None:
        if self._evaluation is not None:
            self._evaluation.cancel()

    @work(thread=True, exclusive=True, group="evaluate", exit_on_error=False)
    def _run_evaluation(self, request: EvaluationRequest, evaluated: list[float]) -> None:
        worker = get_current_worker()

        last = {"at": 0.0, "phase": None}

        def on_progress(stage: int, stages: int, event: Any) -> None:
            phase = str(getattr(event, "phase", ""))
            text = str(getattr(event, "message", "") or "")
            if phase == "warning":
                self.post_message(msg.EvaluationWarning(text))
                return
            done, total = int(getattr(event, "done", 0) or 0), int(getattr(event, "total", 0) or 0)
            now = time.monotonic()
            if (phase, stage) == last["phase"] and now - last["at"] < PROGRESS_INTERVAL and done < total:
                return  # at most ~10 updates a second reach the UI; the last of a phase always does
            last.update(at=now, phase=(phase, stage))
            self.post_message(msg.EvaluationProgress(stage, stages, phase, done, total, text))

        def on_results(results: Results, stage: int, stages: int) -> None:
            loss, notes = self._read_loss()
            self.post_message(msg.ResultsLoaded(results, loss, notes, source="evaluation"))

        try:
            done = run_evaluation(
                self._evaluate, request, evaluated=evaluated, on_progress=on_progress,
                on_results=on_results, should_stop=lambda: worker.is_cancelled,
            )  # fmt: skip
        except LoraselError as exc:
            self.post_message(
                msg.EvaluationFinished(stopped=worker.is_cancelled, error=(exc.message, exc.hint))
            )
            return
        except Exception as exc:  # keep the TUI (and the results so far) alive; say what happened
            self.post_message(msg.EvaluationFinished(error=(f"{type(exc).__name__}: {exc}", None)))
            return
        self.post_message(msg.EvaluationFinished(stopped=not done))

    def on_evaluation_progress(self, message: msg.EvaluationProgress) -> None:
        self.query_one(EvalProgress).advance(
            message.stage, message.stages, message.phase, message.done, message.total, message.message
        )

    def on_evaluation_warning(self, message: msg.EvaluationWarning) -> None:
        self.notify(clean(message.message), severity="warning", markup=False)

    def on_evaluation_finished(self, message: msg.EvaluationFinished) -> None:
        self._evaluation = None
        self.query_one(EvalProgress).stop()
        self._stamp = _store_stamp(self.run_dir)
        if message.error is not None:
            text, hint = message.error
            extra = f" (hint: {clean(hint)})" if hint else ""
            self.notify(
                f"evaluation failed: {clean(text)}{extra}", severity="error", markup=False, timeout=10
            )
        elif message.stopped:
            self.notify("evaluation stopped; press v to continue it")
        else:
            self.notify("evaluation finished")


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
    (default :func:`webbrowser.open`). ``print_pick``: quitting returns the pick's JSON.
    The app's ``run()`` returns the pick as ``lorasel pick --json``'s object, or None.
    """
    run = RunDir.at(path, workdir)
    if not run.root.is_dir():
        what = "does not exist" if not run.root.exists() else "is not a folder"
        raise ResultsError(f"{run.root} {what}", hint="give a run directory or a folder of checkpoints")
    if graphics not in GRAPHICS:
        raise ConfigError(f"--graphics {graphics!r} is not one of {', '.join(GRAPHICS)}", hint="use auto")
    if poll_interval is not None and not poll_interval > 0:
        raise ConfigError(f"poll interval {poll_interval!r} must be positive", hint="use e.g. 2")

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
        opener=opener or webbrowser.open,
        print_pick=print_pick,
    )
