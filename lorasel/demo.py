"""`lorasel demo`: the whole product on the toy world, with the oracle's verdict.

Trains a LoRA on a toy-world concept with a checkpoint every epoch (enough epochs to overfit),
evaluates every checkpoint at three strengths, ranks them, writes the CSV and HTML report, and
asks the toy world's oracle — ground truth that lorasel's ranking never sees — how good lorasel's
pick and the lowest-loss pick really are. The selection benchmark (``benchmarks/bench_selection``)
runs the same chain over several concepts and seeds.

Everything is cached: a second run reuses the trained checkpoints and the renders.
The trainer is imported inside :func:`train_concept` (the core does not depend on it).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorasel.errors import ConfigError
from lorasel.rundir import RunDir
from lorasel.text import counted

if TYPE_CHECKING:  # the CLI imports this module for its defaults: pandas loads on use
    import pandas as pd

# What `lorasel demo` does by default: sized to finish in about 5 minutes on 2 CPU cores.
DEMO_CONCEPT = "star"
DEMO_STRENGTHS = (0.5, 0.75, 1.0)
DEMO_SEEDS = 2
# Sampling steps per render: fewer than the toy base's 20 (what `lorasel eval` and the selection
# benchmark use), which keeps the demo within 5 minutes on 2 cores. The base's oracle accuracy on
# 96 held-out captions is the same at 10, 12, 15 and 20 steps (DPM-Solver++ 2M), and on the demo's
# run the 12-step scores rank its 31 candidates as the 20-step ones do (Spearman 0.99; the oracle's
# grades of its 30 LoRA candidates agree less, 0.79, with means 0.543 and 0.533).
DEMO_STEPS = 12
VALIDATION_SEED = 10_000  # the held-out images' seed: the training seed plus this


@dataclass(frozen=True)
class Verdict:
    """The oracle's judgement of one (checkpoint, strength) candidate."""

    checkpoint: str
    label: str
    epoch: int | None
    strength: float
    quality: float  # oracle quality in [0, 1]: the fraction of asked-for attributes shown
    regret: float  # (oracle best - quality) / (oracle best - oracle worst), in [0, 1]


@dataclass
class SelectionOutcome:
    """One evaluated run, ranked, with the oracle's judgement of every selector's choice."""

    run_dir: Path
    ranking: Any  # lorasel.rank.Ranking
    results: Any  # lorasel.results.Results
    oracle: pd.DataFrame  # per (checkpoint, strength): oracle_quality and its per-kind parts
    attributes: pd.DataFrame | None = None  # per render, base included: render_attributes
    verdicts: dict[str, Verdict] = field(default_factory=dict)  # selector name -> verdict

    @property
    def oracle_best(self) -> Verdict:
        return self.verdicts["oracle"]


def train_concept(
    run_dir: str | Path,
    *,
    concept: str = DEMO_CONCEPT,
    overrides: Sequence[str] = (),
    progress: Callable[[Any], None] | None = None,
    pipeline=None,
    validation: bool = True,
) -> Path:
    """Train the ``toyworld`` preset on ``concept`` into ``run_dir``; reuse a finished run.

    A run directory that already holds this run's last checkpoint is kept as it is; one that
    was interrupted is resumed. Returns the run directory.
    """
    import trainer
    from lorasel.toyworld.concepts import make_dataset

    run = RunDir.at(run_dir)
    resume = run.config.is_file()
    settings = [f"dataset.toy_concept={concept}", *overrides]
    if validation and not resume:
        # Held-out images of the same concept (other positions and sizes): a validation loss
        # for the lowest-validation-loss selector, computed as kohya's sd-scripts does.
        seed = trainer.load_config("toyworld", settings).training.seed
        held_out = make_dataset(concept, run.root / "validation", repeats=1, seed=seed + VALIDATION_SEED)
        settings.append(f"validation.path={held_out}")
    check_reusable(run.root, concept)
    config = trainer.load_config(run.config if resume else "toyworld", settings)
    if resume and _finished(run, config):
        return run.root
    trainer.train(config, output=run.root, progress=progress, resume=resume, pipeline=pipeline)
    return run.root


def check_reusable(run_dir: str | Path, concept: str, epochs: int | None = None) -> None:
    """``ConfigError`` when ``run_dir`` already holds a run that is not the one asked for: on
    another toy concept (its checkpoints would be reported under this one's name), or with
    checkpoints past ``epochs`` (they would all be evaluated, not the ``epochs`` asked for)."""
    run = RunDir.at(run_dir)
    if not run.config.is_file():
        return
    import trainer

    config = trainer.load_config(run.config)
    trained = config.dataset.toy_concept
    if trained != concept:
        raise ConfigError(
            f"{run.root} holds a run on the {trained!r} concept, not {concept!r}",
            hint=f"use another --workdir for {concept!r}, or --concept {trained}",
        )
    if epochs is None:
        return
    saved = [
        int(match[1])
        for path in (run.root / "checkpoints").glob(f"{config.save.name}-*.safetensors")
        if (match := re.fullmatch(rf"{re.escape(config.save.name)}-(\d{{6}})\.safetensors", path.name))
    ]
    if saved and max(saved) > epochs:
        raise ConfigError(
            f"{run.root} holds a run of {counted(max(saved), 'epoch')}, more than --epochs {epochs}",
            hint=f"use another --workdir for {counted(epochs, 'epoch')}, or --epochs {max(saved)} or more",
        )


