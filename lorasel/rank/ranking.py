"""Rank every evaluated (checkpoint, strength) pair, with bootstrap confidence and the loss beside it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

import numpy as np
import pandas as pd

from lorasel.checkpoints.discover import ADAPTER_FILES
from lorasel.errors import ConfigError
from lorasel.rank.bootstrap import SMALL_STRATUM, bootstrap_scores, interval, point_means, summarise
from lorasel.rank.evidence import gather_evidence
from lorasel.rank.loss import LossLog, checkpoint_loss, spearman
from lorasel.rank.pareto import pareto_front
from lorasel.rank.score import Normalisation, composite, fit_normalisation
from lorasel.rank.weights import DEFAULT_WEIGHTS, Weights
from lorasel.results import BASE, KIND_METRICS, METRICS, Results
from lorasel.text import counted

#: Columns of :attr:`Ranking.table` (docs/internals.md), plus ``path``, ``val_loss``, ``win_vs_best``.
TABLE_COLUMNS = (
    "checkpoint", "label", "path", "epoch", "step", "strength", *METRICS, "score", "score_lo",
    "score_hi", "rank", "p_best", "win_vs_best", "tied", "pareto", "loss", "val_loss", "seeds",
)  # fmt: skip

#: Rows of ``lorasel rank --json`` (DESIGN.md).
JSON_COLUMNS = (
    "checkpoint", "epoch", "step", "strength", *METRICS, "score", "rank", "p_best", "loss", "seeds",
)  # fmt: skip


def _opt_float(value: Any) -> float | None:
    if value is None or value is pd.NA:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _opt_int(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


@dataclass(frozen=True)
class Candidate:
    """One row of the ranking, as plain Python values (None where unknown)."""

    checkpoint: str  # candidate id: path relative to the evaluated folder, or "base"
    path: str  # absolute checkpoint path ("base" for the base model)
    label: str
    epoch: int | None
    step: int | None
    strength: float
    score: float
    score_lo: float | None
    score_hi: float | None
    rank: int | None
    p_best: float | None
    tied: bool
    pareto: bool
    metrics: dict[str, float | None]
    loss: float | None
    val_loss: float | None
    seeds: int  # seeds per prompt it was rendered with (more where `eval --refine` added some)

    @classmethod
    def from_row(cls, row: pd.Series) -> Candidate:
        return cls(
            checkpoint=str(row["checkpoint"]),
            path=str(row["path"]),
            label=str(row["label"]),
            epoch=_opt_int(row["epoch"]),
            step=_opt_int(row["step"]),
            strength=float(row["strength"]),
            score=float(row["score"]),
            score_lo=_opt_float(row["score_lo"]),
            score_hi=_opt_float(row["score_hi"]),
            rank=_opt_int(row["rank"]),
            p_best=_opt_float(row["p_best"]),
            tied=bool(row["tied"]),
            pareto=bool(row["pareto"]),
            metrics={m: _opt_float(row[m]) for m in METRICS},
            loss=_opt_float(row["loss"]),
            val_loss=_opt_float(row["val_loss"]),
            seeds=int(row["seeds"]),
        )

    @property
    def is_base(self) -> bool:
        return self.checkpoint == BASE

    @property
    def prompt_tag(self) -> str | None:
        """How A1111 and Forge apply it in a prompt, ``<lora:FILE_STEM:STRENGTH>`` (both the UNet
        and the text encoder at that strength, as lorasel rendered it); None for the base model.
        A diffusers adapter file (``checkpoint-500/pytorch_lora_weights.safetensors``: every
        checkpoint's file has that name) is named by its folder, as which it is to be copied."""
        if self.is_base:
            return None
        path = PurePath(self.path)
        name = path.parent.name if path.name in ADAPTER_FILES and path.parent.name else path.stem
        return f"<lora:{name}:{self.strength:g}>"


@dataclass(frozen=True, eq=False)
class Ranking:
    """The ranked table and what produced it.

    ``table``: one row per (checkpoint, strength), columns :data:`TABLE_COLUMNS`, sorted by rank
    with the base model last (rank, p_best NA); its ``seeds``: each row's seeds per prompt.
    ``boot_scores``: ``[n_boot, len(table)]``, the bootstrap scores of the table's rows (column i
    is row i). ``seeds_per_prompt``: the most seeds any prompt was rendered with (the largest of
    the table's ``seeds``). ``unmeasured``: metrics no competing candidate has a
    value of (left out of the score, whatever their weight), each with why: ``"stale"`` (the
    prompts that measure it were rendered, but the results predate the metric) or ``"no
    prompts"`` (the prompt set has none of the kinds that measure it). ``loss_spearman``: Spearman ρ
    between each checkpoint's loss and its best score over strengths (None without loss).
    """

    table: pd.DataFrame
    weights: Weights
    normalisation: Normalisation
    n_boot: int
    seed: int
    units: dict[str, int]
    loss_source: str | None
    loss_spearman: float | None
    boot_scores: np.ndarray = field(repr=False)
    seeds_per_prompt: int = 0
    unmeasured: dict[str, str] = field(default_factory=dict)

    def unmeasured_note(self, rerun: str = "lorasel eval") -> str | None:
        """One line on the weighted metrics left out of the score because nothing measured them
        (see ``unmeasured``), or None."""
        weights = self.weights.as_dict()
        notes = []
        stale = [m for m, why in self.unmeasured.items() if why == "stale" and weights[m] > 0]
        if stale:
            one = len(stale) == 1
            notes.append(
                f"{' and '.join(stale)} {'was' if one else 'were'} not measured in this evaluation "
                f"(an older lorasel wrote it) and {'is' if one else 'are'} left out of the score; rerun "
                f"{rerun} with the same options to measure {'it' if one else 'them'} (nothing is rendered again)"
            )
        for m, why in self.unmeasured.items():
            if why == "no prompts" and weights[m] > 0:
                kinds = " or ".join(k for k, measured in KIND_METRICS.items() if m in measured)
                notes.append(
                    f"{m} is left out of the score: the prompt set has no {kinds} prompts to measure it"
                )
        return "; ".join(notes) or None

    def few_units_note(self, rerun: str = "lorasel eval") -> str | None:
        """One line when a weighed metric is measured on fewer than :data:`SMALL_STRATUM`
        (prompt, seed) units (1 seed of 2 prompts, say), or None. So few units cannot tell the
        bootstrap how noisy they are: on synthetic runs with a known truth, the 95% confidence set
        for the best held the true best in 58% of runs at 2 units per kind, 78% at 3, 85% at 4
        (94% at the 12 units of 3 prompts and 4 seeds)."""
        weights = self.weights.as_dict()
        few = {}
        for m, w in weights.items():
            if w <= 0 or m == "diversity" or m in self.unmeasured:
                continue
            n = sum(count for kind, count in self.units.items() if m in KIND_METRICS.get(kind, ()))
            if 0 < n < SMALL_STRATUM:
                few[m] = n
        if not few or self.seeds_per_prompt <= 0:
            return None
        fewest = min(few.values())
        seeds = max(self.seeds_per_prompt + 1, math.ceil(SMALL_STRATUM * self.seeds_per_prompt / fewest))
        listed = ", ".join(f"{n} for {m}" for m, n in few.items())
        return (
            f"P(best), the ties and the score intervals rest on few (prompt, seed) units ({listed}), "
            f"too few for the bootstrap to know their noise, so they understate it; rerun {rerun} with "
            f"the same options and at least --seeds {seeds} (only the new seeds are rendered)"
        )

    def warnings(self, rerun: str = "lorasel eval") -> list[str]:
        """What the evidence lacks, one line each (:meth:`unmeasured_note`, :meth:`few_units_note`):
        printed on stderr by pick/rank/report, in the report, ``pick --json``'s ``warnings`` and
        TUI notifications; empty when there is nothing to say."""
        notes = (self.unmeasured_note(rerun=rerun), self.few_units_note(rerun=rerun))
        return [note for note in notes if note]

    def tie_advice(
        self, tied: int | None = None, rerun: str = "lorasel eval", refine: bool = True
    ) -> str | None:
        """What to do when ``tied`` other candidates (default: the table's) could be the best:
        more seeds per prompt, which ``rerun`` (the command that evaluated: ``lorasel eval`` or
        ``lorasel demo``) adds without rendering the old ones again; with ``refine`` (``rerun``
        has ``--refine``), also more seeds for these candidates only."""
        if tied is None:
            tied = int(self._contest()["tied"].iloc[1:].sum())
        if tied <= 0 or self.seeds_per_prompt <= 0:
            return None
        seeds = self.seeds_per_prompt
        head = (
            f"{counted(tied, 'other candidate')} could be the best at {counted(seeds, 'seed')} "
            f"per prompt; telling them apart takes more seeds, e.g. rerun "
            f"{rerun} with the same options and "
        )
        if refine:
            return head + f"--refine {seeds} (for these candidates only) or --seeds {2 * seeds} (for all)"
        return head + f"--seeds {2 * seeds}, which renders only the new seeds"

    @property
    def front(self) -> tuple[str, ...]:
        """The metrics of the Pareto front (the ``pareto`` column): those the score weighs."""
        return front_metrics(self.weights, self.normalisation)

    def front_label(self) -> str:
        """``"fidelity-adherence"``: the front's metrics, for a legend."""
        return "-".join(self.front) or "scored metrics"

    def _contest(self) -> pd.DataFrame:
        return self.table[self.table["checkpoint"] != BASE]

    @property
    def best(self) -> Candidate:
        """The top-ranked candidate (the base model never is)."""
        return Candidate.from_row(self._contest().iloc[0])

    @property
    def runner_up(self) -> Candidate | None:
        contest = self._contest()
        return Candidate.from_row(contest.iloc[1]) if len(contest) > 1 else None

    @property
    def base(self) -> Candidate | None:
        rows = self.table[self.table["checkpoint"] == BASE]
        return Candidate.from_row(rows.iloc[0]) if len(rows) else None

    @property
    def lowest_loss(self) -> Candidate | None:
        """What picking by training loss would choose: the checkpoint with the lowest loss, at the
        evaluated strength closest to 1.0 (loss is measured at full strength)."""
        contest = self._contest()
        with_loss = contest[contest["loss"].notna()]
        if with_loss.empty:
            return None
        target = with_loss.loc[with_loss["loss"].idxmin(), "checkpoint"]
        rows = contest[contest["checkpoint"] == target]
        row = rows.loc[(rows["strength"] - 1.0).abs().idxmin()]
        return Candidate.from_row(row)

    @property
    def seeds_vary(self) -> bool:
        """Whether competing candidates were rendered with different numbers of seeds per prompt
        (after ``lorasel eval --refine``): then the human outputs show each one's."""
        return self._contest()["seeds"].nunique() > 1

    def candidates(self) -> list[Candidate]:
        return [Candidate.from_row(row) for _, row in self.table.iterrows()]

    def json_rows(self) -> list[dict[str, Any]]:
        """Rows of ``lorasel rank --json``: DESIGN.md's fields, ``checkpoint`` as the file's path,
        then ``seeds`` and ``prompt_tag`` (None for the base model)."""
        out = []
        for c in self.candidates():
            out.append(
                {
                    "checkpoint": c.path,
                    "epoch": c.epoch,
                    "step": c.step,
                    "strength": c.strength,
                    **c.metrics,
                    "score": _opt_float(c.score),
                    "rank": c.rank,
                    "p_best": c.p_best,
                    "loss": c.loss,
                    "seeds": c.seeds,
                    "prompt_tag": c.prompt_tag,
                }
            )
        return out


def rank(
    results: Results,
    *,
    weights: Weights | None = None,
    strengths: Sequence[float] | None = None,
    loss: LossLog | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> Ranking:
    """Rank every (checkpoint, strength) of ``results`` by the composite score.

    ``strengths`` restricts the ranking to those evaluated strengths (ConfigError for one that
    was not evaluated). ``loss``: a training loss log to show beside the scores. The bootstrap
    is seeded: the same inputs give the same table.
    """
    weights = weights or DEFAULT_WEIGHTS
    if not isinstance(n_boot, int) or n_boot < 1:
        raise ConfigError(f"n_boot={n_boot!r} must be a positive integer", hint="use e.g. 1000")
    evidence = gather_evidence(results, strengths)
    contest = evidence.contest
    point = point_means(evidence)
    norm = fit_normalisation({m: point[m][contest] for m in METRICS})
    score = composite(point, norm, weights)
    boot = bootstrap_scores(evidence, norm, weights, n_boot, seed)

    table = evidence.candidates.drop(columns="is_base").copy()
    for m in METRICS:
        table[m] = point[m]
    table["score"] = score
    table["seeds"] = evidence.seeds
    # Rank by the point estimate; equal scores share a rank; earlier checkpoints break ties.
    contest_scores = pd.Series(np.round(score[contest], 12))
    ranks = contest_scores.rank(method="min", ascending=False).astype(int).to_numpy()
    order = np.lexsort((np.arange(len(contest)), ranks))
    best = int(order[0])
    summary = summarise(boot[:, contest], score[contest], best)
    table["rank"] = pd.array([pd.NA] * len(table), dtype="Int64")
    table.loc[contest, "rank"] = ranks
    for name in ("p_best", "win_vs_best"):
        table[name] = np.nan
        table.loc[contest, name] = getattr(summary, name)
    table["score_lo"], table["score_hi"] = interval(boot)
    table["tied"] = False
    table.loc[contest, "tied"] = summary.tied
    table["pareto"] = False
    front = front_metrics(weights, norm)
    table.loc[contest, "pareto"] = pareto_front(*(point[m][contest] for m in front)) if front else True

    paths = dict(
        zip(
            results.checkpoints["checkpoint"].astype(str),
            results.checkpoints["path"].astype(str),
            strict=True,
        )
    )
    table["path"] = [BASE if c == BASE else paths.get(c, c) for c in table["checkpoint"]]

    loss_spearman = None
    table["loss"], table["val_loss"] = np.nan, np.nan
    if loss is not None:
        ckpts = table.loc[contest, ["checkpoint", "epoch", "step"]].drop_duplicates("checkpoint")
        per_ckpt = checkpoint_loss(loss, ckpts).set_index("checkpoint")
        table["loss"] = table["checkpoint"].map(per_ckpt["loss"]).astype(float)
        table["val_loss"] = table["checkpoint"].map(per_ckpt["val_loss"]).astype(float)
        best_score = table.loc[contest].groupby("checkpoint", sort=False)["score"].max()
        loss_spearman = spearman(per_ckpt["loss"].reindex(best_score.index).to_numpy(), best_score.to_numpy())

    # Sort: by rank, then checkpoint order and strength; the base model last.
    table["_pos"] = np.arange(len(table))
    table["_base"] = table["checkpoint"] == BASE
    table = table.sort_values(["_base", "rank", "_pos"], kind="stable", na_position="last")
    boot = boot[:, table["_pos"].to_numpy()]
    table = table.drop(columns=["_pos", "_base"]).reset_index(drop=True)[list(TABLE_COLUMNS)]

    return Ranking(
        table=table,
        weights=weights,
        normalisation=norm,
        n_boot=n_boot,
        seed=seed,
        units=evidence.units["kind"].value_counts().to_dict(),
        loss_source=loss.source if loss is not None else None,
        loss_spearman=loss_spearman,
        boot_scores=boot,
        seeds_per_prompt=int(evidence.units.groupby("prompt_id").size().max()) if len(evidence.units) else 0,
        unmeasured=_unmeasured(point, contest, set(evidence.units["kind"])),
    )


def front_metrics(weights: Weights, norm: Normalisation) -> tuple[str, ...]:
    """The metrics of the Pareto front: those the score weighs (positive weight, measured and
    not constant). Empty when every weighed metric is constant: then every candidate is on it."""
    w = weights.as_dict()
    return tuple(m for m in norm.active if w[m] > 0)


def _unmeasured(point: dict[str, np.ndarray], contest: np.ndarray, kinds: set[str]) -> dict[str, str]:
    """The metrics no competing candidate has a value of, and why (see :class:`Ranking`)."""
    out = {}
    for m in METRICS:
        if np.isfinite(point[m][contest]).any():
            continue
        measured_on = (
            {k for k, measured in KIND_METRICS.items() if m in measured} if m != "diversity" else kinds
        )
        out[m] = "stale" if measured_on & kinds else "no prompts"
    return out
