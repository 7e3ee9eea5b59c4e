"""The search: candidate knob changes inside the trust region, scored pessimistically by the models.

A candidate moves at most `mode.max_moves` moves away from a point's current set. A move is
one knob, or one change set of knobs that only make sense together (a jitter buffer's depth
and its playout delay; FEC on/off and its share; the retransmission timer and count; the
three buffer sizes). Numeric knobs move by at most `mode.step` of their catalog range,
booleans flip, enums take another choice; every candidate is checked by the catalog
(`shared.knobs.validate` against the full current set), so bounds and cross-knob rules
always hold.

Candidates are drawn at random (seeded) with more weight on the knob categories that act on
the target (PRIOR); that only decides where to look, the models decide what works. The
models are cheap to evaluate in one vectorised call, so thousands of candidates are scored
at once instead of a sequential sampler (Optuna's TPE suggests one trial at a time; its
edge is on expensive objectives, not on a surrogate scored in batches).

Scoring is pessimistic (the opposite of an optimistic `mu - 3 sigma` bound): a candidate is
supported only when the lower end of its predicted improvement of the goal is above zero
(for a minimised target: the 90th percentile is below today's measured value) and the
pessimistic end of every constrained target stays inside its limit (a limit already broken
today must not get worse). Guarded targets (quality when no `minQuality` was given,
underflows under `preserveStability`) may not lose more than GUARD_TOLERANCE on the predicted
median. Among those, the best lower bound wins; fewer moves break ties.

A random draw moves knobs the goal does not need alongside those it does, so the winners are
pruned (`prune`): a move is dropped when the candidate without it is still supported with at
least `PRUNE_KEEP` of the pessimistic improvement. An operator then sees the smallest change
that does the job, and the verification judges the knobs that matter.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from controller.optimizer import features as F
from controller.optimizer.models import Prediction, QuantileModel
from controller.optimizer.proposal import Interval, Mode
from controller.optimizer.targets import GUARD_TOLERANCE, MAXIMIZE, MINIMIZE, Constraints, Target
from shared.knobs import KNOBS_BY_NAME, Knob, KnobType, validate

CHANGE_SETS: dict[str, tuple[str, ...]] = {
    "jitter_buffer": ("jitter_buffer_depth", "playout_delay"),
    "buffer_sizes": ("min_buffer_size", "buffer_size", "max_buffer_size"),
    "fec": ("fec_enabled", "fec_percentage"),
    "retransmission": ("retransmit_timeout", "max_retransmits"),
}
_IN_SET = {name: set_id for set_id, names in CHANGE_SETS.items() for name in names}
MOVES: tuple[tuple[str, ...], ...] = tuple(CHANGE_SETS.values()) + tuple(
    (k.name,) for k in F.SEARCHABLE if k.name not in _IN_SET)
_LONGEST_MOVE = max(len(m) for m in MOVES)

# Where to look first for each target (categories of the knob catalog).
PRIOR: dict[str, tuple[str, ...]] = {
    "latency.end_to_end": ("buffer", "network"),
    "underflows_per_s": ("buffer", "network"),
    "residual_loss": ("network", "buffer"),
    "quality": ("buffer", "network", "noise_reduction", "aec", "agc", "compression"),
}
_PRIOR_SHARE = 0.8          # of the draws; the rest from every move
PRUNE_KEEP = 0.9            # share of the pessimistic improvement a pruned candidate must keep


def move_weights(target: str) -> np.ndarray:
    cats = PRIOR.get(target)
    if not cats:
        return np.full(len(MOVES), 1.0 / len(MOVES))
    relevant = np.array([KNOBS_BY_NAME[m[0]].category in cats for m in MOVES], dtype=float)
    if not relevant.any():
        return np.full(len(MOVES), 1.0 / len(MOVES))
    w = _PRIOR_SHARE * relevant / relevant.sum() + (1 - _PRIOR_SHARE) / len(MOVES)
    return w / w.sum()


def sample_candidates(current: Mapping[str, Any], mode: Mode, count: int, rng: np.random.Generator,
                      weights: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Up to `count` distinct valid partial sets within the trust region around `current`."""
    weights = np.full(len(MOVES), 1.0 / len(MOVES)) if weights is None else weights
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    draws = count * 3
    # Weighted draws without replacement for every candidate at once (Gumbel top-k: the k largest of
    # log w + Gumbel noise are a weighted sample of k without replacement), not one rng.choice each.
    with np.errstate(divide="ignore"):
        keys = np.log(weights)[None, :] + rng.gumbel(size=(draws, len(MOVES)))
    order = np.argsort(-keys, axis=1)[:, :mode.max_moves]
    sizes = rng.integers(1, mode.max_moves + 1, size=draws)
    # One uniform in [0, 1) per knob a draw may move, drawn at once (an rng call per knob cost more than the rest)
    u = rng.random((draws, mode.max_moves * _LONGEST_MOVE)).tolist()
    step = mode.step
    for i in range(draws):
        if len(out) >= count:
            break
        partial: dict[str, Any] = {}
        ui = u[i]
        j = 0
        for m in order[i, :sizes[i]]:
            for name in MOVES[m]:
                value = _moved(KNOBS_BY_NAME[name], current[name], step, ui[j])
                j += 1
                if value != current[name]:
                    partial[name] = value
        partial = _repair(partial, current)
        if not partial:
            continue
        # Valid by construction (no validate() per draw: a third of the draw's cost): _moved keeps each
        # knob's type, bounds and choices, _repair the catalog's cross-knob rules (the tests hold both to it).
        key = repr(sorted(partial.items()))
        if key in seen:
            continue
        seen.add(key)
        out.append(partial)
    return out


