"""`lorasel demo` end to end at a reduced size: trains, evaluates, ranks, reports, judges."""

from __future__ import annotations

import csv
import shutil

import pytest
from typer.testing import CliRunner

from lorasel.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo")
    args = ["demo", "--workdir", str(workdir), "--epochs", "2", "--seeds", "1", "--steps", "4", "--no-tui"]
    first = runner.invoke(app, args)
    return workdir, args, first


def test_demo_completes_with_a_pick_and_a_report(demo_run):
    workdir, _, result = demo_run
    assert result.exit_code == 0, result.output
    run = workdir / "run"
    checkpoints = sorted((run / "checkpoints").glob("*.safetensors"))
    assert [p.name for p in checkpoints] == ["toy-000001.safetensors", "toy-000002.safetensors"]
    html = (run / "report" / "report.html").read_text()
    assert "toy-000001" in html and "toy-000002" in html
    with open(run / "report" / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # 2 checkpoints × 3 strengths, and the base model.
    assert len(rows) == 7
    out = result.stdout
    assert "lorasel pick" in out and "lowest training loss" in out and "oracle's best" in out
    assert "toy-000001 @" in out or "toy-000002 @" in out
    # No terminal: progress as lines, and the ranked table instead of the TUI.
    assert "rendered 98/98" in result.output
    assert "P(best)" in out and "base" in out


def test_demo_rerun_reuses_checkpoints_and_renders(demo_run):
    workdir, args, first = demo_run
    assert first.exit_code == 0, first.output
    checkpoint = workdir / "run" / "checkpoints" / "toy-000002.safetensors"
    before = checkpoint.stat().st_mtime_ns
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert checkpoint.stat().st_mtime_ns == before
    assert "98 of 98 renders already done" in again.output


def test_demo_on_another_concept_in_the_same_workdir_is_one_line(demo_run):
    """The star run's checkpoints were once reported as the heart concept's."""
    workdir, args, first = demo_run
    assert first.exit_code == 0, first.output
    result = runner.invoke(app, [*args, "--concept", "heart"])
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: {(workdir / 'run').resolve()} holds a run on the 'star' concept, not 'heart' "
        f"(hint: use another --workdir for 'heart', or --concept star)"
    )


def test_demo_with_fewer_epochs_than_its_workdir_holds_is_one_line(demo_run):
    """--epochs 1 on the 2-epoch run once evaluated both checkpoints, as if asked for 2."""
    workdir, args, first = demo_run
    assert first.exit_code == 0, first.output
    fewer = list(args)
    fewer[fewer.index("--epochs") + 1] = "1"
    result = runner.invoke(app, fewer)
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: {(workdir / 'run').resolve()} holds a run of 2 epochs, more than --epochs 1 "
        f"(hint: use another --workdir for 1 epoch, or --epochs 2 or more)"
    )


@pytest.mark.slow  # 98 more renders (35 s); reuse by more seeds: test_evaluate_run
def test_demo_with_more_seeds_renders_only_the_new_ones(demo_run, tmp_path):
    workdir, args, first = demo_run
    assert first.exit_code == 0, first.output
    copy = tmp_path / "demo"
    shutil.copytree(workdir, copy)
    more = [str(copy) if a == str(workdir) else a for a in args]
    more[more.index("--seeds") + 1] = "2"
    again = runner.invoke(app, more)
    assert again.exit_code == 0, again.output
    assert "98 of 196 renders already done" in again.output
    # The tied candidates, if any, are counted at 2 seeds per prompt.
    assert "could be the best at 1 seed " not in again.stdout


def test_demo_refine_renders_more_seeds_for_the_tied_only_and_judges_on_the_shared_ones(demo_run, tmp_path):
    from lorasel import demo
    from lorasel.evaluate import load_results
    from lorasel.rank import rank, read_loss

    workdir, args, first = demo_run
    assert first.exit_code == 0, first.output
    copy = tmp_path / "demo"
    shutil.copytree(workdir, copy)
    again = runner.invoke(app, [str(copy) if a == str(workdir) else a for a in args] + ["--refine", "1"])
    assert again.exit_code == 0, again.output
    run = copy / "run"
    with open(run / "report" / "scores.csv", newline="") as f:
        seeds = {(r["checkpoint"], float(r["strength"])): int(r["seeds"]) for r in csv.DictReader(f)}
    refined = {k for k, n in seeds.items() if n == 2 and k[0] != "base"}
    assert set(seeds.values()) == {1, 2} and refined  # some candidates, not all, got a second seed
    renders = load_results(run).renders
    assert len(renders) == 98 + 14 * (len(refined) + 1)  # the refined candidates and the base, 14 prompts
    assert "seeds" in again.stdout.splitlines()[-len(seeds) - 1]  # the ranked table's heading
    # The oracle judged every candidate on seed 0 only, the pick (refined: it is in the tied set) too.
    ranking = rank(load_results(run), loss=read_loss(run))
    shared = load_results(run)
    shared.renders = renders[renders["seed_index"] < 1]
    on_shared = demo.judge_selection(run, shared, ranking).verdicts["lorasel"]
    on_all = demo.judge_selection(run, load_results(run), ranking).verdicts["lorasel"]
    assert (ranking.best.checkpoint, ranking.best.strength) in refined
    assert f"{on_shared.quality:.3f}" != f"{on_all.quality:.3f}"  # so the line below tells them apart
    line = next(line for line in again.stdout.splitlines() if line.startswith("lorasel pick"))
    assert f" {on_shared.quality:.3f} " in line


