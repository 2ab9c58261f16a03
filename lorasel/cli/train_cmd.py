"""`lorasel train CONFIG [--output RUN_DIR] [--set section.key=value ...] [--resume RUN_DIR]`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from lorasel.cli.app import app
from lorasel.errors import ConfigError
from lorasel.text import counted

# What may change when a run is resumed: everything else shapes the network or the batch order.
RESUMABLE_KEYS = ("training.epochs", "training.max_steps", "training.num_workers", "training.cpu_threads",
                  "save.every_n_epochs", "save.every_n_steps", "logging.tensorboard")  # fmt: skip


class ProgressView:
    """Shows the trainer's events: the step arithmetic, a progress bar, saved checkpoints."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.live = self.console.is_terminal
        self.progress = None
        self.task = None
        self.every = 1

    def __call__(self, event) -> None:
        from trainer import events

        if isinstance(event, events.Status):
            self.console.print(f"[dim]{event.message}[/dim]", highlight=False)
        elif isinstance(event, events.Started):
            self._start(event)
        elif isinstance(event, events.Step):
            self._step(event)
        elif isinstance(event, events.Validated):
            self._print(f"epoch {event.epoch}: validation loss {event.val_loss:.4f}")
        elif isinstance(event, events.CheckpointSaved):
            self._print(f"saved {event.path.name} (epoch {event.epoch}, step {event.step})")
        elif isinstance(event, events.Finished):
            self.close()

    def _print(self, text: str) -> None:
        (self.progress.console if self.progress else self.console).print(text, highlight=False)

    def _start(self, event) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console.print(f"run directory: {event.run_dir}", highlight=False)
        self.console.print(event.plan.describe(), highlight=False)
        self.every = max(1, event.plan.total_steps // 20)
        if self.live:
            self.progress = Progress(
                TextColumn("epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}  {task.fields[rate]} it/s"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.progress.start()
            self.task = self.progress.add_task(
                "train",
                total=event.plan.total_steps,
                completed=event.first_step,
                epoch="-",
                loss="-",
                rate="-",
            )

    def _step(self, event) -> None:
        if self.progress is not None:
            self.progress.update(
                self.task,
                completed=event.step,
                epoch=event.epoch,
                loss=f"{event.loss:.4f}",
                rate=f"{event.it_per_s:.2f}",
            )
        elif event.step % self.every == 0 or event.step == event.total_steps:
            self._print(
                f"step {event.step}/{event.total_steps}  epoch {event.epoch}  loss {event.loss:.4f}  "
                f"lr {event.lr:.3g}  {event.it_per_s:.2f} it/s"
            )

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _resume_config(run_dir: Path, overrides: list[str]):
    from trainer.configfile import load_config, parse_override

    for text in overrides:
        section, key, _ = parse_override(text)
        if f"{section}.{key}" not in RESUMABLE_KEYS:
            raise ConfigError(
                f"--set {section}.{key} cannot change when resuming {run_dir}",
                hint=f"only {', '.join(RESUMABLE_KEYS)} may change; start a new run for the rest",
            )
    run_toml = run_dir / "run.toml"
    if not run_toml.is_file():
        raise ConfigError(
            f"{run_dir} is not a lorasel run (no run.toml)",
            hint="pass the RUN_DIR of an earlier `lorasel train`",
        )
    return load_config(run_toml, overrides)


@app.command()
def train(
    config: Annotated[
        str | None,
        typer.Argument(help="Config file (.toml) or preset name (toyworld, sd15, sdxl).", show_default=False),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Run directory (default: runs/NAME-DATE-TIME).", show_default=False
        ),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Override a setting, e.g. --set network.rank=8 (repeatable).", show_default=False
        ),
    ] = None,
    list_settings: Annotated[
        bool,
        typer.Option("--list-settings", help="Print every setting with its default and help, then exit."),
    ] = False,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            help="Continue RUN_DIR from its last checkpoint (its run.toml is the config).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Train a LoRA / LoCon / LoHa / LoKr / DoRA and save a checkpoint every epoch."""
    from trainer.configfile import load_config

    if list_settings:
        from trainer.configfile import describe_fields, toml_value

        for key, default, help_text in describe_fields():
            typer.echo(f"{key} = {toml_value(default)}\n    {help_text}")
        return
    sets = list(overrides or [])
    if resume is not None:
        if config is not None:
            raise ConfigError(
                f"--resume takes its config from {resume / 'run.toml'}; do not pass {config} too",
                hint="to train longer, add --set training.epochs=N",
            )
        if output is not None and output.resolve() != resume.resolve():
            raise ConfigError(
                "--output and --resume name different folders", hint="drop --output when resuming"
            )
        resolved = _resume_config(resume, sets)
        run_dir = resume
    else:
        if config is None:
            raise ConfigError("no config given", hint="lorasel train toyworld, or lorasel train my_lora.toml")
        resolved = load_config(config, sets)
        run_dir = output

    from trainer.loop import train as run_training

    view = ProgressView()
    try:
        result = run_training(resolved, output=run_dir, progress=view, resume=resume is not None)
    finally:
        view.close()
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return  # under `accelerate launch`, one summary
    typer.echo(
        f"trained {counted(result.steps, 'step')} ({counted(result.epochs, 'epoch')}) in {result.seconds:.0f} s; "
        f"{counted(len(result.checkpoints), 'checkpoint')} in {result.run_dir / 'checkpoints'}"
    )
    if result.checkpoints:
        typer.echo(f"next: lorasel eval {result.run_dir}", file=sys.stdout)
