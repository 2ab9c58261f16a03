"""Base pipelines: the bundled toy world, a diffusers folder, a hub id or a single file."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from lorasel.checkpoints.metadata import stated_prediction
from lorasel.errors import ModelLoadError, first_line
from lorasel.models.devices import default_device, default_dtype
from lorasel.models.logs import libraries_quiet

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")

CONFIGS = Path(__file__).parent / "configs"
# A single-file checkpoint holds weights only. For these model types (diffusers' names for them)
# the package ships the diffusers configs (SD 1.5's and SDXL 1.0 base's), so such a file loads
# offline; other types take theirs from the hub, as diffusers does, once.
SHIPPED_CONFIGS = {"v1": CONFIGS / "sd15", "xl_base": CONFIGS / "sdxl"}


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
        with libraries_quiet("diffusers", "transformers", "huggingface_hub"):
            pipe = _load_external(spec, torch_dtype)
        _require_every_weight(pipe, spec)
        pipe = pipe.to(dev)
    pipe.set_progress_bar_config(disable=True)
    # Passing this pipeline to evaluate() then caches renders under the same keys as the spec.
    pipe._lorasel_spec = spec
    return pipe


def check_base_spec(spec: str) -> None:
    """What a base spec's own text and the file system tell without loading anything: a pickle
    file, a folder that is not a diffusers pipeline, a file that is not ``.safetensors``, and a
    path that does not exist are each one :class:`ModelLoadError`. ``evaluate`` asks this before
    it loads the scorer, which may take the network a while to fail."""
    if spec == "toy":
        return
    path = Path(spec).expanduser()
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ModelLoadError(
            f"{spec} is a pickle file; lorasel never loads pickle (it can run code)",
            hint="convert it to .safetensors, or pass a diffusers folder",
        )
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelLoadError(
                f"{spec} is not a diffusers pipeline folder (no model_index.json)",
                hint="pass a folder saved by save_pretrained, a hub id, or a .safetensors file",
            )
    elif path.is_file():
        if path.suffix.lower() != ".safetensors":
            raise ModelLoadError(f"{spec} is not a .safetensors file", hint="pass a .safetensors checkpoint")
    elif not _is_hub_id(spec):
        raise ModelLoadError(
            f"base model {spec!r} not found",
            hint="use 'toy', a diffusers folder, a hub id (org/name) or a .safetensors file",
        )


def _is_hub_id(spec: str) -> bool:
    return spec.count("/") == 1 and not spec.startswith((".", "/", "~"))


def _load_external(spec: str, torch_dtype: torch.dtype):
    from diffusers import DiffusionPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline

    check_base_spec(spec)
    path = Path(spec).expanduser()
    # ``dtype``, not ``torch_dtype``: diffusers 0.42 deprecates the latter with a FutureWarning.
    common = {"dtype": torch_dtype, "safety_checker": None, "requires_safety_checker": False}
    try:
        if path.is_dir():
            return DiffusionPipeline.from_pretrained(path, use_safetensors=True, **common)
        if path.is_file():
            from diffusers.loaders.single_file_utils import infer_diffusers_model_type
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                tensors = _TensorsOnDemand(handle)
                _refuse_a_lora(spec, list(tensors))
                kind = infer_diffusers_model_type(tensors)
                is_xl = any(k.startswith("conditioner.embedders.1") for k in tensors)
                stated = stated_prediction(handle.metadata() or {}, tensors)
            cls = StableDiffusionXLPipeline if is_xl else StableDiffusionPipeline
            pipe = cls.from_single_file(str(path), **common, **_shipped_configs(kind, is_xl))
            if stated is not None:  # diffusers reads neither the markers nor the metadata
                pipe.scheduler = with_prediction(pipe.scheduler, stated)
            return pipe
        return DiffusionPipeline.from_pretrained(spec, use_safetensors=True, **common)
    except ModelLoadError:
        raise
    except Exception as exc:  # diffusers raises many types; the message is what matters
        raise ModelLoadError(
            f"could not load base model {spec!r}: {first_line(exc)}",
            hint="check the path or hub id; without network, pass a local diffusers folder",
        ) from exc


def _refuse_a_lora(spec: str, keys: list[str]) -> None:
    """A LoRA given as the base (an easy slip: both are .safetensors files) is said plainly,
    not as a base model missing its text encoder."""
    from lorasel.checkpoints.keys import looks_like_lora

    if not any(k.startswith("model.diffusion_model.") for k in keys) and looks_like_lora(keys):
        raise ModelLoadError(
            f"{spec} is a LoRA, not a base model",
            hint="pass the model it was trained on as --base (a checkpoint, diffusers folder or hub id); "
            "LoRAs go in PATH",
        )


def _require_every_weight(pipe, spec: str) -> None:
    """diffusers leaves a weight that a file lacks unloaded (on the meta device) rather than
    failing; say so here instead of failing later on the first move or render."""
    for name, component in pipe.components.items():
        if not isinstance(component, torch.nn.Module):
            continue
        missing = [n for n, t in (*component.named_parameters(), *component.named_buffers()) if t.is_meta]
        if missing:
            raise ModelLoadError(
                f"base model {spec!r} lacks {len(missing)} weights of its {name} (e.g. {missing[0]})",
                hint="the file may be truncated, or not of a base model type it looks like",
            )


class _TensorsOnDemand(Mapping):
    """An open safetensors file's tensors by name, each read when asked for: diffusers tells a
    checkpoint's model type from a few keys and shapes, without reading gigabytes."""

    def __init__(self, handle):
        self._handle = handle
        self._keys = list(handle.keys())
        self._names = set(self._keys)

    def __getitem__(self, key):
        if key not in self._names:
            raise KeyError(key)
        return self._handle.get_tensor(key)

    def __contains__(self, key):
        return key in self._names

    def __iter__(self):
        return iter(self._keys)

    def __len__(self):
        return len(self._keys)


