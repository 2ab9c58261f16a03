"""Measured quality of the toy world's models, against the oracle (the bars of issue 3).

Used by the pretraining script, the benchmarks (full samples) and the tests (small samples).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from lorasel.toyworld import DEFAULT_GUIDANCE, DEFAULT_STEPS
from lorasel.toyworld.oracle import measure
from lorasel.toyworld.world import ALL_SHAPES, BASE_SHAPES, Scene, caption, held_out_combinations, render


def held_out_scenes(n: int, shapes: Sequence[str] = BASE_SHAPES, seed: int = 0) -> list[Scene]:
    """``n`` scenes whose (shape, colour, background) were never seen in pretraining."""
    combos = sorted(c for c in held_out_combinations() if c[0] in shapes)
    rng = random.Random(f"held-out:{seed}")
    return [Scene(*rng.choice(combos)) for _ in range(n)]


@torch.inference_mode()
def render_prompts(
    pipe,
    prompts: Sequence[str],
    seeds: Sequence[int],
    *,
    steps: int = DEFAULT_STEPS,
    guidance: float = DEFAULT_GUIDANCE,
    batch_size: int = 16,
):
    """Render each prompt with its own seed (one generator per image), in batches."""
    device = pipe.unet.device
    images = []
    for i in range(0, len(prompts), batch_size):
        gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds[i : i + batch_size]]
        out = pipe(
            list(prompts[i : i + batch_size]),
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=gens,
            height=64,
            width=64,
            output_type="pil",
        )
        images += out.images
    del device
    return images


def base_quality(pipe, n: int = 100, seed: int = 0, **render_kwargs) -> dict[str, float]:
    """Oracle accuracy of the base model on ``n`` held-out captions at default settings."""
    scenes = held_out_scenes(n, seed=seed)
    prompts = [caption(s) for s in scenes]
    images = render_prompts(pipe, prompts, [seed * 100_000 + i for i in range(n)], **render_kwargs)
    hits = {"background": 0, "color": 0, "shape": 0}
    for scene, image in zip(scenes, images, strict=True):
        m = measure(image)
        hits["background"] += m.background == scene.background
        hits["color"] += m.color == scene.color
        hits["shape"] += m.shape == scene.shape
    return {k: v / n for k, v in hits.items()}


def scorer_quality(scorer, trials: int = 50, k: int = 20, seed: int = 0) -> dict[str, float]:
    """Text→image top-1 retrieval among ``k`` held-out captions (mean over trials), and the mean
    image cosine of same-attribute pairs against different-attribute pairs."""
    rng = random.Random(f"scorer:{seed}")
    combos = sorted(held_out_combinations())
    correct = 0
    for _ in range(trials):
        chosen = rng.sample(combos, k)
        scenes = [Scene(*c) for c in chosen]
        texts = scorer.embed_texts([caption(s) for s in scenes])
        imgs = scorer.embed_images([render(s) for s in scenes])
        correct += int((texts @ imgs.T).argmax(1).eq(torch.arange(k)).sum())
    same, diff = [], []
    for _ in range(trials):
        a = Scene(*rng.choice(combos))
        b_same = Scene(
            a.shape,
            a.color,
            a.background,
            rng.uniform(0.24, 0.36),
            rng.uniform(0.4, 0.6),
            rng.uniform(0.4, 0.6),
        )
        other = [c for c in combos if c[0] != a.shape and c[1] != a.color and c[2] != a.background]
        b_diff = Scene(*rng.choice(other))
        e = scorer.embed_images([render(a), render(b_same), render(b_diff)])
        same.append(float(e[0] @ e[1]))
        diff.append(float(e[0] @ e[2]))
    return {
        "retrieval_top1": correct / (trials * k),
        "same_attribute_cosine": sum(same) / len(same),
        "different_attribute_cosine": sum(diff) / len(diff),
        "same_beats_different": sum(s > d for s, d in zip(same, diff, strict=True)) / len(same),
    }


def _read_by_text(scorer, images_emb: torch.Tensor, options: list[list[Scene]], attr: str) -> list[str]:
    """Zero-shot reading: for each image embedding, the ``attr`` of the option scene whose caption
    has the highest cosine. Every distinct caption is embedded once."""
    captions = sorted({caption(s) for scenes in options for s in scenes})
    texts = dict(zip(captions, scorer.embed_texts(captions), strict=True))
    out = []
    for e, scenes in zip(images_emb, options, strict=True):
        sims = torch.stack([texts[caption(s)] for s in scenes]) @ e
        out.append(getattr(scenes[int(sims.argmax())], attr))
    return out


@torch.inference_mode()
def scorer_shape_accuracy(scorer, pipe=None, per_shape: int = 10, seed: int = 0) -> dict[str, float]:
    """10-way shape recognition by text: for each image, the caption (its own colour and
    background) whose shape word has the highest cosine. ``clean`` on the world's renders and,
    with ``pipe``, ``vae`` on the same images after a round trip through the base's VAE (how
    generated images look). Chance is 1 / len(ALL_SHAPES)."""
    import numpy as np
    from PIL import Image

    rng = random.Random(f"shape-accuracy:{seed}")
    scenes = [Scene(shape, *rng.choice([c[1:] for c in held_out_combinations()])) for shape in ALL_SHAPES
              for _ in range(per_shape)]  # fmt: skip
    images = {"clean": [render(s) for s in scenes]}
    if pipe is not None:
        x = torch.stack(
            [
                torch.from_numpy(np.asarray(im, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)
                for im in images["clean"]
            ]
        ).to(pipe.vae.device, pipe.vae.dtype)
        y = pipe.vae.decode(pipe.vae.encode(x).latent_dist.mean).sample.clamp(-1, 1).float().cpu()
        images["vae"] = [
            Image.fromarray(((i.permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()) for i in y
        ]
    options = [[Scene(shape, scene.color, scene.background) for shape in ALL_SHAPES] for scene in scenes]
    out = {}
    for kind, ims in images.items():
        read = _read_by_text(scorer, scorer.embed_images(ims), options, "shape")
        out[kind] = sum(r == scene.shape for r, scene in zip(read, scenes, strict=True)) / len(scenes)
    return out


@torch.inference_mode()
def scorer_neighbours(scorer, n: int = 400, seed: int = 0) -> dict[str, float]:
    """How often an image's nearest other image (by the scorer's image embeddings) shares its
    shape, colour and background, over ``n`` random renders of every shape. Fidelity compares
    images with images: this says which attributes it sees."""
    from lorasel.toyworld.world import sample_scene

    rng = random.Random(f"neighbours:{seed}")
    scenes = [sample_scene(rng, ALL_SHAPES) for _ in range(n)]
    emb = scorer.embed_images([render(s) for s in scenes])
    sim = emb @ emb.T
    sim.fill_diagonal_(-2.0)
    nearest = [scenes[j] for j in sim.argmax(1).tolist()]
    return {
        "n": n,
        **{
            attr: sum(getattr(a, attr) == getattr(b, attr) for a, b in zip(scenes, nearest, strict=True)) / n
            for attr in ("shape", "color", "background")
        },
    }


@torch.inference_mode()
def scorer_generated_agreement(
    scorer, pipe, n: int = 200, seed: int = 0, **render_kwargs
) -> dict[str, float]:
    """How often the scorer, reading a generated image zero-shot, names each attribute as the
    oracle measures it. The base model renders ``n`` captions of base shapes; for each image
    with an object, one attribute is chosen among every value by text cosine, the other two
    fixed at what the oracle sees. Generated images are blurrier and more distorted than the
    world's renders (where the scorer is near perfect): this is what evaluation reads."""
    from lorasel.toyworld.world import COLORS, sample_scene

    rng = random.Random(f"generated-agreement:{seed}")
    scenes = [sample_scene(rng, BASE_SHAPES) for _ in range(n)]
    seeds = [seed * 100_000 + i for i in range(n)]
    images = render_prompts(pipe, [caption(s) for s in scenes], seeds, **render_kwargs)
    seen = [(image, m) for image, m in ((im, measure(im)) for im in images) if m.shape is not None]
    emb = scorer.embed_images([image for image, _ in seen])
    measured = [m for _, m in seen]
    colours = tuple(COLORS)
    options = {
        "shape": [[Scene(s, m.color, m.background) for s in ALL_SHAPES] for m in measured],
        "color": [[Scene(m.shape, c, m.background) for c in colours if c != m.background] for m in measured],
        "background": [[Scene(m.shape, m.color, b) for b in colours if b != m.color] for m in measured],
    }
    out: dict[str, float] = {"n": len(seen)}
    total = max(len(seen), 1)
    for attr, per_image in options.items():
        read = _read_by_text(scorer, emb, per_image, attr)
        out[attr] = sum(r == getattr(m, attr) for r, m in zip(read, measured, strict=True)) / total
    return out


__all__ = [
    "ALL_SHAPES",
    "base_quality",
    "held_out_scenes",
    "render_prompts",
    "scorer_generated_agreement",
    "scorer_neighbours",
    "scorer_quality",
    "scorer_shape_accuracy",
]
