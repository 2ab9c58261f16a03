"""The diffusion side of training: the loss, latents, per-step seeds and model placement.

Pure-ish functions the loop calls; nothing here knows about epochs or files.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from trainer.images import load_pixels

DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def step_seed(seed: int, step: int, micro_batch: int, process: int) -> int:
    """The torch seed of one micro-batch of one optimizer step on one process."""
    state = np.random.SeedSequence([seed, step, micro_batch, process]).generate_state(1, dtype=np.uint64)
    return int(state[0] >> 1)


def diffusion_loss(
    unet,
    noise_scheduler,
    latents,
    hidden,
    added,
    *,
    min_snr_gamma=0.0,
    noise_offset=0.0,
    timesteps=None,
    noise=None,
) -> torch.Tensor:
    """Per-sample MSE of the UNet's prediction (ε or v), optionally min-SNR weighted."""
    from diffusers.training_utils import compute_snr

    if noise is None:
        noise = torch.randn(latents.shape, device=latents.device, dtype=latents.dtype)
        if noise_offset:
            # Shifts the mean per channel, so the model learns to change overall brightness.
            noise = noise + noise_offset * torch.randn(
                latents.shape[0], latents.shape[1], 1, 1, device=latents.device
            )
    if timesteps is None:
        timesteps = torch.randint(
            0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],), device=latents.device
        )
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    pred = unet(noisy, timesteps, hidden, added_cond_kwargs=added).sample
    v_prediction = noise_scheduler.config.prediction_type == "v_prediction"
    target = noise_scheduler.get_velocity(latents, noise, timesteps) if v_prediction else noise
    loss = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    if min_snr_gamma:
        snr = compute_snr(noise_scheduler, timesteps)
        weight = torch.clamp(snr, max=min_snr_gamma) / (snr + 1 if v_prediction else snr)
        loss = loss * weight
    return loss


@torch.no_grad()
def encode_latent_dists(vae, dataset, sizes, device, dtype):
    """Per image: the VAE posterior's (mean, std) and its view; computed once (latent caching).

    Keeping the distribution, not one sample, means a cached run draws fresh latents
    each step exactly like an uncached one (and gives the same result).
    """
    out = []
    for record, size in zip(dataset.images, sizes, strict=True):
        pixels, view = load_pixels(record, size)
        dist = vae.encode(pixels[None].to(device, dtype)).latent_dist
        out.append((dist.mean.float(), dist.std.float(), view))
    return out


def place(model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """Move a pipeline component only when needed (diffusers warns on every dtype cast)."""
    param = next(model.parameters(), None)
    if param is None:
        return
    if param.device != device:
        model.to(device)
    if param.dtype != dtype:
        model.to(dtype=dtype)


def allow_new_precision(mixed_precision: str) -> None:
    """accelerate keeps one process-wide state; a second run in the same single process
    (a notebook, the tests) with another precision would be refused, so reset it then."""
    from accelerate.state import AcceleratorState, PartialState

    if not AcceleratorState._shared_state or PartialState().num_processes > 1:
        return
    if str(AcceleratorState().mixed_precision) != mixed_precision:
        AcceleratorState._reset_state()


def prepare_models(pipe, config, device: torch.device):
    """Place the frozen pipeline in the training dtype, add the adapters, set up checkpointing.

    Returns the :class:`~trainer.network.Network` and the VAE's dtype.
    """
    from trainer.network import add_network

    train = config.training
    weight_dtype = DTYPES[train.mixed_precision]
    sdxl = getattr(pipe, "text_encoder_2", None) is not None
    vae_dtype = torch.float32 if sdxl else weight_dtype  # SDXL's VAE overflows in fp16
    for name, model in pipe.components.items():
        if isinstance(model, torch.nn.Module):
            place(model, device, vae_dtype if name == "vae" else weight_dtype)
    network = add_network(pipe, config.network, seed=train.seed)
    if train.gradient_checkpointing:
        pipe.unet.enable_gradient_checkpointing()
        for role in network.roles:
            if role != "unet":
                network.models[role].gradient_checkpointing_enable(
                    gradient_checkpointing_kwargs={"use_reentrant": False}
                )
    return network, vae_dtype
