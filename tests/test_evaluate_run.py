"""`evaluate` end to end on the tiny pipeline: results, cache, resume, sharding, bad input."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3

import numpy as np
import pandas as pd
import pytest
import torch

from lorasel.errors import EvaluationError, ResultsError
from lorasel.evaluate import evaluate, load_results
from lorasel.evaluate import runner as runner_module
from lorasel.evaluate.processes import Processes
from lorasel.evaluate.store import Store
from lorasel.results import BASE, RENDER_COLUMNS
from tests import evaluate_helpers as h

N_PROMPTS, SEEDS, STRENGTHS = 4, 2, (0.5, 1.0)
PER_GROUP = N_PROMPTS * SEEDS
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """One complete three-checkpoint evaluation, shared (read-only) by the tests below."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = h.make_run(tmp_path_factory.mktemp("evaluated") / "run")
    (root.parent / "prompts.toml").write_text(h.TEST_PROMPTS)
    events = []
    results = _eval(root, progress=events.append)
    torch.set_num_threads(before)
    return root, results, events


@pytest.fixture
def run(tmp_path):
    """A fresh run folder (nothing evaluated) with three checkpoints."""
    root = h.make_run(tmp_path / "run")
    (tmp_path / "prompts.toml").write_text(h.TEST_PROMPTS)
    return root


@pytest.fixture
def evaluated_copy(evaluated, tmp_path):
    """A copy of the evaluated run, its state folder included."""
    root, results, _ = evaluated
    shutil.copytree(root, tmp_path / "run")
    shutil.copy(root.parent / "prompts.toml", tmp_path / "prompts.toml")
    return tmp_path / "run", results


def _eval(run, **kwargs):
    args = dict(
        base=h.tiny_pipeline(), scorer=h.tiny_scorer(), prompts=run.parent / "prompts.toml", strengths=STRENGTHS,
        seeds=SEEDS, steps=2, guidance=5.0, size=(16, 16), batch_size=3,
    )  # fmt: skip
    args.update(kwargs)
    return evaluate(run, **args)


def _png_bytes(state, renders: pd.DataFrame) -> dict[str, bytes]:
    return {row.image: (state / row.image).read_bytes() for row in renders.itertuples()}


def test_three_checkpoints_end_to_end(evaluated):
    run, results, events = evaluated
    r = results.renders
    assert list(r.columns[: len(RENDER_COLUMNS)]) == list(RENDER_COLUMNS)
    assert len(r) == (1 + 3 * len(STRENGTHS)) * PER_GROUP
    base = r[r.checkpoint == BASE]
    assert len(base) == PER_GROUP and set(base.strength) == {0.0} and set(base.label) == {BASE}
    assert sorted(results.checkpoints.epoch.tolist()) == [1, 2, 3]
    assert set(r.checkpoint) == {BASE, *(f"checkpoints/zkz-00000{i}.safetensors" for i in (1, 2, 3))}
    assert all((run / "lorasel" / p).is_file() for p in r.image)
    # Metrics are filled for exactly their kinds.
    for kind, metric in (("in_domain", "fidelity"), ("trigger", "fidelity"), ("out_of_domain", "flexibility"),
                         ("out_of_domain", "flexibility_gain"), ("in_domain", "adherence"),
                         ("unrelated", "preservation")):  # fmt: skip
        assert r.loc[r.kind == kind, metric].notna().all(), (kind, metric)
    assert r.loc[r.kind != "in_domain", "adherence"].isna().all()
    assert r.loc[r.kind == "unrelated", "fidelity"].isna().all()
    assert r.loc[r.kind != "unrelated", "preservation"].isna().all()
    assert np.allclose(base.loc[base.kind == "unrelated", "preservation"], 1.0)
    assert np.allclose(base.loc[base.kind == "out_of_domain", "flexibility_gain"], 0.0)
    # Common random numbers: each (prompt, seed index) has one seed for every candidate.
    assert (r.groupby(["prompt", "seed_index"]).seed.nunique() == 1).all()
    assert len(results.diversity) == (1 + 3 * len(STRENGTHS)) * N_PROMPTS
    assert results.diversity.diversity.between(1.0, SEEDS + 1e-9).all()
    groups = r[["checkpoint", "strength"]].drop_duplicates().values
    assert set(results.settings["centroid_distance"]) == {f"{c}@{s:g}" for c, s in groups}
    assert results.settings["trigger"] == "zkz" and results.settings["class_word"] == "star"
    # The settings record what evaluate() takes again (the TUI continues an evaluation with them).
    assert results.settings["prompt_set"] == str((run.parent / "prompts.toml").resolve())
    assert results.settings["scorer_name"] == h.TINY_SCORER and results.settings["size"] == "16x16"
    assert (results.settings["steps"], results.settings["seeds"]) == (2, SEEDS)
    # A LoRA changes the images; the stored results are what evaluate returned.
    ckpt = r[(r.checkpoint == "checkpoints/zkz-000003.safetensors") & (r.strength == 1.0)]
    assert not np.allclose(ckpt.preservation.dropna(), 1.0)
    loaded = load_results(run)
    pd.testing.assert_frame_equal(loaded.renders, results.renders)
    pd.testing.assert_frame_equal(loaded.diversity, results.diversity)
    pd.testing.assert_frame_equal(loaded.checkpoints, results.checkpoints)
    assert loaded.settings == results.settings
    assert len(loaded.candidates()) == 1 + 3 * len(STRENGTHS)
    # Progress: a start event, then render events counting up to the total with a rate.
    renders = [e for e in events if e.phase == "render"]
    assert events[0].phase == "start" and events[0].total == len(r) and events[0].cached == 0
    assert renders[-1].done == len(r) and renders[-1].eta_s == 0 and renders[-1].rate > 0
    assert [e.done for e in renders] == sorted(e.done for e in renders)
    assert events[-1].phase == "done"


