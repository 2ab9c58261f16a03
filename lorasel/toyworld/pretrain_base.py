"""The base model's stages of ``python -m lorasel.toyworld.pretrain`` (``vae``, ``clip``, ``unet``)
and the helpers the scorer stage shares with them (batches of world renders, the learning-rate
schedule, degradations that make clean renders look generated, CLIP inputs and captions).

The command line, the stage order and export live in :mod:`lorasel.toyworld.pretrain`; the
scorer stage in :mod:`lorasel.toyworld.pretrain_scorer`.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lorasel.toyworld import world

CAPTION_TEMPLATES = (("full", 0.7), ("no_background", 0.1), ("no_color", 0.1), ("shape", 0.1))


def log(msg: str) -> None:
    print(f"[pretrain {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def images_to_tensor(images) -> torch.Tensor:
    arr = np.stack([np.asarray(im, dtype=np.uint8) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def sample_batch(rng: random.Random, n: int, shapes, exclude=frozenset()):
    scenes = [world.sample_scene(rng, shapes, exclude=exclude) for _ in range(n)]
    return scenes, images_to_tensor([world.render(s) for s in scenes])


def pick_template(rng: random.Random, dropout: float) -> str | None:
    """A caption template, or None (empty caption: the unconditional case CFG needs)."""
    if rng.random() < dropout:
        return None
    names, weights = zip(*CAPTION_TEMPLATES, strict=True)
    return rng.choices(names, weights=weights)[0]


def lr_at(step: int, total: int, peak: float, warmup: int = 200, floor: float = 0.1) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


# --------------------------------------------------------------------------- VAE


def train_vae(args, work: Path) -> None:
    from safetensors.torch import save_file

    from lorasel.toyworld.model import build_components

    torch.manual_seed(args.seed)
    rng = random.Random(f"vae:{args.seed}")
    _, vae, _ = build_components()
    vae.to(args.device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    start = time.time()
    for step in range(args.vae_steps):
        _, x = sample_batch(rng, 32, world.ALL_SHAPES)
        x = x.to(args.device)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        rec = F.mse_loss(recon, x)
        kl = posterior.kl().mean() / x[0].numel()
        loss = rec + 1e-4 * kl
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.vae_steps, 1e-3)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == args.vae_steps - 1:
            log(
                f"vae step {step}/{args.vae_steps} mse {rec.item():.5f} kl {kl.item():.4f} ({time.time() - start:.0f}s)"
            )
    # Scale latents to unit variance, as SD's 0.18215 does.
    with torch.no_grad():
        vae.eval()
        _, x = sample_batch(random.Random("vae-scale"), 512, world.ALL_SHAPES)
        z = torch.cat([vae.encode(x[i : i + 64].to(args.device)).latent_dist.mean for i in range(0, 512, 64)])
        scaling = float(1.0 / z.flatten().std())
    save_file(
        {k: v.detach().cpu() for k, v in vae.state_dict().items()},
        work / "vae.safetensors",
        metadata={"scaling_factor": repr(scaling), "seconds": repr(time.time() - start)},
    )
    log(f"vae done: scaling factor {scaling:.4f}, {time.time() - start:.0f}s")


def load_vae(work: Path, device: str):
    from safetensors import safe_open

    from lorasel.toyworld.model import build_components

    with safe_open(str(work / "vae.safetensors"), framework="pt") as f:
        scaling = float(f.metadata()["scaling_factor"])
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    _, vae, _ = build_components(scaling)
    vae.load_state_dict(state)
    return vae.to(device).eval()


# --------------------------------------------------------------------------- UNet + text encoder


def _dataset_scenes(n: int, seed: int) -> list[world.Scene]:
    """The fixed set of base-shape scenes the UNet is trained on (held-out combinations excluded)."""
    rng = random.Random(f"latents:{seed}")
    exclude = world.held_out_combinations()
    return [world.sample_scene(rng, world.BASE_SHAPES, exclude=exclude) for _ in range(n)]


@torch.no_grad()
def encode_dataset(vae, n: int, seed: int, device: str):
    """The training scenes and their VAE latents (scaled)."""
    scenes = _dataset_scenes(n, seed)
    latents = []
    for i in range(0, n, 128):
        x = images_to_tensor([world.render(s) for s in scenes[i : i + 128]])
        latents.append(vae.encode(x.to(device)).latent_dist.mean.cpu() * vae.config.scaling_factor)
    return scenes, torch.cat(latents)


def load_text_encoder(work: Path, device: str):
    """The toy CLIP's text tower as a frozen ``CLIPTextModel`` (as SD freezes OpenAI's CLIP)."""
    from safetensors.torch import load_file

    from lorasel.toyworld.convert import open_clip_text_to_transformers
    from lorasel.toyworld.model import build_components

    _, _, text_encoder = build_components()
    text_encoder.load_state_dict(
        open_clip_text_to_transformers(load_file(work / "clip.safetensors")), strict=False
    )
    text_encoder.requires_grad_(False)
    return text_encoder.to(device).eval()


def train_unet(args, work: Path) -> None:
    from safetensors.torch import save_file

    from lorasel.models.tokenizer import clip_tokenizer
    from lorasel.toyworld.model import build_components, train_scheduler

    start = time.time()
    vae = load_vae(work, args.device)
    cache = work / f"latents-{args.n_latents}-{args.seed}.safetensors"
    if cache.is_file() and cache.stat().st_mtime > (work / "vae.safetensors").stat().st_mtime:
        from safetensors.torch import load_file

        latents = load_file(cache)["latents"]
        scenes = _dataset_scenes(args.n_latents, args.seed)
    else:
        scenes, latents = encode_dataset(vae, args.n_latents, args.seed, args.device)
        save_file({"latents": latents.contiguous()}, cache)
    log(f"{len(scenes)} latents ready ({time.time() - start:.0f}s)")
    text_encoder = load_text_encoder(work, args.device)
    tokenizer = clip_tokenizer()
    # The text encoder is frozen and captions come from a small grammar: embed each once.
    embedding_cache: dict[str, torch.Tensor] = {}

    def embed(captions: list[str]) -> torch.Tensor:
        new = sorted({c for c in captions if c not in embedding_cache})
        if new:
            ids = tokenizer(
                new, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
            ).input_ids
            with torch.no_grad():
                out = text_encoder(ids.to(args.device))[0]
            embedding_cache.update(zip(new, out, strict=True))
        return torch.stack([embedding_cache[c] for c in captions])

    torch.manual_seed(args.seed)
    rng = random.Random(f"unet:{args.seed}")
    unet, _, _ = build_components()
    unet.to(args.device).train()
    sched = train_scheduler()
    alphas = sched.alphas_cumprod.to(args.device)
    params = list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=args.unet_lr, weight_decay=1e-2)
    ema = [p.detach().clone() for p in params]
    batch = args.unet_batch
    t0 = time.time()
    for step in range(args.unet_steps):
        idx = [rng.randrange(len(scenes)) for _ in range(batch)]
        caps = []
        for i in idx:
            tpl = pick_template(rng, 0.1)
            caps.append("" if tpl is None else world.caption(scenes[i], template=tpl))
        z = latents[idx].to(args.device)
        noise = torch.randn_like(z)
        t = torch.randint(0, sched.config.num_train_timesteps, (batch,), device=args.device)
        noisy = sched.add_noise(z, noise, t)
        pred = unet(noisy, t, embed(caps)).sample
        # min-SNR-5 weighting (Hang et al. 2023): faster, more even convergence over timesteps.
        snr = alphas[t] / (1 - alphas[t])
        weight = torch.clamp(snr, max=5.0) / snr
        loss = (weight * F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))).mean()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.unet_steps, args.unet_lr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema, params, strict=True):
                e.lerp_(p.detach(), 1 - decay)
        if step % 100 == 0 or step == args.unet_steps - 1:
            rate = (step + 1) / (time.time() - t0)
            log(
                f"unet step {step}/{args.unet_steps} loss {loss.item():.4f} ({rate:.2f} it/s, {time.time() - start:.0f}s)"
            )
        if args.unet_snapshot and step and step % args.unet_snapshot == 0:
            _save_unet(work / f"unet_{step}.safetensors", unet, ema, params, start)
    _save_unet(work / "unet.safetensors", unet, ema, params, start)
    log(f"unet done ({time.time() - start:.0f}s)")


def _save_unet(path: Path, unet, ema, params, start: float) -> None:
    """Save the EMA weights (what sampling uses)."""
    from safetensors.torch import save_file

    live = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, e in zip(params, ema, strict=True):
            p.copy_(e)
    state = {k: v.detach().cpu().contiguous() for k, v in unet.state_dict().items()}
    save_file(state, path, metadata={"seconds": repr(time.time() - start)})
    with torch.no_grad():
        for p, v in zip(params, live, strict=True):
            p.copy_(v)


# --------------------------------------------------------------------------- CLIP scorer

_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)


def degrade(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Make clean renders look more like generated ones: blur, noise, colour drift ([-1, 1] in and out).
    Random numbers come from ``gen`` on the CPU whatever ``x``'s device (the same draws everywhere)."""
    n = x.shape[0]

    def rand(*shape, normal=False):
        return (torch.randn if normal else torch.rand)(*shape, generator=gen).to(x.device)

    k = torch.tensor([1.0, 2.0, 1.0], device=x.device)
    k = (k[:, None] * k[None, :] / 16).expand(3, 1, 3, 3)
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=3)
    x = x + rand(n, 1, 1, 1) * (blurred - x)
    x = x * (1 + 0.08 * rand(n, 3, 1, 1, normal=True)) + 0.05 * rand(n, 3, 1, 1, normal=True)
    x = x + rand(n, 1, 1, 1) * 0.08 * rand(*x.shape, normal=True)
    return x.clamp(-1, 1)


