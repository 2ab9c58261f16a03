"""Concept learnability: does a plain peft LoRA learn a toy concept, and does it overfit?

A minimal LoRA training loop (peft on the toy UNet and text encoder, the shape of
diffusers' ``train_text_to_image_lora.py``), independent of lorasel's trainer, with the
oracle measuring after every snapshot: how often "a zkz star ..." renders show the concept,
and how often out-of-domain prompts still get the background they ask for. This is the
phenomenon lorasel exists to catch: training loss keeps falling while the second number drops.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from lorasel.toyworld.concepts import Concept, get_concept
from lorasel.toyworld.oracle import measure
from lorasel.toyworld.quality import render_prompts
from lorasel.toyworld.world import COLORS, caption, render

ATTN_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
# kohya's LoCon set: every Linear/Conv in the transformer blocks and the ResNet convs.
LOCON_TARGETS = [*ATTN_TARGETS, "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1", "conv2"]
TE_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


@dataclass
class Snapshot:
    step: int
    loss: float  # mean training loss since the previous snapshot
    concept_rate: float  # in-domain prompts: fraction of renders that show the concept's shape
    ood_background: float  # out-of-domain prompts: fraction with the asked-for background
    ood_concept: float  # out-of-domain prompts: fraction that still show the concept
    strength: float = 1.0


def probe_prompts(concept: Concept) -> tuple[list[str], list[str]]:
    """In-domain prompts (training colours and backgrounds) and out-of-domain ones (others)."""
    in_domain = [
        f"a {c} {concept.token} on a {b} background" for c in concept.colors for b in concept.backgrounds
    ]
    others = [b for b in COLORS if b not in concept.backgrounds and b not in concept.colors]
    ood = [f"a {concept.colors[i % 2]} {concept.token} on a {b} background" for i, b in enumerate(others)]
    return in_domain, ood


def measure_concept(
    pipe, concept: Concept, seeds: int = 4, seed: int = 0, **render_kwargs
) -> tuple[float, float, float]:
    in_domain, ood = probe_prompts(concept)
    prompts = [p for p in in_domain for _ in range(seeds)] + [p for p in ood for _ in range(seeds)]
    seed_list = [seed * 1000 + i % seeds for i in range(len(prompts))]
    images = render_prompts(pipe, prompts, seed_list, **render_kwargs)
    n_in = len(in_domain) * seeds
    ms = [measure(im) for im in images]
    concept_rate = sum(m.shape == concept.shape for m in ms[:n_in]) / n_in
    asked = [p.split(" on a ")[1].split()[0] for p in prompts[n_in:]]
    ood_bg = sum(m.background == b for m, b in zip(ms[n_in:], asked, strict=True)) / len(asked)
    ood_concept = sum(m.shape == concept.shape for m in ms[n_in:]) / len(asked)
    return concept_rate, ood_bg, ood_concept


def _set_strength(pipe, strength: float, text_encoder: bool) -> None:
    """The LoRA's multiplier, as A1111's <lora:name:strength> sets it (UNet and text encoder)."""
    pipe.unet.set_adapters(["default"], weights=[strength])
    if text_encoder:
        from peft.tuners.tuners_utils import BaseTunerLayer

        for module in pipe.text_encoder.modules():
            if isinstance(module, BaseTunerLayer):
                module.set_scale("default", strength)


def train_plain_lora(
    pipe,
    concept: str | Concept,
    *,
    steps: int = 600,
    snapshot_every: int = 100,
    rank: int = 8,
    lr: float = 1e-3,
    batch_size: int = 8,
    seed: int = 0,
    probe_seeds: int = 4,
    targets: list[str] | None = None,
    train_text_encoder: bool = True,
    on_snapshot=None,
    strengths: tuple[float, ...] = (1.0,),
) -> list[Snapshot]:
    """Train a peft LoRA on ``concept`` in place on ``pipe`` and probe it with the oracle."""
    from peft import LoraConfig

    from lorasel.toyworld.model import train_scheduler

    concept = concept if isinstance(concept, Concept) else get_concept(concept)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    device = pipe.unet.device
    scenes = concept.scenes()
    captions = [caption(s, shape_word=concept.token) for s in scenes]
    pixels = torch.stack([torch.from_numpy(np.array(render(s))).permute(2, 0, 1) for s in scenes])
    with torch.no_grad():
        x = pixels.float().div(127.5).sub(1).to(device)
        latents = pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor
    ids = pipe.tokenizer(
        captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    ).input_ids
    # Only the LoRA trains: freeze the base model first (adapters are added trainable).
    pipe.unet.requires_grad_(False)
    pipe.text_encoder.requires_grad_(False)
    pipe.unet.add_adapter(
        LoraConfig(
            r=rank, lora_alpha=rank, target_modules=targets or LOCON_TARGETS, init_lora_weights="gaussian"
        )
    )
    if train_text_encoder:
        pipe.text_encoder.add_adapter(
            LoraConfig(r=rank, lora_alpha=rank, target_modules=TE_TARGETS, init_lora_weights="gaussian")
        )
    params = [p for m in (pipe.unet, pipe.text_encoder) for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    sched = train_scheduler()
    snapshots, losses = [], []
    for step in range(1, steps + 1):
        pipe.unet.train()
        pipe.text_encoder.train()
        idx = [rng.randrange(len(scenes)) for _ in range(batch_size)]
        z = latents[idx]
        noise = torch.randn_like(z)
        t = torch.randint(0, sched.config.num_train_timesteps, (batch_size,), device=device)
        enc = pipe.text_encoder(ids[idx].to(device))[0]
        pred = pipe.unet(sched.add_noise(z, noise, t), t, enc).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % snapshot_every == 0:
            pipe.unet.eval()
            pipe.text_encoder.eval()
            for strength in strengths:
                _set_strength(pipe, strength, train_text_encoder)
                rate, bg, oc = measure_concept(pipe, concept, seeds=probe_seeds)
                snapshots.append(Snapshot(step, sum(losses) / len(losses), rate, bg, oc, strength))
            _set_strength(pipe, 1.0, train_text_encoder)
            if on_snapshot is not None:
                on_snapshot(snapshots[-1], pipe)
            losses = []
    return snapshots
