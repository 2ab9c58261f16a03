"""Where the truth is known: the regret estimates checked, and the regret split into seeds and scoring.

A selector's true regret needs each candidate's quality on infinitely many seeds; the benchmark
renders 14 per prompt, so it reports bounds (:func:`benchmarks.selection_splits.draw_regrets`).
This module builds, from each run, a world in which the truth is known: the run's rendered seeds
are the whole population, a candidate's true quality is the oracle's mean over all of them, and
the selectors' and the grading's seeds are drawn from them with replacement (a bootstrap world:
each seed index carries its renders of every candidate, so draws stay paired). In it:

- :func:`known_truth`: each selector's true regret beside what the benchmark's estimates read
  (the regret against the best as graded, the lower bound, the bias-corrected regret), so that
  their errors are measured rather than argued;
- :func:`seeds_or_scoring`: lorasel's true regret as the seeds per prompt grow, up to choosing
  on the population's own means: what is left there is what lorasel's scoring costs against the
  oracle's, which no number of seeds removes; the reference (the oracle's own choice from the
  same seeds) shows what the seeds alone cost.

The world's candidates differ by their 14-seed means, which spread a little more than the true
means do (they hold the oracle's own sampling noise), so its regrets are those of a world
slightly easier to rank than the real one, and the population's truth is the oracle's, measured
on 14 seeds. Renders nothing.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from benchmarks.selection_splits import (
    CURVE_GRADE,
    SeedCube,
    _regret,
    bias_corrected_best,
    draw_choices,
    grade_choices,
)

#: Draws per run.
TRUTH_DRAWS = 100
#: Seeds per prompt the selectors see in :func:`seeds_or_scoring`.
SEED_COUNTS = (4, 8, 16, 64)
#: Seeds per prompt of the grading in :func:`known_truth`, as the benchmark's.
GRADE_SEEDS = 10


def _rng(seed: int, cube: SeedCube, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(cube.name.encode()), stream])


def known_truth(
    cubes: list[SeedCube],
    weights: dict,
    *,
    select: int,
    grade: int = GRADE_SEEDS,
    draws: int = TRUTH_DRAWS,
    seed: int = 0,
    lower: bool = True,
) -> pd.DataFrame:
    """``[runs, columns]``: per selector, its true regret (``"true:" + name``) and the benchmark's
    three estimates of it (``name``, ``"lower:" + name`` unless not ``lower``, ``"corrected:" +
    name``), each averaged
    over ``draws`` draws of ``select`` seeds for the selectors and ``grade`` for the grading,
    both with replacement from the run's seed indices."""
    rows = []
    for cube in cubes:
        rng, boot = _rng(seed, cube, 0), _rng(seed, cube, 1)
        truth = cube.oracle_quality(cube.seed_indices)
        per_draw = []
        for _ in range(draws):
            chosen = rng.choice(cube.seed_indices, select, replace=True)
            graded = rng.choice(cube.seed_indices, grade, replace=True)
            choices = draw_choices(cube, chosen, weights)  # lorasel's scoring, once a draw
            row = grade_choices(cube, choices, graded, lower=lower, corrected=True, rng=boot)
            row.update({f"true:{name}": _regret(truth, i) for name, i in choices.items()})
            per_draw.append(row)
        rows.append(pd.DataFrame(per_draw).mean())
    return pd.DataFrame(rows)


def seeds_or_scoring(
    cubes: list[SeedCube], weights: dict, *, counts=SEED_COUNTS, draws: int = TRUTH_DRAWS, seed: int = 0
) -> pd.DataFrame:
    """Mean true regret over the runs, a row per seeds per prompt (``counts``, then ``"all"``: the
    population's own means) and a column per selector (lorasel under each of ``weights``, and
    the reference ``"oracle_seen"``, which is 0 on ``"all"`` by definition)."""
    table = {}
    for k in counts:
        per_run = []
        for cube in cubes:
            rng = _rng(seed, cube, 2 + k)
            truth = cube.oracle_quality(cube.seed_indices)
            regrets = [
                {
                    name: _regret(truth, i)
                    for name, i in draw_choices(
                        cube, rng.choice(cube.seed_indices, k, replace=True), weights
                    ).items()
                }
                for _ in range(draws)
            ]
            per_run.append(pd.DataFrame(regrets).mean())
        table[k] = pd.DataFrame(per_run).mean()
    per_run = []
    for cube in cubes:
        truth = cube.oracle_quality(cube.seed_indices)
        choices = draw_choices(cube, cube.seed_indices, weights)
        per_run.append(pd.Series({name: _regret(truth, i) for name, i in choices.items()}))
    table["all"] = pd.DataFrame(per_run).mean()
    names = [*weights, "oracle_seen"]
    return pd.DataFrame(table).T[names]


