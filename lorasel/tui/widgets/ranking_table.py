"""The ranked table of (checkpoint, strength) rows: the pick marked, ties marked, base model last."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from rich.text import Text
from textual.widgets import DataTable

from lorasel.rank import Ranking
from lorasel.results import BASE
from lorasel.tui.session import LARGEST_FIRST, CandidateKey, ViewState, ordered, parse_row_key, row_key
from lorasel.tui.text import clean, num, strength_text
from lorasel.tui.views import key_of

MARK_PICK = "★"
MARK_TIED = "="
MARK_LOSS = "↓"
MARK_COMPARE = "◆"


@dataclass(frozen=True)
class Column:
    key: str  # a SORT_KEYS name, or "checkpoint"
    label: str
    width: int
    digits: int = 3


#: Every column but the checkpoint's, whose width takes what is left of the terminal.
COLUMNS = (
    Column("rank", "#", 4),
    Column("checkpoint", "checkpoint", 10),
    Column("epoch", "ep", 3),
    Column("strength", "str", 4),
    Column("fidelity", "fid", 5),
    Column("flexibility", "flex", 5),
    Column("adherence", "adh", 5),
    Column("diversity", "div", 4, 2),
    Column("preservation", "pres", 5),
    Column("score", "score", 5),
    Column("p_best", "Pbest", 5, 2),
    Column("loss", "loss", 6, 4),
)
LABEL_MIN, LABEL_MAX = 10, 40
PADDING = 1
SCROLLBAR = 2

STYLE_PICK = "bold green"
STYLE_LOSS_PICK = "bold yellow"
STYLE_BASE = "dim italic"


def label_width(total: int) -> int:
    """Width left for the checkpoint name in a table ``total`` cells wide."""
    fixed = sum(c.width for c in COLUMNS if c.key != "checkpoint") + 2 * PADDING * len(COLUMNS)
    return max(LABEL_MIN, min(LABEL_MAX, total - fixed - SCROLLBAR))


class RankingTable(DataTable):
    """A :class:`DataTable` of a :class:`Ranking` in the order of a :class:`ViewState`."""

    DEFAULT_CSS = """
    RankingTable { height: 1fr; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, cell_padding=PADDING, **kwargs)
        self._ranking: Ranking | None = None
        self._state = ViewState()
        self._label_width = LABEL_MIN
        self._spec: tuple = ()
        self.order: list[CandidateKey] = []

    def on_mount(self) -> None:
        self._build_columns()

    def on_resize(self) -> None:
        width = label_width(self.size.width)
        if width != self._label_width:
            self._label_width = width
            self._refill()

    def _column_spec(self) -> tuple[tuple[str, str, int], ...]:
        """(key, label, width) of every column: the sorted one carries an arrow."""
        spec = []
        for c in COLUMNS:
            label = c.label
            if self._state.by_loss:
                label += "▲" if c.key == "loss" else ""
            elif c.key == self._state.sort:
                ascending = (c.key not in LARGEST_FIRST) != self._state.reverse
                label += "▲" if ascending else "▼"
            width = self._label_width if c.key == "checkpoint" else max(c.width, len(label))
            spec.append((c.key, label, width))
        return tuple(spec)

    def _build_columns(self) -> None:
        spec = self._column_spec()
        if spec == self._spec:
            self.clear()
            return
        self.clear(columns=True)
        self._spec = spec
        for key, label, width in spec:
            self.add_column(
                Text(label, justify="left" if key == "checkpoint" else "right"), width=width, key=key
            )

    @property
    def selected(self) -> CandidateKey | None:
        """The candidate under the cursor (None when the table is empty)."""
        if not self.order or self.cursor_row < 0 or self.cursor_row >= len(self.order):
            return None
        return self.order[self.cursor_row]

    def show(self, ranking: Ranking, state: ViewState) -> None:
        """Show ``ranking`` as ``state`` asks, keeping the cursor on the same candidate."""
        self._ranking, self._state = ranking, state
        self._refill()

    def _refill(self) -> None:
        if self._ranking is None or not self.is_mounted:
            return
        keep = self.selected
        ranking, state = self._ranking, self._state
        best = ranking.best
        pick = (best.checkpoint, round(best.strength, 6))
        lowest = ranking.lowest_loss
        loss_pick = (lowest.checkpoint, round(lowest.strength, 6)) if lowest is not None else None
        records = ordered(ranking.table, state).to_dict("records")
        keys = [key_of(r) for r in records]
        rows = [self._cells(r, k, pick, loss_pick) for r, k in zip(records, keys, strict=True)]
        if self._column_spec() == self._spec and sorted(keys) == sorted(self.order):
            self._update_in_place(keys, rows)
        else:
            self._build_columns()
            for key, cells in zip(keys, rows, strict=True):
                self.add_row(*cells, key=row_key(key))
        self.order = keys
        if keep in self.order:
            self.move_cursor(row=self.order.index(keep), scroll=True)
        elif self.order:
            self.move_cursor(row=0)

    def _update_in_place(self, keys: list[CandidateKey], rows: list[list[Text]]) -> None:
        """Same rows, new values and order: update the cells and sort, without re-adding rows
        (re-adding makes the DataTable measure every cell again, the slow part of a re-rank)."""
        position: dict[int, int] = {}
        for i, (key, cells) in enumerate(zip(keys, rows, strict=True)):
            rk = row_key(key)
            for column, cell in zip(COLUMNS, cells, strict=True):
                self.update_cell(rk, column.key, cell)
            position[id(cells[0])] = i
        self.sort("rank", key=lambda first_cell: position[id(first_cell)])

    def _cells(
        self,
        r: dict,
        key: CandidateKey,
        pick: CandidateKey,
        loss_pick: CandidateKey | None,
    ) -> list[Text]:
        is_base = r["checkpoint"] == BASE
        style = ""
        marks = ""
        if is_base:
            style = STYLE_BASE
        elif key == pick:
            style, marks = STYLE_PICK, MARK_PICK
        elif bool(r["tied"]):
            marks = MARK_TIED
        if self._state.by_loss and key == loss_pick:
            style, marks = STYLE_LOSS_PICK, marks + MARK_LOSS
        if key == self._state.compare:
            marks += MARK_COMPARE
        rank = "-" if pd.isna(r["rank"]) else str(int(r["rank"]))
        epoch = "-" if pd.isna(r["epoch"]) else str(int(r["epoch"]))
        cells = [
            Text(rank + marks, style=style, justify="right"),
            Text(clean(r["label"], self._label_width), style=style, no_wrap=True, overflow="ellipsis"),
            Text(epoch, style=style, justify="right"),
            Text(strength_text(r["strength"]), style=style, justify="right"),
        ]
        for c in COLUMNS[4:]:
            cells.append(Text(num(r[c.key], c.digits), style=style, justify="right"))
        return cells

    def key_at(self, row_key_text: str) -> CandidateKey:
        return parse_row_key(row_key_text)
