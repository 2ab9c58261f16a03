"""Evaluating checkpoints while a trainer writes them (`lorasel.evaluate.follow.Follower`).

The follower is a spawned process; what it leaves in the cache is checked against an evaluation
made in this process, in another state folder: the same pixels, and nothing left to render.
"""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
import torch

from lorasel.errors import ResultsError
from lorasel.evaluate import evaluate, load_results
from lorasel.evaluate.follow import (
    Follower,
    FollowSettings,
    checkpoint_files,
    follow_threads,
    has_checkpoints,
)
from tests import evaluate_helpers as h

STRENGTHS, SEEDS = (0.5, 1.0), 2
N_RENDERS = (1 + 3 * len(STRENGTHS)) * 4 * SEEDS  # base + 3 checkpoints × strengths; 4 prompts
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def run(tmp_path):
    root = h.make_run(tmp_path / "run")
    (tmp_path / "prompts.toml").write_text(h.TEST_PROMPTS)
    return root


def _kwargs(run) -> dict:
    return dict(
        prompts=str(run.parent / "prompts.toml"), strengths=STRENGTHS, seeds=SEEDS, steps=2, guidance=5.0,
        size=(16, 16), batch_size=3,
    )  # fmt: skip


def _settings(run, tiny_base_folder) -> FollowSettings:
    return FollowSettings(str(run), base=tiny_base_folder, scorer="toy", evaluate_kwargs=_kwargs(run))


