"""Evaluation options: parsed from text (the CLI) or given as values (Python), validated once."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lorasel.checkpoints.metadata import PREDICTIONS
from lorasel.errors import EvaluationError
from lorasel.evaluate.plan import canonical_strength

DEFAULT_STRENGTHS = (0.5, 0.75, 1.0)
DEFAULT_SEEDS = 4
DEFAULT_BATCH_SIZE = 8
MAX_STRENGTH = 2.0
# Real Stable Diffusion defaults; the toy world brings its own (lorasel.toyworld).
DEFAULT_STEPS = 30
DEFAULT_GUIDANCE = 7.0


def parse_strengths(text: str) -> tuple[float, ...]:
    """``"0.5,0.75,1.0"`` → (0.5, 0.75, 1.0); each in [0, 2]."""
    values = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            values.append(float(part))
        except ValueError:
            raise EvaluationError(
                f"strength {part!r} in --strengths {text!r} is not a number",
                hint="give comma-separated numbers in [0, 2], e.g. 0.5,0.75,1.0",
            ) from None
    return check_strengths(values)


def check_strengths(values: Sequence[float]) -> tuple[float, ...]:
    """Validated, rounded, de-duplicated strengths > 0 (strength 0, the base, is always rendered)."""
    out: list[float] = []
    for value in values:
        if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value <= MAX_STRENGTH:
            raise EvaluationError(
                f"strength {value!r} is outside [0, {MAX_STRENGTH:g}]",
                hint="strengths are LoRA multipliers, e.g. 0.5,0.75,1.0",
            )
        s = canonical_strength(value)
        if s != 0.0 and s not in out:
            out.append(s)
    if not out:
        raise EvaluationError(
            "no strength above 0 to evaluate (strength 0 is the base model, always rendered)",
            hint="give at least one strength in (0, 2], e.g. 0.5,0.75,1.0",
        )
    return tuple(out)


def parse_size(text: str) -> tuple[int, int]:
    """``"64x64"`` (or ``"64"``) → (width, height)."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        dims = []
    if len(dims) == 1:
        dims = dims * 2
    if len(dims) != 2 or min(dims) <= 0:
        raise EvaluationError(f"size {text!r} is not WIDTHxHEIGHT", hint="e.g. --size 512x512")
    return dims[0], dims[1]


@dataclass(frozen=True)
class EvalOptions:
    """The numeric knobs of an evaluation; ``None`` means the base model's default."""

    strengths: tuple[float, ...] = DEFAULT_STRENGTHS
    seeds: int = DEFAULT_SEEDS
    steps: int | None = None
    guidance: float | None = None
    size: tuple[int, int] | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    threads: int | None = None
    workers: int = 1
    refine: int = 0  # more seeds for the candidates that could be the best
    weights: Any = None  # the composite weights whose 95% set ``refine`` takes (None: the default)
    clip_skip: int | None = None  # None: the checkpoints' own (kohya's ss_clip_skip), else 1
    prediction: str | None = None  # epsilon | v | v-ztsnr; None: the base's, or the checkpoints' v
    cfg_rescale: float = 0.0  # φ, diffusers' guidance_rescale (0.7 for zero-terminal-SNR models)

    def __post_init__(self) -> None:
        object.__setattr__(self, "strengths", check_strengths(self.strengths))
        _positive_int("seeds", self.seeds, "--seeds 4 renders every prompt with 4 seeds")
        if self.steps is not None:
            _positive_int("steps", self.steps, "e.g. --steps 20")
        _positive_int("batch size", self.batch_size, "e.g. --batch-size 8")
        if self.threads is not None:
            _positive_int("threads", self.threads, "e.g. --threads 1")
        _positive_int("workers", self.workers, "e.g. --workers 2 on 2 cores")
        if self.clip_skip is not None:
            _positive_int("clip skip", self.clip_skip, "1 is the last CLIP layer, 2 the one before (kohya's)")
        rescale = self.cfg_rescale
        if isinstance(rescale, bool) or not isinstance(rescale, (int, float)) or not 0 <= rescale <= 1:
            raise EvaluationError(
                f"cfg rescale must be a number from 0 to 1, not {str(rescale)[:40]!r}",
                hint="0 is off; 0.7 is what zero-terminal-SNR models are usually rendered with",
            )
        if self.prediction is not None and self.prediction not in PREDICTIONS:
            raise EvaluationError(
                f"prediction must be one of {', '.join(PREDICTIONS)}, not {str(self.prediction)[:40]!r}",
                hint="v-ztsnr: v-prediction on a zero-terminal-SNR schedule (NoobAI-XL v-pred)",
            )
        if self.weights is not None:
            from lorasel.rank.weights import Weights

            if not isinstance(self.weights, Weights):
                raise EvaluationError(
                    f"weights must be lorasel.rank.Weights, not {type(self.weights).__name__}",
                    hint="e.g. Weights.parse('fidelity=1,flexibility=1'), or --weights fidelity=1,flexibility=1",
                )
        if isinstance(self.refine, bool) or not isinstance(self.refine, int) or self.refine < 0:
            raise EvaluationError(
                f"refine must be a whole number ≥ 0, not {self.refine!r}",
                hint="--refine 4 renders 4 more seeds for the candidates that could be the best; 0: none",
            )
        if self.guidance is not None and (
            not isinstance(self.guidance, (int, float))
            or not math.isfinite(self.guidance)
            or self.guidance < 0
        ):
            raise EvaluationError(
                f"guidance {self.guidance!r} must be a number ≥ 0", hint="e.g. --guidance 7"
            )
        if self.size is not None:
            if len(self.size) != 2 or any(not isinstance(v, int) or v <= 0 for v in self.size):
                raise EvaluationError(
                    f"size {self.size!r} is not (width, height)", hint="e.g. --size 512x512"
                )
            object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))


def _positive_int(name: str, value: object, hint: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise EvaluationError(f"{name} must be a whole number ≥ 1, not {value!r}", hint=hint)