def _moved(knob: Knob, value: Any, step: float, u: float) -> Any:
    """`value` moved by the uniform draw `u` in [0, 1): a flip, another choice, or up to `step` of the range."""
    if knob.type is KnobType.BOOL:
        return not value
    if knob.type is KnobType.ENUM:
        others = [c for c in knob.choices if c != value]
        return others[int(u * len(others))] if others else value
    lo, hi = float(knob.minimum), float(knob.maximum)
    new = min(hi, max(lo, float(value) + (2.0 * u - 1.0) * step * (hi - lo)))
    return int(round(new)) if knob.type is KnobType.INT else round(new, 3)


def _repair(partial: dict[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    """Keep a moved change set consistent with the catalog's cross-knob rules (depth >= playout; min <= size <= max)."""
    full = {**current, **partial}
    if "playout_delay" in partial or "jitter_buffer_depth" in partial:
        if full["playout_delay"] > full["jitter_buffer_depth"]:
            partial["jitter_buffer_depth"] = int(full["playout_delay"])
    if any(k in partial for k in ("min_buffer_size", "buffer_size", "max_buffer_size")):
        lo, size, hi = sorted((full["min_buffer_size"], full["buffer_size"], full["max_buffer_size"]))
        partial.update(min_buffer_size=lo, buffer_size=size, max_buffer_size=hi)
    return {k: v for k, v in partial.items() if v != current[k]}


@dataclass(frozen=True)
class Scored:
    partial: dict[str, Any]
    predicted: dict[str, Interval]
    confidence: float           # P(the goal is better than today's measured value)
    risk_probability: float     # P(some constraint breaks), the largest over the limits
    bound: float                # the pessimistic improvement of the goal (target units; > 0 when supported)


def score(models: Mapping[str, QuantileModel], goal: Target, constraints: Constraints,
          now: Mapping[str, float | None], current: Mapping[str, Any], candidates: Sequence[Mapping[str, Any]],
          context: np.ndarray, secondary: Target | None = None) -> list[Scored]:
    """The supported candidates, best first (empty when none is supported or a needed model is missing)."""
    needed = (goal, *constraints.targets, *((secondary,) if secondary else ()))
    if any(t.key not in models for t in needed) or not candidates:
        return []
    vectors = F.knob_vectors(current, [*candidates, {}])
    X = F.rows(vectors, context)
    preds = {t.key: models[t.key].predict(X) for t in needed}
    g = preds[goal.key]
    base = float(g.median[-1])                            # the model's own view of today's set
    today = now.get(goal.key)
    today = base if today is None else float(today)
    if goal.direction == MINIMIZE:
        bound = today - g.hi[:-1]
        better = g.median[:-1] < base
        confidence = g.probability_below(today)[:-1]
    else:
        bound = g.lo[:-1] - today
        better = g.median[:-1] > base
        confidence = 1.0 - g.probability_below(today)[:-1]
    ok = (bound > 0) & better
    risk = np.zeros(len(candidates))
    for limit in constraints.limits:
        p = preds[limit.target.key]
        end = p.hi[:-1] if limit.target.direction == MINIMIZE else p.lo[:-1]
        measured = now.get(limit.target.key)
        if measured is not None and limit.broken_by(measured):   # already broken: may not get worse
            allowed = end <= measured if limit.target.direction == MINIMIZE else end >= measured
            threshold = measured
        else:
            allowed = ~np.array([limit.broken_by(float(v)) for v in end])
            threshold = limit.bound
        ok &= allowed
        below = p.probability_below(threshold)[:-1]
        risk = np.maximum(risk, 1.0 - below if limit.target.direction == MINIMIZE else below)
    for target in constraints.guards:
        if target == goal:
            continue
        u = preds[target.key]
        measured = now.get(target.key)
        tolerance = GUARD_TOLERANCE[target.key]
        today_g = float(u.median[-1]) if measured is None else float(measured)
        ok &= (u.median[:-1] <= today_g + tolerance if target.direction == MINIMIZE
               else u.median[:-1] >= today_g - tolerance)
    order = _ranked(bound, ok, candidates, preds, secondary)
    return [Scored(dict(candidates[i]), {k: _interval(p, i) for k, p in preds.items()}, float(confidence[i]),
                   float(risk[i]), float(bound[i])) for i in order]


def _ranked(bound: np.ndarray, ok: np.ndarray, candidates: Sequence[Mapping[str, Any]],
            preds: Mapping[str, Prediction], secondary: Target | None) -> list[int]:
    idx = np.flatnonzero(ok)
    if secondary is not None:  # a small pull toward the secondary goal, never enough to outrank a clearly better bound
        s = preds[secondary.key].median[idx] * (1 if secondary.direction == MAXIMIZE else -1)
        spread = float(np.ptp(s)) or 1.0
        tie = 0.05 * (s - s.min()) / spread * (float(np.abs(bound[idx]).max()) if len(idx) else 0.0)
    else:
        tie = np.zeros(len(idx))
    keys = [(-(bound[i] + t), len(candidates[i])) for i, t in zip(idx, tie)]
    return [int(idx[j]) for j in sorted(range(len(idx)), key=lambda j: keys[j])]


def _interval(p: Prediction, i: int) -> Interval:
    return Interval(float(p.lo[i]), float(p.median[i]), float(p.hi[i]))



def _moves_of(partial: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """The moves (change sets or single knobs) a partial set is made of."""
    return list(dict.fromkeys(CHANGE_SETS[_IN_SET[k]] if k in _IN_SET else (k,) for k in partial))


def prune(models: Mapping[str, QuantileModel], goal: Target, constraints: Constraints,
          now: Mapping[str, float | None], current: Mapping[str, Any], chosen: Scored, context: np.ndarray,
          secondary: Target | None = None) -> Scored:
    """`chosen` without the moves it does not need: greedily, while a smaller candidate keeps its support."""
    best = chosen
    while True:
        moves = _moves_of(best.partial)
        if len(moves) <= 1:
            return best
        smaller = []
        for move in moves:
            partial = _repair({k: v for k, v in best.partial.items() if k not in move}, current)
            clean, problems = validate(partial, base=current) if partial else ({}, ["empty"])
            if not problems:
                smaller.append(clean)
        scored = [c for c in score(models, goal, constraints, now, current, smaller, context, secondary)
                  if c.bound >= PRUNE_KEEP * chosen.bound]
        if not scored:
            return best
        best = scored[0]


# The knob `_repair` raises to the playout delay (depth >= playout), possibly further than a step. The three
# buffer sizes are only sorted among their own moved values, so each stays held to the step.
_REPAIRED = frozenset({"jitter_buffer_depth"})


def in_trust_region(partial: Mapping[str, Any], current: Mapping[str, Any], mode: Mode) -> bool:
    """`partial` moves at most `mode.max_moves` moves, each numeric knob by at most `mode.step` of its range."""
    if len(_moves_of(partial)) > mode.max_moves:
        return False
    for name, value in partial.items():
        knob = KNOBS_BY_NAME[name]
        if knob.type in (KnobType.INT, KnobType.FLOAT) and name not in _REPAIRED and \
                abs(float(value) - float(current[name])) > mode.step * (float(knob.maximum) - float(knob.minimum)) + 1e-9:
            return False
    return True


def near(candidate: Mapping[str, Any], bad: Mapping[str, Any]) -> bool:
    """A candidate is in a bad region when it moves the same knobs the same way, within 10 % of their range."""
    if set(candidate) != set(bad):
        return False
    for name, value in candidate.items():
        knob = KNOBS_BY_NAME[name]
        if knob.type in (KnobType.BOOL, KnobType.ENUM):
            if value != bad[name]:
                return False
        elif abs(float(value) - float(bad[name])) > 0.1 * (float(knob.maximum) - float(knob.minimum)):
            return False
    return True
