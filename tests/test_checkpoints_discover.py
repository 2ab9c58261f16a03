"""Discovery: every trainer's naming scheme, grouping by run, ordering, and what is skipped."""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lorasel.checkpoints import discover
from lorasel.errors import CheckpointError

TINY = {"lora_unet_mid_block_attentions_0_proj_in.lora_down.weight": torch.zeros(1, 2)}
TINY["lora_unet_mid_block_attentions_0_proj_in.lora_up.weight"] = torch.zeros(2, 1)


def fake(path: Path, metadata: dict[str, str] | None = None, tensors=None) -> Path:
    """A small LoRA-shaped file: what discovery needs is names and metadata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors or TINY, path, metadata=metadata)
    return path


def _names(entries) -> list[str]:
    return [e.path.name if not e.path.name.startswith("pytorch_") else e.label for e in entries]


def _create_shuffled(root: Path, names: list[str], meta=lambda name: None) -> None:
    shuffled = list(names)
    random.Random(0).shuffle(shuffled)
    for name in shuffled:
        fake(root / name, meta(name))


def test_kohya_epochs_by_name_final_file_last(tmp_path):
    names = [f"zkz-{i:06d}.safetensors" for i in (1, 2, 3, 10, 12)] + ["zkz.safetensors"]
    _create_shuffled(tmp_path, names)
    entries = discover(tmp_path)
    assert _names(entries) == names
    assert [e.epoch for e in entries] == [1, 2, 3, 10, 12, None]
    assert [e.final for e in entries] == [False] * 5 + [True]
    assert {e.run for e in entries} == {"zkz"}
    assert entries[0].label == "zkz-000001"


def test_kohya_step_saves_and_ss_epoch_quirk(tmp_path):
    # Step saves carry the 0-based running epoch; epoch saves carry epoch + 1 (REFERENCE §2).
    fake(tmp_path / "run-step00000050.safetensors", {"ss_steps": "50", "ss_epoch": "0"})
    fake(tmp_path / "run-step00001000.safetensors", {"ss_steps": "1000", "ss_epoch": "3"})
    fake(tmp_path / "run-000002.safetensors", {"ss_steps": "600", "ss_epoch": "2"})
    fake(tmp_path / "run-step00000500.safetensors", {"ss_steps": "500", "ss_epoch": "1"})
    fake(tmp_path / "run.safetensors", {"ss_steps": "1200", "ss_epoch": "4"})
    entries = discover(tmp_path)
    assert [e.step for e in entries] == [50, 500, 600, 1000, 1200]
    assert [e.epoch for e in entries] == [1, 2, 2, 4, 4]
    assert entries[-1].final


def test_metadata_step_beats_the_name(tmp_path):
    # e.g. a resumed run whose epoch numbers restarted: ss_steps is the truth.
    for epoch, step in [(1, 300), (2, 100), (3, 200)]:
        fake(tmp_path / f"run-{epoch:06d}.safetensors", {"ss_steps": str(step)})
    entries = discover(tmp_path)
    assert [(e.label, e.step) for e in entries] == [
        ("run-000002", 100),
        ("run-000003", 200),
        ("run-000001", 300),
    ]


def test_kohya_step_saves_without_metadata(tmp_path):
    names = [f"x-step{s:08d}.safetensors" for s in (250, 500, 1000, 2000)] + ["x.safetensors"]
    _create_shuffled(tmp_path, names)
    entries = discover(tmp_path)
    assert _names(entries) == names
    assert [e.step for e in entries] == [250, 500, 1000, 2000, None]


def test_ai_toolkit_names_and_training_info(tmp_path):
    names = [f"job_{s:09d}.safetensors" for s in (250, 500, 1750)] + ["job.safetensors"]
    _create_shuffled(
        tmp_path,
        names,
        lambda n: {"training_info": json.dumps({"step": 7})} if n == "job.safetensors" else None,
    )
    # ai-toolkit keeps its optimizer state beside the LoRAs, as one file: not a state folder.
    (tmp_path / "optimizer.pt").write_bytes(b"\x80 never opened")
    (tmp_path / "config.yaml").write_text("job: extension\n")
    entries = discover(tmp_path)
    assert _names(entries) == names
    assert [e.step for e in entries] == [250, 500, 1750, 7]  # the final's step comes from training_info


def test_onetrainer_names_group_across_timestamps(tmp_path):
    names = [
        "myrun2024-05-01_10-00-00-save-150-1-50.safetensors",  # mid-epoch 2 (0-based counter 1)
        "myrun2024-05-01_10-30-00-save-300-3-0.safetensors",  # end of epoch 3
        "myrun2024-05-01_11-00-00-save-1200-11-100.safetensors",
    ]
    _create_shuffled(tmp_path, names)
    entries = discover(tmp_path)
    assert _names(entries) == names
    assert {e.run for e in entries} == {"myrun"}
    assert [(e.step, e.epoch) for e in entries] == [(150, 2), (300, 3), (1200, 12)]


def test_diffusers_checkpoint_folders(tmp_path):
    run = tmp_path / "output"
    for step in (1500, 500, 1000):
        fake(run / f"checkpoint-{step}" / "pytorch_lora_weights.safetensors")
        fake(run / f"checkpoint-{step}" / "model.safetensors", tensors={"conv_in.weight": torch.zeros(1)})
        (run / f"checkpoint-{step}" / "optimizer.bin").write_bytes(b"\x80 pickle, never opened")
    fake(run / "pytorch_lora_weights.safetensors")
    entries = discover(tmp_path)
    assert [e.label for e in entries] == [
        "output/checkpoint-500",
        "output/checkpoint-1000",
        "output/checkpoint-1500",
        "output",
    ]
    assert [e.step for e in entries] == [500, 1000, 1500, None]
    assert [e.final for e in entries] == [False, False, False, True]
    assert {e.run for e in entries} == {"output"}


@pytest.mark.parametrize("beside", ["train_state.json", "optimizer.bin", "random_states_0.pkl"])
def test_kohya_save_state_folders_are_not_second_copies(tmp_path, beside):
    """kohya's --save_state writes accelerate's state beside each save: ``name-000001-state/``
    holds the LoRA again as ``model.safetensors`` (no metadata), which is not another checkpoint."""
    for epoch in (1, 2):
        fake(tmp_path / f"zkz-{epoch:06d}.safetensors", {"ss_epoch": str(epoch)})
        state = tmp_path / f"zkz-{epoch:06d}-state"
        fake(state / "model.safetensors")
        (state / beside).write_bytes(b"\x80 never opened")
    fake(tmp_path / "zkz-state" / "model.safetensors")  # the last state: kohya's LAST_STATE_NAME
    (tmp_path / "zkz-state" / "train_state.json").write_text('{"current_epoch": 2, "current_step": 80}')
    assert [e.label for e in discover(tmp_path)] == ["zkz-000001", "zkz-000002"]


def test_onetrainer_backups_are_not_checkpoints(tmp_path):
    """A OneTrainer workspace: the saves in save/ are the checkpoints; each backup/ folder holds a
    training state (lora/lora.safetensors, optimizer/, meta.json) to resume from."""
    for step, epoch in ((40, 0), (80, 1)):
        fake(tmp_path / "save" / f"star-2024-05-01_10-00-00-save-{step}-{epoch}-0.safetensors")
        backup = tmp_path / "backup" / f"2024-05-01_10-3{epoch}-00-backup-{step}-{epoch}-0"
        fake(backup / "lora" / "lora.safetensors")
        (backup / "optimizer").mkdir()
        (backup / "optimizer" / "optimizer.pt").write_bytes(b"\x80 never opened")
        (backup / "meta.json").write_text(json.dumps({"train_progress": {"global_step": step}}))
    assert [e.step for e in discover(tmp_path)] == [40, 80]
    assert all(e.path.parent.name == "save" for e in discover(tmp_path))


def test_comfyui_save_lora_names(tmp_path):
    """ComfyUI's Save LoRA Weights node: ``{prefix}_{steps}_steps_{counter:05}_``."""
    for steps, counter in ((500, 2), (1000, 3), (250, 1)):
        fake(tmp_path / f"ComfyUI_trained_lora_{steps}_steps_{counter:05d}_.safetensors")
    entries = discover(tmp_path)
    assert [e.step for e in entries] == [250, 500, 1000]
    assert {e.run for e in entries} == {"ComfyUI_trained_lora"}


