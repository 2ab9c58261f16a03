"""Evaluate a run's checkpoints while its trainer is still writing them.

:func:`follow` is the loop (``lorasel eval --follow`` runs it in the foreground); a
:class:`Follower` runs it in a process of its own beside the training (``lorasel demo``).

A trainer saves a checkpoint every epoch, and each one can be rendered while the next epoch
trains. A follower is one spawned process (a fresh interpreter, never a fork) that loads the
base and the scorer once and, whenever the run's checkpoint folder changes, runs
:func:`~lorasel.evaluate.evaluate` on the run with them. Renders, embeddings and hashes land in
the run's cache, so the evaluation after training renders and embeds only what the follower did
not reach; its images are the same (an image depends only on its cache key). :meth:`stop` ends
it at its next batch.

The follower is a head start, not the evaluation of record: if it fails, the evaluation after
training meets the same problem and reports it, so :meth:`stop` returns the follower's error
as a line to show, and raises nothing.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

JOIN_TIMEOUT_S = 30.0  # a follower told to stop finishes its batch and its writes within this
POLL_S = 0.5


@dataclass(frozen=True)
class FollowSettings:
    """What the follower evaluates: ``evaluate``'s keyword arguments, with the base and the
    scorer as specs it loads itself."""

    path: str
    base: str = "toy"
    scorer: str | None = None  # the base's default (:func:`lorasel.evaluate.job.default_scorer`)
    threads: int = 1
    evaluate_kwargs: dict[str, Any] = field(default_factory=dict)


class _Stopped(Exception):
    """Raised from the progress callback: ends the current evaluation at its next batch."""


def checkpoint_files(path: str | Path) -> tuple:
    """Name, size and modification time of every file ``evaluate(path)`` could take for a
    checkpoint (no file is opened): it changes while a trainer writes one."""
    from lorasel.checkpoints.discover import candidate_files
    from lorasel.rundir import RunDir

    folder = RunDir.at(path).checkpoints
    files = []
    with contextlib.suppress(OSError):  # the folder is not there yet
        for file in candidate_files(folder):
            with contextlib.suppress(OSError):  # replaced or removed since
                stat = file.stat()
                files.append((str(file), stat.st_size, stat.st_mtime_ns))
    return tuple(files)


def has_checkpoints(path: str | Path) -> bool:
    """Whether ``evaluate(path)`` finds a LoRA checkpoint (a trainer's state file is none)."""
    from lorasel.checkpoints import discover
    from lorasel.errors import LoraselError
    from lorasel.rundir import RunDir

    try:
        return bool(discover(RunDir.at(path).checkpoints))
    except (LoraselError, OSError):
        return False


def follow(path: str | Path, stop, *, base, scorer, threads: int | None = None, poll_s: float = POLL_S,
           idle_s: float | None = None, on_results=None, progress=None, **evaluate_kwargs) -> None:  # fmt: skip
    """Evaluate ``path`` each time its checkpoints change, until ``stop`` (a threading or
    multiprocessing ``Event``) is set, or for ``idle_s`` seconds nothing has changed; an
    evaluation under way ends at its next batch. A change is acted on once the files have stayed
    the same for one poll (a trainer that writes in place has finished its file), and only then
    are headers read. ``base`` and ``scorer``: specs, or models the caller loaded once.
    ``on_results(results)`` after each evaluation; ``progress`` gets its events."""
    from lorasel.evaluate.runner import evaluate

    def halt(event) -> None:
        if stop.is_set():
            raise _Stopped
        if progress is not None:
            progress(event)

    previous: tuple | None = None  # the files at the last poll
    handled: tuple = ()  # the files last evaluated (or found to hold no checkpoint)
    changed = time.monotonic()
    while not stop.is_set():
        files = checkpoint_files(path)
        settled, previous = files == previous, files
        if not settled:  # a file is being written: not idle
            changed = time.monotonic()
        if settled and files != handled:
            handled = files
            if has_checkpoints(path):
                try:
                    results = evaluate(path, base=base, scorer=scorer, threads=threads, progress=halt,
                                       **evaluate_kwargs)  # fmt: skip
                except _Stopped:
                    return
                changed = time.monotonic()
                if on_results is not None:
                    on_results(results)
                continue
        if idle_s is not None and time.monotonic() - changed >= idle_s:
            return
        stop.wait(poll_s)


def _follow_main(settings: FollowSettings, stop, ready, outbox) -> None:
    """The follower process: load the models once, then :func:`follow`."""
    try:
        import torch

        from lorasel import models
        from lorasel.evaluate.job import default_scorer

        torch.set_num_threads(settings.threads)
        pipeline = models.load_base(settings.base, device="cpu")
        scorer = models.load_scorer(settings.scorer or default_scorer(settings.base), device="cpu")
        ready.set()  # from now on stop() waits for this process instead of terminating it
        follow(settings.path, stop, base=pipeline, scorer=scorer, threads=settings.threads,
               **settings.evaluate_kwargs)  # fmt: skip
        outbox.put(None)
    except KeyboardInterrupt:
        outbox.put(None)
    except BaseException as exc:  # reported by stop(); the evaluation after training meets it too
        from lorasel.errors import LoraselError

        line = exc.one_line() if isinstance(exc, LoraselError) else f"{type(exc).__name__}: {exc}"
        outbox.put(line)


class Follower:
    """One process evaluating ``settings.path`` as checkpoints appear (module docstring).

    Use as a context manager, or call :meth:`stop` (always: it also cleans up)::

        with Follower(FollowSettings(run_dir, evaluate_kwargs={"strengths": (0.5, 1.0)})) as f:
            train(...)
        problem = f.problem  # None, or the line the follower stopped on
    """

    def __init__(self, settings: FollowSettings) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._stop = ctx.Event()
        self._ready = ctx.Event()
        self._outbox = ctx.Queue()
        self._proc = ctx.Process(
            target=_follow_main,
            args=(settings, self._stop, self._ready, self._outbox),
            name="lorasel-follow",
            daemon=True,
        )
        self._proc.start()
        self.problem: str | None = None
        self._stopped = False

    def stop(self, timeout: float = JOIN_TIMEOUT_S) -> str | None:
        """Stop at the follower's next batch and wait for it (terminated after ``timeout``);
        the line it failed on, or None."""
        if self._stopped:
            return self.problem
        self._stopped = True
        self._stop.set()
        if not self._ready.is_set():  # still loading the models: it has written nothing
            self._proc.terminate()
        deadline = time.monotonic() + timeout
        message: Any = None
        got = False
        while not got and time.monotonic() < deadline:
            try:
                message = self._outbox.get(timeout=0.2)
                got = True
            except queue.Empty:
                if not self._proc.is_alive():
                    break
        self._proc.join(max(0.0, deadline - time.monotonic()))
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join()
            message = message or f"the follower did not stop within {timeout:.0f} s"
        elif not got and self._proc.exitcode and self._ready.is_set():
            message = f"the follower stopped unexpectedly (exit code {self._proc.exitcode})"
        self._outbox.close()
        self._outbox.cancel_join_thread()
        self.problem = message
        return message

    @property
    def ready(self) -> bool:
        """The models are loaded: the follower evaluates from now on."""
        return self._ready.is_set()

    @property
    def alive(self) -> bool:
        return self._proc.is_alive()

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def follow_threads(threads: int) -> tuple[int, bool]:
    """Split ``threads`` CPU threads between training and a follower: (training threads,
    whether to follow). One thread cannot do both at once; more leave one to the follower."""
    if threads < 2:
        return threads, False
    return threads - 1, True
