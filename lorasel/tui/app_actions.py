"""The TUI app's reports and evaluation: the parts of :class:`lorasel.tui.app.LoraselTUI` that
start a job in a thread worker (:mod:`lorasel.tui.jobs`) and turn its messages into notices.

Mixins of the app: they use its state (``results``, ``ranking``, ``run_dir``, ``main``...) and
Textual finds their message handlers along the app's class hierarchy.
"""

from __future__ import annotations

from functools import partial

from textual.worker import get_current_worker

from lorasel.rundir import RunDir
from lorasel.tui import jobs
from lorasel.tui import messages as msg
from lorasel.tui.evaluation import EvaluationRequest, continued_options
from lorasel.tui.text import clean


def store_stamp(run: RunDir) -> tuple:
    """What changes when the results database is written (the file, or its SQLite journal)."""
    out = []
    for path in (run.results_db, run.results_db.with_name(run.results_db.name + "-wal")):
        try:
            st = path.stat()
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


class ReportsMixin:
    """``e`` writes the HTML and CSV reports of the ranking shown; ``o`` opens the HTML one."""

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
        write = not (open_after and fresh)
        if write:
            self._exported_generation = self._ranked_generation
        work = partial(
            jobs.write_reports, self.results, self.ranking, self.run_dir, write=write,
            opener=self._opener if open_after else None, post=self.post_message,
        )  # fmt: skip
        self.run_worker(work, thread=True, exclusive=True, group="export", exit_on_error=False)

    def on_export_finished(self, message: msg.ExportFinished) -> None:
        if message.paths:
            self.notify("wrote " + " and ".join(clean(p) for p in message.paths), markup=False)
        if message.opened:
            self.notify(f"opened {clean(message.html)} in the system viewer", markup=False)
        elif message.opened is False:
            self.notify(
                f"no graphical viewer here (over SSH?): the report is at {clean(message.html)}",
                severity="warning",
                markup=False,
                timeout=10,
            )

    def on_export_failed(self, message: msg.ExportFailed) -> None:
        self._exported_generation = -1
        hint = f" ({clean(message.hint)})" if message.hint else ""
        self.notify(f"export failed: {clean(message.message)}{hint}", severity="error", markup=False)


class EvaluationMixin:
    """``v`` continues the evaluation with the stored settings (stage by stage), or stops it."""

    def _eval_request(self) -> EvaluationRequest:
        settings = self.results.settings if self.results is not None else {}
        options = continued_options(settings, self._eval_options)
        if options.get("refine"):  # refine what could be the best under the weights on screen
            options["weights"] = self.state.weights
        return EvaluationRequest(self.path, self.run_dir.workdir, options)

    def _plan_text(self) -> str:
        options = self._eval_request().options
        hidden = ("strengths", "weights")
        shown = ", ".join(f"{k} {clean(v, 40)}" for k, v in options.items() if k not in hidden) or "defaults"
        return f"evaluator settings: {shown}"

    def action_evaluate(self) -> None:
        """Start the evaluation in a worker; when one runs, stop it."""
        if self._evaluation is not None:
            self._evaluation.cancel()
            self.notify("stopping the evaluation after the current batch (finished renders are kept)")
            return
        request = self._eval_request()
        self.main.progress.start("starting the evaluation (loading models)…")

        def work() -> None:
            worker = get_current_worker()
            jobs.evaluate_in_stages(
                self._evaluate, request, evaluated=self.strengths(), loss_loader=self._load_loss,
                root=self.run_dir.root, cancelled=lambda: worker.is_cancelled, post=self.post_message,
            )  # fmt: skip

        self._evaluation = self.run_worker(
            work, thread=True, exclusive=True, group="evaluate", exit_on_error=False
        )

    def on_evaluation_progress(self, message: msg.EvaluationProgress) -> None:
        self.main.progress.advance(
            message.stage, message.stages, message.phase, message.done, message.total, message.message
        )

    def on_evaluation_warning(self, message: msg.EvaluationWarning) -> None:
        self.notify(clean(message.message), severity="warning", markup=False)

    def on_evaluation_finished(self, message: msg.EvaluationFinished) -> None:
        self._evaluation = None
        self.main.progress.stop()
        self._stamp = store_stamp(self.run_dir)
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
