"""Selection regret averaged over which seeds the selectors saw.

The benchmark's table grades one draw of seeds: the selectors see seed indices 0-3 of every
prompt, the oracle grades on the next ten. A run's regret is one of a handful of discrete
outcomes, and which four seeds a selector happened to see moves it by tens of points: over a
dozen runs a scoring can read several points better than another on that one draw by luck
alone (tests 3-7 of reports/preregistered.md adopted or dropped weights on such differences).

Every run has all its seeds rendered for every candidate, and seeds are exchangeable: any
``select`` of them can be the selectors' and the rest the oracle's. This module averages each
selector's regret over many such draws, with lorasel's own scoring (:mod:`lorasel.rank`'s
evidence, means, normalisation and composite) and the oracle's grading
(:func:`lorasel.toyworld.verdict.candidate_quality`'s means) on every draw. The average
estimates the same quantity as the report's table, the expected regret at ``select`` seeds per
prompt graded on the rest, with the draw's luck averaged out; the runs' own variation remains,
and the intervals are over runs. Beside each regret (measured against the best as graded: an
upper bound of the true regret on average), a lower bound (:func:`draw_regrets`). Renders
nothing: it re-reads the runs' cached measurements.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: Draws of the selectors' seeds per run.
DRAWS = 200
#: The seed curve: seeds per prompt the selectors see, each graded on ``CURVE_GRADE`` others.
CURVE_SEEDS = (1, 2, 4, 6, 8)
CURVE_GRADE = 6
#: Bootstrap resamples of the grading seeds per draw for the bias-corrected regret.
BIAS_ROUNDS = 100


@dataclass(frozen=True)
class SeedCube:
    """One run's measurements arranged by seed index.

    ``evidence``: lorasel's :class:`~lorasel.rank.evidence.Evidence` of every render;
    ``unit_seed``: the seed index of each of its units; ``contest``: the competing candidates
    (rows of ``evidence.candidates``); ``oracle_sum``/``oracle_count``: ``[contest, kind, seed
    index]`` sums and counts of the per-render oracle value (the mean of its judged attributes);
    ``seed_indices``: the seed indices rendered; ``fixed``: the candidate (position in
    ``contest``) of each selector that does not look at renders (loss, epoch); ``name``: the
    run's (its draws of seeds depend on it alone, not on the other runs graded with it).
    """

    evidence: object
    unit_seed: np.ndarray
    contest: np.ndarray
    oracle_sum: np.ndarray
    oracle_count: np.ndarray
    seed_indices: np.ndarray
    fixed: dict[str, int]
    name: str = ""

    def multiplicity(self, seeds: np.ndarray) -> np.ndarray:
        """How often each of ``seed_indices`` occurs in ``seeds`` (a draw with replacement may
        repeat one)."""
        return np.bincount(np.searchsorted(self.seed_indices, seeds), minlength=len(self.seed_indices))

    def oracle_quality(self, seeds: np.ndarray) -> np.ndarray:
        """Per competing candidate, the oracle's quality on the renders of ``seeds`` (seed
        indices, a repeated one counted as often as it occurs): the mean over prompt kinds of
        the mean over the kind's renders."""
        # The seeds' columns summed in order, repeats repeated: equal candidates sum to equal
        # floats, so the oracle's ties break the same way on every call.
        cols = np.repeat(np.arange(len(self.seed_indices)), self.multiplicity(seeds))
        return _kind_mean(self.oracle_sum[:, :, cols].sum(axis=2), self.oracle_count[:, :, cols].sum(axis=2))

    def oracle_weighted(self, weights: np.ndarray) -> np.ndarray:
        """``[rounds, contest]``: the oracle's quality under seed weights ``[rounds, seeds]`` (the
        bootstrap's many rounds at once; float sums in another order than :meth:`oracle_quality`)."""
        return _kind_mean(
            np.einsum("cks,rs->rck", self.oracle_sum, weights),
            np.einsum("cks,rs->rck", self.oracle_count, weights),
        )

    def lorasel_scores(self, seeds: np.ndarray, weights_list) -> list[np.ndarray]:
        """Per weights, lorasel's composite score of each competing candidate ranked on the
        renders of ``seeds`` only (the point estimate :func:`lorasel.rank.rank` picks from)."""
        from lorasel.rank.bootstrap import metric_means
        from lorasel.rank.score import composite, fit_normalisation
        from lorasel.results import METRICS

        where = np.clip(np.searchsorted(self.seed_indices, self.unit_seed), 0, len(self.seed_indices) - 1)
        known = self.seed_indices[where] == self.unit_seed
        counts = np.where(known, self.multiplicity(seeds)[where], 0).astype(float)[None, :]
        means = {m: v[0] for m, v in metric_means(self.evidence, counts).items()}
        norm = fit_normalisation({m: means[m][self.contest] for m in METRICS})
        contest = {m: v[self.contest] for m, v in means.items()}
        return [composite(contest, norm, w) for w in weights_list]


