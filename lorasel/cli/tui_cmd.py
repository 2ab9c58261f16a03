"""`lorasel tui PATH`: rank and compare the checkpoints of a run in the terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lorasel.cli.app import app
from lorasel.cli.ranking_output import PathArg, WeightsOpt, WorkdirOpt


@app.command("tui")
def tui_command(
    path: PathArg,
    workdir: WorkdirOpt = None,
    print_pick: Annotated[
        bool,
        typer.Option("--print-pick", help="On quitting, print the pick as `lorasel pick --json` would."),
    ] = False,
    weights: WeightsOpt = None,
    base: Annotated[
        str | None, typer.Option("--base", help="Base model for an evaluation started from the TUI.")
    ] = None,
    scorer: Annotated[
        str | None,
        typer.Option(
            "--scorer",
            help="Scorer for an evaluation started from the TUI. [default: the stored evaluation's, "
            "else as lorasel eval's]",
        ),
    ] = None,
    prompts: Annotated[
        str | None, typer.Option("--prompts", help="Prompt set for an evaluation started from the TUI.")
    ] = None,
    reference: Annotated[
        Path | None,
        typer.Option("--reference", help="Training images (for fidelity) when PATH is not a lorasel run."),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            help="Processes rendering on this machine's CPU in an evaluation started from the TUI, "
            "as for lorasel eval --workers."
        ),
    ] = 1,
    graphics: Annotated[
        str,
        typer.Option(
            "--graphics",
            help="How to draw renders: auto (Sixel or Kitty graphics if the terminal has them, else "
            "coloured half-blocks), halfcell, sixel, tgp, none.",
        ),
    ] = "auto",
) -> None:
    """Rank, compare and pick interactively: live weights, loss mode, renders side by side."""
    import json

    from lorasel.errors import ConfigError, ResultsError
    from lorasel.rank import Weights
    from lorasel.tui import make_app

    if workers < 1:
        raise ConfigError(
            f"--workers must be at least 1 (got {workers})", hint="use --workers 1, or the cores"
        )
    eval_options = {
        "base": base,
        "scorer": scorer,
        "prompts": prompts,
        "workers": workers if workers > 1 else None,
    }
    if reference is not None:
        eval_options["reference"] = str(reference)
    tui = make_app(
        path,
        workdir=workdir,
        weights=Weights.parse(weights) if weights is not None else None,
        eval_options={k: v for k, v in eval_options.items() if v is not None},
        graphics=graphics,
        print_pick=print_pick,
    )
    pick = tui.run()
    if pick is not None:
        typer.echo(json.dumps(pick, indent=2, allow_nan=False))
    elif print_pick:
        raise ResultsError(
            f"no pick to print: {tui.run_dir.root} has no evaluation results",
            hint=f"run `lorasel eval {path}` (or press v in the TUI)",
        )
