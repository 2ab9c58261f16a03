"""The ``scorer`` stage of ``python -m lorasel.toyworld.pretrain``: the evaluator's CLIP.

The ``clip`` stage's model conditions the UNet (its text tower is the base's text encoder)
and learns colour and background long before shape: its text tower hardly separates shape
words. The scorer is a model of its own (as a real evaluator's CLIP is not SD's text
encoder), trained on a fixed pool of renders — clean and round-tripped through the base's
VAE, as generated images look — with hard negatives: groups of images that share colour and
background and differ only in shape.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lorasel.toyworld import world
from lorasel.toyworld.pretrain import _record
from lorasel.toyworld.pretrain_base import clip_caption, clip_input, degrade, load_vae, log, lr_at


def _render_combos(job: tuple[list[tuple[str, str, str]], int, int, int]) -> np.ndarray:
    combos, per_combo, seed, start = job
    rng = random.Random(f"scorer-pool:{seed}:{start}")
    images = [
        np.asarray(world.render(world.sample_scene(rng, (s,), (c,), (b,))), dtype=np.uint8)
        for s, c, b in combos
        for _ in range(per_combo)
    ]
    return np.stack(images)


def scorer_combinations() -> list[tuple[str, str, str]]:
    """Every (shape, colour, background) allowed in pretraining (held-out ones excluded)."""
    held = world.held_out_combinations()
    return [
        (s, c, b)
        for s in world.ALL_SHAPES
        for c in world.COLORS
        for b in world.COLORS
        if c != b and (s, c, b) not in held
    ]


def scorer_pool(per_combo: int, seed: int, workers: int = 1):
    """Every (shape, colour, background) allowed in pretraining, ``per_combo`` renders each
    (random size and position): (combos, uint8 [n, 64, 64, 3]) with combo ``k``'s images at
    ``k * per_combo ...``. The same for any number of workers (each chunk has its own seed)."""
    combos = scorer_combinations()
    chunk = 16
    jobs = [(combos[i : i + chunk], per_combo, seed, i) for i in range(0, len(combos), chunk)]
    if workers > 1:
        from multiprocessing import get_context

        with get_context("spawn").Pool(workers) as pool:
            parts = pool.map(_render_combos, jobs)
    else:
        parts = [_render_combos(j) for j in jobs]
    return combos, torch.from_numpy(np.concatenate(parts))


@torch.no_grad()
def vae_round_trip(vae, images: torch.Tensor, seed: int, device: str, noise: float = 0.3) -> torch.Tensor:
    """uint8 NHWC images decoded from their VAE latents plus a little latent noise (up to
    ``noise`` latent standard deviations): how generated images look (blur, colour bleed)."""
    gen = torch.Generator().manual_seed(seed)
    out = torch.empty_like(images)
    for i in range(0, len(images), 512):
        x = images[i : i + 512].permute(0, 3, 1, 2).float().div(127.5).sub(1).to(device)
        z = vae.encode(x).latent_dist.mean
        eps = torch.randn(z.shape, generator=gen).to(device)
        amount = torch.rand(len(z), 1, 1, 1, generator=gen).to(device) * noise
        y = vae.decode(z + amount * z.std() * eps).sample.clamp(-1, 1)
        out[i : i + 512] = ((y + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu()
    return out


def scorer_batch(
    rng: random.Random, combos, per_combo: int, batch: int, hard: float, group: int
) -> list[int]:
    """Pool indices: ``hard`` of the batch in groups sharing colour and background, the rest random."""
    by_colours: dict[tuple[str, str], list[int]] = {}
    for k, (_, c, b) in enumerate(combos):
        by_colours.setdefault((c, b), []).append(k)
    keys = sorted(by_colours)
    picked: list[int] = []
    while len(picked) < int(batch * hard):
        members = by_colours[rng.choice(keys)]
        picked += rng.sample(members, min(group, len(members)))
    picked = picked[: int(batch * hard)]
    picked += [rng.randrange(len(combos)) for _ in range(batch - len(picked))]
    return [k * per_combo + rng.randrange(per_combo) for k in picked]


def _scorer_report(model, preprocess, tokenizer, vae, device: str) -> dict[str, float]:
    from types import SimpleNamespace

    from lorasel.models.scorer import Scorer
    from lorasel.toyworld.quality import scorer_quality, scorer_shape_accuracy

    model.eval()
    scorer = Scorer(model, preprocess, tokenizer, name="pretrain", device=device)
    shape = scorer_shape_accuracy(scorer, SimpleNamespace(vae=vae), per_shape=20)
    quality = scorer_quality(scorer, trials=20)
    model.train()
    return {
        "shape_clean": shape["clean"],
        "shape_vae": shape["vae"],
        "retrieval_top1": quality["retrieval_top1"],
        "same_beats_different": quality["same_beats_different"],
    }


def train_scorer(args, work: Path) -> None:
    import open_clip
    from safetensors.torch import save_file

    start = time.time()
    from lorasel.toyworld.model import weights_path
    from lorasel.toyworld.scorer import MODEL_NAME

    config = args.scorer_config or weights_path(f"{MODEL_NAME}.json")
    open_clip.add_model_config(config)
    name = Path(config).stem
    torch.manual_seed(args.seed)
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    tokenizer = open_clip.get_tokenizer(name)
    init_from = args.scorer_init or work / "clip.safetensors"
    if init_from.is_file():  # the clip stage's text tower: the tensors that fit the config
        from safetensors.torch import load_file

        own = model.state_dict()
        init = {k: v for k, v in load_file(init_from).items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(init, strict=False)
        log(f"scorer: {len(init)} of {len(own)} tensors from {init_from}")
    model.to(args.device).train()
    vae = load_vae(work, args.device)
    cache = work / f"scorer-pool-{args.scorer_pool}-{args.seed}.safetensors"
    if cache.is_file() and cache.stat().st_mtime > (work / "vae.safetensors").stat().st_mtime:
        from safetensors.torch import load_file

        combos, pool = scorer_combinations(), load_file(cache)
        clean, generated = pool["clean"], pool["generated"]
    else:
        combos, clean = scorer_pool(args.scorer_pool, args.seed, args.workers)
        generated = vae_round_trip(vae, clean, args.seed, args.device)
        save_file({"clean": clean, "generated": generated}, cache)
    log(
        f"scorer pool: {len(clean)} renders of {len(combos)} combinations + VAE round trips ({time.time() - start:.0f}s)"
    )
    rng = random.Random(f"scorer:{args.seed}")
    gen = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=args.scorer_lr, weight_decay=0.05)
    batch, history, tokens = args.scorer_batch, [], {}
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.device.startswith("cuda"))
    for step in range(args.scorer_steps):
        idx = scorer_batch(rng, combos, args.scorer_pool, batch, args.scorer_hard, args.scorer_group)
        use_vae = torch.rand(batch, generator=gen) < 0.5
        pixels = torch.where(use_vae[:, None, None, None], generated[idx], clean[idx])
        x = pixels.permute(0, 3, 1, 2).float().div(127.5).sub(1).to(args.device)
        images = clip_input(degrade(x, gen))
        caps = [clip_caption(rng, world.Scene(*combos[i // args.scorer_pool])) for i in idx]
        new = sorted({c for c in caps if c not in tokens})
        if new:  # captions come from a small grammar: tokenize each once
            tokens.update(zip(new, tokenizer(new), strict=True))
        first = {c: i for i, c in enumerate(dict.fromkeys(caps))}
        ids = torch.tensor([first[c] for c in caps])  # equal captions: equal ids
        with autocast:
            img = F.normalize(model.encode_image(images).float(), dim=-1)
            text_ids = torch.stack([tokens[c] for c in caps]).to(args.device)
            txt = F.normalize(model.encode_text(text_ids).float(), dim=-1)
        logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T
        same = (ids[:, None] == ids[None, :]).float().to(args.device)
        targets = same / same.sum(1, keepdim=True)
        loss = 0.5 * (
            torch.sum(-targets * logits.log_softmax(1), 1).mean()
            + torch.sum(-targets * logits.T.log_softmax(1), 1).mean()
        )
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.scorer_steps, args.scorer_lr, warmup=min(500, args.scorer_steps // 10))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        last = step == args.scorer_steps - 1
        if step % 200 == 0 or last:
            log(f"scorer step {step}/{args.scorer_steps} loss {loss.item():.4f} ({time.time() - start:.0f}s)")
        if (args.scorer_eval and step and step % args.scorer_eval == 0) or last:
            report = _scorer_report(model, preprocess, tokenizer, vae, args.device)
            history.append({"step": step + 1, **report, "seconds": round(time.time() - start)})
            log(f"scorer eval at step {step + 1}: " + ", ".join(f"{k} {v:.3f}" for k, v in report.items()))
            state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
            meta = {"seconds": repr(time.time() - start), "config": Path(config).read_text(),
                    "history": json.dumps(history)}  # fmt: skip
            save_file(state, work / "scorer.safetensors", metadata=meta)
    log(f"scorer done ({time.time() - start:.0f}s)")


def export_scorer(args, work: Path, out: Path) -> dict:
    """The scorer in fp16 with its open_clip config; returns its record."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from lorasel.toyworld.scorer import MODEL_NAME, SCORER_WEIGHTS

    with safe_open(str(work / "scorer.safetensors"), framework="pt") as f:
        meta = f.metadata()
        state = {k: f.get_tensor(k).half() for k in f.keys()}  # noqa: SIM118
    record = {
        **_record(args),
        "steps": args.scorer_steps,
        "batch": args.scorer_batch,
        "lr": args.scorer_lr,
        "pool": args.scorer_pool,
        "hard": args.scorer_hard,
        "group": args.scorer_group,
        "config": json.loads(meta["config"]),
        "measured": json.loads(meta["history"]),
        "seconds": round(float(meta["seconds"])),
    }
    save_file(state, out / SCORER_WEIGHTS, metadata={"lorasel.toyworld": json.dumps(record)})
    (out / f"{MODEL_NAME}.json").write_text(meta["config"])
    return record