def _kind_mean(total: np.ndarray, count: np.ndarray) -> np.ndarray:
    """The oracle's quality from sums and counts ``[..., kinds]``: the mean over the kinds (those
    with renders) of each kind's mean."""
    with np.errstate(invalid="ignore", divide="ignore"):
        per_kind = np.where(count > 0, total / np.where(count > 0, count, 1), np.nan)
    return np.nanmean(per_kind, axis=-1)


def seed_cube(run: dict) -> SeedCube:
    """The :class:`SeedCube` of a benchmark run (``bench_selection.one_run``'s output, graded
    on new seeds: its outcome holds every seed's renders and their oracle attributes)."""
    from benchmarks.selection_analysis import oracle_sums
    from lorasel.rank.evidence import gather_evidence
    from lorasel.results import BASE

    outcome = run["outcome"]
    full, attributes = outcome.results, outcome.attributes
    evidence = gather_evidence(full)
    contest = evidence.contest
    candidates = evidence.candidates.iloc[contest][["checkpoint", "strength"]]
    renders = full.renders[full.renders["checkpoint"].astype(str) != BASE]
    renders = renders.assign(checkpoint=renders["checkpoint"].astype(str))
    pairs = [(str(c), float(s)) for c, s in candidates.itertuples(index=False, name=None)]
    _, seed_indices, sums, counts = oracle_sums(renders, attributes, pairs)
    position = {pair: i for i, pair in enumerate(pairs)}
    fixed = {
        name: position[(str(v.checkpoint), float(v.strength))]
        for name, v in outcome.verdicts.items()
        if name in ("lowest_loss", "lowest_val_loss", "last_epoch", "middle_epoch")
    }
    return SeedCube(
        evidence=evidence,
        unit_seed=evidence.units["seed_index"].to_numpy(),
        contest=contest,
        oracle_sum=sums,
        oracle_count=counts,
        seed_indices=seed_indices,
        fixed=fixed,
        name=f"{run.get('concept', '')}-{run.get('seed', '')}",
    )


def _regret(quality: np.ndarray, i: int) -> float:
    best, worst = np.nanmax(quality), np.nanmin(quality)
    return float((best - quality[i]) / (best - worst)) if best > worst else 0.0


def draw_regrets(
    cube: SeedCube,
    select: np.ndarray,
    grade: np.ndarray,
    weights: dict,
    *,
    lower: bool = True,
    corrected: bool | None = None,
    rng: np.random.Generator | None = None,
) -> dict[str, float]:
    """Each selector's regret when it sees the renders of seed indices ``select`` and the oracle
    grades on ``grade``: lorasel under each of ``weights`` (label: Weights), the reference (the
    oracle's choice from ``select``) and the selectors that look at no render.

    The regret itself is an upper bound on average: the best as graded is partly the luckiest.
    With ``lower``, two more estimates of the true regret per selector (``corrected``, default
    ``lower``, says whether the second is wanted):

    - ``"lower:" + selector``, a lower bound on average: on each grading seed alone, the best
      candidate as graded on the other grading seeds judged against the choice (that seed is
      independent of both choices, so the gap is unbiased for their true difference, which is
      at most the true regret: that best is not always the true best); the mean over the
      grading seeds, over the same range;
    - ``"corrected:" + selector``, the regret with the best's luck taken out by the bootstrap:
      the graded maximum's bias is estimated as the mean maximum over ``BIAS_ROUNDS`` resamples
      of the grading seeds (drawn with ``rng``) less the graded maximum, and subtracted. A point
      estimate, not a bound (:mod:`benchmarks.selection_truth` checks it where the truth is
      known)."""
    choices = draw_choices(cube, select, weights)
    return grade_choices(cube, choices, grade, lower=lower, corrected=corrected, rng=rng)


