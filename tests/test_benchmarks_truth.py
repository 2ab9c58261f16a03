"""benchmarks.selection_truth: the regret estimates against a known truth, and seeds or scoring,
checked against lorasel's ranking and the oracle's grading run directly, and the bootstrap's bias
correction against a world whose true maximum is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lorasel.results import BASE
from tests.test_benchmarks_splits import _regret, _run


def _quality(run, seeds=None) -> pd.Series:
    from lorasel.toyworld.verdict import candidate_quality

    renders = run["outcome"].results.renders
    graded = renders[renders["checkpoint"] != BASE]
    if seeds is not None:
        graded = pd.concat([graded[graded["seed_index"] == s] for s in seeds])
    quality = candidate_quality(graded, attributes=run["outcome"].attributes)
    return quality.set_index(["checkpoint", "strength"])["oracle_quality"]


def test_a_repeated_seed_counts_as_often_as_it_is_drawn():
    from benchmarks.selection_splits import seed_cube

    run = _run(seeds=4)
    cube = seed_cube(run)
    got = cube.oracle_quality(np.array([1, 1, 3]))
    expected = _quality(run, [1, 1, 3])
    assert not np.allclose(got, cube.oracle_quality(np.array([1, 3])))
    assert np.allclose(got, expected.to_numpy())  # the cube's candidates are in sorted order here


def test_the_true_regret_is_the_choice_graded_on_every_seed():
    from benchmarks.selection_splits import seed_cube
    from benchmarks.selection_truth import known_truth, seeds_or_scoring
    from lorasel.rank import Weights, rank

    run = _run(seeds=6, seed=3)
    cube = seed_cube(run)
    weights = {"lorasel": Weights(fidelity=1, adherence=1)}
    truth = _quality(run)
    known = known_truth([cube], weights, select=2, grade=3, draws=5).iloc[0]
    # A selector that looks at no render: its true regret does not depend on the draw.
    assert known["true:last_epoch"] == pytest.approx(_regret(truth, "zkz-000004.safetensors", 1.0))
    assert known["true:lowest_loss"] == pytest.approx(_regret(truth, "zkz-000002.safetensors", 1.0))
    for name in ("lorasel", "oracle_seen"):
        assert {f"true:{name}", name, f"lower:{name}", f"corrected:{name}"} <= set(known.index)
    # Without the lower bound (its loop over the grading seeds is the cost), the same draws.
    quick = known_truth([cube], weights, select=2, grade=3, draws=5, lower=False).iloc[0]
    assert not any(k.startswith("lower:") for k in quick.index)
    assert quick.to_dict() == pytest.approx(
        known.drop([k for k in known.index if k.startswith("lower:")]).to_dict()
    )

    # On the population's own means: lorasel's choice is `rank` of the whole evaluation, and the
    # reference is the best by definition.
    split = seeds_or_scoring([cube], weights, counts=(2,), draws=5)
    best = rank(run["outcome"].results, weights=weights["lorasel"], n_boot=1).best
    assert split.loc["all", "lorasel"] == pytest.approx(_regret(truth, best.checkpoint, best.strength))
    assert split.loc["all", "oracle_seen"] == 0.0
    assert list(split.index) == [2, "all"]


@pytest.mark.parametrize(
    ("gap", "luck", "share"),
    [
        (0.02, 0.03, 0.4),  # leaders a third of a standard error apart: most of the luck goes
        (0.0, 0.08, 0.75),  # twenty exact ties, the worst case: a quarter of it still goes
    ],
)
def test_the_bias_correction_takes_out_the_best_as_graded_luck(gap, luck, share):
    """Twenty candidates with true qualities 0.5, 0.5 - gap, ... and per-seed noise 0.2: the best
    of their means on 10 seeds reads above the true best (0.5); corrected, it is closer, by at
    least ``1 - share`` of the difference (measured over 300 gradings)."""
    from benchmarks.selection_splits import SeedCube, bias_corrected_best

    rng = np.random.default_rng(0)
    candidates, seeds = 20, 400
    noise = rng.standard_normal((candidates, 1, seeds))
    noise -= noise.mean(axis=2, keepdims=True)  # the population's means are the true ones exactly
    values = (0.5 - gap * np.arange(candidates))[:, None, None] + 0.2 * noise
    cube = SeedCube(
        evidence=None,
        unit_seed=np.arange(seeds),
        contest=np.arange(candidates),
        oracle_sum=values,
        oracle_count=np.ones_like(values),
        seed_indices=np.arange(seeds),
        fixed={},
    )
    assert cube.oracle_quality(cube.seed_indices).max() == pytest.approx(0.5)
    plain, corrected = [], []
    for _ in range(300):
        grade = rng.choice(seeds, 10, replace=False)
        plain.append(cube.oracle_quality(grade).max() - 0.5)
        corrected.append(bias_corrected_best(cube, grade, rng) - 0.5)
    assert np.mean(plain) > luck  # the luck of the best (a standard error is 0.063)
    assert abs(np.mean(corrected)) < share * np.mean(plain)


def test_truth_lines_report_both_tables():
    from benchmarks.selection_splits import seed_cube
    from benchmarks.selection_truth import truth_lines

    text = "\n".join(truth_lines([seed_cube(_run(seeds=6, seed=s)) for s in range(2)], draws=3))
    assert "| lorasel pick |" in text and "| reference |" in text
    assert "| all 6 (the population's means) |" in text
    assert "| 64 |" in text
    assert truth_lines([]) == []
