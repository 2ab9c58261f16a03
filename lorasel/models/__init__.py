"""Load a base diffusion pipeline and a CLIP scorer, the same way for the toy world and real models.

- ``load_base(spec)``: ``"toy"``, a diffusers folder, a hub id, or a single ``.safetensors`` file.
- ``load_scorer(spec)``: ``"toy"``, ``MODEL:PRETRAINED`` for open_clip (e.g.
  ``ViT-L-14:datacomp_xl_s13b_b90k``), or ``MODEL:/path/to/weights.safetensors``.
"""

from __future__ import annotations

from lorasel.models.base import base_family, load_base
from lorasel.models.scorer import Scorer, load_scorer

__all__ = ["Scorer", "base_family", "load_base", "load_scorer"]
