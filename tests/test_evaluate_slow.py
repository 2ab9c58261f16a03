"""Slow evaluator tests (`make bench` runs them): several processes on the real toy world."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--seeds", "1", "--strengths", "1", "--steps", "4", "--batch-size", "4"]


@pytest.mark.slow
def test_two_processes_give_the_single_process_results(tmp_path):
    """`torchrun --nproc_per_node 2 -m lorasel eval` (what `accelerate launch` runs on GPUs)
    shards the plan over two CPU processes into one store: the same results, bit for bit, as one
    process, and a rerun in a fresh interpreter renders nothing."""
    from benchmarks.bench_eval import make_fixture
    from lorasel.evaluate import load_results

    run = make_fixture(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    two = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "lorasel", "eval"]
    out = subprocess.run([*two, str(run), "--workdir", str(tmp_path / "two"), *FAST],
                         capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    one = [sys.executable, "-m", "lorasel", "eval", str(run), "--workdir", str(tmp_path / "one"), *FAST]
    out = subprocess.run(one, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    a, b = load_results(run, tmp_path / "two"), load_results(run, tmp_path / "one")
    pd.testing.assert_frame_equal(a.renders, b.renders)
    pd.testing.assert_frame_equal(a.diversity, b.diversity)
    for image in a.renders.image:
        assert (tmp_path / "two" / image).read_bytes() == (tmp_path / "one" / image).read_bytes()
    again = subprocess.run(one, capture_output=True, text=True, env=env, timeout=600)
    n = len(a.renders)
    assert again.returncode == 0 and f"{n} of {n} renders already done" in again.stderr
