"""Kohya datasets: ``<repeats>_<class tokens>`` folders of images with caption sidecars.

``scan_dataset`` reads the folder tree once (names, captions, image sizes) and
rejects what kohya users get wrong with an error naming the folder or file; the
result is plain data that the step arithmetic, the metadata (``ss_tag_frequency``)
and the image loader all use.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from lorasel.errors import DatasetError
from trainer.config import IMAGE_SUFFIXES

FOLDER_RE = re.compile(r"^(\d+)_(.+)$")
CAPTION_SUFFIXES = (".txt", ".caption")


@dataclass(frozen=True)
class ImageRecord:
    """One training image: where it is, its folder's repeats and its caption."""

    path: Path
    folder: str
    repeats: int
    class_tokens: str
    caption: str
    size: tuple[int, int]  # (width, height) in pixels


@dataclass(frozen=True)
class FolderSummary:
    name: str
    repeats: int
    images: int


@dataclass(frozen=True)
class KohyaDataset:
    root: Path
    images: tuple[ImageRecord, ...]

    @property
    def folders(self) -> tuple[FolderSummary, ...]:
        counts: dict[str, list[int]] = {}
        for image in self.images:
            counts.setdefault(image.folder, [image.repeats, 0])[1] += 1
        return tuple(FolderSummary(name, r, n) for name, (r, n) in counts.items())

    @property
    def samples_per_epoch(self) -> int:
        return sum(image.repeats for image in self.images)

    def tag_frequency(self) -> dict[str, dict[str, int]]:
        """kohya's ``ss_tag_frequency``: per folder, how many captions carry each comma-separated tag."""
        out: dict[str, Counter] = {}
        for image in self.images:
            tags = {t.strip() for t in image.caption.split(",") if t.strip()}
            out.setdefault(image.folder, Counter()).update(tags)
        return {folder: dict(counter) for folder, counter in out.items()}

    def default_trigger(self) -> str:
        """The first word of the first folder's class tokens (kohya's ``10_zkz star`` → ``zkz``)."""
        return self.images[0].class_tokens.split()[0] if self.images else ""


def read_caption(image: Path, class_tokens: str, extension: str = ".txt") -> str:
    """The caption sidecar (``extension`` first, then .txt / .caption), else the class tokens."""
    for suffix in (extension, *CAPTION_SUFFIXES):
        sidecar = image.with_suffix(suffix)
        if sidecar.is_file():
            try:
                text = sidecar.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise DatasetError(
                    f"cannot read caption {sidecar}: {exc}", hint="save captions as UTF-8 text"
                ) from None
            # One line per caption; kohya reads the first line only.
            first = text.splitlines()[0].strip() if text else ""
            return first or class_tokens
    return class_tokens


def image_size(path: Path) -> tuple[int, int]:
    """Width and height, after checking that the file is a readable image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            size = im.size
            im.verify()
        return size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(
            f"unreadable image {path}: {exc}", hint="delete or re-export the file (png, jpg, webp, bmp)"
        ) from None


def scan_dataset(root: str | Path, caption_extension: str = ".txt") -> KohyaDataset:
    """Read a kohya dataset folder; raise :class:`DatasetError` naming what is wrong."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(
            f"dataset folder {root} does not exist", hint="set dataset.path to a kohya dataset folder"
        )
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        raise DatasetError(
            f"dataset folder {root} has no <repeats>_<class tokens> subfolders",
            hint="put the images in e.g. 10_zkz star/ inside it (10 = repeats per epoch)",
        )
    images: list[ImageRecord] = []
    for folder in subdirs:
        match = FOLDER_RE.match(folder.name)
        if not match:
            raise DatasetError(
                f"dataset folder {folder} has no repeats prefix",
                hint=f"rename it like 10_{folder.name} (<repeats>_<class tokens>)",
            )
        repeats, class_tokens = int(match.group(1)), match.group(2).strip()
        if repeats < 1:
            raise DatasetError(f"dataset folder {folder} has 0 repeats", hint="use a prefix of at least 1_")
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            images.append(
                ImageRecord(
                    path=path.resolve(),
                    folder=folder.name,
                    repeats=repeats,
                    class_tokens=class_tokens,
                    caption=read_caption(path, class_tokens, caption_extension),
                    size=image_size(path),
                )
            )
    if not images:
        raise DatasetError(
            f"dataset {root} has no images",
            hint=f"add {', '.join(IMAGE_SUFFIXES)} files to its <repeats>_<class tokens> folders",
        )
    return KohyaDataset(root=root.resolve(), images=tuple(images))


def split_holdout(dataset: KohyaDataset, fraction: float, seed: int) -> tuple[KohyaDataset, KohyaDataset]:
    """Hold out ``fraction`` of each folder's images (at least one) for the validation loss."""
    rng = random.Random(seed)
    train: list[ImageRecord] = []
    held: list[ImageRecord] = []
    for folder in dataset.folders:
        members = [im for im in dataset.images if im.folder == folder.name]
        n_held = max(1, round(len(members) * fraction))
        if n_held >= len(members):
            raise DatasetError(
                f"validation.split = {fraction} leaves no training image in folder {folder.name}",
                hint="lower validation.split or add images",
            )
        chosen = set(rng.sample(range(len(members)), n_held))
        for i, im in enumerate(members):
            (held if i in chosen else train).append(im)
    return KohyaDataset(dataset.root, tuple(train)), KohyaDataset(dataset.root, tuple(held))


def shuffle_caption(caption: str, keep_tokens: int, rng: random.Random) -> str:
    """kohya's caption shuffle: comma-separated tags shuffled, the first ``keep_tokens`` kept in place."""
    tags = [t.strip() for t in caption.split(",")]
    head, tail = tags[:keep_tokens], tags[keep_tokens:]
    rng.shuffle(tail)
    return ", ".join(t for t in head + tail if t)
