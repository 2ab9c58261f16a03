"""The selected row in detail: score and confidence, score and loss against epoch, every
prompt's measurement beside the base model's, and the checkpoint file's metadata.

All text from the run (file names, prompts, metadata keys and values) goes through
:func:`lorasel.tui.text.clean`: it is shown literally, never as markup. Everything is plain
:class:`~rich.text.Text` lines (no Rich tables to measure): moving the cursor stays cheap.
"""

from __future__ import annotations

import math

import pandas as pd
from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from lorasel.checkpoints.read import EMBEDDING_ADVICE, bundled_embeddings
from lorasel.rank import Candidate
from lorasel.results import METRIC_SHORT
from lorasel.text import counted
from lorasel.tui.session import CandidateKey
from lorasel.tui.text import clean, num, strength_text
from lorasel.tui.views import RankingIndex, ResultsIndex, sparkline

#: Longest metadata value shown (ss_tag_frequency and friends can be huge).
MAX_META_CHARS = 160
#: Longest prompt shown (the line is cut at the pane's edge anyway).
MAX_PROMPT_CHARS = 300


def _summary(c: Candidate, key: CandidateKey, ranked: RankingIndex, text: Text) -> None:
    text.append(clean(c.label, 60), style="bold")
    text.append(f" @ strength {strength_text(c.strength)}")
    if c.is_base:
        text.append("  the base model: the reference every candidate is compared with\n", style="dim")
        return
    text.append(f"   rank {c.rank}/{ranked.contest_size}")
    if key == ranked.best:
        text.append(
            "  the pick" + (f" ({ranked.tied_count - 1} tied with it)" if c.tied else ""), style="bold green"
        )
    elif c.tied:
        text.append("  (tied with the pick)")
    text.append(
        f"\nscore {num(c.score)} [95% {num(c.score_lo)}–{num(c.score_hi)}]  P(best) {num(c.p_best, 2)}"
    )
    win = ranked.win_vs_best.get(key, math.nan)
    if key != ranked.best and math.isfinite(win):
        text.append(f"  the pick beats it in {win:.0%} of rounds")
    m = c.metrics
    # The table's short names (the help screen explains them): five metrics fit 80 columns.
    text.append(
        "\n" + "  ".join(f"{METRIC_SHORT[k]} {num(v, 2 if k == 'diversity' else 3)}" for k, v in m.items())
    )
    where = [
        f"epoch {c.epoch}" if c.epoch is not None else "",
        f"step {c.step}" if c.step is not None else "",
    ]
    where.append(f"loss {num(c.loss, 4)}" if c.loss is not None else "")
    where.append(f"val loss {num(c.val_loss, 4)}" if c.val_loss is not None else "")
    if ranked.ranking.seeds_vary:  # after a refinement: how much evidence this candidate has
        where.append(f"{counted(c.seeds, 'seed')} per prompt")
    text.append("\n" + "  ".join(w for w in where if w))
    text.append("\nfile ")
    text.append(clean(c.path))
    text.append("\nprompt tag ")  # how A1111 and Forge apply it, as `lorasel pick` prints it
    text.append(clean(c.prompt_tag))
    if not c.is_base and (embeddings := bundled_embeddings(c.path)):  # a pivotal-tuning LoRA
        text.append("\nembedding ")
        text.append(clean(", ".join(embeddings)))
        text.append(f" bundled: {EMBEDDING_ADVICE}", style="dim")
    text.append("\n")


def _by_epoch(c: Candidate, ranked: RankingIndex, text: Text) -> None:
    series = ranked.series(c.strength)
    if len(series) < 2:
        return
    here = [i for i, ck in enumerate(series["checkpoint"]) if ck == c.checkpoint]
    for name, values in (("score", series["score"]), ("loss ", series["loss"])):
        floats = [float(v) if not pd.isna(v) else math.nan for v in values]
        finite = [v for v in floats if math.isfinite(v)]
        if not finite:
            continue
        text.append(f"{name} by epoch @ {strength_text(c.strength)}  ")
        for i, ch in enumerate(sparkline(floats)):
            text.append(ch, style="bold yellow" if i in here else "")
        text.append(f"  {min(finite):.3g}–{max(finite):.3g}\n", style="dim")
    epochs = series["epoch"].dropna()
    if len(epochs):
        text.append(
            f"epochs {int(epochs.min())}–{int(epochs.max())} left to right; this one in yellow\n", style="dim"
        )


def _prompts(key: CandidateKey, index: ResultsIndex, text: Text) -> None:
    text.append("per prompt", style="bold")
    text.append(" (mean over seeds of the metric the prompt's kind measures)\n", style="dim")
    text.append(f"{'kind':<13} {'':<4} {'this':>6} {'base':>6} {'div':>5}  prompt\n", style="bold")
    for row in index.prompt_rows(key):
        text.append(
            f"{row.kind:<13} {METRIC_SHORT.get(row.metric, row.metric):<4} {num(row.value):>6} "
            f"{num(row.base_value):>6} {num(row.diversity, 2):>5}  "
        )
        text.append(clean(f"{row.prompt_id} {row.prompt}", MAX_PROMPT_CHARS) + "\n")


def _metadata(checkpoint: str, index: ResultsIndex, text: Text) -> None:
    items = index.metadata(checkpoint)
    text.append("\nmetadata", style="bold")
    text.append(" (from the file: untrusted, shown as plain text)\n", style="dim")
    if not items:
        text.append("none\n", style="dim")
    for key, value in items:
        text.append(clean(key, 40), style="cyan")
        text.append("  ")
        text.append(clean(value, MAX_META_CHARS))
        text.append("\n")


class DetailPane(VerticalScroll):
    """The detail of one (checkpoint, strength); call :meth:`show` on selection."""

    DEFAULT_CSS = """
    DetailPane { height: 1fr; padding: 0 1; }
    DetailPane > Static { width: 100%; text-wrap: nowrap; text-overflow: ellipsis; }
    """

    def compose(self):
        yield Static(Text("no row selected", style="dim"), id="detail-body")

    def show(self, key: CandidateKey | None, ranked: RankingIndex | None, index: ResultsIndex | None) -> None:
        body = self.query_one("#detail-body", Static)
        c = ranked.rows.get(key) if key is not None and ranked is not None else None
        if c is None or index is None:
            body.update(Text("no row selected", style="dim"))
            return
        text = Text(no_wrap=True, overflow="ellipsis")
        _summary(c, key, ranked, text)
        if not c.is_base:
            _by_epoch(c, ranked, text)
        _prompts(key, index, text)
        if not c.is_base:
            _metadata(c.checkpoint, index, text)
        body.update(text)