def truth_lines(cubes: list[SeedCube], draws: int = TRUTH_DRAWS) -> list[str]:
    """The report's paragraphs: the estimates against the truth, and seeds or scoring."""
    from benchmarks.selection_analysis import mean_interval
    from benchmarks.selection_settings import SELECT_SEEDS
    from lorasel.rank.weights import DEFAULT_WEIGHTS

    if not cubes:
        return []
    n = len(cubes[0].seed_indices)
    default = {"lorasel": DEFAULT_WEIGHTS}
    known = known_truth(cubes, default, select=SELECT_SEEDS, draws=draws)
    lines = [
        "",
        f"**Where the truth is known.** Each run's {n} rendered seeds per prompt taken as the whole "
        "population (a candidate's true quality: the oracle's mean over all of them), the selectors' "
        f"{SELECT_SEEDS} and the grading's {GRADE_SEEDS} seeds per prompt drawn from them with "
        f"replacement, {draws} draws per run (`benchmarks/selection_truth.py`). The mean over the "
        f"{len(cubes)} runs of each selector's true regret, and of the three estimates above:",
        "",
        "| selector | true regret | measured (against the best as graded) | lower bound | bias-corrected |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, label in (("lorasel", "lorasel pick"), ("oracle_seen", "reference")):
        cells = [known[f"{prefix}{name}"].mean() for prefix in ("true:", "", "lower:", "corrected:")]
        lines.append(f"| {label} | " + " | ".join(f"{100 * v:.1f}%" for v in cells) + " |")
    error = known["corrected:lorasel"] - known["true:lorasel"]
    lo, hi = mean_interval(error)
    few = known_truth(cubes, default, select=SELECT_SEEDS, grade=CURVE_GRADE, draws=draws, lower=False)
    few_error = few["corrected:lorasel"] - few["true:lorasel"]
    flo, fhi = mean_interval(few_error)
    lines += [
        "",
        f"The bias-corrected estimate of lorasel's regret is off by {100 * error.mean():+.1f} points "
        f"(95% interval over the runs {100 * lo:+.1f} to {100 * hi:+.1f}); the measured regret by "
        f"{100 * (known['lorasel'] - known['true:lorasel']).mean():+.1f} and the lower bound by "
        f"{100 * (known['lower:lorasel'] - known['true:lorasel']).mean():+.1f}. Graded on {CURVE_GRADE} "
        f"seeds per prompt (as the seed curve and `--refine` below are) the bias-corrected estimate is "
        f"off by {100 * few_error.mean():+.1f} points ({100 * flo:+.1f} to {100 * fhi:+.1f}), the measured "
        f"regret by {100 * (few['lorasel'] - few['true:lorasel']).mean():+.1f}.",
    ]
    split = seeds_or_scoring(cubes, default, draws=draws)
    lines += [
        "",
        "**Seeds or scoring.** In the same world, the true regret as the selectors see more seeds per "
        "prompt, up to the population's own means: what lorasel has left there is what its CLIP "
        "scoring costs against the oracle's judgement, which no number of seeds removes; the "
        "reference (the oracle's own choice from the same seeds) shows what the seeds alone cost:",
        "",
        "| seeds per prompt | lorasel's true regret | the reference's |",
        "|---:|---:|---:|",
    ]
    for k, row in split.iterrows():
        label = f"all {n} (the population's means)" if k == "all" else str(k)
        lines.append(f"| {label} | {100 * row['lorasel']:.1f}% | {100 * row['oracle_seen']:.1f}% |")
    floor = scoring_floor(cubes, DEFAULT_WEIGHTS)
    lo, hi = mean_interval(floor)
    lines += [
        "",
        f"Back in the real world: lorasel's choice from all {n} seeds of a run, against the oracle's "
        f"best on them with the best's luck taken out (the bias correction above), {100 * floor.mean():.1f}% "
        f"(95% interval over the runs {100 * lo:.1f} to {100 * hi:.1f}%): an estimate of what the scoring "
        "alone costs against a truth of infinitely many seeds, on the low side (the choice is graded "
        "on the renders it was made from, whose CLIP scores and oracle judgements share their luck).",
    ]
    return lines


def scoring_floor(cubes: list[SeedCube], weights, seed: int = 0) -> pd.Series:
    """Per run: the bias-corrected regret (:func:`~benchmarks.selection_splits.bias_corrected_best`)
    of lorasel's choice under ``weights`` made from all the run's seeds, graded on them too."""
    values = []
    for cube in cubes:
        everything = cube.seed_indices
        quality = cube.oracle_quality(everything)
        choice = draw_choices(cube, everything, {"lorasel": weights})["lorasel"]
        best = bias_corrected_best(cube, everything, _rng(seed, cube, 1))
        spread = np.nanmax(quality) - np.nanmin(quality)
        values.append(float((best - quality[choice]) / spread) if spread > 0 else 0.0)
    return pd.Series(values)