def grade_choices(
    cube: SeedCube,
    choices: dict[str, int],
    grade: np.ndarray,
    *,
    lower: bool = True,
    corrected: bool | None = None,
    rng: np.random.Generator | None = None,
) -> dict[str, float]:
    """:func:`draw_regrets` for choices already made (:func:`draw_choices`)."""
    graded = cube.oracle_quality(grade)
    out = {name: _regret(graded, i) for name, i in choices.items()}
    spread = np.nanmax(graded) - np.nanmin(graded)
    if lower:
        gaps = {name: [] for name in choices}
        for j in grade:
            alone = cube.oracle_quality(np.array([j]))
            best = int(np.nanargmax(cube.oracle_quality(grade[grade != j])))
            for name, i in choices.items():
                gaps[name].append(alone[best] - alone[i])
        for name, values in gaps.items():
            out[f"lower:{name}"] = float(np.nanmean(values) / spread) if spread > 0 else 0.0
    if corrected is None:
        corrected = lower
    if corrected:
        best = bias_corrected_best(cube, grade, rng if rng is not None else np.random.default_rng(0))
        for name, i in choices.items():
            out[f"corrected:{name}"] = corrected_regret(best, graded, i)
    return out


def corrected_regret(best: float, graded: np.ndarray, i: int) -> float:
    """Candidate ``i``'s shortfall from the bias-corrected best (:func:`bias_corrected_best`) on
    the range of ``graded``."""
    spread = np.nanmax(graded) - np.nanmin(graded)
    return float((best - graded[i]) / spread) if spread > 0 else 0.0


def draw_choices(cube: SeedCube, select: np.ndarray, weights: dict) -> dict[str, int]:
    """Each selector's choice (a position in ``cube.contest``) from the renders of seed indices
    ``select``: lorasel under each of ``weights``, the reference (``"oracle_seen"``) and the
    selectors that look at no render."""
    choices = {}
    for label, score in zip(weights, cube.lorasel_scores(select, list(weights.values())), strict=True):
        choices[label] = int(np.argmax(score))  # the first of equals: the earliest
    choices["oracle_seen"] = int(np.nanargmax(cube.oracle_quality(select)))
    choices.update(cube.fixed)
    return choices


def bias_corrected_best(cube: SeedCube, grade: np.ndarray, rng: np.random.Generator) -> float:
    """The best candidate's quality on ``grade`` with its luck taken out: twice the graded
    maximum less the mean maximum over ``BIAS_ROUNDS`` bootstrap resamples of the grading seeds
    (Efron's bias correction of a maximum of means)."""
    positions = np.searchsorted(cube.seed_indices, grade)
    weights = np.zeros((BIAS_ROUNDS, len(cube.seed_indices)))
    picks = rng.integers(0, len(grade), size=(BIAS_ROUNDS, len(grade)))
    np.add.at(weights, (np.arange(BIAS_ROUNDS)[:, None], positions[picks]), 1.0)
    resampled = np.nanmax(cube.oracle_weighted(weights), axis=1)
    return float(2 * np.nanmax(cube.oracle_quality(grade)) - resampled.mean())


def averaged(
    cubes: list[SeedCube],
    weights: dict,
    *,
    select: int,
    grade: int | None = None,
    draws: int = DRAWS,
    seed: int = 0,
    lower: bool = False,
    corrected: bool | None = None,
) -> pd.DataFrame:
    """``[runs, selectors]``: each selector's regret averaged over ``draws`` random draws per run
    of ``select`` seed indices for the selectors and ``grade`` others (default: all the rest)
    for the oracle; with ``lower``, the lower bounds and the bias-corrected regrets too, with
    ``corrected`` the latter alone (:func:`draw_regrets`). A run's draws depend on ``seed`` and its name only, and are the same
    with or without ``lower``."""
    rows = []
    for cube in cubes:
        boot = np.random.default_rng([seed, zlib.crc32(cube.name.encode()), 1])
        per_draw = [
            draw_regrets(cube, chosen, rest, weights, lower=lower, corrected=corrected, rng=boot)
            for chosen, rest in seed_draws(cube, select=select, grade=grade, draws=draws, seed=seed)
        ]
        rows.append(pd.DataFrame(per_draw).mean())
    return pd.DataFrame(rows)


