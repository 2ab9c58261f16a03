"""What the UNet is conditioned on: caption embeddings (SD1/SD2, SDXL) and SDXL's size ids.

When the text encoders are frozen, a caption's embedding never changes, so it is
computed once and cached (``training.cache_text_embeddings``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lorasel.errors import ConfigError
from lorasel.models.text import clip_skip_fault, clip_skip_states, token_ids
from trainer.images import View


def check_clip_skip(clip_skip: int, pipeline) -> None:
    """``training.clip_skip`` fits the base (:func:`lorasel.models.text.clip_skip_fault`)."""
    if fault := clip_skip_fault(clip_skip, pipeline):
        raise ConfigError(f"training.clip_skip {fault[0]}", hint=fault[1])


class TextConditioner:
    """Captions → ``encoder_hidden_states`` (and SDXL's pooled embedding)."""

    def __init__(
        self, pipeline, *, sdxl: bool, cache: bool, device: torch.device, clip_skip: int = 1
    ) -> None:
        self.sdxl = sdxl
        self.clip_skip = clip_skip  # SD 1.x/2.x: the CLIP layer from the end (kohya's --clip_skip)
        self.device = device
        self.cache_enabled = cache
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self.encoders = [pipeline.text_encoder] + ([pipeline.text_encoder_2] if sdxl else [])
        self.tokenizers = [pipeline.tokenizer] + ([pipeline.tokenizer_2] if sdxl else [])

    def _encode(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not self.sdxl:
            ids = token_ids(self.tokenizers[0], captions, self.device)
            return clip_skip_states(self.encoders[0], ids, self.clip_skip), None
        # SDXL: penultimate hidden states of both encoders, concatenated; pooled from the second.
        states, pooled = [], None
        for tokenizer, encoder in zip(self.tokenizers, self.encoders, strict=True):
            out = encoder(token_ids(tokenizer, captions, self.device), output_hidden_states=True)
            states.append(out.hidden_states[-2])
            pooled = out[0]
        return torch.cat(states, dim=-1), pooled

    def __call__(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not self.cache_enabled:
            return self._encode(captions)
        missing = list(dict.fromkeys(c for c in captions if c not in self._cache))
        if missing:
            with torch.no_grad():
                states, pooled = self._encode(missing)
            for i, caption in enumerate(missing):
                self._cache[caption] = (states[i], None if pooled is None else pooled[i])
        states = torch.stack([self._cache[c][0] for c in captions])
        pooled = None if not self.sdxl else torch.stack([self._cache[c][1] for c in captions])
        return states, pooled


def sdxl_time_ids(views: Sequence[View], device, dtype) -> torch.Tensor:
    """SDXL's micro-conditioning: original size, crop top-left, target size (each (h, w))."""
    rows = [[*v.original_size, *v.crop_top_left, *v.target_size] for v in views]
    return torch.tensor(rows, device=device, dtype=dtype)
