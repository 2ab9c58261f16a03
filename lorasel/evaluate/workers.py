"""Render with several processes on one machine's CPU: ``evaluate(..., workers=N)``.

Small models on a CPU (the toy world) barely use a second torch thread: on 2 cores, two
one-thread processes render about 1.4× as many images a minute as one two-thread process. So
``workers=N`` starts N − 1 helper processes (spawned: a fresh interpreter, never a fork of a
threaded one). Each loads the base from its spec while the main process plans, then every
process, the main one included, takes the plan's (checkpoint, strength) runs of batches in
plan order from one shared counter, so a late starter or a slow checkpoint never leaves a
process idle, and writes its renders into the one store (SQLite WAL, as under ``accelerate
launch``). The main process relays the helpers' progress and warnings, and scores at the end.

An image depends only on its cache key, never on the process or the order it was rendered in
(one generator per image; checkpoints are restored bit-exactly), so at the same threads per
process the renders are identical for any number of workers. Several GPUs: ``accelerate
launch`` (:mod:`lorasel.evaluate.processes`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorasel.errors import EvaluationError, LoraselError
from lorasel.evaluate.candidates import CheckpointInfo
from lorasel.evaluate.plan import Batch, RenderSettings

JOIN_TIMEOUT_S = 30.0  # a helper told to stop finishes its batch and its writes within this
_RESUME_HINT = "finished renders are kept: rerun to resume (--workers 1 renders in this process only)"


@dataclass(frozen=True)
class WorkerStart:
    """What a helper needs before the plan exists: how to load the base."""

    base: str
    device: str | None
    dtype: str | None
    threads: int | None


@dataclass(frozen=True)
class WorkerPlan:
    """The plan every process shares: the runs of batches, the checkpoints, where to write."""

    settings: RenderSettings
    infos: list[CheckpointInfo]
    units: list[list[Batch]]  # runs of batches of one (checkpoint, strength), in plan order
    done: frozenset[str]
    store: Path
    labels: dict[str, str]


def units_of(batches: Sequence[Batch]) -> list[list[Batch]]:
    """Consecutive batches of the same (checkpoint, strength) as one unit of work: a process
    that takes a unit renders it without switching checkpoints."""
    units: list[list[Batch]] = []
    for batch in batches:
        if units and (units[-1][0].checkpoint, units[-1][0].strength) == (batch.checkpoint, batch.strength):
            units[-1].append(batch)
        else:
            units.append([batch])
    return units


def take_units(
    units: Sequence[Sequence[Batch]], counter, between: Callable[[], None] = lambda: None
) -> Iterator[Batch]:
    """The batches of the units this process takes from ``counter`` (shared by every process),
    calling ``between`` after each batch (the main process relays its helpers' progress there)."""
    while True:
        with counter.get_lock():
            index = counter.value
            counter.value = index + 1
        if index >= len(units):
            return
        for batch in units[index]:
            yield batch
            between()


class _Relay:
    """A helper's stand-in for the main process's progress reporter: sends what it reports."""

    def __init__(self, outbox) -> None:
        self.outbox = outbox

    def advance(self, n: int, *, checkpoint: str, strength: float) -> None:
        self.outbox.put(("advance", n, checkpoint, strength))

    def warn(self, message: str) -> None:
        self.outbox.put(("warn", message))


def _helper_main(start: WorkerStart, inbox, outbox, counter) -> None:
    """A helper process: load the base, wait for the plan, render the units it takes."""
    try:
        import torch

        from lorasel import models
        from lorasel.evaluate.render import pipeline_fingerprint
        from lorasel.evaluate.runner import _render
        from lorasel.evaluate.store import Store

        if start.threads:
            torch.set_num_threads(start.threads)
        pipeline = models.load_base(start.base, device=start.device, dtype=start.dtype)
        fingerprint = pipeline_fingerprint(pipeline)
        # One plan per pass (an evaluation, then its refinement); None: no more.
        while (plan := inbox.get()) is not None:
            if fingerprint != plan.settings.base_fingerprint:
                raise EvaluationError(
                    f"a render worker loaded a different base from {start.base!r} than the main process",
                    hint="the base changed on disk during the evaluation; rerun",
                )
            with Store.open(plan.store) as store:
                skipped = _render(pipeline, plan.settings, plan.infos, take_units(plan.units, counter),
                                  set(plan.done), store, _Relay(outbox), plan.labels)  # fmt: skip
            outbox.put(("done", sorted(skipped)))
    except KeyboardInterrupt:
        outbox.put(("error", "a render worker was interrupted", None))
    except LoraselError as exc:
        outbox.put(("error", exc.message, exc.hint))
    except BaseException as exc:  # reported, and raised, by the main process
        outbox.put(("error", f"a render worker failed: {type(exc).__name__}: {exc}", None))


class RenderWorkers:
    """The helper processes of one evaluation (see the module docstring).

    ``start`` them before planning; ``share`` the plan; render the main process's part with the
    batches of :meth:`main_batches`; :meth:`finish` waits for the helpers; :meth:`close` always.
    """

    def __init__(self, helpers: int, start: WorkerStart) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.counter = ctx.Value("q", 0)
        self.outbox = ctx.Queue()
        self._inboxes = [ctx.Queue() for _ in range(helpers)]
        self._procs = [
            ctx.Process(target=_helper_main, args=(start, inbox, self.outbox, self.counter),
                        name=f"lorasel-render-{i + 1}", daemon=True)
            for i, inbox in enumerate(self._inboxes)
        ]  # fmt: skip
        self._units: list[list[Batch]] = []
        self._shared = False
        self._finished = 0  # helpers that reported "done"
        self._warned: set[str] = set()
        self.skipped: set[str] = set()
        self.reporter: Any = None
        for proc in self._procs:
            proc.start()

    def share(self, plan: WorkerPlan, reporter) -> None:
        """Hand every helper the plan; their progress goes to ``reporter`` from now on. A second
        plan (a refinement) is shared only after :meth:`finish` of the first."""
        with self.counter.get_lock():
            self.counter.value = 0
        self._units = plan.units
        self.reporter = reporter
        self._shared = True
        self._finished = 0
        for inbox in self._inboxes:
            inbox.put(plan)

    def main_batches(self) -> Iterator[Batch]:
        """The batches the main process renders: units taken from the shared counter, with the
        helpers' progress relayed after each."""
        return take_units(self._units, self.counter, self.poll)

    def poll(self, timeout: float | None = None) -> None:
        """Relay what the helpers reported; raise a helper's error here."""
        while True:
            try:
                message = self.outbox.get(timeout=timeout) if timeout else self.outbox.get_nowait()
            except queue.Empty:
                return
            timeout = None
            self._handle(message)

    def _handle(self, message: tuple) -> None:
        kind = message[0]
        if kind == "advance":
            _, n, checkpoint, strength = message
            self.reporter.advance(n, checkpoint=checkpoint, strength=strength)
        elif kind == "warn":
            if message[1] not in self._warned:  # each process meets a misfit checkpoint itself
                self._warned.add(message[1])
                self.reporter.warn(message[1])
        elif kind == "done":
            self.skipped.update(message[1])
            self._finished += 1
        else:
            _, text, hint = message
            raise EvaluationError(text, hint=hint or _RESUME_HINT)

    def finish(self) -> set[str]:
        """Wait until every helper has rendered its last unit; the checkpoints they skipped."""
        while self._finished < len(self._procs):
            self.poll(timeout=1.0)
            if self._finished >= len(self._procs):
                break
            dead = [p for p in self._procs if not p.is_alive()]
            if len(dead) > self._finished:
                self.poll(timeout=2.0)  # what it sent just before exiting
                if self._finished < len(dead):
                    code = dead[0].exitcode
                    raise EvaluationError(
                        f"a render worker stopped unexpectedly (exit code {code})", hint=_RESUME_HINT
                    )
        return self.skipped

    def close(self) -> None:
        """Stop the helpers: no more units are taken; helpers that never got the plan are
        terminated at once, and one still busy after ``JOIN_TIMEOUT_S`` is terminated."""
        with self.counter.get_lock():
            self.counter.value = max(self.counter.value, len(self._units))
        if not self._shared:  # nothing to render, or planning failed: they have written nothing
            for proc in self._procs:
                proc.terminate()
        for inbox in self._inboxes:  # a helper done with its plan waits for the next one
            with contextlib.suppress(ValueError, OSError):
                inbox.put(None)
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        for proc in self._procs:
            while proc.is_alive() and time.monotonic() < deadline:
                self._discard_reports()  # a helper cannot exit while its reports fill the pipe
                proc.join(0.2)
            if proc.is_alive():
                proc.terminate()
                proc.join()
        self._discard_reports()
        for q in (self.outbox, *self._inboxes):
            q.close()
            q.cancel_join_thread()

    def _discard_reports(self) -> None:
        with contextlib.suppress(queue.Empty, OSError, EOFError):
            while True:
                self.outbox.get_nowait()
