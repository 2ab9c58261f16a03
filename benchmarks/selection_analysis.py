"""Analyses of the selection benchmark's runs (``bench_selection.one_run`` outputs): the weight
sweep and its leave-one-concept-out check, the learnability table, the figure, and how precisely
a mean over so few runs is known.

Each takes the list of runs and re-ranks or re-reads what they cached; none renders.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.selection_settings import LABELS


def mean_interval(values, rounds: int = 10_000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (the runs resampled with
    replacement): how far the mean over this handful of runs could be from the mean over many."""
    return _bootstrap_interval(values, np.mean, rounds, level, seed)


def median_interval(values, rounds: int = 10_000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the median of ``values`` (a benchmark's reps resampled)."""
    return _bootstrap_interval(values, np.median, rounds, level, seed)


def _bootstrap_interval(values, statistic, rounds: int, level: float, seed: int) -> tuple[float, float]:
    x = np.asarray(values, dtype=np.float64)
    draws = np.random.default_rng(seed).integers(0, len(x), size=(rounds, len(x)))
    stats = statistic(x[draws], axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(stats, tail)), float(np.quantile(stats, 1 - tail))


def oracle_sums(renders: pd.DataFrame, attributes: pd.DataFrame, candidates=None):
    """The oracle's per-render values (the mean of the attributes each render was judged on)
    summed and counted by candidate, prompt kind and seed index: ``(candidates, seed_indices,
    sums, counts)``, the arrays ``[candidates, kinds, seeds]``. A kind's mean over any multiset
    of seeds is then ``sums @ w / counts @ w``, as
    :func:`lorasel.toyworld.verdict.candidate_quality` averages it over the kind's renders.
    ``candidates``: the (checkpoint, strength) pairs in the order wanted (default: sorted)."""
    values = attributes.loc[renders.index].mean(axis=1, skipna=True)
    frame = renders[["checkpoint", "strength", "kind", "seed_index"]].assign(oracle=values)
    frame = frame[frame["oracle"].notna()]
    if candidates is None:
        candidates = pd.MultiIndex.from_frame(frame[["checkpoint", "strength"]]).unique().sort_values()
    seed_indices = np.sort(renders["seed_index"].unique())
    kinds = sorted(frame["kind"].unique())
    grouped = frame.groupby(["checkpoint", "strength", "kind", "seed_index"])["oracle"].agg(["sum", "count"])
    index = pd.MultiIndex.from_tuples([(*c, k, s) for c in candidates for k in kinds for s in seed_indices])
    grouped = grouped.reindex(index, fill_value=0)
    shape = (len(candidates), len(kinds), len(seed_indices))
    sums = grouped["sum"].to_numpy(dtype=float).reshape(shape)
    counts = grouped["count"].to_numpy(dtype=float).reshape(shape)
    return candidates, seed_indices, sums, counts


def regraded(renders: pd.DataFrame, attributes: pd.DataFrame, rounds: int = 2000, seed: int = 0):
    """Every candidate's regret on the grading seeds as graded (row 0) and on ``rounds`` redraws
    of those seeds with replacement (rows 1..), drawn jointly for every candidate, as a render's
    seed is shared by all of them. Returns the candidates (an index of (checkpoint, strength))
    and the regrets ``[1 + rounds, candidates]``. ``renders``: the graded renders of the
    competing candidates; ``attributes``: their oracle attributes
    (:func:`lorasel.toyworld.verdict.render_attributes`). Each draw grades as
    :func:`lorasel.toyworld.verdict.candidate_quality` does: the mean over prompt kinds of the
    mean over the kind's renders."""
    candidates, _, sums, counts = oracle_sums(renders, attributes)
    n = sums.shape[2]
    draws = np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n), size=rounds)
    times = np.vstack([np.ones((1, n)), draws])  # [1 + rounds, seeds]; row 0: the seeds as graded
    total = np.einsum("cks,rs->rck", sums, times)
    judged = np.einsum("cks,rs->rck", counts, times)
    with np.errstate(invalid="ignore", divide="ignore"):
        quality = np.nanmean(total / judged, axis=2)  # [1 + rounds, candidates]; NaN: a kind absent
    best, worst = quality.max(axis=1, keepdims=True), quality.min(axis=1, keepdims=True)
    spread = np.where(best > worst, best - worst, np.nan)
    return candidates, np.nan_to_num((best - quality) / spread, nan=0.0)