def test_runs_are_grouped_and_ordered_each(tmp_path):
    for name in ["b-000002", "a-000001", "b-000001", "a", "a-000002"]:
        fake(tmp_path / f"{name}.safetensors")
    entries = discover(tmp_path)
    assert [(e.run, e.label) for e in entries] == [
        ("a", "a-000001"),
        ("a", "a-000002"),
        ("a", "a"),
        ("b", "b-000001"),
        ("b", "b-000002"),
    ]


def test_skips_state_report_hidden_temporary_non_lora_and_broken_files(tmp_path, caplog):
    fake(tmp_path / "good-000001.safetensors")
    fake(tmp_path / "lorasel" / "cache-000001.safetensors")  # evaluator state
    fake(tmp_path / "report" / "r-000001.safetensors")
    fake(tmp_path / ".hidden" / "h-000001.safetensors")
    fake(tmp_path / ".good-000002.safetensors.a1b2.tmp")  # an atomic write in progress
    fake(tmp_path / "base.safetensors", tensors={"model.diffusion_model.out.2.weight": torch.zeros(2)})
    data = (tmp_path / "good-000001.safetensors").read_bytes()
    (tmp_path / "good-000003.safetensors").write_bytes(data[: len(data) - 4])  # still being written
    (tmp_path / "model.ckpt").write_bytes(b"pickle")
    with caplog.at_level(logging.WARNING, logger="lorasel.checkpoints"):
        entries = discover(tmp_path)
    assert [e.label for e in entries] == ["good-000001"]
    assert "good-000003.safetensors" in caplog.text and "truncated" in caplog.text


