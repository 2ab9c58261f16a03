"""Helpers for the evaluator's tests: a tiny scorer, tiny kohya LoRA files, a run folder."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from lorasel.checkpoints.write import save_checkpoint

TRIGGER, CLASS_WORD = "zkz", "star"
UNET_TARGETS = (
    "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
    "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k",
    "up_blocks.0.attentions.0.transformer_blocks.0.attn1.to_v",
)
TE_TARGET = "encoder.layers.0.self_attn.q_proj"  # kohya names it text_model.encoder...
TINY_SCORER = "lorasel-test-tiny-clip"


@lru_cache(maxsize=1)
def tiny_pipeline():
    """The tiny SD1 pipeline, built once per test process (tokenizer build is slow)."""
    from tests.tiny_models import tiny_sd1_pipeline

    return tiny_sd1_pipeline(seed=0)


@lru_cache(maxsize=1)
def tiny_scorer():
    """A random-weight open_clip model from a registered tiny config, wrapped in ``Scorer``."""
    import tempfile

    import open_clip

    from lorasel.models.scorer import Scorer

    config = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    with tempfile.TemporaryDirectory(prefix="lorasel-clip-") as folder:  # read at registration
        (Path(folder) / f"{TINY_SCORER}.json").write_text(json.dumps(config))
        open_clip.add_model_config(folder)
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(TINY_SCORER, pretrained=None)
    return Scorer(
        model, preprocess, open_clip.get_tokenizer(TINY_SCORER), name=TINY_SCORER, device=torch.device("cpu")
    )


def _stem(prefix: str, module: str) -> str:
    return f"{prefix}_{module.replace('.', '_')}"


def lora_tensors(seed: int, scale: float, *, rank: int = 2, text_encoder: bool = False, unfit: bool = False):
    """Random kohya LoRA tensors for a few attention layers of the tiny SD1 pipeline."""
    pipe = tiny_pipeline()
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    targets = [("lora_unet", pipe.unet, m) for m in UNET_TARGETS]
    if text_encoder:
        targets.append(("lora_te_text_model", pipe.text_encoder, TE_TARGET))
    for prefix, model, name in targets:
        layer = model.get_submodule(name)
        out_f, in_f = layer.weight.shape
        if unfit:
            in_f += 3
        stem = _stem(prefix, name)
        tensors[f"{stem}.lora_down.weight"] = torch.randn(rank, in_f, generator=gen)
        tensors[f"{stem}.lora_up.weight"] = torch.randn(out_f, rank, generator=gen) * scale
        tensors[f"{stem}.alpha"] = torch.tensor(float(rank))
    return tensors


def write_lora(path: Path, seed: int, scale: float, epoch: int, **kwargs) -> Path:
    metadata = {
        "ss_epoch": str(epoch),
        "ss_tag_frequency": json.dumps({f"10_{TRIGGER} {CLASS_WORD}": {f"{TRIGGER} {CLASS_WORD}": 4}}),
        "modelspec.trigger_phrase": f"{TRIGGER} {CLASS_WORD}",
        "ss_output_name": "zkz",
    }
    return save_checkpoint(path, lora_tensors(seed, scale, **kwargs), metadata)


def make_run(root: Path, n_checkpoints: int = 3, *, references: int = 4) -> Path:
    """A lorasel-style run: run.toml, dataset/10_zkz star/*.png, checkpoints/zkz-00000N."""
    from PIL import Image

    folder = root / "dataset" / f"10_{TRIGGER} {CLASS_WORD}"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(references):
        pixels = (rng.random((32, 32, 3)) * 255).astype("uint8")
        Image.fromarray(pixels).save(folder / f"{i:04d}.png")
        (folder / f"{i:04d}.txt").write_text(f"a red {TRIGGER} {CLASS_WORD} on a white background")
    (root / "run.toml").write_text('[dataset]\npath = "dataset"\n')
    for epoch in range(1, n_checkpoints + 1):
        write_lora(
            root / "checkpoints" / f"zkz-{epoch:06d}.safetensors", seed=epoch, scale=0.2 * epoch, epoch=epoch
        )
    return root


TEST_PROMPTS = """
[concept]
negative = ""

[prompts]
in_domain = ["a red {trigger} {class} on a white background"]
trigger = ["{trigger} {class}"]
out_of_domain = ["a {trigger} {class} on a blue background"]
unrelated = ["a yellow square on a green background"]
"""


class RenderSpy:
    """Counts the images actually rendered (not taken from the cache)."""

    def __init__(self, monkeypatch):
        from lorasel.evaluate.render import Renderer

        self.count = 0
        original = Renderer.render

        def render(renderer, batch):
            images = original(renderer, batch)
            self.count += len(images)
            return images

        monkeypatch.setattr(Renderer, "render", render)


def pixels(state: Path, renders) -> dict[tuple, np.ndarray]:
    """Every render of ``renders`` (a ``Results.renders`` frame) as pixels, by (checkpoint,
    strength, prompt, seed): to compare two evaluations image for image."""
    from PIL import Image

    return {
        (row.checkpoint, row.strength, row.prompt, row.seed): np.asarray(Image.open(state / row.image))
        for row in renders.itertuples()
    }


#: ``lorasel eval`` options that render a tiny run fastest: 16 px, 2 steps, one seed and strength.
FAST_EVAL = ["--steps", "2", "--size", "16x16", "--seeds", "1", "--strengths", "1", "--batch-size", "4",
             "--threads", "1"]  # fmt: skip


def one_checkpoint_run(tmp_path: Path, monkeypatch, metadata: dict[str, str]) -> Path:
    """A run (2 reference images) with one kohya checkpoint carrying ``metadata``, the tiny base
    and scorer in place of any ``load_base`` / ``load_scorer``, and ``prompts.toml`` beside it."""
    from lorasel import models

    monkeypatch.setattr(models, "load_base", lambda spec, **kw: tiny_pipeline())
    monkeypatch.setattr(models, "load_scorer", lambda spec, **kw: tiny_scorer())
    root = make_run(tmp_path / "run", n_checkpoints=0, references=2)
    save_checkpoint(root / "checkpoints" / "zkz-000001.safetensors", lora_tensors(1, 1.0), metadata)
    (tmp_path / "prompts.toml").write_text(TEST_PROMPTS)
    return root