def test_adherence_and_flexibility_are_open_clips_cosine_to_the_prompt_without_the_trigger(evaluated):
    """Recomputed with open_clip's own encoders from the PNG on disk: the render against its
    prompt with the trigger dropped (the class word is already in these prompts)."""
    from PIL import Image

    run, results, _ = evaluated
    scorer = h.tiny_scorer()
    r = results.renders
    rows = r[
        (r.checkpoint == "checkpoints/zkz-000003.safetensors") & (r.strength == 1.0) & (r.seed_index == 1)
    ]
    for kind, metric in (("in_domain", "adherence"), ("out_of_domain", "flexibility")):
        row = rows[rows.kind == kind].iloc[0]
        text = row.prompt.replace("zkz ", "")
        assert "zkz" not in text and "star" in text
        with torch.no_grad():
            image = scorer.preprocess(Image.open(run / "lorasel" / row.image).convert("RGB"))[None]
            a = scorer.model.encode_image(image)[0].double()
            b = scorer.model.encode_text(scorer.tokenizer([text]))[0].double()
        expected = float(a @ b / (a.norm() * b.norm()))
        assert row[metric] == pytest.approx(expected, abs=1e-5), kind


def test_base_render_matches_a_plain_diffusers_call(evaluated):
    """Our batched render with cached text embeddings ≈ diffusers' own call, one image, same seed."""
    from PIL import Image

    run, results, _ = evaluated
    row = results.renders[(results.renders.checkpoint == BASE) & (results.renders.kind == "in_domain")].iloc[
        1
    ]
    ours = np.asarray(Image.open(run / "lorasel" / row.image), dtype=np.int16)
    reference = h.tiny_pipeline()(
        prompt=row.prompt, num_inference_steps=2, guidance_scale=5.0, height=16, width=16,
        generator=torch.Generator().manual_seed(int(row.seed)), output_type="np",
    ).images[0]  # fmt: skip
    expected = np.round(reference * 255).astype(np.int16)
    assert np.abs(ours - expected).max() <= 1


def test_checkpoint_render_matches_diffusers_own_lora_loading(evaluated):
    """Independent reference for the whole chain (merge at a strength, seed, cached text
    embeddings): diffusers' kohya loader + ``fuse_lora(lora_scale=s)`` on a copy of the base."""
    import copy

    from PIL import Image

    run, results, _ = evaluated
    r = results.renders
    rows = r[(r.checkpoint == "checkpoints/zkz-000003.safetensors") & (r.strength == 0.5)]
    row = rows[rows.kind == "in_domain"].iloc[0]
    base_row = r[(r.checkpoint == BASE) & (r.prompt == row.prompt) & (r.seed_index == row.seed_index)].iloc[0]
    pipe = copy.deepcopy(h.tiny_pipeline())
    pipe.load_lora_weights(str(run / row.checkpoint))
    pipe.fuse_lora(lora_scale=0.5)
    reference = pipe(
        prompt=row.prompt, num_inference_steps=2, guidance_scale=5.0, height=16, width=16,
        generator=torch.Generator().manual_seed(int(row.seed)), output_type="np",
    ).images[0]  # fmt: skip
    ours = np.asarray(Image.open(run / "lorasel" / row.image), dtype=np.int16)
    base = np.asarray(Image.open(run / "lorasel" / base_row.image), dtype=np.int16)
    expected = np.round(reference * 255).astype(np.int16)
    assert np.abs(ours - expected).max() <= 1
    assert np.abs(base - expected).max() > 1  # the LoRA visibly changed the image


