"""Rank (checkpoint, strength) pairs with confidence, and pick the best.

- :func:`rank` → :class:`Ranking`: metrics normalised within the run (``score``), composite
  score (``weights``), Pareto front on the scored metrics (``pareto``), paired bootstrap
  over (prompt, seed) units for P(best), score intervals and ties (``bootstrap``), training
  loss beside the score (``loss``).
- :func:`pick` → :class:`Pick`: the best candidate meeting optional minimums, as DESIGN.md's JSON.

Everything here is pure functions over frames except :func:`pick` (which reads the run) and
``lorasel.rank.inputs`` (the one door to the evaluator's store).
"""

from __future__ import annotations

from lorasel.rank.loss import LossLog, LossLogWarning, read_loss, spearman
from lorasel.rank.pareto import pareto_front
from lorasel.rank.picking import Pick, choose, pick
from lorasel.rank.ranking import Candidate, Ranking, rank
from lorasel.rank.weights import DEFAULT_WEIGHTS, Weights, parse_strengths

__all__ = [
    "DEFAULT_WEIGHTS",
    "Candidate",
    "LossLog",
    "LossLogWarning",
    "Pick",
    "Ranking",
    "Weights",
    "choose",
    "pareto_front",
    "parse_strengths",
    "pick",
    "rank",
    "read_loss",
    "spearman",
]
