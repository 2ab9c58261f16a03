"""A deterministic procedural world: one coloured shape on a plain background, with a caption.

Images are 64 px, drawn at 4× and downsampled, so edges are anti-aliased and a person
recognises shape and colour when the images are shown enlarged.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageDraw

IMAGE_SIZE = 64
_SUPERSAMPLE = 4

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "orange": (245, 140, 25),
    "yellow": (240, 215, 35),
    "green": (40, 165, 60),
    "blue": (40, 85, 220),
    "purple": (135, 55, 185),
    "white": (238, 238, 238),
    "black": (28, 28, 28),
}

# Shapes the base model is pretrained on.
BASE_SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
# Shapes the base model never sees; LoRA concepts teach them. The scorer knows them
# (a real CLIP has seen far more than any LoRA concept).
CONCEPT_SHAPES: tuple[str, ...] = ("star", "heart", "cross", "moon", "ring", "arrow")
ALL_SHAPES: tuple[str, ...] = BASE_SHAPES + CONCEPT_SHAPES


@dataclass(frozen=True)
class Scene:
    """One image of the world. ``size`` is the shape's half-extent and ``x, y`` its centre,
    as fractions of the image width."""

    shape: str
    color: str
    background: str
    size: float = 0.32
    x: float = 0.5
    y: float = 0.5


def _star(points: int = 5, inner: float = 0.42) -> list[tuple[float, float]]:
    out = []
    for i in range(points * 2):
        r = 1.0 if i % 2 == 0 else inner
        a = -math.pi / 2 + i * math.pi / points
        out.append((r * math.cos(a), r * math.sin(a)))
    return out


def _heart(n: int = 64) -> list[tuple[float, float]]:
    pts = []
    for i in range(n):
        t = 2 * math.pi * i / n
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        pts.append((x / 16.5, -y / 16.5 + 0.1))
    return pts


_POLYGONS: dict[str, list[tuple[float, float]]] = {
    "square": [(-0.88, -0.88), (0.88, -0.88), (0.88, 0.88), (-0.88, 0.88)],
    "triangle": [(0.0, -1.0), (1.0, 0.85), (-1.0, 0.85)],
    "diamond": [(0.0, -1.0), (0.85, 0.0), (0.0, 1.0), (-0.85, 0.0)],
    "star": _star(),
    "heart": _heart(),
    "cross": [
        (-0.3, -1),
        (0.3, -1),
        (0.3, -0.3),
        (1, -0.3),
        (1, 0.3),
        (0.3, 0.3),
        (0.3, 1),
        (-0.3, 1),
        (-0.3, 0.3),
        (-1, 0.3),
        (-1, -0.3),
        (-0.3, -0.3),
    ],
    "arrow": [(-1, -0.28), (0.15, -0.28), (0.15, -0.8), (1, 0), (0.15, 0.8), (0.15, 0.28), (-1, 0.28)],
}


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fg, bg) -> None:
    """Draw ``shape`` centred at (cx, cy) with half-extent r (pixels of the canvas)."""

    def box(x: float, y: float, rad: float):
        return (cx + (x - rad) * r, cy + (y - rad) * r, cx + (x + rad) * r, cy + (y + rad) * r)

    if shape == "circle":
        draw.ellipse(box(0, 0, 1), fill=fg)
    elif shape == "ring":
        draw.ellipse(box(0, 0, 1), fill=fg)
        draw.ellipse(box(0, 0, 0.52), fill=bg)
    elif shape == "moon":
        draw.ellipse(box(0, 0, 1), fill=fg)
        draw.ellipse(box(0.5, -0.25, 0.85), fill=bg)
    elif shape in _POLYGONS:
        draw.polygon([(cx + x * r, cy + y * r) for x, y in _POLYGONS[shape]], fill=fg)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def render(scene: Scene, size: int = IMAGE_SIZE) -> Image.Image:
    """The RGB image of ``scene`` at ``size`` px (anti-aliased)."""
    big = size * _SUPERSAMPLE
    bg = COLORS[scene.background]
    fg = COLORS[scene.color]
    img = Image.new("RGB", (big, big), bg)
    _draw_shape(ImageDraw.Draw(img), scene.shape, scene.x * big, scene.y * big, scene.size * big, fg, bg)
    return img.resize((size, size), Image.Resampling.BOX)


def mask(shape: str, size: int = 32) -> Image.Image:
    """A binary ("L") mask of ``shape`` filling a ``size`` px square (for the oracle's templates)."""
    img = Image.new("L", (size * _SUPERSAMPLE,) * 2, 0)
    half = size * _SUPERSAMPLE / 2
    _draw_shape(ImageDraw.Draw(img), shape, half, half, half * 0.98, 255, 0)
    return img.resize((size, size), Image.Resampling.BOX)


def caption(scene: Scene, shape_word: str | None = None, template: str = "full") -> str:
    """The scene's caption. ``shape_word`` replaces the shape's name (e.g. "zkz star")."""
    word = shape_word or scene.shape
    if template == "full":
        return f"a {scene.color} {word} on a {scene.background} background"
    if template == "no_background":
        return f"a {scene.color} {word}"
    if template == "no_color":
        return f"a {word} on a {scene.background} background"
    if template == "shape":
        return f"a {word}"
    raise ValueError(f"unknown caption template {template!r}")


def sample_scene(
    rng: random.Random,
    shapes: tuple[str, ...] = BASE_SHAPES,
    colors: tuple[str, ...] | None = None,
    backgrounds: tuple[str, ...] | None = None,
    exclude: frozenset[tuple[str, str, str]] = frozenset(),
) -> Scene:
    """A random scene; object and background colours always differ; ``exclude`` holds
    (shape, colour, background) combinations to avoid (held out for evaluation)."""
    colors = colors or tuple(COLORS)
    backgrounds = backgrounds or tuple(COLORS)
    for _ in range(1000):
        shape, color, bg = rng.choice(shapes), rng.choice(colors), rng.choice(backgrounds)
        if color != bg and (shape, color, bg) not in exclude:
            break
    else:  # pragma: no cover - only with an impossible set of constraints
        raise ValueError("no scene satisfies the constraints")
    size = rng.uniform(0.24, 0.36)
    slack = 0.5 - size - 0.05
    return Scene(
        shape,
        color,
        bg,
        round(size, 4),
        round(0.5 + rng.uniform(-slack, slack), 4),
        round(0.5 + rng.uniform(-slack, slack), 4),
    )


@lru_cache(maxsize=1)
def held_out_combinations(seed: int = 1234, fraction: float = 0.15) -> frozenset[tuple[str, str, str]]:
    """(shape, colour, background) combinations never used in pretraining, for evaluation."""
    rng = random.Random(seed)
    combos = [(s, c, b) for s in ALL_SHAPES for c in COLORS for b in COLORS if c != b]
    rng.shuffle(combos)
    return frozenset(combos[: int(len(combos) * fraction)])
