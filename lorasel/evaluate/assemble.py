"""Turn renders and their embeddings into the ``Results`` frames (no I/O, no models)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from lorasel.evaluate import metrics
from lorasel.evaluate.candidates import CheckpointInfo
from lorasel.evaluate.plan import RenderItem
from lorasel.results import BASE, CHECKPOINT_COLUMNS, DIVERSITY_COLUMNS, RENDER_COLUMNS, Results

FIDELITY_KINDS = ("in_domain", "trigger")
#: Kinds whose renders are scored against their prompt's text: flexibility, adherence.
TEXT_KINDS = ("out_of_domain", "in_domain")


def build_results(
    items: Sequence[RenderItem],
    *,
    render_embeddings: Mapping[str, np.ndarray],
    text_embeddings: Mapping[str, np.ndarray],
    reference_embeddings: np.ndarray,
    images: Mapping[str, str],
    checkpoints: Sequence[CheckpointInfo],
    settings: dict[str, Any],
) -> Results:
    """The frames of ``lorasel.results`` for ``items`` (the base model's renders included).

    Per render: fidelity (in_domain, trigger), flexibility and its gain over the base
    (out_of_domain), adherence (in_domain), preservation (unrelated). Per (checkpoint, strength,
    prompt): diversity, over the seeds every (checkpoint, strength) was rendered with, so that a
    refinement's extra seeds for a few candidates do not change what their diversity measures.
    ``settings["centroid_distance"]`` maps "checkpoint@strength" to ‖μ_gen − μ_ref‖².
    """
    info = {c.checkpoint: c for c in checkpoints}
    emb = np.stack([render_embeddings[it.key] for it in items]).astype(np.float64)
    kinds = np.array([it.prompt.kind for it in items])
    n = len(items)

    fidelity = np.full(n, np.nan)
    mask = np.isin(kinds, FIDELITY_KINDS)
    if mask.any():
        fidelity[mask] = metrics.fidelity(emb[mask], reference_embeddings)

    # Both are the render's CLIP text cosine to its prompt with the trigger replaced by the
    # class word: on out-of-domain prompts (flexibility) and on in-domain ones (adherence).
    text_score = {}
    for kind in TEXT_KINDS:
        text_score[kind] = np.full(n, np.nan)
        mask = kinds == kind
        if mask.any():
            texts = np.stack(
                [text_embeddings[it.prompt.scoring_text] for it, m in zip(items, mask, strict=True) if m]
            )
            text_score[kind][mask] = metrics.text_alignment(emb[mask], texts)
    flexibility, adherence = text_score["out_of_domain"], text_score["in_domain"]

    # Paired with the base model's render of the same prompt and seed.
    base_row = {(it.prompt.text, it.seed_index): i for i, it in enumerate(items) if it.checkpoint == BASE}
    partner = np.array([base_row.get((it.prompt.text, it.seed_index), -1) for it in items])
    if (partner < 0).any():
        raise ValueError("every render needs the base model's render of its prompt and seed")
    gain = flexibility - flexibility[partner]
    preservation = np.full(n, np.nan)
    mask = kinds == "unrelated"
    if mask.any():
        preservation[mask] = metrics.preservation(emb[mask], emb[partner[mask]])

    rows = []
    for i, it in enumerate(items):
        c = info.get(it.checkpoint)
        rows.append(
            {
                "checkpoint": it.checkpoint,
                "label": c.label if c else BASE,
                "epoch": c.epoch if c else None,
                "step": c.step if c else None,
                "strength": it.strength,
                "prompt_id": it.prompt.prompt_id,
                "kind": it.prompt.kind,
                "prompt": it.prompt.text,
                "seed_index": it.seed_index,
                "seed": it.seed,
                "image": images[it.key],
                "fidelity": fidelity[i],
                "flexibility": flexibility[i],
                "flexibility_gain": gain[i],
                "adherence": adherence[i],
                "preservation": preservation[i],
            }
        )
    renders = pd.DataFrame(rows, columns=list(RENDER_COLUMNS))
    for col in ("epoch", "step"):
        renders[col] = renders[col].astype("Int64")
    renders["seed"] = renders["seed"].astype("int64")

    diversity_rows, centroid = [], {}
    groups: dict[tuple[str, float], list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault((it.checkpoint, it.strength), []).append(i)
    shared = _shared_seeds(items, groups)
    for (checkpoint, strength), rows_of_group in groups.items():
        by_prompt: dict[str, list[int]] = {}
        for i in rows_of_group:
            if items[i].seed_index in shared[items[i].prompt.prompt_id]:
                by_prompt.setdefault(items[i].prompt.prompt_id, []).append(i)
        for prompt_id, idx in by_prompt.items():
            diversity_rows.append(
                {
                    "checkpoint": checkpoint,
                    "strength": strength,
                    "prompt_id": prompt_id,
                    "kind": items[idx[0]].prompt.kind,
                    "diversity": metrics.vendi_score(emb[idx]),
                }
            )
        fid = [i for i in rows_of_group if kinds[i] in FIDELITY_KINDS]
        if fid:
            centroid[f"{checkpoint}@{strength:g}"] = metrics.centroid_distance(emb[fid], reference_embeddings)
    diversity = pd.DataFrame(diversity_rows, columns=list(DIVERSITY_COLUMNS))

    checkpoint_frame = pd.DataFrame([c.row() for c in checkpoints], columns=list(CHECKPOINT_COLUMNS))
    for col in ("epoch", "step"):
        checkpoint_frame[col] = checkpoint_frame[col].astype("Int64")
    return Results(
        renders=renders,
        diversity=diversity,
        checkpoints=checkpoint_frame,
        settings={**settings, "centroid_distance": centroid},
    )


def _shared_seeds(
    items: Sequence[RenderItem], groups: Mapping[tuple[str, float], list[int]]
) -> dict[str, set[int]]:
    """Per prompt: the seed indices every (checkpoint, strength) rendering it was rendered with."""
    shared: dict[str, set[int]] = {}
    for rows in groups.values():
        seeds: dict[str, set[int]] = {}
        for i in rows:
            seeds.setdefault(items[i].prompt.prompt_id, set()).add(items[i].seed_index)
        for prompt_id, have in seeds.items():
            shared[prompt_id] = shared[prompt_id] & have if prompt_id in shared else have
    return shared
