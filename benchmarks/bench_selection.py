"""Selection quality on the toy world, with the oracle as ground truth.

For each concept × training seed: train the ``toyworld`` preset (a checkpoint every epoch,
enough epochs to overfit), evaluate every checkpoint at three strengths, rank, and ask the
oracle how good each selector's choice is:

- lorasel's pick (the default weights);
- the lowest training loss and the lowest validation loss (held-out images of the concept), at
  strength 1.0 — what people use today;
- the last epoch and a fixed middle epoch, at strength 1.0.

Regret = (oracle's best quality - the choice's quality) / (oracle's best - oracle's worst), over
every evaluated (checkpoint, strength). The selectors see ``LORASEL_BENCH_SELECT_SEEDS`` seeds
per prompt (default: ``lorasel eval``'s default, 4). The seed study re-ranks each run on the
first n seeds per prompt for each n of ``LORASEL_BENCH_SEED_STUDY`` (default 1,2,4). The oracle
grades on ``LORASEL_BENCH_GRADE_SEEDS`` (default 10) further seeds per prompt that neither saw
(seed indices from the largest of those counts on; graded on the selectors' own renders, the
oracle's best would share their noise), so every row of the report has the same grading. One
more row is a reference rather than a rival: the oracle's own choice from the renders the
selectors saw, graded on the new seeds. It is not a limit lorasel cannot beat: the oracle is
exact per render, but a few binary judgements per candidate measure it coarsely, and CLIP's
continuous scores can separate candidates better. A selector's regret and its regret above the
reference bracket its true regret on average: the first overstates it (the best on the grading
seeds is partly the luckiest), the second understates it (the reference's choice is not the true
best either).

The runs are those of training seeds ``TRAIN_SEEDS`` (5 and 6): the default scoring was chosen
and adopted on seeds 0-4 by pre-registered tests (reports/preregistered.md), on earlier versions
of this benchmark, so every run here is new to it. Each seed index costs 5,208 renders for the 12
runs (6 concepts × 2 training seeds); the 14 of the default settings (4 seen, 10 graded) cost
72,912, about 4.5 hours in two 1-thread processes on 2 CPU cores. ``run`` renders in one process;
from scratch, render the runs first in as many processes as there are cores
(``python -m benchmarks.heldout render star:5 heart:5 ...``, the same cached ``one_run``). Runs
are cached under ``BENCH_DIR`` (default ``.bench/selection``): a rerun re-ranks without training
or rendering again.

Alone: ``python -m benchmarks.run selection``; env ``LORASEL_BENCH_CONCEPTS`` (comma-separated)
and ``LORASEL_BENCH_SEEDS`` (how many of ``TRAIN_SEEDS``) shrink it; ``LORASEL_BENCH_THREADS``
sets the torch threads (the largest, when it lists several as for the eval section; default:
``lorasel demo``'s).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from benchmarks.oracle_cache import measured_attributes
from benchmarks.selection_report import report
from benchmarks.selection_settings import (
    CONCEPTS,
    GRADE_FROM,
    GRADE_SEEDS,
    SEED_STUDY,
    SELECT_SEEDS,
    THREADS,
    TRAIN_SEEDS,
)
from benchmarks.settings import env_count


def bench_dir() -> Path:
    return Path(os.environ.get("BENCH_DIR", Path(__file__).resolve().parents[1] / ".bench")) / "selection"


def one_run(concept: str, seed: int, base, scorer, *, threads: int = 0) -> dict:
    """Train (cached), evaluate (cached), rank and judge one concept × seed, with ``threads``
    torch threads (0: ``LORASEL_BENCH_THREADS``, else ``lorasel demo``'s default)."""
    from lorasel import demo
    from lorasel.evaluate import evaluate
    from lorasel.rank import rank, read_loss

    run_dir = bench_dir() / f"{concept}-seed{seed}"
    t0 = time.perf_counter()
    threads = threads or THREADS or demo.default_threads()
    overrides = [f"training.seed={seed}", f"training.cpu_threads={threads}"]
    demo.train_concept(run_dir, concept=concept, overrides=overrides)
    t1 = time.perf_counter()
    results = evaluate(
        run_dir,
        base=base,
        scorer=scorer,
        strengths=demo.DEMO_STRENGTHS,
        seeds=SELECT_SEEDS,
        threads=threads,
    )
    ranking = rank(results, loss=read_loss(run_dir))
    same = demo.judge_selection(
        run_dir, results, ranking, attributes=measured_attributes(run_dir, results.renders)
    )
    outcome = same
    study = []
    if GRADE_SEEDS:
        outcome = grade_on_new_seeds(run_dir, base, scorer, results, ranking, same, threads)
        study = seed_study(run_dir, base, scorer, outcome, threads, ranked={SELECT_SEEDS: ranking})
    t2 = time.perf_counter()
    return {
        "concept": concept,
        "seed": seed,
        "results": results,  # what the selectors see
        "outcome": outcome,  # graded on renders the selectors never saw (when GRADE_SEEDS)
        "same": same,  # graded on the renders the selectors saw
        "seed_study": study,  # lorasel's pick ranked on 1, 2, 4, 8 seeds per prompt, graded on the unseen
        "train_s": t1 - t0,
        "eval_s": t2 - t1,
    }


def grade_on_new_seeds(run_dir, base, scorer, results, ranking, same, threads):
    """The oracle's verdict from ``GRADE_SEEDS`` further seeds per prompt, which no selector
    saw: the oracle's best is then not fitted to the noise of the renders lorasel ranked."""
    from lorasel import demo
    from lorasel.evaluate import evaluate
    from lorasel.results import BASE
    from lorasel.toyworld.verdict import candidate_quality

    full = evaluate(
        run_dir,
        base=base,
        scorer=scorer,
        strengths=demo.DEMO_STRENGTHS,
        seeds=GRADE_FROM + GRADE_SEEDS,
        threads=threads,
    )
    attributes = measured_attributes(run_dir, full.renders)  # the seen renders were measured already
    unseen = full.renders[(full.renders["seed_index"] >= GRADE_FROM) & (full.renders["checkpoint"] != BASE)]
    oracle = candidate_quality(unseen, attributes=attributes)
    info = same.oracle[["checkpoint", "strength", "label", "epoch", "loss", "val_loss"]]
    oracle = oracle.merge(info, on=["checkpoint", "strength"], how="left")
    graded = demo.judge_selection(run_dir, results, ranking, oracle=oracle)
    seen_best = same.verdicts["oracle"]
    graded.verdicts["oracle_seen"] = demo.verdict_at(graded.oracle, seen_best.checkpoint, seen_best.strength)
    graded.results, graded.attributes = full, attributes  # every seed, for the phenomenon table
    return graded


def seed_study(run_dir, base, scorer, graded, threads, ranked=None) -> list[dict]:
    """For each n of ``SEED_STUDY``: rank on the first n seeds per prompt (rendered already by
    :func:`grade_on_new_seeds`), and grade lorasel's pick, the reference (the oracle's choice
    from those n seeds) and the confidence set for the best on the unseen seeds (``graded``).
    ``ranked``: rankings already made, by seeds per prompt (not made again)."""
    from lorasel import demo
    from lorasel.evaluate import evaluate
    from lorasel.rank import rank, read_loss
    from lorasel.results import BASE
    from lorasel.toyworld.verdict import candidate_quality

    full, attributes, oracle = graded.results, graded.attributes, graded.oracle
    loss = read_loss(run_dir)
    best = oracle.loc[oracle["oracle_quality"].idxmax()]
    rows = []
    for n in SEED_STUDY:
        ranking = (ranked or {}).get(n)
        if ranking is None:
            results = evaluate(
                run_dir, base=base, scorer=scorer, strengths=demo.DEMO_STRENGTHS, seeds=n, threads=threads
            )
            ranking = rank(results, loss=loss)
        pick = ranking.best
        table = ranking.table[ranking.table["checkpoint"] != BASE]
        in_set = table[
            table["tied"] | ((table["checkpoint"] == pick.checkpoint) & (table["strength"] == pick.strength))
        ]
        seen = full.renders[(full.renders["seed_index"] < n) & (full.renders["checkpoint"] != BASE)]
        reference = candidate_quality(seen, attributes=attributes)
        reference = reference.loc[reference["oracle_quality"].idxmax()]
        rows.append(
            {
                "seeds": n,
                "lorasel": demo.verdict_at(oracle, pick.checkpoint, pick.strength).regret,
                "reference": demo.verdict_at(oracle, reference["checkpoint"], reference["strength"]).regret,
                "set_size": len(in_set),
                "best_in_set": bool(
                    (
                        (in_set["checkpoint"] == best["checkpoint"])
                        & (in_set["strength"] == best["strength"])
                    ).any()
                ),
            }
        )
    return rows


def run(out_dir: Path) -> str:
    from lorasel.demo import check_concept
    from lorasel.errors import ConfigError
    from lorasel.models import load_base, load_scorer

    concepts = [c for c in os.environ.get("LORASEL_BENCH_CONCEPTS", ",".join(CONCEPTS)).split(",") if c]
    seeds = list(TRAIN_SEEDS[: env_count("LORASEL_BENCH_SEEDS", len(TRAIN_SEEDS))])
    if not concepts:
        raise ConfigError("LORASEL_BENCH_CONCEPTS names no concept", hint=f"e.g. {','.join(CONCEPTS[:2])}")
    if not seeds:
        raise ConfigError("LORASEL_BENCH_SEEDS=0 leaves no training seed", hint="a count from 1, or unset it")
    for concept in concepts:  # every setting checked before the models load
        try:
            check_concept(concept)
        except ConfigError as exc:
            raise ConfigError(f"LORASEL_BENCH_CONCEPTS: {exc.message}", hint=exc.hint) from exc
    base, scorer = load_base("toy"), load_scorer("toy")
    start = time.perf_counter()
    runs = []
    for concept in concepts:
        for seed in seeds:
            print(f"[selection] {concept} seed {seed}", flush=True)
            runs.append(one_run(concept, seed, base, scorer))
    return report(runs, concepts, seeds, out_dir, started=start)