def test_rerun_renders_nothing(evaluated_copy, monkeypatch):
    run, clean = evaluated_copy
    spy = h.RenderSpy(monkeypatch)
    again = _eval(run)
    assert spy.count == 0
    pd.testing.assert_frame_equal(again.renders, clean.renders)


def _as_schema_1(db) -> None:
    """Turn a store into what lorasel wrote before it measured adherence (schema 1)."""
    with sqlite3.connect(db) as con:
        con.execute("ALTER TABLE result_renders DROP COLUMN adherence")
        con.execute("PRAGMA user_version = 1")


def test_a_store_from_before_adherence_reads_as_not_measured_and_a_rerun_measures_it(
    evaluated_copy, monkeypatch
):
    from lorasel.rank import rank

    run, clean = evaluated_copy
    db = run / "lorasel" / "results.sqlite"
    _as_schema_1(db)
    old = load_results(run)  # read-only: the file is left as it was
    assert old.renders["adherence"].isna().all() and list(old.renders.columns) == list(RENDER_COLUMNS)
    pd.testing.assert_frame_equal(
        old.renders.drop(columns="adherence"), clean.renders.drop(columns="adherence")
    )
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == 1
    ranking = rank(old, n_boot=50)
    assert ranking.unmeasured == {"adherence": "stale"}
    assert "adherence was not measured" in ranking.unmeasured_note()
    assert "nothing is rendered again" in ranking.unmeasured_note()
    # The same ranking as one that never weighed adherence.
    from lorasel.rank import Weights

    without = rank(clean, weights=Weights(adherence=0.0), n_boot=50)
    assert ranking.table["score"].tolist() == pytest.approx(without.table["score"].tolist())
    assert rank(old, weights=Weights(adherence=0.0), n_boot=50).unmeasured_note() is None
    # A rerun migrates the store, renders nothing and measures adherence.
    spy = h.RenderSpy(monkeypatch)
    again = _eval(run)
    assert spy.count == 0
    pd.testing.assert_frame_equal(again.renders, clean.renders)
    pd.testing.assert_frame_equal(load_results(run).renders, clean.renders)
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == 2


def test_a_store_missing_a_column_is_one_clear_error(evaluated_copy):
    run, _ = evaluated_copy
    with sqlite3.connect(run / "lorasel" / "results.sqlite") as con:
        con.execute("ALTER TABLE result_renders DROP COLUMN seed_index")
    with pytest.raises(ResultsError, match=r"lack columns \['seed_index'\]") as info:
        load_results(run)
    assert "move it aside" in info.value.hint


class Stop(Exception):
    pass


def test_interrupted_run_resumes_to_identical_results(evaluated, tmp_path, monkeypatch):
    run, clean, _ = evaluated
    events = []

    def stop_after_three_batches(event):
        events.append(event)
        if sum(e.phase == "render" for e in events) == 3:
            raise Stop

    with pytest.raises(Stop):
        _eval(run, workdir=tmp_path / "resumed", progress=stop_after_three_batches)
    with Store.open(tmp_path / "resumed" / "results.sqlite") as store:
        recorded = store._con.execute("SELECT count(*) FROM renders").fetchone()[0]
    # Whole batches only: the base model's 8 renders (batches of 3, 3, 2), then batches of 3 that
    # were already rendered when the callback raised (the writer finishes what it was given).
    assert recorded >= 8 and (recorded - 8) % 3 == 0 and recorded < len(clean.renders) - 3
    with pytest.raises(ResultsError):
        load_results(run, workdir=tmp_path / "resumed")  # nothing half-reported
    events.clear()
    spy = h.RenderSpy(monkeypatch)
    resumed = _eval(run, workdir=tmp_path / "resumed", progress=events.append)
    assert spy.count == len(clean.renders) - recorded
    assert events[0].phase == "start" and events[0].cached == recorded
    pd.testing.assert_frame_equal(resumed.renders, clean.renders)
    pd.testing.assert_frame_equal(resumed.diversity, clean.diversity)
    assert _png_bytes(tmp_path / "resumed", resumed.renders) == _png_bytes(run / "lorasel", clean.renders)


