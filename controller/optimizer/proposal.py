"""A proposed knob change for one point and what the optimizer expects of it: the contract between search and auto-tune.

The analysis engine (controller/optimizer/engine.py) makes Proposals; the analysis API turns
them into the plan's recommendations and auto-tune applies them one at a time. A Proposal is
only made when its pessimistic end is an improvement inside the constraints (docs/optimizer.md).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from controller.optimizer.targets import Constraints, Target
from shared.topology import Point


class Mode(str, Enum):
    """The trust region: how many knobs (or change sets) may move at once and how far."""
    CONSERVATIVE = "conservative"
    BALANCED = "balanced"
    AGGRESSIVE = "aggressive"

    @property
    def max_moves(self) -> int:
        return {"conservative": 1, "balanced": 3, "aggressive": 5}[self.value]

    @property
    def step(self) -> float:
        """The largest move of a numeric knob, as a fraction of its catalog range."""
        return {"conservative": 0.15, "balanced": 0.3, "aggressive": 0.6}[self.value]


@dataclass(frozen=True)
class Interval:
    """A predicted value: its median and calibrated lower and upper percentiles."""
    lo: float
    median: float
    hi: float

    def to_json(self) -> dict[str, float]:
        return {"p10": self.lo, "median": self.median, "p90": self.hi}


@dataclass(frozen=True)
class Proposal:
    point: Point
    knobs: dict[str, Any]                      # the knobs to change and their new values (a partial set)
    current: dict[str, Any]                    # those knobs' values now
    change_sets: dict[str, tuple[str, ...]]    # changeSetId -> knobs that must move together
    goal: str                                  # the target key it improves
    now: dict[str, float | None]               # measured value of each target key now (the before)
    predicted: dict[str, Interval]             # each target key under the proposal
    confidence: float                          # P(the goal improves), from the calibrated intervals
    risk_probability: float                    # P(some constraint breaks), from the calibrated intervals
    evidence: tuple[str, ...]                  # "replay" and/or "model"
    analysis_id: str | None = None
    replay_delta: dict[str, float] = field(default_factory=dict)   # candidate minus today's set, as replay measured
    base_version: int | None = None            # the desired version the proposal was made against
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def risk(self) -> str:
        return "low" if self.risk_probability < 0.05 else "medium" if self.risk_probability < 0.2 else "high"


class Proposer(Protocol):
    """What auto-tune needs of the analysis engine."""

    async def propose(self, point: Point, goal: Target, constraints: Constraints, mode: Mode,
                      avoid: Sequence[Mapping[str, Any]] = (), secondary: Target | None = None) -> Proposal | None:
        """The best supported change for `point`, or None when the models and replays support none.

        `avoid` holds knob regions (partial sets) rolled back on this point before: a candidate
        within a small distance of one of them is not proposed again."""
        ...
