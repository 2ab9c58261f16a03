"""`lorasel eval PATH`: render and score every checkpoint at every strength (cached, resumable)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from lorasel.cli.app import app
from lorasel.cli.tables import print_table
from lorasel.text import counted

METRIC_FORMAT = "{:.3f}"
EVAL_OPTION_FIELDS = (
    "strengths", "seeds", "steps", "guidance", "size", "batch_size", "threads", "workers", "refine", "weights",
    "clip_skip", "prediction", "cfg_rescale",
)  # fmt: skip


@app.command("eval")
def eval_command(
    path: Annotated[Path, typer.Argument(help="A lorasel run directory or any folder of LoRA checkpoints.")],
    base: Annotated[
        str | None,
        typer.Option(
            help="Base model: toy, a diffusers folder, a hub id or a .safetensors file. "
            "[default: the run's (run.toml), else toy]"
        ),
    ] = None,
    prompts: Annotated[
        str | None,
        typer.Option(
            help="Prompt set: toy, character, object, style, a .toml file, or kohya sample prompts (.txt, .toml, .json). [default: toy for the toy base, else object]"
        ),
    ] = None,
    strengths: Annotated[
        str, typer.Option(help="Comma-separated LoRA strengths in (0, 2].")
    ] = "0.5,0.75,1.0",
    seeds: Annotated[int, typer.Option(help="Seeds per prompt.")] = 4,
    refine: Annotated[
        int,
        typer.Option(
            help="Then render this many more seeds per prompt for the candidates that could be the best "
            "(the 95% set of `lorasel rank`) only: close to the pick of --seeds SEEDS+REFINE at a "
            "fraction of its renders. 0: off."
        ),
    ] = 0,
    weights: Annotated[
        str | None,
        typer.Option(
            help="With --refine: the composite weights whose 95% set it refines, as `lorasel rank --weights` "
            "takes them (e.g. flexibility=1). [default: the default weights]"
        ),
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Sampling steps. [default: the base model's]")] = None,
    guidance: Annotated[
        float | None, typer.Option(help="Classifier-free guidance scale. [default: the base model's]")
    ] = None,
    cfg_rescale: Annotated[
        float,
        typer.Option(
            help="Rescale classifier-free guidance by this much (0 to 1; diffusers' guidance_rescale, "
            "A1111's CFG Rescale): 0.7 for zero-terminal-SNR (v-ztsnr) models, against washed-out images."
        ),
    ] = 0.0,
    size: Annotated[str | None, typer.Option(help="Image size WxH. [default: the base model's]")] = None,
    clip_skip: Annotated[
        int | None,
        typer.Option(
            help="SD 1.x/2.x: the CLIP layer from the end that conditions the images, counted as A1111 and "
            "kohya count (2: kohya's --clip_skip 2). [default: the checkpoints' ss_clip_skip, else 1]"
        ),
    ] = None,
    prediction: Annotated[
        str | None,
        typer.Option(
            help="What the base's UNet predicts: epsilon, v, or v-ztsnr (v on a zero-terminal-SNR schedule, "
            "as NoobAI-XL v-pred). [default: the base's (a file's v_pred/ztsnr markers or metadata), or v "
            "where the checkpoints say they were trained for it]"
        ),
    ] = None,
    scorer: Annotated[
        str | None,
        typer.Option(
            help="CLIP scorer: toy, or open_clip MODEL:PRETRAINED or MODEL:/weights.safetensors. "
            "[default: toy for the toy base, else ViT-L-14:datacomp_xl_s13b_b90k]"
        ),
    ] = None,
    reference: Annotated[
        Path | None,
        typer.Option(help="Reference (training) images for fidelity. [default: the run's dataset]"),
    ] = None,
    trigger: Annotated[
        str | None, typer.Option(help="Trigger word. [default: from checkpoint metadata]")
    ] = None,
    class_word: Annotated[
        str | None, typer.Option("--class", help="Class word. [default: from checkpoint metadata]")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images rendered per batch.")] = 8,
    threads: Annotated[
        int | None,
        typer.Option(
            help="CPU threads per rendering process on CPU. [default: 1 for the toy world, else torch's, "
            "or the cores shared out among --workers]"
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            help="Processes rendering on this machine's CPU, e.g. the cores (on 2 cores the toy world "
            "evaluates 1.1x faster with 2 than with --threads 2). GPUs: accelerate launch."
        ),
    ] = 1,
    workdir: Annotated[
        Path | None, typer.Option(help="Where to keep renders and results. [default: PATH/lorasel]")
    ] = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            help="Keep evaluating while a trainer saves checkpoints into PATH: each new one is rendered "
            "as it appears (the models stay loaded). Ctrl-C stops; finished renders are kept.",
        ),
    ] = False,
    follow_idle: Annotated[
        float | None,
        typer.Option(
            help="With --follow: stop after this many minutes in which no checkpoint was written. [default: never]"
        ),
    ] = None,
) -> None:
    """Render fixed prompts with every checkpoint at every strength and measure fidelity,
    flexibility, adherence, diversity and preservation. Rerun at will: finished renders are kept."""
    from lorasel.errors import ConfigError
    from lorasel.evaluate import evaluate, parse_size, parse_strengths
    from lorasel.rank.weights import Weights

    show = os.environ.get("RANK", "0") == "0"  # under `accelerate launch`, one process talks
    if weights is not None and not refine:
        raise ConfigError(
            "--weights only chooses what --refine refines",
            hint="add --refine N, or rank with `lorasel rank --weights`",
        )
    options = dict(
        base=base, prompts=prompts, strengths=parse_strengths(strengths), seeds=seeds, steps=steps,
        guidance=guidance, size=parse_size(size) if size else None, scorer=scorer, reference=reference,
        trigger=trigger, class_word=class_word, workdir=workdir, batch_size=batch_size, threads=threads,
        workers=workers, refine=refine, weights=Weights.parse(weights) if weights is not None else None,
        clip_skip=clip_skip, prediction=prediction, cfg_rescale=cfg_rescale,
    )  # fmt: skip
    if follow or follow_idle is not None:
        _follow(path, options, follow_idle)
        return
    with _ProgressBar(enabled=show) as bar:
        results = evaluate(path, progress=bar.update, **options)
    if show:
        _summary(results)


def _follow(path: Path, options: dict, idle_minutes: float | None) -> None:
    """``lorasel eval --follow``: evaluate each time the trainer saves, with the models loaded once."""
    import threading

    from rich.console import Console

    from lorasel import models
    from lorasel.cli.ranking_output import describe, printable
    from lorasel.errors import ConfigError, EvaluationError
    from lorasel.evaluate.concept import base_of_run
    from lorasel.evaluate.follow import follow
    from lorasel.evaluate.job import default_scorer
    from lorasel.evaluate.options import EvalOptions
    from lorasel.evaluate.processes import current_processes
    from lorasel.rank import rank
    from lorasel.results import BASE
    from lorasel.rundir import RunDir

    if idle_minutes is not None and not idle_minutes > 0:
        raise ConfigError(
            f"--follow-idle must be above 0 minutes (got {idle_minutes:g})",
            hint="omit it to follow until Ctrl-C",
        )
    if current_processes().count > 1:
        raise ConfigError(
            "--follow cannot run under accelerate launch",
            hint="follow in one process (a second GPU: CUDA_VISIBLE_DEVICES=1), or evaluate after training",
        )
    # Bad numbers are reported before the models load, as without --follow.
    EvalOptions(**{k: options[k] for k in EVAL_OPTION_FIELDS})
    run = RunDir.at(path, options["workdir"])
    if not run.root.is_dir():
        raise EvaluationError(f"{run.root} is not a folder", hint="pass the folder the trainer saves into")
    if options["workers"] == 1:  # load once; helper processes (--workers) load their own per round
        base = options["base"] or base_of_run(run) or "toy"
        options["scorer"] = models.load_scorer(options["scorer"] or default_scorer(base))
        options["base"] = models.load_base(base)
    folder = printable(run.checkpoints)
    stderr = Console(stderr=True)
    waiting = f"waiting for new checkpoints in {folder} (Ctrl-C to stop)"
    last = []

    def on_results(results) -> None:
        last[:] = [results]
        best = rank(results).best
        n = results.renders.loc[results.renders["checkpoint"] != BASE, "checkpoint"].nunique()
        evaluated = f"{counted(n, 'checkpoint')} evaluated"
        stderr.print(f"{evaluated}; lorasel picks {describe(best)} (P(best) {best.p_best:.2f})",
                     markup=False, highlight=False)  # fmt: skip
        stderr.print(waiting, markup=False, highlight=False)

    stderr.print(waiting, markup=False, highlight=False)
    bar = _ProgressBar(enabled=True)
    try:
        follow(path, threading.Event(), idle_s=None if idle_minutes is None else 60 * idle_minutes,
               on_results=on_results, progress=lambda e: _round(bar, e), **options)  # fmt: skip
    except KeyboardInterrupt:
        bar.close()
        stderr.print("stopped following; finished renders are kept", markup=False, highlight=False)
    finally:
        bar.close()
    if last:
        _summary(last[0])


def _round(bar: _ProgressBar, event) -> None:
    """One progress bar per evaluation round of --follow, put away when the round is done."""
    bar.update(event)
    if event.phase == "done":
        bar.close()


class _ProgressBar:
    """A rich progress bar on stderr fed by the evaluator's progress events.

    Started only when rendering starts, so an error found while checking the input is the
    one line on stderr."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.progress = None
        self.task = None

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Put the bar away; the next ``start`` event begins a new one."""
        if self.progress is not None:
            self.progress.stop()
        self.progress = self.task = None

    def _console(self):
        from rich.console import Console

        return self.progress.console if self.progress is not None else Console(stderr=True)

    def _start(self, event) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.close()  # the bar of a finished pass (--refine renders in a second one)
        self._console().print(event.message, markup=False, highlight=False, soft_wrap=True)
        self._console().print(
            f"{event.cached} of {event.total} renders already done", markup=False, highlight=False
        )
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=self._console(),
        )
        self.progress.start()
        self.task = self.progress.add_task("rendering", total=event.total, completed=event.done, rate="")

    def update(self, event) -> None:
        if not self.enabled:
            return
        if event.phase == "warning":
            self._console().print(f"warning: {event.message}", markup=False, highlight=False, soft_wrap=True)
        elif event.phase == "start":
            self._start(event)
        elif event.phase == "render" and self.task is not None:
            rate = f"{event.rate:.2f} renders/s" if event.rate else ""
            self.progress.update(self.task, completed=event.done, rate=rate)
        elif event.phase == "score" and self.task is not None:
            self.progress.update(
                self.task, description="scoring", total=event.total, completed=event.done, rate=""
            )
        elif event.phase == "done" and self.task is not None:
            total = self.progress.tasks[0].total
            self.progress.update(self.task, description="done", completed=total, rate="")


def _summary(results) -> None:
    """Per checkpoint × strength: the metrics, as a table on stdout."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from lorasel.cli.ranking_output import METRIC_HEADINGS
    from lorasel.results import BASE, METRICS, seeds_per_prompt

    means = results.candidates()
    # Each candidate's seeds per prompt: shown when a refinement made them differ, as `rank` does.
    per_candidate = seeds_per_prompt(results.renders)
    seeds = [
        int(per_candidate.get((row.checkpoint, row.strength), 0)) for row in means.itertuples(index=False)
    ]
    show_seeds = len({n for n, c in zip(seeds, means["checkpoint"], strict=True) if c != BASE}) > 1
    table = Table(title="lorasel eval: mean per checkpoint × strength")
    table.add_column("checkpoint", overflow="fold")  # folded rather than cut in a narrow terminal: a file
    table.add_column("strength", justify="right")
    for name in METRICS:  # headings as `lorasel rank` shortens them, to fit 80 columns
        table.add_column(METRIC_HEADINGS[name], justify="right")
    if show_seeds:
        table.add_column("seeds", justify="right")
    for row, n in zip(means.itertuples(index=False), seeds, strict=True):
        table.add_row(
            Text(str(row.label)),  # a file name: not Rich markup
            f"{row.strength:g}",
            *(_fmt(getattr(row, m)) for m in METRICS),
            *((str(n),) if show_seeds else ()),
        )
    console = Console(soft_wrap=True)
    print_table(console, table)
    note = _refined_note(results)
    if note:
        console.print(note, markup=False, highlight=False)


def _refined_note(results) -> str | None:
    """What ``--refine`` did, in one line (None when it did nothing)."""
    from lorasel.results import BASE

    seeds, refine = results.settings.get("seeds"), results.settings.get("refine")
    if not isinstance(seeds, int) or not isinstance(refine, int) or refine <= 0:
        return None
    renders = results.renders[results.renders["checkpoint"] != BASE]
    pairs = renders.drop_duplicates(["checkpoint", "strength"])
    refined = renders.loc[renders["seed_index"] >= seeds].drop_duplicates(["checkpoint", "strength"])
    others = len(pairs) - len(refined)
    return (
        f"refined: {len(refined)} of {len(pairs)} candidates with {counted(seeds + refine, 'seed')} per prompt, "
        f"the other {others} with {seeds} (their means above are over their own seeds; "
        "`lorasel rank` compares them paired)"
    )


def _fmt(value) -> str:
    try:
        return "-" if value != value else METRIC_FORMAT.format(value)
    except (TypeError, ValueError):
        return "-"
