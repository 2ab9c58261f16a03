"""Text conditioning shared by the trainer and the evaluator."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def token_ids(tokenizer, texts: Sequence[str], device) -> torch.Tensor:
    """Token ids padded and cut to the tokenizer's length (77 for CLIP), as SD encodes prompts."""
    return tokenizer(
        list(texts),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(device)


def clip_skip_states(encoder, ids: torch.Tensor, clip_skip: int) -> torch.Tensor:
    """A CLIP text encoder's hidden state ``clip_skip`` layers from the end, through its final
    layer norm: what kohya trains and A1111 renders SD 1.x/2.x with at "clip skip" N (1 is the
    encoder's ordinary output). diffusers' own ``clip_skip`` reads
    ``text_encoder.text_model.final_layer_norm``, which transformers 5's ``CLIPTextModel`` no
    longer has."""
    if clip_skip == 1:
        return encoder(ids)[0]
    hidden = encoder(ids, output_hidden_states=True).hidden_states[-clip_skip]
    return getattr(encoder, "text_model", encoder).final_layer_norm(hidden)
