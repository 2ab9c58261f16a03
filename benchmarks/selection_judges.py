"""A second judge: the oracle's questions answered by lorasel's CLIP scorer.

Lorasel's regret with every seed (:mod:`benchmarks.selection_truth`) is where its CLIP scores
and the oracle part. Two readings of that gap call for different work: lorasel's metrics ask
CLIP the wrong questions (then a scoring built like the oracle's would close it), or CLIP and the
oracle read the toy world's blurry 64-pixel renders differently (then no re-weighting of CLIP
scores would). This module tells them apart. Its judge asks CLIP exactly what the oracle asks:
for every attribute a render's prompt names (shape, colour, background, as
:func:`lorasel.toyworld.oracle.requested` reads them), which value CLIP reads zero-shot, among
every value of that attribute with the others as asked (as
:func:`lorasel.toyworld.quality.scorer_generated_agreement` reads base-model renders); a render
scores the share it reads as asked, and a candidate the oracle's mean over prompt kinds of it.
Its choice from the selectors' seeds is then graded like every selector's.

A diagnostic, not a candidate scoring for the product: the judge needs the toy world's prompt
grammar, which real prompt sets do not have. Renders nothing: it reads the stored embeddings.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.selection_splits import DRAWS, SeedCube, draw_choices, grade_choices, seed_draws

ATTRIBUTES = ("shape", "color", "background")


def _caption(shape: str, color: str | None, background: str | None) -> str:
    """The world's caption for a reading (a prompt without colours names the shape alone)."""
    if color is None and background is None:
        return f"a {shape}"
    return f"a {color} {shape} on a {background} background"


def clip_attributes(renders: pd.DataFrame, images: np.ndarray, scorer) -> pd.DataFrame:
    """Per render (``renders``' index): for each attribute its prompt asks for, 1.0 when the
    scorer reads it as asked, else 0.0; NaN where the prompt does not ask. ``images``: the
    renders' image embeddings ``[n, d]``, unit length. A prompt's trigger word is not read (the
    oracle's prompt parsing skips it too)."""
    from lorasel.toyworld.oracle import requested
    from lorasel.toyworld.world import ALL_SHAPES, COLORS

    asks = [requested(p) for p in renders["prompt"]]
    options: dict[tuple[str, str], list[str]] = {}  # (attribute, asked caption) -> option captions
    values: dict[tuple[str, str], list[str]] = {}
    for ask in asks:
        shape, color, bg = ask.get("shape"), ask.get("color"), ask.get("background")
        if shape is None:
            continue
        asked = _caption(shape, color, bg)
        for attr in ATTRIBUTES:
            if attr not in ask or (attr, asked) in options:
                continue
            if attr == "shape":
                vals = list(ALL_SHAPES)
                caps = [_caption(v, color, bg) for v in vals]
            elif attr == "color":
                vals = [c for c in COLORS if c != bg]
                caps = [_caption(shape, v, bg) for v in vals]
            else:
                vals = [c for c in COLORS if c != color]
                caps = [_caption(shape, color, v) for v in vals]
            options[attr, asked], values[attr, asked] = caps, vals
    texts = sorted({c for caps in options.values() for c in caps})
    embedded = dict(zip(texts, scorer.embed_texts(texts).numpy(), strict=True)) if texts else {}
    matrices = {key: np.stack([embedded[c] for c in caps]) for key, caps in options.items()}
    out = np.full((len(renders), len(ATTRIBUTES)), np.nan)
    for i, ask in enumerate(asks):
        if "shape" not in ask:
            continue
        asked = _caption(ask["shape"], ask.get("color"), ask.get("background"))
        for j, attr in enumerate(ATTRIBUTES):
            if attr in ask:
                sims = matrices[attr, asked] @ images[i]
                out[i, j] = float(values[attr, asked][int(np.argmax(sims))] == ask[attr])
    return pd.DataFrame(out, index=renders.index, columns=list(ATTRIBUTES))


def run_attributes(run: dict, scorer) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A benchmark run's renders (every seed, base included) and the CLIP judge's readings of
    them, from the embeddings its evaluation stored (any missing are embedded from the PNGs)."""
    from lorasel.evaluate.scoring import render_embeddings
    from lorasel.evaluate.store import Store
    from lorasel.rundir import RunDir

    outcome = run["outcome"]
    used = outcome.results.settings.get("scorer_name")
    if used is not None and used != scorer.name:
        raise ValueError(f"the run was scored with {used}, not {scorer.name}: its embeddings do not apply")
    renders = outcome.results.renders
    keys = [Path(image).stem for image in renders["image"]]
    with Store.open(RunDir.at(outcome.run_dir).results_db) as store:
        vectors = render_embeddings(scorer, store, keys)
    images = np.stack([vectors[k] for k in keys])
    return renders, clip_attributes(renders, images, scorer)


def judge_cube(cube: SeedCube, renders: pd.DataFrame, attributes: pd.DataFrame) -> SeedCube:
    """``cube`` with the CLIP judge's readings in the oracle's place: its
    :meth:`~benchmarks.selection_splits.SeedCube.oracle_quality` is then the judge's."""
    from benchmarks.selection_analysis import oracle_sums
    from lorasel.results import BASE

    contest = cube.evidence.candidates.iloc[cube.contest][["checkpoint", "strength"]]
    pairs = [(str(c), float(s)) for c, s in contest.itertuples(index=False, name=None)]
    mine = renders[renders["checkpoint"].astype(str) != BASE]
    mine = mine.assign(checkpoint=mine["checkpoint"].astype(str))
    _, seeds, sums, counts = oracle_sums(mine, attributes, pairs)
    if not np.array_equal(seeds, cube.seed_indices) or sums.shape != cube.oracle_sum.shape:
        raise ValueError(f"{cube.name}: the judge's renders do not match the cube's")
    return replace(cube, oracle_sum=sums, oracle_count=counts)


