"""`lorasel pick PATH [--json] [--min-fidelity X] [--min-flexibility X] [--min-adherence X]`: the best
(checkpoint, strength).

Exit status 0 when a pick is made, 3 when nothing meets the minimums, 2 for bad input.
"""

from __future__ import annotations

from typing import Annotated

import typer

from lorasel.checkpoints.read import EMBEDDING_ADVICE
from lorasel.cli.app import app
from lorasel.cli.ranking_output import (
    PathArg,
    StrengthsOpt,
    WeightsOpt,
    WorkdirOpt,
    describe,
    load_and_rank,
    loss_lines,
    printable,
    warnings_to_stderr,
)
from lorasel.text import counted


@app.command("pick")
def pick_command(
    path: PathArg,
    json_out: Annotated[bool, typer.Option("--json", help="Print the pick as one JSON object.")] = False,
    min_fidelity: Annotated[
        float | None,
        typer.Option("--min-fidelity", help="Only candidates with at least this fidelity (-1..1)."),
    ] = None,
    min_flexibility: Annotated[
        float | None,
        typer.Option("--min-flexibility", help="Only candidates with at least this flexibility (-1..1)."),
    ] = None,
    min_adherence: Annotated[
        float | None,
        typer.Option("--min-adherence", help="Only candidates with at least this adherence (-1..1)."),
    ] = None,
    strengths: StrengthsOpt = None,
    weights: WeightsOpt = None,
    workdir: WorkdirOpt = None,
) -> None:
    """Pick the best (checkpoint, strength); exit 3 when none meets the minimums."""
    import json

    from lorasel.rank import choose
    from lorasel.rank.picking import minimums_of

    minimums_of(min_fidelity, min_flexibility, min_adherence)  # checked before loading anything
    with warnings_to_stderr():
        _, ranking = load_and_rank(path, strengths=strengths, weights=weights, workdir=workdir)
    chosen = choose(
        ranking, min_fidelity=min_fidelity, min_flexibility=min_flexibility, min_adherence=min_adherence
    )
    if json_out:
        typer.echo(json.dumps(chosen.to_json(), indent=2, allow_nan=False))
        return
    embeddings = chosen.embeddings
    best = chosen.best
    m = best.metrics

    def num(value: float | None, digits: int = 3) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    typer.echo(f"pick: {describe(best)}")
    typer.echo(f"  file        {printable(best.path)}")
    typer.echo(
        f"  prompt tag  {printable(best.prompt_tag)}   "
        f"(A1111, Forge; ComfyUI: LoraLoader with model and clip strength {best.strength:g})"
    )
    if embeddings:
        names = " and ".join(repr(printable(n)) for n in embeddings)
        typer.echo(f"  embedding   {names} bundled in the file: {EMBEDDING_ADVICE}")
    where = ", ".join(x for x in (f"epoch {best.epoch}" if best.epoch is not None else "",
                                   f"step {best.step}" if best.step is not None else "") if x)  # fmt: skip
    if where:
        typer.echo(f"  trained     {where}")
    typer.echo(
        f"  score       {num(best.score)} (95% interval {num(best.score_lo)} to {num(best.score_hi)}), "
        f"P(best) {num(best.p_best, 2)}"
    )
    typer.echo(
        f"  metrics     fidelity {num(m['fidelity'])}, flexibility {num(m['flexibility'])}, "
        f"adherence {num(m['adherence'])}, diversity {num(m['diversity'], 2)}, "
        f"preservation {num(m['preservation'])}"
    )
    if chosen.eligible < int((ranking.table["checkpoint"] != "base").sum()):
        typer.echo(f"  among       {counted(chosen.eligible, 'candidate')} meeting the minimums")
    tied = chosen.tied_with
    if tied:
        more = f" (+{len(tied) - 5} more)" if len(tied) > 5 else ""
        typer.echo("  tied with   " + "; ".join(describe(c) for c in tied[:5]) + more)
        typer.echo(f"  note        {ranking.tie_advice(len(tied))}")
    if chosen.runner_up is not None:
        r = chosen.runner_up
        typer.echo(f"runner-up: {describe(r)} (score {num(r.score)}, P(best) {num(r.p_best, 2)})")
    for line in loss_lines(ranking):
        typer.echo(line)
