"""Ground truth from pixels: what a toy-world image shows, and how well it obeys a prompt.

The oracle is for benchmarks only; the evaluator and the selector never use it.
Method: the background is the dominant colour of the image border; the object is the
largest connected region that differs from it; its colour is the nearest palette colour
of the region's median pixel; its shape is the template (of every world shape) with the
best match after cropping the region to its bounding box and fitting it in a square: IoU
with the template minus a penalty for a different solidity (area over convex-hull area), so
that a blurred star (the points rounded off, IoU close to a diamond's) is still a star.
Templates come in the poses a generated object takes: turned by up to 20 degrees and
stretched by up to 15% along an axis (a square turned by 10 degrees is a square, not a circle),
and softened to several degrees.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from lorasel.toyworld.world import ALL_SHAPES, COLORS, mask

_PALETTE_NAMES = tuple(COLORS)
_PALETTE = np.array([COLORS[n] for n in _PALETTE_NAMES], dtype=np.float32)
_TEMPLATE_SIZE = 24
_MIN_OBJECT_FRACTION = 0.02
_SOLIDITY_WEIGHT = 0.6
_TEMPLATE_OBJECT_PX = 40  # an object's typical width in a 64 px image (size 0.32)
_TEMPLATE_BLURS = (0.0, 1.5, 2.5, 3.5)  # px of Gaussian softening
# Poses: turns (degrees; below 22.5, where a turned square becomes a diamond) and stretches
# (x by s, y by 1/s).
_TEMPLATE_ANGLES = (-20.0, -10.0, 0.0, 10.0, 20.0)
_TEMPLATE_STRETCHES = (1.0, 1.15, 1 / 1.15)


@dataclass(frozen=True)
class Measurement:
    """What the oracle sees in one image. ``color``/``shape`` are None when there is no object."""

    background: str
    color: str | None
    shape: str | None
    shape_iou: float
    object_fraction: float


def _nearest_color(rgb: np.ndarray) -> np.ndarray:
    """Index of the nearest palette colour for each RGB row."""
    d = ((rgb[:, None, :].astype(np.float32) - _PALETTE[None]) ** 2).sum(-1)
    return d.argmin(1)


def _fit_square(region: np.ndarray) -> np.ndarray:
    """Crop a boolean mask to its bounding box, centre it in a square, resize to the template size."""
    ys, xs = np.nonzero(region)
    crop = region[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    h, w = crop.shape
    side = max(h, w)
    square = np.zeros((side, side), dtype=np.uint8)
    square[(side - h) // 2 : (side - h) // 2 + h, (side - w) // 2 : (side - w) // 2 + w] = crop * 255
    img = Image.fromarray(square).resize((_TEMPLATE_SIZE, _TEMPLATE_SIZE), Image.Resampling.BILINEAR)
    return np.asarray(img) > 127


def _solidity(region: np.ndarray) -> float:
    """Area over convex-hull area of a boolean mask (pixels as unit squares)."""
    ys, xs = np.nonzero(region)
    corners = np.concatenate([np.stack([xs + dx, ys + dy], axis=1) for dx in (0, 1) for dy in (0, 1)]).astype(
        np.float64
    )
    try:
        hull = ConvexHull(corners)
    except QhullError:  # degenerate (a line of pixels)
        return 1.0
    return float(len(xs) / hull.volume) if hull.volume > 0 else 1.0


def _posed(shape: str, angle: float, stretch: float, px: int = _TEMPLATE_OBJECT_PX) -> np.ndarray:
    """``shape``'s mask, ``px`` wide, turned by ``angle`` degrees and stretched (x by ``stretch``,
    y by its inverse) about its centre, on a canvas twice as wide: float in [0, 1]."""
    canvas = Image.new("L", (2 * px, 2 * px), 0)
    canvas.paste(mask(shape, px), (px // 2, px // 2))
    a = math.radians(angle)
    turn = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    forward = turn @ np.diag([stretch, 1 / stretch])
    inverse = np.linalg.inv(forward)  # PIL maps output pixels back to input pixels
    centre = np.array([px, px], dtype=np.float64)
    shift = centre - inverse @ centre
    coefficients = (*inverse[0], shift[0], *inverse[1], shift[1])
    posed = canvas.transform(canvas.size, Image.Transform.AFFINE, coefficients, Image.Resampling.BILINEAR)
    return np.asarray(posed, dtype=np.float32) / 255.0


@lru_cache(maxsize=1)
def _templates() -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """Every shape as a rendered object shows it — at its size in a 64 px image, in every pose,
    sharp and softened to several degrees (a sampler and a VAE round off sharp points: a softened
    star is a fat star, not a diamond): (shape per template, fitted masks [T, S, S], solidities [T])."""
    names, masks, solidities = [], [], []
    for shape in ALL_SHAPES:
        for angle in _TEMPLATE_ANGLES:
            for stretch in _TEMPLATE_STRETCHES:
                small = _posed(shape, angle, stretch)
                for blur in _TEMPLATE_BLURS:
                    soft = (ndimage.gaussian_filter(small, blur) if blur else small) > 0.5
                    names.append(shape)
                    masks.append(_fit_square(soft))
                    solidities.append(_solidity(soft))
    return tuple(names), np.stack(masks), np.array(solidities)


def measure(image: Image.Image) -> Measurement:
    """Measure background colour, object colour and shape of a toy-world image."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    h, w, _ = rgb.shape
    border = np.concatenate(
        [
            rgb[:2].reshape(-1, 3),
            rgb[-2:].reshape(-1, 3),
            rgb[:, :2].reshape(-1, 3),
            rgb[:, -2:].reshape(-1, 3),
        ]
    )
    bg_idx = np.bincount(_nearest_color(border), minlength=len(_PALETTE)).argmax()
    background = _PALETTE_NAMES[bg_idx]
    nearest = _nearest_color(rgb.reshape(-1, 3)).reshape(h, w)
    dist_bg = np.sqrt(((rgb - _PALETTE[bg_idx]) ** 2).sum(-1))
    foreground = (nearest != bg_idx) & (dist_bg > 60)
    foreground = ndimage.binary_opening(foreground, iterations=1)
    labels, n = ndimage.label(foreground)
    if n == 0:
        return Measurement(background, None, None, 0.0, 0.0)
    sizes = ndimage.sum(foreground, labels, index=range(1, n + 1))
    region = labels == (int(np.argmax(sizes)) + 1)
    fraction = float(region.mean())
    if fraction < _MIN_OBJECT_FRACTION:
        return Measurement(background, None, None, 0.0, fraction)
    core = ndimage.binary_erosion(region, iterations=1)
    pixels = rgb[core if core.sum() >= 8 else region]
    color_idx = _nearest_color(np.median(pixels, axis=0)[None])[0]
    color = _PALETTE_NAMES[color_idx]
    # Holes (ring) and bites (moon) are background: fill nothing, compare the region as is.
    fitted = _fit_square(region)
    solidity = _solidity(region)
    names, templates, template_solidity = _templates()
    inter = np.logical_and(templates, fitted).sum(axis=(1, 2))
    union = np.logical_or(templates, fitted).sum(axis=(1, 2))
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    best_index = int(np.argmax(iou - _SOLIDITY_WEIGHT * np.abs(solidity - template_solidity)))
    best, best_iou = names[best_index], float(iou[best_index])
    return Measurement(background, color, best, best_iou, fraction)


