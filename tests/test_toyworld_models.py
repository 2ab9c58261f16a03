"""The bundled toy base model and scorer: offline loading, quality bars on small samples, bad input."""

from __future__ import annotations

import time

import pytest
import torch

from lorasel.errors import ModelLoadError
from lorasel.models import base_family, load_base, load_scorer
from lorasel.toyworld.model import load_toy_pipeline, weights_path
from lorasel.toyworld.quality import base_quality, scorer_quality
from lorasel.toyworld.scorer import load_toy_scorer


@pytest.fixture(scope="module")
def toy_pipe():
    return load_base("toy")


@pytest.fixture(scope="module")
def toy_scorer():
    return load_scorer("toy")


def test_weights_are_small():
    files = list(weights_path("pretrain.json").parent.glob("*.safetensors"))
    assert {p.name for p in files} >= {"base.safetensors", "scorer.safetensors"}
    total = sum(p.stat().st_size for p in files)
    assert total <= 25e6


def test_loads_offline_and_quickly(toy_pipe):
    start = time.perf_counter()
    load_base("toy")
    load_scorer("toy")
    assert time.perf_counter() - start < 10  # the bar is 3 s on an idle machine; tests run loaded
    assert base_family(toy_pipe) == "toy"
    assert toy_pipe.unet.dtype == torch.float32


def test_base_quality_small_sample(toy_pipe):
    # Looser than the benchmark's bars (100 captions): 24 held-out captions.
    q = base_quality(toy_pipe, n=24, seed=1, steps=12)
    assert q["background"] >= 0.7, q
    assert q["color"] >= 0.55, q
    assert q["shape"] >= 0.4, q


def test_scorer_quality_small_sample(toy_scorer):
    q = scorer_quality(toy_scorer, trials=5, k=20)
    assert q["retrieval_top1"] >= 0.6, q
    assert q["same_attribute_cosine"] > q["different_attribute_cosine"], q


def test_scorer_embeddings_are_normalised(toy_scorer):
    from lorasel.toyworld.world import Scene, render

    texts = toy_scorer.embed_texts(["a red star on a blue background", "zkz qqq unknownword", ""])
    images = toy_scorer.embed_images([render(Scene("star", "red", "blue"))])
    assert texts.shape[0] == 3 and images.shape[0] == 1
    assert torch.allclose(texts.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(images.norm(dim=1), torch.ones(1), atol=1e-5)


def test_unknown_words_tokenize_and_render(toy_pipe):
    g = [torch.Generator().manual_seed(0)]
    out = toy_pipe(
        "a qwzx flurble on a café background", num_inference_steps=2, generator=g, height=64, width=64
    )
    assert out.images[0].size == (64, 64)


def test_missing_and_corrupt_weights(tmp_path):
    with pytest.raises(ModelLoadError, match="missing"):
        load_toy_pipeline(path=tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ModelLoadError, match="unreadable"):
        load_toy_pipeline(path=bad)
    with pytest.raises(ModelLoadError, match="missing"):
        load_toy_scorer(path=tmp_path / "nope.safetensors")
    with pytest.raises(ModelLoadError, match="unreadable"):
        load_toy_scorer(path=bad)


def test_unknown_scorer_and_base_specs(tmp_path):
    with pytest.raises(ModelLoadError, match="unknown scorer"):
        load_scorer("nonsense")
    with pytest.raises(ModelLoadError, match="unknown open_clip model"):
        load_scorer("NoSuchModel:openai")
    with pytest.raises(ModelLoadError, match="pickle"):
        load_base(str(tmp_path / "model.ckpt"))
    with pytest.raises(ModelLoadError, match="not found"):
        load_base(str(tmp_path / "nothing-here"))
    (tmp_path / "folder").mkdir()
    with pytest.raises(ModelLoadError, match=r"model_index\.json"):
        load_base(str(tmp_path / "folder"))


def test_oracle_reads_shapes_through_the_vae(toy_pipe):
    """Generated images are softened by the VAE: the oracle must still read every shape (the
    star's points round off; before the softened templates a third of them read as diamonds)."""
    import random

    import numpy as np
    from PIL import Image

    from lorasel.toyworld import world
    from lorasel.toyworld.oracle import measure

    rng = random.Random(3)
    wrong = []
    for shape in world.ALL_SHAPES:
        scenes = [world.sample_scene(rng, [shape]) for _ in range(8)]
        x = torch.stack(
            [
                torch.from_numpy(np.asarray(world.render(s), dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)
                for s in scenes
            ]
        )
        with torch.no_grad():
            y = toy_pipe.vae.decode(toy_pipe.vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
        for image in y:
            seen = measure(Image.fromarray(((image.permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()))
            if seen.shape != shape:
                wrong.append((shape, seen.shape))
    assert len(wrong) <= 2, wrong  # of 80
