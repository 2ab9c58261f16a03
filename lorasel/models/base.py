"""Base pipelines: the bundled toy world, a diffusers folder, a hub id or a single file."""

from __future__ import annotations

from pathlib import Path

import torch

from lorasel.errors import ModelLoadError
from lorasel.models.devices import default_device, default_dtype

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")


def base_family(pipeline) -> str:
    """``sd1`` | ``sd2`` | ``sdxl`` | ``toy`` for a loaded pipeline (by its components)."""
    if getattr(pipeline, "_lorasel_family", None):
        return pipeline._lorasel_family
    if getattr(pipeline, "text_encoder_2", None) is not None:
        return "sdxl"
    cross = getattr(pipeline.unet.config, "cross_attention_dim", None)
    if cross == 1024:
        return "sd2"
    if cross == 768:
        return "sd1"
    return "unknown"


def load_base(spec: str = "toy", *, device=None, dtype=None):
    """Load a diffusers text-to-image pipeline once; checkpoints are merged into it later."""
    dev = default_device(device)
    torch_dtype = default_dtype(dev, dtype)
    if spec == "toy":
        from lorasel.toyworld.model import load_toy_pipeline

        pipe = load_toy_pipeline(device=dev, dtype=torch_dtype)
    else:
        pipe = _load_external(spec, torch_dtype).to(dev)
    pipe.set_progress_bar_config(disable=True)
    # Passing this pipeline to evaluate() then caches renders under the same keys as the spec.
    pipe._lorasel_spec = spec
    return pipe


def _load_external(spec: str, torch_dtype: torch.dtype):
    from diffusers import DiffusionPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline

    path = Path(spec).expanduser()
    common = {"torch_dtype": torch_dtype, "safety_checker": None, "requires_safety_checker": False}
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ModelLoadError(
            f"{spec} is a pickle file; lorasel never loads pickle (it can run code)",
            hint="convert it to .safetensors, or pass a diffusers folder",
        )
    try:
        if path.is_dir():
            if not (path / "model_index.json").is_file():
                raise ModelLoadError(
                    f"{spec} is not a diffusers pipeline folder (no model_index.json)",
                    hint="pass a folder saved by save_pretrained, a hub id, or a .safetensors file",
                )
            return DiffusionPipeline.from_pretrained(path, use_safetensors=True, **common)
        if path.is_file():
            if path.suffix.lower() != ".safetensors":
                raise ModelLoadError(
                    f"{spec} is not a .safetensors file", hint="pass a .safetensors checkpoint"
                )
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                is_xl = any(k.startswith("conditioner.embedders.1") for k in handle.keys())  # noqa: SIM118 (safe_open is not iterable)
            cls = StableDiffusionXLPipeline if is_xl else StableDiffusionPipeline
            return cls.from_single_file(str(path), **common)
        if spec.count("/") == 1 and not spec.startswith((".", "/", "~")):
            return DiffusionPipeline.from_pretrained(spec, use_safetensors=True, **common)
    except ModelLoadError:
        raise
    except Exception as exc:  # diffusers raises many types; the message is what matters
        raise ModelLoadError(
            f"could not load base model {spec!r}: {exc}",
            hint="check the path or hub id; without network, pass a local diffusers folder",
        ) from exc
    raise ModelLoadError(
        f"base model {spec!r} not found",
        hint="use 'toy', a diffusers folder, a hub id (org/name) or a .safetensors file",
    )
