"""Ranking: bootstrap speed against a per-round pandas loop, and calibration on synthetic runs.

Run alone: ``python -m benchmarks.run rank``.

1. Speed: the vectorised paired bootstrap (all rounds as matrix products) against the obvious
   implementation (per round: weight the renders by the draw counts, pandas groupby per
   candidate), both from the same draws, on 30 candidates × 200 units.
2. Calibration: synthetic evaluations whose truth is known (metric means from a fixed
   "overfitting" quality function, fresh unit and render noise each time). Does the pick hit the
   true best, does the tie set (the 95% confidence set for the best) contain it as often as it
   claims, against the one-at-a-time rule used before, is P(best) calibrated, do the 95%
   intervals cover the true scores?
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from lorasel.rank import DEFAULT_WEIGHTS, rank
from lorasel.rank.bootstrap import metric_means, point_means, unit_counts
from lorasel.rank.evidence import UNIT_METRICS, gather_evidence
from lorasel.rank.score import composite, fit_normalisation
from lorasel.results import METRICS
from tests.synthetic_results import known_truth_run, make_results

ROUNDS = 1000
NAIVE_ROUNDS = 40
REPS = 1000
#: A pick this close to the true best's score (normalised units) counts as near-best.
NEAR = 0.01


def _naive_round(
    renders: pd.DataFrame, diversity: pd.DataFrame, units: pd.DataFrame, counts: np.ndarray, norm
):
    """One bootstrap round the straightforward way."""
    weights = pd.Series(counts, index=pd.MultiIndex.from_frame(units[["prompt_id", "seed_index"]]))
    w = renders.set_index(["prompt_id", "seed_index"]).index.map(weights)
    frame = renders.assign(w=np.asarray(w, dtype=float))
    out = {}
    for m in UNIT_METRICS:
        rows = frame[frame[m].notna()]
        g = rows.assign(wx=rows[m] * rows["w"]).groupby(["checkpoint", "strength"])
        out[m] = g["wx"].sum() / g["w"].sum()
    prompt_w = units.assign(c=counts).groupby("prompt_id")["c"].sum()
    d = diversity.assign(w=diversity["prompt_id"].map(prompt_w))
    g = d.assign(wx=d["diversity"] * d["w"]).groupby(["checkpoint", "strength"])
    out["diversity"] = g["wx"].sum() / g["w"].sum()
    frame = pd.DataFrame(out)
    return composite({m: frame[m].to_numpy() for m in METRICS}, norm, DEFAULT_WEIGHTS)


def _speed() -> str:
    results = make_results(checkpoints=10, strengths=(0.5, 0.75, 1.0), prompts_per_kind=10, seeds=5)
    evidence = gather_evidence(results)
    point = point_means(evidence)
    norm = fit_normalisation({m: point[m][evidence.contest] for m in METRICS})
    counts = unit_counts(evidence.strata, ROUNDS, np.random.default_rng(0))

    best_fast = np.inf
    for _ in range(3):
        start = time.perf_counter()
        fast = composite(metric_means(evidence, counts), norm, DEFAULT_WEIGHTS)
        best_fast = min(best_fast, time.perf_counter() - start)
    start = time.perf_counter()
    naive = [
        _naive_round(results.renders, results.diversity, evidence.units, counts[b], norm)
        for b in range(NAIVE_ROUNDS)
    ]
    naive_per_round = (time.perf_counter() - start) / NAIVE_ROUNDS
    # Same numbers (the naive frame is sorted by (checkpoint, strength); compare as sets per round).
    agree = all(np.allclose(np.sort(naive[b]), np.sort(fast[b])) for b in range(NAIVE_ROUNDS))
    start = time.perf_counter()
    rank(results, n_boot=ROUNDS)
    whole = time.perf_counter() - start
    fast_per_round = best_fast / ROUNDS
    return (
        "### Speed: 1000 bootstrap rounds, 30 candidates × 200 (prompt, seed) units\n\n"
        "| implementation | per round | 1000 rounds | ratio |\n|---|---|---|---|\n"
        f"| per-round pandas groupby (baseline, {NAIVE_ROUNDS} rounds timed) | {naive_per_round * 1e3:.1f} ms | "
        f"{naive_per_round * ROUNDS:.1f} s (extrapolated) | 1× |\n"
        f"| lorasel (all rounds as matrix products) | {fast_per_round * 1e6:.1f} µs | {best_fast * 1e3:.0f} ms | "
        f"{naive_per_round / fast_per_round:.0f}× faster |\n\n"
        f"Same scores from the same draws: {'yes' if agree else 'NO'}. The whole `rank()` call (arranging the "
        f"frames, point estimates, 1000 rounds, ties, Pareto front) took {whole * 1e3:.0f} ms.\n"
    )


def _calibration() -> str:
    epochs, strengths = 8, (0.5, 0.75, 1.0)
    hits = near_hits = covered_best = covered_old = 0
    p_true, tie_sizes, old_sizes = [], [], []
    bins = np.linspace(0, 1, 6)
    predicted = [[] for _ in range(len(bins) - 1)]
    observed = [[] for _ in range(len(bins) - 1)]
    covered = total = 0
    start = time.perf_counter()
    for rep in range(REPS):
        table, true_score = known_truth_run(
            1000 + rep, n_boot=500, rank_seed=rep, epochs=epochs, strengths=strengths
        )
        # Candidates with the same dose (epoch/epochs × strength) are exactly equal: all are best.
        best = true_score >= true_score.max() - 1e-9
        hits += bool(best[0])
        near_hits += bool(true_score[0] >= true_score.max() - NEAR)
        tied = table["tied"].to_numpy().copy()
        tied[0] = True
        covered_best += bool((best & tied).any())
        tie_sizes.append(int(tied.sum()))
        old = (table["win_vs_best"] < 0.95).to_numpy().copy()
        old[0] = True
        covered_old += bool((best & old).any())
        old_sizes.append(int(old.sum()))
        p = table["p_best"].to_numpy(dtype=float)
        p_true.append(p[best].sum())
        credit = best / best.sum()  # exact ties share the credit, as they share P(best)
        for k in range(len(bins) - 1):
            sel = (p >= bins[k]) & ((p < bins[k + 1]) if k < len(bins) - 2 else (p <= 1.0))
            predicted[k].extend(p[sel])
            observed[k].extend(credit[sel])
        lo, hi = table["score_lo"].to_numpy(), table["score_hi"].to_numpy()
        covered += int(((lo <= true_score) & (true_score <= hi)).sum())
        total += len(true_score)
    elapsed = time.perf_counter() - start
    rows = "".join(
        f"| {bins[k]:.1f}–{bins[k + 1]:.1f} | {len(predicted[k])} | {np.mean(predicted[k]):.3f} | {np.mean(observed[k]):.3f} |\n"
        for k in range(len(bins) - 1)
        if predicted[k]
    )
    n = epochs * len(strengths)
    return (
        f"### Calibration on {REPS} synthetic evaluations with a known best\n\n"
        f"{epochs} checkpoints × {len(strengths)} strengths, 12 prompts (3 per kind) × 4 seeds, unit noise 0.04, "
        "render noise 0.02 (CLIP-cosine units), 500 bootstrap rounds each; the truth is the composite of the "
        "noiseless metric means under the run's own normalisation. Its optimum is flat, as a real run's is: "
        "the true best leads the next candidate by less than 0.001 in score, against a score noise of about 0.03, so "
        "no evaluation of this size can single it out, and a good one says so.\n\n"
        "| measure | value |\n|---|---|\n"
        f"| pick is the true best | {hits / REPS:.1%} |\n"
        f"| pick within {NEAR} of the true best's score (1% of the run's score range) | {near_hits / REPS:.1%} |\n"
        f"| **true best in the tie set** (95% confidence set for the best) | **{covered_best / REPS:.1%}** "
        f"(mean size {np.mean(tie_sizes):.1f} of {n}) |\n"
        f"| true best tied by the one-at-a-time rule (pick beats it in < 95% of rounds; before) | "
        f"{covered_old / REPS:.1%} (mean size {np.mean(old_sizes):.1f} of {n}) |\n"
        f"| mean P(best) of the true best | {np.mean(p_true):.3f} |\n"
        f"| 95% score intervals covering the true score | {covered / total:.1%} |\n\n"
        "P(best) calibration (all candidates of all runs, binned by their P(best); exact ties share the "
        "credit):\n\n"
        "| P(best) bin | candidates | mean P(best) | share that was the true best |\n|---|---|---|---|\n"
        f"{rows}\n"
        "P(best) is a share of resampled evaluations, not a posterior: among near-equals the observed leader "
        "keeps its lucky lead in most rounds, so high values are overconfident here. The tie set is the "
        "calibrated statement of which candidates could be the best.\n\n"
        f"({elapsed:.0f} s for the {REPS} runs.)\n"
    )


def _report() -> str:
    """Size and time of report.html for a realistic run with 512 px renders, first and cached."""
    import shutil
    import tempfile

    from PIL import Image, ImageFilter

    from lorasel.report import write_html

    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "run" / "lorasel"
        results = make_results(checkpoints=10, strengths=(0.25, 0.5, 0.75, 1.0), prompts_per_kind=4, seeds=2)
        rng = np.random.default_rng(0)
        shown = results.renders[results.renders["seed_index"] == 0]
        # 16 photo-like (incompressible) renders, copied to every path: each is still decoded.
        samples = []
        for k in range(16):
            noise = (rng.random((64, 64, 3)) * 255).astype("uint8")
            image = Image.fromarray(noise).resize((512, 512), Image.Resampling.BICUBIC)
            samples.append(state.parent / f"sample{k}.png")
            samples[-1].parent.mkdir(parents=True, exist_ok=True)
            image.filter(ImageFilter.GaussianBlur(3)).save(samples[-1])
        for k, rel in enumerate(shown["image"]):
            (state / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(samples[k % len(samples)], state / rel)
        ranking = rank(results)
        times = []
        for _ in range(2):
            start = time.perf_counter()
            path = write_html(results, ranking, Path(tmp) / "report.html", state)
            times.append(time.perf_counter() - start)
        size = path.stat().st_size
        raw = sum((state / rel).stat().st_size for rel in shown["image"])
    return (
        "### report.html for a realistic run\n\n"
        f"10 checkpoints × 4 strengths, 16 prompts; {len(shown)} renders of 512×512 px shown (first seed), "
        f"{raw / 2**20:.1f} MB of PNG on disk.\n\n"
        "| | value |\n|---|---|\n"
        f"| report.html size (96 px palette-PNG thumbnails, plots as SVG) | {size / 2**20:.2f} MB |\n"
        f"| first write ({min(8, os.cpu_count() or 1)} decoding threads) | {times[0]:.1f} s |\n"
        f"| rewrite (thumbnails cached in STATE/thumbs) | {times[1]:.1f} s ({times[0] / times[1]:.1f}× faster) |\n"
    )


def run(out_dir: Path) -> str:
    return (
        "## Ranking (`lorasel.rank`)\n\n"
        "Reproduce: `python -m benchmarks.run rank` (CPU, about a minute).\n\n"
        f"{_speed()}\n{_calibration()}\n{_report()}"
    )


if __name__ == "__main__":
    print(run(Path("reports/figures")))
