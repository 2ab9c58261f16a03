"""`lorasel eval PATH`: render and score every checkpoint at every strength (cached, resumable)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from lorasel.cli.app import app

METRIC_FORMAT = "{:.3f}"


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
            help="Prompt set: toy, character, object, style, or a .toml file. [default: toy for the toy base, else object]"
        ),
    ] = None,
    strengths: Annotated[
        str, typer.Option(help="Comma-separated LoRA strengths in (0, 2].")
    ] = "0.5,0.75,1.0",
    seeds: Annotated[int, typer.Option(help="Seeds per prompt.")] = 4,
    steps: Annotated[int | None, typer.Option(help="Sampling steps. [default: the base model's]")] = None,
    guidance: Annotated[
        float | None, typer.Option(help="Classifier-free guidance scale. [default: the base model's]")
    ] = None,
    size: Annotated[str | None, typer.Option(help="Image size WxH. [default: the base model's]")] = None,
    scorer: Annotated[
        str,
        typer.Option(help="CLIP scorer: toy, or open_clip MODEL:PRETRAINED or MODEL:/weights.safetensors."),
    ] = "toy",
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
) -> None:
    """Render fixed prompts with every checkpoint at every strength and measure fidelity,
    flexibility, adherence, diversity and preservation. Rerun at will: finished renders are kept."""
    from lorasel.evaluate import evaluate, parse_size, parse_strengths

    show = os.environ.get("RANK", "0") == "0"  # under `accelerate launch`, one process talks
    with _ProgressBar(enabled=show) as bar:
        results = evaluate(
            path,
            base=base,
            prompts=prompts,
            strengths=parse_strengths(strengths),
            seeds=seeds,
            steps=steps,
            guidance=guidance,
            size=parse_size(size) if size else None,
            scorer=scorer,
            reference=reference,
            trigger=trigger,
            class_word=class_word,
            workdir=workdir,
            progress=bar.update,
            batch_size=batch_size,
            threads=threads,
            workers=workers,
        )
    if show:
        _summary(results)


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
        if self.progress is not None:
            self.progress.stop()

    def _console(self):
        from rich.console import Console

        return self.progress.console if self.progress is not None else Console(stderr=True)

    def _start(self, event) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

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
    from lorasel.results import METRICS

    table = Table(title="lorasel eval: mean per checkpoint × strength")
    table.add_column("checkpoint", overflow="fold")  # wrapped rather than cut: it names a file
    table.add_column("strength", justify="right")
    for name in METRICS:  # headings as `lorasel rank` shortens them, to fit 80 columns
        table.add_column(METRIC_HEADINGS[name], justify="right")
    for row in results.candidates().itertuples(index=False):
        table.add_row(
            Text(str(row.label)),  # a file name: not Rich markup
            f"{row.strength:g}",
            *(_fmt(getattr(row, m)) for m in METRICS),
        )
    Console(soft_wrap=True).print(table)


def _fmt(value) -> str:
    try:
        return "-" if value != value else METRIC_FORMAT.format(value)
    except (TypeError, ValueError):
        return "-"
