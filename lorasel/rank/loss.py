"""Training loss beside measured quality: read loss logs, attribute them to checkpoints, correlate.

Sources, in order: lorasel's ``RUN_DIR/logs/loss.csv`` (``step, epoch, loss, lr[, val_loss]``),
then kohya's TensorBoard event files (``loss/current`` per step, falling back to
``loss/average``; validation from ``loss/validation/step_average`` per step or
``loss/validation/epoch_average`` per epoch, which kohya logs with the epoch as TensorBoard
step). Reading TensorBoard needs the optional ``tensorboard`` package: without it lorasel warns
and goes on without loss.

**Loss of a checkpoint** = the mean training loss of the epoch that ends at the checkpoint's
step (the rows of the log with the epoch of the last row at or before that step, up to the
step; if that row opens its epoch, as in a log counting steps from 0, the epoch before). When
the log has no epoch column, the mean over the steps since the previous
checkpoint. When the checkpoint has no step, the rows of its epoch (epochs numbered as in
kohya's file names: 1 = the first epoch). **Validation loss** = the last one logged at or before
the checkpoint's step within that window (validation is a point measurement, not a mean).

**Correlation**: the Spearman rank correlation over checkpoints between loss and the score the
checkpoint reaches at its best strength. If loss were a good selector it would be strongly
negative (lower loss, higher score); overfitting makes it weak or positive.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lorasel.errors import LoraselError, ResultsError

LOSS_CSV_COLUMNS = ("step", "epoch", "loss", "lr")
TB_TRAIN_TAGS = ("loss/current", "loss/average")
TB_VAL_STEP_TAG = "loss/validation/step_average"
TB_VAL_EPOCH_TAG = "loss/validation/epoch_average"
TB_GLOB = "events.out.tfevents.*"


class LossLogWarning(UserWarning):
    """A loss log exists but cannot be used (unreadable, or tensorboard is not installed)."""


@dataclass(frozen=True)
class LossLog:
    """Per-step training loss. ``steps``: ``step`` (int), ``epoch`` (Int64, may be NA), ``loss``,
    ``val_loss`` (NaN where none). ``epoch_val_loss``: validation loss by epoch number, when the
    log only has it per epoch. ``source``: where it was read from."""

    steps: pd.DataFrame
    source: str
    epoch_val_loss: pd.Series | None = None


# --------------------------------------------------------------------------- reading


def read_loss_csv(path: str | Path) -> LossLog:
    """Read lorasel's ``logs/loss.csv``; raises ResultsError naming the file when it is malformed."""
    path = Path(path)
    hint = "the trainer writes columns step, epoch, loss, lr[, val_loss]; delete or fix the file"
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ResultsError(f"cannot read loss log {path}: {exc}", hint=hint) from None
    missing = [c for c in ("step", "loss") if c not in frame.columns]
    if missing:
        raise ResultsError(f"loss log {path} lacks column(s) {missing}", hint=hint)
    out = pd.DataFrame()
    for column in ("step", "epoch", "loss", "val_loss"):
        if column not in frame.columns:
            out[column] = np.nan
            continue
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() & frame[column].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise ResultsError(
                f"loss log {path} has a non-numeric {column} {frame[column].iloc[row]!r} on data row {row + 1}",
                hint=hint,
            )
        out[column] = values
    if out["step"].isna().any():
        raise ResultsError(f"loss log {path} has rows without a step", hint=hint)
    return _finish(out, str(path))


def _finish(frame: pd.DataFrame, source: str, epoch_val: pd.Series | None = None) -> LossLog:
    frame = frame.sort_values("step", kind="stable").reset_index(drop=True)
    frame["step"] = frame["step"].astype("int64")
    frame["epoch"] = frame["epoch"].round().astype("Int64")
    frame["loss"] = frame["loss"].astype(float)
    frame["val_loss"] = frame["val_loss"].astype(float)
    return LossLog(steps=frame, source=source, epoch_val_loss=epoch_val)


def find_event_dir(root: Path) -> Path | None:
    """The folder of the most recently written TensorBoard event file under ``root`` (or None).

    kohya writes ``LOGGING_DIR/<prefix><timestamp>/network_train/events.out.tfevents.*``; several
    runs may share a logging folder, so only the newest run's folder is read.
    """
    if not root.is_dir():
        return None
    files = [p for p in root.rglob(TB_GLOB) if p.is_file() and "lorasel" not in p.relative_to(root).parts]
    if not files:
        return None
    return max(files, key=lambda p: p.stat().st_mtime).parent


