"""The step arithmetic and the batch order: aspect buckets, steps per epoch, batches per epoch.

Pure functions of the dataset's sizes and repeats. Users get "images × repeats ×
epochs ÷ batch = steps" wrong (kohya rounds up per aspect bucket), so the plan
says it in words at the start of every run and the run directory keeps it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from lorasel.text import counted
from trainer.data import KohyaDataset

Size = tuple[int, int]  # (width, height)


def bucket_resolutions(resolution: int, min_side: int, max_side: int, step: int) -> list[Size]:
    """kohya's buckets: every (w, h) on the ``step`` grid within ``resolution²`` area and the side limits."""
    max_area = resolution * resolution
    side = int(math.sqrt(max_area) // step) * step
    sizes = {(side, side)}
    width = min_side
    while width <= max_side:
        height = min(max_side, int((max_area // width) // step) * step)
        if height >= min_side:
            sizes.add((width, height))
            sizes.add((height, width))
        width += step
    return sorted(sizes)


def nearest_bucket(size: Size, buckets: list[Size]) -> Size:
    """The bucket whose aspect ratio is closest to the image's (ties → the larger area)."""
    aspect = size[0] / size[1]
    return min(buckets, key=lambda b: (abs(b[0] / b[1] - aspect), -b[0] * b[1]))


def assign_buckets(
    dataset: KohyaDataset,
    resolution: int,
    *,
    enabled: bool,
    min_side: int = 256,
    max_side: int = 1024,
    step: int = 64,
) -> list[Size]:
    """The training size of every image: its aspect bucket, or a square ``resolution`` crop."""
    if not enabled:
        return [(resolution, resolution)] * len(dataset.images)
    buckets = bucket_resolutions(resolution, min_side, max_side, step)
    return [nearest_bucket(image.size, buckets) for image in dataset.images]


def resize_and_crop(
    size: Size, target: Size, rng: random.Random | None = None
) -> tuple[Size, tuple[int, int]]:
    """Scale ``size`` to cover ``target``, then crop: (scaled size, crop top-left (top, left)).

    Centre crop unless ``rng`` is given (random crop).
    """
    scale = max(target[0] / size[0], target[1] / size[1])
    scaled = (max(target[0], round(size[0] * scale)), max(target[1], round(size[1] * scale)))
    free_x, free_y = scaled[0] - target[0], scaled[1] - target[1]
    if rng is None:
        left, top = free_x // 2, free_y // 2
    else:
        left, top = rng.randint(0, free_x), rng.randint(0, free_y)
    return scaled, (top, left)


@dataclass(frozen=True)
class StepPlan:
    """How many optimizer steps a run takes, and why."""

    folders: tuple[tuple[str, int, int], ...]  # (folder, images, repeats)
    samples_per_epoch: int
    batch_size: int
    buckets: int
    batches_per_epoch: int
    gradient_accumulation_steps: int
    num_processes: int
    steps_per_epoch: int
    epochs: int
    max_steps: int
    total_steps: int

    def describe(self) -> str:
        """The arithmetic as a person would check it."""
        lines = []
        for folder, images, repeats in self.folders:
            lines.append(
                f"{folder}: {counted(images, 'image')} × {counted(repeats, 'repeat')} = "
                f"{counted(images * repeats, 'sample')}"
            )
        lines.append(f"samples per epoch: {self.samples_per_epoch}")
        per_bucket = f", rounded up in each of {self.buckets} aspect buckets" if self.buckets > 1 else ""
        lines.append(
            f"{counted(self.samples_per_epoch, 'sample')} ÷ batch {self.batch_size} = "
            f"{counted(self.batches_per_epoch, 'batch', 'batches')} per epoch{per_bucket}"
        )
        divisors = []
        if self.num_processes > 1:
            divisors.append(f"÷ {self.num_processes} processes")
        if self.gradient_accumulation_steps > 1:
            divisors.append(f"÷ gradient accumulation {self.gradient_accumulation_steps}")
        if divisors:
            lines.append(
                f"{counted(self.batches_per_epoch, 'batch', 'batches')} {' '.join(divisors)} = "
                f"{counted(self.steps_per_epoch, 'step')} per epoch (rounded up)"
            )
        else:
            lines.append(f"steps per epoch: {self.steps_per_epoch}")
        epochs = counted(self.epochs, "epoch")
        steps = counted(self.steps_per_epoch * self.epochs, "step")
        total = f"{counted(self.steps_per_epoch, 'step')} × {epochs} = {steps}"
        if self.max_steps and self.max_steps < self.steps_per_epoch * self.epochs:
            total += f", capped at training.max_steps = {self.total_steps}"
        lines.append(total)
        return "\n".join(lines)


def make_plan(
    dataset: KohyaDataset,
    sizes: list[Size],
    *,
    batch_size: int,
    gradient_accumulation_steps: int,
    epochs: int,
    max_steps: int = 0,
    num_processes: int = 1,
) -> StepPlan:
    """Steps per epoch = Σ over buckets ⌈bucket samples ÷ batch⌉, then ÷ processes ÷ accumulation, rounded up."""
    per_bucket: dict[Size, int] = {}
    for image, size in zip(dataset.images, sizes, strict=True):
        per_bucket[size] = per_bucket.get(size, 0) + image.repeats
    batches = sum(math.ceil(n / batch_size) for n in per_bucket.values())
    per_process = math.ceil(batches / num_processes)
    steps_per_epoch = math.ceil(per_process / gradient_accumulation_steps)
    total = steps_per_epoch * epochs
    if max_steps:
        total = min(total, max_steps)
    return StepPlan(
        folders=tuple((f.name, f.images, f.repeats) for f in dataset.folders),
        samples_per_epoch=dataset.samples_per_epoch,
        batch_size=batch_size,
        buckets=len(per_bucket),
        batches_per_epoch=batches,
        gradient_accumulation_steps=gradient_accumulation_steps,
        num_processes=num_processes,
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
        max_steps=max_steps,
        total_steps=total,
    )


def epoch_batches(
    dataset: KohyaDataset,
    sizes: list[Size],
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    num_processes: int = 1,
) -> list[list[int]]:
    """The batches of one epoch as lists of image indices, a pure function of (seed, epoch).

    Each image appears ``repeats`` times; a batch never mixes buckets; the order is
    shuffled. Being a function of the epoch number (not of RNG state) is what makes
    a resumed run see the same batches as an uninterrupted one. With several
    processes the list is padded (wrapping around) to a multiple of their number.
    """
    rng = random.Random(f"{seed}/epoch/{epoch}")
    by_bucket: dict[Size, list[int]] = {}
    for index, (image, size) in enumerate(zip(dataset.images, sizes, strict=True)):
        by_bucket.setdefault(size, []).extend([index] * image.repeats)
    batches: list[list[int]] = []
    for size in sorted(by_bucket):
        members = by_bucket[size]
        rng.shuffle(members)
        batches += [members[i : i + batch_size] for i in range(0, len(members), batch_size)]
    rng.shuffle(batches)
    if num_processes > 1 and len(batches) % num_processes:
        batches += batches[: num_processes - len(batches) % num_processes]
    return batches