def seed_draws(cube: SeedCube, *, select: int, grade: int | None = None, draws: int = DRAWS, seed: int = 0):
    """The draws :func:`averaged` grades a run on: ``draws`` pairs (the selectors' ``select`` seed
    indices, the oracle's ``grade`` others, default all the rest), depending on ``seed`` and the
    run's name only."""
    rng = np.random.default_rng([seed, zlib.crc32(cube.name.encode())])
    n = len(cube.seed_indices)
    if select + (grade or 1) > n:
        raise ValueError(f"{select} seeds to select and {grade or 1} to grade need more than {n}")
    for _ in range(draws):
        order = rng.permutation(cube.seed_indices)
        if grade is None:
            yield order[:select], order[select:]
        else:  # the grading seeds first: the same ones for every ``select`` of one ``seed``
            yield order[grade : grade + select], order[:grade]


def split_lines(runs: list[dict], draws: int = DRAWS) -> list[str]:
    """The report's paragraphs: each selector's regret averaged over draws of the selectors'
    seeds (:func:`averaged_lines`), the estimates checked where the truth is known and the regret
    split into seeds and scoring (:mod:`benchmarks.selection_truth`), a second judge
    (:mod:`benchmarks.selection_judges`), the weight sweep so
    averaged, the seed curve, and ``lorasel eval --refine`` (:mod:`benchmarks.selection_refine`)."""
    from benchmarks import selection_judges, selection_refine, selection_truth
    from benchmarks.selection_analysis import sweep_grid
    from lorasel.models import load_scorer

    cubes = [seed_cube(r) for r in runs]
    table = averaged_lines(cubes, draws)
    if not table:
        return []
    scorer = load_scorer("toy")  # the toy world's: the runs' renders were scored with it
    return [
        *table,
        *selection_truth.truth_lines(cubes),
        *selection_judges.judge_lines(runs, cubes, scorer, draws),
        *_sweep_lines(cubes, draws, sweep_grid()),
        *_curve_lines(cubes, draws),
        *selection_refine.refine_lines(cubes),
    ]


