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


def clip_skip_fault(clip_skip: int, pipeline) -> tuple[str, str] | None:
    """Why ``clip_skip`` does not fit this base, as (what, hint), or ``None`` when it does.
    SD 1.x/2.x only: SDXL conditions on its encoders' penultimate layers already (and kohya's
    SDXL scripts ignore clip skip); and no further back than the text encoder has layers."""
    if clip_skip == 1:
        return None
    if getattr(pipeline, "text_encoder_2", None) is not None:
        return (
            "applies to SD 1.x and 2.x bases; SDXL conditions on the penultimate layers already",
            "leave it at 1 for an SDXL base",
        )
    layers = pipeline.text_encoder.config.num_hidden_layers
    if clip_skip > layers:
        return (
            f"{clip_skip} is more than the text encoder's {layers} layers",
            "1 is the last layer, 2 the one before (kohya's --clip_skip 2)",
        )
    return None
