"""``report.html``: one self-contained page that opens offline.

Images are inlined as ``data:`` URIs, CSS and JS are inline, nothing is fetched. Every piece of
text from the run (prompts, file names, checkpoint metadata from strangers' files) goes
through jinja2's autoescaping; the only markup marked safe is lorasel's own CSS and JS. A
Content-Security-Policy allows exactly that one script (by hash) and ``data:`` images, so even
a mistake in escaping could not run injected script.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from lorasel import __version__
from lorasel.checkpoints.read import EMBEDDING_ADVICE, bundled_embeddings
from lorasel.io import atomic_write_text, output_file
from lorasel.rank.bootstrap import TIE_LEVEL
from lorasel.rank.ranking import Candidate, Ranking
from lorasel.report import plots
from lorasel.report.thumbnails import thumbnail
from lorasel.results import BASE, KIND_METRICS, KINDS, METRIC_SHORT, Results
from lorasel.text import counted

#: Longest metadata value shown (metadata such as ss_tag_frequency can be huge).
MAX_META_CHARS = 300
#: Most metadata keys shown per checkpoint.
MAX_META_KEYS = 60


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or value is pd.NA:
        return "—"
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "—" if not math.isfinite(value) else f"{value:.{digits}f}"


def _sort_value(value: Any) -> str:
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, (bool,)):
        return "1" if value else "0"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "" if not math.isfinite(number) else repr(number)


def _opt_int(value: Any) -> str:
    return "" if value is None or pd.isna(value) else str(int(value))


def _clip(text: Any, limit: int = MAX_META_CHARS) -> str:
    text = str(text)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


def _candidate_view(c: Candidate) -> dict[str, Any]:
    return {
        "label": c.label,
        "path": c.path,
        "strength": f"{c.strength:g}",
        "tag": c.prompt_tag or "",
        "epoch": "" if c.epoch is None else str(c.epoch),
        "step": "" if c.step is None else str(c.step),
        "score": _fmt(c.score),
        "lo": _fmt(c.score_lo),
        "hi": _fmt(c.score_hi),
        "p_best": _fmt(c.p_best, 2),
        "rank": f"{c.rank}" if c.rank is not None else "—",
        "loss": _fmt(c.loss, 4),
    }


_HEAD = (
    ("rank", "rank", "rank by composite score"),
    ("checkpoint", "checkpoint", "checkpoint file"),
    ("epoch", "epoch", ""),
    ("step", "step", ""),
    ("strength", "strength", "LoRA strength (multiplier)"),
    ("fidelity", "fidelity", "CLIP image cosine to the training images"),
    ("flexibility", "flexibility", "CLIP text cosine to out-of-domain prompts"),
    ("adherence", "adherence", "CLIP text cosine to in-domain prompts"),
    ("diversity", "diversity", "Vendi score over seeds"),
    ("preservation", "preservation", "cosine to the base model on prompts without the trigger"),
    ("score", "score", "composite score (normalised within the run)"),
    ("interval", "95% interval", "bootstrap percentile interval of the score"),
    ("p_best", "P(best)", "share of bootstrap rounds in which it is best"),
    ("tied", "tied", "could be the best: in the 95% confidence set for the best, like the pick"),
    (
        "pareto",
        "Pareto",
        "on the Pareto front of the scored metrics: no other candidate is better on all of them",
    ),
    ("loss", "loss", "mean training loss of the epoch ending at the checkpoint"),
    ("val_loss", "val loss", "validation loss"),
)
#: Shown only when candidates were rendered with different numbers of seeds (`eval --refine`).
_SEEDS_HEAD = ("seeds", "seeds", "seeds per prompt it was rendered with (`lorasel eval --refine` adds some)")


def _table_head(ranking: Ranking) -> list[dict[str, str]]:
    front = ranking.front_label()
    head = (*_HEAD, _SEEDS_HEAD) if ranking.seeds_vary else _HEAD
    return [{"key": k, "text": t, "title": f"{d} ({front})" if k == "pareto" else d} for k, t, d in head]


def _table_rows(ranking: Ranking) -> list[dict[str, Any]]:
    rows = []
    best = ranking.best
    seeds_vary = ranking.seeds_vary
    for r in ranking.table.to_dict("records"):
        is_base = r["checkpoint"] == BASE
        is_best = not is_base and r["checkpoint"] == best.checkpoint and r["strength"] == best.strength
        cells = [
            {"text": "—" if is_base else str(int(r["rank"])), "sort": _sort_value(r["rank"])},
            {"text": r["label"], "sort": r["label"], "cls": "text ckpt"},
            {"text": _opt_int(r["epoch"]) or "—", "sort": _sort_value(r["epoch"])},
            {"text": _opt_int(r["step"]) or "—", "sort": _sort_value(r["step"])},
            {"text": f"{r['strength']:g}", "sort": _sort_value(r["strength"])},
            *(
                {"text": _fmt(r[m]), "sort": _sort_value(r[m])}
                for m in ("fidelity", "flexibility", "adherence")
            ),
            {"text": _fmt(r["diversity"], 2), "sort": _sort_value(r["diversity"])},
            {"text": _fmt(r["preservation"]), "sort": _sort_value(r["preservation"])},
            {"text": _fmt(r["score"]), "sort": _sort_value(r["score"])},
            {"text": f"{_fmt(r['score_lo'])}–{_fmt(r['score_hi'])}", "sort": _sort_value(r["score_lo"])},
            {"text": _fmt(r["p_best"], 3), "sort": _sort_value(r["p_best"])},
            {"text": "=" if r["tied"] else "", "sort": _sort_value(bool(r["tied"]))},
            {"text": "◆" if r["pareto"] else "", "sort": _sort_value(bool(r["pareto"]))},
            {"text": _fmt(r["loss"], 4), "sort": _sort_value(r["loss"])},
            {"text": _fmt(r["val_loss"], 4), "sort": _sort_value(r["val_loss"])},
        ]
        if seeds_vary:
            cells.append({"text": str(int(r["seeds"])), "sort": _sort_value(r["seeds"])})
        for c in cells:
            c.setdefault("cls", "")
        rows.append({"cls": "base" if is_base else ("best" if is_best else ""), "cells": cells})
    return rows


def _strength_key(value: float) -> float:
    return round(float(value), 6)


def _thumbnails(state_dir: Path, images: Iterable[str]) -> dict[str, str | None]:
    """Thumbnails of the given renders, decoded in parallel (PIL releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    images = list(images)
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(zip(images, pool.map(lambda rel: thumbnail(state_dir, rel), images), strict=True))


def _grids(results: Results, ranking: Ranking, state_dir: Path, seeds: int) -> list[dict[str, Any]]:
    """Per prompt: checkpoints (rows) × strengths (columns), plus the base model in one tall cell."""
    table = ranking.table
    contest = table[table["checkpoint"] != BASE]
    strengths = sorted({_strength_key(s) for s in contest["strength"]})
    labels = dict(zip(contest["checkpoint"], contest["label"], strict=True))
    checkpoint_order = [
        c for c in dict.fromkeys(results.checkpoints["checkpoint"].astype(str)) if c in labels
    ]
    checkpoint_order += [c for c in dict.fromkeys(contest["checkpoint"]) if c not in checkpoint_order]
    by_candidate = {(r["checkpoint"], _strength_key(r["strength"])): r for r in table.to_dict("records")}
    best = ranking.best

    renders = results.renders.assign(
        checkpoint=results.renders["checkpoint"].astype(str),
        skey=results.renders["strength"].map(_strength_key),
    )
    seed_indices = sorted(renders["seed_index"].unique())[: max(1, seeds)]
    renders = renders[renders["seed_index"].isin(seed_indices)]
    lookup: dict[tuple, list[tuple[int, str, float]]] = {}
    for r in renders[["checkpoint", "skey", "prompt_id", "seed_index", "image", "kind"]].itertuples(
        index=False
    ):
        lookup.setdefault((r.checkpoint, r.skey, r.prompt_id), []).append(
            (r.seed_index, r.image, KIND_METRICS.get(r.kind, ()))
        )
    values = renders.set_index(["checkpoint", "skey", "prompt_id", "seed_index"])
    thumbs = _thumbnails(state_dir, renders["image"].astype(str).unique())

    def cell(checkpoint: str, strength: float, prompt_id: str) -> dict[str, Any]:
        found = sorted(lookup.get((checkpoint, strength, prompt_id), []))
        images = [thumbs.get(image) for _, image, _ in found] or [None]
        cand = by_candidate.get((checkpoint, strength))
        parts = []
        if cand is not None and checkpoint != BASE:
            parts.append(f"#{int(cand['rank'])} · {_fmt(cand['score'], 2)}")
        for metric in found[0][2] if found else ():
            v = values.loc[(checkpoint, strength, prompt_id, found[0][0]), metric]
            v = v.iloc[0] if isinstance(v, pd.Series) else v
            parts.append(f"{METRIC_SHORT[metric]} {_fmt(v, 2)}")
        is_pick = checkpoint == best.checkpoint and strength == _strength_key(best.strength)
        return {"images": images, "caption": " · ".join(parts), "pick": is_pick}

    prompts = renders.drop_duplicates("prompt_id")[["prompt_id", "kind", "prompt"]]
    prompts = prompts.assign(_k=prompts["kind"].map({k: i for i, k in enumerate(KINDS)}).fillna(len(KINDS)))
    grids = []
    for p in prompts.sort_values(["_k", "prompt_id"], kind="stable").itertuples(index=False):
        rows = [
            {"label": labels[c], "cells": [cell(c, s, p.prompt_id) for s in strengths]}
            for c in checkpoint_order
        ]
        grids.append(
            {
                "prompt_id": p.prompt_id,
                "kind": p.kind,
                "prompt": p.prompt,
                "strengths": [f"{s:g}" for s in strengths],
                "rows": rows,
                "base": cell(BASE, 0.0, p.prompt_id),
            }
        )
    return grids


def _settings(results: Results, ranking: Ranking) -> list[tuple[str, str]]:
    items = [(str(k), _clip(v)) for k, v in results.settings.items()]
    weights = ", ".join(f"{k}={v:g}" for k, v in ranking.weights.as_dict().items())
    norm = ranking.normalisation
    ranges = ", ".join(
        f"{m} {norm.low[m]:.3f}–{norm.high[m]:.3f}"
        if m in norm.active
        else f"{m} not used ({'not measured' if m in ranking.unmeasured else 'constant'})"
        for m in norm.low
    )
    units = ", ".join(f"{k} {v}" for k, v in sorted(ranking.units.items()))
    items += [
        ("weights", weights),
        ("normalisation (min–max over candidates)", ranges),
        ("bootstrap", f"{ranking.n_boot} rounds over (prompt, seed) units, seed {ranking.seed}"),
        ("units per kind", units),
        ("loss log", ranking.loss_source or "none found"),
    ]
    return items


def _checkpoints(results: Results, ranking: Ranking) -> list[dict[str, Any]]:
    shown = set(ranking.table["checkpoint"])
    out = []
    for r in results.checkpoints.to_dict("records"):
        if str(r["checkpoint"]) not in shown:
            continue
        metadata = r.get("metadata") or {}
        items = metadata.items() if isinstance(metadata, dict) else []
        meta = [
            (_clip(k, 120), _clip(v)) for k, v in sorted(items, key=lambda kv: str(kv[0]))[:MAX_META_KEYS]
        ]
        out.append(
            {
                "label": str(r["label"]),
                "path": str(r["path"]),
                "format": str(r["format"]),
                "algo": str(r["algo"]),
                "hash": str(r["hash"]),
                "metadata": meta,
            }
        )
    return out


def _spearman_text(ranking: Ranking) -> str:
    rho = ranking.loss_spearman
    if rho is None:
        return "Too few checkpoints with a loss to correlate loss with score."
    verdict = (
        "lower loss went with better checkpoints here"
        if rho <= -0.7
        else "loss was a poor guide to quality here"
        if rho < 0.3
        else "lower loss went with worse checkpoints here (overfitting)"
    )
    return (
        f"Spearman correlation between training loss and each checkpoint's best score: "
        f"ρ = {rho:+.2f} ({verdict}; a good selector would be close to −1)."
    )


def _environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined

    return Environment(
        loader=PackageLoader("lorasel.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(
    results: Results,
    ranking: Ranking,
    state_dir: str | Path,
    *,
    title: str | None = None,
    seeds: int = 1,
) -> str:
    """The report as a string (see :func:`write_html`)."""
    from markupsafe import Markup

    env = _environment()
    script = env.loader.get_source(env, "report.js")[0]
    css = env.loader.get_source(env, "report.css")[0]
    script_hash = "sha256-" + base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()

    state_dir = Path(state_dir)
    table = ranking.table
    contest = table[table["checkpoint"] != BASE]
    n = len(contest)
    best = ranking.best
    tied = [
        f"{r['label']} @ {r['strength']:g}"
        for r in contest.to_dict("records")
        if r["tied"] and not (r["checkpoint"] == best.checkpoint and r["strength"] == best.strength)
    ]
    strengths = sorted(set(contest["strength"]))
    x_label = (
        "epoch"
        if contest["epoch"].notna().all()
        else "step"
        if contest["step"].notna().all()
        else "checkpoint"
    )
    lowest = ranking.lowest_loss
    context = {
        "title": title or "lorasel",
        "version": __version__,
        "generated": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "summary_line": (
            f"{counted(contest['checkpoint'].nunique(), 'checkpoint')} × {counted(len(strengths), 'strength')} "
            f"({', '.join(f'{s:g}' for s in strengths)}), {sum(ranking.units.values())} (prompt, seed) units"
        ),
        "pick": _candidate_view(best),
        "embeddings": bundled_embeddings(best.path),
        "embedding_advice": EMBEDDING_ADVICE,
        "runner_up": _candidate_view(ranking.runner_up) if ranking.runner_up else None,
        "tied": tied,
        "tie_advice": ranking.tie_advice(len(tied)),
        "tie_level": f"{TIE_LEVEL:.0%}",
        "warnings": ranking.warnings(),
        "lowest_loss": _candidate_view(lowest) if lowest else None,
        "loss_source": ranking.loss_source or "looked for logs/loss.csv and TensorBoard event files",
        "spearman_text": _spearman_text(ranking),
        "n_candidates": n,
        "x_label": x_label,
        "plot_score": plots.score_and_loss(ranking),
        "plot_tradeoff": plots.tradeoff(ranking),
        "tradeoff_metric": plots.tradeoff_metric(ranking),
        "front_label": ranking.front_label(),
        "table_head": _table_head(ranking),
        "table_rows": _table_rows(ranking),
        "grid_axis": "checkpoint",
        "grid_seed_text": ", ".join(str(i) for i in range(max(1, seeds))) if seeds > 1 else "index 0",
        "grids": _grids(results, ranking, state_dir, seeds),
        "settings": _settings(results, ranking),
        "checkpoints": _checkpoints(results, ranking),
        "css": Markup(css),  # lorasel's own stylesheet, not user text
        "script": Markup(script),  # lorasel's own script, allowed by the CSP hash
        "script_hash": script_hash,
    }
    return env.get_template("report.html.j2").render(**context)


def write_html(
    results: Results,
    ranking: Ranking,
    path: str | Path,
    state_dir: str | Path,
    *,
    title: str | None = None,
    seeds: int = 1,
) -> Path:
    """Write the self-contained report to ``path`` atomically; renders are read from ``state_dir``.

    ``seeds``: how many seeds per grid cell (the first ``seeds`` seed indices; default 1).
    """
    html = render_html(results, ranking, state_dir, title=title, seeds=seeds)
    with output_file(path, "the HTML report") as path:
        atomic_write_text(path, html)
    return path
