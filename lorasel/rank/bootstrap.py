"""Paired bootstrap over (prompt, seed) units: P(best), score intervals and ties.

Every candidate was rendered on the same units with the same noise, so the bootstrap draws
*one* multiset of units per round and scores *every* candidate on it (common random numbers):
differences between candidates then carry only the noise that really separates them, not the
noise of which prompts happened to be drawn. Units are resampled within each prompt kind
(stratified), so every round still measures every metric.

After ``lorasel eval --refine`` a few candidates have units the others lack; their means stay
paired (:func:`paired_means`) and each kind's units are resampled apart by which candidates
have them (:attr:`Evidence.strata`).

Each round is a weighted mean: a unit drawn k times counts k times. Diversity is measured per
(candidate, prompt) over its seeds, so a prompt counts as many times as its units were drawn.
All rounds are computed at once as matrix products: ``counts[rounds, units] @ values.T``.

Definitions (documented in the README too):

- ``p_best``: share of rounds in which the candidate has the highest score among the
  competing candidates; a round whose top score is shared by k candidates gives each 1/k.
- ``score_lo, score_hi``: the 2.5th and 97.5th percentiles of the candidate's score over rounds.
- ``win_vs_best``: share of rounds in which the top-ranked candidate (by point estimate) scores
  above the candidate, ties counting one half.
- ``tied``: the candidate is in the ``TIE_LEVEL`` (95 %) confidence set for the best: this
  evaluation cannot rule out that it is the best one. The top candidate is always in the set and
  is flagged tied when any other is.

**The confidence set for the best** is Hsu's multiple comparison with the best, with bootstrap
critical values. Candidate i stays in the set unless some j beats it by more than the noise of
*all* of i's comparisons together allows: with d_j = score_j - score_i (point estimates), se_j
the bootstrap standard deviation of that difference and c_i the ``TIE_LEVEL`` quantile over
rounds of max_j (d*_j - d_j) / se_j (the round's differences, centred and studentised), i is
out when d_j > c_i se_j for some j. If i is the true best, every true d_j <= 0, so it stays in
with probability about ``TIE_LEVEL``, however many near-equals compete.

Why not "the pick beats it in fewer than 95 % of rounds": the pick is the *observed* maximum, so
its lead over each rival is inflated by its own luck (the winner's curse) and one-at-a-time
comparisons ignore that there are many rivals. On synthetic runs with a known truth and a flat
optimum (``python -m benchmarks.run rank``) that rule kept the true best in the tie set in
80 % of runs; this one kept it in 95 %, at the price of a larger set (10 against 7 of 24). Under
today's default weights (fidelity and adherence, the latter measured on one prompt kind of 12
units there) plain n-of-n resampling kept it in 92.0-93.7 % of runs: with so few units the
bootstrap underestimates the noise by a factor (n - 1)/n in variance (:func:`unit_counts`
corrects that) and cannot know its own standard errors well. With the correction, 93.8 % of 1000
runs (95.7 % of 300 others, where plain resampling read 93.7 %); at 12 seeds per prompt 97 %.
With fewer units it falls short whatever the resampling, since a handful of units cannot show
their own spread: at 2 seeds of 2 or 3 prompts per kind (4 and 6 units) 85 % and 89 % of 300
runs, at 1 seed of 3 prompts 78 % (76 % with n - 1 draws), of 2 prompts 58 % (49 %); hence
:meth:`lorasel.rank.ranking.Ranking.few_units_note` below 4 units.

``p_best`` is a share of resampled evaluations, not a posterior: when several candidates are
truly almost equal, the observed leader keeps its lucky lead in most rounds and so gets more
than its share. Read it as how stable the pick is; read ``tied`` for which candidates could
be the best.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lorasel.rank.evidence import UNIT_METRICS, Evidence
from lorasel.rank.score import Normalisation, composite
from lorasel.rank.weights import Weights

#: Confidence of the set of candidates that could be the best (``tied``).
TIE_LEVEL = 0.95
#: Central interval of the score, as a probability.
INTERVAL = 0.95
#: Scores closer than this are equal (sums in a different order may differ in the last bits).
SCORE_TOL = 1e-9
#: Strata of fewer units are resampled with n draws rather than n - 1 (see :func:`unit_counts`).
SMALL_STRATUM = 4


def unit_counts(strata: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``[n_boot, units]`` unit weights, resampled within each stratum (Rao and Wu's rescaled
    bootstrap). A stratum of n units gets m draws with replacement; a unit drawn c times weighs
    ``1 + λ (n c / m - 1)`` with ``λ = sqrt(m / (n - 1))``. Every stratum keeps its total weight n
    in every round, and the variance of a resampled mean is the textbook s²/n (s² with n - 1 in
    the denominator); n plain draws would give (n - 1)/n of it, intervals too narrow by 4% at the
    12 units of a small prompt kind.

    From :data:`SMALL_STRATUM` units up, m = n - 1 (λ = 1: each draw weighs n / (n - 1)). Below,
    m = n: with n - 1 draws a round never holds every unit once, and of 2 units it holds just one,
    so a candidate best on the mean but second on each unit (1 seed, 2 prompts) would win no round
    at all; with n draws the sample itself is a round (half of them at n = 2, 2/9 at n = 3), at
    the price of weights outside [0, n] (-0.41 and 2.41 at n = 2). A stratum of one unit keeps it.
    """
    strata = np.asarray(strata)
    counts = np.zeros((n_boot, strata.size))
    rows = np.arange(n_boot)[:, None]
    for code in np.unique(strata):
        members = np.flatnonzero(strata == code)
        n = members.size
        if n == 1:
            counts[:, members] = 1.0
            continue
        draws = n - 1 if n >= SMALL_STRATUM else n
        drawn = rng.integers(0, n, size=(n_boot, draws))
        weight = np.bincount((drawn + rows * n).ravel(), minlength=n_boot * n).reshape(n_boot, n) * (
            n / draws
        )
        if draws == n:  # λ = sqrt(n / (n - 1)); for n - 1 draws λ = 1 and the weights are as drawn
            weight = 1.0 + np.sqrt(n / (n - 1)) * (weight - 1.0)
        counts[:, members] = weight
    return counts