def read_tensorboard(folder: str | Path) -> LossLog | None:
    """Read kohya's loss tags from the event files in ``folder``.

    Returns None (with a :class:`LossLogWarning`) when tensorboard is not installed.
    """
    folder = Path(folder)
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        warnings.warn(
            f"found TensorBoard logs in {folder} but the `tensorboard` package is not installed; "
            "loss is not shown (pip install 'lorasel[tensorboard]')",
            LossLogWarning,
            stacklevel=2,
        )
        return None
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    try:
        acc.Reload()
    except Exception as exc:  # tensorboard raises many kinds on a corrupt file
        raise ResultsError(
            f"cannot read TensorBoard logs in {folder}: {exc}", hint="delete or move the broken event file"
        ) from None
    tags = set(acc.Tags().get("scalars", []))
    train_tag = next((t for t in TB_TRAIN_TAGS if t in tags), None)
    if train_tag is None:
        raise ResultsError(
            f"TensorBoard logs in {folder} have no loss tag (looked for {', '.join(TB_TRAIN_TAGS)})",
            hint="kohya's sd-scripts writes them with --log_with tensorboard",
        )
    train = _scalars(acc, train_tag).rename("loss")
    frame = train.to_frame()
    if TB_VAL_STEP_TAG in tags:
        frame = frame.join(_scalars(acc, TB_VAL_STEP_TAG).rename("val_loss"), how="outer")
    else:
        frame["val_loss"] = np.nan
    frame = frame.reset_index(names="step")
    frame["epoch"] = np.nan
    epoch_val = _scalars(acc, TB_VAL_EPOCH_TAG) if TB_VAL_EPOCH_TAG in tags else None
    return _finish(frame[["step", "epoch", "loss", "val_loss"]], f"{folder} ({train_tag})", epoch_val)


def _scalars(acc, tag: str) -> pd.Series:
    events = acc.Scalars(tag)
    series = pd.Series([e.value for e in events], index=[int(e.step) for e in events], dtype=float)
    return series.groupby(level=0).last()  # a restarted run logs a step twice: keep the latest


def read_loss(root: str | Path) -> LossLog | None:
    """The loss log of a run folder, if any: ``logs/loss.csv``, else TensorBoard events.

    Never fails: a broken or unreadable log becomes a :class:`LossLogWarning` and None, because
    loss is context for the ranking, not an input to it.
    """
    root = Path(root)
    csv_path = root / "logs" / "loss.csv"
    try:
        if csv_path.is_file():
            return read_loss_csv(csv_path)
        for candidate in (root / "logs", root / "log", root):
            folder = find_event_dir(candidate)
            if folder is not None:
                return read_tensorboard(folder)
    except LoraselError as exc:
        warnings.warn(f"{exc.message}; loss is not shown", LossLogWarning, stacklevel=2)
    return None


# --------------------------------------------------------------------------- per checkpoint


def checkpoint_loss(log: LossLog, checkpoints: pd.DataFrame) -> pd.DataFrame:
    """``checkpoint, loss, val_loss`` for each row of ``checkpoints`` (``checkpoint, epoch, step``)."""
    steps = log.steps
    has_epoch = steps["epoch"].notna().all() and len(steps) > 0
    known_steps = sorted(int(s) for s in checkpoints["step"].dropna().unique())
    rows = []
    for ck, epoch, step in checkpoints[["checkpoint", "epoch", "step"]].itertuples(index=False):
        window = steps.iloc[0:0]
        if not pd.isna(step):
            step = int(step)
            upto = steps[steps["step"] <= step]
            if len(upto) and has_epoch:
                window = upto[upto["epoch"] == upto["epoch"].iloc[-1]]
                if len(window) == 1 and len(upto) > 1:
                    # The checkpoint's step opens an epoch: a log counting steps from 0, whose
                    # row at this step is the next epoch's first. Use the epoch that just ended.
                    window = upto[upto["epoch"] == upto["epoch"].iloc[-2]]
            elif len(upto):
                previous = max((s for s in known_steps if s < step), default=0)
                window = upto[upto["step"] > previous]
        elif not pd.isna(epoch) and has_epoch:
            window = steps[steps["epoch"] == int(epoch)]
        loss = float(window["loss"].mean()) if window["loss"].notna().any() else math.nan
        val = window["val_loss"].dropna()
        val_loss = float(val.iloc[-1]) if len(val) else math.nan
        if math.isnan(val_loss) and log.epoch_val_loss is not None and not pd.isna(epoch):
            val_loss = float(log.epoch_val_loss.get(int(epoch), math.nan))
        rows.append((ck, loss, val_loss))
    return pd.DataFrame(rows, columns=["checkpoint", "loss", "val_loss"])


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman's rank correlation (average ranks for ties) over pairs where both are finite.

    None with fewer than 3 pairs or when either side is constant (the correlation is undefined).
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return None
    rx = pd.Series(x[ok]).rank(method="average").to_numpy()
    ry = pd.Series(y[ok]).rank(method="average").to_numpy()
    if np.ptp(rx) == 0 or np.ptp(ry) == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])
