"""`lorasel rank`, `pick`, `report` and `lorasel.pick` through CliRunner, the evaluator replaced."""

from __future__ import annotations

import errno
import io
import json
import os
import re
import sys
import types

import pandas as pd
import pytest
from typer.testing import CliRunner

import lorasel
from lorasel.cli import app
from lorasel.errors import ResultsError
from lorasel.rank import inputs
from lorasel.results import BASE, METRICS
from tests.synthetic_results import make_results, overfitting

runner = CliRunner()

RANK_FIELDS = [
    "checkpoint", "epoch", "step", "strength", "fidelity", "flexibility", "adherence", "diversity",
    "preservation", "score", "rank", "p_best", "loss", "seeds", "prompt_tag",
]  # fmt: skip
PICK_FIELDS = ["checkpoint", "epoch", "step", "strength", "score", "metrics", "p_best", "seeds", "prompt_tag"]


@pytest.fixture
def run(tmp_path, monkeypatch):
    """An evaluated run: renders in RUN/lorasel, a loss log, the evaluator's store replaced."""
    root = tmp_path / "run"
    results = make_results(checkpoints=4, strengths=(0.5, 1.0), seeds=2, state_dir=root / "lorasel", seed=2)
    (root / "logs").mkdir(parents=True)
    rows = [
        {"step": s, "epoch": (s - 1) // 10 + 1, "loss": 1.0 / ((s - 1) // 10 + 1), "lr": 1e-4}
        for s in range(1, 41)
    ]
    pd.DataFrame(rows).to_csv(root / "logs" / "loss.csv", index=False)
    calls = []

    def fake_load_inputs(path, workdir=None):
        calls.append((path, workdir))
        return results

    monkeypatch.setattr(inputs, "load_inputs", fake_load_inputs)
    return types.SimpleNamespace(root=root, calls=calls, results=results)


def test_rank_human_output(run):
    result = runner.invoke(app, ["rank", str(run.root)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "4 checkpoints x 2 strengths" in out
    assert "zkz-000001" in out and "base" in out
    assert "pick: zkz-" in out
    assert "lowest loss would pick: zkz-000004 at strength 1" in out
    assert "Spearman rho" in out
    assert re.search(r"note: \d+ other candidates? could be the best at 2 seeds per prompt", out)
    assert "* on the fidelity-adherence Pareto front" in out
    flexible = runner.invoke(app, ["rank", str(run.root), "--weights", "flexibility=1"]).stdout
    assert "* on the fidelity-flexibility-adherence Pareto front" in flexible
    one = runner.invoke(app, ["rank", str(run.root), "--strengths", "1"]).stdout
    assert "4 checkpoints x 1 strength, " in one


def test_rank_json_rows_are_design_fields(run):
    result = runner.invoke(app, ["rank", str(run.root), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 4 * 2 + 1
    assert all(list(row) == RANK_FIELDS for row in rows)
    contest = [r for r in rows if r["checkpoint"] != BASE]
    assert [r["rank"] for r in contest] == sorted(r["rank"] for r in contest)
    assert contest[0]["rank"] == 1 and contest[0]["checkpoint"].startswith(str(run.root))
    assert sum(r["p_best"] for r in contest) == pytest.approx(1.0)
    base = [r for r in rows if r["checkpoint"] == BASE]
    assert base[0]["rank"] is None and base[0]["p_best"] is None and base[0]["loss"] is None
    assert all(isinstance(r["loss"], float) for r in contest)
    assert {r["seeds"] for r in rows} == {2}  # the fixture's seeds per prompt, for every row
    assert base[0]["prompt_tag"] is None
    for r in contest:  # A1111's tag: the file name without its extension, the strength as in a prompt
        stem = r["checkpoint"].rsplit("/", 1)[-1].removesuffix(".safetensors")
        assert r["prompt_tag"] == f"<lora:{stem}:{'1' if r['strength'] == 1.0 else r['strength']}>"


def test_rank_csv_and_strengths_filter(run):
    result = runner.invoke(app, ["rank", str(run.root), "--csv", "--strengths", "1.0"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(io.StringIO(result.stdout))
    assert len(table) == 4 + 1
    assert set(table["strength"]) == {0.0, 1.0}
    for column in (*METRICS, "score", "rank", "p_best", "loss"):
        assert column in table.columns


def test_pick_json_and_python_api_agree(run):
    result = runner.invoke(app, ["pick", str(run.root), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert list(data) == [*PICK_FIELDS, "runner_up", "tied_with", "warnings", "embeddings"]
    assert data["embeddings"] == []  # the run's files bundle none
    assert data["warnings"] == []  # every weighed metric on 4 units or more: nothing to warn of
    assert list(data["runner_up"]) == PICK_FIELDS
    # The tie set: the table's tied rows after the pick, in rank order.
    ranked = lorasel.rank.rank(run.results, loss=lorasel.rank.read_loss(run.root)).table
    contest = ranked[ranked["checkpoint"] != BASE]
    tied = contest.iloc[1:][contest["tied"].iloc[1:]]
    assert len(tied) > 0  # this run has a candidate it cannot tell from the pick
    assert [(t["checkpoint"], t["strength"]) for t in data["tied_with"]] == list(
        zip(tied["path"], tied["strength"], strict=True)
    )
    assert all(list(t) == PICK_FIELDS for t in data["tied_with"])
    assert set(data["metrics"]) == set(METRICS)
    table = lorasel.rank.rank(run.results, loss=lorasel.rank.read_loss(run.root)).table
    assert (
        data["checkpoint"]
        == table["path"].iloc[0]
        == str(run.root / "checkpoints" / table["checkpoint"].iloc[0])
    )
    assert 0.0 < data["p_best"] <= 1.0
    # The A1111 prompt tag names the file without its extension (as A1111's Lora list does).
    file_name = data["checkpoint"].rsplit("/", 1)[-1]
    assert file_name.endswith(".safetensors")
    assert data["prompt_tag"].startswith(f"<lora:{file_name[: -len('.safetensors')]}:")
    assert float(data["prompt_tag"][:-1].rsplit(":", 1)[1]) == data["strength"]
    api = lorasel.pick(run.root)
    assert api.to_json() == data
    assert run.calls[-1] == (run.root, None)


def test_pick_human_output(run):
    result = runner.invoke(app, ["pick", str(run.root)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("pick: zkz-")
    assert "P(best)" in result.stdout and "runner-up:" in result.stdout
    assert "lowest loss would pick:" in result.stdout
    tag = json.loads(runner.invoke(app, ["pick", str(run.root), "--json"]).stdout)["prompt_tag"]
    assert f"  prompt tag  {tag}   (A1111, Forge; ComfyUI: LoraLoader" in result.stdout
    # The score's interval reads "a to b": a negative lower bound stays legible.
    assert re.search(
        r"\n  score       -?[\d.]+ \(95% interval -?[\d.]+ to -?[\d.]+\), P\(best\)", result.stdout
    )
    # Candidates tied with the pick at the run's 2 seeds: the way to separate them.
    tied = json.loads(runner.invoke(app, ["pick", str(run.root), "--json"]).stdout)["tied_with"]
    assert len(tied) >= 1
    many = "s" if len(tied) > 1 else ""
    assert (
        f"  note        {len(tied)} other candidate{many} could be the best at 2 seeds per prompt"
        in result.stdout
    )
    assert (
        "rerun lorasel eval with the same options and --refine 2 (for these candidates only)" in result.stdout
    )
    assert "or --seeds 4 (for all)" in result.stdout


def test_pick_minimums_exit_3_when_nothing_meets_them(run):
    result = runner.invoke(app, ["pick", str(run.root), "--min-fidelity", "0.99", "--min-flexibility", "0.3"])
    assert result.exit_code == 3
    assert result.stderr.startswith(
        "error: no (checkpoint, strength) has fidelity >= 0.99 and flexibility >= 0.3"
    )
    assert result.stderr.count("\n") == 1 and "hint:" in result.stderr


def test_pick_adherence_minimum_moves_the_pick(run):
    free = json.loads(runner.invoke(app, ["pick", str(run.root), "--json"]).stdout)
    floor = free["metrics"]["adherence"] + 1e-9  # the synthetic run has candidates with more
    result = runner.invoke(app, ["pick", str(run.root), "--json", "--min-adherence", repr(floor)])
    assert result.exit_code == 0, result.output
    moved = json.loads(result.stdout)
    assert moved["metrics"]["adherence"] >= floor
    assert (moved["checkpoint"], moved["strength"]) != (free["checkpoint"], free["strength"])


def test_pick_minimum_moves_the_pick(run):
    free = json.loads(runner.invoke(app, ["pick", str(run.root), "--json"]).stdout)
    floor = free["metrics"]["flexibility"] + 1e-9
    result = runner.invoke(app, ["pick", str(run.root), "--json", "--min-flexibility", repr(floor)])
    assert result.exit_code == 0, result.output
    moved = json.loads(result.stdout)
    assert moved["metrics"]["flexibility"] >= floor
    assert (moved["checkpoint"], moved["strength"]) != (free["checkpoint"], free["strength"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["pick", "--min-fidelity", "1.5"], "--min-fidelity 1.5 is outside [-1, 1]"),
        (["pick", "--min-flexibility", "-2"], "--min-flexibility -2 is outside [-1, 1]"),
        (["pick", "--min-adherence", "1.01"], "--min-adherence 1.01 is outside [-1, 1]"),
        (["rank", "--weights", "fidelity=-1"], "weight fidelity=-1 is negative"),
        (
            ["pick", "--weights", "fidelity=0,flexibility=0,adherence=0,diversity=0,preservation=0"],
            "all weights are zero",
        ),
        (["report", "--weights", "sharpness=2"], "unknown metric 'sharpness'"),
        (["rank", "--strengths", "0.6"], "strength 0.6 was not evaluated (evaluated: 0.5, 1)"),
        (["pick", "--strengths", "half"], "--strengths value 'half' is not a number"),
        (["rank", "--json", "--csv"], "--json and --csv cannot be combined"),
    ],
)
def test_bad_options_exit_2_with_one_line(run, args, message):
    result = runner.invoke(app, [args[0], str(run.root), *args[1:]])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1
    assert result.stdout == ""


@pytest.mark.parametrize("command", ["rank", "pick", "report"])
def test_path_never_evaluated_says_which_command_to_run(tmp_path, command):
    folder = tmp_path / "loras"
    folder.mkdir()
    (folder / "a.safetensors").write_bytes(b"")
    result = runner.invoke(app, [command, str(folder)])
    assert result.exit_code == 2
    assert "has not been evaluated yet" in result.stderr
    assert f"(hint: run `lorasel eval {folder}` first)" in result.stderr
    assert not (folder / "report").exists()


def test_missing_path(tmp_path):
    result = runner.invoke(app, ["pick", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "does not exist" in result.stderr


def test_load_inputs_delegates_to_the_evaluator_and_passes_its_errors(tmp_path, monkeypatch):
    """A corrupt results database: the evaluator's ResultsError reaches the user unchanged."""
    root = tmp_path / "run"
    (root / "lorasel").mkdir(parents=True)
    (root / "lorasel" / "results.sqlite").write_bytes(b"this is not a database")
    seen = []

    def load_results(path, workdir=None):
        seen.append((path, workdir))
        raise ResultsError(
            f"results database {path}/lorasel/results.sqlite is corrupt", hint="re-run `lorasel eval`"
        )

    fake = types.ModuleType("lorasel.evaluate")
    fake.load_results = load_results
    monkeypatch.setitem(sys.modules, "lorasel.evaluate", fake)
    with pytest.raises(ResultsError, match="is corrupt"):
        inputs.load_inputs(root)
    assert seen == [(root.resolve(), None)]
    # Through the CLI: one line, exit 2, and an existing report is not overwritten.
    (root / "report").mkdir()
    (root / "report" / "report.html").write_text("previous report")
    result = runner.invoke(app, ["report", str(root)])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: results database") and "corrupt" in result.stderr
    assert (root / "report" / "report.html").read_text() == "previous report"
    assert not (root / "report" / "scores.csv").exists()


def test_report_writes_both_files_by_default(run):
    result = runner.invoke(app, ["report", str(run.root)])
    assert result.exit_code == 0, result.output
    html = (run.root / "report" / "report.html").read_text()
    assert "lorasel report: run" in html and "Recommendation" in html
    table = pd.read_csv(run.root / "report" / "scores.csv")
    assert len(table) == 4 * 2 + 1
    assert "wrote " in result.stdout and "pick: zkz-" in result.stdout
    assert not [p for p in (run.root / "report").iterdir() if p.name.startswith(".")]  # no temp files left


def test_report_custom_paths(run, tmp_path):
    html, csv = tmp_path / "out" / "r.html", tmp_path / "out" / "s.csv"
    result = runner.invoke(app, ["report", str(run.root), "--html", str(html), "--csv", str(csv)])
    assert result.exit_code == 0, result.output
    assert html.is_file() and csv.is_file()
    assert not (run.root / "report").exists()


@pytest.mark.parametrize(
    ("option", "make_path", "reason"),
    [
        ("--html", lambda t: t / "a folder", "cannot write the HTML report to {path}: Is a directory"),
        (
            "--csv",
            lambda t: t / "notes.txt" / "scores.csv",
            "cannot write the scores CSV to {path}: {parent} is a file, not a folder",
        ),
        ("--html", lambda t: t / "full" / "r.html", "cannot write the HTML report to {path}: No space left"),
    ],
    ids=["html onto a folder", "csv under a file", "disk full"],
)
def test_report_to_a_path_that_cannot_be_written_is_one_line(
    run, tmp_path, monkeypatch, option, make_path, reason
):
    """An output path lorasel cannot write: one line naming it and the system's reason, exit 2,
    no temporary file left behind and the earlier report untouched."""
    (tmp_path / "a folder").mkdir()
    (tmp_path / "notes.txt").write_text("mine")
    path = make_path(tmp_path)
    if path.parent.name == "full":
        real_fsync = os.fsync

        def fsync(fd):
            if os.readlink(f"/proc/self/fd/{fd}").startswith(str(path.parent)):
                raise OSError(errno.ENOSPC, "No space left on device")
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
    (run.root / "report").mkdir()
    (run.root / "report" / "report.html").write_text("previous report")
    result = runner.invoke(app, ["report", str(run.root), option, str(path)])
    assert result.exit_code == 2, result.output
    line = result.stderr.strip()
    assert line.startswith("error: " + reason.format(path=path, parent=path.parent)), line
    assert "\n" not in line and "Traceback" not in result.output
    assert "free some space" in line if path.parent.name == "full" else "folder you can write to" in line
    assert (run.root / "report" / "report.html").read_text() == "previous report"
    assert (tmp_path / "notes.txt").read_text() == "mine"
    leftovers = [p for p in tmp_path.rglob(".*.tmp")] + list((run.root / "report").glob(".*.tmp"))
    assert leftovers == []


def test_unusable_loss_log_is_a_warning_line(run):
    (run.root / "logs" / "loss.csv").write_text("step,epoch,lr\n1,1,0.1\n")
    result = runner.invoke(app, ["rank", str(run.root)])
    assert result.exit_code == 0, result.output
    assert "warning: loss log" in result.stderr and "lacks column(s) ['loss']" in result.stderr
    assert "no training loss log found" in result.stdout


def test_results_without_adherence_rank_on_the_rest_with_one_warning(tmp_path, monkeypatch):
    """A store written before lorasel measured adherence: ranked on what it has, and said so."""
    quality = overfitting(4)
    results = make_results(quality=lambda e, s: {k: v for k, v in quality(e, s).items() if k != "adherence"})
    monkeypatch.setattr(inputs, "load_inputs", lambda path, workdir=None: results)
    (tmp_path / "r").mkdir()
    result = runner.invoke(app, ["rank", str(tmp_path / "r"), "--json"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "adherence was not measured" in warnings[0]
    assert "rerun lorasel eval" in warnings[0]
    assert all(row["adherence"] is None for row in json.loads(result.stdout))
    quiet = runner.invoke(app, ["pick", str(tmp_path / "r"), "--weights", "adherence=0"])
    assert quiet.exit_code == 0, quiet.output
    assert "warning" not in quiet.stderr


def test_one_seed_of_two_prompts_warns_that_p_best_is_coarse(tmp_path, monkeypatch):
    """pick, rank and report on 1 seed of 2 prompts per kind: one warning line on stderr (stdout
    stays the JSON), and the same note in the HTML report."""
    results = make_results(checkpoints=3, prompts_per_kind=2, seeds=1, state_dir=tmp_path / "r" / "lorasel")
    monkeypatch.setattr(inputs, "load_inputs", lambda path, workdir=None: results)
    for args in (["pick", "--json"], ["rank", "--json"], ["report"]):
        result = runner.invoke(app, [args[0], str(tmp_path / "r"), *args[1:]])
        assert result.exit_code == 0, result.output
        warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
        assert len(warnings) == 1 and "(2 for adherence)" in warnings[0] and "--seeds 2" in warnings[0]
    picked = json.loads(runner.invoke(app, ["pick", str(tmp_path / "r"), "--json"]).stdout)
    assert picked["p_best"] > 0
    assert len(picked["warnings"]) == 1 and f"warning: {picked['warnings'][0]}" == warnings[0]
    html = (tmp_path / "r" / "report" / "report.html").read_text()
    assert "rest on few (prompt, seed) units (2 for adherence)" in html


def test_control_characters_in_names_do_not_reach_the_terminal(tmp_path, monkeypatch):
    results = make_results(checkpoints=2, labels=["evil\x1b[2J\x07-000001", "ok-000002"])
    monkeypatch.setattr(inputs, "load_inputs", lambda path, workdir=None: results)
    (tmp_path / "r").mkdir()
    result = runner.invoke(app, ["rank", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert "evil?[2J?-000001" in result.stdout


def test_lorasel_pick_is_lazy():
    import subprocess

    code = "import sys, lorasel; assert 'lorasel.rank' not in sys.modules; assert callable(lorasel.pick); print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    with pytest.raises(AttributeError):
        lorasel.no_such_thing
