"""Where lorasel's regret in the selection benchmark comes from: the grading's luck against real
misses, and each miss part by part. Text for the report's selection section
(:mod:`benchmarks.selection_report`); renders nothing.
"""

from __future__ import annotations

import pandas as pd

from benchmarks.selection_analysis import grading_floor, grading_noise
from benchmarks.selection_settings import GRADE_FROM, GRADE_SEEDS, SELECT_SEEDS
from lorasel.rank.evidence import UNIT_METRICS


def noise_lines(runs: list[dict]) -> list[str]:
    """Which of lorasel's regrets the grading's luck explains: per run, the regret's standard
    deviation over redraws of the grading seeds (:func:`grading_noise`); a regret above twice it is a
    miss the grading does not explain. The same for the reference's choice (a miss both make is
    one the renders could not show), and the grading's floor (:func:`grading_floor`). Empty
    without grading seeds."""
    from lorasel.results import BASE

    if not GRADE_SEEDS:
        return []
    rows = []
    for r in runs:
        o = r["outcome"]
        renders = o.results.renders
        graded = renders[(renders["seed_index"] >= GRADE_FROM) & (renders["checkpoint"] != BASE)]
        row = {"run": f"{r['concept']}-{r['seed']}", "floor": grading_floor(graded, o.attributes)}
        for role, prefix in (("lorasel", ""), ("oracle_seen", "ref_")):
            if role in o.verdicts:
                v = o.verdicts[role]
                regret, sd = grading_noise(graded, o.attributes, v.checkpoint, v.strength)
                row |= {f"{prefix}regret": regret, f"{prefix}sd": sd}
        rows.append(row)
    rows = pd.DataFrame(rows)
    misses = [r for r, miss in zip(runs, rows["regret"] > 2 * rows["sd"], strict=True) if miss]
    return grading_noise_lines(rows) + miss_table(misses)


KINDS = ("in_domain", "trigger", "out_of_domain", "unrelated")


def miss_table(runs: list[dict]) -> list[str]:
    """For each run, lorasel's pick beside the oracle's best, part by part: the oracle's quality
    per prompt kind (what the miss cost) and lorasel's CLIP measurements (what it saw)."""
    if not runs:
        return []
    lines = [
        "",
        "Those misses part by part — the oracle per prompt kind (in-domain, trigger alone, "
        "out-of-domain, unrelated: prompts without the trigger) and lorasel's CLIP means on the "
        "renders it ranked:",
        "",
        "| run | candidate | choice | in-domain | trigger | out-of-domain | unrelated | oracle quality "
        "| fidelity | flexibility | adherence | preservation |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        o = r["outcome"]
        table = o.ranking.table.set_index(["checkpoint", "strength"])
        oracle = o.oracle.set_index(["checkpoint", "strength"])
        for role in ("lorasel", "oracle"):
            v = o.verdicts[role]
            parts = oracle.loc[(v.checkpoint, v.strength)]
            seen = table.loc[(v.checkpoint, v.strength)]
            cells = [f"{parts[k]:.2f}" if k in parts and pd.notna(parts[k]) else "-" for k in KINDS]
            metrics = [f"{seen[m]:.3f}" for m in UNIT_METRICS]
            label = "lorasel's pick" if role == "lorasel" else "oracle's best"
            lines.append(
                f"| {r['concept']}-{r['seed']} | {label} | e{v.epoch}@{v.strength:g} | "
                + " | ".join(cells)
                + f" | {v.quality:.3f} | "
                + " | ".join(metrics)
                + " |"
            )
    return lines


def grading_noise_lines(rows: pd.DataFrame) -> list[str]:
    """:func:`noise_lines`'s paragraph from its rows (run, regret, sd; optionally floor, and
    ref_regret, ref_sd for the reference's choice)."""
    misses = rows[rows["regret"] > 2 * rows["sd"]]
    rest = rows.drop(misses.index)
    total = rows["regret"].sum() / len(rows)
    listed = ", ".join(f"{m.run} {100 * m.regret:.0f}% (±{100 * m.sd:.0f})" for m in misses.itertuples())
    text = (
        "How much of lorasel's regret is the grading's luck: per run, the standard deviation of its "
        f"regret when the {GRADE_SEEDS} grading seeds are drawn again with replacement (median "
        f"±{100 * rows['sd'].median():.0f} points). Regrets above twice it, misses the grading does not "
        f"explain: {listed or 'none'}"
        + (
            f" — {100 * misses['regret'].sum() / len(rows):.1f} of the {100 * total:.1f} points of the mean"
            if not misses.empty
            else ""
        )
        + (
            f"; the other {len(rest)} runs' regrets (mean {100 * rest['regret'].mean():.1f}%) are within "
            "twice theirs."
            if not rest.empty
            else "."
        )
    )
    if not misses.empty and {"ref_regret", "ref_sd"} <= set(rows.columns):
        shared = misses["ref_regret"] > 2 * misses["ref_sd"]
        names = ", ".join(misses.loc[shared, "run"])
        own = ", ".join(misses.loc[~shared, "run"])
        text += (
            f" The reference misses {int(shared.sum())} of them as well ({names or 'none'}): there "
            f"the oracle itself, judging the same {SELECT_SEEDS} seeds per prompt, finds no better "
            "candidate: no scoring of those renders could have found it, more seeds per prompt might; "
            + (
                f"the other {int((~shared).sum())} ({own}) are lorasel's own: its CLIP scores "
                "disagree with the oracle on renders that do show the better candidate."
                if own
                else "none is lorasel's own."
            )
        )
    if "floor" in rows.columns:
        text += (
            " The grading's own floor: regraded on redrawn seeds, the candidate that is best as "
            f"graded has a mean regret of {100 * rows['floor'].mean():.1f}% (per run "
            f"{100 * rows['floor'].min():.0f}–{100 * rows['floor'].max():.0f}%), the luck by which it "
            "leads on these few seeds; a selector that always found the true best would read about "
            "that much here."
        )
    return ["", text]
