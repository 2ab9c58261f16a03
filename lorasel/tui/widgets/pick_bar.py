"""Two lines: what the ranking picks (and how sure it is), and what training loss would have
picked instead."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from lorasel.rank import Candidate, Ranking
from lorasel.tui.text import clean, num, strength_text


def describe(c: Candidate) -> str:
    return f"{clean(c.label, 32)} @ {strength_text(c.strength)}"


def pick_text(ranking: Ranking, by_loss: bool) -> Text:
    best = ranking.best
    n = int((ranking.table["checkpoint"] != "base").sum())
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append("pick ", style="bold green")
    text.append(describe(best), style="bold")
    text.append(f"  score {num(best.score)}  P(best) {num(best.p_best, 2)}")
    tied = int(ranking.table["tied"].sum()) - (1 if best.tied else 0)
    if tied > 0:
        text.append(f"  ={tied} tied")
    text.append("\n")
    lowest = ranking.lowest_loss
    if lowest is None:
        text.append("loss ", style="bold yellow" if by_loss else "bold")
        text.append("no training loss log (logs/loss.csv or TensorBoard events)", style="dim")
        return text
    text.append("loss would pick ", style="bold yellow" if by_loss else "bold")
    text.append(describe(lowest))
    text.append(f"  rank {lowest.rank}/{n}  P(best) {num(lowest.p_best, 2)}")
    if ranking.loss_spearman is not None:
        text.append(f"  ρ {ranking.loss_spearman:+.2f}")
    return text


class PickBar(Static):
    """Shows the pick and the lowest-loss pick of a :class:`Ranking`."""

    DEFAULT_CSS = """
    PickBar { height: 2; padding: 0 1; }
    """

    def show(self, ranking: Ranking, by_loss: bool) -> None:
        self.update(pick_text(ranking, by_loss))