def clip_input(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images to the normalisation open_clip's preprocessing produces."""
    return ((x + 1) / 2 - _MEAN.to(x.device)) / _STD.to(x.device)


def clip_caption(rng: random.Random, scene: world.Scene) -> str:
    names, weights = zip(
        *(("full", 0.6), ("no_background", 0.15), ("no_color", 0.15), ("shape", 0.1)), strict=True
    )
    return world.caption(scene, template=rng.choices(names, weights=weights)[0])


# The clip stage's model: its text tower becomes the base's text encoder (the scorer is another
# model, with a conv image tower; see the scorer stage).
TEXT_CLIP_NAME = "lorasel-toy-text-clip"
TEXT_CLIP_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 4, "width": 128, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 3},
}


def train_clip(args, work: Path) -> None:
    import open_clip
    from safetensors.torch import save_file

    start = time.time()
    torch.manual_seed(args.seed)
    rng = random.Random(f"clip:{args.seed}")
    gen = torch.Generator().manual_seed(args.seed)
    config = work / f"{TEXT_CLIP_NAME}.json"
    config.write_text(json.dumps(TEXT_CLIP_CONFIG, indent=4))
    open_clip.add_model_config(config)
    model = open_clip.create_model(TEXT_CLIP_NAME)
    model.to(args.device).train()
    tokenizer = open_clip.get_tokenizer(TEXT_CLIP_NAME)
    opt = torch.optim.AdamW(model.parameters(), lr=args.clip_lr, weight_decay=0.05)
    exclude = world.held_out_combinations()
    batch = args.clip_batch
    for step in range(args.clip_steps):
        scenes, x = sample_batch(rng, batch, world.ALL_SHAPES, exclude)
        caps = [clip_caption(rng, s) for s in scenes]
        images = clip_input(degrade(x, gen)).to(args.device)
        img = F.normalize(model.encode_image(images), dim=-1)
        txt = F.normalize(model.encode_text(tokenizer(caps).to(args.device)), dim=-1)
        logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T
        # Identical captions in a batch are all positives (soft targets), not false negatives.
        same = torch.tensor([[a == b for b in caps] for a in caps], dtype=torch.float32, device=args.device)
        targets = same / same.sum(1, keepdim=True)
        loss = 0.5 * (
            torch.sum(-targets * logits.log_softmax(1), 1).mean()
            + torch.sum(-targets * logits.T.log_softmax(1), 1).mean()
        )
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.clip_steps, args.clip_lr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == args.clip_steps - 1:
            acc = (logits.argmax(1) == torch.arange(batch, device=args.device)).float().mean().item()
            log(
                f"clip step {step}/{args.clip_steps} loss {loss.item():.4f} in-batch top1 {acc:.2f} "
                f"({time.time() - start:.0f}s)"
            )
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, work / "clip.safetensors", metadata={"seconds": repr(time.time() - start)})
    log(f"clip done ({time.time() - start:.0f}s)")
