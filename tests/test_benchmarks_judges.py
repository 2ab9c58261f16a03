"""benchmarks.selection_judges: the CLIP judge's readings against the world's own scenes, and its
grading machinery against the oracle's (a judge that reads as the oracle does is the reference)."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest

from lorasel.results import BASE
from tests.test_benchmarks_splits import _run


@pytest.fixture(scope="module")
def toy_scorer():
    from lorasel.models import load_scorer

    return load_scorer("toy")


def test_the_judge_reads_clean_world_renders_as_their_scenes_are(toy_scorer):
    """On the world's own renders (where the scorer is near perfect) every asked attribute reads
    as asked; asked for another colour or background, that attribute reads wrong and the rest
    right; a prompt that names only the shape is judged on the shape alone."""
    from benchmarks.selection_judges import clip_attributes
    from lorasel.toyworld import world

    rng = random.Random(0)
    scenes = [world.sample_scene(rng, world.ALL_SHAPES) for _ in range(40)]
    images = toy_scorer.embed_images([world.render(s) for s in scenes]).numpy()

    def other(colour: str, *avoid: str) -> str:
        return next(c for c in world.COLORS if c not in (colour, *avoid))

    prompts = {
        "as drawn": [f"a {s.color} zkz {s.shape} on a {s.background} background" for s in scenes],
        "other colour": [
            f"a {other(s.color, s.background)} {s.shape} on a {s.background} background" for s in scenes
        ],
        "other background": [
            f"a {s.color} {s.shape} on a {other(s.background, s.color)} background" for s in scenes
        ],
        "shape only": [f"zkz {s.shape}" for s in scenes],
    }
    read = {
        name: clip_attributes(pd.DataFrame({"prompt": texts}), images, toy_scorer)
        for name, texts in prompts.items()
    }
    assert read["as drawn"].mean().min() >= 0.95
    assert read["other colour"]["color"].mean() <= 0.05
    assert read["other colour"][["shape", "background"]].mean().min() >= 0.9
    assert read["other background"]["background"].mean() <= 0.05
    assert read["shape only"]["shape"].mean() >= 0.9
    assert read["shape only"][["color", "background"]].isna().all().all()


def test_a_judge_cube_grades_as_candidate_quality_does_with_the_judges_readings():
    from benchmarks.selection_judges import judge_cube
    from benchmarks.selection_splits import seed_cube
    from lorasel.toyworld.verdict import candidate_quality

    run = _run(seeds=4, seed=2)
    renders, oracle = run["outcome"].results.renders, run["outcome"].attributes
    cube = seed_cube(run)
    same = judge_cube(cube, renders, oracle)
    np.testing.assert_array_equal(same.oracle_sum, cube.oracle_sum)
    flipped = (1.0 - oracle).where(oracle.notna())  # a judge that reads every attribute the other way
    judge = judge_cube(cube, renders, flipped)
    seeds = np.array([0, 2, 3])
    graded = renders[renders["seed_index"].isin(seeds) & (renders["checkpoint"] != BASE)]
    expected = candidate_quality(graded, attributes=flipped).set_index(["checkpoint", "strength"])
    assert np.allclose(judge.oracle_quality(seeds), expected["oracle_quality"].to_numpy())
    assert not np.allclose(judge.oracle_quality(seeds), cube.oracle_quality(seeds))


def test_a_judge_that_reads_as_the_oracle_is_the_reference():
    """Graded on the same draws: lorasel's column is the averaged one, and a judge whose readings
    are the oracle's makes the reference's choices, draw by draw."""
    from benchmarks.selection_judges import judge_cube, judged_regrets
    from benchmarks.selection_splits import averaged, seed_cube
    from lorasel.rank.weights import DEFAULT_WEIGHTS

    runs = [_run(seeds=6, seed=s) for s in (4, 5)]
    cubes = [seed_cube(r) for r in runs]
    for cube, name in zip(cubes, ("a", "b"), strict=True):
        object.__setattr__(cube, "name", name)  # distinct runs draw distinct seeds
    judges = [
        judge_cube(c, r["outcome"].results.renders, r["outcome"].attributes)
        for c, r in zip(cubes, runs, strict=True)
    ]
    got = judged_regrets(cubes, judges, select=3, draws=20)
    reference = averaged(cubes, {"lorasel": DEFAULT_WEIGHTS}, select=3, draws=20)
    assert got["clip_judge"].tolist() == pytest.approx(got["oracle_seen"].tolist())
    assert got["lorasel"].tolist() == pytest.approx(reference["lorasel"].tolist())
    assert got["oracle_seen"].tolist() == pytest.approx(reference["oracle_seen"].tolist())


def test_agreement_counts_renders_both_judged():
    from benchmarks.selection_judges import agreement

    oracle = pd.DataFrame({"shape": [1, 0, 1, np.nan], "color": [1, 1, np.nan, np.nan], "background": np.nan})
    judge = pd.DataFrame({"shape": [1, 1, 1, 0], "color": [0, 1, 1, np.nan], "background": np.nan})
    got = agreement(judge, oracle)
    assert got["shape"] == pytest.approx(2 / 3) and got["color"] == pytest.approx(1 / 2)
    assert np.isnan(got["background"])


def test_the_reading_follows_the_interval():
    from benchmarks.selection_judges import _reading

    assert "does not close the gap" in _reading(0.01, 0.09)
    assert "beats lorasel's metrics" in _reading(-0.09, -0.01)
    assert "not told apart" in _reading(-0.02, 0.03)
