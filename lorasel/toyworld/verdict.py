"""The oracle's verdict on evaluated (checkpoint, strength) candidates: ground truth.

For every render of an evaluation, the oracle measures what the image shows and scores the
fraction of the attributes its prompt asked for that it shows (shape — the concept's shape
for a trigger prompt —, object colour, background). A candidate's oracle quality is the mean
over prompt kinds (in-domain, trigger, out-of-domain, unrelated) of the mean over that kind's
renders: a good LoRA draws its concept when asked, still obeys the rest of the prompt, and
leaves prompts without its trigger alone. Benchmarks and the demo use it to judge the pick;
the selector never sees it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from lorasel.toyworld.oracle import judge, measure

ATTRIBUTES = ("shape", "color", "background")


def render_attributes(renders: pd.DataFrame, state_dir: str | Path) -> pd.DataFrame:
    """Per render (aligned with ``renders``): for each attribute its prompt asked for, 1.0 if the
    oracle sees it, else 0.0; NaN where the prompt did not ask. Every image is measured once."""
    state = Path(state_dir)
    rows = []
    for image, prompt in zip(renders["image"], renders["prompt"], strict=True):
        with Image.open(state / image) as im:
            verdict = judge(measure(im), prompt)
        rows.append({key: float(verdict[key]) if key in verdict else np.nan for key in ATTRIBUTES})
    return pd.DataFrame(rows, index=renders.index, columns=list(ATTRIBUTES))


def candidate_quality(
    renders: pd.DataFrame, state_dir: str | Path | None = None, *, attributes: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Per (checkpoint, strength): oracle quality, and its per-kind parts. ``attributes``: the
    :func:`render_attributes` of these renders, when already measured."""
    if attributes is None:
        attributes = render_attributes(renders, state_dir)
    frame = renders.assign(oracle=attributes.loc[renders.index].mean(axis=1, skipna=True))
    per_kind = frame.groupby(["checkpoint", "strength", "kind"])["oracle"].mean().unstack("kind")
    per_kind["oracle_quality"] = per_kind.mean(axis=1, skipna=True)
    return per_kind.reset_index()


def attribute_rates(renders: pd.DataFrame, attributes: pd.DataFrame) -> pd.DataFrame:
    """Per (checkpoint, strength, kind): the fraction of renders showing each attribute their
    prompt asked for (NaN where none asked for it), from :func:`render_attributes`."""
    frame = renders[["checkpoint", "strength", "kind"]].join(attributes.loc[renders.index])
    return frame.groupby(["checkpoint", "strength", "kind"])[list(ATTRIBUTES)].mean().reset_index()