def test_renders_keyed_before_the_fingerprint_left_bookkeeping_out_are_kept(run, monkeypatch):
    """A store written when the base's fingerprint still held transformers' version (every
    upgrade of transformers then lost every cached render) is re-keyed, not re-rendered."""
    from lorasel.evaluate import render

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(render, "BOOKKEEPING_KEYS", frozenset())  # lorasel's keys before the change
        old = _eval(run)
    spy = h.RenderSpy(monkeypatch)
    new = _eval(run)
    assert spy.count == 0
    pd.testing.assert_frame_equal(new.renders, old.renders)  # the same images and scores
    assert new.settings["base_fingerprint"] != old.settings["base_fingerprint"]
    with Store.open(run / "lorasel" / "results.sqlite") as store:
        rows = store._con.execute("SELECT count(*), count(DISTINCT settings) FROM renders").fetchone()
        assert rows == (2 * len(old.renders), 2)  # the old rows stay beside the new ones
        assert store.rekey(old.settings["render_settings"], new.settings["render_settings"], str) == 0


def test_checkpoint_that_appears_later_is_evaluated_alone(evaluated_copy, monkeypatch):
    run, first = evaluated_copy
    h.write_lora(run / "checkpoints" / "zkz-000004.safetensors", seed=4, scale=0.8, epoch=4)
    spy = h.RenderSpy(monkeypatch)
    second = _eval(run)
    assert spy.count == len(STRENGTHS) * PER_GROUP
    assert len(second.checkpoints) == 4
    old = second.renders[second.renders.checkpoint.isin(first.renders.checkpoint)].reset_index(drop=True)
    pd.testing.assert_frame_equal(old, first.renders)


def test_more_seeds_renders_only_the_new_seeds(evaluated_copy, monkeypatch):
    """What `lorasel pick` advises when candidates are tied: --seeds 2N renders seeds N..2N-1 only."""
    run, first = evaluated_copy
    spy = h.RenderSpy(monkeypatch)
    more = _eval(run, seeds=SEEDS + 1)
    new = more.renders[more.renders.seed_index == SEEDS]
    # 4 prompts × 2 seeds = 8 renders per (checkpoint, strength) in batches of 3: the batch that
    # held the 7th and 8th now also holds the first new one, and is rendered again.
    groups = len(first.renders) // (N_PROMPTS * SEEDS)
    assert len(new) == groups * N_PROMPTS
    assert spy.count == len(new) + groups * ((N_PROMPTS * SEEDS) % 3)
    old = more.renders[more.renders.seed_index < SEEDS].reset_index(drop=True)
    pd.testing.assert_frame_equal(old, first.renders)


def test_identical_checkpoint_files_share_their_renders(evaluated_copy, monkeypatch):
    run, first = evaluated_copy
    shutil.copy(
        run / "checkpoints" / "zkz-000002.safetensors", run / "checkpoints" / "copy-000002.safetensors"
    )
    spy = h.RenderSpy(monkeypatch)
    second = _eval(run)
    assert spy.count == 0  # same content hash: the same renders
    copy = second.renders[second.renders.checkpoint == "checkpoints/copy-000002.safetensors"]
    original = first.renders[first.renders.checkpoint == "checkpoints/zkz-000002.safetensors"]
    assert copy.image.tolist() == original.image.tolist() and len(second.checkpoints) == 4


def test_unfit_checkpoint_is_skipped_with_a_warning(evaluated_copy):
    run, first = evaluated_copy
    h.write_lora(run / "checkpoints" / "zkz-000009.safetensors", seed=9, scale=1.0, epoch=9, unfit=True)
    events = []
    results = _eval(run, progress=events.append)
    warnings = [e.message for e in events if e.phase == "warning"]
    # One warning naming the file and the layer it does not fit.
    assert len(warnings) == 1 and warnings[0].startswith("skipping zkz-000009: ") and "attn" in warnings[0]
    pd.testing.assert_frame_equal(results.renders, first.renders)


