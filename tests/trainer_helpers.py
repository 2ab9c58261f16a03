"""Helpers for the trainer's tests: synthetic kohya datasets and small configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def make_kohya_dataset(
    root: Path, folders: dict[str, int] | None = None, *, size=(32, 32), seed: int = 0, captions: bool = True
) -> Path:
    """``root/<folder>/NNNN.png`` (random pixels) with ``NNNN.txt`` captions; returns ``root``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for folder, count in (folders or {"3_zkz star": 4}).items():
        path = root / folder
        path.mkdir(parents=True, exist_ok=True)
        tokens = folder.split("_", 1)[-1]
        for i in range(count):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path / f"{i:04d}.png")
            if captions:
                (path / f"{i:04d}.txt").write_text(f"{tokens}, red, picture {i}\n", encoding="utf-8")
    return root


def small_config(data_root: Path, **sections) -> dict:
    """A fast config dict on the tiny SD1 pipeline (32 px images → 16×16 latents)."""
    base = {
        "model": {"base": "toy"},
        "dataset": {"path": str(data_root), "resolution": 32},
        "network": {"rank": 4, "alpha": 2.0},
        "training": {"epochs": 2, "batch_size": 2, "learning_rate": 1e-3, "seed": 7},
        "save": {"name": "zkz", "precision": "fp32"},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return base


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from threads, and on a shared machine OpenMP threads spin-wait
    against other processes (15× slower measured here): one thread for these tests."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