def metric_means(evidence: Evidence, counts: np.ndarray) -> dict[str, np.ndarray]:
    """Weighted metric means ``[rounds, candidates]`` for unit weights ``counts[rounds, units]``.

    Candidates rendered on fewer units than others (``lorasel eval --refine``) get paired means:
    see :func:`paired_means`."""
    from threadpoolctl import threadpool_limits

    contest = evidence.contest
    # These products are small (milliseconds on one core); BLAS threads only add contention,
    # 10x slower on a busy machine.
    with threadpool_limits(1, user_api="blas"):
        out = {m: paired_means(counts, evidence.per_unit[m], contest) for m in UNIT_METRICS}
        out["diversity"] = _weighted_mean(counts @ evidence.prompt_matrix(), evidence.diversity)
    return out


def _weighted_mean(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    valid = np.isfinite(values)
    num = weights @ np.where(valid, values, 0.0).T
    den = weights @ valid.T.astype(float)
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def paired_means(weights: np.ndarray, values: np.ndarray, contest: np.ndarray) -> np.ndarray:
    """Means ``[rounds, candidates]`` of ``values[candidates, units]`` (NaN: not measured) that
    stay comparable when some competing candidates were rendered on more units than others.

    When every competing candidate was measured on the same units this is the plain weighted
    mean. Otherwise (a refinement rendered more seeds for a few candidates) the units are the
    union U of those any competing candidate was measured on, and the *complete* candidates R
    are the competing ones measured on all of U. A candidate measured only on P ⊂ U gets

        mean_P(its values) + mean over r in R of (mean_U(r) - mean_P(r)),

    its mean on the units it has, moved by how much the missing units raised or lowered the
    complete candidates' means: under an additive model (candidate effect + unit effect, the
    common random numbers' premise) this is the mean it would have had on all of U, so a refined
    candidate is not favoured or penalised by its extra seeds being easy or hard. Between
    complete candidates the comparison is paired on all of U; with a partial one, on its units.
    Values outside U (the base model's, beyond every competitor's) are left out. With no
    complete competitor, every candidate is held to the units all competitors share.
    """
    valid = np.isfinite(values)
    union = valid[contest].any(axis=0)
    if not union.all():
        values = np.where(union[None, :], values, np.nan)
        valid = valid & union[None, :]
    means = _weighted_mean(weights, values)
    measured = valid.any(axis=1)
    complete = valid[:, union].all(axis=1)
    partial = measured & ~complete
    if not partial[contest].any():
        return means
    reference = np.zeros(len(values), dtype=bool)
    reference[contest] = complete[contest]
    if not reference.any():
        shared = valid[contest].all(axis=0)
        return _weighted_mean(weights, np.where(shared[None, :], values, np.nan))
    on_union = means[:, reference].mean(axis=1)
    patterns, which = np.unique(valid[partial], axis=0, return_inverse=True)
    rows = np.flatnonzero(partial)
    for k, pattern in enumerate(patterns):
        on_pattern = _weighted_mean(weights, np.where(pattern[None, :], values[reference], np.nan))
        shift = on_union - on_pattern.mean(axis=1)
        members = rows[np.ravel(which) == k]
        means[:, members] += shift[:, None]
    return means


def point_means(evidence: Evidence) -> dict[str, np.ndarray]:
    """Metric means ``[candidates]`` over all units, each counted once."""
    ones = np.ones((1, len(evidence.units)))
    return {m: v[0] for m, v in metric_means(evidence, ones).items()}


def bootstrap_scores(
    evidence: Evidence, norm: Normalisation, weights: Weights, n_boot: int, seed: int
) -> np.ndarray:
    """``[n_boot, candidates]`` composite scores, one row per resampled set of units."""
    rng = np.random.default_rng(seed)
    counts = unit_counts(evidence.strata, n_boot, rng)
    return composite(metric_means(evidence, counts), norm, weights)


@dataclass(frozen=True)
class BootstrapSummary:
    """Per candidate (in the order of the score columns given)."""

    p_best: np.ndarray
    score_lo: np.ndarray
    score_hi: np.ndarray
    win_vs_best: np.ndarray
    tied: np.ndarray


def p_best(scores: np.ndarray) -> np.ndarray:
    """Share of rounds (rows) in which each column has the top score; shared tops split evenly."""
    top = scores.max(axis=1, keepdims=True)
    at_top = scores >= top - SCORE_TOL
    return (at_top / at_top.sum(axis=1, keepdims=True)).mean(axis=0)


def win_probability(scores: np.ndarray, champion: int) -> np.ndarray:
    """Share of rounds in which column ``champion`` scores above each column (ties count 1/2)."""
    diff = scores[:, [champion]] - scores
    return ((diff > SCORE_TOL) + 0.5 * (np.abs(diff) <= SCORE_TOL)).mean(axis=0)


def interval(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval (central ``INTERVAL``) of each column of ``scores``."""
    tail = (1.0 - INTERVAL) / 2.0
    lo, hi = np.quantile(scores, [tail, 1.0 - tail], axis=0)
    return lo, hi


def best_set(scores: np.ndarray, point: np.ndarray, level: float = TIE_LEVEL) -> np.ndarray:
    """Which columns are in the ``level`` confidence set for the best (see the module docstring).

    ``scores``: ``[rounds, candidates]`` bootstrap scores; ``point``: ``[candidates]`` the point
    estimates the rounds resample. A difference that does not vary over the rounds (the same
    renders, or a candidate against itself) is compared exactly.
    """
    scores = np.asarray(scores, dtype=float)
    point = np.asarray(point, dtype=float)
    keep = np.zeros(point.size, dtype=bool)
    for i in range(point.size):
        diff = scores - scores[:, [i]]
        lead = point - point[i]
        se = diff.std(axis=0)
        noisy = se > SCORE_TOL
        if (lead[~noisy] > SCORE_TOL).any():
            continue  # beaten on every round by the same margin
        if not noisy.any():
            keep[i] = True
            continue
        t = (diff[:, noisy] - lead[noisy]) / se[noisy]
        critical = np.quantile(t.max(axis=1), level)
        keep[i] = bool((lead[noisy] <= critical * se[noisy]).all())
    return keep


def summarise(scores: np.ndarray, point: np.ndarray, best: int) -> BootstrapSummary:
    """P(best), intervals and ties of the columns of ``scores`` (bootstrap rounds of the point
    estimates ``point``); ``best`` is the top-ranked column."""
    lo, hi = interval(scores)
    win = win_probability(scores, best)
    tied = best_set(scores, point)
    tied[best] = bool(tied.sum() - tied[best] > 0)  # flagged only if it has company
    return BootstrapSummary(p_best=p_best(scores), score_lo=lo, score_hi=hi, win_vs_best=win, tied=tied)
