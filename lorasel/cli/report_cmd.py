"""`lorasel report PATH [--html FILE] [--csv FILE]`: scores.csv and a self-contained report.html."""

from __future__ import annotations

from pathlib import Path
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
    printable,
    warnings_to_stderr,
)


@app.command("report")
def report_command(
    path: PathArg,
    html: Annotated[
        Path | None,
        typer.Option("--html", help="Where to write the HTML report [default: PATH/report/report.html]."),
    ] = None,
    csv: Annotated[
        Path | None,
        typer.Option("--csv", help="Where to write the scores [default: PATH/report/scores.csv]."),
    ] = None,
    strengths: StrengthsOpt = None,
    weights: WeightsOpt = None,
    workdir: WorkdirOpt = None,
) -> None:
    """Write scores.csv and report.html (opens offline: images, CSS and JS inline)."""
    from lorasel.report import write_csv, write_html
    from lorasel.rundir import RunDir

    run = RunDir.at(path, workdir)
    html_path = html if html is not None else run.report / "report.html"
    csv_path = csv if csv is not None else run.report / "scores.csv"
    with warnings_to_stderr():
        results, ranking = load_and_rank(path, strengths=strengths, weights=weights, workdir=workdir)
        write_csv(ranking, csv_path)
        write_html(results, ranking, html_path, run.state, title=run.root.name)
    size_kb = html_path.stat().st_size / 1024
    typer.echo(f"wrote {printable(html_path)} ({size_kb:.0f} KB) and {printable(csv_path)}")
    typer.echo(f"pick: {describe(ranking.best)} (P(best) {ranking.best.p_best:.2f})")
