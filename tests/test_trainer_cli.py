"""`lorasel train` through the CLI: one-line errors for bad input, and kill -9 then --resume."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from typer.testing import CliRunner

from lorasel.cli import app
from lorasel.io import is_temporary
from tests.tiny_models import tiny_sd1_pipeline
from tests.trainer_helpers import make_kohya_dataset, one_torch_thread, small_config  # noqa: F401 (autouse fixture)
from trainer.configfile import from_dict, to_toml

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _config_file(tmp_path: Path, data: Path, **sections) -> Path:
    path = tmp_path / "lora.toml"
    path.write_text(to_toml(from_dict(small_config(data, **sections))), encoding="utf-8")
    return path


def _fails(args: list[str], *expected: str) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    line = result.stderr.strip()
    assert line.startswith("error: ") and "\n" not in line and "(hint: " in line, line
    for text in expected:
        assert text in line, line
    return line


def test_bad_datasets_fail_with_the_file_named(tmp_path):
    empty = tmp_path / "empty"
    (empty / "3_zkz star").mkdir(parents=True)
    _fails(["train", str(_config_file(tmp_path, empty))], "has no images")

    no_prefix = make_kohya_dataset(tmp_path / "noprefix", {"zkz star": 2})
    _fails(["train", str(_config_file(tmp_path, no_prefix))], "zkz star has no repeats prefix", "10_zkz star")

    broken = make_kohya_dataset(tmp_path / "broken", {"2_zkz star": 2})
    (broken / "2_zkz star" / "0001.png").write_bytes(b"not a png at all")
    out = tmp_path / "out"
    _fails(
        ["train", str(_config_file(tmp_path, broken)), "--output", str(out)], "unreadable image", "0001.png"
    )
    assert not out.exists()  # nothing written for a bad dataset


def test_bad_config_fails_with_the_key_named(tmp_path):
    data = make_kohya_dataset(tmp_path / "data", {"2_zkz star": 1})
    path = _config_file(tmp_path, data)
    path.write_text(path.read_text().replace("[network]\n", "[network]\nrnak = 4\n"))
    _fails(["train", str(path)], "unknown key network.rnak")
    good = _config_file(tmp_path, data)
    _fails(["train", str(good), "--set", "network.rank=0"], "network.rank must be > 0")
    _fails(["train", str(good), "--set", "training.optimizer=sgd"], "training.optimizer must be one of")
    if not torch.cuda.is_available():
        _fails(["train", str(good), "--set", "training.mixed_precision=fp16"], "needs a CUDA GPU")
        _fails(["train", str(good), "--set", "training.optimizer=adamw8bit"], "adamw8bit needs a CUDA GPU")
    _fails(["train"], "no config given")


def test_unwritable_output_fails_before_training(tmp_path):
    data = make_kohya_dataset(tmp_path / "data", {"2_zkz star": 1})
    path = _config_file(tmp_path, data)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    _fails(["train", str(path), "--output", str(blocker / "run")], "cannot write to output folder")
    _fails(["train", str(path), "--output", str(blocker)], "exists and is not a folder")
    taken = tmp_path / "taken"
    (taken / "checkpoints").mkdir(parents=True)
    (taken / "checkpoints" / "x-000001.safetensors").write_bytes(b"")
    _fails(["train", str(path), "--output", str(taken)], "already holds a training run", "--resume")


def test_resume_errors(tmp_path):
    data = make_kohya_dataset(tmp_path / "data", {"2_zkz star": 1})
    _fails(["train", "--resume", str(tmp_path)], "not a lorasel run (no run.toml)")
    (tmp_path / "run.toml").write_text(to_toml(from_dict(small_config(data))))
    _fails(["train", "--resume", str(tmp_path), "--set", "network.rank=8"], "cannot change when resuming")
    _fails(["train", "toyworld", "--resume", str(tmp_path)], "--resume takes its config from")


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    """The tiny SD1 pipeline as a diffusers folder: a base model a subprocess can load."""
    folder = tmp_path_factory.mktemp("base") / "tiny-sd1"
    tiny_sd1_pipeline().save_pretrained(folder)
    return folder


def _loss_steps(run: Path) -> list[int]:
    with open(run / "logs" / "loss.csv", newline="") as handle:
        return [int(row["step"]) for row in csv.DictReader(handle)]


def test_kill_9_then_resume_completes_the_same_run(tmp_path, tiny_base):
    data = make_kohya_dataset(tmp_path / "data", {"2_zkz star": 4})  # 4 steps per epoch
    config = _config_file(tmp_path, data, model={"base": str(tiny_base)}, training={"epochs": 4})
    expected = [f"zkz-{e:06d}.safetensors" for e in (1, 2, 3, 4)]

    # The run to kill starts first, so its interpreter start-up overlaps the reference run; a
    # watcher thread sends SIGKILL the moment the second checkpoint appears.
    run = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "killed.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lorasel", "train", str(config), "--output", str(run)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def kill_at_second_checkpoint() -> None:
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            if (run / "checkpoints" / expected[1]).exists():
                proc.send_signal(signal.SIGKILL)
                return
            time.sleep(0.002)

    watcher = threading.Thread(target=kill_at_second_checkpoint)
    watcher.start()
    reference = tmp_path / "reference"
    result = runner.invoke(app, ["train", str(config), "--output", str(reference)])
    assert result.exit_code == 0, result.output
    assert (
        "4 steps × 4 epochs = 16 steps" in result.stderr and "saved zkz-000004.safetensors" in result.stderr
    )
    watcher.join()
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-2000:]
    assert not (run / "checkpoints" / expected[3]).exists()

    result = runner.invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == expected
    assert not [p for p in run.rglob("*") if is_temporary(p)]
    assert _loss_steps(run) == list(range(1, 17))  # the killed run's extra rows were dropped
    got, want = (
        load_file(run / "checkpoints" / expected[3]),
        load_file(reference / "checkpoints" / expected[3]),
    )
    assert got.keys() == want.keys()
    first, last = (
        safe_open(str(run / "checkpoints" / name), "pt").metadata() for name in (expected[0], expected[3])
    )
    assert first["ss_session_id"] == last["ss_session_id"]  # one training session, resumed
    assert (last["ss_epoch"], last["ss_steps"]) == ("4", "16")
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-6, msg=key)


def test_list_settings():
    result = runner.invoke(app, ["train", "--list-settings"])
    assert result.exit_code == 0
    assert "network.rank = 16\n    Rank (kohya network_dim)." in result.stdout
    assert 'network.algo = "lora"' in result.stdout and "validation.timesteps = [100, 300" in result.stdout
