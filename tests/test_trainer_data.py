"""Kohya datasets, captions, aspect buckets and the step arithmetic."""

from __future__ import annotations

import random

import pytest
import torch

from lorasel.errors import DatasetError
from tests.trainer_helpers import make_kohya_dataset
from trainer.config import DatasetConfig
from trainer.data import scan_dataset, shuffle_caption, split_holdout
from trainer.images import TrainingImages, load_pixels
from trainer.plan import (
    assign_buckets,
    bucket_resolutions,
    epoch_batches,
    make_plan,
    nearest_bucket,
    resize_and_crop,
)


def test_scan_reads_folders_captions_and_sizes(tmp_path):
    root = make_kohya_dataset(tmp_path, {"10_zkz star": 2, "3_other thing": 1}, size=(40, 24))
    (root / "10_zkz star" / "0001.txt").unlink()
    (root / "10_zkz star" / "0001.caption").write_text("from the caption file\nsecond line ignored")
    (root / "3_other thing" / "0000.txt").unlink()  # no caption: the class tokens
    (root / "3_other thing" / "notes.md").write_text("not an image")
    data = scan_dataset(root)
    assert [(f.name, f.repeats, f.images) for f in data.folders] == [
        ("10_zkz star", 10, 2),
        ("3_other thing", 3, 1),
    ]
    captions = [im.caption for im in data.images]
    assert captions == ["zkz star, red, picture 0", "from the caption file", "other thing"]
    assert all(im.size == (40, 24) for im in data.images)
    assert data.samples_per_epoch == 23
    assert data.default_trigger() == "zkz"
    assert data.tag_frequency() == {
        "10_zkz star": {"zkz star": 1, "red": 1, "picture 0": 1, "from the caption file": 1},
        "3_other thing": {"other thing": 1},
    }


