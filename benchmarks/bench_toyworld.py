"""Section "toyworld": the bundled models' quality bars, budgets and the concept phenomenon.

Reproduce: ``python -m benchmarks.run toyworld``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

N_BASE = 100


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run(out_dir: Path) -> str:
    from lorasel.models import load_base, load_scorer
    from lorasel.toyworld import DEFAULT_GUIDANCE, DEFAULT_STEPS
    from lorasel.toyworld.learnability import train_plain_lora
    from lorasel.toyworld.model import weights_path
    from lorasel.toyworld.quality import base_quality, render_prompts, scorer_quality

    folder = weights_path("").parent
    sizes = {p.name: p.stat().st_size for p in sorted(folder.glob("*.safetensors"))}
    record = json.loads((folder / "pretrain.json").read_text())
    load_base("toy"), load_scorer("toy")  # warm imports and file cache
    (pipe, scorer), t_load = _timed(lambda: (load_base("toy"), load_scorer("toy")))
    prompts = ["a red circle on a blue background"] * 16
    render_prompts(pipe, prompts[:2], [0, 1])  # warm-up
    _, t_render = _timed(lambda: render_prompts(pipe, prompts, list(range(16)), batch_size=16))
    base = base_quality(pipe, n=N_BASE, seed=0)
    clip = scorer_quality(scorer, trials=50, k=20)

    rows = []
    curves = {}
    for concept in ("star", "moon"):
        fresh = load_base("toy")
        snaps, _ = _timed(
            lambda c=concept, p=fresh: train_plain_lora(p, c, steps=800, snapshot_every=100, probe_seeds=4)
        )
        curves[concept] = snaps
        for s in snaps:
            rows.append(
                f"| {concept} | {s.step} | {s.loss:.4f} | {s.concept_rate:.0%} | {s.ood_background:.0%} "
                f"| {s.ood_concept:.0%} |"
            )
    _plot_curves(curves, out_dir / "toyworld_learnability.svg")

    secs = record["seconds"]
    lines = [
        "## Toy world (issue 3)",
        "",
        f"Weights: {', '.join(f'`{k}` {v / 1e6:.1f} MB' for k, v in sizes.items())} "
        f"— {sum(sizes.values()) / 1e6:.1f} MB in all (budget 25 MB).",
        "",
        f"Pretraining record (`lorasel/toyworld/weights/pretrain.json`): `{record['command']}`, seed "
        f"{record['seed']}, steps {record['steps']}, {record['machine']}; time per stage "
        f"{', '.join(f'{k} {v / 60:.0f} min' for k, v in secs.items())} — "
        f"{sum(secs.values()) / 60:.0f} min in all (budget 90 min on 2 CPU cores).",
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
        "",
        "**Concept learnability** — a plain peft LoRA (rank 8 on UNet attention and text-encoder attention,",
        "AdamW 1e-3, batch 8; `lorasel.toyworld.learnability`) on a concept's 16 images, probed by the oracle",
        "every 100 steps: *concept* = in-domain prompts showing the concept's shape; *OOD background* =",
        "out-of-domain prompts (other backgrounds) that get the background they ask for.",
        "",
        "| concept | step | train loss | concept | OOD background | OOD concept |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        "![learnability](figures/toyworld_learnability.svg)",
    ]
    return "\n".join(lines)


def _plot_curves(curves, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.2), squeeze=False)
    for ax, (concept, snaps) in zip(axes[0], curves.items(), strict=True):
        steps = [s.step for s in snaps]
        ax.plot(steps, [s.concept_rate for s in snaps], "o-", label="concept (in-domain)")
        ax.plot(steps, [s.ood_background for s in snaps], "s-", label="asked background (OOD)")
        ax2 = ax.twinx()
        ax2.plot(steps, [s.loss for s in snaps], "k--", alpha=0.5, label="train loss")
        ax.set_title(f"concept '{concept}'")
        ax.set_xlabel("training step")
        ax.set_ylim(0, 1.05)
        ax.legend(loc="lower left", fontsize=8)
        ax2.set_ylabel("train loss")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
