"""The run directory: the contract between the trainer and the evaluator.

    RUN_DIR/
      run.toml                    resolved training config
      checkpoints/NAME-000001.safetensors ...
      logs/loss.csv               step, epoch, loss, lr[, val_loss]
      lorasel/                    evaluator state (results database, renders)
      report/                     report.html, scores.csv

A foreign folder of checkpoints (any trainer) works the same way: lorasel keeps
its state in ``PATH/lorasel/`` unless a work directory is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STATE_DIRNAME = "lorasel"


@dataclass(frozen=True)
class RunDir:
    """Paths inside a run directory (or a foreign folder of checkpoints)."""

    root: Path
    workdir: Path | None = None

    @classmethod
    def at(cls, path: str | Path, workdir: str | Path | None = None) -> RunDir:
        root = Path(path).expanduser().resolve()
        return cls(root=root, workdir=Path(workdir).expanduser().resolve() if workdir else None)

    @property
    def config(self) -> Path:
        return self.root / "run.toml"

    @property
    def checkpoints(self) -> Path:
        """Where our trainer writes checkpoints; a foreign folder holds them at its root."""
        sub = self.root / "checkpoints"
        return sub if sub.is_dir() else self.root

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def loss_csv(self) -> Path:
        return self.logs / "loss.csv"

    @property
    def state(self) -> Path:
        """Evaluator state: results database and rendered images (resumable)."""
        return self.workdir if self.workdir is not None else self.root / STATE_DIRNAME

    @property
    def results_db(self) -> Path:
        return self.state / "results.sqlite"

    @property
    def renders(self) -> Path:
        return self.state / "renders"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def dataset(self) -> Path:
        """The training images of a lorasel run (copied or linked by the trainer)."""
        return self.root / "dataset"

    def is_lorasel_run(self) -> bool:
        return self.config.is_file()
