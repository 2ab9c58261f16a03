"""Find any trainer's LoRA checkpoints in a folder, group them by run, and order them.

Reads headers only (names, metadata): listing 100 checkpoints loads no tensor.
Naming schemes (REFERENCE §2): kohya ``name-000004`` / ``name-step00000500`` / final
``name``; ai-toolkit ``job_000000500``; OneTrainer ``...-save-{step}-{epoch}-{epoch_step}``;
diffusers / SimpleTuner ``checkpoint-{step}/pytorch_lora_weights.safetensors``.
Order within a run: by step (metadata, else name), else by epoch, the un-numbered final
file last.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

from lorasel.checkpoints.files import read_header, refuse_pickle
from lorasel.checkpoints.keys import looks_like_lora
from lorasel.checkpoints.metadata import other_model, parse_checkpoint_dir, parse_name, progress_from_metadata
from lorasel.errors import CheckpointError
from lorasel.io import is_temporary
from lorasel.rundir import STATE_DIRNAME

log = logging.getLogger("lorasel.checkpoints")

# Folders that hold lorasel's own output, never checkpoints.
SKIP_DIRS = {STATE_DIRNAME, "report"}
# The weight files diffusers, SimpleTuner and PEFT write inside their checkpoint folders.
ADAPTER_FILES = ("pytorch_lora_weights.safetensors", "adapter_model.safetensors")
# What accelerate's save_state writes beside the model it saves: kohya's --save_state folders
# (name-000004-state/, with its train_state.json) hold the same LoRA as name-000004.safetensors,
# without metadata, as model.safetensors; evaluated, each would be a second, unordered copy.
_STATE_FILES = ("optimizer.bin", "scheduler.bin", "random_states_0.pkl", "train_state.json")


@dataclass(frozen=True)
class CheckpointEntry:
    """One checkpoint file found by ``discover``: where it is, which run, how far it trained."""

    path: Path
    run: str
    epoch: int | None
    step: int | None
    label: str
    final: bool


@dataclass(frozen=True)
class NameInfo:
    run: str
    run_dir: Path
    epoch: int | None
    step: int | None
    scheme: str | None


def name_info(path: Path) -> NameInfo:
    """What a checkpoint's path says about its run, epoch and step (no file access)."""
    if path.name in ADAPTER_FILES:
        step = parse_checkpoint_dir(path.parent.name)
        if step is not None:
            return NameInfo(path.parent.parent.name, path.parent.parent, None, step, "diffusers")
        return NameInfo(path.parent.name, path.parent, None, None, None)
    info = parse_name(path.stem)
    return NameInfo(info["run"], path.parent, info["epoch"], info["step"], info["scheme"])


def progress(path: Path, metadata: dict[str, str]) -> tuple[int | None, int | None]:
    """(epoch, step): metadata first (``ss_steps``, ``training_info``), else the name."""
    info = name_info(path)
    epoch, step = progress_from_metadata(metadata, info.scheme)
    return (epoch if epoch is not None else info.epoch, step if step is not None else info.step)


def candidate_files(root: Path):
    """The ``.safetensors`` files ``discover`` looks at under ``root`` (no file is opened)."""
    for dirpath, dirnames, filenames in os.walk(root):
        if "meta.json" in filenames and "optimizer" in dirnames:
            # A OneTrainer backup (``backup/<time>-backup-<step>-<epoch>-<epoch_step>/``): its
            # ``lora/lora.safetensors`` is a training state to resume from; the saves are in save/.
            log.info("skipping %s: a OneTrainer backup", dirpath)
            dirnames[:] = []
            continue
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        in_checkpoint_dir = parse_checkpoint_dir(Path(dirpath).name) is not None
        in_state_dir = any(name in _STATE_FILES for name in filenames)
        for name in sorted(filenames):
            if not name.lower().endswith(".safetensors") or name.startswith("."):
                continue
            if (in_checkpoint_dir or in_state_dir) and name not in ADAPTER_FILES:
                log.info("skipping %s: a training state saved by accelerate", Path(dirpath) / name)
                continue  # accelerate's model/optimizer states live beside the LoRA
            path = Path(dirpath) / name
            if not is_temporary(path):
                yield path


def _label(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    if path.name in ADAPTER_FILES:
        rel = rel.parent
    return rel.as_posix() if rel.as_posix() != "." else "final"


def discover(path: str | os.PathLike) -> list[CheckpointEntry]:
    """Every LoRA checkpoint under ``path`` (a folder or one file), grouped by run, in training order.

    Files that are not LoRAs (a base model beside them) are left out; so are unreadable or
    half-written ones, with a logged warning: a trainer may still be writing into the folder.
    """
    root = Path(path).expanduser()
    refuse_pickle(root)
    if not root.exists():
        raise CheckpointError(f"{root} not found", hint="pass a folder of checkpoints or a .safetensors file")
    if root.is_file():
        header = read_header(root)
        if not _lora_for_anything(list(header.tensors)):
            raise CheckpointError(f"{root} is not a LoRA checkpoint", hint="pass a LoRA .safetensors file")
        return [_entry(root, root.parent, header.metadata)]
    groups: dict[tuple[str, str], list[CheckpointEntry]] = {}
    for file in candidate_files(root):
        try:
            header = read_header(file)
        except CheckpointError as exc:
            log.warning("skipping %s: %s", file, exc.message)
            continue
        if not _lora_for_anything(list(header.tensors)):
            log.info("skipping %s: not a LoRA", file)
            continue
        info = name_info(file)
        entry = _entry(file, root, header.metadata)
        run_dir = info.run_dir.relative_to(root).as_posix()
        groups.setdefault((run_dir, entry.run), []).append(entry)
    ordered: list[CheckpointEntry] = []
    for key in sorted(groups):
        ordered += sorted(groups[key], key=_order)
    return ordered


def _lora_for_anything(keys: list[str]) -> bool:
    """A LoRA by its key names, also one for a model lorasel does not render (Flux, SD 3, ...),
    which reading then refuses by name rather than leaving it out unsaid."""
    return looks_like_lora(keys) or other_model(keys) is not None


def _entry(file: Path, root: Path, metadata: dict[str, str]) -> CheckpointEntry:
    info = name_info(file)
    epoch, step = progress(file, metadata)
    return CheckpointEntry(
        path=file, run=info.run, epoch=epoch, step=step, label=_label(file, root), final=info.scheme is None
    )


def _order(e: CheckpointEntry) -> tuple:
    """Final file last; then by step where known, else by epoch; the label breaks ties."""
    return (
        e.final,
        e.step if e.step is not None else math.inf,
        e.epoch if e.epoch is not None else math.inf,
        e.label,
    )
