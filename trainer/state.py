"""Training state for ``--resume``: adapter weights, optimizer, LR scheduler and progress in one file.

One safetensors file (``RUN_DIR/train_state/state.safetensors``), replaced atomically at each
checkpoint: after a kill -9 the file is either the previous state or the new one, never a mix.
Tensors are stored as tensors; the optimizer's scalar state, its param groups, the scheduler
and the progress counters as JSON in the metadata. No pickle anywhere (accelerate's
``save_state`` pickles the optimizer and RNG states, so it is not used).

No RNG state is saved either: the loop derives every random draw from (seed, step), so
the position in training is all a resumed run needs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lorasel.errors import LoraselError
from lorasel.io import atomic_write_bytes

STATE_KEY = "lorasel_training_state"
VERSION = 1


@dataclass(frozen=True)
class TrainingState:
    params: dict[str, torch.Tensor]
    optimizer: dict[str, Any]  # torch state_dict layout
    scheduler: dict[str, Any]
    progress: dict[str, Any]  # step, epoch, batch, session info, checkpoints


def _optimizer_to_file(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state_dict["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"scalars": scalars, "param_groups": state_dict["param_groups"]}


def _optimizer_from_file(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_training_state(
    path: Path,
    *,
    params: dict[str, torch.Tensor],
    optimizer: dict[str, Any],
    scheduler: dict[str, Any],
    progress: dict[str, Any],
) -> None:
    """Write the state file atomically (temp + rename)."""
    from safetensors.torch import save

    opt_tensors, opt_meta = _optimizer_to_file(optimizer)
    tensors = {f"param.{k}": v.detach().cpu().contiguous() for k, v in params.items()} | opt_tensors
    header = {"version": VERSION, "optimizer": opt_meta, "scheduler": scheduler, "progress": progress}
    atomic_write_bytes(path, save(tensors, metadata={STATE_KEY: json.dumps(header)}))


def load_training_state(path: Path) -> TrainingState:
    """Read a state file written by :func:`save_training_state`."""
    from safetensors import safe_open

    hint = "start a new run, or resume a run directory that has saved a checkpoint"
    if not path.is_file():
        raise LoraselError(f"no training state at {path}", hint=hint)
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = json.loads((handle.metadata() or {})[STATE_KEY])
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118 (safe_open is not iterable)
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise LoraselError(f"training state {path} is unreadable: {exc}", hint=hint) from None
    if header.get("version") != VERSION:
        raise LoraselError(f"training state {path} has unknown version {header.get('version')!r}", hint=hint)
    progress = header.get("progress")
    fields = {"step": int, "epoch": int, "group": int, "info": dict, "checkpoints": list}
    if not isinstance(progress, dict) or not all(isinstance(progress.get(k), t) for k, t in fields.items()):
        raise LoraselError(f"training state {path} is damaged (bad progress record)", hint=hint)
    if not all(isinstance(name, str) and "/" not in name for name in progress["checkpoints"]):
        raise LoraselError(f"training state {path} is damaged (bad checkpoint names)", hint=hint)
    params = {k[len("param.") :]: v for k, v in tensors.items() if k.startswith("param.")}
    return TrainingState(
        params=params,
        optimizer=_optimizer_from_file(tensors, header["optimizer"]),
        scheduler=header["scheduler"],
        progress=progress,
    )
