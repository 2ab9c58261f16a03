"""Scorer embeddings of reference images, renders and prompt texts, each computed once and stored.

Embeddings are keyed by the scorer's ``name``: reference images by their content hash, renders
by their cache key, texts by the text itself. A rerun, or a second scorer pass after more
checkpoints appeared, embeds only what is new.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lorasel.errors import EvaluationError
from lorasel.evaluate.assemble import TEXT_KINDS, build_results
from lorasel.evaluate.candidates import CheckpointInfo
from lorasel.evaluate.plan import Batch
from lorasel.evaluate.progress import ProgressEvent, RenderProgress
from lorasel.evaluate.store import Store
from lorasel.results import BASE, Results
from lorasel.text import counted

CHUNK = 64  # images decoded and embedded at a time: bounds memory on large renders


def _open_image(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise EvaluationError(
            f"cannot read image {path}: {exc}", hint="remove or replace the file (PNG, JPEG or WebP)"
        ) from exc


def reference_embeddings(scorer, store: Store, paths: Sequence[Path]) -> np.ndarray:
    """[m, d] embeddings of the reference images; unreadable ones raise ``EvaluationError``."""
    keys = []
    for path in paths:
        try:
            keys.append(hashlib.sha256(path.read_bytes()).hexdigest())
        except OSError as exc:
            raise EvaluationError(
                f"cannot read reference image {path}: {exc}", hint="check the file"
            ) from exc
    cached = store.embeddings(scorer.name, "reference", keys)
    missing = [(k, p) for k, p in zip(keys, paths, strict=True) if k not in cached]
    for start in range(0, len(missing), CHUNK):
        chunk = missing[start : start + CHUNK]
        vectors = scorer.embed_images([_open_image(p) for _, p in chunk]).numpy()
        new = {k: v for (k, _), v in zip(chunk, vectors, strict=True)}
        store.record_embeddings(scorer.name, "reference", new)
        cached.update(new)
    return np.stack([cached[k] for k in keys])


def render_embeddings(
    scorer, store: Store, keys: Sequence[str], on_chunk: Callable[[int, int], None] | None = None
) -> dict[str, np.ndarray]:
    """Embeddings of the renders ``keys``, embedding from their PNGs only those not stored."""
    unique = list(dict.fromkeys(keys))
    cached = store.embeddings(scorer.name, "render", unique)
    missing = [k for k in unique if k not in cached]
    images = store.images(missing)
    for start in range(0, len(missing), CHUNK):
        chunk = missing[start : start + CHUNK]
        vectors = scorer.embed_images([_open_image(store.state_dir / images[k]) for k in chunk]).numpy()
        new = dict(zip(chunk, vectors, strict=True))
        store.record_embeddings(scorer.name, "render", new)
        cached.update(new)
        if on_chunk is not None:
            on_chunk(start + len(chunk), len(missing))
    return cached


def text_embeddings(scorer, store: Store, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """Embeddings of prompt texts, computed once per scorer."""
    unique = list(dict.fromkeys(texts))
    cached = store.embeddings(scorer.name, "text", unique)
    missing = [t for t in unique if t not in cached]
    if missing:
        new = dict(zip(missing, scorer.embed_texts(missing).numpy(), strict=True))
        store.record_embeddings(scorer.name, "text", new)
        cached.update(new)
    return cached


def score_plan(
    plan: Sequence[Batch],
    infos: Sequence[CheckpointInfo],
    skipped: set[str],
    store: Store,
    scorer,
    reference_vectors,
    reporter: RenderProgress,
    *,
    settings: dict[str, Any],
) -> Results:
    """The results of every checkpoint whose renders are all in the store: embeds what is not
    embedded yet, then computes the metrics. Incomplete checkpoints are left out with a warning."""
    keys_of: dict[str, list[str]] = {}
    for batch in plan:
        keys_of.setdefault(batch.checkpoint, []).extend(batch.keys)
    done = store.done([k for keys in keys_of.values() for k in keys])
    if not all(k in done for k in keys_of[BASE]):
        raise EvaluationError(
            "the base model's renders are incomplete",
            hint="rerun `lorasel eval`: it resumes where it stopped",
        )
    included = []
    for info in infos:
        missing = sum(k not in done for k in keys_of[info.checkpoint])
        if missing:
            if info.checkpoint not in skipped:
                reporter.warn(
                    f"{info.label} left out: {counted(missing, 'render')} missing (another process skipped it)"
                )
            continue
        included.append(info)
    if not included:
        raise EvaluationError(
            "no checkpoint could be evaluated: none fits the base model",
            hint="check --base: the checkpoints must be trained for this base model",
        )
    ids = {BASE} | {info.checkpoint for info in included}
    items = [item for batch in plan if batch.checkpoint in ids for item in batch.items]
    keys = [item.key for item in items]

    def on_chunk(n: int, total: int) -> None:
        reporter.emit(ProgressEvent("score", n, total, message="embedding renders"))

    vectors = render_embeddings(scorer, store, keys, on_chunk)
    texts = text_embeddings(
        scorer, store, [it.prompt.scoring_text for it in items if it.prompt.kind in TEXT_KINDS]
    )
    return build_results(
        items,
        render_embeddings=vectors,
        text_embeddings=texts,
        reference_embeddings=reference_vectors,
        images=store.images(keys),
        checkpoints=included,
        settings=settings,
    )