def test_text_encoder_checkpoint_does_not_leak_into_the_cached_text_embeddings(evaluated, tmp_path):
    clean_run, clean, _ = evaluated
    run = tmp_path / "run"
    shutil.copytree(clean_run / "dataset", run / "dataset")
    shutil.copy(clean_run / "run.toml", run / "run.toml")
    (run / "checkpoints").mkdir()
    shutil.copy(
        clean_run / "checkpoints" / "zkz-000001.safetensors", run / "checkpoints" / "zkz-000001.safetensors"
    )
    shutil.copy(clean_run.parent / "prompts.toml", tmp_path / "prompts.toml")
    # Sorted before the other, so its text-encoder change is applied first.
    h.write_lora(run / "checkpoints" / "a-te.safetensors", seed=7, scale=2.0, epoch=1, text_encoder=True)
    with_te = _eval(run).renders
    te_rows = with_te[with_te.checkpoint.str.contains("a-te")]
    assert len(te_rows) == len(STRENGTHS) * PER_GROUP
    base_images = _png_bytes(run / "lorasel", with_te[with_te.checkpoint == BASE])
    assert set(_png_bytes(run / "lorasel", te_rows).values()).isdisjoint(base_images.values())
    # The checkpoint rendered after it gets exactly the images it gets without it.
    after = with_te[with_te.checkpoint.str.contains("000001")]
    before = clean.renders[clean.renders.checkpoint.str.contains("000001")]
    assert _png_bytes(run / "lorasel", after) == _png_bytes(clean_run / "lorasel", before)


def test_two_shards_render_the_union_of_the_plan(evaluated, tmp_path, monkeypatch):
    """What two `accelerate launch` processes do, in one process: each renders its share."""
    run, single, _ = evaluated
    shared = tmp_path / "shared"
    shares = []
    original = runner_module.shard

    def record(batches, index, count):
        shares.append(original(batches, index, count))
        return shares[-1]

    # Render shard 1 of 2 of the full plan, as process 1 would, into the shared store ...
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner_module, "current_processes", lambda: Processes(1, 2))
        mp.setattr(runner_module, "shard", record)
        mp.setattr(Store, "load_results", lambda self: None)  # process 1 does not score
        _eval(run, workdir=shared)
    with Store.open(shared / "results.sqlite") as store:
        after_one = store._con.execute("SELECT count(*) FROM renders").fetchone()[0]
    assert after_one == sum(len(b.items) for b in shares[0]) and 0 < after_one < len(single.renders)
    # ... then process 0's share of the same plan; then a plain run must find nothing missing.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner_module, "_pending", lambda plan, done: list(plan))
        mp.setattr(runner_module, "current_processes", lambda: Processes(0, 2))
        mp.setattr(runner_module, "shard", record)
        _eval(run, workdir=shared)
    assert {b.keys for b in shares[0]}.isdisjoint({b.keys for b in shares[1]})
    spy = h.RenderSpy(monkeypatch)
    both = _eval(run, workdir=shared)
    assert spy.count == 0
    pd.testing.assert_frame_equal(both.renders, single.renders)
    assert _png_bytes(shared, both.renders) == _png_bytes(run / "lorasel", single.renders)


def test_no_checkpoints_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvaluationError, match="no LoRA checkpoints") as info:
        _eval(tmp_path / "empty", reference=tmp_path)
    assert info.value.hint


def test_foreign_folder_needs_reference_images(tmp_path):
    h.write_lora(tmp_path / "loras" / "x.safetensors", seed=1, scale=0.1, epoch=1)
    (tmp_path / "prompts.toml").write_text(h.TEST_PROMPTS)
    with pytest.raises(EvaluationError, match="no reference images") as info:
        _eval(tmp_path / "loras")
    assert "--reference" in info.value.hint


def test_unreadable_reference_image_fails_before_rendering(run, monkeypatch):
    bad = run / "dataset" / "10_zkz star" / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    spy = h.RenderSpy(monkeypatch)
    with pytest.raises(EvaluationError, match=r"broken\.png"):
        _eval(run)
    assert spy.count == 0