def grading_noise(
    renders: pd.DataFrame,
    attributes: pd.DataFrame,
    checkpoint: str,
    strength: float,
    rounds: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """How much of one choice's regret is the grading's luck: the regret of (``checkpoint``,
    ``strength``) on the grading seeds, and its standard deviation over redraws of those seeds
    (:func:`regraded`)."""
    candidates, regret = regraded(renders, attributes, rounds, seed)
    mine = regret[:, candidates.get_loc((checkpoint, strength))]
    return float(mine[0]), float(mine[1:].std())


def grading_floor(
    renders: pd.DataFrame, attributes: pd.DataFrame, rounds: int = 2000, seed: int = 0
) -> float:
    """The regret this grading gives its own best: the mean regret, over redraws of the grading
    seeds (:func:`regraded`), of the candidate that is best as graded (the mean over those tied
    for best). The best on a few seeds is partly the luckiest, so even a selector that always
    found the true best would read about this much regret on average."""
    _, regret = regraded(renders, attributes, rounds, seed)
    best = regret[0] <= 1e-12
    return float(regret[1:, best].mean())


def weights_label(weights) -> str:
    """``"(1, 0, 1, 0, 0)"``: a :class:`~lorasel.rank.Weights` as the sweep's tables show it."""
    return "(" + ", ".join(f"{v:g}" for v in weights.as_dict().values()) + ")"


def pick_verdict(run: dict, weights, n_boot: int = 200):
    """The oracle's verdict (graded as ``run["outcome"]``) on lorasel's pick from ``run``'s
    results ranked with ``weights``: the pick is the point estimate's best, so a few bootstrap
    rounds suffice."""
    from lorasel.demo import judge_selection
    from lorasel.rank import rank, read_loss

    o = run["outcome"]
    ranking = rank(run["results"], weights=weights, loss=read_loss(o.run_dir), n_boot=n_boot)
    return judge_selection(o.run_dir, run["results"], ranking, oracle=o.oracle).verdicts["lorasel"]


def sweep_grid() -> dict:
    """The weight sweep's weights by label (the default's value is None: ranked as run)."""
    from lorasel.rank import Weights
    from lorasel.rank.weights import DEFAULT_WEIGHTS

    grid: dict[str, Weights | None] = {f"default {weights_label(DEFAULT_WEIGHTS)}": None}
    # Fidelity, flexibility, adherence: each alone, the pairs, the balance and each one doubled;
    # without and with each secondary term (diversity, preservation).
    for fid, flex, adh in (
        (1, 0, 0),
        (1, 1, 0),
        (1, 0, 1),
        (0, 1, 1),
        (1, 1, 1),
        (2, 1, 1),
        (1, 2, 1),
        (1, 1, 2),
    ):
        for div, pres in ((0.0, 0.0), (0.25, 0.0), (0.0, 0.25), (0.25, 0.25)):
            weights = Weights(fidelity=fid, flexibility=flex, adherence=adh, diversity=div, preservation=pres)
            if weights != DEFAULT_WEIGHTS:
                grid[weights_label(weights)] = weights
    equal = Weights(fidelity=1, flexibility=1, adherence=1, diversity=1, preservation=1)
    grid[f"all equal {weights_label(equal)}"] = equal
    return grid


def weight_sweep(runs: list[dict]) -> pd.DataFrame:
    """Mean regret of lorasel's pick under other weights (justifies the default)."""
    grid = sweep_grid()
    rows = []
    for label, weights in grid.items():
        regrets = [pick_verdict(r, weights).regret for r in runs]
        rows.append(
            {
                "weights": label,
                "mean_regret": float(np.mean(regrets)),
                "max_regret": float(np.max(regrets)),
                "regrets": regrets,
            }
        )
    return pd.DataFrame(rows)


def held_out_weights(runs: list[dict], sweep: pd.DataFrame) -> tuple[float, list[str]]:
    """Leave one concept out: pick the sweep's weights with the lowest mean regret on the other
    concepts, measure them on the held-out one. Returns the mean regret over all runs so measured
    and the weights each concept's fold chose (how much tuning the weights on the toy world is
    worth, without grading the choice on the runs it was made on)."""
    concepts = [r["concept"] for r in runs]
    regrets = np.array(sweep["regrets"].tolist())  # [weights, runs]
    held, chosen = np.zeros(len(runs)), []
    for concept in dict.fromkeys(concepts):
        test = np.array([c == concept for c in concepts])
        best = int(regrets[:, ~test].mean(axis=1).argmin())
        held[test] = regrets[best, test]
        chosen.append(f"{concept}: {sweep['weights'].iloc[best]}")
    return float(held.mean()), chosen


def learnability(runs: list[dict]) -> pd.DataFrame:
    """Per epoch at strength 1.0, over runs: in-domain renders showing the concept's shape,
    out-of-domain renders showing the background they ask for, and the training loss."""
    from lorasel.results import BASE
    from lorasel.toyworld.verdict import attribute_rates

    frames = []
    for r in runs:
        o = r["outcome"]
        renders = o.results.renders
        renders = renders[(renders["checkpoint"] == BASE) | (renders["strength"] == 1.0)]
        rates = attribute_rates(renders, o.attributes)
        epochs = o.oracle[["checkpoint", "epoch", "loss"]].drop_duplicates("checkpoint")
        base = pd.DataFrame({"checkpoint": [BASE], "epoch": [0], "loss": [float("nan")]})
        rates = rates.merge(pd.concat([base, epochs]), on="checkpoint")
        concept = rates[rates["kind"] == "in_domain"].set_index("epoch")["shape"].rename("concept")
        ood_bg = (
            rates[rates["kind"] == "out_of_domain"].set_index("epoch")["background"].rename("ood_background")
        )
        loss = rates.drop_duplicates("epoch").set_index("epoch")["loss"]
        frames.append(pd.concat([concept, ood_bg, loss], axis=1))
    return pd.concat(frames).groupby(level=0).mean()


def figure(runs: list[dict], out_dir: Path) -> str:
    """Oracle quality and lorasel score per epoch at strength 1.0, with the training loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = runs[0]
    o = r["outcome"]
    table = o.ranking.table
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
    for strength in sorted(o.oracle["strength"].unique()):
        rows = o.oracle[o.oracle["strength"] == strength].sort_values("epoch")
        axes[0].plot(
            rows["epoch"], rows["oracle_quality"], marker="o", label=f"oracle, strength {strength:g}"
        )
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("oracle quality")
    axes[0].legend(fontsize=8)
    axes[0].set_title(f"{r['concept']}, seed {r['seed']}: ground truth")
    at_one = table[(table["strength"] == 1.0) & (table["checkpoint"] != "base")].sort_values("epoch")
    axes[1].plot(at_one["epoch"], at_one["loss"], marker="o", color="tab:red", label="training loss")
    if at_one["val_loss"].notna().any():
        axes[1].plot(
            at_one["epoch"], at_one["val_loss"], marker="s", color="tab:orange", label="validation loss"
        )
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("loss")
    axes[1].legend(fontsize=8)
    axes[1].set_title("what loss-based selection sees")
    for strength in sorted(o.oracle["strength"].unique()):
        rows = table[(table["strength"] == strength) & (table["checkpoint"] != "base")].sort_values("epoch")
        axes[2].plot(rows["epoch"], rows["score"], marker="o", label=f"strength {strength:g}")
    axes[2].set_xlabel("epoch")
    axes[2].set_ylabel("lorasel score")
    axes[2].legend(fontsize=8)
    axes[2].set_title("what lorasel sees (CLIP scores)")
    fig.tight_layout()
    path = out_dir / "selection.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def target_verdict(
    by_run: pd.DataFrame, lower: float | pd.Series | None, corrected: pd.Series | None = None
) -> str:
    """The issue's target, lorasel's mean regret ≤ 5% and below every loss-based selector, judged
    on ``by_run`` (one row per run, a column per selector, as
    :func:`benchmarks.selection_report.regret_by_run`). Its regrets are measured against the best
    as graded, which overstates the true regret on average: they can show the target met, never
    missed. ``lower``: a lower bound of lorasel's true mean regret, if known: a number, or its
    value per run (then with an interval over the runs), which can show the target missed. A
    claim is shown only when its 95% interval over the runs (:func:`mean_interval`) agrees.
    ``corrected``: lorasel's bias-corrected regret per run, a point estimate between the two
    bounds (:func:`benchmarks.selection_splits.draw_regrets`): when the bounds decide nothing, it
    says where the estimate lies, as an estimate."""
    ours = by_run["lorasel"]
    rivals = [s for s in ("lowest_loss", "lowest_val_loss") if s in by_run.columns]
    if not all(by_run[s].mean() > ours.mean() for s in rivals):
        below = "below every loss-based selector: NOT met"
    else:
        unshown = [LABELS[s] for s in rivals if mean_interval(ours - by_run[s])[1] >= 0]
        below = "below every loss-based selector: met" + (
            f" on the means (not shown at 95% against {', '.join(unshown)})" if unshown else ", shown at 95%"
        )
    mean = float(ours.mean())
    low, high = mean_interval(ours)
    measured = f"{100 * mean:.1f}%, interval {100 * low:.1f}–{100 * high:.1f}%"
    floor = None if lower is None else float(np.mean(lower))
    floor_low = mean_interval(lower)[0] if isinstance(lower, pd.Series) else None
    if floor_low is not None and floor_low > 0.05:
        five = (
            f"≤ 5%: NOT met, shown at 95% (at least {100 * floor:.1f}%, interval from {100 * floor_low:.1f}%)"
        )
    elif floor is not None and floor > 0.05:
        five = f"≤ 5%: NOT met (at least {100 * floor:.1f}%)"
    elif high < 0.05:
        five = f"≤ 5%: met, shown at 95% ({measured})"
    elif mean <= 0.05:
        five = f"≤ 5%: met on the mean ({100 * mean:.1f}%), not shown at 95% (interval {100 * low:.1f}–{100 * high:.1f}%)"
    else:
        bound = f"; the true regret is at least {100 * floor:.1f}%" if floor is not None else ""
        five = (
            f"≤ 5%: not met as measured ({measured}), an upper bound of the true regret{bound}: "
            "not decided either way"
        )
        if corrected is not None:
            c_low, c_high = mean_interval(corrected)
            where = (
                "above 5%: estimated not met"
                if c_low > 0.05
                else "below 5%: estimated met"
                if c_high < 0.05
                else "across 5%: not decided by the estimate either"
            )
            five += (
                f"; the bias-corrected estimate, {100 * float(corrected.mean()):.1f}% "
                f"(interval {100 * c_low:.1f}–{100 * c_high:.1f}%), lies {where}"
            )
    return f"{below}; {five}"
