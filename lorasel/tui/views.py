"""The data behind the detail and images panes, computed once per set of results.

Pure functions over :class:`~lorasel.results.Results` and a ranking's table; the widgets only
format what these return. :class:`ResultsIndex` is built when results arrive (not on every
cursor move), so moving through the table costs dictionary look-ups.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lorasel.rank import Candidate, Ranking
from lorasel.results import BASE, KIND_METRICS, KINDS, Results
from lorasel.tui.session import CandidateKey, candidate_key

#: The metric shown for each kind of prompt: the first it measures (in-domain prompts: fidelity).
KIND_METRIC = {kind: metrics[0] for kind, metrics in KIND_METRICS.items()}
SPARK_CHARS = "▁▂▃▄▅▆▇█"


@dataclass(frozen=True)
class PromptRow:
    """One prompt's measurement for one candidate, beside the base model's."""

    prompt_id: str
    kind: str
    prompt: str
    metric: str
    value: float
    base_value: float
    diversity: float


@dataclass(frozen=True)
class Unit:
    """A (prompt, seed) pair: every candidate was rendered on it with the same noise."""

    prompt_id: str
    seed_index: int
    kind: str
    prompt: str


class ResultsIndex:
    """Look-ups into one :class:`Results`: per-prompt metrics, render images, metadata."""

    def __init__(self, results: Results) -> None:
        self.results = results
        renders = results.renders.assign(
            checkpoint=results.renders["checkpoint"].astype(str),
            skey=results.renders["strength"].astype(float).round(6),
        )
        kind_order = {k: i for i, k in enumerate(KINDS)}
        prompts = renders.drop_duplicates("prompt_id")[["prompt_id", "kind", "prompt"]].copy()
        prompts["_k"] = prompts["kind"].map(kind_order).fillna(len(KINDS))
        prompts = prompts.sort_values(["_k", "prompt_id"], kind="stable")
        self.prompts = [(str(r.prompt_id), str(r.kind), str(r.prompt)) for r in prompts.itertuples()]
        seeds = sorted(int(s) for s in renders["seed_index"].unique())
        self.units = [Unit(pid, s, kind, prompt) for pid, kind, prompt in self.prompts for s in seeds]

        self._images: dict[tuple[str, float, str, int], str] = {
            (c, k, str(p), int(s)): str(img)
            for c, k, p, s, img in renders[
                ["checkpoint", "skey", "prompt_id", "seed_index", "image"]
            ].itertuples(index=False)
        }
        # Per (candidate, prompt): the mean over seeds of the metric the prompt's kind measures.
        metric_of = renders["kind"].map(KIND_METRIC)
        values = np.full(len(renders), np.nan)
        for metric in sorted(set(KIND_METRIC.values())):
            rows = (metric_of == metric).to_numpy()
            values[rows] = renders.loc[rows, metric].astype(float).to_numpy()
        per_prompt = (
            renders.assign(_value=values)
            .groupby(["checkpoint", "skey", "prompt_id"], sort=False)["_value"]
            .mean()
        )
        diversity = (
            results.diversity.assign(
                checkpoint=results.diversity["checkpoint"].astype(str),
                skey=results.diversity["strength"].astype(float).round(6),
            )
            .groupby(["checkpoint", "skey", "prompt_id"], sort=False)["diversity"]
            .mean()
        )
        self._value: dict[tuple[str, float, str], float] = per_prompt.to_dict()
        self._diversity: dict[tuple[str, float, str], float] = diversity.to_dict()
        self._metadata: dict[str, dict[str, Any]] = {}
        for row in results.checkpoints[["checkpoint", "metadata"]].itertuples(index=False):
            self._metadata[str(row.checkpoint)] = row.metadata if isinstance(row.metadata, dict) else {}

    def prompt_rows(self, key: CandidateKey) -> list[PromptRow]:
        """Every prompt's measurement for ``key``, in prompt-kind order, beside the base model's."""
        checkpoint, strength = key
        out = []
        for pid, kind, prompt in self.prompts:
            out.append(
                PromptRow(
                    prompt_id=pid,
                    kind=kind,
                    prompt=prompt,
                    metric=KIND_METRIC.get(kind, ""),
                    value=self._value.get((checkpoint, strength, pid), math.nan),
                    base_value=self._value.get((BASE, 0.0, pid), math.nan),
                    diversity=self._diversity.get((checkpoint, strength, pid), math.nan),
                )
            )
        return out

    def prompt_value(self, key: CandidateKey, prompt_id: str) -> float:
        """The mean over seeds of the metric ``prompt_id`` measures, for ``key`` (NaN if none)."""
        return self._value.get((key[0], key[1], prompt_id), math.nan)

    def image(self, key: CandidateKey, unit: Unit) -> str | None:
        """The render of ``key`` on ``unit`` (a path relative to the state folder), if any."""
        return self._images.get((key[0], key[1], unit.prompt_id, unit.seed_index))

    def metadata(self, checkpoint: str) -> list[tuple[str, str]]:
        """The checkpoint file's metadata as sorted (key, value) strings: untrusted text."""
        meta = self._metadata.get(checkpoint, {})
        return sorted((str(k), str(v)) for k, v in meta.items())


