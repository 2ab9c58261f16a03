"""The selection benchmark's section of ``reports/benchmarks.md``, from its runs
(:func:`benchmarks.bench_selection.one_run`): the table of selectors, the verdict, how precisely
the runs know it, the regrets averaged over which seeds the selectors saw
(:mod:`benchmarks.selection_splits`), the grading's noise and the misses (:mod:`benchmarks.selection_misses`), the per-run table, the weight sweep, the
seed study and the phenomenon. Renders nothing: it reads what the runs measured and re-ranks.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from benchmarks.selection_analysis import (
    figure,
    held_out_weights,
    learnability,
    mean_interval,
    target_verdict,
    weight_sweep,
)
from benchmarks.selection_misses import noise_lines
from benchmarks.selection_settings import (
    DEFAULT_CHOSEN_ON,
    GRADE_FROM,
    GRADE_SEEDS,
    LABELS,
    SELECT_SEEDS,
    SELECTORS,
)
from benchmarks.selection_splits import split_lines
from lorasel.text import counted


def report(runs: list[dict], concepts: list[str], seeds: list[int], out_dir: Path, *, started: float) -> str:
    """The report's selection section from the runs of :func:`benchmarks.bench_selection.one_run`
    (``started``: the bench's start, a ``time.perf_counter()`` reading, for its wall time)."""
    frame = summarise(runs)

    def per_selector_of(frame: pd.DataFrame) -> pd.DataFrame:
        return (
            frame.groupby("selector", sort=False)
            .agg(
                mean_quality=("quality", "mean"),
                mean_regret=("regret", "mean"),
                max_regret=("regret", "max"),
                zero_regret=("regret", lambda s: int((s < 1e-9).sum())),
            )
            .reindex([s for s in SELECTORS if s in set(frame["selector"])])
        )

    per_selector = per_selector_of(frame)
    by_run = regret_by_run(frame)
    if "oracle_seen" in per_selector.index:
        excess = by_run.sub(by_run["oracle_seen"], axis=0)
        per_selector["excess"] = excess.mean().reindex(per_selector.index)
    per_selector_same = per_selector_of(summarise(runs, key="same"))
    # The regret above the reference bounds the true regret from below; regret is never negative.
    lower = max(0.0, (by_run["lorasel"] - by_run["oracle_seen"]).mean()) if "oracle_seen" in by_run else None
    verdict = target_verdict(by_run, lower)
    lines = [
        "## Selection quality against the oracle (toy world)",
        "",
        f"{counted(len(concepts), 'concept')} × {counted(len(seeds), 'training seed')} "
        f"({', '.join(map(str, seeds))}) = {len(runs)} runs "
        "of the `toyworld` preset; each "
        f"checkpoint evaluated at strengths {', '.join(f'{s:g}' for s in sorted(runs[0]['outcome'].oracle['strength'].unique()))} "
        f"with the concept's prompt set and {SELECT_SEEDS} seeds per prompt — what every selector sees. The oracle "
        "measures renders (shape, colour, background against the prompt); a candidate's quality is the "
        "mean over prompt kinds of the fraction of asked-for attributes shown"
        + (
            f", on {GRADE_SEEDS} further seeds per prompt that no selector saw (so the oracle's best is not "
            "fitted to the noise of the renders lorasel ranked)"
            if GRADE_SEEDS
            else ", on the same renders"
        )
        + ". Regret is the shortfall from the oracle's best candidate as a share of the oracle's range "
        "(best − worst) in that run.",
        "",
    ]
    with_reference = "excess" in per_selector.columns
    lines += [
        "| selector | mean oracle quality | mean regret | worst regret | runs with zero regret |"
        + (" mean regret above the reference |" if with_reference else ""),
        "|---|---:|---:|---:|---:|" + ("---:|" if with_reference else ""),
    ]
    for name, row in per_selector.iterrows():
        lines.append(
            f"| {LABELS[name]} | {row.mean_quality:.3f} | {100 * row.mean_regret:.1f}% | "
            f"{100 * row.max_regret:.1f}% | {int(row.zero_regret)}/{len(runs)} |"
            + (f" {100 * row.excess:+.1f}% |" if with_reference else "")
        )
    if GRADE_SEEDS:
        lines += [
            "",
            f"Graded instead on the {SELECT_SEEDS} seeds the selectors saw (the oracle's best then shares their noise): "
            + ", ".join(
                f"{LABELS[name]} {100 * row.mean_regret:.1f}%" for name, row in per_selector_same.iterrows()
            )
            + ".",
        ]
    lines += [
        "",
        f"Target (lorasel's mean regret ≤ 5% and below every loss-based selector): **{verdict}**.",
        "",
        *precision_lines(by_run),
        *new_runs_lines(by_run, DEFAULT_CHOSEN_ON),
        *split_lines(runs),
        *noise_lines(runs),
        *per_run_lines(frame),
        *sweep_lines(runs),
        *reference_lines(by_run, lower),
        *seed_study_lines(runs),
        *head_to_head_lines(by_run),
        *phenomenon_lines(runs, out_dir),
        "",
        f"Wall time {time.perf_counter() - started:.0f} s (training {sum(r['train_s'] for r in runs):.0f} s, "
        f"evaluation {sum(r['eval_s'] for r in runs):.0f} s; cached runs cost nothing). Reproduce: "
        "`python -m benchmarks.run selection`.",
    ]
    return "\n".join(lines)


def per_run_lines(frame: pd.DataFrame) -> list[str]:
    """Each run's choices and regrets (``frame``: :func:`summarise`)."""
    lines = [
        "",
        "Per run (choice as epoch@strength):",
        "",
        "| concept | seed | oracle's best | " + " | ".join(LABELS[s] for s in SELECTORS) + " |",
        "|---|---:|---|" + "---|" * len(SELECTORS),
    ]
    for (concept, seed), rows in frame.groupby(["concept", "seed"], sort=False):
        cells = []
        for s in SELECTORS:
            hit = rows[rows["selector"] == s]
            cells.append("-" if hit.empty else f"{hit.iloc[0].choice} ({100 * hit.iloc[0].regret:.0f}%)")
        best = f"{rows.iloc[0].oracle_best} ({rows.iloc[0].oracle_best_quality:.3f})"
        lines.append(f"| {concept} | {seed} | {best} | " + " | ".join(cells) + " |")
    return lines


def sweep_lines(runs: list[dict]) -> list[str]:
    """lorasel's regret under other weights (:func:`weight_sweep`), and weights chosen leaving
    one concept out (:func:`held_out_weights`)."""
    sweep = weight_sweep(runs)
    lines = [
        "",
        "Mean regret of lorasel's pick under other composite weights (fidelity, flexibility, adherence, "
        "diversity, preservation), on the same renders (200 bootstrap rounds):",
        "",
        "| weights | mean regret | worst regret |",
        "|---|---:|---:|",
    ]
    for row in sweep.itertuples(index=False):
        lines.append(f"| {row.weights} | {100 * row.mean_regret:.1f}% | {100 * row.max_regret:.1f}% |")
    held_regret, chosen = held_out_weights(runs, sweep)
    return [
        *lines,
        "",
        f"Weights chosen on the toy world without grading them on the runs they were chosen on (leave "
        f"one concept out: the best weights of the sweep on the other concepts, measured on the held-out "
        f"one): mean regret {100 * held_regret:.1f}% (chosen — {'; '.join(chosen)}).",
    ]


def reference_lines(by_run: pd.DataFrame, lower: float | None) -> list[str]:
    """The reference (the oracle's choice from the selectors' renders) and the bracket it gives
    lorasel's true regret (``lower``: lorasel's regret above it). Empty without a reference."""
    if "oracle_seen" not in by_run.columns or lower is None:
        return []
    reference = by_run["oracle_seen"].mean()
    excess = by_run["lorasel"] - by_run["oracle_seen"]
    return [
        "",
        f"Reference: the oracle's own choice from the {SELECT_SEEDS} seeds per prompt the selectors saw, "
        f"graded on the {GRADE_SEEDS} new ones, has a mean regret of {100 * reference:.1f}%. It is not a "
        "limit lorasel cannot beat: the oracle is exact per render, but a few binary judgements per "
        "candidate measure it coarsely, and lorasel's continuous CLIP scores can separate the same "
        "candidates better.",
        "",
        "The true regret (against the candidate that is best on infinitely many seeds) is bracketed: "
        "the regret above is an upper bound on average (the best on the new seeds is partly the "
        "luckiest), and the regret above the reference is a lower bound on average (the reference's "
        "choice, made from the same renders, is not the true best either; regret is never below 0). "
        f"For lorasel's pick: between {100 * lower:.1f}% and {100 * by_run['lorasel'].mean():.1f}%. Runs in "
        "which lorasel's pick grades better than / equal to / worse than the reference's: "
        f"{int((excess < -1e-9).sum())} / {int((excess.abs() <= 1e-9).sum())} / "
        f"{int((excess > 1e-9).sum())} of {len(excess)}. More grading seeds tighten the upper bound.",
    ]


def head_to_head_lines(by_run: pd.DataFrame) -> list[str]:
    """Per run, lorasel's pick better / equal / worse than the validation loss and the middle epoch."""
    if not {"lorasel", "lowest_val_loss", "middle_epoch"} <= set(by_run.columns):
        return []
    lines = []
    for rival in ("lowest_val_loss", "middle_epoch"):
        diff = by_run["lorasel"] - by_run[rival]
        lines += [
            "",
            f"Per run, lorasel's pick against {LABELS[rival]}: better in {int((diff < -1e-9).sum())}, "
            f"equal in {int((diff.abs() <= 1e-9).sum())}, worse in {int((diff > 1e-9).sum())} of {len(diff)}.",
        ]
    return lines


def phenomenon_lines(runs: list[dict], out_dir: Path) -> list[str]:
    """Per epoch at strength 1.0 over the runs: the concept learnt, prompts obeyed, training loss
    (:func:`learnability`); and the figure of the first run (:func:`figure`)."""
    lines = [
        "",
        "**The phenomenon** (issue 3's learnability bar, with the real trainer): per epoch at strength "
        "1.0, mean over the runs — in-domain renders that show the concept's shape (oracle), "
        "out-of-domain renders that show the background their prompt asks for, training loss:",
        "",
        "| epoch | concept shown (in-domain) | asked background (out-of-domain) | training loss |",
        "|---:|---:|---:|---:|",
    ]
    for epoch, row in learnability(runs).iterrows():
        label = "base model" if epoch == 0 else str(int(epoch))
        loss = "-" if pd.isna(row.loss) else f"{row.loss:.4f}"
        lines.append(f"| {label} | {row.concept:.0%} | {row.ood_background:.0%} | {loss} |")
    return [*lines, "", f"![oracle quality and loss per epoch](figures/{figure(runs, out_dir)})"]


def summarise(runs: list[dict], key: str = "outcome") -> pd.DataFrame:
    rows = []
    for r in runs:
        verdicts = r[key].verdicts
        best = verdicts["oracle"]
        for name in SELECTORS:
            v = verdicts.get(name)
            if v is None:
                continue
            rows.append(
                {
                    "concept": r["concept"],
                    "seed": r["seed"],
                    "selector": name,
                    "choice": f"e{v.epoch}@{v.strength:g}",
                    "quality": v.quality,
                    "regret": v.regret,
                    "oracle_best": f"e{best.epoch}@{best.strength:g}",
                    "oracle_best_quality": best.quality,
                }
            )
    return pd.DataFrame(rows)


def regret_by_run(frame: pd.DataFrame) -> pd.DataFrame:
    """:func:`summarise`'s rows as a table: one row per run (concept, seed), a column per selector."""
    return frame.pivot_table(index=["concept", "seed"], columns="selector", values="regret")


def precision_lines(by_run: pd.DataFrame) -> list[str]:
    """How precisely the means over runs are known (``by_run``: :func:`regret_by_run`): bootstrap
    intervals over the runs of lorasel's mean regret and of its paired difference from each
    loss-based selector."""
    if "lorasel" not in by_run.columns:
        return []
    low, high = mean_interval(by_run["lorasel"])
    parts = [
        f"lorasel's mean regret {100 * by_run['lorasel'].mean():.1f}% ({100 * low:.1f}–{100 * high:.1f}%)"
    ]
    for rival in ("lowest_loss", "lowest_val_loss"):
        if rival in by_run.columns:
            diff = by_run["lorasel"] - by_run[rival]
            low, high = mean_interval(diff)
            parts.append(
                f"lorasel minus {LABELS[rival]} {100 * diff.mean():+.1f} points ({100 * low:+.1f} to {100 * high:+.1f})"
            )
    return [
        f"How precisely {len(by_run)} runs know these means (95% bootstrap intervals over the runs): "
        + "; ".join(parts)
        + ". A difference whose interval excludes 0 is shown; a mean regret of 5% is shown only when the "
        "interval lies below it."
    ]


def new_runs_lines(by_run: pd.DataFrame, chosen_on: int) -> list[str]:
    """Which runs measure the default scoring out of sample (``by_run``: :func:`regret_by_run`):
    it was chosen on the runs of training seeds below ``chosen_on``, so when the report has such
    runs the later ones are given apart; when it has none, it says that every run is new to the
    choice. Empty when every run is in sample."""
    seeds = by_run.index.get_level_values("seed")
    new = by_run[seeds >= chosen_on]
    chosen = f"0–{chosen_on - 1}" if chosen_on > 1 else "0"
    if len(new) == len(by_run):
        return [
            "",
            f"Every run here is new to the default scoring: it was chosen and adopted on runs of "
            f"training seeds {chosen} by tests named before later runs were graded "
            "([preregistered.md](preregistered.md)), and none of those is graded here.",
        ]
    if new.empty:
        return []
    first, last = int(new.index.get_level_values("seed").min()), int(seeds.max())
    span = f"{first}" if last == first else f"{first}–{last}"
    means = ", ".join(f"{LABELS[s]} {100 * new[s].mean():.1f}%" for s in SELECTORS if s in new.columns)
    return [
        "",
        f"The default scoring was chosen and adopted on the {len(by_run) - len(new)} runs of training "
        f"seeds {chosen}, by tests named before any later one was graded "
        f"([preregistered.md](preregistered.md)); so the means above are partly in sample. The "
        f"{len(new)} {'run' if len(new) == 1 else 'runs'} of training seed{'s' if last > first else ''} {span} "
        f"{'is' if len(new) == 1 else 'are'} new to that choice: "
        f"there {means}.",
    ]


def seed_study_lines(runs: list[dict]) -> list[str]:
    """The report's table of lorasel's pick against seeds per prompt (empty without a study)."""
    rows = pd.DataFrame([dict(row, run=i) for i, r in enumerate(runs) for row in r.get("seed_study", [])])
    if rows.empty:
        return []
    lines = [
        "",
        f"**Seeds per prompt.** The same runs ranked on only the first n seeds per prompt (`lorasel eval "
        f"--seeds n`; the renders cost grows with n), all graded on the same {GRADE_SEEDS} unseen seeds "
        f"(seed indices {GRADE_FROM}–{GRADE_FROM + GRADE_SEEDS - 1}, which no row saw):",
        "",
        "| seeds per prompt | lorasel's mean regret (upper bound) | above the reference (lower bound) | "
        "reference's mean regret | candidates in the 95% set for the best, median | oracle's best in the set |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for n, group in rows.groupby("seeds"):
        above = max(0.0, float((group["lorasel"] - group["reference"]).mean()))
        lines.append(
            f"| {n} | {100 * group['lorasel'].mean():.1f}% | {100 * above:.1f}% | "
            f"{100 * group['reference'].mean():.1f}% | {group['set_size'].median():g} | "
            f"{int(group['best_in_set'].sum())}/{len(group)} |"
        )
    return lines
