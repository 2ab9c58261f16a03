"""``scores.csv``: the ranked table, one row per (checkpoint, strength), for spreadsheets and scripts."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from lorasel.io import atomic_open, output_file
from lorasel.rank.ranking import Ranking

#: Text cells starting with these would run as formulas in a spreadsheet (CSV injection): file
#: names come from strangers, so such cells get a leading apostrophe.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_TEXT_COLUMNS = ("checkpoint", "label", "path")


def _defuse(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA_START) else text


def write_csv_to(ranking: Ranking, handle: TextIO) -> None:
    """Write ``ranking.table`` (every metric, score and interval, rank, P(best), ties, Pareto,
    loss) as CSV to an open text file."""
    table = ranking.table.copy()
    for column in _TEXT_COLUMNS:
        table[column] = table[column].astype(str).map(_defuse)
    table.to_csv(handle, index=False, lineterminator="\n")


def write_csv(ranking: Ranking, path: str | Path) -> Path:
    """Write the ranked table to ``path`` as CSV, atomically (see :func:`write_csv_to`)."""
    with output_file(path, "the scores CSV") as path, atomic_open(path, "w", encoding="utf-8") as handle:
        write_csv_to(ranking, handle)
    return path
