"""The Pareto front on (fidelity, flexibility).

A candidate is on the front when no other candidate is at least as good on both metrics and
strictly better on one. The front is the set of sensible choices whatever the weights: every
candidate off it is beaten on both counts by one on it.
"""

from __future__ import annotations

import numpy as np


def pareto_front(fidelity: np.ndarray, flexibility: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated points (both metrics maximised; NaN is never on it)."""
    x = np.asarray(fidelity, dtype=float)
    y = np.asarray(flexibility, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    xs, ys = x[ok], y[ok]
    # dominated[i] if some j has x_j >= x_i, y_j >= y_i and one of them strictly.
    ge = (xs[None, :] >= xs[:, None]) & (ys[None, :] >= ys[:, None])
    gt = (xs[None, :] > xs[:, None]) | (ys[None, :] > ys[:, None])
    dominated = (ge & gt).any(axis=1)
    out = np.zeros(x.shape, dtype=bool)
    out[np.flatnonzero(ok)] = ~dominated
    return out
