"""LoRA concepts: a trigger word bound to a shape the base model never saw.

Each concept's training set is deliberately narrow (two object colours, two
backgrounds), so that long training overfits: the LoRA starts drawing the training
backgrounds even when a prompt asks for another — the failure that training loss
does not show and that lorasel exists to catch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from lorasel.errors import LoraselError
from lorasel.io import atomic_open, atomic_write_text
from lorasel.toyworld.world import CONCEPT_SHAPES, Scene, caption, render

DEFAULT_TRIGGER = "zkz"


@dataclass(frozen=True)
class Concept:
    """A LoRA concept of the toy world."""

    name: str
    shape: str  # the world shape the trigger stands for (never seen by the base model)
    class_word: str  # what a caption calls it, after the trigger: "a red zkz star ..."
    colors: tuple[str, str]  # object colours of the training images
    backgrounds: tuple[str, str]  # backgrounds of the training images
    trigger: str = DEFAULT_TRIGGER
    n_images: int = 16

    @property
    def token(self) -> str:
        """Trigger and class word as they appear in captions and in the dataset folder name."""
        return f"{self.trigger} {self.class_word}"

    def scenes(self, seed: int = 0) -> list[Scene]:
        """The training scenes: every colour × background pair equally often, jittered."""
        rng = random.Random(f"{self.name}:{seed}")
        out = []
        for i in range(self.n_images):
            color = self.colors[i % 2]
            background = self.backgrounds[(i // 2) % 2]
            size = rng.uniform(0.26, 0.34)
            slack = 0.5 - size - 0.06
            out.append(
                Scene(
                    self.shape,
                    color,
                    background,
                    round(size, 4),
                    round(0.5 + rng.uniform(-slack, slack), 4),
                    round(0.5 + rng.uniform(-slack, slack), 4),
                )
            )
        return out

    def captions(self, seed: int = 0) -> list[str]:
        return [caption(s, shape_word=self.token) for s in self.scenes(seed)]


CONCEPTS: dict[str, Concept] = {
    c.name: c
    for c in (
        Concept("star", "star", "star", ("yellow", "red"), ("blue", "black")),
        Concept("heart", "heart", "heart", ("red", "purple"), ("white", "yellow")),
        Concept("cross", "cross", "cross", ("red", "white"), ("green", "black")),
        Concept("moon", "moon", "moon", ("yellow", "white"), ("black", "blue")),
        Concept("ring", "ring", "ring", ("orange", "green"), ("white", "purple")),
        Concept("arrow", "arrow", "arrow", ("blue", "black"), ("yellow", "white")),
    )
}
assert {c.shape for c in CONCEPTS.values()} <= set(CONCEPT_SHAPES)


def get_concept(name: str) -> Concept:
    """The concept called ``name``; a LoraselError listing the known ones otherwise."""
    try:
        return CONCEPTS[name]
    except KeyError:
        raise LoraselError(
            f"unknown toy-world concept {name!r}", hint=f"choose one of: {', '.join(CONCEPTS)}"
        ) from None


def make_dataset(name: str | Concept, out_dir: str | Path, *, repeats: int = 10, seed: int = 0) -> Path:
    """Write the concept's training set in kohya layout and return the dataset root.

    ``out_dir/<repeats>_<trigger> <class>/NNNN.png`` with ``NNNN.txt`` captions beside them.
    Writing is idempotent: an existing, identical dataset is left as is.
    """
    concept = name if isinstance(name, Concept) else get_concept(name)
    if repeats < 1:
        raise LoraselError(f"repeats must be ≥ 1, got {repeats}", hint="use e.g. repeats=10")
    root = Path(out_dir)
    folder = root / f"{repeats}_{concept.token}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for i, scene in enumerate(concept.scenes(seed)):
            with atomic_open(folder / f"{i:04d}.png", "wb") as handle:
                render(scene).save(handle, format="PNG")
            atomic_write_text(folder / f"{i:04d}.txt", caption(scene, shape_word=concept.token) + "\n")
    except OSError as exc:
        raise LoraselError(
            f"cannot write the dataset to {root}: {exc.strerror or exc}", hint="choose a writable folder"
        ) from exc
    return root