class RankingIndex:
    """Look-ups into one :class:`Ranking`, built once when it arrives: each row as a
    :class:`Candidate`, the pick, the score and loss series by epoch at each strength."""

    def __init__(self, ranking: Ranking) -> None:
        self.ranking = ranking
        table = ranking.table
        self.contest_size = int((table["checkpoint"] != BASE).sum())
        self.tied_count = int(table["tied"].sum())
        best = ranking.best
        self.best = candidate_key(best.checkpoint, best.strength)
        self.rows: dict[CandidateKey, Candidate] = {}
        self.win_vs_best: dict[CandidateKey, float] = {}
        for record in table.to_dict("records"):
            key = key_of(record)
            self.rows[key] = Candidate.from_row(record)  # indexes by column name: a dict will do
            self.win_vs_best[key] = (
                float(record["win_vs_best"]) if not pd.isna(record["win_vs_best"]) else math.nan
            )
        self._series: dict[float, pd.DataFrame] = {}

    def series(self, strength: float) -> pd.DataFrame:
        """:func:`epoch_series` at ``strength``, computed once."""
        key = round(float(strength), 6)
        if key not in self._series:
            self._series[key] = epoch_series(self.ranking.table, key)
        return self._series[key]


def epoch_series(table: pd.DataFrame, strength: float) -> pd.DataFrame:
    """``checkpoint, label, epoch, score, loss`` of every checkpoint at ``strength``, in training
    order (by epoch, then step; the ranking's order where neither is known)."""
    contest = table[table["checkpoint"] != BASE]
    rows = contest[np.isclose(contest["strength"].astype(float), strength, atol=1e-6)].copy()
    rows["_pos"] = np.arange(len(rows))
    rows = rows.sort_values(["epoch", "step", "_pos"], na_position="last", kind="stable")
    return rows[["checkpoint", "label", "epoch", "score", "loss"]].reset_index(drop=True)


def sparkline(values: list[float]) -> str:
    """One block character per value, scaled between the finite minimum and maximum."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return " " * len(values)
    low, high = min(finite), max(finite)
    out = []
    for v in values:
        if v is None or not math.isfinite(v):
            out.append(" ")
        elif high == low:
            out.append(SPARK_CHARS[len(SPARK_CHARS) // 2])
        else:
            out.append(SPARK_CHARS[round((v - low) / (high - low) * (len(SPARK_CHARS) - 1))])
    return "".join(out)


def key_of(row: pd.Series | dict) -> CandidateKey:
    return candidate_key(row["checkpoint"], row["strength"])