def averaged_lines(cubes: list[SeedCube], draws: int = DRAWS) -> list[str]:
    """Each selector's mean regret on this report's draw of seeds and averaged over ``draws``
    draws, with intervals over the runs and lorasel's paired difference from each."""
    from benchmarks.selection_analysis import mean_interval, target_verdict
    from benchmarks.selection_settings import LABELS, SELECT_SEEDS, SELECTORS
    from lorasel.rank.weights import DEFAULT_WEIGHTS

    n = len(cubes[0].seed_indices)
    if n <= SELECT_SEEDS:
        return []
    default = {"lorasel": DEFAULT_WEIGHTS}
    official = pd.DataFrame(
        [
            draw_regrets(c, c.seed_indices[:SELECT_SEEDS], c.seed_indices[SELECT_SEEDS:], default)
            for c in cubes
        ]
    )
    mean = averaged(cubes, default, select=SELECT_SEEDS, draws=draws, lower=True)
    names = [s for s in SELECTORS if s in mean.columns]
    lines = [
        "",
        f"**Averaged over which seeds the selectors saw.** A run's regret depends on which {SELECT_SEEDS} "
        f"of its {n} rendered seeds per prompt the selectors happened to see. Seeds are exchangeable, so "
        f"each run is graded again on {draws} random draws of {SELECT_SEEDS} seed indices for the "
        f"selectors and the other {n - SELECT_SEEDS} for the oracle, with lorasel's own scoring on each "
        "draw. This estimates the same expected regret as one draw does, with the draw's luck "
        f"averaged out; the intervals are over the {len(cubes)} runs (`benchmarks/selection_splits.py`). "
        "A regret measured against the best as graded overstates the true regret on average (that best "
        "is partly the luckiest); the lower bound judges each choice, on one grading seed at a time, "
        "against the best on the other grading seeds, which understates it (that best is not always "
        "the true best). The true expected regret lies between the two. Between them, a point "
        "estimate: the regret with the best's luck taken out (the graded maximum's bias, estimated by "
        "resampling the grading seeds, subtracted; checked below where the truth is known):",
        "",
        f"| selector | seeds 0–{SELECT_SEEDS - 1} seen | averaged over draws | 95% interval | "
        "lower bound, averaged | bias-corrected, averaged | lorasel minus it, averaged (95% interval) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in names:
        lo, hi = mean_interval(mean[s])
        diff = ""
        if s != "lorasel":
            d = mean["lorasel"] - mean[s]
            dlo, dhi = mean_interval(d)
            diff = f"{100 * d.mean():+.1f} ({100 * dlo:+.1f} to {100 * dhi:+.1f})"
        lower, corrected = mean[f"lower:{s}"], mean[f"corrected:{s}"]
        llo, lhi = mean_interval(lower)
        clo, chi = mean_interval(corrected)
        lines.append(
            f"| {LABELS[s]} | {100 * official[s].mean():.1f}% | {100 * mean[s].mean():.1f}% | "
            f"{100 * lo:.1f}–{100 * hi:.1f}% | {100 * lower.mean():.1f}% ({100 * llo:.1f} to {100 * lhi:.1f}) | "
            f"{100 * corrected.mean():.1f}% ({100 * clo:.1f} to {100 * chi:.1f}) | {diff} |"
        )
    verdict = target_verdict(mean[names], mean["lower:lorasel"], mean["corrected:lorasel"])
    return [*lines, "", f"The target on these averages: **{verdict}**."]


def _sweep_lines(cubes: list[SeedCube], draws: int, grid: dict) -> list[str]:
    """The weight sweep averaged over draws (weights without diversity: it is measured over all
    of a prompt's seeds, the grading's among them)."""
    from benchmarks.selection_settings import SELECT_SEEDS
    from lorasel.rank.weights import DEFAULT_WEIGHTS

    weights = {
        label: (w or DEFAULT_WEIGHTS) for label, w in grid.items() if (w or DEFAULT_WEIGHTS).diversity == 0
    }
    mean = averaged(cubes, weights, select=SELECT_SEEDS, draws=draws)[list(weights)].mean()
    order = mean.sort_values(kind="stable")
    default = next(label for label in weights if label.startswith("default"))
    place = list(order.index).index(default) + 1
    best = ", ".join(f"{label} {100 * v:.1f}%" for label, v in order.head(4).items())
    return [
        "",
        f"The weight sweep so averaged ({len(weights)} weights without diversity): the default ranks "
        f"{place} of {len(weights)} at {100 * mean[default]:.1f}%; the lowest: {best}. Differences of a few "
        "points between weights on one draw of seeds (the sweep's table below) are mostly that draw's luck.",
    ]


def _curve_lines(cubes: list[SeedCube], draws: int) -> list[str]:
    """Mean regret against seeds per prompt, every row graded on the same number of others."""
    from lorasel.rank.weights import DEFAULT_WEIGHTS

    n = len(cubes[0].seed_indices)
    counts = [k for k in CURVE_SEEDS if k + CURVE_GRADE <= n]
    if len(counts) < 2:
        return []
    lines = [
        "",
        f"Seeds per prompt, averaged the same way: each row's selectors see k seed indices and the "
        f"oracle grades on {CURVE_GRADE} others, the same {CURVE_GRADE} for every k of a draw "
        f"({draws} draws per run; fewer grading seeds than above, so every regret here reads higher):",
        "",
        "| seeds per prompt | lorasel's mean regret | bias-corrected | the reference's | bias-corrected |",
        "|---:|---:|---:|---:|---:|",
    ]
    for k in counts:
        mean = averaged(
            cubes, {"lorasel": DEFAULT_WEIGHTS}, select=k, grade=CURVE_GRADE, draws=draws, corrected=True
        ).mean()
        cells = [mean[c] for c in ("lorasel", "corrected:lorasel", "oracle_seen", "corrected:oracle_seen")]
        lines.append(f"| {k} | " + " | ".join(f"{100 * v:.1f}%" for v in cells) + " |")
    return lines