def _wait(condition, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _complete(run, n: int) -> bool:
    """The follower has saved results with ``n`` renders."""
    try:
        return len(load_results(run).renders) == n
    except ResultsError:
        return False


def test_checkpoint_files_change_when_a_checkpoint_is_saved_and_a_state_file_is_no_checkpoint(run, tmp_path):
    from safetensors.torch import save_file

    assert checkpoint_files(tmp_path / "missing") == ()
    assert not has_checkpoints(tmp_path / "missing")
    before = checkpoint_files(run)
    assert [p.split("/")[-1] for p, _, _ in before] == [f"zkz-00000{i}.safetensors" for i in (1, 2, 3)]
    assert checkpoint_files(run) == before
    h.write_lora(run / "checkpoints" / "zkz-000004.safetensors", seed=4, scale=0.8, epoch=4)
    assert len(checkpoint_files(run)) == 4 and has_checkpoints(run)
    # A trainer's state file, before its first checkpoint: a change, but nothing to evaluate.
    early = tmp_path / "early"
    (early / "checkpoints").mkdir(parents=True)
    save_file({"optimizer.step": torch.zeros(1)}, str(early / "checkpoints" / "state.safetensors"))
    assert len(checkpoint_files(early)) == 1 and not has_checkpoints(early)


def test_follow_threads_leaves_one_thread_to_the_follower():
    assert follow_threads(1) == (1, False)
    assert follow_threads(2) == (1, True)
    assert follow_threads(4) == (3, True)


def test_the_follower_evaluates_checkpoints_as_they_appear_with_the_same_images(
    run, tiny_base_folder, tmp_path, monkeypatch
):
    """Checkpoints written after the follower started are evaluated; the evaluation after it
    renders nothing, and its images equal an evaluation made in this process alone."""
    shutil.move(run / "checkpoints", tmp_path / "later")
    with Follower(_settings(run, tiny_base_folder)) as follower:
        _wait(lambda: follower.ready)
        shutil.move(tmp_path / "later", run / "checkpoints")  # as a trainer saves them
        _wait(lambda: _complete(run, N_RENDERS))
    assert follower.problem is None
    assert not follower.alive
    spy = h.RenderSpy(monkeypatch)
    events = []
    followed = evaluate(run, base=tiny_base_folder, scorer="toy", progress=events.append, **_kwargs(run))
    assert spy.count == 0
    start = next(e for e in events if e.phase == "start")
    assert start.cached == start.total == N_RENDERS
    alone = evaluate(run, base=tiny_base_folder, scorer="toy", workdir=tmp_path / "alone", **_kwargs(run))
    assert spy.count == N_RENDERS
    mine, reference = h.pixels(run / "lorasel", followed.renders), h.pixels(tmp_path / "alone", alone.renders)
    assert mine.keys() == reference.keys() and len(mine) == N_RENDERS
    for key, pixels in reference.items():
        np.testing.assert_array_equal(mine[key], pixels)
    np.testing.assert_allclose(followed.renders["fidelity"], alone.renders["fidelity"], rtol=0, atol=1e-6)


def test_a_follower_stopped_while_loading_is_gone_at_once(run, tiny_base_folder):
    follower = Follower(_settings(run, tiny_base_folder))
    started = time.monotonic()
    assert follower.stop() is None
    assert time.monotonic() - started < 10
    assert not follower.alive
    assert not (run / "lorasel").exists() or not _complete(run, N_RENDERS)


def test_a_follower_that_fails_reports_one_line_and_raises_nothing(tmp_path, tiny_base_folder):
    """A folder of checkpoints without training images: no reference for fidelity."""
    folder = tmp_path / "loras"
    h.write_lora(folder / "checkpoints" / "zkz-000001.safetensors", seed=1, scale=0.2, epoch=1)
    (tmp_path / "prompts.toml").write_text(h.TEST_PROMPTS)
    follower = Follower(
        FollowSettings(str(folder), base=tiny_base_folder, scorer="toy", evaluate_kwargs=_kwargs(folder))
    )
    _wait(lambda: not follower.alive)
    problem = follower.stop()
    assert problem is not None and problem.startswith("error: no reference images") and "\n" not in problem


def test_a_pipeline_from_load_base_caches_under_its_spec(tiny_base_folder):
    """What lets the follower's renders, made with the pipeline it loaded, serve an evaluation
    given the spec: the cache key holds the spec either way."""
    from lorasel.evaluate.job import base_spec
    from lorasel.models import load_base

    assert base_spec(load_base(tiny_base_folder, device="cpu")) == tiny_base_folder
    assert base_spec(h.tiny_pipeline()) == "<StableDiffusionPipeline>"  # built by hand: no spec


def test_follow_renders_only_the_checkpoint_that_is_new(run):
    """`follow` (what `lorasel eval --follow` runs): a checkpoint saved while it waits is
    evaluated alone, and `stop` ends it."""
    import threading

    from lorasel.evaluate.follow import follow

    stop, rounds, starts = threading.Event(), [], []
    thread = threading.Thread(
        target=follow,
        args=(run, stop),
        kwargs=dict(
            base=h.tiny_pipeline(),
            scorer=h.tiny_scorer(),
            threads=1,
            poll_s=0.05,
            on_results=rounds.append,
            progress=lambda e: e.phase == "start" and starts.append(e),
            **_kwargs(run),
        ),
    )
    thread.start()
    try:
        _wait(lambda: len(rounds) == 1)
        h.write_lora(run / "checkpoints" / "zkz-000004.safetensors", seed=4, scale=0.8, epoch=4)
        _wait(lambda: len(rounds) == 2)
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()
    per_checkpoint = len(STRENGTHS) * 4 * SEEDS
    assert [(e.cached, e.total) for e in starts] == [(0, N_RENDERS), (N_RENDERS, N_RENDERS + per_checkpoint)]
    assert rounds[1].renders["checkpoint"].nunique() == 5  # the base and four checkpoints


def test_follow_is_not_idle_while_a_file_is_being_written(tmp_path):
    """`--follow-idle` counts from the last change of any file, a trainer's state file too, not
    from the last evaluation."""
    import threading

    from safetensors.torch import save_file

    from lorasel.evaluate.follow import follow

    state = tmp_path / "early" / "checkpoints" / "state.safetensors"
    state.parent.mkdir(parents=True)
    stop = threading.Event()
    thread = threading.Thread(
        target=follow,
        args=(tmp_path / "early", stop),
        kwargs=dict(base=None, scorer=None, poll_s=0.05, idle_s=0.6),
    )
    thread.start()
    try:
        for step in range(8):  # a save every 0.2 s for 1.6 s: longer than idle_s, never idle
            save_file({"optimizer.step": torch.full((1,), float(step))}, str(state))
            time.sleep(0.2)
        assert thread.is_alive()
        thread.join(10)  # no more saves: idle after 0.6 s
        assert not thread.is_alive()
    finally:
        stop.set()
        thread.join(10)
