"""Progress events: the loop reports through a callback, never by printing.

The CLI turns them into a progress bar; a TUI or a test can consume the same
events. Every event is a small frozen dataclass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from trainer.plan import StepPlan


@dataclass(frozen=True)
class Started:
    """Training is about to start: the step arithmetic and where the run lives."""

    run_dir: Path
    plan: StepPlan
    first_step: int  # 0 for a fresh run; the resumed step otherwise


@dataclass(frozen=True)
class Status:
    """A phase without steps (loading the model, caching latents)."""

    message: str


@dataclass(frozen=True)
class Step:
    """One optimizer step is done."""

    step: int
    total_steps: int
    epoch: int
    loss: float
    lr: float
    it_per_s: float


@dataclass(frozen=True)
class Validated:
    """The fixed-seed validation loss of an epoch."""

    step: int
    epoch: int
    val_loss: float


@dataclass(frozen=True)
class CheckpointSaved:
    path: Path
    epoch: int
    step: int


@dataclass(frozen=True)
class Finished:
    result: RunResult


@dataclass(frozen=True)
class RunResult:
    """What a finished run produced."""

    run_dir: Path
    checkpoints: tuple[Path, ...]
    steps: int
    epochs: int
    plan: StepPlan
    final_loss: float
    seconds: float


Event = Started | Status | Step | Validated | CheckpointSaved | Finished
Progress = Callable[[Event], None]