def test_disk_full_while_writing_images_records_nothing_half_written(evaluated, tmp_path, monkeypatch):
    run, clean, _ = evaluated
    calls = {"n": 0}
    real_fsync = os.fsync

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] == 8:  # the 8th PNG's bytes are in its temp file; the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    state = tmp_path / "full"
    with pytest.raises(EvaluationError, match="disk full") as info:
        _eval(run, workdir=state)
    assert "\n" not in info.value.one_line() and "rerun" in info.value.hint
    monkeypatch.setattr(os, "fsync", real_fsync)
    with Store.open(state / "results.sqlite") as store:
        images = [row[0] for row in store._con.execute("SELECT image FROM renders")]
    assert len(images) == 6  # two whole batches; the third failed before its rows were written
    assert all((state / p).is_file() for p in images)
    assert len(list(state.rglob("*.png"))) == 7  # plus the third batch's first image, unrecorded
    assert not list(state.rglob("*.tmp"))
    again = _eval(run, workdir=state)
    pd.testing.assert_frame_equal(again.renders, clean.renders)


def test_database_full_is_one_clear_error(run, tmp_path, monkeypatch):
    real_open = Store.open.__func__

    def tiny_open(cls, path, *, create=True):
        store = real_open(cls, path, create=create)
        pages = store._con.execute("PRAGMA page_count").fetchone()[0]
        store._con.execute(f"PRAGMA max_page_count = {pages + 2}")
        return store

    monkeypatch.setattr(Store, "open", classmethod(tiny_open))
    with pytest.raises(EvaluationError, match="disk full") as info:
        _eval(run, workdir=tmp_path / "w")
    assert "rerun" in info.value.hint


def test_corrupt_database_is_reported_and_left_alone(run):
    db = run / "lorasel" / "results.sqlite"
    db.parent.mkdir()
    db.write_bytes(b"this is not sqlite" * 100)
    for call in (lambda: load_results(run), lambda: _eval(run)):
        with pytest.raises(ResultsError, match="corrupt") as info:
            call()
        assert "move it aside" in info.value.hint
    assert db.read_bytes() == b"this is not sqlite" * 100


def test_load_results_before_any_evaluation(tmp_path):
    with pytest.raises(ResultsError) as info:
        load_results(tmp_path)
    assert "lorasel eval" in info.value.hint
    assert not (tmp_path / "lorasel").exists()
    # An evaluation that never finished scoring leaves no results to load either.
    with Store.open(tmp_path / "lorasel" / "results.sqlite"):
        pass
    with pytest.raises(ResultsError, match="nothing has been evaluated"):
        load_results(tmp_path)


def test_store_roundtrip_of_missing_values(tmp_path):
    with Store.open(tmp_path / "results.sqlite") as store:
        store.record_embeddings("s", "text", {"a": np.array([1.0, 2.0], dtype=np.float32)})
        assert store.embeddings("s", "text", ["a", "b"])["a"].tolist() == [1.0, 2.0]
        assert store.embeddings("other", "text", ["a"]) == {}
        con = store._con
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(sqlite3.ProgrammingError):
        con.execute("SELECT 1")  # closed


# -- several rendering processes on one CPU (evaluate(workers=N)) ---------------------------


def test_a_helper_process_renders_the_same_images_as_this_process(
    evaluated, tiny_base_folder, tmp_path, monkeypatch
):
    """The main process takes no unit here, so the helper renders the whole plan (a helper that
    starts late otherwise finds little left on a plan this small)."""
    from lorasel.evaluate.workers import RenderWorkers

    run, single, _ = evaluated
    monkeypatch.setattr(RenderWorkers, "main_batches", lambda self: iter(()))
    events = []
    results = _eval(
        run, base=tiny_base_folder, workers=2, threads=1, workdir=tmp_path / "w", progress=events.append
    )
    mine, reference = h.pixels(tmp_path / "w", results.renders), h.pixels(run / "lorasel", single.renders)
    assert mine.keys() == reference.keys()
    for key, pixels in reference.items():
        np.testing.assert_array_equal(mine[key], pixels)
    columns = [
        "checkpoint",
        "strength",
        "prompt",
        "seed",
        "fidelity",
        "flexibility",
        "adherence",
        "preservation",
    ]
    pd.testing.assert_frame_equal(results.renders[columns], single.renders[columns])
    # The helper's progress reaches the caller, up to every render of the plan.
    renders = [e for e in events if e.phase == "render"]
    assert renders and renders[-1].done == renders[-1].total == len(single.renders)


