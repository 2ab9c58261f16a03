"""`lorasel rank PATH [--json | --csv]`: the ranked (checkpoint, strength) table."""

from __future__ import annotations

from typing import Annotated

import typer

from lorasel.cli.app import app
from lorasel.cli.ranking_output import (
    PathArg,
    StrengthsOpt,
    WeightsOpt,
    WorkdirOpt,
    describe,
    load_and_rank,
    loss_lines,
    summary_line,
    table_text,
    warnings_to_stderr,
)


@app.command("rank")
def rank_command(
    path: PathArg,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the rows as JSON (DESIGN.md's fields).")
    ] = False,
    csv_out: Annotated[bool, typer.Option("--csv", help="Print the full table as CSV.")] = False,
    strengths: StrengthsOpt = None,
    weights: WeightsOpt = None,
    workdir: WorkdirOpt = None,
) -> None:
    """Rank every evaluated (checkpoint, strength) by composite score, with bootstrap P(best)."""
    import io
    import json

    from lorasel.errors import ConfigError

    if json_out and csv_out:
        raise ConfigError("--json and --csv cannot be combined", hint="choose one output format")
    with warnings_to_stderr():
        _, ranking = load_and_rank(path, strengths=strengths, weights=weights, workdir=workdir)
    if json_out:
        typer.echo(json.dumps(ranking.json_rows(), indent=2, allow_nan=False))
        return
    if csv_out:
        from lorasel.report.scores_csv import write_csv_to

        buffer = io.StringIO()
        write_csv_to(ranking, buffer)
        typer.echo(buffer.getvalue(), nl=False)
        return
    best = ranking.best
    typer.echo(summary_line(ranking))
    typer.echo("")
    typer.echo(table_text(ranking))
    typer.echo("")
    typer.echo("= tied with the pick (could be the best: in the 95% confidence set for the best)")
    typer.echo(f"* on the {ranking.front_label()} Pareto front (no other candidate is better on all of them)")
    typer.echo(f"pick: {describe(best)} (score {best.score:.3f}, P(best) {best.p_best:.2f})")
    advice = ranking.tie_advice()
    if advice:
        typer.echo(f"note: {advice}")
    for line in loss_lines(ranking):
        typer.echo(line)
