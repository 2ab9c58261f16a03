"""Pick the best (checkpoint, strength): the answer scripts rely on (``lorasel pick --json``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from lorasel.errors import NoCandidateError
from lorasel.rank import inputs
from lorasel.rank.bootstrap import summarise
from lorasel.rank.loss import read_loss
from lorasel.rank.ranking import Candidate, Ranking, rank
from lorasel.rank.weights import Weights, check_minimum
from lorasel.results import BASE
from lorasel.rundir import RunDir


def _candidate_json(c: Candidate) -> dict[str, Any]:
    return {
        "checkpoint": c.path,
        "epoch": c.epoch,
        "step": c.step,
        "strength": c.strength,
        "score": c.score,
        "metrics": dict(c.metrics),
        "p_best": c.p_best,
        "seeds": c.seeds,
        "prompt_tag": c.prompt_tag,
    }


@dataclass(frozen=True, eq=False)
class Pick:
    """The chosen candidate, the next best, and the ranking they come from.

    ``eligible``: how many candidates met the minimums; ``best.p_best``, the ties
    (``tied_with``) and ``runner_up`` are among those (the same bootstrap rounds, restricted).
    Scores and ranks stay those of the whole run.
    """

    best: Candidate
    runner_up: Candidate | None
    ranking: Ranking
    eligible: int
    tied_with: tuple[Candidate, ...] = ()
    minimums: dict[str, float] = field(default_factory=dict)  # the minimums asked, by metric

    @property
    def lowest_loss(self) -> Candidate | None:
        return self.ranking.lowest_loss

    @property
    def embeddings(self) -> list[str]:
        """The textual-inversion embeddings the picked file bundles (read from its header): their
        names go in the prompt; A1111 loads them with the LoRA, ComfyUI and Forge do not."""
        from lorasel.checkpoints.read import bundled_embeddings

        return bundled_embeddings(self.best.path)

    def to_json(self) -> dict[str, Any]:
        """DESIGN.md's object: checkpoint, epoch, step, strength, score, metrics, p_best (each
        candidate also with ``seeds``, its seeds per prompt, and ``prompt_tag``, how A1111 and
        Forge apply it: ``<lora:FILE_STEM:STRENGTH>``), runner_up; then ``tied_with``: the
        other candidates that could be the best (the 95 % confidence set for the best, in rank
        order; empty when the pick stands alone), and ``warnings``: what the CLI prints on stderr
        about the evidence (weighed metrics unmeasured, or measured on too few units), each one
        line; empty when there is nothing to say; and ``embeddings`` (:attr:`embeddings`)."""
        out = _candidate_json(self.best)
        out["runner_up"] = _candidate_json(self.runner_up) if self.runner_up is not None else None
        out["tied_with"] = [_candidate_json(c) for c in self.tied_with]
        out["warnings"] = self.ranking.warnings()
        out["embeddings"] = self.embeddings
        return out


#: The metrics a pick can be held to a minimum of (CLIP cosines): ``--min-<name>``.
MINIMUM_METRICS = ("fidelity", "flexibility", "adherence")


def minimums_of(
    min_fidelity: float | None = None,
    min_flexibility: float | None = None,
    min_adherence: float | None = None,
) -> dict[str, float]:
    """The minimums asked, by metric, each checked (ConfigError outside [-1, 1])."""
    values = (min_fidelity, min_flexibility, min_adherence)
    checked = {name: check_minimum(name, value) for name, value in zip(MINIMUM_METRICS, values, strict=True)}
    return {name: value for name, value in checked.items() if value is not None}


def choose(
    ranking: Ranking,
    *,
    min_fidelity: float | None = None,
    min_flexibility: float | None = None,
    min_adherence: float | None = None,
) -> Pick:
    """The best candidate of ``ranking`` whose fidelity, flexibility and adherence meet the
    minimums given.

    Raises NoCandidateError (exit 3) when none does. The base model is never chosen.
    """
    asked = minimums_of(min_fidelity, min_flexibility, min_adherence)
    table = ranking.table
    ok = (table["checkpoint"] != BASE).to_numpy().copy()
    for name, value in asked.items():
        ok &= (table[name] >= value).fillna(False).to_numpy(dtype=bool)
    rows = np.flatnonzero(ok)
    if rows.size == 0:
        contest = table[table["checkpoint"] != BASE]
        best = ", ".join(f"best {name} {contest[name].max():.3f}" for name in asked)
        raise NoCandidateError(
            "no (checkpoint, strength) has "
            + " and ".join(f"{name} >= {value:g}" for name, value in asked.items())
            + f" ({best})",
            hint="lower "
            + " / ".join(f"--min-{name}" for name in asked)
            + ", or evaluate more checkpoints or strengths",
        )
    # P(best) and ties among the eligible candidates: the same bootstrap rounds, only their
    # columns competing (with no minimums this reproduces the table's values).
    summary = summarise(ranking.boot_scores[:, rows], table["score"].to_numpy(dtype=float)[rows], 0)
    eligible = [
        replace(
            Candidate.from_row(table.iloc[i]), p_best=float(summary.p_best[k]), tied=bool(summary.tied[k])
        )
        for k, i in enumerate(rows)
    ]
    return Pick(
        best=eligible[0],
        runner_up=eligible[1] if len(eligible) > 1 else None,
        ranking=ranking,
        eligible=len(eligible),
        tied_with=tuple(c for c in eligible[1:] if c.tied),
        minimums=asked,
    )


def pick(
    path: str | Path,
    *,
    min_fidelity: float | None = None,
    min_flexibility: float | None = None,
    min_adherence: float | None = None,
    strengths: Sequence[float] | None = None,
    weights: Weights | None = None,
    workdir: str | Path | None = None,
) -> Pick:
    """Rank the evaluated run at ``path`` and pick the best (checkpoint, strength).

    ``lorasel.pick`` is this function. Raises ResultsError when ``path`` was not evaluated,
    ConfigError for bad weights, strengths or minimums, NoCandidateError when nothing meets
    the minimums.
    """
    minimums_of(min_fidelity, min_flexibility, min_adherence)  # checked before loading anything
    results = inputs.load_inputs(path, workdir)
    ranking = rank(results, weights=weights, strengths=strengths, loss=read_loss(RunDir.at(path).root))
    return choose(
        ranking, min_fidelity=min_fidelity, min_flexibility=min_flexibility, min_adherence=min_adherence
    )
