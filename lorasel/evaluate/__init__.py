"""The evaluator: render fixed prompts at several strengths for every checkpoint, cached and
resumable, and measure fidelity, flexibility, adherence, diversity and preservation.

- ``evaluate(path, ...) -> Results``: plan, render what is missing, score, store.
- ``load_results(path, workdir=None) -> Results``: the last complete evaluation.
- ``load_prompt_set(spec)``, ``builtin_prompt_sets()``: prompt sets (``eval_prompts/*.toml``).
- ``lorasel.evaluate.metrics``: the measurements as pure functions over embeddings.
"""

from __future__ import annotations

from lorasel.evaluate.options import EvalOptions, parse_size, parse_strengths
from lorasel.evaluate.progress import ProgressEvent
from lorasel.evaluate.prompts import PromptSet, builtin_prompt_sets, load_prompt_set
from lorasel.evaluate.runner import evaluate, load_results

__all__ = [
    "EvalOptions",
    "ProgressEvent",
    "PromptSet",
    "builtin_prompt_sets",
    "evaluate",
    "load_prompt_set",
    "load_results",
    "parse_size",
    "parse_strengths",
]
