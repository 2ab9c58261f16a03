"""Running the evaluator from the TUI: which options, in which stages, and how it reports.

The TUI calls an ``evaluate`` function (``lorasel.evaluate.evaluate`` unless the factory is
given another) in a thread worker. So that the table fills in while the evaluation runs, the
strengths are evaluated in stages, each stage one more strength (those already evaluated first,
then the strength nearest 1.0, then the rest): every stage ends with complete, rankable results
and the next stage re-renders nothing (the evaluator caches every render and embedding).

Nothing here imports Textual: the worker passes callbacks that post messages.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorasel.results import Results

EvaluateFn = Callable[..., Results]

#: ``Results.settings`` keys that carry over into a continued evaluation, and the evaluate()
#: parameter each one becomes.
CONTINUED_SETTINGS = {
    "base": "base",
    "scorer": "scorer",
    "prompt_set": "prompts",
    "prompts": "prompts",
    "seeds": "seeds",
    "refine": "refine",
    "steps": "steps",
    "guidance": "guidance",
    "cfg_rescale": "cfg_rescale",
    "clip_skip": "clip_skip",
    "prediction": "prediction",
    "trigger": "trigger",
    "class_word": "class_word",
    "references": "reference",
    "reference": "reference",
}


class EvaluationStopped(Exception):
    """Raised from the progress callback to stop the evaluator (it keeps what it finished)."""


@dataclass(frozen=True)
class EvaluationRequest:
    """What to evaluate: ``path``, ``workdir``, and keyword arguments for ``evaluate``."""

    path: Path
    workdir: Path | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


class DefaultEvaluator:
    """``lorasel.evaluate.evaluate``, imported when an evaluation starts (it loads torch)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Results:
        from lorasel.evaluate import evaluate

        return evaluate(*args, **kwargs)

    def default_strengths(self) -> tuple[float, ...] | None:
        """The strengths the evaluator uses when given none (to plan the stages)."""
        try:
            from lorasel.evaluate.options import DEFAULT_STRENGTHS
        except ImportError:
            return None
        return tuple(float(s) for s in DEFAULT_STRENGTHS)


default_evaluate = DefaultEvaluator()


def continued_options(settings: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """evaluate() options that continue the evaluation recorded in ``settings``.

    Given options (``overrides``, from the command line) win; settings of the stored results
    fill the rest, so "continue" renders with the same base, scorer, prompts and seeds. Values
    of the wrong type (the settings are read back from a database) are left to the defaults.
    """
    from lorasel.checkpoints.metadata import PREDICTIONS

    out: dict[str, Any] = {}
    for key, param in CONTINUED_SETTINGS.items():
        value = settings.get(key)
        if param in out or value is None:
            continue
        if param in ("seeds", "steps", "refine", "clip_skip") and not (
            isinstance(value, int) and not isinstance(value, bool)
        ):
            continue
        if param in ("guidance", "cfg_rescale") and not isinstance(value, (int, float)):
            continue
        if param == "prediction" and value not in PREDICTIONS:
            continue
        if param in ("base", "scorer", "prompts", "trigger", "class_word", "reference") and not isinstance(
            value, str
        ):
            continue
        out[param] = value
    size = _size(settings.get("size"))
    if size is not None:
        out["size"] = size
    strengths = settings.get("strengths")
    if isinstance(strengths, (list, tuple)) and strengths:
        with contextlib.suppress(TypeError, ValueError):
            out["strengths"] = tuple(float(s) for s in strengths)
    out.update({k: v for k, v in overrides.items() if v is not None})
    return out


def _size(value: Any) -> tuple[int, int] | None:
    """A stored render size, ``"512x768"`` or ``[512, 768]``, as evaluate()'s (width, height)."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*[x×]\s*(\d+)\s*", value)
        return (int(match[1]), int(match[2])) if match else None
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    return None


def strength_stages(
    requested: Sequence[float] | None, evaluated: Iterable[float] = ()
) -> list[tuple[float, ...] | None]:
    """The strengths of each stage (cumulative); ``[None]`` when the strengths are not known
    (one stage with the evaluator's default).

    Already evaluated strengths go into the first stage (they are cached, and keeping them keeps
    their rows in the table); then one new strength per stage, nearest 1.0 first.
    """
    if not requested:
        return [None]
    wanted = sorted({round(float(s), 6) for s in requested})
    done = [s for s in wanted if any(math.isclose(s, e, abs_tol=1e-6) for e in evaluated)]
    new = sorted((s for s in wanted if s not in done), key=lambda s: (abs(s - 1.0), -s))
    if not new:
        return [tuple(wanted)]
    stages = []
    current = list(done)
    for s in new:
        current.append(s)
        stages.append(tuple(sorted(current)))
    return stages


def run_evaluation(
    evaluate: EvaluateFn,
    request: EvaluationRequest,
    *,
    evaluated: Iterable[float] = (),
    on_progress: Callable[[int, int, Any], None],
    on_results: Callable[[Results, int, int], None],
    should_stop: Callable[[], bool],
) -> bool:
    """Run ``evaluate`` once per stage; return False when stopped by ``should_stop``.

    ``on_progress(stage, stages, event)`` gets the evaluator's progress events (any object with
    ``phase``, ``done``, ``total``, ``message``); ``on_results(results, stage, stages)`` gets each
    stage's results. Errors of ``evaluate`` propagate.
    """
    options = dict(request.options)
    # The last stage's only: earlier ones rank fewer strengths. The weights choose its set.
    refine, weights = options.pop("refine", None), options.pop("weights", None)
    requested = options.pop("strengths", None)
    if requested is None and hasattr(evaluate, "default_strengths"):
        requested = evaluate.default_strengths()  # the evaluator's own default, staged too
    stages = strength_stages(requested, evaluated)
    for number, strengths in enumerate(stages, start=1):

        def progress(event: Any, number: int = number) -> None:
            if should_stop():
                raise EvaluationStopped
            on_progress(number, len(stages), event)

        kwargs = dict(options)
        if strengths is not None:
            kwargs["strengths"] = list(strengths)
        if refine and number == len(stages):
            kwargs["refine"] = refine
            if weights is not None:
                kwargs["weights"] = weights
        try:
            results = evaluate(request.path, workdir=request.workdir, progress=progress, **kwargs)
        except EvaluationStopped:
            return False
        on_results(results, number, len(stages))
        if should_stop():
            return False
    return True
