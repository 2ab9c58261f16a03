"""The toy base model: a real diffusers StableDiffusionPipeline with tiny configs.

Module names are diffusers' SD1 names, so SD1-style LoRA keys (``lora_unet_...``,
``lora_te_...``) address it exactly as they address real SD1.5. Weights are trained by
``python -m lorasel.toyworld.pretrain`` and shipped in ``lorasel/toyworld/weights/``.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch

from lorasel.errors import ModelLoadError

WEIGHTS_PACKAGE = "lorasel.toyworld.weights"
BASE_WEIGHTS = "base.safetensors"

UNET_CONFIG = {
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": [48, 96, 96],
    "layers_per_block": 1,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": 64,
    "attention_head_dim": 4,
    "norm_num_groups": 16,
}
VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "block_out_channels": [16, 32, 64],
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 16,
    "sample_size": 64,
}
TEXT_CONFIG = {
    "vocab_size": 49408,
    "hidden_size": 64,
    "intermediate_size": 256,
    "hidden_act": "gelu",
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 49407,
    "projection_dim": 64,
}
# SD's noise schedule: training uses DDPM with it, sampling DPM-Solver++ (2M).
SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "steps_offset": 1,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "prediction_type": "epsilon",
}


def build_components(vae_scaling_factor: float = 1.0):
    """Fresh (untrained) UNet, VAE and text encoder with the toy configs."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet = UNet2DConditionModel(**UNET_CONFIG)
    vae = AutoencoderKL(**VAE_CONFIG, scaling_factor=vae_scaling_factor)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
    return unet, vae, text_encoder


def train_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(SCHEDULER_CONFIG)


def sampling_scheduler():
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler.from_config(SCHEDULER_CONFIG)


def assemble_pipeline(unet, vae, text_encoder):
    """A StableDiffusionPipeline from toy components and CLIP's tokenizer."""
    from diffusers import StableDiffusionPipeline

    from lorasel.models.tokenizer import clip_tokenizer

    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer(),
        scheduler=sampling_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe._lorasel_family = "toy"
    pipe.set_progress_bar_config(disable=True)
    return pipe


def weights_path(name: str = BASE_WEIGHTS) -> Path:
    return Path(str(resources.files(WEIGHTS_PACKAGE).joinpath(name)))


def load_toy_pipeline(device=None, dtype=None, path: str | Path | None = None):
    """The bundled, pretrained toy pipeline (offline)."""
    from safetensors import SafetensorError, safe_open

    file = Path(path) if path else weights_path()
    if not file.is_file():
        raise ModelLoadError(
            f"the toy world's weights are missing ({file})",
            hint="reinstall lorasel, or rebuild them with `python -m lorasel.toyworld.pretrain`",
        )
    try:
        with safe_open(str(file), framework="pt") as handle:
            meta = handle.metadata() or {}
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
        scaling = float(json.loads(meta["lorasel.toyworld"])["vae_scaling_factor"])
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        raise ModelLoadError(
            f"the toy world's weights are unreadable ({file}): {exc}",
            hint="reinstall lorasel, or rebuild them with `python -m lorasel.toyworld.pretrain`",
        ) from exc
    unet, vae, text_encoder = build_components(scaling)
    for prefix, module in (("unet.", unet), ("vae.", vae), ("text_encoder.", text_encoder)):
        state = {k[len(prefix) :]: v.float() for k, v in tensors.items() if k.startswith(prefix)}
        missing, unexpected = module.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise ModelLoadError(
                f"the toy world's weights do not match the model ({file}): "
                f"missing {missing[:3]}, unexpected {unexpected[:3]}",
                hint="rebuild them with `python -m lorasel.toyworld.pretrain`",
            )
    pipe = assemble_pipeline(unet, vae, text_encoder)
    if dtype not in (None, torch.float32):
        pipe.to(dtype=dtype)
    if device is not None and torch.device(device).type != "cpu":
        pipe.to(device=device)
    return pipe