def test_a_lora_for_another_model_is_found_so_reading_it_can_say_so(tmp_path):
    """diffusers' Flux LoRA keys are no SD LoRA keys; left out, a folder of them read as empty.
    Found, reading names the model; a full Flux model beside them stays out."""
    fake(tmp_path / "sd-000001.safetensors")
    flux = {"transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight": torch.zeros(1, 2)}
    fake(tmp_path / "flux-000001.safetensors", tensors=flux)
    fake(tmp_path / "flux1-dev.safetensors", tensors={"double_blocks.0.img_attn.proj.weight": torch.zeros(2)})
    assert sorted(_names(discover(tmp_path))) == ["flux-000001.safetensors", "sd-000001.safetensors"]


def test_discovers_100_checkpoints_from_headers_only(tmp_path, monkeypatch):
    for i in range(100):
        fake(tmp_path / f"big-{i + 1:06d}.safetensors", {"ss_steps": str(10 * (i + 1))})

    def no_tensor_loads(*args, **kwargs):
        raise AssertionError("discovery must not load tensors")

    import safetensors
    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "load", no_tensor_loads)
    monkeypatch.setattr(safetensors.torch, "load_file", no_tensor_loads)
    monkeypatch.setattr(safetensors, "safe_open", no_tensor_loads)
    start = time.perf_counter()
    entries = discover(tmp_path)
    elapsed = time.perf_counter() - start
    assert [e.step for e in entries] == [10 * (i + 1) for i in range(100)]
    assert elapsed < 2.0  # headers only: milliseconds per file even on a busy machine


def test_a_single_file_and_bad_paths(tmp_path):
    file = fake(tmp_path / "one-000003.safetensors", {"ss_steps": "30"})
    [entry] = discover(file)
    assert (entry.epoch, entry.step, entry.run) == (3, 30, "one")
    with pytest.raises(CheckpointError, match="not found"):
        discover(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="pickle"):
        discover(tmp_path / "weights.ckpt")
    assert discover(tmp_path / "one-000003.safetensors")  # a file works, a folder works
    empty = tmp_path / "empty"
    empty.mkdir()
    assert discover(empty) == []
