"""``RUN_DIR/logs/loss.csv``: one row per optimizer step, flushed as it is written.

Columns are exactly ``step,epoch,loss,lr`` (``,val_loss`` when validation is on;
filled on the last step of a validated epoch, empty otherwise). A reader may
watch the file while training runs. On resume, rows past the resumed step (from
the interrupted run) are dropped before appending.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from lorasel.io import atomic_write_text

COLUMNS = ("step", "epoch", "loss", "lr")


class LossLog:
    def __init__(self, path: Path, *, validation: bool, resume_step: int | None = None) -> None:
        self.path = path
        self.columns = (*COLUMNS, "val_loss") if validation else COLUMNS
        header = ",".join(self.columns) + "\n"
        if resume_step is not None and path.is_file():
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)[1:]
            # A line without its newline was torn by the kill: drop it.
            kept = [ln for ln in lines if ln.endswith("\n") and _step_of(ln) <= resume_step]
            atomic_write_text(path, header + "".join(kept))
        else:
            atomic_write_text(path, header)
        self._handle = open(path, "a", encoding="utf-8", newline="")  # noqa: SIM115 (open for the whole run)
        self._writer = csv.writer(self._handle, lineterminator="\n")

    def write(self, step: int, epoch: int, loss: float, lr: float, val_loss: float | None = None) -> None:
        row = [step, epoch, f"{loss:.6g}", f"{lr:.6g}"]
        if len(self.columns) == 5:
            row.append("" if val_loss is None or math.isnan(val_loss) else f"{val_loss:.6g}")
        self._writer.writerow(row)
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def _step_of(line: str) -> int:
    try:
        return int(line.split(",", 1)[0])
    except ValueError:
        return 1 << 62  # not a data row: drop it
