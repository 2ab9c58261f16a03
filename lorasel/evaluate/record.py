"""The settings record of an evaluation (``Results.settings``), and what a new evaluation changes
in it that no cached render survives."""

from __future__ import annotations

import re

from lorasel.evaluate.options import EvalOptions
from lorasel.evaluate.plan import RenderSettings
from lorasel.evaluate.render import scheduler_config
from lorasel.models.base import config_prediction


def settings_record(
    settings: RenderSettings, options: EvalOptions, prompt_set: str, trigger, class_word
) -> dict:
    """``Results.settings`` of an evaluation: how its images were made, and the options that
    continue it (the TUI's continued evaluation reads them back)."""
    return {
        "base": settings.base,
        "base_fingerprint": settings.base_fingerprint,
        "scheduler": settings.scheduler.split("{", 1)[0],
        "steps": settings.steps,
        "guidance": settings.guidance,
        "cfg_rescale": settings.cfg_rescale,
        "clip_skip": settings.clip_skip,
        "prediction": config_prediction(scheduler_config(settings.scheduler)[1]),
        "size": f"{settings.width}x{settings.height}",
        "negative": settings.negative,
        "seeds": options.seeds,
        "refine": options.refine,
        "refine_weights": options.weights.as_dict() if options.weights is not None else None,
        "strengths": list(options.strengths),
        "batch_size": options.batch_size,
        "prompt_set": prompt_set,
        "trigger": trigger,
        "class_word": class_word,
        "render_settings": settings.key(),
        "dtype": settings.dtype,
        "device": settings.device_type,
    }


# Settings records' fields that change every image, and the `lorasel eval` option that sets each.
_RENDER_FIELDS = {
    "base": "--base",
    "steps": "--steps",
    "guidance": "--guidance",
    "size": "--size",
    "cfg_rescale": "--cfg-rescale",
    "clip_skip": "--clip-skip",
    "prediction": "--prediction",
    "negative": None,  # the prompt set's
    "dtype": None,
    "device": None,
}


def changed_render_settings(previous: dict | None, current: dict) -> str | None:
    """What to tell a user whose evaluation renders with other settings than the last one stored
    (``previous``; None: none): none of those renders can be reused, which is rarely meant when
    an option was merely left out (``lorasel demo`` renders the toy world at 12 steps, ``lorasel
    eval`` at the base's 20). None when the image-changing settings are the same."""
    if not previous:
        return None
    changed = [
        (name, previous[name], current.get(name))
        for name in _RENDER_FIELDS
        if name in previous and previous[name] is not None and previous[name] != current.get(name)
    ]
    if not changed:
        return None

    def shown(value) -> str:
        if isinstance(value, float):
            return f"{value:g}"
        return str(value) if re.fullmatch(r"[\w./:@+-]+", str(value)) else repr(value)

    what = ", ".join(
        f"{name.replace('_', ' ')} {shown(was)} (now {shown(now)})" for name, was, now in changed
    )
    again = " ".join(
        f"{_RENDER_FIELDS[name]} {shown(was)}" for name, was, _ in changed if _RENDER_FIELDS[name]
    )
    return f"the last evaluation here rendered with {what}: its renders are not reused" + (
        f"; pass {again} to continue it" if again else ""
    )
