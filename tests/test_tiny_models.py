"""The tiny test pipelines run, and the tokenizer is CLIP's."""

from __future__ import annotations

import torch

from lorasel.models.tokenizer import clip_tokenizer
from tests.tiny_models import tiny_sd1_pipeline, tiny_sdxl_pipeline


def test_clip_tokenizer_matches_open_clip():
    from open_clip.tokenizer import SimpleTokenizer

    tok = clip_tokenizer()
    text = "a zkz star on a Blue background, pixel-art café"
    ids = tok(text).input_ids
    assert ids[0] == 49406 and ids[-1] == 49407
    assert ids[1:-1] == SimpleTokenizer().encode(text)


def test_tiny_pipelines_render():
    g = torch.Generator().manual_seed(0)
    img = tiny_sd1_pipeline()("a red circle", num_inference_steps=2, height=64, width=64, generator=g).images[
        0
    ]
    assert img.size == (64, 64)
    g = torch.Generator().manual_seed(0)
    img = tiny_sdxl_pipeline()(
        "a red circle", num_inference_steps=2, height=64, width=64, generator=g
    ).images[0]
    assert img.size == (64, 64)