def test_demo_verdicts_agree_with_the_oracle_and_the_ranking(demo_run):
    from lorasel import demo
    from lorasel.evaluate import load_results
    from lorasel.rank import rank, read_loss
    from lorasel.toyworld.oracle import judge, measure

    workdir, _, first = demo_run
    assert first.exit_code == 0, first.output
    run = workdir / "run"
    results = load_results(run)
    ranking = rank(results, loss=read_loss(run))
    outcome = demo.judge_selection(run, results, ranking)
    v = outcome.verdicts
    assert v["oracle"].regret == 0.0
    assert v["oracle"].quality == pytest.approx(outcome.oracle["oracle_quality"].max())
    assert all(0.0 <= x.regret <= 1.0 for x in v.values())
    assert (v["lorasel"].checkpoint, v["lorasel"].strength) == (
        ranking.best.checkpoint,
        ranking.best.strength,
    )
    assert v["last_epoch"].epoch == 2 and v["last_epoch"].strength == 1.0
    lowest = ranking.lowest_loss
    assert (v["lowest_loss"].checkpoint, v["lowest_loss"].strength) == (lowest.checkpoint, lowest.strength)
    # The lorasel pick's quality, recomputed from its own renders with the oracle directly.
    from PIL import Image

    renders = results.renders
    mine = renders[
        (renders["checkpoint"] == v["lorasel"].checkpoint) & (renders["strength"] == v["lorasel"].strength)
    ]
    per_kind: dict[str, list[float]] = {}
    for image, prompt, kind in zip(mine["image"], mine["prompt"], mine["kind"], strict=True):
        with Image.open(run / "lorasel" / image) as im:
            shown = judge(measure(im), prompt)
        per_kind.setdefault(kind, []).append(sum(shown.values()) / len(shown))
    expected = sum(sum(x) / len(x) for x in per_kind.values()) / len(per_kind)
    assert v["lorasel"].quality == pytest.approx(expected)


def test_demo_bad_concept_is_one_line(tmp_path):
    result = runner.invoke(app, ["demo", "--workdir", str(tmp_path / "d"), "--concept", "dragon"])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: unknown toy-world concept 'dragon'")
    assert "hint:" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "d").exists()


def test_demo_bad_seeds_is_one_line(tmp_path):
    result = runner.invoke(app, ["demo", "--workdir", str(tmp_path / "d"), "--seeds", "0"])
    assert result.exit_code == 2
    assert "error: --seeds must be at least 1" in result.output


def test_demo_bad_refine_is_one_line(tmp_path):
    result = runner.invoke(app, ["demo", "--workdir", str(tmp_path / "d"), "--refine", "-1"])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: --refine must be 0 or more") and "hint:" in result.output
    assert not (tmp_path / "d").exists()


def test_demo_bad_threads_is_one_line(tmp_path):
    result = runner.invoke(app, ["demo", "--workdir", str(tmp_path / "d"), "--threads", "0"])
    assert result.exit_code == 2
    assert "error: --threads must be at least 1" in result.output and "hint:" in result.output
    assert not (tmp_path / "d").exists()


def test_demo_zero_epochs_is_rejected_not_ignored(tmp_path):
    result = runner.invoke(app, ["demo", "--workdir", str(tmp_path / "d"), "--epochs", "0"])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: --epochs must be at least 1")
    assert "Traceback" not in result.output
    assert not (tmp_path / "d" / "run" / "checkpoints").exists()


def test_demo_zero_steps_is_rejected_before_training(tmp_path):
    """--steps 0 once failed only after the two minutes of training, in the evaluation."""
    result = runner.invoke(app, ["demo", "--workdir", str(tmp_path / "d"), "--steps", "0"])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: --steps must be at least 1 (got 0)")
    assert "hint: omit it for the demo's 12" in result.output
    assert not (tmp_path / "d").exists()