def _finished(run: RunDir, config) -> bool:
    name = config.save.name
    return (run.root / "checkpoints" / f"{name}-{config.training.epochs:06d}.safetensors").is_file()


def judge_selection(
    run_dir: str | Path,
    results,
    ranking,
    *,
    middle_epoch: int | None = None,
    oracle: pd.DataFrame | None = None,
    attributes: pd.DataFrame | None = None,
) -> SelectionOutcome:
    """The oracle's quality for every candidate, and the verdict on each selector's choice.

    Selectors: ``lorasel`` (the ranking's pick), ``lowest_loss`` / ``lowest_val_loss`` (the
    checkpoint with the lowest training / validation loss, at strength 1.0), ``last_epoch``
    and ``middle_epoch`` (at strength 1.0), and ``oracle`` (the best candidate by ground truth).
    ``oracle``: the per-candidate frame of an earlier call on the same results (skips measuring);
    ``attributes``: the :func:`~lorasel.toyworld.verdict.render_attributes` of ``results.renders``,
    when already measured.
    """
    from lorasel.results import BASE
    from lorasel.toyworld.verdict import candidate_quality, render_attributes

    run = RunDir.at(run_dir)
    if oracle is None:
        if attributes is None:
            attributes = render_attributes(results.renders, run.state)  # each image measured once
        renders = results.renders[results.renders["checkpoint"] != BASE]
        oracle = candidate_quality(renders, attributes=attributes)
        table = ranking.table[ranking.table["checkpoint"] != BASE]
        info = table[["checkpoint", "label", "epoch", "strength", "loss", "val_loss"]]
        oracle = oracle.merge(info, on=["checkpoint", "strength"], how="left")

    def full_strength(rows: pd.DataFrame) -> pd.DataFrame:
        target = rows.loc[(rows["strength"] - 1.0).abs().idxmin(), "strength"]
        return rows[rows["strength"] == target]

    out = SelectionOutcome(run.root, ranking, results, oracle, attributes)
    out.verdicts["oracle"] = verdict_of(oracle, oracle.loc[oracle["oracle_quality"].idxmax()])
    best = ranking.best
    out.verdicts["lorasel"] = verdict_at(oracle, best.checkpoint, best.strength)
    at_one = full_strength(oracle)
    for name, column in (("lowest_loss", "loss"), ("lowest_val_loss", "val_loss")):
        known = at_one[at_one[column].notna()]
        if not known.empty:
            out.verdicts[name] = verdict_of(oracle, known.loc[known[column].idxmin()])
    by_epoch = at_one.dropna(subset=["epoch"]).sort_values("epoch")
    if not by_epoch.empty:
        out.verdicts["last_epoch"] = verdict_of(oracle, by_epoch.iloc[-1])
        epochs = by_epoch["epoch"].astype(int).tolist()
        middle = middle_epoch if middle_epoch in epochs else epochs[(len(epochs) - 1) // 2]
        out.verdicts["middle_epoch"] = verdict_of(oracle, by_epoch[by_epoch["epoch"] == middle].iloc[0])
    return out


def verdict_of(oracle: pd.DataFrame, row: pd.Series) -> Verdict:
    """The verdict on one row of ``oracle`` (a :func:`judge_selection` per-candidate frame):
    its quality, and its regret against the best and worst candidates of ``oracle``."""
    import pandas as pd

    best_q = float(oracle["oracle_quality"].max())
    span = best_q - float(oracle["oracle_quality"].min())
    q = float(row["oracle_quality"])
    return Verdict(
        checkpoint=str(row["checkpoint"]),
        label=str(row["label"]),
        epoch=None if pd.isna(row["epoch"]) else int(row["epoch"]),
        strength=float(row["strength"]),
        quality=q,
        regret=(best_q - q) / span if span > 0 else 0.0,
    )


def verdict_at(oracle: pd.DataFrame, checkpoint: str, strength: float) -> Verdict:
    """The verdict on the candidate (``checkpoint``, ``strength``) under ``oracle``'s grading."""
    rows = oracle[(oracle["checkpoint"] == checkpoint) & (oracle["strength"] == strength)]
    return verdict_of(oracle, rows.iloc[0])


def check_concept(concept: str) -> str:
    from lorasel.toyworld.concepts import CONCEPTS

    if concept not in CONCEPTS:
        raise ConfigError(
            f"unknown toy-world concept {concept!r}", hint=f"choose one of {', '.join(sorted(CONCEPTS))}"
        )
    return concept


def default_threads() -> int:
    """CPU threads for a demo or benchmark that has the machine to itself: the cores, at most 4."""
    import os

    return min(4, os.cpu_count() or 1)


def format_regret(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.0f}%"
