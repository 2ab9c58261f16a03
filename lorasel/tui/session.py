"""What the person has chosen to see, and the table order that follows from it.

:class:`ViewState` is an immutable value (weights, the weight being adjusted, the strength
filter, the loss toggle, the sort column, the row marked for comparison); every key press makes
a new one. :func:`ordered` turns a ranking's table and a view state into the rows to show. No
Textual here: this is the part of the TUI that plain tests can check.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from lorasel.errors import ConfigError
from lorasel.rank import DEFAULT_WEIGHTS, Weights
from lorasel.results import BASE, METRICS

#: Columns the table can be sorted by, in the order the sort key cycles through them.
SORT_KEYS = (
    "rank", "epoch", "strength", "fidelity", "flexibility", "adherence", "diversity", "preservation",
    "score", "p_best", "loss",
)  # fmt: skip
#: Columns whose natural order is largest first (higher is better).
LARGEST_FIRST = frozenset({*METRICS, "score", "p_best"})
WEIGHT_NAMES = METRICS
WEIGHT_STEP = 0.25

#: A row of the table: (checkpoint id, strength).
CandidateKey = tuple[str, float]


def candidate_key(checkpoint: object, strength: object) -> CandidateKey:
    return (str(checkpoint), round(float(strength), 6))


def row_key(key: CandidateKey) -> str:
    """The DataTable row key of a candidate (checkpoint ids may contain any character)."""
    return f"{key[1]!r}\x00{key[0]}"


def parse_row_key(text: str) -> CandidateKey:
    strength, _, checkpoint = text.partition("\x00")
    return (checkpoint, float(strength))


@dataclass(frozen=True)
class ViewState:
    """The person's current choices. ``strength``: None shows every evaluated strength."""

    weights: Weights = DEFAULT_WEIGHTS
    weight_index: int = 0
    strength: float | None = None
    by_loss: bool = False
    sort: str = "rank"
    reverse: bool = False
    compare: CandidateKey | None = None

    @property
    def weight_name(self) -> str:
        return WEIGHT_NAMES[self.weight_index]

    def next_weight(self, step: int = 1) -> ViewState:
        return replace(self, weight_index=(self.weight_index + step) % len(WEIGHT_NAMES))

    def adjust_weight(self, delta: float) -> ViewState:
        """Change the selected weight by ``delta`` (never below 0). ConfigError when every
        weight would be zero (the composite would be undefined)."""
        values = self.weights.as_dict()
        name = self.weight_name
        values[name] = max(0.0, round(values[name] + delta, 6))
        if values == self.weights.as_dict():
            return self
        return replace(self, weights=Weights(**values))

    def reset_weights(self, weights: Weights = DEFAULT_WEIGHTS) -> ViewState:
        return replace(self, weights=weights)

    def cycle_strength(self, strengths: Sequence[float]) -> ViewState:
        """All strengths → the first evaluated strength → the next … → all strengths."""
        options: list[float | None] = [None, *sorted(strengths)]
        try:
            i = next(k for k, s in enumerate(options) if _same_strength(s, self.strength))
        except StopIteration:
            i = 0
        return replace(self, strength=options[(i + 1) % len(options)])

    def sorted_by(self, column: str) -> ViewState:
        """Sort by ``column``; choosing the current column again reverses it. Leaves loss mode."""
        if column not in SORT_KEYS:
            raise ConfigError(f"cannot sort by {column!r}", hint=f"sortable: {', '.join(SORT_KEYS)}")
        if column == self.sort and not self.by_loss:
            return replace(self, reverse=not self.reverse)
        return replace(self, sort=column, reverse=False, by_loss=False)

    def next_sort(self) -> ViewState:
        i = SORT_KEYS.index(self.sort) if self.sort in SORT_KEYS else -1
        return replace(self, sort=SORT_KEYS[(i + 1) % len(SORT_KEYS)], reverse=False, by_loss=False)

    def toggle_compare(self, key: CandidateKey | None) -> ViewState:
        return replace(self, compare=None if key is None or key == self.compare else key)


def _same_strength(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, abs_tol=1e-6)


def ordered(table: pd.DataFrame, state: ViewState) -> pd.DataFrame:
    """The rows of a ranking's ``table`` in display order, the base model always last.

    Loss mode orders by training loss (lowest first; a checkpoint's strengths nearest 1.0 first,
    since loss is measured at full strength), which is what picking by loss would do. Otherwise
    by ``state.sort`` in its natural direction (best first), reversed on request; missing values
    last; equal values keep the ranking's order.
    """
    is_base = table["checkpoint"] == BASE
    contest, base = table[~is_base], table[is_base]
    position = np.arange(len(contest))
    if state.by_loss:
        keys = pd.DataFrame(
            {
                "a": contest["loss"].astype(float).to_numpy(),
                "b": (contest["strength"].astype(float) - 1.0).abs().to_numpy(),
                "c": position,
            }
        )
        order = keys.sort_values(["a", "b", "c"], na_position="last", kind="stable").index
    else:
        values = pd.to_numeric(contest[state.sort], errors="coerce").astype(float).to_numpy()
        descending = (state.sort in LARGEST_FIRST) != state.reverse
        values = -values if descending else values
        keys = pd.DataFrame({"a": values, "c": position})
        order = keys.sort_values(["a", "c"], na_position="last", kind="stable").index
    return pd.concat([contest.iloc[order.to_numpy()], base])
