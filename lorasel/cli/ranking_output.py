"""What `lorasel rank`, `pick` and `report` share: options, loading, and the human-readable text."""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from lorasel.text import counted

if TYPE_CHECKING:  # heavy imports stay inside the commands
    from lorasel.rank import Candidate, Ranking
    from lorasel.results import Results

PathArg = Annotated[
    Path, typer.Argument(help="A run directory or a folder of LoRA checkpoints, evaluated by `lorasel eval`.")
]
StrengthsOpt = Annotated[
    str | None,
    typer.Option("--strengths", help="Only these evaluated strengths, comma-separated, e.g. 0.75,1.0."),
]
WeightsOpt = Annotated[
    str | None,
    typer.Option(
        "--weights",
        help="Composite score weights (default fidelity=1,flexibility=0,adherence=1,diversity=0,"
        "preservation=0), e.g. flexibility=1 or fidelity=2 (names not given keep their default).",
    ),
]
WorkdirOpt = Annotated[
    Path | None, typer.Option("--workdir", help="Evaluator state folder, if not PATH/lorasel.")
]


@contextlib.contextmanager
def warnings_to_stderr() -> Iterator[None]:
    """Show lorasel's warnings (an unusable loss log) as one ``warning: ...`` line each; other
    libraries' warnings pass through as Python shows them."""
    from lorasel.rank import LossLogWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LossLogWarning)
        try:
            yield
        finally:
            seen = set()
            for w in caught:
                if not issubclass(w.category, LossLogWarning):
                    warnings.showwarning(w.message, w.category, w.filename, w.lineno)
                    continue
                text = " ".join(str(w.message).split())
                if text not in seen:
                    seen.add(text)
                    typer.echo(f"warning: {printable(text)}", err=True)


def load_and_rank(
    path: Path, *, strengths: str | None, weights: str | None, workdir: Path | None
) -> tuple[Results, Ranking]:
    """Parse the shared options, load the evaluation of ``path`` and rank it."""
    from lorasel.rank import Weights, inputs, parse_strengths, rank, read_loss
    from lorasel.rundir import RunDir

    parsed_weights = Weights.parse(weights) if weights is not None else None
    parsed_strengths = parse_strengths(strengths) if strengths is not None else None
    results = inputs.load_inputs(path, workdir)
    loss = read_loss(RunDir.at(path).root)
    ranking = rank(results, weights=parsed_weights, strengths=parsed_strengths, loss=loss)
    for note in ranking.warnings():
        typer.echo(f"warning: {note}", err=True)
    return results, ranking


def printable(text: object, limit: int | None = None) -> str:
    """Text from strangers' files made safe for a terminal: control characters become '?'."""
    out = "".join(ch if ch.isprintable() else "?" for ch in str(text))
    if limit is not None and len(out) > limit:
        out = out[: limit - 1] + "…"
    return out


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def describe(c: Candidate) -> str:
    return f"{printable(c.label, 48)} at strength {c.strength:g}"


#: Column headings of the metrics in the text tables (`rank`, `eval`'s summary): 80 columns wide.
METRIC_HEADINGS = {"fidelity": "fidelity", "flexibility": "flexib.", "adherence": "adher.", "diversity": "divers.",
                   "preservation": "preserv."}  # fmt: skip


def table_text(ranking: Ranking) -> str:
    """The ranked table as aligned text (the base model last, unranked)."""
    from lorasel.results import METRICS

    head = ("rank", "checkpoint", "epoch", "strength", *(METRIC_HEADINGS[m] for m in METRICS), "score",
            "95% interval", "P(best)", "", "loss")  # fmt: skip
    seeds = ranking.seeds_vary  # after `eval --refine`: each candidate's seeds per prompt
    if seeds:
        head = (*head, "seeds")
    rows = []
    for c in ranking.candidates():
        marks = ("=" if c.tied else "") + ("*" if c.pareto else "")
        m = c.metrics
        rows.append(
            (
                "-" if c.rank is None else str(c.rank),
                printable(c.label, 28),
                "-" if c.epoch is None else str(c.epoch),
                f"{c.strength:g}",
                _num(m["fidelity"]),
                _num(m["flexibility"]),
                _num(m["adherence"]),
                _num(m["diversity"], 2),
                _num(m["preservation"]),
                _num(c.score),
                f"{_num(c.score_lo)}–{_num(c.score_hi)}",
                _num(c.p_best),
                marks,
                _num(c.loss, 4),
                *((str(c.seeds),) if seeds else ()),
            )
        )
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    left = {1, 12}
    lines = [
        "  ".join(
            cell.ljust(w) if i in left else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [head, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


def loss_lines(ranking: Ranking) -> list[str]:
    """The lowest-loss pick and the loss/score correlation, for the human outputs."""
    lowest = ranking.lowest_loss
    if lowest is None:
        return ["lowest loss: no training loss log found (logs/loss.csv or TensorBoard events)"]
    n = int((ranking.table["checkpoint"] != "base").sum())
    lines = [
        f"lowest loss would pick: {describe(lowest)} (rank {lowest.rank} of {n}, score {_num(lowest.score)}, "
        f"P(best) {_num(lowest.p_best)}, loss {_num(lowest.loss, 4)})"
    ]
    if ranking.loss_spearman is not None:
        lines.append(
            f"loss vs score: Spearman rho {ranking.loss_spearman:+.2f} over checkpoints at their best strength "
            "(a good selector would be near -1)"
        )
    return lines


def summary_line(ranking: Ranking) -> str:
    table = ranking.table[ranking.table["checkpoint"] != "base"]
    units = sum(ranking.units.values())
    return (
        f"{counted(table['checkpoint'].nunique(), 'checkpoint')} x {counted(table['strength'].nunique(), 'strength')}, "
        f"{counted(units, '(prompt, seed) unit')}, {counted(ranking.n_boot, 'bootstrap round')}"
    )