def scheduler_prediction(scheduler) -> str:
    """What a scheduler has the UNet predict, in :data:`~lorasel.checkpoints.metadata.PREDICTIONS`'
    words (``epsilon``, ``v``, ``v-ztsnr``); another diffusers type (``sample``) as it is."""
    return config_prediction(scheduler.config)


def config_prediction(config: Mapping) -> str:
    """:func:`scheduler_prediction` of a scheduler's config."""
    kind = config.get("prediction_type", "epsilon")
    if kind != "v_prediction":
        return str(kind)
    return "v-ztsnr" if config.get("rescale_betas_zero_snr") else "v"


def with_prediction(scheduler, prediction: str):
    """A scheduler like ``scheduler`` for a model predicting ``prediction`` (``epsilon``, ``v`` or
    ``v-ztsnr``); ``scheduler`` itself when it already is one. v on a zero-terminal-SNR schedule
    rescales the betas and spaces steps from the last timestep ("trailing"), as that needs; a
    scheduler without the rescaling (SD 1.5's PNDM) gives way to DDIM."""
    import inspect

    if scheduler_prediction(scheduler) == prediction:
        return scheduler
    cls = type(scheduler)
    ztsnr = prediction == "v-ztsnr"
    overrides = {"prediction_type": "epsilon" if prediction == "epsilon" else "v_prediction"}
    if ztsnr or scheduler.config.get("rescale_betas_zero_snr"):
        overrides["rescale_betas_zero_snr"] = ztsnr
    if ztsnr:
        overrides["timestep_spacing"] = "trailing"
        if "rescale_betas_zero_snr" not in inspect.signature(cls.__init__).parameters:
            from diffusers import DDIMScheduler

            cls = DDIMScheduler
    # Every value as the scheduler has it: diffusers' from_config would reset the keys its
    # ``_use_default_values`` lists to the class defaults, though a pipeline may have changed
    # them since (StableDiffusionPipeline sets a DDIM scheduler's steps_offset to 1).
    config = {k: v for k, v in scheduler.config.items() if k != "_use_default_values"}
    return cls.from_config(config, **overrides)


def _shipped_configs(kind: str, is_xl: bool) -> dict:
    """``from_single_file`` arguments that load a model type with the shipped configs and the
    tokenizers built from open_clip's vocabulary, without the hub; ``{}`` for other types."""
    folder = SHIPPED_CONFIGS.get(kind)
    if folder is None:
        return {}
    from lorasel.models.tokenizer import clip_tokenizer

    extra = {"config": str(folder), "local_files_only": True, "tokenizer": clip_tokenizer()}
    if is_xl:
        extra["tokenizer_2"] = clip_tokenizer(pad_token="!")
    return extra
