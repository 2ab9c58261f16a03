"""``evaluate``: plan, render what is missing, score, and store the results.

One call does the whole job and can be repeated at will: renders, embeddings and checkpoint
hashes are cached in the state folder, so a rerun renders nothing already done, an interrupted
run resumes, and a checkpoint that appears later is evaluated alone.

Under ``accelerate launch`` every process renders its contiguous share of the missing batches
into the same store; the main process then scores and writes the results. The planning is
:mod:`lorasel.evaluate.job`'s; ``refine`` adds rounds of more seeds for the likely best.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import torch

from lorasel.errors import CheckpointError, EvaluationError
from lorasel.evaluate.candidates import CheckpointInfo
from lorasel.evaluate.concept import base_of_run
from lorasel.evaluate.job import Job, default_scorer, is_toy, prepare
from lorasel.evaluate.options import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_SEEDS,
    DEFAULT_STRENGTHS,
    EvalOptions,
)
from lorasel.evaluate.plan import Batch, Candidate, RenderSettings, plan_of_pairs, shard
from lorasel.evaluate.processes import Processes, current_processes
from lorasel.evaluate.progress import ProgressCallback, ProgressEvent, RenderProgress
from lorasel.evaluate.record import changed_render_settings, settings_record
from lorasel.evaluate.render import Renderer
from lorasel.evaluate.scoring import score_plan
from lorasel.evaluate.store import Store
from lorasel.evaluate.workers import RenderWorkers, WorkerPlan, WorkerStart, units_of
from lorasel.evaluate.writer import BatchWriter
from lorasel.rank.weights import Weights
from lorasel.results import Results
from lorasel.rundir import RunDir
from lorasel.text import counted


def evaluate(
    path: str | os.PathLike,
    *,
    base: str | Any | None = None,
    prompts: str | os.PathLike | None = None,
    strengths: Sequence[float] = DEFAULT_STRENGTHS,
    seeds: int = DEFAULT_SEEDS,
    steps: int | None = None,
    guidance: float | None = None,
    size: tuple[int, int] | None = None,
    scorer: str | Any | None = None,
    reference: str | os.PathLike | None = None,
    trigger: str | None = None,
    class_word: str | None = None,
    workdir: str | os.PathLike | None = None,
    progress: ProgressCallback | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | None = None,
    dtype: str | None = None,
    threads: int | None = None,
    workers: int = 1,
    refine: int = 0,
    weights: Weights | None = None,
    clip_skip: int | None = None,
    prediction: str | None = None,
    cfg_rescale: float = 0.0,
) -> Results:
    """Evaluate every checkpoint under ``path`` at every strength; return the results.

    ``base`` and ``scorer`` are specs for ``lorasel.models.load_base`` / ``load_scorer``, or
    already-loaded objects (a diffusers pipeline, a ``Scorer``) to reuse; ``base`` defaults to the
    run's (``run.toml`` ``[model] base``), else ``toy``; ``scorer`` to ``toy`` for the toy base,
    else ``ViT-L-14:datacomp_xl_s13b_b90k`` (:func:`lorasel.evaluate.job.default_scorer`).
    ``prompts`` is a shipped prompt set's name or a TOML file (default: ``toy`` for the toy base,
    else ``object``). ``steps``,
    ``guidance`` and ``size`` default to the base model's own. ``threads``: torch CPU threads
    while rendering on CPU (default 1 for the toy world, whose small ops are fastest on one
    thread; otherwise torch's own); restored afterwards. ``workers``: processes rendering on
    this machine's CPU, each with ``threads`` threads (:mod:`lorasel.evaluate.workers`); more
    than 1 needs ``base`` as a spec the helper processes can load. ``refine``: after the
    evaluation, render this many more seeds per prompt for the candidates that could be the best
    (the 95% confidence set of ``lorasel rank``) and the base model; the ranking compares them on
    all their seeds and the rest on theirs (:func:`lorasel.rank.bootstrap.paired_means`), in
    rounds until the set holds no candidate without them. ``weights``: the composite whose set
    that is (default: ``lorasel.rank.DEFAULT_WEIGHTS``; pass the ones you will rank with).
    ``clip_skip``: the CLIP layer counted from the end that conditions an SD 1.x/2.x UNet (A1111's
    and kohya's numbering: 1 the last, 2 the one before); default: what the checkpoints were
    trained with (kohya's ``ss_clip_skip``), else 1. ``prediction``: what the UNet predicts,
    ``epsilon``, ``v`` or ``v-ztsnr`` (v on a zero-terminal-SNR schedule); default: the base's,
    unless the checkpoints say they were trained for v (:func:`lorasel.evaluate.job.resolve_prediction`).
    ``cfg_rescale``: φ of guidance rescaling (diffusers' ``guidance_rescale``), 0 off.
    """
    options = EvalOptions(
        strengths=tuple(strengths),
        seeds=seeds,
        steps=steps,
        guidance=guidance,
        size=size,
        batch_size=batch_size,
        threads=threads,
        workers=workers,
        refine=refine,
        weights=weights,
        clip_skip=clip_skip,
        prediction=prediction,
        cfg_rescale=cfg_rescale,
    )
    run = RunDir.at(path, workdir)
    if not run.root.is_dir():
        raise EvaluationError(
            f"{run.root} is not a folder", hint="pass a run directory or a folder of checkpoints"
        )
    toy_by_default = base is None and base_of_run(run) is None
    if base is None:
        base = base_of_run(run) or "toy"
    if scorer is None:
        scorer = default_scorer(base)
    _check_workers(options.workers, base, device)
    cpu_threads = _cpu_threads(options.threads, base, device, options.workers)
    before = torch.get_num_threads()
    if cpu_threads:
        torch.set_num_threads(cpu_threads)
    try:
        return _evaluate(run, options, base=base, prompts=prompts, scorer=scorer, reference=reference,
                         trigger=trigger, class_word=class_word, progress=progress, device=device, dtype=dtype,
                         threads=cpu_threads, toy_by_default=toy_by_default)  # fmt: skip
    finally:
        torch.set_num_threads(before)


def _cpu_threads(threads: int | None, base: object, device, workers: int = 1) -> int | None:
    """Torch threads per rendering process on CPU: ``threads``, else 1 for the toy world, else
    the cores shared out among the ``workers`` processes (torch's own default when there is
    one; several processes each taking every core would slow all of them many times over)."""
    from lorasel.models.devices import default_device

    if default_device(device).type != "cpu":
        return None
    if threads is not None:
        return threads
    if is_toy(base):
        return 1
    return max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None


def _check_workers(workers: int, base: object, device) -> None:
    """``workers`` > 1 renders with helper processes on this machine's CPU: they load the base
    from its spec, so they need one, and several GPUs go through ``accelerate launch``."""
    if workers == 1:
        return
    from lorasel.models.devices import default_device

    if default_device(device).type != "cpu":
        raise EvaluationError(
            f"--workers {workers} renders with several processes on the CPU, not on {default_device(device)}",
            hint="on GPUs run one process per GPU: accelerate launch --num_processes N -m lorasel eval ...",
        )
    if not isinstance(base, str):
        raise EvaluationError(
            f"workers={workers} needs the base as a spec its helper processes can load, not a loaded pipeline",
            hint="pass base='toy', a folder or a file, or workers=1",
        )
    if current_processes().count > 1:
        raise EvaluationError(
            f"--workers {workers} cannot be combined with accelerate launch",
            hint="use one of them: --workers on a CPU, accelerate launch on GPUs",
        )


def _evaluate(run: RunDir, options: EvalOptions, *, base, prompts, scorer, reference, trigger, class_word,
              progress, device, dtype, threads, toy_by_default=False) -> Results:  # fmt: skip
    helpers = None
    if options.workers > 1:  # they load the base while this process plans
        helpers = RenderWorkers(options.workers - 1, WorkerStart(base, device, dtype, threads))
    try:
        return _evaluate_with(run, options, helpers, base=base, prompts=prompts, scorer=scorer,
                              reference=reference, trigger=trigger, class_word=class_word, progress=progress,
                              device=device, dtype=dtype, toy_by_default=toy_by_default)  # fmt: skip
    finally:
        if helpers is not None:
            helpers.close()


def _evaluate_with(run: RunDir, options: EvalOptions, helpers: RenderWorkers | None, *, base, prompts, scorer,
                   reference, trigger, class_word, progress, device, dtype, toy_by_default=False) -> Results:  # fmt: skip
    procs = current_processes()
    reporter = RenderProgress(progress, total=0, cached=0)
    with _NewStateFolder(run.results_db, procs.is_main) as new_state, Store.open(run.results_db) as store:
        job = procs.step(
            lambda: prepare(
                run, store, procs, reporter, options, base=base, prompts=prompts, scorer=scorer,
                reference=reference, trigger=trigger, class_word=class_word, device=device, dtype=dtype,
                toy_by_default=toy_by_default,
            )
        )  # fmt: skip
        new_state.keep()
        job = replace(job, pending=_pending(job.plan, job.done))
        if procs.is_main and job.pending:
            record = settings_record(job.settings, job.options, job.prompt_spec, job.trigger, job.class_word)
            if note := changed_render_settings(store.last_settings(), record):
                reporter.warn(note)
        results = _run(job, run, store, procs, reporter, helpers)
        if options.refine:
            first, refined = job.plan, set()
            while (more := procs.step(partial(_refined, job, first, refined, store))) is not None:
                job = more
                results = _run(job, run, store, procs, reporter, helpers)
        return results


class _NewStateFolder:
    """The state folder this evaluation made, removed again if the evaluation fails before its
    plan stands (no checkpoint, a bad prompt set, a base that does not load): a mistyped command
    leaves no ``lorasel/`` folder holding an empty database in a folder of checkpoints. Once
    :meth:`keep` is called, or for a folder that was there before, nothing is removed."""

    def __init__(self, db_path: Path, enabled: bool) -> None:
        self.db_path = db_path
        # The folders Store.open will make: the state folder and its missing parents (--workdir).
        self.made = (
            [f for f in (db_path.parent, *db_path.parent.parents) if not f.exists()] if enabled else []
        )

    def keep(self) -> None:
        self.made = []

    def __enter__(self) -> _NewStateFolder:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None or not self.made:
            return
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(OSError):  # never made (the state folder could not be)
                os.unlink(f"{self.db_path}{suffix}")
        for folder in self.made:  # innermost first
            try:
                folder.rmdir()
            except OSError:  # not empty: something else wrote there meanwhile
                return


def _run(job: Job, run: RunDir, store: Store, procs: Processes, reporter: RenderProgress,
         helpers: RenderWorkers | None) -> Results:  # fmt: skip
    """Render the job's pending batches (shared among the processes) and score its plan."""
    # Every process has planned from the same store before anyone writes to it.
    mine = shard(job.pending, procs.index, procs.count)
    if procs.count > 1:
        mine_keys = {k for batch in mine for k in batch.keys}
        reporter.total, reporter.cached = len(mine_keys), len(mine_keys & job.done)
    else:
        reporter.total, reporter.cached = len(job.all_keys), len(job.done)
    reporter.done = reporter.cached
    reporter.emit(ProgressEvent("start", reporter.done, reporter.total, reporter.cached, message=job.summary))
    labels = {info.checkpoint: info.label for info in job.infos}
    batches: Iterable[Batch] = mine
    if helpers is not None and mine:
        plan = WorkerPlan(
            job.settings, job.infos, units_of(mine), frozenset(job.done), run.results_db, labels
        )
        helpers.share(plan, reporter)
        batches = helpers.main_batches()
    skipped = procs.step(
        lambda: _render(job.pipeline, job.settings, job.infos, batches, job.done, store, reporter, labels)
    )
    if helpers is not None and mine:
        skipped |= helpers.finish()
    results = procs.step(lambda: _finish(job, store, skipped, reporter) if procs.is_main else None)
    reporter.emit(ProgressEvent("done", reporter.done, reporter.total, reporter.cached))
    return results if procs.is_main else store.load_results()


def _refined(job: Job, first: list[Batch], refined: set[tuple[str, float]], store: Store) -> Job | None:
    """The next round of ``--refine``: the candidates that could be the best, on more seeds.

    Every process ranks the stored results (the same input everywhere, so the same set), with
    the evaluation's weights (the default ones unless given), and takes the candidates in the 95%
    confidence set for the best that are not in ``refined`` yet (which it extends); None when
    there are none. The job renders the
    base model and every refined candidate on seeds ``seeds .. seeds + refine - 1`` (the renders
    an evaluation with ``--seeds seeds + refine`` would make for them, under the same cache keys)
    besides ``first``, the evaluation's plan. Rounds repeat until the set, ranked with the
    refined seeds, holds no candidate without them: the refinement ends with every candidate
    that could be the best compared on the same seeds."""
    from lorasel.rank import choose, rank

    ranking = rank(store.load_results(), weights=job.options.weights)
    pick = choose(ranking)  # what `lorasel pick` reports: the best, and those tied with it
    new = {(c.checkpoint, c.strength) for c in (pick.best, *pick.tied_with)} - refined
    if not new:
        return None
    again = bool(refined)
    refined |= new
    order = {info.checkpoint: i for i, info in enumerate(job.infos)}
    hashes = {info.checkpoint: info.hash for info in job.infos}
    pairs = [(Candidate(c, hashes[c]), s) for c, s in sorted(refined, key=lambda p: (order[p[0]], p[1]))]
    seeds = range(job.options.seeds, job.options.seeds + job.options.refine)
    extra = plan_of_pairs(pairs, job.prompts, seeds, job.options.batch_size, job.settings.key())
    all_keys = list(dict.fromkeys(k for batch in extra for k in batch.keys))
    done = store.done(all_keys)
    n = int(ranking.table["rank"].notna().sum())
    more = f"{counted(job.options.refine, 'more seed', 'more seeds')} per prompt"
    if again:
        summary = f"refining {len(new)} more of {n} candidates (in the 95% set for the best after refining) with {more}"
    else:
        summary = f"refining {len(new)} of {n} candidates (the 95% set for the best) with {more}"
    return replace(job, plan=first + extra, all_keys=all_keys, done=done, pending=_pending(extra, done),
                   summary=summary)  # fmt: skip


def _finish(job: Job, store: Store, skipped: set[str], reporter: RenderProgress) -> Results:
    """Score, compute the metrics and store the results (main process)."""
    record = settings_record(job.settings, job.options, job.prompt_spec, job.trigger, job.class_word)
    # Specs that evaluate() takes again (the TUI continues an evaluation with them).
    record.update(scorer=job.scorer_spec, scorer_name=job.scorer.name, references=str(job.reference_dir))
    results = score_plan(
        job.plan, job.infos, skipped, store, job.scorer, job.reference_vectors, reporter, settings=record
    )
    store.save_results(results)
    return results


def load_results(path: str | os.PathLike, workdir: str | os.PathLike | None = None) -> Results:
    """The results of the last complete ``evaluate`` of ``path`` (``ResultsError`` if none)."""
    run = RunDir.at(path, workdir)
    with Store.open(run.results_db, create=False) as store:
        return relocated(store.load_results(), run.root)


def relocated(results: Results, root: Path) -> Results:
    """``results`` with each checkpoint's path where the file is now: under ``root``, the folder
    evaluated, by its id (the path relative to that folder). The stored path is where it was when
    evaluated; a run copied from the training machine, or moved, would otherwise send `lorasel pick`
    (and the report, which reads the file's bundled embeddings) to the old place."""
    checkpoints = results.checkpoints
    inside = [
        not (PurePosixPath(c).is_absolute() or PureWindowsPath(c).drive) for c in checkpoints["checkpoint"]
    ]
    if not any(inside):
        return results
    checkpoints = checkpoints.copy()
    checkpoints.loc[inside, "path"] = [str(root.joinpath(c)) for c in checkpoints.loc[inside, "checkpoint"]]
    return replace(results, checkpoints=checkpoints)


def _pending(plan: Sequence[Batch], done: set[str]) -> list[Batch]:
    """Batches with at least one render missing, each distinct batch once."""
    seen: set[tuple[str, ...]] = set()
    pending = []
    for batch in plan:
        keys = batch.keys
        if keys in seen or all(k in done for k in keys):
            continue
        seen.add(keys)
        pending.append(batch)
    return pending


def _render(
    pipeline,
    settings: RenderSettings,
    infos: Sequence[CheckpointInfo],
    batches: Iterable[Batch],
    done: set[str],
    store: Store,
    reporter: RenderProgress,
    labels: dict[str, str],
) -> set[str]:
    """Render ``batches``; a background writer records each finished batch while the next
    renders. Returns the checkpoints skipped because they do not fit the base."""
    renderer = Renderer(pipeline, settings, infos)
    writer = BatchWriter(store, settings, labels, done)
    skipped: set[str] = set()

    def report(finished) -> None:
        for batch, n in finished:
            reporter.advance(n, checkpoint=batch.checkpoint, strength=batch.strength)

    try:
        for batch in batches:
            if batch.checkpoint in skipped:
                continue
            try:
                images = renderer.render(batch)
            except CheckpointError as exc:
                skipped.add(batch.checkpoint)
                reporter.warn(f"skipping {labels.get(batch.checkpoint, batch.checkpoint)}: {exc.message}")
                continue
            writer.submit(batch, images)
            report(writer.finished(wait=True))
        report(writer.drain())
    finally:
        writer.close()
        renderer.close()
    return skipped
