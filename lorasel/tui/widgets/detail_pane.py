"""The selected row in detail: score and confidence, score and loss against epoch, every
prompt's measurement beside the base model's, and the checkpoint file's metadata.

All text from the run (file names, prompts, metadata keys and values) goes through
:func:`lorasel.tui.text.safe`: it is shown literally, never as markup.
"""

from __future__ import annotations

import math

import pandas as pd
from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from lorasel.rank import Candidate, Ranking
from lorasel.results import BASE
from lorasel.tui.session import CandidateKey
from lorasel.tui.text import clean, num, safe, strength_text
from lorasel.tui.views import ResultsIndex, epoch_series, sparkline

#: Longest metadata value shown (ss_tag_frequency and friends can be huge).
MAX_META_CHARS = 160
MAX_PROMPT_CHARS = 200
SHORT_METRIC = {"fidelity": "fid", "flexibility": "flex", "preservation": "pres", "": ""}


def candidate(ranking: Ranking, key: CandidateKey) -> Candidate | None:
    table = ranking.table
    rows = table[(table["checkpoint"] == key[0]) & ((table["strength"].astype(float) - key[1]).abs() < 1e-6)]
    return Candidate.from_row(rows.iloc[0]) if len(rows) else None


def _summary(c: Candidate, ranking: Ranking) -> Text:
    n = int((ranking.table["checkpoint"] != BASE).sum())
    text = Text()
    text.append(clean(c.label, 60), style="bold")
    text.append(f" @ strength {strength_text(c.strength)}")
    if c.is_base:
        text.append("  the base model: the reference every candidate is compared with", style="dim")
        return text
    text.append(f"   rank {c.rank}/{n}")
    tied = int(ranking.table["tied"].sum())
    if c.rank == 1 and c.checkpoint == ranking.best.checkpoint and c.strength == ranking.best.strength:
        text.append("  the pick" + (f" ({tied - 1} tied with it)" if c.tied else ""), style="bold green")
    elif c.tied:
        text.append("  (tied with the pick)")
    text.append(
        f"\nscore {num(c.score)} [95% {num(c.score_lo)}–{num(c.score_hi)}]  P(best) {num(c.p_best, 2)}"
    )
    row = ranking.table[
        (ranking.table["checkpoint"] == c.checkpoint) & (ranking.table["strength"] == c.strength)
    ]
    if len(row) and not pd.isna(row["win_vs_best"].iloc[0]) and c.rank != 1:
        text.append(f"  the pick beats it in {float(row['win_vs_best'].iloc[0]):.0%} of rounds")
    m = c.metrics
    text.append(
        f"\nfidelity {num(m['fidelity'])}  flexibility {num(m['flexibility'])}  "
        f"diversity {num(m['diversity'], 2)}  preservation {num(m['preservation'])}"
    )
    where = [
        f"epoch {c.epoch}" if c.epoch is not None else "",
        f"step {c.step}" if c.step is not None else "",
    ]
    where.append(f"loss {num(c.loss, 4)}" if c.loss is not None else "")
    where.append(f"val loss {num(c.val_loss, 4)}" if c.val_loss is not None else "")
    text.append("\n" + "  ".join(w for w in where if w))
    text.append("\nfile ")
    text.append(clean(c.path))
    return text


def _by_epoch(c: Candidate, ranking: Ranking) -> Text:
    series = epoch_series(ranking.table, c.strength)
    text = Text()
    if len(series) < 2:
        return text
    here = [i for i, ck in enumerate(series["checkpoint"]) if ck == c.checkpoint]
    for name, values in (("score", series["score"]), ("loss ", series["loss"])):
        floats = [float(v) if not pd.isna(v) else math.nan for v in values]
        if not any(math.isfinite(v) for v in floats):
            continue
        text.append(f"{name} by epoch @ {strength_text(c.strength)}  ")
        spark = sparkline(floats)
        for i, ch in enumerate(spark):
            text.append(ch, style="bold yellow" if i in here else "")
        finite = [v for v in floats if math.isfinite(v)]
        text.append(f"  {min(finite):.3g}–{max(finite):.3g}\n", style="dim")
    epochs = series["epoch"].dropna()
    if len(epochs):
        text.append(
            f"epochs {int(epochs.min())}–{int(epochs.max())} left to right; this one highlighted", style="dim"
        )
    return text


def _prompts(key: CandidateKey, index: ResultsIndex) -> Table:
    table = Table(box=None, pad_edge=False, expand=True, show_edge=False, padding=(0, 1))
    table.add_column(Text("prompt", style="bold"), ratio=1, overflow="fold")
    for name, justify in (
        ("kind", "left"),
        ("", "left"),
        ("this", "right"),
        ("base", "right"),
        ("div", "right"),
    ):
        table.add_column(Text(name, style="bold"), justify=justify, no_wrap=True)
    for row in index.prompt_rows(key):
        table.add_row(
            safe(f"{row.prompt_id} {row.prompt}", limit=MAX_PROMPT_CHARS),
            Text(row.kind),
            Text(SHORT_METRIC.get(row.metric, row.metric)),
            Text(num(row.value)),
            Text(num(row.base_value)),
            Text(num(row.diversity, 2)),
        )
    return table


def _metadata(checkpoint: str, index: ResultsIndex) -> Text:
    items = index.metadata(checkpoint)
    text = Text()
    text.append("metadata", style="bold")
    text.append(" (from the file: untrusted, shown as plain text)\n", style="dim")
    if not items:
        text.append("none\n", style="dim")
    for key, value in items:
        text.append(clean(key, 40), style="cyan")
        text.append("  ")
        text.append(clean(value, MAX_META_CHARS))
        text.append("\n")
    return text


class DetailPane(VerticalScroll):
    """The detail of one (checkpoint, strength); call :meth:`show` on selection."""

    DEFAULT_CSS = """
    DetailPane { height: 1fr; padding: 0 1; }
    DetailPane > Static { width: 100%; }
    """

    def compose(self):
        yield Static(Text("no row selected", style="dim"), id="detail-body")

    def show(self, key: CandidateKey | None, ranking: Ranking | None, index: ResultsIndex | None) -> None:
        body = self.query_one("#detail-body", Static)
        if key is None or ranking is None or index is None:
            body.update(Text("no row selected", style="dim"))
            return
        c = candidate(ranking, key)
        if c is None:
            body.update(Text("this row is not in the current ranking", style="dim"))
            return
        parts: list = [_summary(c, ranking)]
        if not c.is_base:
            parts.append(_by_epoch(c, ranking))
        parts.append(Text("per prompt (mean over seeds; fid/flex/pres by prompt kind)", style="bold"))
        parts.append(_prompts(key, index))
        if not c.is_base:
            parts.append(Text(""))
            parts.append(_metadata(c.checkpoint, index))
        body.update(Group(*parts))
