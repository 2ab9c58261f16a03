"""Helpers for the evaluator's tests: a tiny scorer, tiny kohya LoRA files, a run folder.

``FakeCheckpoints`` is a minimal stand-in for ``lorasel.checkpoints`` (discover, read, hash,
apply, restore for plain kohya LoRA on Linear layers) used only until the real checkpoint
reader lands on main; it lives in the tests, never in the library.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from lorasel.checkpoints.write import save_checkpoint
from lorasel.errors import CheckpointError

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
    folder = Path(tempfile.mkdtemp(prefix="lorasel-clip-"))
    (folder / f"{TINY_SCORER}.json").write_text(json.dumps(config))
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


# -- a stand-in for lorasel.checkpoints until it lands -------------------------------------
@dataclass
class FakeEntry:
    path: Path
    run: str
    epoch: int | None
    step: int | None
    label: str
    final: bool = False


@dataclass
class FakeCheckpoint:
    path: Path
    format: str
    base_family: str
    metadata: dict[str, str]
    epoch: int | None
    step: int | None
    modules: list = field(default_factory=list)
    trigger: str | None = None
    touches_text_encoder: bool = False
    tensors: dict = field(default_factory=dict, repr=False)


@dataclass
class FakeModule:
    name: str
    algo: str = "lora"


class FakeCheckpoints:
    """discover / read_checkpoint / file_hash / apply / restore for plain kohya LoRA."""

    def discover(self, path):
        files = sorted(
            p
            for p in Path(path).rglob("*.safetensors")
            if "lorasel" not in p.parts and not p.name.startswith(".")
        )
        out = []
        for p in files:
            m = re.search(r"-(\d{6})$", p.stem)
            out.append(FakeEntry(p, "zkz", int(m.group(1)) if m else None, None, p.stem))
        return out

    def read_checkpoint(self, path):
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{path} is not a safetensors file: {exc}", hint="re-save it") from exc
        stems = sorted({k.split(".")[0] for k in tensors})
        if not stems:
            raise CheckpointError(f"{path} has no LoRA keys", hint="pass a LoRA")
        return FakeCheckpoint(
            Path(path), "kohya", "sd1", metadata, None, None, [FakeModule(s) for s in stems],
            metadata.get("modelspec.trigger_phrase"), any(s.startswith("lora_te") for s in stems), tensors,
        )  # fmt: skip

    def file_hash(self, path):
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()

    def _modules(self, pipe):
        table = {}
        for prefix, model in (("lora_unet", pipe.unet), ("lora_te_text_model", pipe.text_encoder)):
            for name, module in model.named_modules():
                if isinstance(module, torch.nn.Linear):
                    table[_stem(prefix, name)] = module
        return table

    def apply(self, pipe, checkpoint, strength):
        self.restore(pipe)
        table = self._modules(pipe)
        deltas = []
        for module in checkpoint.modules:
            t = checkpoint.tensors
            down, up = t[f"{module.name}.lora_down.weight"], t[f"{module.name}.lora_up.weight"]
            alpha = float(t.get(f"{module.name}.alpha", torch.tensor(down.shape[0])))
            layer = table.get(module.name)
            delta = (alpha / down.shape[0]) * (up @ down)
            if layer is None or layer.weight.shape != delta.shape:
                raise CheckpointError(
                    f"{checkpoint.path.name} does not fit the base at {module.name}", hint="check --base"
                )
            deltas.append((layer, delta))
        pristine = {}
        for layer, delta in deltas:
            pristine[id(layer)] = (layer, layer.weight.data.clone())
            layer.weight.data += strength * delta.to(layer.weight.dtype)
        pipe._fake_pristine = pristine

    def restore(self, pipe):
        for layer, weight in getattr(pipe, "_fake_pristine", {}).values():
            layer.weight.data.copy_(weight)
        pipe._fake_pristine = {}
