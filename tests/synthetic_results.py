"""Synthetic evaluation results with realistic shapes, for the ranker and the reports.

K checkpoints × S strengths × P prompts of each of the 4 kinds × N seeds, plus the base model
(strength 0). Metric means come from a ``quality(epoch, strength)`` function; each (prompt,
seed) unit adds one offset shared by every candidate (the common random numbers of a real
evaluation) and each render adds its own noise. A metric the quality function leaves out is not
measured (NaN), as adherence is in a store written before lorasel measured it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lorasel.results import BASE, KIND_METRICS, KINDS, METRICS, RENDER_METRICS, Results

Quality = Callable[[int, float], dict[str, float]]


def overfitting(epochs: int) -> Quality:
    """The story of the seed documents: fidelity saturates, flexibility collapses with training.

    Training "dose" t = epoch / epochs × strength. The best balance is in the middle.
    """

    def quality(epoch: int, strength: float) -> dict[str, float]:
        t = epoch / epochs * strength
        return {
            "fidelity": 0.5 + 0.4 * (1.0 - math.exp(-4.0 * t)),
            "flexibility": 0.33 - 0.12 * t**2,
            "adherence": 0.30 - 0.05 * t**2,
            "diversity": 3.0 - 1.2 * t,
            "preservation": 1.0 - 0.15 * t,
        }

    return quality


def make_results(
    *,
    checkpoints: int = 4,
    strengths: Sequence[float] = (0.5, 0.75, 1.0),
    prompts_per_kind: int = 2,
    seeds: int = 3,
    quality: Quality | None = None,
    unit_noise: float = 0.03,
    render_noise: float = 0.01,
    seed: int = 0,
    steps_per_epoch: int = 10,
    name: str = "zkz",
    labels: Sequence[str] | None = None,
    prompt_text: Callable[[str, str], str] | None = None,
    metadata: dict[str, str] | None = None,
    state_dir: Path | None = None,
    image_size: int = 16,
) -> Results:
    """Build a :class:`Results`; with ``state_dir``, also write one small PNG per render there."""
    rng = np.random.default_rng(seed)
    quality = quality or overfitting(checkpoints)
    units = [
        (f"{kind}/{p}", kind, s) for kind in KINDS for p in range(prompts_per_kind) for s in range(seeds)
    ]
    unit_offset = {(pid, s): rng.normal(0.0, unit_noise) for pid, _, s in units}
    prompt_offset = {pid: rng.normal(0.0, unit_noise) for pid, _, _ in units}

    ckpts = []
    for k in range(1, checkpoints + 1):
        label = labels[k - 1] if labels is not None else f"{name}-{k:06d}"
        ckpts.append((f"{label}.safetensors", label, k, k * steps_per_epoch))
    cands = [(BASE, "base", None, None, 0.0)] + [
        (cid, label, epoch, step, float(s)) for cid, label, epoch, step in ckpts for s in strengths
    ]
    base_quality = quality(0, 0.0)

    renders, diversity = [], []
    for ci, (cid, label, epoch, step, strength) in enumerate(cands):
        q = base_quality if cid == BASE else quality(epoch, strength)
        for pid, kind, s in units:
            row = {
                "checkpoint": cid, "label": label, "epoch": epoch, "step": step, "strength": strength,
                "prompt_id": pid, "kind": kind,
                "prompt": prompt_text(pid, kind) if prompt_text else f"a {kind.replace('_', ' ')} prompt {pid}",
                "seed_index": s, "seed": 1000 + s, "image": f"renders/{ci:03d}_{pid.replace('/', '_')}_{s}.png",
                **dict.fromkeys(RENDER_METRICS, math.nan),
            }  # fmt: skip
            for metric in KIND_METRICS[kind]:
                if metric not in q:
                    continue
                value = q[metric] + unit_offset[(pid, s)] + rng.normal(0.0, render_noise)
                if metric == "preservation" and cid == BASE:
                    value = 1.0  # the base model's render is its own reference
                row[metric] = value
                if metric == "flexibility":
                    base_value = base_quality["flexibility"] + unit_offset[(pid, s)]
                    row["flexibility_gain"] = value - base_value
            renders.append(row)
        for pid in sorted({u[0] for u in units}):
            kind = pid.split("/")[0]
            value = q["diversity"] + prompt_offset[pid] + rng.normal(0.0, render_noise)
            diversity.append(
                {"checkpoint": cid, "strength": strength, "prompt_id": pid, "kind": kind, "diversity": value}
            )

    renders_df = pd.DataFrame(renders)
    renders_df["epoch"] = renders_df["epoch"].astype("Int64")
    renders_df["step"] = renders_df["step"].astype("Int64")
    root = Path("/runs/synthetic") if state_dir is None else Path(state_dir).parent
    checkpoints_df = pd.DataFrame(
        [
            {
                "checkpoint": cid,
                "label": label,
                "path": str(root / "checkpoints" / cid),
                "epoch": epoch,
                "step": step,
                "hash": f"{k:064x}",
                "format": "kohya",
                "algo": "lora",
                "metadata": dict(metadata or {"ss_output_name": name, "ss_epoch": str(epoch)}),
            }
            for k, (cid, label, epoch, step) in enumerate(ckpts)
        ]
    )
    checkpoints_df["epoch"] = checkpoints_df["epoch"].astype("Int64")
    checkpoints_df["step"] = checkpoints_df["step"].astype("Int64")
    settings = {
        "base": "toy", "scorer": "toy", "steps": 8, "guidance": 5.0, "size": 64, "seeds": seeds,
        "strengths": list(strengths), "prompts": "synthetic", "trigger": name, "class_word": "star",
    }  # fmt: skip
    results = Results(
        renders=renders_df, diversity=pd.DataFrame(diversity), checkpoints=checkpoints_df, settings=settings
    )
    if state_dir is not None:
        write_images(results, Path(state_dir), image_size)
    return results


def write_images(results: Results, state_dir: Path, size: int = 16) -> None:
    """One flat-colour PNG per render (colour from its candidate), at ``state_dir / image``."""
    from PIL import Image

    cand = results.renders.groupby(["checkpoint", "strength"], sort=False).ngroup().to_numpy()
    for i, rel in enumerate(results.renders["image"]):
        path = state_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        c = int(cand[i])
        colour = ((c * 53) % 256, (c * 97 + 40) % 256, (c * 29 + 90) % 256)
        Image.new("RGB", (size, size), colour).save(path)


def from_table(
    rows: Sequence[dict],
    *,
    prompts_per_kind: int = 2,
    seeds: int = 3,
    unit_noise: float = 0.0,
    seed: int = 0,
) -> Results:
    """Results whose candidates have exactly the given means (plus optional shared unit noise).

    ``rows``: dicts with ``checkpoint`` (e.g. "a"), ``strength`` and the metrics (fidelity,
    flexibility, diversity, preservation; adherence too, or it is not measured); a checkpoint's
    epoch is its order of first appearance (1-based).
    """
    table = {(r["checkpoint"], float(r["strength"])): r for r in rows}
    order = list(dict.fromkeys(r["checkpoint"] for r in rows))
    measured = [m for m in METRICS if all(m in r for r in rows)]

    def quality(epoch: int, strength: float) -> dict[str, float]:
        if epoch == 0:
            base = {
                "fidelity": 0.3,
                "flexibility": 0.35,
                "adherence": 0.3,
                "diversity": 3.0,
                "preservation": 1.0,
            }
            return {m: v for m, v in base.items() if m in measured}
        r = table[(order[epoch - 1], float(strength))]
        return {m: r[m] for m in measured}

    strengths = sorted({float(r["strength"]) for r in rows})
    return make_results(
        checkpoints=len(order),
        strengths=strengths,
        prompts_per_kind=prompts_per_kind,
        seeds=seeds,
        quality=quality,
        unit_noise=unit_noise,
        render_noise=0.0,
        seed=seed,
        labels=order,
    )


def known_truth_run(
    seed: int, *, n_boot: int, rank_seed: int, epochs: int = 8, strengths: Sequence[float] = (0.5, 0.75, 1.0)
) -> tuple[pd.DataFrame, np.ndarray]:
    """A ranked synthetic evaluation whose truth is known: the :func:`overfitting` world, 12
    prompts (3 per kind) × 4 seeds, unit noise 0.04, render noise 0.02 (CLIP-cosine units).

    Returns the competing rows of the ranking table (pick first) and their true composite scores
    (the noiseless metric means under the run's own normalisation and weights).
    """
    from lorasel.rank import rank
    from lorasel.rank.score import composite

    quality = overfitting(epochs)
    results = make_results(
        checkpoints=epochs, strengths=strengths, prompts_per_kind=3, seeds=4, unit_noise=0.04,
        render_noise=0.02, seed=seed,
    )  # fmt: skip
    ranking = rank(results, n_boot=n_boot, seed=rank_seed)
    contest = ranking.table[ranking.table["checkpoint"] != BASE].reset_index(drop=True)
    cells = list(zip(contest["epoch"], contest["strength"], strict=True))
    truth = {m: np.array([quality(int(e), float(s))[m] for e, s in cells]) for m in METRICS}
    return contest, composite(truth, ranking.normalisation, ranking.weights)


def refined_results(results: Results, keep: set[tuple[str, float]], seeds: int) -> Results:
    """``results`` as ``lorasel eval --refine`` leaves them: the base and the ``keep`` (checkpoint,
    strength) pairs on every seed, the other candidates on seed indices below ``seeds`` only."""
    r = results.renders
    pair = list(zip(r["checkpoint"].astype(str), r["strength"].astype(float), strict=True))
    kept = (r["seed_index"] < seeds) | (r["checkpoint"] == BASE) | pd.Series([p in keep for p in pair])
    return Results(renders=r[kept].reset_index(drop=True), diversity=results.diversity,
                   checkpoints=results.checkpoints, settings=results.settings)  # fmt: skip
