"""`lorasel tui` through CliRunner, the app's run() replaced (no real terminal)."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from lorasel.cli import app
from lorasel.rank import inputs
from lorasel.tui.app import LoraselTUI
from tests.tui_support import settle, synthetic_run

runner = CliRunner()


@pytest.fixture
def run(tmp_path, monkeypatch):
    root = tmp_path / "run"
    results = synthetic_run(root, strengths=(0.5, 1.0))
    calls = []
    monkeypatch.setattr(
        inputs, "load_inputs", lambda path, workdir=None: calls.append((path, workdir)) or results
    )
    return SimpleNamespace(root=root, calls=calls)


def replace_run(monkeypatch, keys=(), seen=None):
    """LoraselTUI.run drives the real app headless, pressing ``keys``; returns its result."""

    def fake_run(self, **kwargs):
        if seen is not None:
            seen.append(self)

        async def drive():
            async with self.run_test(size=(100, 30)) as pilot:
                await settle(pilot)
                await pilot.press(*keys)
                await pilot.pause()

        asyncio.run(drive())
        return self.return_value

    monkeypatch.setattr(LoraselTUI, "run", fake_run)


def test_pick_key_prints_the_same_json_as_lorasel_pick(run, monkeypatch):
    calls, run = run.calls, run.root
    seen = []
    replace_run(monkeypatch, keys=("p",), seen=seen)
    weights = "flexibility=2,diversity=0"
    workdir = run.parent / "state"
    result = runner.invoke(
        app,
        ["tui", str(run), "--weights", weights, "--base", "toy", "--workdir", str(workdir), "--workers", "2"],
    )
    assert result.exit_code == 0, result.output
    expected = runner.invoke(app, ["pick", str(run), "--json", "--weights", weights])
    assert expected.exit_code == 0, expected.output
    assert json.loads(result.stdout) == json.loads(expected.stdout)
    assert result.stdout == expected.stdout  # byte for byte, as scripts read it
    tui = seen[0]
    assert tui.state.weights.flexibility == 2.0 and tui.state.weights.diversity == 0.0
    assert tui._eval_options == {"base": "toy", "workers": 2} and tui.run_dir.root == run.resolve()
    assert tui.run_dir.state == workdir.resolve() and tui.renders.state_dir == workdir.resolve()
    assert calls[0] == (run, workdir.resolve())  # the evaluator's store is read from --workdir


def test_print_pick_without_results_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setattr(LoraselTUI, "run", lambda self, **kwargs: None)
    result = runner.invoke(app, ["tui", str(tmp_path), "--print-pick"])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: no pick to print: {tmp_path} has no evaluation results")
    assert result.stderr.count("\n") == 1 and result.stdout == ""
    result = runner.invoke(app, ["tui", str(tmp_path)])  # without --print-pick: quitting is fine
    assert result.exit_code == 0 and result.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{missing}"], "does not exist"),
        (["{file}"], "is not a folder"),
        (
            ["{dir}", "--graphics", "kitty"],
            "--graphics 'kitty' is not one of auto, halfcell, sixel, tgp, none",
        ),
        (["{dir}", "--weights", "fidelity=-1"], "weight fidelity=-1 is negative"),
        (["{dir}", "--weights", "sharpness=1"], "--weights names an unknown metric 'sharpness'"),
        (["{dir}", "--workers", "0"], "--workers must be at least 1 (got 0)"),
    ],
)
def test_bad_input_exits_2_before_the_terminal_is_touched(tmp_path, monkeypatch, args, message):
    started = []
    monkeypatch.setattr(LoraselTUI, "run", lambda self, **kwargs: started.append(self))
    (tmp_path / "file.safetensors").write_bytes(b"x")
    paths = {"missing": tmp_path / "nope", "file": tmp_path / "file.safetensors", "dir": tmp_path}
    result = runner.invoke(app, ["tui", *(a.format(**paths) for a in args)])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and message in result.stderr and "hint:" in result.stderr
    assert started == []
