"""Section "toyworld": the bundled models' quality bars, budgets and the concept phenomenon.

Reproduce: ``python -m benchmarks.run toyworld``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

N_BASE = 100
N_AGREEMENT = 200


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run(out_dir: Path) -> str:
    from lorasel.models import load_base, load_scorer
    from lorasel.toyworld import DEFAULT_GUIDANCE, DEFAULT_STEPS
    from lorasel.toyworld.model import weights_path
    from lorasel.toyworld.quality import (
        base_quality,
        render_prompts,
        scorer_generated_agreement,
        scorer_neighbours,
        scorer_quality,
        scorer_shape_accuracy,
    )
    from lorasel.toyworld.world import ALL_SHAPES

    folder = weights_path("pretrain.json").parent
    sizes = {p.name: p.stat().st_size for p in sorted(folder.glob("*.safetensors"))}
    record = json.loads((folder / "pretrain.json").read_text())
    load_base("toy"), load_scorer("toy")  # warm imports and file cache
    (pipe, scorer), t_load = _timed(lambda: (load_base("toy"), load_scorer("toy")))
    prompts = ["a red circle on a blue background"] * 16
    render_prompts(pipe, prompts[:2], [0, 1])  # warm-up
    _, t_render = _timed(lambda: render_prompts(pipe, prompts, list(range(16)), batch_size=16))
    base = base_quality(pipe, n=N_BASE, seed=0)
    clip = scorer_quality(scorer, trials=50, k=20)

    shapes = scorer_shape_accuracy(scorer, pipe, per_shape=10)
    agreement = scorer_generated_agreement(scorer, pipe, n=N_AGREEMENT)
    words = [f"a red {shape} on a blue background" for shape in ALL_SHAPES]
    text = scorer.embed_texts(words)
    sim = (text @ text.T).numpy()
    pairs = sorted(
        ((float(sim[i, j]), ALL_SHAPES[i], ALL_SHAPES[j]) for i in range(len(words)) for j in range(i)),
        reverse=True,
    )[:3]

    base_record, scorer_record = record["base"], record["scorer"]
    secs = {**base_record["seconds"], "scorer": scorer_record["seconds"]}
    neighbours = scorer_neighbours(scorer, n=400)
    lines = [
        "## Toy world (issue 3)",
        "",
        f"Weights: {', '.join(f'`{k}` {v / 1e6:.1f} MB' for k, v in sizes.items())} "
        f"— {sum(sizes.values()) / 1e6:.1f} MB in all (budget 25 MB).",
        "",
        f"Pretraining record (`lorasel/toyworld/weights/pretrain.json`), seed {base_record['seed']}: "
        f"base `{base_record['command']}` (steps {base_record['steps']}, {base_record['machine']}; "
        f"{base_record['note']}); scorer `{scorer_record['command']}` ({scorer_record['steps']} steps, "
        f"batch {scorer_record['batch']}, {scorer_record['machine']}). Time per stage "
        f"{', '.join(f'{k} {v / 60:.0f} min' for k, v in secs.items())} — "
        f"{sum(secs.values()) / 60:.0f} min in all (budget 90 min on 2 CPU cores).",
        *(["", f"Rerun: {record['rerun']}."] if record.get("rerun") else []),
        "",
        "| measure | value | bar |",
        "|---|---|---|",
        f"| load base + scorer (imports warm) | {t_load:.2f} s | ≤ 3 s |",
        f"| 16 renders, batch 16, {DEFAULT_STEPS} steps, CFG {DEFAULT_GUIDANCE} | {t_render:.2f} s | ≤ 10 s |",
        f"| base, {N_BASE} held-out captions: background colour | {base['background']:.0%} | ≥ 85% |",
        f"| base: object colour | {base['color']:.0%} | ≥ 75% |",
        f"| base: shape | {base['shape']:.0%} | ≥ 60% |",
        f"| scorer: text→image top-1 among 20 held-out captions (50 draws) | {clip['retrieval_top1']:.0%} | ≥ 80% |",
        f"| scorer: image cosine, same attributes / different | {clip['same_attribute_cosine']:.3f} / "
        f"{clip['different_attribute_cosine']:.3f} (same > different in {clip['same_beats_different']:.0%} of pairs) "
        "| same > different |",
        f"| scorer: shape by text, 10-way, colour and background given (clean / through the VAE) | "
        f"{shapes['clean']:.0%} / {shapes['vae']:.0%} | (chance 10%) |",
        f"| scorer reading {agreement['n']} base-model renders (of {N_AGREEMENT} captions) zero-shot agrees with "
        f"the oracle on shape / colour / background | {agreement['shape']:.0%} / {agreement['color']:.0%} / "
        f"{agreement['background']:.0%} | |",
        f"| scorer: an image's nearest other image (cosine, {neighbours['n']} random renders) has its shape / "
        f"colour / background | {neighbours['shape']:.0%} / {neighbours['color']:.0%} / "
        f"{neighbours['background']:.0%} | |",
        "",
        "Caption pairs that differ only in the shape, most similar by the scorer's text tower: "
        + ", ".join(f"{a} ~ {b} {c:.2f}" for c, a, b in pairs)
        + ". The scorer before this one (the clip stage's ViT, patch 8) read shape by text in 66% / 61% "
        "of images and its image embeddings were ruled by colour and background (nearest neighbour of "
        "the same shape 31%), so fidelity could not see whether a LoRA had learned its concept's shape.",
    ]
    return "\n".join(lines)