def agreement(judge: pd.DataFrame, oracle: pd.DataFrame) -> dict[str, float]:
    """Per attribute, the share of renders (asked for it by both) that the judge and the oracle
    grade alike."""
    out = {}
    for attr in ATTRIBUTES:
        both = judge[attr].notna() & oracle[attr].notna()
        out[attr] = float((judge.loc[both, attr] == oracle.loc[both, attr]).mean()) if both.any() else np.nan
    return out


def judged_regrets(cubes: list[SeedCube], judges: list[SeedCube], *, select: int, draws: int = DRAWS):
    """``[runs, selectors]``: lorasel (the default weights), the reference (``"oracle_seen"``, the
    oracle's choice from the seen seeds) and the CLIP judge's choice from them (``"clip_judge"``),
    each graded by the oracle on the other seeds, averaged over the draws
    :func:`benchmarks.selection_splits.averaged` makes."""
    from lorasel.rank.weights import DEFAULT_WEIGHTS

    rows = []
    for cube, judge in zip(cubes, judges, strict=True):
        per_draw = []
        for chosen, rest in seed_draws(cube, select=select, draws=draws):
            choices = draw_choices(cube, chosen, {"lorasel": DEFAULT_WEIGHTS})
            choices = {k: choices[k] for k in ("lorasel", "oracle_seen")}
            choices["clip_judge"] = int(np.nanargmax(judge.oracle_quality(chosen)))
            per_draw.append(grade_choices(cube, choices, rest, lower=False))
        rows.append(pd.DataFrame(per_draw).mean())
    return pd.DataFrame(rows)


def judge_lines(runs: list[dict], cubes: list[SeedCube], scorer, draws: int = DRAWS) -> list[str]:
    """The report's paragraph: how often the CLIP judge reads an attribute as the oracle does, and
    its choice's regret beside lorasel's and the reference's."""
    from benchmarks.selection_analysis import mean_interval
    from benchmarks.selection_settings import SELECT_SEEDS

    judges, agree = [], []
    for run, cube in zip(runs, cubes, strict=True):
        renders, attributes = run_attributes(run, scorer)
        judges.append(judge_cube(cube, renders, attributes))
        agree.append(agreement(attributes, run["outcome"].attributes.loc[renders.index]))
    rates = pd.DataFrame(agree).mean()
    table = judged_regrets(cubes, judges, select=SELECT_SEEDS, draws=draws)
    d = table["clip_judge"] - table["lorasel"]
    dlo, dhi = mean_interval(d)

    def cell(column: str) -> str:
        lo, hi = mean_interval(table[column])
        return f"{100 * table[column].mean():.1f}% ({100 * lo:.1f}–{100 * hi:.1f}%)"

    return [
        "",
        "**A second judge** (`benchmarks/selection_judges.py`). Does lorasel's scoring ask CLIP the "
        "wrong questions, or do CLIP and the oracle read these renders differently? A judge that asks "
        "lorasel's CLIP scorer exactly the oracle's questions (each attribute a prompt names, read "
        "zero-shot among every value of it, the others as asked; a candidate scored as the oracle "
        "scores it) reads shape, colour and background as the oracle does in "
        f"{100 * rates['shape']:.0f}%, {100 * rates['color']:.0f}% and {100 * rates['background']:.0f}% "
        f"of renders. Its choice from the selectors' {SELECT_SEEDS} seeds per prompt, graded by the "
        f"oracle on the rest and averaged over {draws} draws per run: {cell('clip_judge')}, against "
        f"lorasel's {cell('lorasel')} and the reference's (the oracle's own choice) "
        f"{cell('oracle_seen')}; the judge minus lorasel {100 * d.mean():+.1f} points "
        f"({100 * dlo:+.1f} to {100 * dhi:+.1f}). {_reading(dlo, dhi)} (A diagnostic: the judge "
        "needs the toy world's prompt grammar, which real prompt sets do not have.)",
    ]


def _reading(lo: float, hi: float) -> str:
    """What the judge's lead over lorasel (its 95% interval) says about where lorasel's regret is."""
    if lo > 0:
        return (
            "Asking CLIP the oracle's own questions does not close the gap: what lorasel has left is "
            "mostly where two readers of the toy world's blurry 64-pixel renders disagree, on the "
            "renders that decide between candidates, rather than questions its metrics fail to ask."
        )
    if hi < 0:
        return (
            "Asking CLIP the oracle's questions beats lorasel's metrics: part of its regret is in "
            "what its metrics ask."
        )
    return "The two are not told apart on these runs."
