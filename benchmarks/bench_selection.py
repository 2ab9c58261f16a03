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
per prompt (default: ``lorasel eval``'s default, 4); the oracle grades on
``LORASEL_BENCH_GRADE_SEEDS`` (default 6) further seeds per prompt that no selector saw (graded on
the selectors' own renders, the oracle's best would share their noise). One more row is a
reference rather than a rival: the oracle's own choice from the renders the selectors saw,
graded on the new seeds. It is not a floor: the oracle is exact per render, but a few binary
judgements per candidate measure it coarsely, and CLIP's continuous scores can separate
candidates better. A selector's regret and its regret above the reference bracket its true
regret on average: the first overstates it (the best on the grading seeds is partly the
luckiest), the second understates it (the reference's choice is not the true best either).
Each grading seed costs 4,340 renders (2 seeds for all 10 runs took 23 min in two 1-thread
processes on 2 CPU cores, ``one_run`` on 5 runs each). Runs
are cached under ``BENCH_DIR`` (default ``.bench/selection``): a rerun re-ranks without
training or rendering again.

Alone: ``python -m benchmarks.run selection``; env ``LORASEL_BENCH_CONCEPTS`` (comma-separated)
and ``LORASEL_BENCH_SEEDS`` (count) shrink it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from lorasel.errors import ConfigError

CONCEPTS = ("star", "heart", "cross", "moon", "ring")


def env_count(name: str, default: int) -> int:
    """A whole number >= 0 from the environment variable ``name`` (ConfigError otherwise)."""
    text = os.environ.get(name, str(default)).strip()
    if not text.isdigit():
        raise ConfigError(
            f"{name}={text!r} is not a count", hint=f"a whole number >= 0, e.g. {name}={default}"
        )
    return int(text)


TRAIN_SEEDS = 2
# Seeds per prompt the selectors see (lorasel eval's default) ...
SELECT_SEEDS = env_count("LORASEL_BENCH_SELECT_SEEDS", 4)
# ... and further seeds per prompt the oracle grades on (0: grade on the selectors' renders).
GRADE_SEEDS = env_count("LORASEL_BENCH_GRADE_SEEDS", 6)
SELECTORS = ("lorasel", "lowest_loss", "lowest_val_loss", "last_epoch", "middle_epoch", "oracle_seen")
LABELS = {
    "lorasel": "lorasel pick",
    "lowest_loss": "lowest training loss @1.0",
    "lowest_val_loss": "lowest validation loss @1.0",
    "last_epoch": "last epoch @1.0",
    "middle_epoch": "middle epoch @1.0",
    "oracle_seen": "reference: the oracle's choice from the selectors' renders",
}


def bench_dir() -> Path:
    return Path(os.environ.get("BENCH_DIR", Path(__file__).resolve().parents[1] / ".bench")) / "selection"


def one_run(concept: str, seed: int, base, scorer) -> dict:
    """Train (cached), evaluate (cached), rank and judge one concept × seed."""
    from lorasel import demo
    from lorasel.evaluate import evaluate
    from lorasel.rank import rank, read_loss

    run_dir = bench_dir() / f"{concept}-seed{seed}"
    t0 = time.perf_counter()
    threads = int(os.environ.get("LORASEL_BENCH_THREADS", "0")) or demo.default_threads()
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
    same = demo.judge_selection(run_dir, results, ranking)
    outcome = same
    if GRADE_SEEDS:
        outcome = grade_on_new_seeds(run_dir, base, scorer, results, ranking, same, threads)
    t2 = time.perf_counter()
    return {
        "concept": concept,
        "seed": seed,
        "results": results,  # what the selectors see
        "outcome": outcome,  # graded on renders the selectors never saw (when GRADE_SEEDS)
        "same": same,  # graded on the renders the selectors saw
        "train_s": t1 - t0,
        "eval_s": t2 - t1,
    }


def grade_on_new_seeds(run_dir, base, scorer, results, ranking, same, threads):
    """The oracle's verdict from ``GRADE_SEEDS`` further seeds per prompt, which no selector
    saw: the oracle's best is then not fitted to the noise of the renders lorasel ranked."""
    from lorasel import demo
    from lorasel.evaluate import evaluate
    from lorasel.results import BASE
    from lorasel.toyworld.verdict import candidate_quality, render_attributes

    full = evaluate(
        run_dir,
        base=base,
        scorer=scorer,
        strengths=demo.DEMO_STRENGTHS,
        seeds=SELECT_SEEDS + GRADE_SEEDS,
        threads=threads,
    )
    # The oracle has measured the seeds the selectors saw (``same``): measure only the new renders.
    seen = same.attributes.set_axis(same.results.renders["image"])
    new = full.renders[~full.renders["image"].isin(seen.index)]
    measured = render_attributes(new, demo.RunDir.at(run_dir).state).set_axis(new["image"])
    attributes = pd.concat([seen, measured]).loc[full.renders["image"]].set_axis(full.renders.index)
    unseen = full.renders[(full.renders["seed_index"] >= SELECT_SEEDS) & (full.renders["checkpoint"] != BASE)]
    oracle = candidate_quality(unseen, attributes=attributes)
    info = same.oracle[["checkpoint", "strength", "label", "epoch", "loss", "val_loss"]]
    oracle = oracle.merge(info, on=["checkpoint", "strength"], how="left")
    graded = demo.judge_selection(run_dir, results, ranking, oracle=oracle)
    seen_best = same.verdicts["oracle"]
    graded.verdicts["oracle_seen"] = demo.verdict_at(graded.oracle, seen_best.checkpoint, seen_best.strength)
    graded.results, graded.attributes = full, attributes  # every seed, for the phenomenon table
    return graded


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


def weight_sweep(runs: list[dict]) -> pd.DataFrame:
    """Mean regret of lorasel's pick under other weights (justifies the default)."""
    from lorasel.demo import judge_selection
    from lorasel.rank import Weights, rank, read_loss
    from lorasel.rank.weights import DEFAULT_WEIGHTS

    d = DEFAULT_WEIGHTS
    grid: dict[str, Weights | None] = {
        f"default ({d.fidelity:g}, {d.flexibility:g}, {d.diversity:g}, {d.preservation:g})": None
    }
    # Fidelity : flexibility from one alone to the other, without and with the secondary terms.
    for fid, flex in ((1, 0), (2, 1), (1, 1), (1, 2), (0, 1)):
        for secondary in (0.0, 0.25):
            weights = Weights(fid, flex, secondary, secondary)
            if weights != d:
                grid[f"({fid:g}, {flex:g}, {secondary:g}, {secondary:g})"] = weights
    grid["all equal (1, 1, 1, 1)"] = Weights(1, 1, 1, 1)
    rows = []
    for label, weights in grid.items():
        regrets = []
        for r in runs:
            o = r["outcome"]
            ranking = rank(r["results"], weights=weights, loss=read_loss(o.run_dir), n_boot=200)
            judged = judge_selection(o.run_dir, r["results"], ranking, oracle=o.oracle)
            regrets.append(judged.verdicts["lorasel"].regret)
        rows.append(
            {
                "weights": label,
                "mean_regret": float(np.mean(regrets)),
                "max_regret": float(np.max(regrets)),
                "regrets": regrets,
            }
        )
    return pd.DataFrame(rows)


def held_out_weights(runs: list[dict], sweep: pd.DataFrame) -> tuple[float, list[str]]:
    """Leave one concept out: pick the sweep's weights with the lowest mean regret on the other
    concepts, measure them on the held-out one. Returns the mean regret over all runs so measured
    and the weights each concept's fold chose (how much tuning the weights on the toy world is
    worth, without grading the choice on the runs it was made on)."""
    concepts = [r["concept"] for r in runs]
    regrets = np.array(sweep["regrets"].tolist())  # [weights, runs]
    held, chosen = np.zeros(len(runs)), []
    for concept in dict.fromkeys(concepts):
        test = np.array([c == concept for c in concepts])
        best = int(regrets[:, ~test].mean(axis=1).argmin())
        held[test] = regrets[best, test]
        chosen.append(f"{concept}: {sweep['weights'].iloc[best]}")
    return float(held.mean()), chosen


def learnability(runs: list[dict]) -> pd.DataFrame:
    """Per epoch at strength 1.0, over runs: in-domain renders showing the concept's shape,
    out-of-domain renders showing the background they ask for, and the training loss."""
    from lorasel.results import BASE
    from lorasel.toyworld.verdict import attribute_rates

    frames = []
    for r in runs:
        o = r["outcome"]
        renders = o.results.renders
        renders = renders[(renders["checkpoint"] == BASE) | (renders["strength"] == 1.0)]
        rates = attribute_rates(renders, o.attributes)
        epochs = o.oracle[["checkpoint", "epoch", "loss"]].drop_duplicates("checkpoint")
        base = pd.DataFrame({"checkpoint": [BASE], "epoch": [0], "loss": [float("nan")]})
        rates = rates.merge(pd.concat([base, epochs]), on="checkpoint")
        concept = rates[rates["kind"] == "in_domain"].set_index("epoch")["shape"].rename("concept")
        ood_bg = (
            rates[rates["kind"] == "out_of_domain"].set_index("epoch")["background"].rename("ood_background")
        )
        loss = rates.drop_duplicates("epoch").set_index("epoch")["loss"]
        frames.append(pd.concat([concept, ood_bg, loss], axis=1))
    return pd.concat(frames).groupby(level=0).mean()


def figure(runs: list[dict], out_dir: Path) -> str:
    """Oracle quality and lorasel score per epoch at strength 1.0, with the training loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = runs[0]
    o = r["outcome"]
    table = o.ranking.table
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
    for strength in sorted(o.oracle["strength"].unique()):
        rows = o.oracle[o.oracle["strength"] == strength].sort_values("epoch")
        axes[0].plot(
            rows["epoch"], rows["oracle_quality"], marker="o", label=f"oracle, strength {strength:g}"
        )
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("oracle quality")
    axes[0].legend(fontsize=8)
    axes[0].set_title(f"{r['concept']}, seed {r['seed']}: ground truth")
    at_one = table[(table["strength"] == 1.0) & (table["checkpoint"] != "base")].sort_values("epoch")
    axes[1].plot(at_one["epoch"], at_one["loss"], marker="o", color="tab:red", label="training loss")
    if at_one["val_loss"].notna().any():
        axes[1].plot(
            at_one["epoch"], at_one["val_loss"], marker="s", color="tab:orange", label="validation loss"
        )
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("loss")
    axes[1].legend(fontsize=8)
    axes[1].set_title("what loss-based selection sees")
    for strength in sorted(o.oracle["strength"].unique()):
        rows = table[(table["strength"] == strength) & (table["checkpoint"] != "base")].sort_values("epoch")
        axes[2].plot(rows["epoch"], rows["score"], marker="o", label=f"strength {strength:g}")
    axes[2].set_xlabel("epoch")
    axes[2].set_ylabel("lorasel score")
    axes[2].legend(fontsize=8)
    axes[2].set_title("what lorasel sees (CLIP scores)")
    fig.tight_layout()
    path = out_dir / "selection.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def run(out_dir: Path) -> str:
    from lorasel.models import load_base, load_scorer

    concepts = [c for c in os.environ.get("LORASEL_BENCH_CONCEPTS", ",".join(CONCEPTS)).split(",") if c]
    n_seeds = env_count("LORASEL_BENCH_SEEDS", TRAIN_SEEDS)
    base, scorer = load_base("toy"), load_scorer("toy")
    start = time.perf_counter()
    runs = []
    for concept in concepts:
        for seed in range(n_seeds):
            print(f"[selection] {concept} seed {seed}", flush=True)
            runs.append(one_run(concept, seed, base, scorer))
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
    if "oracle_seen" in per_selector.index:
        by_run = frame.pivot_table(index=["concept", "seed"], columns="selector", values="regret")
        excess = by_run.sub(by_run["oracle_seen"], axis=0)
        per_selector["excess"] = excess.mean().reindex(per_selector.index)
    per_selector_same = per_selector_of(summarise(runs, key="same"))
    sweep = weight_sweep(runs)
    learn = learnability(runs)
    fig = figure(runs, out_dir)
    lorasel_regret = per_selector.loc["lorasel", "mean_regret"]
    loss_based = per_selector.loc[[s for s in ("lowest_loss", "lowest_val_loss") if s in per_selector.index]]
    below_loss = bool((loss_based["mean_regret"] > lorasel_regret).all())
    # The regret above the reference bounds the true regret from below; regret is never negative.
    lower = (
        max(0.0, per_selector.loc["lorasel", "excess"])
        if "excess" in per_selector.columns
        else lorasel_regret
    )
    if not below_loss or lower > 0.05:
        verdict = "NOT met"
    elif lorasel_regret <= 0.05:
        verdict = "met"
    else:
        verdict = (
            f"below every loss-based selector: met; ≤ 5%: not decided at this grading size (between "
            f"{100 * lower:.1f}% and {100 * lorasel_regret:.1f}%, see below)"
        )
    lines = [
        "## Selection quality against the oracle (toy world)",
        "",
        f"{len(concepts)} concepts × {n_seeds} training seeds = {len(runs)} runs of the `toyworld` preset; each "
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
    lines += [
        "",
        "Mean regret of lorasel's pick under other composite weights (fidelity, flexibility, diversity, "
        "preservation), on the same renders (200 bootstrap rounds):",
        "",
        "| weights | mean regret | worst regret |",
        "|---|---:|---:|",
    ]
    for row in sweep.itertuples(index=False):
        lines.append(f"| {row.weights} | {100 * row.mean_regret:.1f}% | {100 * row.max_regret:.1f}% |")
    held_regret, chosen = held_out_weights(runs, sweep)
    lines += [
        "",
        f"Weights chosen on the toy world without grading them on the runs they were chosen on (leave "
        f"one concept out: the best weights of the sweep on the other concepts, measured on the held-out "
        f"one): mean regret {100 * held_regret:.1f}% (chosen — {'; '.join(chosen)}).",
    ]
    if "oracle_seen" in per_selector.index:
        reference = per_selector.loc["oracle_seen", "mean_regret"]
        lines += [
            "",
            f"Reference: the oracle's own choice from the {SELECT_SEEDS} seeds per prompt the selectors saw, "
            f"graded on the {GRADE_SEEDS} new ones, has a mean regret of {100 * reference:.1f}%. It is not a "
            "floor: the oracle is exact per render, but a few binary judgements per candidate measure it "
            "coarsely, and lorasel's continuous CLIP scores can separate the same candidates better.",
            "",
            "The true regret (against the candidate that is best on infinitely many seeds) is bracketed: "
            "the regret above is an upper bound on average (the best on the new seeds is partly the "
            "luckiest), and the regret above the reference is a lower bound on average (the reference's "
            "choice, made from the same renders, is not the true best either; regret is never below 0). "
            f"For lorasel's pick: between {100 * lower:.1f}% and {100 * lorasel_regret:.1f}%. Runs in "
            "which lorasel's pick grades better than / equal to / worse than the reference's: "
            f"{int((excess['lorasel'] < -1e-9).sum())} / {int((excess['lorasel'].abs() <= 1e-9).sum())} / "
            f"{int((excess['lorasel'] > 1e-9).sum())} of {len(excess)}. More grading seeds tighten the "
            "upper bound.",
        ]
    if {"lorasel", "lowest_val_loss", "middle_epoch"} <= set(frame["selector"]):
        by = frame.pivot_table(index=["concept", "seed"], columns="selector", values="regret")
        for rival in ("lowest_val_loss", "middle_epoch"):
            diff = by["lorasel"] - by[rival]
            lines += [
                "",
                f"Per run, lorasel's pick against {LABELS[rival]}: better in {int((diff < -1e-9).sum())}, "
                f"equal in {int((diff.abs() <= 1e-9).sum())}, worse in {int((diff > 1e-9).sum())} of {len(diff)}.",
            ]
    lines += [
        "",
        "**The phenomenon** (issue 3's learnability bar, with the real trainer): per epoch at strength "
        "1.0, mean over the runs — in-domain renders that show the concept's shape (oracle), "
        "out-of-domain renders that show the background their prompt asks for, training loss:",
        "",
        "| epoch | concept shown (in-domain) | asked background (out-of-domain) | training loss |",
        "|---:|---:|---:|---:|",
    ]
    for epoch, row in learn.iterrows():
        label = "base model" if epoch == 0 else str(int(epoch))
        loss = "-" if pd.isna(row.loss) else f"{row.loss:.4f}"
        lines.append(f"| {label} | {row.concept:.0%} | {row.ood_background:.0%} | {loss} |")
    train_s = sum(r["train_s"] for r in runs)
    eval_s = sum(r["eval_s"] for r in runs)
    lines += [
        "",
        f"![oracle quality and loss per epoch](figures/{fig})",
        "",
        f"Wall time {time.perf_counter() - start:.0f} s (training {train_s:.0f} s, evaluation {eval_s:.0f} s; "
        "cached runs cost nothing). Reproduce: `python -m benchmarks.run selection`.",
    ]
    return "\n".join(lines)
