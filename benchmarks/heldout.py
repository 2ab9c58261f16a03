"""A pre-registered check on the runs of one new training seed (reports/preregistered.md).

The selection benchmark (:mod:`benchmarks.bench_selection`) grades every run it has; a change to
the default scoring chosen on those runs is in sample there. This script trains, renders and
grades only the runs named for a test, in as many processes as the machine has cores (one torch
thread each, unless ``LORASEL_BENCH_THREADS`` says otherwise), and then prints each selector's
regret on them, with the weights named in the test beside the default:

    python -m benchmarks.heldout render star:5 cross:5 ring:5      # one process
    python -m benchmarks.heldout render heart:5 moon:5 arrow:5     # another, beside it
    python -m benchmarks.heldout grade 5 --weights 1,1,1,0,0        # when both are done
    python -m benchmarks.heldout averaged star:5 star:6 heart:5 ...  # pooled over seeds

(``averaged``: each selector's regret averaged over draws of which seeds it saw,
:mod:`benchmarks.selection_splits`, over any finished runs, with
:mod:`benchmarks.selection_truth`'s check of it.)

(``grade`` goes through the same cached ``one_run``: a run not finished would be rendered there;
name only the finished ones with ``--concepts``.)

Runs land in the benchmark's cache (``BENCH_DIR``, default ``.bench/selection``) with the
benchmark's settings (the seed study up to 4 seeds per prompt, the oracle grading on seed indices
4-13, unseen by every selector), so ``make bench`` reuses the runs of its training seeds.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import NoReturn

from benchmarks.bench_selection import one_run
from benchmarks.selection_analysis import mean_interval, pick_verdict, weights_label
from benchmarks.selection_judges import judge_lines
from benchmarks.selection_refine import refine_lines
from benchmarks.selection_settings import CONCEPTS, LABELS, SELECTORS, THREADS
from benchmarks.selection_splits import averaged_lines, seed_cube
from benchmarks.selection_truth import truth_lines


def fail(message: str) -> NoReturn:
    """Bad input: one line on stderr, exit status 2."""
    print(message, file=sys.stderr)
    raise SystemExit(2)


def parse_item(text: str) -> tuple[str, int]:
    concept, _, seed = text.partition(":")
    if concept not in CONCEPTS or not seed.isdigit():
        fail(f"error: bad run {text!r} (hint: write CONCEPT:SEED, concepts {', '.join(CONCEPTS)})")
    return concept, int(seed)


def parse_weights(text: str):
    """Five comma-separated weights (fidelity, flexibility, adherence, diversity, preservation)."""
    from lorasel.errors import ConfigError
    from lorasel.rank import Weights

    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 5:
        fail("error: bad --weights (hint: five numbers, e.g. 1,1,1,0,0)")
    try:
        return Weights(*values)
    except ConfigError as exc:
        fail(exc.one_line())


def render(items: list[str]) -> None:
    from lorasel.models import load_base, load_scorer

    runs = [parse_item(item) for item in items]  # every item checked before the models load
    base, scorer = load_base("toy"), load_scorer("toy")
    for concept, seed in runs:
        t0 = time.perf_counter()
        print(f"[heldout] {concept} seed {seed} started {time.strftime('%H:%M:%S')}", flush=True)
        # One process per core, one torch thread each: two processes of two threads on 2 cores
        # rendered 18 images a minute each instead of 136 (2026-11-22).
        one_run(concept, seed, base, scorer, threads=THREADS or 1)
        # No result here: a pre-registered test may still name an alternative before its runs are
        # graded, so the render log shows no regret (``grade`` does, when every run is done).
        print(f"[heldout] {concept} seed {seed} done in {time.perf_counter() - t0:.0f} s", flush=True)


def grade(seed: int, concepts: list[str], others: list) -> str:
    """Markdown: per run, each selector's choice and regret, and the means (:func:`table`);
    ``others``: further :class:`~lorasel.rank.Weights` graded beside the default."""
    from lorasel.models import load_base, load_scorer
    from lorasel.rank import DEFAULT_WEIGHTS

    base, scorer = load_base("toy"), load_scorer("toy")
    extra = {weights_label(w): w for w in others}
    runs, cubes = [], []
    for concept in concepts:
        run = one_run(concept, seed, base, scorer)
        verdicts = dict(run["outcome"].verdicts)
        verdicts.update({label: pick_verdict(run, weights) for label, weights in extra.items()})
        runs.append((f"{concept}-{seed}", verdicts))
        cubes.append(seed_cube(run))
    return (
        f"lorasel pick: the default weights {weights_label(DEFAULT_WEIGHTS)}; graded on 10 seeds per prompt "
        "no selector saw.\n\n" + table(runs, [*SELECTORS, *extra]) + "\n".join(averaged_lines(cubes)) + "\n"
    )


def averaged(items: list[str]) -> str:
    """Markdown: each selector's regret averaged over draws of seeds, over the finished runs
    named; the estimates against a known truth, seeds or scoring; a second judge; and ``lorasel eval --refine``
    against more seeds for every candidate."""
    from lorasel.models import load_base, load_scorer

    runs = [parse_item(item) for item in items]
    base, scorer = load_base("toy"), load_scorer("toy")
    done = [one_run(concept, seed, base, scorer) for concept, seed in runs]
    cubes = [seed_cube(run) for run in done]
    lines = [
        *averaged_lines(cubes),
        *truth_lines(cubes),
        *judge_lines(done, cubes, scorer),
        *refine_lines(cubes),
    ]
    return "\n".join(lines).lstrip("\n") + "\n"


def table(runs: list[tuple[str, dict]], selectors: list[str]) -> str:
    """Per run (name, {selector: Verdict}, with the oracle's best as ``"oracle"``): each
    selector's choice and regret; then the means, and the paired 95% interval of lorasel's
    regret minus each other selector's over the runs."""
    heading = [LABELS.get(s, f"lorasel with {s}") for s in selectors]
    lines = ["| run | oracle's best | " + " | ".join(heading) + " |", "|---|---|" + "---|" * len(heading)]
    regrets: dict[str, list[float]] = {s: [] for s in selectors}
    for name, verdicts in runs:
        best = verdicts["oracle"]
        cells = []
        for s in selectors:
            v = verdicts[s]
            regrets[s].append(v.regret)
            cells.append(f"e{v.epoch}@{v.strength:g} ({100 * v.regret:.1f}%)")
        lines.append(f"| {name} | e{best.epoch}@{best.strength:g} | " + " | ".join(cells) + " |")
    means = [f"**{100 * sum(r) / len(r):.1f}%**" for r in regrets.values()]
    lines += ["| **mean** | | " + " | ".join(means) + " |", ""]
    for s, label in zip(selectors[1:], heading[1:], strict=True):
        diff = [a - b for a, b in zip(regrets["lorasel"], regrets[s], strict=True)]
        lo, hi = mean_interval(diff)
        lines.append(
            f"- lorasel pick minus {label}: {100 * sum(diff) / len(diff):+.1f} points "
            f"(95% interval over the runs {100 * lo:+.1f} to {100 * hi:+.1f})"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.heldout", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render", help="train, render and grade runs (cached)")
    r.add_argument("items", nargs="+", metavar="CONCEPT:SEED")
    g = sub.add_parser("grade", help="the regrets on one training seed's cached runs")
    g.add_argument("seed", type=int)
    g.add_argument("--concepts", default=",".join(CONCEPTS))
    g.add_argument(
        "--weights",
        action="append",
        default=[],
        help="other weights to grade beside the default (fidelity,flexibility,adherence,diversity,preservation)",
    )
    a = sub.add_parser("averaged", help="regrets averaged over draws of seeds, over finished runs")
    a.add_argument("items", nargs="+", metavar="CONCEPT:SEED")
    args = parser.parse_args(argv)
    if args.command == "render":
        render(args.items)
        return 0
    if args.command == "averaged":
        print(averaged(args.items), end="")
        return 0
    concepts = [c for c in args.concepts.split(",") if c]
    if not concepts:
        fail(f"error: no concept to grade (hint: --concepts {','.join(CONCEPTS[:2])})")
    for c in concepts:
        parse_item(f"{c}:{args.seed}")
    others = [parse_weights(w) for w in args.weights]  # every input checked before the models load
    print(grade(args.seed, concepts, others), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
