"""Training loss beside quality: loss.csv, TensorBoard, per-checkpoint windows, Spearman."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pandas as pd
import pytest

from lorasel.errors import ResultsError
from lorasel.rank import LossLogWarning, rank, read_loss, spearman
from lorasel.rank.loss import checkpoint_loss, read_loss_csv, read_tensorboard
from lorasel.results import BASE
from tests.synthetic_results import make_results

CHECKPOINTS = pd.DataFrame(
    {"checkpoint": ["e1", "e2", "e3", "e4"], "epoch": [1, 2, 3, 4], "step": [10, 20, 30, 40]}
).astype({"epoch": "Int64", "step": "Int64"})


def _write_loss_csv(root, *, zero_based=False, val=True, losses=None):
    rows = []
    for i in range(40):
        step = i if zero_based else i + 1
        epoch = i // 10 + 1
        loss = losses[epoch - 1] + 0.01 * (i % 10) if losses else 1.0 / epoch + 0.01 * (i % 10)
        row = {"step": step, "epoch": epoch, "loss": loss, "lr": 1e-4}
        if val:
            row["val_loss"] = 2.0 / epoch if i % 10 == 9 else ""
        rows.append(row)
    (root / "logs").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(root / "logs" / "loss.csv", index=False)
    return root / "logs" / "loss.csv"


def test_loss_csv_epoch_mean_and_validation(tmp_path):
    log = read_loss_csv(_write_loss_csv(tmp_path))
    per = checkpoint_loss(log, CHECKPOINTS).set_index("checkpoint")
    for k, ck in enumerate(["e1", "e2", "e3", "e4"], start=1):
        expected = np.mean([1.0 / k + 0.01 * j for j in range(10)])
        assert per.loc[ck, "loss"] == pytest.approx(expected)
        assert per.loc[ck, "val_loss"] == pytest.approx(2.0 / k)


def test_loss_csv_counting_steps_from_zero_uses_the_epoch_that_ended(tmp_path):
    log = read_loss_csv(_write_loss_csv(tmp_path, zero_based=True, val=False))
    per = checkpoint_loss(log, CHECKPOINTS).set_index("checkpoint")
    assert per.loc["e1", "loss"] == pytest.approx(np.mean([1.0 + 0.01 * j for j in range(10)]))
    assert per.loc["e2", "loss"] == pytest.approx(np.mean([0.5 + 0.01 * j for j in range(10)]))
    assert per["val_loss"].isna().all()


def test_step_save_mid_epoch_and_checkpoint_without_step(tmp_path):
    log = read_loss_csv(_write_loss_csv(tmp_path, val=False))
    ckpts = pd.DataFrame({"checkpoint": ["mid", "nostep"], "epoch": [pd.NA, 3], "step": [15, pd.NA]}).astype(
        {"epoch": "Int64", "step": "Int64"}
    )
    per = checkpoint_loss(log, ckpts).set_index("checkpoint")
    assert per.loc["mid", "loss"] == pytest.approx(
        np.mean([0.5 + 0.01 * j for j in range(5)])
    )  # steps 11..15
    assert per.loc["nostep", "loss"] == pytest.approx(np.mean([1 / 3 + 0.01 * j for j in range(10)]))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("step,epoch,lr\n1,1,0.1\n", r"lacks column\(s\) \['loss'\]"),
        ("step,epoch,loss,lr\n1,1,oops,0.1\n", "non-numeric loss 'oops' on data row 1"),
        ("step,epoch,loss,lr\n,1,0.5,0.1\n", "rows without a step"),
        ("", "cannot read loss log"),
    ],
)
def test_malformed_loss_csv(tmp_path, content, message):
    path = tmp_path / "logs" / "loss.csv"
    path.parent.mkdir()
    path.write_text(content)
    with pytest.raises(ResultsError, match=message) as info:
        read_loss_csv(path)
    assert str(path) in info.value.message
    # Through read_loss it is a warning, not a failure: loss is context, not an input.
    with pytest.warns(LossLogWarning, match="loss is not shown"):
        assert read_loss(tmp_path) is None


def test_no_loss_log_is_silent(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_loss(tmp_path) is None


def _write_tensorboard(folder):
    """Event files as kohya's sd-scripts writes them, written with tensorboard's own writer."""
    pytest.importorskip(
        "tensorboard", reason="tensorboard is not installed (pip install 'lorasel[tensorboard]')"
    )
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(folder))

    def scalar(tag, value, step):
        summary = Summary(value=[Summary.Value(tag=tag, simple_value=value)])
        writer.add_event(Event(wall_time=1.7e9 + step, step=step, summary=summary))

    for step in range(1, 41):  # kohya: per global step, 1-based
        epoch = (step - 1) // 10 + 1
        scalar("loss/current", 1.0 / epoch + 0.01 * ((step - 1) % 10), step)
        scalar("loss/average", 5.0, step)
    for epoch in range(1, 5):  # kohya logs per-epoch values with the epoch as the step
        scalar("loss/epoch_average", 1.0 / epoch, epoch)
        scalar("loss/validation/epoch_average", 3.0 / epoch, epoch)
    writer.close()


def test_loss_from_kohya_tensorboard(tmp_path):
    _write_tensorboard(tmp_path / "logs" / "zkz20250101120000" / "network_train")
    log = read_loss(tmp_path)
    assert log is not None and "loss/current" in log.source
    per = checkpoint_loss(log, CHECKPOINTS).set_index("checkpoint")
    for k, ck in enumerate(["e1", "e2", "e3", "e4"], start=1):
        # No epoch column in TensorBoard: the steps since the previous checkpoint.
        assert per.loc[ck, "loss"] == pytest.approx(
            np.mean([1.0 / k + 0.01 * j for j in range(10)]), rel=1e-6
        )
        assert per.loc[ck, "val_loss"] == pytest.approx(3.0 / k, rel=1e-6)


def test_tensorboard_missing_is_a_warning(tmp_path, monkeypatch):
    folder = tmp_path / "logs" / "run1"
    folder.mkdir(parents=True)
    (folder / "events.out.tfevents.1.host").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "tensorboard.backend.event_processing.event_accumulator", None)
    with pytest.warns(LossLogWarning, match="`tensorboard` package is not installed"):
        assert read_tensorboard(folder) is None
    with pytest.warns(LossLogWarning):
        assert read_loss(tmp_path) is None


def test_spearman_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.integers(0, 6, size=12).astype(float)  # with ties
        y = x * -0.5 + rng.normal(size=12)
        assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
    x = np.array([1.0, 2.0, np.nan, 4.0, 5.0])
    y = np.array([2.0, 1.0, 3.0, 5.0, 4.0])
    ok = np.isfinite(x)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x[ok], y[ok]).statistic)
    assert spearman([1, 2], [2, 1]) is None
    assert spearman([1, 1, 1], [1, 2, 3]) is None


def test_ranking_shows_loss_its_correlation_and_the_lowest_loss_pick(tmp_path):
    """Loss keeps falling while quality peaks at epoch 2 of 4: the lowest-loss pick is the last one."""
    stats = pytest.importorskip("scipy.stats")
    results = make_results(checkpoints=4, strengths=(0.5, 1.0), seed=1)
    log = read_loss_csv(_write_loss_csv(tmp_path))
    ranking = rank(results, loss=log, n_boot=100)
    table = ranking.table[ranking.table["checkpoint"] != BASE]
    by_ckpt = table.groupby("checkpoint")
    assert (by_ckpt["loss"].nunique() == 1).all()  # one loss per checkpoint, at every strength
    loss = by_ckpt["loss"].first()
    assert loss.loc["zkz-000004.safetensors"] == loss.min()
    best_score = by_ckpt["score"].max()
    expected = stats.spearmanr(loss.loc[best_score.index], best_score).statistic
    assert ranking.loss_spearman == pytest.approx(expected)
    lowest = ranking.lowest_loss
    assert lowest.checkpoint == "zkz-000004.safetensors" and lowest.strength == 1.0
    assert lowest.rank > ranking.best.rank
    assert np.isnan(ranking.table.loc[ranking.table["checkpoint"] == BASE, "loss"]).all()