def test_dataset_errors_name_the_file(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        scan_dataset(tmp_path / "missing")
    with pytest.raises(DatasetError, match="no <repeats>_<class tokens> subfolders"):
        scan_dataset(tmp_path)
    (tmp_path / "5_empty").mkdir()
    with pytest.raises(DatasetError, match="has no images"):
        scan_dataset(tmp_path)
    (tmp_path / "zkz star").mkdir()
    with pytest.raises(DatasetError, match=r"zkz star has no repeats prefix") as err:
        scan_dataset(tmp_path)
    assert "10_zkz star" in err.value.hint
    (tmp_path / "zkz star").rmdir()
    (tmp_path / "0_zero").mkdir()
    with pytest.raises(DatasetError, match="0 repeats"):
        scan_dataset(tmp_path)
    (tmp_path / "0_zero").rmdir()
    (tmp_path / "5_empty" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DatasetError, match=r"unreadable image .*5_empty/broken.png"):
        scan_dataset(tmp_path)


def test_caption_shuffle_keeps_leading_tokens():
    caption = "zkz star, red, on blue, small, centred"
    shuffled = {shuffle_caption(caption, 1, random.Random(i)) for i in range(30)}
    assert len(shuffled) > 5
    for text in shuffled:
        tags = text.split(", ")
        assert tags[0] == "zkz star" and sorted(tags) == sorted(caption.split(", "))
    assert shuffle_caption(caption, 1, random.Random(3)) == shuffle_caption(caption, 1, random.Random(3))


def test_kohya_buckets():
    # sd-scripts' list for 512² with 64 px steps between 256 and 1024 (one orientation shown).
    buckets = bucket_resolutions(512, 256, 1024, 64)
    assert {(256, 1024), (320, 768), (384, 640), (448, 576), (512, 512), (576, 448), (1024, 256)} <= set(
        buckets
    )
    assert all(w * h <= 512 * 512 and w % 64 == 0 and h % 64 == 0 for w, h in buckets)
    assert nearest_bucket((1536, 1024), buckets) == (640, 384)  # 3:2 → 1.67 beats 1.29
    assert nearest_bucket((1000, 1000), buckets) == (512, 512)


def test_resize_and_crop(tmp_path):
    assert resize_and_crop((200, 100), (64, 64)) == ((128, 64), (0, 32))
    scaled, (top, left) = resize_and_crop((200, 100), (64, 64), random.Random(0))
    assert scaled == (128, 64) and top == 0 and 0 <= left <= 64
    record = scan_dataset(make_kohya_dataset(tmp_path, {"1_x": 1}, size=(40, 24))).images[0]
    pixels, view = load_pixels(record, (32, 32))
    assert pixels.shape == (3, 32, 32) and pixels.min() >= -1.0 and pixels.max() <= 1.0
    assert view.original_size == (24, 40) and view.target_size == (32, 32) and view.crop_top_left == (0, 10)


def test_step_arithmetic_rounds_up_per_bucket(tmp_path):
    root = make_kohya_dataset(tmp_path / "a", {"10_wide": 3}, size=(48, 32))
    make_kohya_dataset(root, {"5_tall": 2}, size=(32, 48))
    data = scan_dataset(root)
    sizes = assign_buckets(data, 32, enabled=True, min_side=16, max_side=64, step=16)
    assert len(set(sizes)) == 2
    plan = make_plan(data, sizes, batch_size=4, gradient_accumulation_steps=2, epochs=3)
    # ⌈30 / 4⌉ + ⌈10 / 4⌉ = 8 + 3 = 11 batches; ⌈11 / 2⌉ = 6 steps per epoch; × 3 = 18.
    assert (plan.batches_per_epoch, plan.steps_per_epoch, plan.total_steps) == (11, 6, 18)
    text = plan.describe()
    assert "10_wide: 3 images × 10 repeats = 30 samples" in text
    assert "40 samples ÷ batch 4 = 11 batches per epoch, rounded up in each of 2 aspect buckets" in text
    assert "11 batches ÷ gradient accumulation 2 = 6 steps per epoch" in text
    assert "6 steps × 3 epochs = 18 steps" in text
    capped = make_plan(data, sizes, batch_size=4, gradient_accumulation_steps=2, epochs=3, max_steps=10)
    assert capped.total_steps == 10 and "capped at training.max_steps = 10" in capped.describe()
    two_gpus = make_plan(data, sizes, batch_size=4, gradient_accumulation_steps=1, epochs=1, num_processes=2)
    assert two_gpus.steps_per_epoch == 6 and "÷ 2 processes" in two_gpus.describe()
    single = scan_dataset(make_kohya_dataset(tmp_path / "b", {"1_one": 1}))
    one_size = assign_buckets(single, 32, enabled=False)
    one = make_plan(single, one_size, batch_size=1, gradient_accumulation_steps=1, epochs=1).describe()
    assert "1_one: 1 image × 1 repeat = 1 sample" in one and "1 sample ÷ batch 1 = 1 batch per epoch" in one
    assert "1 step × 1 epoch = 1 step" in one

    batches = epoch_batches(data, sizes, batch_size=4, seed=1, epoch=1)
    assert len(batches) == 11
    flat = [i for b in batches for i in b]
    assert sorted(flat) == sorted([0, 1, 2] * 10 + [3, 4] * 5)
    assert all(len({sizes[i] for i in b}) == 1 for b in batches)  # never mixes buckets
    assert epoch_batches(data, sizes, batch_size=4, seed=1, epoch=1) == batches
    assert epoch_batches(data, sizes, batch_size=4, seed=1, epoch=2) != batches
    padded = epoch_batches(data, sizes, batch_size=4, seed=1, epoch=1, num_processes=2)
    assert len(padded) == 12 and padded[:11] == batches


def test_holdout_and_training_images(tmp_path):
    data = scan_dataset(make_kohya_dataset(tmp_path / "d", {"2_a": 5, "1_b": 2}))
    train, held = split_holdout(data, 0.2, seed=0)
    assert [f.images for f in held.folders] == [1, 1] and len(train.images) == 5
    assert not {im.path for im in train.images} & {im.path for im in held.images}
    with pytest.raises(DatasetError, match="leaves no training image in folder 1_b"):
        split_holdout(data, 0.9, seed=0)
    config = DatasetConfig(resolution=32, shuffle_caption=True, keep_tokens=1, random_crop=True, flip=True)
    images = TrainingImages(train, [(32, 32)] * len(train.images), config)
    a, b = images[(0, "k")], images[(0, "k")]
    assert torch.equal(a["pixels"], b["pixels"]) and a["caption"] == b["caption"]  # keyed, not global RNG
    assert a["caption"].startswith(train.images[0].class_tokens + ", ")
