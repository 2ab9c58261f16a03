"""Normalisation of the metrics within a run, and the composite score.

**Normalisation: min-max over the competing candidates of this run.** Each metric is mapped
linearly so that the worst competing (checkpoint, strength) gets 0 and the best gets 1; the
base model is left out of the fit (it is a reference, not a candidate) and may fall outside
[0, 1]. Why: the raw metrics live on very different scales (CLIP image cosines between
candidates spread over ~0.3, text cosines over ~0.05, Vendi scores over whole units), so raw
weights would mean nothing; after min-max a weight says "how much the metric's full spread in
*this run* is worth". The map is fixed once from the point estimates and then applied
unchanged to every bootstrap round, so the score stays a linear function of the metric means
and the resampling measures only sampling noise.

**A metric that does not vary** (range below ``CONSTANT_RANGE``) or was not measured at all
carries no information about which candidate is better: it is left out, and the remaining
weights are renormalised. A candidate missing a metric that others have counts 0 on it.

**Composite**: ``score = Σ_m w_m · norm_m / Σ_m w_m`` over the metrics in play; with every
weight positive it lies in [0, 1] for the competing candidates and is 1 only for a candidate
that is best on every metric.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lorasel.rank.weights import Weights
from lorasel.results import METRICS

#: A metric whose spread over the candidates is below this is treated as constant.
CONSTANT_RANGE = 1e-9


@dataclass(frozen=True)
class Normalisation:
    """Per metric, the values mapped to 0 and to 1 (``None`` for a metric left out)."""

    low: dict[str, float | None]
    high: dict[str, float | None]

    @property
    def active(self) -> tuple[str, ...]:
        """Metrics that take part in the score (measured and not constant)."""
        return tuple(m for m in METRICS if self.low.get(m) is not None)

    def apply(self, metric: str, values: np.ndarray) -> np.ndarray:
        """Normalised values of one metric (NaN stays NaN)."""
        low, high = self.low[metric], self.high[metric]
        if low is None or high is None:
            return np.full(np.shape(values), np.nan)
        return (np.asarray(values, dtype=float) - low) / (high - low)


def fit_normalisation(means: dict[str, np.ndarray]) -> Normalisation:
    """Fit the min-max map on the point estimates of the competing candidates only."""
    low: dict[str, float | None] = {}
    high: dict[str, float | None] = {}
    for m in METRICS:
        values = np.asarray(means.get(m, []), dtype=float)
        values = values[np.isfinite(values)]
        if values.size == 0 or values.max() - values.min() < CONSTANT_RANGE:
            low[m] = high[m] = None
        else:
            low[m], high[m] = float(values.min()), float(values.max())
    return Normalisation(low=low, high=high)


def composite(means: dict[str, np.ndarray], norm: Normalisation, weights: Weights) -> np.ndarray:
    """The composite score of arrays of metric means (any shape, e.g. [candidates] or [rounds, candidates])."""
    w = weights.as_dict()
    active = [m for m in norm.active if w[m] > 0]
    shape = np.shape(next(iter(means.values())))
    if not active:
        return np.zeros(shape)
    total = sum(w[m] for m in active)
    score = np.zeros(shape)
    for m in active:
        score += w[m] * np.nan_to_num(norm.apply(m, means[m]), nan=0.0)
    return score / total
