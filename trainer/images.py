"""Loading training images: resize to cover the bucket, crop, flip, scale to [-1, 1].

Randomness (crop offset, flip, caption shuffle) comes from a per-sample key, not
from global RNG state, so a resumed run and DataLoader workers see exactly the
views an uninterrupted single-process run would.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from lorasel.errors import DatasetError
from trainer.config import DatasetConfig
from trainer.data import ImageRecord, KohyaDataset, shuffle_caption
from trainer.plan import Size, resize_and_crop


@dataclass(frozen=True)
class View:
    """What the UNet is conditioned on besides the caption (SDXL's size / crop ids)."""

    original_size: tuple[int, int]  # (height, width), SDXL convention
    crop_top_left: tuple[int, int]  # (top, left)
    target_size: tuple[int, int]  # (height, width)


def load_pixels(
    record: ImageRecord, target: Size, *, rng: random.Random | None = None, flip: bool = False
) -> tuple[torch.Tensor, View]:
    """The image as a float tensor [3, h, w] in [-1, 1] at the bucket size ``target`` (w, h)."""
    from PIL import Image

    try:
        with Image.open(record.path) as im:
            im = im.convert("RGB")
            scaled, (top, left) = resize_and_crop(im.size, target, rng)
            if im.size != scaled:
                im = im.resize(scaled, Image.Resampling.LANCZOS)
            im = im.crop((left, top, left + target[0], top + target[1]))
            if flip:
                im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            array = np.asarray(im, dtype=np.float32)
    except (OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(
            f"unreadable image {record.path}: {exc}", hint="delete or re-export the file"
        ) from None
    pixels = torch.from_numpy(array).permute(2, 0, 1).div(127.5).sub(1.0)
    view = View((record.size[1], record.size[0]), (top, left), (target[1], target[0]))
    return pixels.contiguous(), view


class TrainingImages(torch.utils.data.Dataset):
    """Items are keyed by ``(image index, sample key)``; the key seeds that sample's randomness."""

    def __init__(
        self, dataset: KohyaDataset, sizes: list[Size], config: DatasetConfig, *, with_pixels: bool = True
    ):
        self.dataset = dataset
        self.sizes = sizes
        self.config = config
        self.with_pixels = with_pixels

    def __len__(self) -> int:
        return len(self.dataset.images)

    def __getitem__(self, key: tuple[int, str]) -> dict:
        index, sample_key = key
        record = self.dataset.images[index]
        rng = random.Random(sample_key)
        caption = record.caption
        if self.config.shuffle_caption:
            caption = shuffle_caption(caption, self.config.keep_tokens, rng)
        item = {"index": index, "caption": caption}
        if self.with_pixels:
            crop_rng = rng if self.config.random_crop else None
            flip = self.config.flip and rng.random() < 0.5
            item["pixels"], item["view"] = load_pixels(record, self.sizes[index], rng=crop_rng, flip=flip)
        return item


def collate(items: list[dict]) -> dict:
    out = {"index": [it["index"] for it in items], "caption": [it["caption"] for it in items]}
    if "pixels" in items[0]:
        out["pixels"] = torch.stack([it["pixels"] for it in items])
        out["view"] = [it["view"] for it in items]
    return out
