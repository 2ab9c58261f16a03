"""``lorasel eval --refine`` simulated from the selection benchmark's cached runs.

A run has every seed rendered for every candidate, so an evaluation that saw a few seeds for
all and more for some can be replayed from it: :func:`refined_choice` replays the evaluator's
rounds (``rank``'s 95% set for the best on the first seeds, those candidates on the extra seeds
too, again until the set holds no candidate without them) with lorasel's own evidence, paired
means, bootstrap and composite, and :func:`refine_table` grades it against the same seeds for
every candidate, over draws of seeds (:mod:`benchmarks.selection_splits`). Renders nothing.
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
    corrected_regret,
    draw_choices,
)

#: Draws of seeds per run, and the bootstrap of each round (``rank``'s).
REFINE_DRAWS = 60
REFINE_BOOT = 1000


def _restricted(evidence, units: np.ndarray, hidden: np.ndarray | None = None):
    """``evidence`` on the units ``units`` (a mask) only; with ``hidden`` (``[candidates,
    units]``), those measurements too are removed, as if never rendered."""
    from dataclasses import replace

    per_unit = {}
    for m, values in evidence.per_unit.items():
        values = values if hidden is None else np.where(hidden, np.nan, values)
        per_unit[m] = values[:, units]
    return replace(
        evidence,
        units=evidence.units.loc[units].reset_index(drop=True),
        unit_prompt=evidence.unit_prompt[units],
        per_unit=per_unit,
    )


def refined_choice(cube: SeedCube, first: np.ndarray, extra: np.ndarray, weights) -> tuple[int, np.ndarray]:
    """What ``lorasel eval --seeds len(first) --refine len(extra)`` then ``lorasel rank`` pick
    (position in ``contest``), and which candidates were refined: ranked on the seed indices
    ``first``, the 95% set for the best (``rank``'s bootstrap, as the evaluator takes it) seen
    again on ``extra``, everything ranked again with the paired means, and again until the set
    holds no candidate without the extra seeds (the evaluator's rounds)."""
    from lorasel.rank.bootstrap import bootstrap_scores, point_means, summarise
    from lorasel.rank.score import composite, fit_normalisation
    from lorasel.results import METRICS

    contest = cube.contest
    seen, both = np.isin(cube.unit_seed, first), np.isin(cube.unit_seed, np.r_[first, extra])
    on_extra = np.isin(cube.unit_seed, extra)
    refined = np.zeros(len(contest), dtype=bool)
    while True:
        if refined.any():  # the base and the refined candidates on the extra seeds too
            hidden = np.zeros((len(cube.evidence.candidates), len(cube.unit_seed)), dtype=bool)
            hidden[np.ix_(contest[~refined], on_extra)] = True
            evidence = _restricted(cube.evidence, both, hidden)
        else:
            evidence = _restricted(cube.evidence, seen)
        point = point_means(evidence)
        norm = fit_normalisation({m: point[m][contest] for m in METRICS})
        score = composite(point, norm, weights)
        best = int(np.argmax(score[contest]))
        boot = bootstrap_scores(evidence, norm, weights, REFINE_BOOT, 0)
        in_set = summarise(boot[:, contest], score[contest], best).tied
        in_set[best] = True
        if not (in_set & ~refined).any():
            return best, refined
        refined |= in_set


def refine_table(cubes: list[SeedCube], *, first: int, extra: int, grade: int, draws: int, seed: int = 0):
    """Per run, averaged over ``draws`` draws of ``grade`` grading seed indices, ``first`` seen
    by every candidate and ``extra`` more: lorasel's regret at ``first`` seeds, refined with
    ``extra`` more for its 95% set, and at ``first + extra`` seeds for every candidate (all
    graded on the same seeds in a draw), each also bias-corrected (``"corrected:" + key``,
    :func:`~benchmarks.selection_splits.bias_corrected_best`); the share of candidates refined,
    and whether the set held the best as graded."""
    from lorasel.rank.weights import DEFAULT_WEIGHTS

    weights = {"lorasel": DEFAULT_WEIGHTS}
    rows = []
    for cube in cubes:
        rng = np.random.default_rng([seed, zlib.crc32(cube.name.encode())])
        boot = np.random.default_rng([seed, zlib.crc32(cube.name.encode()), 1])
        if first + extra + grade > len(cube.seed_indices):
            raise ValueError(f"{first} + {extra} + {grade} seeds need more than {len(cube.seed_indices)}")
        per_draw = []
        for _ in range(draws):
            order = rng.permutation(cube.seed_indices)
            graded_on, seen, more = (
                order[:grade],
                order[grade : grade + first],
                order[grade + first : grade + first + extra],
            )
            quality = cube.oracle_quality(graded_on)
            best = bias_corrected_best(cube, graded_on, boot)
            choice, refined = refined_choice(cube, seen, more, DEFAULT_WEIGHTS)
            choices = {
                "plain": draw_choices(cube, seen, weights)["lorasel"],
                "refined": choice,
                "every": draw_choices(cube, np.r_[seen, more], weights)["lorasel"],
            }
            per_draw.append(
                {
                    **{key: _regret(quality, i) for key, i in choices.items()},
                    **{f"corrected:{key}": corrected_regret(best, quality, i) for key, i in choices.items()},
                    "share": refined.mean(),
                    "held_best": bool(refined[int(np.nanargmax(quality))]),
                    "candidates": float(len(refined)),
                }
            )
        rows.append(pd.DataFrame(per_draw).mean())
    return pd.DataFrame(rows)


def refine_lines(cubes: list[SeedCube], draws: int = REFINE_DRAWS) -> list[str]:
    """``lorasel eval --refine``: the regret of 4 seeds refined with 4 more for the 95% set,
    against 4 and 8 seeds for every candidate, and what it renders."""
    from benchmarks.selection_analysis import mean_interval
    from benchmarks.selection_settings import SELECT_SEEDS

    n = len(cubes[0].seed_indices)
    first = extra = SELECT_SEEDS
    if first + extra + CURVE_GRADE > n:
        return []
    table = refine_table(cubes, first=first, extra=extra, grade=CURVE_GRADE, draws=draws)
    # Renders per prompt and seed: the base and every candidate on the first seeds; the base and
    # the refined candidates on the extra ones.
    c = table["candidates"]
    cost = ((c + 1) * first + (table["share"] * c + 1) * extra) / ((c + 1) * (first + extra))
    d = table["refined"] - table["every"]
    dlo, dhi = mean_interval(d)
    lines = [
        "",
        f"**`lorasel eval --refine`**, averaged the same way ({draws} draws per run, graded on {CURVE_GRADE} "
        f"seed indices, the same for every row of a draw): {first} seeds for every candidate, then {extra} more "
        "for the candidates in the 95% set for the best only, ranked again with the paired means "
        "(`lorasel.rank.bootstrap.paired_means`; `benchmarks/selection_refine.py`):",
        "",
        "| evaluation | renders, against the last row | lorasel's mean regret | 95% interval | bias-corrected (95% interval) |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, label, share in (
        ("plain", f"{first} seeds", first / (first + extra)),
        ("refined", f"{first} seeds, --refine {extra}", cost.mean()),
        ("every", f"{first + extra} seeds", 1.0),
    ):
        lo, hi = mean_interval(table[key])
        corrected = table[f"corrected:{key}"]
        clo, chi = mean_interval(corrected)
        lines.append(
            f"| {label} | {100 * share:.0f}% | {100 * table[key].mean():.1f}% | {100 * lo:.1f}–{100 * hi:.1f}% | "
            f"{100 * corrected.mean():.1f}% ({100 * clo:.1f} to {100 * chi:.1f}) |"
        )
    lines += [
        "",
        f"The refinement took {100 * table['share'].mean():.0f}% of the candidates on average (over its rounds) "
        f"and the best as graded among them in {100 * table['held_best'].mean():.0f}% of draws. Refined minus {first + extra} seeds for every "
        f"candidate: {100 * d.mean():+.1f} points (95% interval {100 * dlo:+.1f} to {100 * dhi:+.1f}).",
    ]
    return lines
