"""The toy world: a procedural universe of coloured shapes with a bundled, trained tiny
Stable Diffusion pipeline, a tiny open_clip scorer, LoRA concepts and a pixel oracle.

Everything is real (diffusers and open_clip models trained by ``python -m
lorasel.toyworld.pretrain``) and nothing is downloaded, so the whole product runs
on a laptop CPU and benchmarks have ground truth.
"""

from __future__ import annotations

# Default render settings of the bundled base model (what "default sampling settings" means).
DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 5.0
DEFAULT_SIZE = 64
