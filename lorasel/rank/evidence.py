"""The evaluation as dense arrays: candidates × (prompt, seed) units, ready for the bootstrap.

A *candidate* is a (checkpoint, strength) pair; the base model is one more row (checkpoint
``"base"``, strength 0) that is shown but never competes. A *unit* is a (prompt_id,
seed_index) pair: every candidate was rendered on the same units with the same noise (common
random numbers), so comparing candidates unit by unit is a paired comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lorasel.errors import ConfigError, ResultsError
from lorasel.results import BASE, KINDS, Results, seeds_per_prompt

#: Metrics measured per render (per unit); diversity is measured per (candidate, prompt).
UNIT_METRICS = ("fidelity", "flexibility", "adherence", "preservation")

#: Strengths closer than this are the same strength (they come from float parsing).
STRENGTH_TOL = 1e-6


@dataclass(frozen=True)
class Evidence:
    """Per-unit metric values of every candidate.

    ``candidates``: one row per candidate (``checkpoint, label, epoch, step, strength,
    is_base``), in checkpoint order then strength. ``units``: one row per unit
    (``prompt_id, seed_index, kind``). ``per_unit[m]``: ``[candidates, units]`` array, NaN where
    the unit's kind does not measure ``m``. ``diversity``: ``[candidates, prompts]``.
    ``unit_prompt[u]``: the column of ``diversity`` that unit ``u`` belongs to. ``seeds``: per
    candidate, :func:`lorasel.results.seeds_per_prompt`.
    """

    candidates: pd.DataFrame
    units: pd.DataFrame
    prompts: tuple[str, ...]
    unit_prompt: np.ndarray
    per_unit: dict[str, np.ndarray]
    diversity: np.ndarray
    seeds: np.ndarray

    @property
    def contest(self) -> np.ndarray:
        """Indices of the candidates that compete (every candidate but the base model)."""
        return np.flatnonzero(~self.candidates["is_base"].to_numpy())

    @property
    def rendered(self) -> np.ndarray:
        """``[candidates, units]``: whether the candidate has a value on the unit (was rendered)."""
        out = np.zeros((len(self.candidates), len(self.units)), dtype=bool)
        for values in self.per_unit.values():
            out |= np.isfinite(values)
        return out

    @property
    def strata(self) -> np.ndarray:
        """Kind of each unit as an integer code: the bootstrap resamples within each kind.

        When some competing candidates were rendered on units others were not (a refinement),
        a kind's units are split further by which competitors have them, so every round keeps
        each group's size and the paired means (:func:`lorasel.rank.bootstrap.paired_means`)
        always have units of every group to compare on."""
        kinds = pd.Categorical(self.units["kind"]).codes.astype(np.int64)
        rendered = self.rendered[self.contest]
        if rendered.all() or not rendered.any():  # every competitor has every unit: the kinds
            return kinds
        groups, which = np.unique(rendered.T, axis=0, return_inverse=True)
        if len(groups) <= 1:
            return kinds
        # The group of units every competitor has is 0, so kinds keep their codes' order.
        order = np.argsort(~groups.all(axis=1), kind="stable")
        rank_of = np.empty(len(groups), dtype=np.int64)
        rank_of[order] = np.arange(len(groups))
        return kinds * len(groups) + rank_of[np.ravel(which)]

    def prompt_matrix(self) -> np.ndarray:
        """``[units, prompts]`` 0/1 matrix: which prompt each unit belongs to."""
        out = np.zeros((len(self.units), len(self.prompts)))
        out[np.arange(len(self.units)), self.unit_prompt] = 1.0
        return out


def _checkpoint_order(results: Results) -> list[str]:
    order = [c for c in results.checkpoints["checkpoint"].astype(str) if c != BASE]
    seen = set(order)
    for c in results.renders["checkpoint"].astype(str):
        if c != BASE and c not in seen:
            order.append(c)
            seen.add(c)
    return order


def select_strengths(evaluated: Sequence[float], wanted: Sequence[float] | None) -> list[float]:
    """The evaluated strengths to rank: all, or those asked for (each must have been evaluated)."""
    evaluated = sorted(set(float(s) for s in evaluated))
    if wanted is None:
        return evaluated
    chosen = []
    for s in wanted:
        match = [e for e in evaluated if abs(e - float(s)) <= STRENGTH_TOL]
        if not match:
            shown = ", ".join(f"{e:g}" for e in evaluated) or "none"
            raise ConfigError(
                f"strength {float(s):g} was not evaluated (evaluated: {shown})",
                hint="choose among the evaluated strengths, or run `lorasel eval PATH --strengths ...`",
            )
        chosen.append(match[0])
    return sorted(set(chosen))


def gather_evidence(results: Results, strengths: Sequence[float] | None = None) -> Evidence:
    """Arrange ``results`` as :class:`Evidence`, keeping only the given strengths (and the base)."""
    renders = results.renders
    if renders.empty:
        raise ResultsError("the results hold no renders", hint="run `lorasel eval PATH` first")
    is_base = renders["checkpoint"].astype(str) == BASE
    lora_strengths = renders.loc[~is_base, "strength"].astype(float)
    if lora_strengths.empty:
        raise ResultsError(
            "the results hold only the base model, no checkpoint", hint="run `lorasel eval PATH` on a run"
        )
    keep = np.array(select_strengths(lora_strengths.unique(), strengths))
    renders = renders.assign(checkpoint=renders["checkpoint"].astype(str))
    snapped, matched = _snap(renders["strength"].to_numpy(dtype=float), keep)
    base_rows = (renders["checkpoint"] == BASE).to_numpy()
    renders = renders.loc[base_rows | matched].assign(
        strength=np.where(base_rows, 0.0, snapped)[base_rows | matched]
    )

    order = {c: i for i, c in enumerate(_checkpoint_order(results))}
    info = renders.drop_duplicates(["checkpoint", "strength"])[
        ["checkpoint", "label", "epoch", "step", "strength"]
    ].copy()
    info["is_base"] = info["checkpoint"] == BASE
    info["_order"] = info["checkpoint"].map(lambda c: -1 if c == BASE else order[c])
    candidates = info.sort_values(["_order", "strength"], kind="stable").drop(columns="_order")
    candidates = candidates.reset_index(drop=True)

    units = (
        renders[["prompt_id", "seed_index", "kind"]]
        .drop_duplicates(["prompt_id", "seed_index"])
        .sort_values(["prompt_id", "seed_index"], kind="stable")
        .reset_index(drop=True)
    )
    unknown = sorted(set(units["kind"]) - set(KINDS))
    if unknown:
        raise ResultsError(
            f"the results hold prompts of unknown kind {unknown}",
            hint=f"kinds are {', '.join(KINDS)}; re-run `lorasel eval` with a valid prompt set",
        )
    prompts = tuple(sorted(set(units["prompt_id"].astype(str))))
    prompt_index = {p: i for i, p in enumerate(prompts)}
    unit_prompt = units["prompt_id"].astype(str).map(prompt_index).to_numpy(dtype=np.int64)

    cand_key = pd.MultiIndex.from_frame(candidates[["checkpoint", "strength"]])
    unit_key = pd.MultiIndex.from_frame(units[["prompt_id", "seed_index"]])
    ci = cand_key.get_indexer(pd.MultiIndex.from_frame(renders[["checkpoint", "strength"]]))
    ui = unit_key.get_indexer(pd.MultiIndex.from_frame(renders[["prompt_id", "seed_index"]]))

    shape = (len(candidates), len(units))
    per_unit = {m: _dense(ci, ui, renders[m].to_numpy(dtype=float), shape) for m in UNIT_METRICS}

    div = results.diversity.assign(checkpoint=results.diversity["checkpoint"].astype(str))
    snapped, matched = _snap(div["strength"].to_numpy(dtype=float), keep)
    div_base = (div["checkpoint"] == BASE).to_numpy()
    div = div.loc[div_base | matched].assign(strength=np.where(div_base, 0.0, snapped)[div_base | matched])
    dci = cand_key.get_indexer(pd.MultiIndex.from_frame(div[["checkpoint", "strength"]]))
    dpi = div["prompt_id"].astype(str).map(prompt_index).fillna(-1).to_numpy(dtype=np.int64)
    ok = (dci >= 0) & (dpi >= 0)
    diversity = _dense(
        dci[ok], dpi[ok], div["diversity"].to_numpy(dtype=float)[ok], (len(candidates), len(prompts))
    )
    seeds = seeds_per_prompt(renders).reindex(cand_key, fill_value=0).to_numpy(dtype=np.int64)
    return Evidence(
        seeds=seeds,
        candidates=candidates,
        units=units,
        prompts=prompts,
        unit_prompt=unit_prompt,
        per_unit=per_unit,
        diversity=diversity,
    )


def _snap(values: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each value's nearest kept strength, and whether it is within tolerance of it.

    Snapping makes float noise (0.7500000001) land on the same candidate.
    """
    if len(values) == 0:
        return values.copy(), np.zeros(0, dtype=bool)
    nearest = np.abs(values[:, None] - keep[None, :]).argmin(axis=1)
    snapped = keep[nearest]
    return snapped, np.abs(values - snapped) <= STRENGTH_TOL


def _dense(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Scatter values into a dense array, averaging duplicates; NaN where nothing was measured."""
    finite = np.isfinite(values) & (rows >= 0) & (cols >= 0)
    total = np.zeros(shape)
    count = np.zeros(shape)
    np.add.at(total, (rows[finite], cols[finite]), values[finite])
    np.add.at(count, (rows[finite], cols[finite]), 1.0)
    out = np.full(shape, np.nan)
    np.divide(total, count, out=out, where=count > 0)
    return out
