"""The evaluation results: the contract between the evaluator and everything after it.

The evaluator (``lorasel.evaluate``) produces a :class:`Results`; the ranker,
the reports and the TUI consume it. Everything is a plain pandas frame so any
stage can be run, cached and tested alone.

``renders`` — one row per render, the base model included (``checkpoint ==
BASE``, ``strength == 0.0``):

    checkpoint   str    candidate id: the checkpoint path relative to the evaluated folder (posix)
    label        str    short display name, e.g. "zkz-000004"
    epoch        Int64  may be <NA>
    step         Int64  may be <NA>
    strength     float  0.0 for the base model
    prompt_id    str    stable id of the prompt within its set, e.g. "out_of_domain/2"
    kind         str    in_domain | trigger | out_of_domain | unrelated
    prompt       str    the expanded prompt as rendered
    seed_index   int    0..N-1; the render's seed depends only on (prompt, seed_index)
    seed         int
    image        str    PNG path relative to the state directory
    fidelity          float  mean CLIP image cosine to the reference images (in_domain, trigger; else NaN)
    flexibility       float  CLIP text cosine to the prompt with trigger -> class word (out_of_domain; else NaN)
    flexibility_gain  float  flexibility minus the base model's on the same prompt and seed (else NaN)
    adherence         float  CLIP text cosine to the prompt with trigger -> class word (in_domain; else NaN):
                             does the LoRA still draw what an in-domain prompt asks (colour, background)?
    preservation      float  cosine to the base render of the same prompt and seed (unrelated; else NaN)

``diversity`` — one row per (checkpoint, strength, prompt_id): ``kind`` and
``diversity`` (Vendi score of the prompt's renders over seeds).

``checkpoints`` — one row per checkpoint: ``checkpoint, label, path`` (absolute),
``epoch, step, hash, format, algo, metadata`` (dict of strings, untrusted text).

``settings`` — what produced the results (base, scorer, steps, guidance, size,
seeds, strengths, prompt set, trigger, class word).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

BASE = "base"
KINDS = ("in_domain", "trigger", "out_of_domain", "unrelated")
METRICS = ("fidelity", "flexibility", "adherence", "diversity", "preservation")
#: What the renders of each kind of prompt measure (diversity is measured on every kind).
KIND_METRICS = {
    "in_domain": ("fidelity", "adherence"),
    "trigger": ("fidelity",),
    "out_of_domain": ("flexibility",),
    "unrelated": ("preservation",),
}
#: Short names of the metrics, for narrow columns and captions.
METRIC_SHORT = {"fidelity": "fid", "flexibility": "flex", "adherence": "adh", "diversity": "div", "preservation": "pres"}  # fmt: skip
#: Metrics measured per render (the rest, diversity, per (checkpoint, strength, prompt)).
RENDER_METRICS = ("fidelity", "flexibility", "flexibility_gain", "adherence", "preservation")

RENDER_COLUMNS = (
    "checkpoint",
    "label",
    "epoch",
    "step",
    "strength",
    "prompt_id",
    "kind",
    "prompt",
    "seed_index",
    "seed",
    "image",
    "fidelity",
    "flexibility",
    "flexibility_gain",
    "adherence",
    "preservation",
)
DIVERSITY_COLUMNS = ("checkpoint", "strength", "prompt_id", "kind", "diversity")
CHECKPOINT_COLUMNS = ("checkpoint", "label", "path", "epoch", "step", "hash", "format", "algo", "metadata")


@dataclass
class Results:
    """Everything an evaluation measured, as frames (see the module docstring)."""

    renders: pd.DataFrame
    diversity: pd.DataFrame
    checkpoints: pd.DataFrame
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, frame, columns in (
            ("renders", self.renders, RENDER_COLUMNS),
            ("diversity", self.diversity, DIVERSITY_COLUMNS),
            ("checkpoints", self.checkpoints, CHECKPOINT_COLUMNS),
        ):
            missing = [c for c in columns if c not in frame.columns]
            if missing:
                raise ValueError(f"Results.{name} lacks columns {missing}")

    def candidates(self) -> pd.DataFrame:
        """Per (checkpoint, strength): mean of each metric (the base model included)."""
        keys = ["checkpoint", "label", "epoch", "step", "strength"]
        per_render = self.renders.groupby(keys, dropna=False, sort=False)[list(RENDER_METRICS)].mean()
        diversity = self.diversity.groupby(["checkpoint", "strength"], sort=False)["diversity"].mean()
        out = per_render.reset_index().merge(
            diversity.reset_index(), on=["checkpoint", "strength"], how="left"
        )
        return out


def seeds_per_prompt(renders: pd.DataFrame) -> pd.Series:
    """Per (checkpoint, strength) of a renders frame: the most seeds any one prompt was rendered
    with. The same for every candidate of a plain evaluation; more for those ``lorasel eval
    --refine`` rendered again."""
    per_prompt = renders.groupby(["checkpoint", "strength", "prompt_id"], sort=False)["seed_index"].nunique()
    return per_prompt.groupby(level=["checkpoint", "strength"], sort=False).max()
