"""Any trainer's LoRA checkpoints: find them, read them, apply them at any strength.

- ``discover(path)`` → ordered ``CheckpointEntry`` list (headers only, fast);
- ``read_checkpoint(path)`` → a validated ``LoraCheckpoint`` (kohya, LyCORIS, PEFT, diffusers);
- ``file_hash(path)`` → SHA-256 of the file (the render cache key), memoised;
- ``apply(pipeline, checkpoint, strength)`` / ``restore(pipeline)``: merge W0 + s·ΔW in place,
  and put the base back bit-exactly;
- ``module_delta(module)``: a module's full-strength γ·ΔW (float32);
- ``save_checkpoint`` (``lorasel.checkpoints.write``): write kohya-style files.
"""

from __future__ import annotations

from lorasel.checkpoints.deltas import module_delta
from lorasel.checkpoints.discover import CheckpointEntry, discover
from lorasel.checkpoints.files import file_hash
from lorasel.checkpoints.merge import apply, current, restore
from lorasel.checkpoints.model import LoraCheckpoint, LoraModule
from lorasel.checkpoints.read import read_checkpoint
from lorasel.checkpoints.write import save_checkpoint

__all__ = [
    "CheckpointEntry",
    "LoraCheckpoint",
    "LoraModule",
    "apply",
    "current",
    "discover",
    "file_hash",
    "module_delta",
    "read_checkpoint",
    "restore",
    "save_checkpoint",
]
