"""Every run graded out of sample so far, pooled: ``python -m benchmarks.pooled``.

``reports/heldout_runs.csv`` holds one row per run of the pre-registered tests
(``reports/preregistered.md``): each selector's regret in percent, as that test's table gives it
(seed 4's loss-based and epoch selectors and the reference in whole percent, from the selection
benchmark's per-run table of 74e0c2d; seed 4 was graded on seed indices 8-17, the later seeds on
4-13). This prints each selector's mean regret with its 95% bootstrap interval over the runs, and
lorasel's paired differences, on all runs and on the runs where a named alternative was graded.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from benchmarks.selection_analysis import mean_interval

RUNS = Path(__file__).resolve().parent.parent / "reports" / "heldout_runs.csv"
SELECTORS = {
    "lorasel_B": "lorasel (B)",
    "lowest_loss": "lowest training loss @1.0",
    "lowest_val_loss": "lowest validation loss @1.0",
    "last_epoch": "last epoch @1.0",
    "middle_epoch": "middle epoch @1.0",
    "reference": "reference",
}
ALTERNATIVE = "C_1_1_2_0_0"


def summary(runs: pd.DataFrame) -> list[str]:
    lines = [f"{len(runs)} runs (training seeds {', '.join(map(str, sorted(runs['seed'].unique())))}):"]
    for column, label in SELECTORS.items():
        low, high = mean_interval(runs[column])
        lines.append(f"  {label}: {runs[column].mean():.1f}% ({low:.1f}-{high:.1f}%)")
    for column in ("lowest_loss", "lowest_val_loss", "last_epoch"):
        diff = runs["lorasel_B"] - runs[column]
        low, high = mean_interval(diff)
        lines.append(
            f"  lorasel (B) minus {SELECTORS[column]}: {diff.mean():+.1f} points ({low:+.1f} to {high:+.1f})"
        )
    graded = runs.dropna(subset=[ALTERNATIVE])
    if len(graded):
        diff = graded[ALTERNATIVE] - graded["lorasel_B"]
        low, high = mean_interval(diff)
        lines.append(
            f"  C (1, 1, 2, 0, 0) on the {len(graded)} runs it was graded on: {graded[ALTERNATIVE].mean():.1f}% "
            f"against B's {graded['lorasel_B'].mean():.1f}%; C minus B {diff.mean():+.1f} points ({low:+.1f} to {high:+.1f})"
        )
    return lines


def main() -> None:
    runs = pd.read_csv(RUNS)
    print("\n".join(summary(runs)))


if __name__ == "__main__":
    sys.exit(main())
