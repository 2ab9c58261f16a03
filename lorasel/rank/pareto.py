"""The Pareto front on the metrics the score weighs (by default fidelity and adherence).

A candidate is on the front when no other candidate is at least as good on every one of those
metrics and strictly better on one. The front is the set of sensible choices whatever their
relative weights: every candidate off it is beaten on all of them by one on it, and the pick is
always on it.
"""

from __future__ import annotations

import numpy as np


def pareto_front(*metrics: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated points, every metric maximised (a point with a NaN is
    never on it), e.g. ``pareto_front(fidelity, adherence)``. With no metric every point is."""
    if not metrics:
        raise ValueError("pareto_front needs at least one metric")
    values = np.column_stack([np.asarray(m, dtype=float) for m in metrics])  # [points, metrics]
    ok = np.isfinite(values).all(axis=1)
    xs = values[ok]
    # dominated[i] if some j has x_j >= x_i on every metric and x_j > x_i on one.
    ge = (xs[None, :, :] >= xs[:, None, :]).all(axis=2)
    gt = (xs[None, :, :] > xs[:, None, :]).any(axis=2)
    dominated = (ge & gt).any(axis=1)
    out = np.zeros(len(values), dtype=bool)
    out[np.flatnonzero(ok)] = ~dominated
    return out
