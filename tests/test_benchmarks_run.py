"""`python -m benchmarks.run`: bad settings are one line, exit 2, and lose no other section."""

from __future__ import annotations

import re
import sys

import pytest

from benchmarks import run as bench_run


@pytest.mark.parametrize(
    ("section", "name", "value", "message"),
    [
        ("selection", "LORASEL_BENCH_GRADE_SEEDS", "abc", "is not a count"),
        ("selection", "LORASEL_BENCH_GRADE_SEEDS", "-1", "is not a count"),
        ("selection", "LORASEL_BENCH_GRADE_SEEDS", "2.5", "is not a count"),
        ("selection", "LORASEL_BENCH_SEED_STUDY", "1,two", "is not a list of counts"),
        ("selection", "LORASEL_BENCH_SEED_STUDY", "0,4", "is not a list of counts"),
        ("selection", "LORASEL_BENCH_THREADS", "two", "is not a list of counts"),
        ("selection", "LORASEL_BENCH_SEEDS", "two", "is not a count"),
        ("selection", "LORASEL_BENCH_SEEDS", "0", "no training seed"),
        ("selection", "LORASEL_BENCH_CONCEPTS", "star,blob", "unknown toy-world concept 'blob'"),
        ("selection", "LORASEL_BENCH_CONCEPTS", ",", "no concept"),
        ("eval", "LORASEL_BENCH_THREADS", "two", "is not a list of counts"),
        ("eval", "LORASEL_BENCH_THREADS", "0", "is not a list of counts"),
    ],
)
def test_bad_bench_setting_is_one_line_and_keeps_the_report(
    tmp_path, monkeypatch, capsys, section, name, value, message
):
    report = tmp_path / "benchmarks.md"
    report.write_text(f"# lorasel benchmarks\n\n<!-- section: {section} -->\nearlier figures\n")
    monkeypatch.setattr(bench_run, "ROOT", tmp_path)
    monkeypatch.setattr(bench_run, "REPORT", report)
    monkeypatch.setattr(bench_run, "FIGURES", tmp_path / "figures")
    monkeypatch.setenv(name, value)
    # The settings are read when their modules are imported: import them all again (another test
    # may have imported them, with good settings, in this process).
    for module in [m for m in sys.modules if m.startswith("benchmarks.") and m != "benchmarks.run"]:
        monkeypatch.delitem(sys.modules, module)
    assert bench_run.main([section]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(err) == 1
    assert name in err[0] and message in err[0] and "(hint: " in err[0]
    assert "earlier figures" in report.read_text()  # the section is kept as it was


def test_a_section_rerun_alone_says_where_it_was_measured_and_keeps_the_others(tmp_path, monkeypatch):
    import types

    report = tmp_path / "benchmarks.md"
    report.write_text("# lorasel benchmarks\n\n<!-- section: switch -->\nearlier figures\n")
    monkeypatch.setattr(bench_run, "ROOT", tmp_path)
    monkeypatch.setattr(bench_run, "REPORT", report)
    monkeypatch.setattr(bench_run, "FIGURES", tmp_path / "figures")
    fake = types.ModuleType("benchmarks.bench_rank")
    fake.run = lambda out_dir: "## rank\n\nnew figures\n"
    monkeypatch.setitem(sys.modules, "benchmarks.bench_rank", fake)
    monkeypatch.setattr(
        bench_run, "machine", lambda: "- CPU: Some CPU, 2 cores; GPU: none\n- Python\n- Date: 2030-01-02"
    )
    assert bench_run.main(["rank"]) == 0
    text = report.read_text()
    assert "<!-- section: switch -->\nearlier figures\n" in text  # not rerun: kept as it was
    assert "new figures\n\n_Measured on Some CPU, 2 cores; GPU: none; 2030-01-02._\n" in text
    assert text.index("section: switch") < text.index("section: rank")  # the report's order


def test_seed_study_table_averages_over_runs():
    from benchmarks.selection_report import seed_study_lines

    def row(n, lorasel, reference, size, hit):
        return {"seeds": n, "lorasel": lorasel, "reference": reference, "set_size": size, "best_in_set": hit}

    runs = [
        {"seed_study": [row(2, 0.30, 0.10, 12, True), row(4, 0.10, 0.20, 5, True)]},
        {"seed_study": [row(2, 0.10, 0.10, 20, False), row(4, 0.00, 0.10, 3, False)]},
    ]
    lines = seed_study_lines(runs)
    body = [line for line in lines if line.startswith("| 2 ") or line.startswith("| 4 ")]
    # n=2: mean regret 20%, above the reference (0.2 + 0) / 2 = 10%; n=4: 5%, -10% clipped to 0.
    assert body == [
        "| 2 | 20.0% | 10.0% | 10.0% | 16 | 1/2 |",
        "| 4 | 5.0% | 0.0% | 15.0% | 4 | 1/2 |",
    ]
    assert seed_study_lines([{"seed_study": []}]) == []


def test_mean_interval_matches_the_normal_theory():
    import numpy as np

    from benchmarks.selection_analysis import mean_interval

    x = np.random.default_rng(1).normal(0.3, 1.0, 400)
    low, high = mean_interval(x)
    se = x.std(ddof=1) / np.sqrt(len(x))  # a mean of 400: the bootstrap must agree with ±1.96 SE
    assert low == pytest.approx(x.mean() - 1.96 * se, abs=0.01)
    assert high == pytest.approx(x.mean() + 1.96 * se, abs=0.01)
    assert mean_interval([0.1] * 10) == pytest.approx((0.1, 0.1))


def test_median_interval_matches_the_normal_theory():
    import numpy as np

    from benchmarks.selection_analysis import median_interval

    x = np.random.default_rng(2).normal(1.0, 0.1, 2000)
    low, high = median_interval(x, rounds=4000)
    se = 1.2533 * 0.1 / np.sqrt(len(x))  # a median of a normal sample: √(π/2)·σ/√n
    assert (high - low) == pytest.approx(2 * 1.96 * se, rel=0.1)
    assert low < np.median(x) < high and low > 0.99 and high < 1.01
    assert median_interval([1.0] * 16) == pytest.approx((1.0, 1.0))


def test_precision_line_gives_paired_differences():
    import pandas as pd

    from benchmarks.selection_report import precision_lines, regret_by_run

    rows = []
    for i, (ours, loss) in enumerate([(0.0, 0.2), (0.1, 0.3), (0.0, 0.2), (0.1, 0.3)]):
        rows += [
            {"concept": "c", "seed": i, "selector": "lorasel", "regret": ours},
            {"concept": "c", "seed": i, "selector": "lowest_loss", "regret": loss},
        ]
    (line,) = precision_lines(regret_by_run(pd.DataFrame(rows)))
    # lorasel's mean 5% (0-10%); lorasel is 20 points below in every run: the interval is exact.
    assert "lorasel's mean regret 5.0% (0.0–10.0%)" in line
    assert "lowest training loss @1.0 -20.0 points (-20.0 to -20.0)" in line
    assert "validation" not in line


def test_new_runs_line_gives_the_runs_the_default_was_not_chosen_on():
    import pandas as pd

    from benchmarks.selection_report import new_runs_lines, regret_by_run

    rows = []
    for seed, ours, loss in [(0, 0.0, 0.2), (1, 0.0, 0.2), (2, 0.1, 0.1), (3, 0.3, 0.1)]:
        rows += [
            {"concept": "c", "seed": seed, "selector": "lorasel", "regret": ours},
            {"concept": "c", "seed": seed, "selector": "lowest_loss", "regret": loss},
        ]
    by_run = regret_by_run(pd.DataFrame(rows))
    _, line = new_runs_lines(by_run, chosen_on=2)
    assert "chosen and adopted on the 2 runs of training seeds 0–1" in line
    assert "The 2 runs of training seeds 2–3 are new to that choice" in line
    assert "lorasel pick 20.0%, lowest training loss @1.0 10.0%." in line
    assert new_runs_lines(by_run, chosen_on=4) == []  # every run in sample
    _, line = new_runs_lines(by_run, chosen_on=3)
    assert "chosen and adopted on the 3 runs of training seeds 0–2" in line
    assert "The 1 run of training seed 3 is new to that choice" in line
    # The benchmark's own case: only runs of later seeds, all out of sample.
    later = regret_by_run(pd.DataFrame([dict(r, seed=r["seed"] + 5) for r in rows]))
    _, line = new_runs_lines(later, chosen_on=5)
    assert line.startswith("Every run here is new to the default scoring")
    assert "training seeds 0–4" in line


def _graded(values: dict, prompts=None):
    """Renders and oracle attributes of hand-made candidates: ``values[(checkpoint, strength)]``
    is a list over seed indices of the oracle's verdict (every asked attribute shown or not);
    ``prompts``: prompts per kind (default one in-domain prompt)."""
    import numpy as np
    import pandas as pd

    rows, attrs = [], []
    for (checkpoint, strength), per_seed in values.items():
        for s, v in enumerate(per_seed):
            for kind, count in (prompts or {"in_domain": 1}).items():
                for p in range(count):
                    row = {"checkpoint": checkpoint, "strength": strength, "kind": kind, "seed_index": s}
                    rows.append({**row, "prompt": f"{kind} {p}"})
                    attrs.append({"shape": float(v), "color": np.nan, "background": float(v)})
    return pd.DataFrame(rows), pd.DataFrame(attrs)


def test_grading_noise_matches_the_binomial_law():
    from scipy.stats import binom

    from benchmarks.selection_analysis import grading_noise

    # A is shown on 5 of 9 seeds, B on the other 4: B's regret is 1 (A is best) when a redraw of
    # the 9 seeds takes A's seeds 5 or more times, else 0 — a Bernoulli of p = P(Bin(9, 5/9) >= 5).
    renders, attributes = _graded({("a", 1.0): [1] * 5 + [0] * 4, ("b", 1.0): [0] * 5 + [1] * 4})
    regret, sd = grading_noise(renders, attributes, "b", 1.0, rounds=20_000)
    p = 1 - binom.cdf(4, 9, 5 / 9)
    assert regret == 1.0
    assert sd == pytest.approx((p * (1 - p)) ** 0.5, abs=0.01)
    # The same verdict on every seed: no luck in the grading.
    renders, attributes = _graded({("a", 1.0): [1] * 6, ("b", 1.0): [0] * 6, ("c", 0.5): [1] * 6})
    assert grading_noise(renders, attributes, "b", 1.0) == (1.0, 0.0)
    assert grading_noise(renders, attributes, "c", 0.5) == (0.0, 0.0)


def test_grading_floor_matches_the_binomial_law():
    from scipy.stats import binom

    from benchmarks.selection_analysis import grading_floor

    # A, shown on 5 of 9 seeds, is best as graded; a redraw of the 9 seeds that takes A's seeds 4
    # times or fewer makes B best and gives A a regret of 1 (never a tie: 9 draws are odd).
    renders, attributes = _graded({("a", 1.0): [1] * 5 + [0] * 4, ("b", 1.0): [0] * 5 + [1] * 4})
    floor = grading_floor(renders, attributes, rounds=20_000)
    assert floor == pytest.approx(binom.cdf(4, 9, 5 / 9), abs=0.01)
    # A candidate best on every seed keeps its lead in every redraw; two tied for best share it.
    renders, attributes = _graded({("a", 1.0): [1] * 6, ("b", 1.0): [0] * 6, ("c", 0.5): [1] * 6})
    assert grading_floor(renders, attributes) == 0.0
    renders, attributes = _graded({("a", 1.0): [1, 0], ("b", 1.0): [0, 1], ("c", 0.5): [0, 0]})
    # Redraws: (a's seed, b's seed) counts (2,0), (1,1), (0,2) with p 1/4, 1/2, 1/4; a or b loses 1 in
    # a quarter of them.
    assert grading_floor(renders, attributes, rounds=20_000) == pytest.approx(0.25, abs=0.01)


def test_grading_noise_grades_as_the_oracle_does():
    import numpy as np

    from benchmarks.selection_analysis import grading_noise
    from lorasel.toyworld.verdict import candidate_quality

    rng = np.random.default_rng(3)
    values = {(f"e{i}", s): list(rng.integers(0, 2, 7)) for i in range(4) for s in (0.5, 1.0)}
    # Kinds of unequal sizes: the quality is the mean of the kinds' means, not of all renders.
    renders, attributes = _graded(values, prompts={"in_domain": 1, "unrelated": 4, "trigger": 2})
    attributes["color"] = rng.integers(0, 2, len(attributes)).astype(float)  # a second judged attribute
    quality = candidate_quality(renders, attributes=attributes).set_index(["checkpoint", "strength"])
    quality = quality["oracle_quality"]
    for checkpoint, strength in values:
        regret, _ = grading_noise(renders, attributes, checkpoint, strength, rounds=10)
        expected = (quality.max() - quality[(checkpoint, strength)]) / (quality.max() - quality.min())
        assert regret == pytest.approx(expected)


def test_grading_noise_paragraph_names_the_misses():
    import pandas as pd

    from benchmarks.selection_misses import grading_noise_lines

    rows = pd.DataFrame(
        {
            "run": ["a-0", "b-0", "c-0", "d-0"],
            "regret": [0.40, 0.10, 0.0, 0.06],
            "sd": [0.05, 0.08, 0.02, 0.07],
        }
    )
    (line,) = [x for x in grading_noise_lines(rows) if x]
    assert "a-0 40% (±5)" in line and "b-0" not in line.split("explain:")[1].split("—")[0]
    assert "10.0 of the 14.0 points" in line  # a-0's 40 points over 4 runs
    assert "other 3 runs' regrets (mean 5.3%)" in line
    assert "median ±6 points" in line
    assert "reference" not in line and "floor" not in line  # without those columns
    rows["ref_regret"] = [0.30, 0.0, 0.0, 0.0]
    rows["ref_sd"] = [0.05, 0.0, 0.0, 0.0]
    rows["floor"] = [0.02, 0.04, 0.0, 0.06]
    (line,) = [x for x in grading_noise_lines(rows) if x]
    assert "The reference misses 1 of them as well (a-0)" in line and "none is lorasel's own" in line
    assert "mean regret of 3.0% (per run 0–6%)" in line
    rows["ref_regret"] = [0.05, 0.0, 0.0, 0.0]  # within twice its SD: the miss is lorasel's own
    (line,) = [x for x in grading_noise_lines(rows) if x]
    assert "misses 0 of them as well (none)" in line and "the other 1 (a-0) are lorasel's own" in line


def test_miss_table_shows_pick_and_best_part_by_part():
    from types import SimpleNamespace

    import pandas as pd

    from benchmarks.selection_misses import miss_table
    from lorasel.demo import Verdict

    oracle = pd.DataFrame(
        {
            "checkpoint": ["e9", "e7"],
            "strength": [1.0, 0.75],
            "in_domain": [0.98, 0.97],
            "trigger": [0.8, 0.7],
            "out_of_domain": [0.57, 0.62],
            "unrelated": [0.53, 0.96],
        }
    )
    table = pd.DataFrame(
        {
            "checkpoint": ["e9", "e7"],
            "strength": [1.0, 0.75],
            "fidelity": [0.78, 0.66],
            "flexibility": [0.665, 0.668],
            "adherence": [0.612, 0.641],
            "preservation": [0.672, 0.836],
        }
    )
    outcome = SimpleNamespace(
        oracle=oracle,
        ranking=SimpleNamespace(table=table),
        verdicts={
            "lorasel": Verdict("e9", "e9", 9, 1.0, 0.70, 0.41),
            "oracle": Verdict("e7", "e7", 7, 0.75, 0.81, 0.0),
        },
    )
    lines = miss_table([{"concept": "moon", "seed": 1, "outcome": outcome}])
    assert (
        "| moon-1 | lorasel's pick | e9@1 | 0.98 | 0.80 | 0.57 | 0.53 | 0.700 | 0.780 | 0.665 | 0.612 | 0.672 |"
        in lines
    )
    assert (
        "| moon-1 | oracle's best | e7@0.75 | 0.97 | 0.70 | 0.62 | 0.96 | 0.810 | 0.660 | 0.668 | 0.641 | 0.836 |"
        in lines
    )
    assert miss_table([]) == []


def test_oracle_measurements_are_cached_per_image_and_oracle(tmp_path, monkeypatch):
    import pandas as pd

    import lorasel.toyworld.verdict as verdict
    from benchmarks import oracle_cache
    from lorasel.toyworld.world import Scene, render

    state = tmp_path / "lorasel"
    (state / "renders").mkdir(parents=True)
    scenes = [
        Scene("star", "red", "blue"),
        Scene("circle", "yellow", "black"),
        Scene("moon", "white", "green"),
    ]
    for i, scene in enumerate(scenes):
        render(scene).save(state / "renders" / f"{i}.png")
    # The same image in two rows (one render, read twice) is measured once.
    images = ["renders/0.png", "renders/1.png", "renders/0.png"]
    renders = pd.DataFrame(
        {"image": images, "prompt": ["a red star on a blue background"] * 3}, index=[10, 11, 12]
    )
    expected = verdict.render_attributes(renders, state)  # the oracle itself, no cache
    measured = []
    real = verdict.render_attributes
    monkeypatch.setattr(verdict, "render_attributes", lambda r, s: measured.append(len(r)) or real(r, s))

    first = oracle_cache.measured_attributes(tmp_path, renders)
    pd.testing.assert_frame_equal(first, expected)
    assert measured == [2]  # each image once
    assert oracle_cache.measured_attributes(tmp_path, renders).equals(expected) and measured == [2]

    more = pd.concat(
        [renders, pd.DataFrame({"image": ["renders/2.png"], "prompt": ["a white moon"]}, index=[13])]
    )
    oracle_cache.measured_attributes(tmp_path, more)
    assert measured == [2, 1]  # only the new image

    (cache,) = tmp_path.glob("oracle-*.csv")
    cache.write_text("not,a\ncache")  # unreadable: measured again, and rewritten
    pd.testing.assert_frame_equal(oracle_cache.measured_attributes(tmp_path, renders), expected)
    assert measured == [2, 1, 2]

    monkeypatch.setattr(oracle_cache, "oracle_fingerprint", lambda: "changed")  # a changed oracle
    oracle_cache.measured_attributes(tmp_path, renders)
    assert measured == [2, 1, 2, 2]


def test_heldout_table_gives_each_selector_its_regret_and_paired_intervals():
    from benchmarks import heldout
    from lorasel.demo import Verdict

    def v(epoch, regret):
        return Verdict(f"e{epoch}", f"e{epoch}", epoch, 1.0, 1 - regret, regret)

    runs = [
        (
            "star-5",
            {"oracle": v(9, 0.0), "lorasel": v(9, 0.0), "lowest_loss": v(6, 0.5), "(1, 1)": v(8, 0.2)},
        ),
        (
            "heart-5",
            {"oracle": v(7, 0.0), "lorasel": v(8, 0.3), "lowest_loss": v(7, 0.0), "(1, 1)": v(8, 0.3)},
        ),
    ]
    text = heldout.table(runs, ["lorasel", "lowest_loss", "(1, 1)"])
    assert "| star-5 | e9@1 | e9@1 (0.0%) | e6@1 (50.0%) | e8@1 (20.0%) |" in text
    assert "| **mean** | | **15.0%** | **25.0%** | **25.0%** |" in text
    assert "lorasel with (1, 1)" in text.splitlines()[0]
    # Paired differences: -0.5 and +0.3 against the loss (mean -10 points), -0.2 and 0 against (1, 1).
    assert "lorasel pick minus lowest training loss @1.0: -10.0 points" in text
    assert (
        "lorasel pick minus lorasel with (1, 1): -10.0 points (95% interval over the runs -20.0 to +0.0)"
        in text
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["render", "square:5"], "bad run 'square:5'"),
        (["render", "star"], "bad run 'star'"),
        (["grade", "5", "--concepts", "star,blob"], "bad run 'blob:5'"),
        (["grade", "5", "--weights", "1,0,1"], "bad --weights"),
        (["grade", "5", "--weights", "1,x,1,0,0"], "bad --weights"),
        (["grade", "5", "--weights", "1,-1,1,0,0"], "weight flexibility=-1 is negative"),
        (["grade", "5", "--weights", "0,0,0,0,0"], "all weights are zero"),
        (["grade", "5", "--concepts", ","], "no concept to grade"),
        (["averaged", "star:x"], "bad run 'star:x'"),
    ],
)
def test_heldout_bad_arguments_are_one_line(argv, message, capsys):
    from benchmarks import heldout

    with pytest.raises(SystemExit) as info:
        heldout.main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err.startswith(f"error: {message}") and "hint:" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("ours", "lower", "expected"),
    [
        # A mean under 5% whose interval over the runs reaches above it: met on the mean, not shown.
        ([0.0, 0.0, 0.0, 0.19], 0.0, "≤ 5%: met on the mean (4.8%), not shown at 95% (interval 0.0–14.3%)"),
        ([0.01] * 6, 0.0, "≤ 5%: met, shown at 95% (1.0%, interval 1.0–1.0%)"),
        ([0.1] * 6, 0.06, "≤ 5%: NOT met (at least 6.0%)"),
        # Measured above 5% even at 95%: the measurement overstates the true regret, so with a lower
        # bound under 5% nothing is decided.
        (
            [0.1] * 6,
            0.02,
            "≤ 5%: not met as measured (10.0%, interval 10.0–10.0%), an upper bound of the true regret; "
            "the true regret is at least 2.0%: not decided either way",
        ),
        (
            [0.0, 0.0, 0.2, 0.2],
            None,
            "≤ 5%: not met as measured (10.0%, interval 0.0–20.0%), an upper bound of the true regret: "
            "not decided either way",
        ),
        # A lower bound per run: missed when its interval lies above 5%, else missed on the mean only.
        ([0.1] * 6, "series:0.06,0.06", "≤ 5%: NOT met, shown at 95% (at least 6.0%, interval from 6.0%)"),
        ([0.1] * 6, "series:0.0,0.12", "≤ 5%: NOT met (at least 6.0%)"),
    ],
)
def test_target_verdict_claims_only_what_its_interval_shows(ours, lower, expected):
    import pandas as pd

    from benchmarks.selection_analysis import target_verdict

    n = len(ours)
    by_run = pd.DataFrame(
        {"lorasel": ours, "lowest_loss": [0.3] * n, "lowest_val_loss": [0.3] * (n - 1) + [0.0]}
    )
    if isinstance(lower, str):  # a lower bound per run, alternating two values
        a, b = (float(x) for x in lower.removeprefix("series:").split(","))
        lower = pd.Series([a, b] * (n // 2))
    verdict = target_verdict(by_run, lower)
    assert verdict.endswith(expected)
    assert verdict.startswith("below every loss-based selector: met")
    worse = target_verdict(by_run.assign(lowest_loss=0.0), lower)
    assert worse.startswith("below every loss-based selector: NOT met")


@pytest.mark.parametrize(
    ("corrected", "expected"),
    [
        (
            [0.08, 0.09] * 3,
            "the bias-corrected estimate, 8.5% (interval 8.2–8.8%), lies above 5%: estimated not met",
        ),
        (
            [0.02, 0.03] * 3,
            "the bias-corrected estimate, 2.5% (interval 2.2–2.8%), lies below 5%: estimated met",
        ),
        ([0.0, 0.1] * 3, "lies across 5%: not decided by the estimate either"),
    ],
)
def test_target_verdict_places_the_bias_corrected_estimate_only_when_the_bounds_decide_nothing(
    corrected, expected
):
    import pandas as pd

    from benchmarks.selection_analysis import target_verdict

    by_run = pd.DataFrame({"lorasel": [0.0, 0.2] * 3, "lowest_loss": [0.3] * 6, "lowest_val_loss": [0.3] * 6})
    undecided = target_verdict(by_run, 0.01, pd.Series(corrected))
    assert "not decided either way; " in undecided
    assert undecided.endswith(expected)
    # Where a bound decides, the estimate adds nothing.
    assert target_verdict(by_run, 0.06, pd.Series(corrected)).endswith("≤ 5%: NOT met (at least 6.0%)")


def test_target_verdict_says_which_loss_selector_it_is_not_shown_against():
    import pandas as pd

    from benchmarks.selection_analysis import target_verdict

    # Below both on the means; the validation loss beats lorasel on one run of four, so the
    # paired interval against it reaches 0.
    by_run = pd.DataFrame(
        {"lorasel": [0.0, 0.0, 0.0, 0.19], "lowest_loss": [0.3] * 4, "lowest_val_loss": [0.3, 0.3, 0.3, 0.0]}
    )
    assert target_verdict(by_run, None).startswith(
        "below every loss-based selector: met on the means (not shown at 95% against lowest validation loss @1.0);"
    )
    assert target_verdict(by_run.assign(lowest_val_loss=0.3), None).startswith(
        "below every loss-based selector: met, shown at 95%;"
    )


def test_heldout_render_uses_one_thread_per_process(monkeypatch, capsys):
    """Processes run one per core: two-thread processes on 2 cores rendered 7x slower."""
    from types import SimpleNamespace

    from benchmarks import heldout
    from lorasel import models
    from lorasel.demo import Verdict

    calls = []

    outcome = SimpleNamespace(verdicts={"lorasel": Verdict("e1", "e1", 1, 1.0, 0.5, 0.25)})

    def fake_run(concept, seed, base, scorer, *, threads=0):
        calls.append((concept, seed, threads))
        return {"outcome": outcome}

    monkeypatch.setattr(heldout, "one_run", fake_run)
    monkeypatch.setattr(models, "load_base", lambda spec: "base")
    monkeypatch.setattr(models, "load_scorer", lambda spec: "scorer")
    monkeypatch.setattr(heldout, "THREADS", 0)  # LORASEL_BENCH_THREADS unset
    heldout.render(["star:5", "moon:6"])
    assert calls == [("star", 5, 1), ("moon", 6, 1)]
    out = capsys.readouterr().out
    assert "[heldout] moon seed 6 done" in out
    # Nothing graded is shown before `grade` (the start times aside: 04:25:10 holds a 25 too).
    untimed = re.sub(r"\d\d:\d\d:\d\d", "", out)
    assert "regret" not in untimed and "25" not in untimed
    monkeypatch.setattr(heldout, "THREADS", 2)  # LORASEL_BENCH_THREADS=2
    heldout.render(["star:5"])
    assert calls[-1] == ("star", 5, 2)


def test_the_pooled_out_of_sample_figures_are_those_of_the_runs_file():
    """reports/heldout_runs.csv against what preregistered.md reported from it: test 6's 18 runs."""
    import pandas as pd

    from benchmarks.pooled import RUNS, summary

    runs = pd.read_csv(RUNS)
    assert len(runs) == len(runs.drop_duplicates(["concept", "seed"]))
    lines = summary(runs[runs["seed"] < 7])
    assert lines[0] == "18 runs (training seeds 4, 5, 6):"
    assert "  lorasel (B): 10.7% (4.7-17.5%)" in lines
    assert "  lorasel (B) minus lowest validation loss @1.0: -11.2 points (-23.6 to +1.3)" in lines