def test_a_helper_that_dies_is_one_clear_error_and_a_rerun_finishes(run, tiny_base_folder, monkeypatch):
    import multiprocessing

    from lorasel.evaluate.workers import RenderWorkers

    def kill_helpers(self):
        for proc in multiprocessing.active_children():
            proc.kill()
            proc.join()
        return iter(())

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(RenderWorkers, "main_batches", kill_helpers)
        with pytest.raises(EvaluationError, match="render worker stopped unexpectedly") as info:
            _eval(run, base=tiny_base_folder, workers=2)
    assert "rerun" in info.value.hint
    assert not multiprocessing.active_children()
    assert len(_eval(run, base=tiny_base_folder).renders) == len(STRENGTHS) * PER_GROUP * 3 + PER_GROUP


def test_units_are_taken_once_each_in_plan_order():
    import multiprocessing

    from lorasel.evaluate.plan import Batch
    from lorasel.evaluate.workers import take_units, units_of

    pairs = [("a", 0.5), ("a", 0.5), ("a", 1.0), ("b", 0.5), ("b", 0.5), ("a", 0.5)]
    batches = [Batch(c, "hash", s, (f"item {i}",)) for i, (c, s) in enumerate(pairs)]
    units = units_of(batches)
    assert [len(u) for u in units] == [2, 1, 2, 1]
    counter = multiprocessing.get_context("spawn").Value("q", 0)
    first, second = take_units(units, counter), take_units(units, counter)
    taken = [next(first), next(second), next(first), next(second), *first, *second]
    assert sorted(map(id, taken)) == sorted(map(id, batches))
    assert taken[:3] == [batches[0], batches[2], batches[1]]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"workers": 0}, "workers must be a whole number"),
        ({"workers": 2}, "needs the base as a spec"),
    ],
)
def test_bad_workers_is_an_error_before_any_process_starts(run, kwargs, match):
    import multiprocessing

    with pytest.raises(EvaluationError, match=match):
        _eval(run, **kwargs)
    assert not multiprocessing.active_children()


def test_workers_on_a_gpu_point_to_accelerate(run, tiny_base_folder, monkeypatch):
    import lorasel.models.devices as devices

    monkeypatch.setattr(devices, "default_device", lambda device=None: torch.device("cuda"))
    with pytest.raises(EvaluationError, match="several processes on the CPU") as info:
        _eval(run, base=tiny_base_folder, workers=2)
    assert "accelerate launch" in info.value.hint


def test_workers_share_the_cores_instead_of_each_taking_all(monkeypatch):
    """Without --threads a real base gets torch's default (every core) in one process; with
    several processes each gets its share, or they would all fight for every core."""
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert runner_module._cpu_threads(None, "./sd15", "cpu", workers=1) is None
    assert runner_module._cpu_threads(None, "./sd15", "cpu", workers=2) == 4
    assert runner_module._cpu_threads(None, "./sd15", "cpu", workers=16) == 1
    assert runner_module._cpu_threads(None, "toy", "cpu", workers=2) == 1
    assert runner_module._cpu_threads(3, "./sd15", "cpu", workers=2) == 3


def test_a_helpers_own_error_reaches_the_caller_as_one_clear_error(run, tiny_base_folder, monkeypatch):
    """The helper checks that it loaded the base the plan was made with; a mismatch (here: a plan
    with another fingerprint) is its error, relayed with its hint."""
    import dataclasses
    import multiprocessing

    from lorasel.evaluate.workers import RenderWorkers

    share = RenderWorkers.share

    def share_other_base(self, plan, reporter):
        settings = dataclasses.replace(plan.settings, base_fingerprint="another base")
        share(self, dataclasses.replace(plan, settings=settings), reporter)

    monkeypatch.setattr(RenderWorkers, "share", share_other_base)
    monkeypatch.setattr(RenderWorkers, "main_batches", lambda self: iter(()))
    with pytest.raises(EvaluationError, match="loaded a different base") as info:
        _eval(run, base=tiny_base_folder, workers=2)
    assert "changed on disk" in info.value.hint
    assert not multiprocessing.active_children()


def _likely_best(results, weights=None) -> set[tuple[str, float]]:
    from lorasel.rank import rank

    table = rank(results, weights=weights).table
    chosen = table[table["rank"].notna() & (table["tied"] | (table["rank"] == 1))]
    return set(zip(chosen["checkpoint"], chosen["strength"].astype(float), strict=True))