_SHAPE_WORDS = "|".join(ALL_SHAPES)
_COLOR_WORDS = "|".join(COLORS)
_BG_RE = re.compile(rf"\b({_COLOR_WORDS}) background\b")
_OBJECT_RE = re.compile(rf"\b(?:({_COLOR_WORDS}) )?(?:\w+ )?({_SHAPE_WORDS})\b")


def requested(prompt: str) -> dict[str, str]:
    """The attributes a toy-world prompt asks for: any of ``color``, ``shape``, ``background``."""
    text = prompt.lower()
    out: dict[str, str] = {}
    bg = _BG_RE.search(text)
    if bg:
        out["background"] = bg.group(1)
        text = text[: bg.start()] + text[bg.end() :]
    obj = _OBJECT_RE.search(text)
    if obj:
        out["shape"] = obj.group(2)
        if obj.group(1):
            out["color"] = obj.group(1)
    return out


def judge(image_or_measurement, prompt: str) -> dict[str, bool]:
    """For each attribute ``prompt`` asks for, whether the image shows it."""
    m = (
        image_or_measurement
        if isinstance(image_or_measurement, Measurement)
        else measure(image_or_measurement)
    )
    asked = requested(prompt)
    seen = {"color": m.color, "shape": m.shape, "background": m.background}
    return {attr: seen[attr] == value for attr, value in asked.items()}
