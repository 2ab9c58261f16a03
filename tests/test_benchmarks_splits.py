"""The selection benchmark's regrets averaged over draws of seeds (benchmarks.selection_splits),
checked against lorasel's ranking and the oracle's grading run on the drawn seeds alone."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from lorasel.results import BASE, Results
from tests.synthetic_results import make_results


def _run(seeds: int = 6, seed: int = 0):
    """A synthetic run with random oracle attributes (two judged, one not asked) and the
    candidates of two selectors that look at no render."""
    results = make_results(checkpoints=4, seeds=seeds, prompts_per_kind=2, seed=seed, unit_noise=0.1)
    rng = np.random.default_rng(seed + 1)
    n = len(results.renders)
    attributes = pd.DataFrame(
        {
            "shape": rng.integers(0, 2, n).astype(float),
            "color": np.where(rng.random(n) < 0.3, np.nan, rng.integers(0, 2, n)),
            "background": np.nan,
        },
        index=results.renders.index,
    )
    verdicts = {
        "last_epoch": SimpleNamespace(checkpoint="zkz-000004.safetensors", strength=1.0),
        "lowest_loss": SimpleNamespace(checkpoint="zkz-000002.safetensors", strength=1.0),
    }
    return {"outcome": SimpleNamespace(results=results, attributes=attributes, verdicts=verdicts)}


def _regret(quality: pd.Series, checkpoint: str, strength: float) -> float:
    return (quality.max() - quality[(checkpoint, strength)]) / (quality.max() - quality.min())


@pytest.mark.parametrize("seed", range(6))
def test_one_draw_regrets_are_those_of_ranking_and_grading_the_drawn_seeds(seed):
    from benchmarks.selection_splits import draw_regrets, seed_cube
    from lorasel.rank import Weights, rank
    from lorasel.toyworld.verdict import candidate_quality

    run = _run(seed=seed)
    results, attributes = run["outcome"].results, run["outcome"].attributes
    select, grade = np.array([4, 1, 2]), np.array([0, 3, 5])
    weights = {"lorasel": Weights(fidelity=1, adherence=1), "flex": Weights(fidelity=1, flexibility=1)}
    got = draw_regrets(seed_cube(run), select, grade, weights)

    renders = results.renders
    seen = renders[renders["seed_index"].isin(select)]
    graded = renders[renders["seed_index"].isin(grade) & (renders["checkpoint"] != BASE)]
    quality = candidate_quality(graded, attributes=attributes).set_index(["checkpoint", "strength"])
    quality = quality["oracle_quality"]
    for label, w in weights.items():
        # Ranked on the drawn seeds alone, as `lorasel rank` would rank an evaluation of them.
        alone = Results(
            renders=seen,
            diversity=results.diversity,
            checkpoints=results.checkpoints,
            settings=results.settings,
        )
        best = rank(alone, weights=w, n_boot=1).best
        assert got[label] == pytest.approx(_regret(quality, best.checkpoint, best.strength))
    reference = candidate_quality(seen[seen["checkpoint"] != BASE], attributes=attributes)
    reference = reference.loc[reference["oracle_quality"].idxmax()]
    assert got["oracle_seen"] == pytest.approx(
        _regret(quality, reference["checkpoint"], reference["strength"])
    )
    assert got["last_epoch"] == pytest.approx(_regret(quality, "zkz-000004.safetensors", 1.0))
    assert got["lowest_loss"] == pytest.approx(_regret(quality, "zkz-000002.safetensors", 1.0))

    # The lower bound: on each grading seed alone, the best on the other grading seeds against
    # the choice, averaged over the grading seeds and put on the range of the whole grading.
    def on(seeds):
        rows = graded[graded["seed_index"].isin(seeds)]
        return candidate_quality(rows, attributes=attributes).set_index(["checkpoint", "strength"])[
            "oracle_quality"
        ]

    choice = (reference["checkpoint"], reference["strength"])
    gaps = []
    for j in grade:
        best = on([k for k in grade if k != j]).idxmax()
        alone = on([j])
        gaps.append(alone[best] - alone[choice])
    expected = np.mean(gaps) / (quality.max() - quality.min())
    assert got["lower:oracle_seen"] == pytest.approx(expected)


def test_averaged_is_the_mean_over_every_draw_when_it_draws_them_all():
    from itertools import combinations

    from benchmarks.selection_splits import averaged, draw_regrets, seed_cube
    from lorasel.rank import Weights

    cube = seed_cube(_run(seeds=4))
    weights = {"lorasel": Weights(fidelity=1, adherence=1)}
    # 1 of 4 seeds seen, the other 3 graded: 4 possible draws; 400 random ones visit each about
    # 100 times, so the average is within a few points of the exact mean over the four.
    exact = pd.DataFrame(
        [
            draw_regrets(cube, np.array(s), np.setdiff1d(cube.seed_indices, s), weights)
            for s in combinations(range(4), 1)
        ]
    ).mean()
    got = averaged([cube], weights, select=1, draws=400, lower=True).iloc[0]
    assert got.index.tolist() == exact.index.tolist()
    assert np.allclose(got.to_numpy(), exact.to_numpy(), atol=0.05)


def test_averaged_refuses_draws_larger_than_the_seeds_rendered():
    from benchmarks.selection_splits import averaged, seed_cube
    from lorasel.rank import Weights

    cube = seed_cube(_run(seeds=4))
    with pytest.raises(ValueError, match="need more than 4"):
        averaged([cube], {"lorasel": Weights(fidelity=1)}, select=2, grade=3)


@pytest.mark.parametrize("seed", range(4))
def test_refined_choice_is_rank_of_a_refined_evaluation(seed):
    """What the benchmark simulates is what `lorasel eval --refine` then `lorasel rank` pick:
    the 95% set of `rank` on the first seeds, those candidates (and the base) on more seeds,
    again until the set holds no candidate without them."""
    from benchmarks.selection_refine import refined_choice
    from benchmarks.selection_splits import seed_cube
    from lorasel.rank import DEFAULT_WEIGHTS, rank

    run = _run(seeds=6, seed=seed)
    results = run["outcome"].results
    first, extra = np.array([3, 0, 5]), np.array([1, 4])
    cube = seed_cube(run)
    choice, refined = refined_choice(cube, first, extra, DEFAULT_WEIGHTS)

    renders = results.renders
    pair = pd.Series(list(zip(renders["checkpoint"], renders["strength"], strict=True)), index=renders.index)
    chosen: set = set()
    while True:
        wanted = np.array([p in chosen or (p[0] == BASE and bool(chosen)) for p in pair])
        more = renders["seed_index"].isin(extra).to_numpy() & wanted
        current = Results(renders=renders[renders["seed_index"].isin(first) | more], diversity=results.diversity,
                          checkpoints=results.checkpoints, settings=results.settings)  # fmt: skip
        ranking = rank(current)
        table = ranking.table
        in_set = table[table["rank"].notna() & (table["tied"] | (table["rank"] == 1))]
        in_set = set(zip(in_set["checkpoint"], in_set["strength"], strict=True))
        if in_set <= chosen:
            break
        chosen |= in_set
    contest = cube.evidence.candidates.iloc[cube.contest]
    pairs = list(zip(contest["checkpoint"], contest["strength"], strict=True))
    assert {pairs[i] for i in np.flatnonzero(refined)} == chosen
    assert 0 < len(chosen) < len(pairs)
    assert pairs[choice] == (ranking.best.checkpoint, ranking.best.strength)


def test_refine_table_runs_and_its_extremes_hold():
    from benchmarks.selection_refine import refine_table
    from benchmarks.selection_splits import seed_cube

    cubes = [seed_cube(_run(seeds=8, seed=s)) for s in range(2)]
    table = refine_table(cubes, first=2, extra=2, grade=4, draws=5)
    keys = ["plain", "refined", "every"]
    assert list(table.columns) == [
        *keys,
        *(f"corrected:{k}" for k in keys),
        "share",
        "held_best",
        "candidates",
    ]
    # The bootstrap's maximum is at least the graded one on average (Jensen), so taking out the
    # best's luck lowers a regret, never raises it by more than the resampling's noise.
    for k in keys:
        assert (table[f"corrected:{k}"] <= table[k] + 0.01).all()
        assert (table[f"corrected:{k}"] < table[k]).any()
    assert ((table["share"] > 0) & (table["share"] <= 1)).all()
    assert (
        ((table[["plain", "refined", "every"]] >= 0) & (table[["plain", "refined", "every"]] <= 1))
        .all()
        .all()
    )
    with pytest.raises(ValueError, match="need more than 8"):
        refine_table(cubes, first=4, extra=2, grade=4, draws=1)