def test_refine_renders_more_seeds_for_the_likely_best_and_the_base_only(evaluated_copy, monkeypatch):
    run, first = evaluated_copy
    chosen = _likely_best(first)
    groups = len(first.renders) // PER_GROUP - 1  # (checkpoint, strength) pairs, the base aside
    assert 1 <= len(chosen) < groups  # else this test would not tell a refinement from more seeds
    spy = h.RenderSpy(monkeypatch)
    events = []
    refined = _eval(run, refine=2, progress=events.append)
    new = refined.renders[refined.renders.seed_index >= SEEDS]
    got = set(zip(new["checkpoint"], new["strength"].astype(float), strict=True)) - {(BASE, 0.0)}
    assert spy.count == len(new) == (len(got) + 1) * N_PROMPTS * 2
    # The first set, and any candidate that joins the set once they are refined, until none does.
    assert chosen <= got and _likely_best(refined) <= got
    assert set(new.loc[new.checkpoint == BASE, "seed_index"]) == {SEEDS, SEEDS + 1}
    old = refined.renders[refined.renders.seed_index < SEEDS].reset_index(drop=True)
    pd.testing.assert_frame_equal(old, first.renders)
    # Diversity stays over the seeds every candidate has: unchanged for all.
    pd.testing.assert_frame_equal(refined.diversity, first.diversity)
    starts = [e.message for e in events if e.phase == "start"]
    assert starts[1].startswith(f"refining {len(chosen)} of {groups} candidates (the 95% set for the best)")
    assert len(starts) == 2 + (got != chosen)  # here one more round at most
    assert all(m.startswith("refining ") and "more of" in m for m in starts[2:])
    assert refined.settings["refine"] == 2

    # Run again: nothing is rendered, the results are the same.
    spy.count = 0
    again = _eval(run, refine=2)
    assert spy.count == 0
    pd.testing.assert_frame_equal(again.renders, refined.renders)

    # The refinement's renders are those of an evaluation with 2 more seeds: it reuses them.
    more = _eval(run, seeds=SEEDS + 2)
    reused = more.renders.merge(new[["checkpoint", "strength", "prompt", "seed_index", "image"]],
                                on=["checkpoint", "strength", "prompt", "seed_index"])  # fmt: skip
    assert len(reused) == len(new)
    assert (reused["image_x"] == reused["image_y"]).all()


def test_refine_with_a_helper_process_renders_the_same_images(evaluated, tiny_base_folder, tmp_path):
    """The helper renders the refinement's plan too (a second plan after its first)."""
    run, _, _ = evaluated
    one = _eval(run, base=tiny_base_folder, threads=1, refine=1, workdir=tmp_path / "one")
    two = _eval(run, base=tiny_base_folder, workers=2, threads=1, refine=1, workdir=tmp_path / "two")
    assert (one.renders.seed_index == SEEDS).any()
    mine, reference = h.pixels(tmp_path / "two", two.renders), h.pixels(tmp_path / "one", one.renders)
    assert mine.keys() == reference.keys()
    for key, pixels in reference.items():
        np.testing.assert_array_equal(mine[key], pixels)


def test_refine_takes_the_set_of_the_weights_given(evaluated_copy):
    from lorasel.rank import Weights

    run, first = evaluated_copy
    weights = Weights(fidelity=0, flexibility=1, adherence=0)
    chosen = _likely_best(first, weights)
    assert chosen != _likely_best(first)  # else this test could not tell the weights apart
    events = []
    refined = _eval(run, refine=1, weights=weights, progress=events.append)
    starts = [e.message for e in events if e.phase == "start"]
    assert starts[1].startswith(f"refining {len(chosen)} of ")
    new = refined.renders[(refined.renders.seed_index == SEEDS) & (refined.renders.checkpoint != BASE)]
    got = set(zip(new["checkpoint"], new["strength"].astype(float), strict=True))
    assert chosen <= got and _likely_best(refined, weights) <= got
    assert refined.settings["refine_weights"] == weights.as_dict()
    with pytest.raises(EvaluationError, match=r"weights must be lorasel\.rank\.Weights"):
        _eval(run, refine=1, weights="flexibility=1")


@pytest.mark.parametrize("refine", [-1, 1.5, True, "2"])
def test_bad_refine_is_an_error_before_rendering(run, refine, monkeypatch):
    spy = h.RenderSpy(monkeypatch)
    with pytest.raises(EvaluationError, match="refine must be a whole number ≥ 0"):
        _eval(run, refine=refine)
    assert spy.count == 0
