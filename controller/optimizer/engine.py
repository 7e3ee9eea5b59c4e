"""The analysis engine: what a point measures now, what the models predict for candidates, and proposals.

For a point, `state` reads today's figures from metric history (the mean of each target over
the last `now_window_s`), its current desired knob set and the conditions of its newest
sample. `propose` draws candidates in the trust region (search.py), scores them with the
trained models and, when the point's agent is online, checks the best few by what-if replay
on the agent (baseline and candidates on the same recorded trace, so the difference is paired
and the noise small): a candidate that replay measures as not better is dropped, and one that
replay confirms carries both kinds of evidence. Replayed windows also become training rows.

Replay is also evidence on its own. The models learn across points and need many replays
before their pessimistic intervals support a change (docs/optimizer.md), but each replay
already measures candidates on the point's own trace against the set it runs, paired window
by window. So every replayed candidate's differences are remembered per point (for
`REPLAY_MEMORY_S`, under the version it was replayed against); when the models support
nothing, a remembered candidate inside the trust region that held on `REPLAY_TRACES` traces
(their effects combined: `combined_effect`), its goal improved beyond `REPLAY_SIGMAS`
standard errors with every constraint kept, is proposed with evidence `replay` (auto-tune
replays it once more first; an analysis, which answers without waiting for a replay, has its
replay check follow). Its interval and confidence come from the combined differences: today's
value plus the mean difference, +-1.28 standard errors for the 10th-90th percentiles (normal
approximation). Errors come from 5 s block means, not windows as if independent.
"""
from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from controller.clock import Clock
from controller.optimizer import features as F
from controller.optimizer.dataset import RowBank, replay_rows
from controller.optimizer.proposal import Interval, Mode, Proposal
from controller.optimizer.replay import ReplayAnswer, ReplayClient, ReplayUnavailable
from controller.optimizer.search import Scored, in_trust_region, near
from controller.optimizer.search_pool import SearchPool, SearchRequest, SearchTimeout
from controller.optimizer.targets import (
    GUARD_TOLERANCE,
    LATENCY,
    MINIMIZE,
    QUALITY,
    RESIDUAL_LOSS,
    TARGETS,
    UNDERFLOWS,
    Constraints,
    Target,
    columns_for,
    metric_index,
    target_series,
)
from controller.optimizer.trainer import ModelSet
from controller.optimizer.verify import window_stats
from shared.knobs import KNOBS_BY_NAME, Acts
from shared.topology import Point

log = logging.getLogger("tpmon.controller.optimizer")

REPLAY_SIGMAS = 2.0    # a replayed difference counts when it is this many standard errors from zero
REPLAY_TRACES = 2      # traces a candidate must have been replayed on before replay alone supports it
REPLAY_MEMORY_S = 900.0  # replayed candidates are evidence for a point this long (under the same version)
Z80 = 1.2816           # the 10th and 90th percentiles of a normal, in standard deviations
_REPLAY_KEYS = (LATENCY.key, QUALITY.key, RESIDUAL_LOSS.key, UNDERFLOWS.key)
# Where a target can be at all: a replayed difference's normal interval is clipped to it.
_PHYSICAL = {LATENCY.key: (0.0, math.inf), QUALITY.key: (0.0, 1.0), RESIDUAL_LOSS.key: (0.0, 1.0),
             UNDERFLOWS.key: (0.0, math.inf)}


@dataclass(frozen=True)
class Replayed:
    """A candidate replayed on a point's trace against the set the point ran: the paired differences measured."""
    at: float                                 # wall time of the replay
    base_version: int                         # the desired version it was replayed against
    partial: dict[str, Any]                   # the knobs it changed
    effect: dict[str, tuple[float, float]]    # target -> (mean difference to today's set, standard error)
    send_replayed: bool
    traces: int = 1                           # traces the effect was measured on (combined_effect)


@dataclass
class PointNow:
    """What a point runs and measures now."""
    point: Point
    knobs: dict[str, Any]
    version: int
    now: dict[str, float | None]          # target key -> mean over the last now_window_s (None: no value)
    samples: int                          # samples that window held
    context: np.ndarray                   # the non-knob features under today's conditions
    conditions: Mapping[str, Any] = field(default_factory=dict)
    pending: bool = False                 # the agent does not run the desired version yet


@dataclass
class Outcome:
    """What propose found for one point: a Proposal, or why there is none."""
    point: Point
    proposal: Proposal | None
    reason: str | None = None
    candidates: int = 0                   # candidates scored
    supported: int = 0                    # of them supported by the models


class AnalysisEngine:
    def __init__(self, history: Any, knob_sync: Any, live: Any, models: ModelSet, bank: RowBank,
                 replay: ReplayClient | None, clock: Clock, *, now_window_s: float = 60.0, window_s: float = 3.0,
                 candidates: int = 1000, replay_top: int = 3, replay_timeout_s: float = 60.0, seed: int = 0,
                 search_pool: SearchPool | None = None) -> None:
        self.history, self.knob_sync, self.live = history, knob_sync, live
        self.models, self.bank, self.replay, self.clock = models, bank, replay, clock
        self.now_window_s, self.window_s = now_window_s, window_s
        self.candidates, self.replay_top, self.replay_timeout_s = candidates, replay_top, replay_timeout_s
        self.rng = np.random.default_rng(seed)
        self.search_pool = search_pool or SearchPool(in_process=True)
        self.replayed: dict[Point, deque[Replayed]] = {}
        self.last_replay_error = ""

    # --- today's figures ------------------------------------------------------------------

    async def state(self, point: Point, keys: Sequence[str]) -> PointNow:
        desired = self.knob_sync.store.get(point)
        end = self.clock.wall()
        await self.history.flush()
        wanted = tuple(dict.fromkeys(list(keys) + ["performance.cpu_usage"]))
        columns = columns_for(wanted)
        rows = await self.history.query(point, "raw", int((end - self.now_window_s) * 1000), int(end * 1000 + 1),
                                        columns)
        series = target_series(rows.ts / 1000.0, {c: rows.values[:, i] for i, c in enumerate(columns)}, wanted)
        now = {k: _mean(series[k]) for k in wanted}
        live = self.live.points[point]
        sibling = self.live.points[Point(point.station, "4444" if point.extension == "3333" else "3333")]
        context = F.context_vector(live.conditions, sibling.conditions, now.get("performance.cpu_usage"), end,
                                   replayed=False)
        return PointNow(point, dict(desired.knobs), desired.version, now, len(rows.ts), context, live.conditions,
                        pending=live.applied_version != desired.version)

    # --- proposals -------------------------------------------------------------------------

    async def propose(self, point: Point, goal: Target, constraints: Constraints, mode: Mode,
                      avoid: Sequence[Mapping[str, Any]] = (), secondary: Target | None = None,
                      use_replay: bool = True) -> Proposal | None:
        """auto-tune's entry (the Proposer protocol): the best supported change, or None."""
        return (await self.outcome(point, goal, constraints, mode, avoid, secondary, use_replay)).proposal

    async def outcome(self, point: Point, goal: Target, constraints: Constraints, mode: Mode,
                      avoid: Sequence[Mapping[str, Any]] = (), secondary: Target | None = None,
                      use_replay: bool = True) -> Outcome:
        keys = [goal.key, *(t.key for t in constraints.targets), *((secondary.key,) if secondary else ())]
        missing = [k for k in dict.fromkeys(keys) if k not in self.models.models]
        if missing:
            why = "; ".join(f"{k}: {self.models.last_run.missing.get(k, 'not trained yet')}" for k in missing)
            return Outcome(point, None, f"too little data: no model of {why}")
        now = await self.state(point, keys)
        if now.samples < 10:
            return Outcome(point, None, f"too few recent samples ({now.samples} in the last {self.now_window_s:.0f} s)")
        if now.pending:
            return Outcome(point, None, "a knob change is still pending on the agent")
        try:
            found = await self.search_pool.search(self.models.models, SearchRequest(
                goal, constraints, dict(now.now), dict(now.knobs), now.context, mode, self.candidates,
                int(self.rng.integers(2**31)), tuple(dict(a) for a in avoid), secondary, self.replay_top))
        except SearchTimeout as exc:
            return Outcome(point, None, str(exc))
        drawn, scored = found.drawn, found.best
        if not scored:
            return await self._from_replays(now, goal, constraints, mode, avoid, use_replay, drawn)
        chosen, delta, evidence = scored[0], {}, ("model",)
        if use_replay and self.replay is not None and self.live.agent_online(point.station):
            verdicts = await self.replay_check(now, [c.partial for c in scored[: self.replay_top]], goal, constraints)
            if verdicts is None:
                return Outcome(point, None, self._unchecked(), drawn, found.supported)
            confirmed = [(c, v) for c, v in zip(scored, verdicts) if v.status != "refuted"]
            if not confirmed:
                return Outcome(point, None, "replay on the agent measured none of the models' best candidates "
                                            "as better", drawn, found.supported)
            chosen, verdict = confirmed[0]
            delta = verdict.measured
            evidence = ("replay", "model") if verdict.status == "confirmed" else ("model",)
        return Outcome(point, self._proposal(now, goal, chosen, delta, evidence), None, drawn, found.supported)

    async def _from_replays(self, now: PointNow, goal: Target, constraints: Constraints, mode: Mode,
                            avoid: Sequence[Mapping[str, Any]], use_replay: bool, drawn: int) -> Outcome:
        """When the models support nothing: the best candidate the point's own replays measured better, re-checked."""
        none = (f"no candidate whose pessimistic prediction improves {goal.key} inside the constraints, and no "
                "replay of this point measured one")
        checkable = use_replay and self.replay is not None and self.live.agent_online(now.point.station)
        # One trace is one stretch of the path: a candidate is proposed on replay evidence once it held on two.
        # A check can add the second now; an analysis (no check) needs two already (the learner re-measures
        # promising candidates on fresh traces for that).
        found = self.replay_supported(now, goal, constraints, mode, avoid, traces=1 if checkable else REPLAY_TRACES)
        if found is None:
            return Outcome(now.point, None, none, drawn, 0)
        partial, effect = found.partial, found.effect
        if checkable:
            verdicts = await self.replay_check(now, [partial], goal, constraints)   # a fresh trace
            if verdicts is None:
                return Outcome(now.point, None, self._unchecked(), drawn, 0)
            held = [r for r in self.remembered(now, mode, avoid, REPLAY_TRACES) if r.partial == partial]
            combined = held[0] if held else None   # its traces with the fresh one, combined
            if (verdicts[0].status != "confirmed" or combined is None or _verdict(
                    partial, combined.send_replayed, combined.effect, goal, constraints, now.now).status != "confirmed"):
                memory = self.replayed.get(now.point, deque())   # not asked again on the strength of the others
                self.replayed[now.point] = deque((r for r in memory if r.partial != partial), memory.maxlen)
                return Outcome(now.point, None, f"a replayed candidate did not hold on a fresh trace: "
                                                f"{verdicts[0].reason}", drawn, 0)
            effect = combined.effect
        proposal = self._replay_proposal(now, goal, constraints, partial, effect)
        return Outcome(now.point, proposal, None, drawn, 0)

    def replay_supported(self, now: PointNow, goal: Target, constraints: Constraints, mode: Mode,
                         avoid: Sequence[Mapping[str, Any]] = (), traces: int = REPLAY_TRACES) -> Replayed | None:
        """The remembered candidate of `now.point` that best improves `goal` beyond the noise, constraints kept,
        measured on at least `traces` traces (their effects combined: `combined_effect`)."""
        best, best_gain = None, 0.0
        for r in self.remembered(now, mode, avoid, traces):
            verdict = _verdict(r.partial, r.send_replayed, r.effect, goal, constraints, now.now)
            if verdict.status != "confirmed":
                continue
            mean, _ = r.effect[goal.key]
            gain = -mean if goal.direction == MINIMIZE else mean
            if gain > best_gain:
                best, best_gain = r, gain
        return best

    def remembered(self, now: PointNow, mode: Mode | None = None, avoid: Sequence[Mapping[str, Any]] = (),
                   traces: int = 1) -> list[Replayed]:
        """The point's remembered candidates against today's version (inside `mode`'s trust region, away from
        `avoid`), one per candidate with the effects of its traces combined, those of at least `traces` traces."""
        cutoff = self.clock.wall() - REPLAY_MEMORY_S
        groups: dict[str, list[Replayed]] = {}
        for r in self.replayed.get(now.point, ()):
            if r.at < cutoff or r.base_version != now.version:
                continue
            if mode is not None and not in_trust_region(r.partial, now.knobs, mode):
                continue
            if any(near(r.partial, bad) for bad in avoid):
                continue
            groups.setdefault(repr(sorted(r.partial.items())), []).append(r)
        return [Replayed(max(r.at for r in rs), now.version, rs[0].partial, combined_effect([r.effect for r in rs]),
                         all(r.send_replayed for r in rs), len(rs))
                for rs in groups.values() if len(rs) >= traces]

    def _unchecked(self) -> str:
        # A change an online agent could check is never made unchecked: the check on the point's own trace is
        # the only paired evidence there is, and the models generalise from other points and times.
        return (f"replay on the agent could not check the candidates ({self.last_replay_error}); nothing is changed "
                "without that check while the agent is online")

    def _replay_proposal(self, now: PointNow, goal: Target, constraints: Constraints, partial: Mapping[str, Any],
                         effect: Mapping[str, tuple[float, float]]) -> Proposal:
        predicted = {}
        for key, (mean, se) in effect.items():
            today = now.now.get(key)
            if today is None or math.isnan(mean):
                continue
            spread = Z80 * (se if math.isfinite(se) else 0.0)
            lo, hi = _PHYSICAL.get(key, (-math.inf, math.inf))
            predicted[key] = Interval(*(min(hi, max(lo, v)) for v in (today + mean - spread, today + mean,
                                                                       today + mean + spread)))
        mean, se = effect[goal.key]
        gain = -mean if goal.direction == MINIMIZE else mean
        confidence = _normal_cdf(gain / se) if se > 0 else 1.0
        risk = 0.0
        for limit in constraints.limits:
            m, e = effect.get(limit.target.key, (math.nan, math.nan))
            today = now.now.get(limit.target.key)
            if today is None or math.isnan(m) or not e > 0:
                continue
            below = _normal_cdf((limit.bound - (today + m)) / e)
            risk = max(risk, 1.0 - below if limit.target.direction == MINIMIZE else below)
        set_id = f"cs_{now.point.station}_{now.point.extension}_{now.version + 1}"
        return Proposal(now.point, dict(partial), {k: now.knobs[k] for k in partial}, {set_id: tuple(partial)},
                        goal.key, dict(now.now), predicted, confidence, risk, ("replay",),
                        replay_delta={k: v[0] for k, v in effect.items() if not math.isnan(v[0])},
                        base_version=now.version)

    def _proposal(self, now: PointNow, goal: Target, chosen: Scored, delta: dict[str, float],
                  evidence: tuple[str, ...]) -> Proposal:
        set_id = f"cs_{now.point.station}_{now.point.extension}_{now.version + 1}"
        return Proposal(now.point, chosen.partial, {k: now.knobs[k] for k in chosen.partial},
                        {set_id: tuple(chosen.partial)}, goal.key, dict(now.now), chosen.predicted,
                        chosen.confidence, chosen.risk_probability, evidence, replay_delta=delta,
                        base_version=now.version)

    async def replay_check(self, now: PointNow, partials: Sequence[Mapping[str, Any]], goal: Target,
                           constraints: Constraints) -> list[ReplayVerdict] | None:
        """Replay today's set and each partial set on the agent's trace: a verdict per partial, or None
        when replay could not answer (the models' word then stands alone). The windows become rows."""
        sets = [now.knobs] + [{**now.knobs, **c} for c in partials]
        try:
            answer = await self.replay.evaluate(now.point, sets, self.replay_timeout_s)
        except ReplayUnavailable as exc:
            log.info("replay of %s unavailable: %s", now.point.id, exc)
            self.last_replay_error = str(exc)
            return None
        self.keep_replay(answer, now)
        keys = list(dict.fromkeys([goal.key, *(t.key for t in constraints.targets), *_REPLAY_KEYS]))
        effects = replay_effects(answer, keys)
        return [_verdict(partial, result.send_replayed, effect, goal, constraints, now.now)
                for partial, result, effect in zip(partials, answer.results[1:], effects[1:])]

    def keep_replay(self, answer: ReplayAnswer, now: PointNow) -> None:
        sibling = self.live.points[Point(now.point.station, "4444" if now.point.extension == "3333" else "3333")]
        block = replay_rows(now.point, [r.knobs for r in answer.results], [r.windows for r in answer.results],
                            answer.window_s, answer.conditions, sibling.conditions, now.now.get("performance.cpu_usage"),
                            self.clock.wall(), self.window_s)
        self.bank.add(block)
        memory = self.replayed.setdefault(now.point, deque(maxlen=300))
        base = answer.results[0].knobs
        for result, effect in zip(answer.results[1:], replay_effects(answer, _REPLAY_KEYS)[1:]):
            partial = {k: v for k, v in result.knobs.items() if base.get(k) != v}
            if partial:
                memory.append(Replayed(self.clock.wall(), now.version, partial, effect, result.send_replayed))

    # --- prediction --------------------------------------------------------------------------

    async def predict(self, point: Point, partial: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
        """Today's value, the predicted median and interval, and the confidence of each target under `partial`."""
        now = await self.state(point, keys)
        X = F.rows(np.stack([F.knob_vector({**now.knobs, **partial}), F.knob_vector(now.knobs)]), now.context)
        out: dict[str, Any] = {}
        for key in keys:
            model = self.models.models.get(key)
            if model is None:
                out[key] = {"current": now.now.get(key), "predicted": None,
                            "reason": self.models.last_run.missing.get(key, "no model trained yet")}
                continue
            p = model.predict(X)
            current = now.now.get(key)
            target = TARGETS[key]
            ref = float(p.median[1]) if current is None else current
            below = float(p.probability_below(ref)[0])
            better = below if target.direction == MINIMIZE else 1.0 - below
            out[key] = {"current": current, "predicted": float(p.median[0]),
                        "interval": Interval(float(p.lo[0]), float(p.median[0]), float(p.hi[0])).to_json(),
                        "confidence": round(better, 3), "unit": target.unit,
                        "coverage": model.report.nominal_coverage}
        return out


def replay_effects(answer: ReplayAnswer, keys: Sequence[str]) -> list[dict[str, tuple[float, float]]]:
    """Per replayed set, each target's mean difference to the first set (today's) and its standard error.

    Windows are paired (the same trace), so the error is that of the differences; but neighbouring
    windows are alike (underflows come in bursts that span several), so it is taken from the
    means of 5-second blocks of them, as verification does, not from the windows as if independent.
    With 3-4 blocks per trace that error is itself rough, which is one reason replay alone needs two
    traces (combined_effect)."""
    keys = list(dict.fromkeys(keys))
    columns = columns_for(keys)
    per_set = []
    for result in answer.results:
        w = result.windows
        ts = answer.window_s * np.arange(len(w))
        per_set.append(target_series(ts, {c: w[:, metric_index(c)] for c in columns}, keys))
    base = per_set[0]
    out = []
    for series in per_set:
        effect = {}
        for k in keys:
            n = min(len(series[k]), len(base[k]))
            d = series[k][:n] - base[k][:n]
            stats = window_stats(ts[:n], d, 0.0)   # verification's block-mean error, on the differences
            effect[k] = ((stats.mean, stats.se if stats.se is not None else math.nan) if stats.n > 1
                         else (math.nan, math.nan))
        out.append(effect)
    return out


def combined_effect(effects: Sequence[Mapping[str, tuple[float, float]]]) -> dict[str, tuple[float, float]]:
    """One candidate's effects on several traces as one: the mean of the traces' means, and the larger of
    the error their own errors give and the error their spread gives (traces of one path differ more than
    the windows of one trace say; a single trace keeps its own)."""
    if len(effects) == 1:
        return dict(effects[0])
    out: dict[str, tuple[float, float]] = {}
    for key in set().union(*effects):
        pairs = [e[key] for e in effects if key in e and not math.isnan(e[key][0])]
        if not pairs:
            out[key] = (math.nan, math.nan)
            continue
        means = np.array([m for m, _ in pairs])
        n = len(means)
        within = math.sqrt(sum(se * se for _, se in pairs if math.isfinite(se))) / n
        between = float(means.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
        out[key] = (float(means.mean()), max(within, between) if math.isfinite(between) else within)
    return out


@dataclass(frozen=True)
class ReplayVerdict:
    status: str                        # confirmed | refuted | unanswerable (send knobs of a real source)
    measured: dict[str, float]         # target -> replayed mean difference to today's set
    reason: str = ""
    effect: dict[str, tuple[float, float]] = field(default_factory=dict)   # target -> (mean, standard error)


def _verdict(partial: Mapping[str, Any], send_replayed: bool, effect: Mapping[str, tuple[float, float]], goal: Target,
             constraints: Constraints, today: Mapping[str, float | None]) -> ReplayVerdict:
    measured = {k: v[0] for k, v in effect.items() if not math.isnan(v[0])}
    effect = dict(effect)
    if not send_replayed and any(KNOBS_BY_NAME[k].acts is Acts.SEND for k in partial):
        return ReplayVerdict("unanswerable", {}, "send knobs cannot be replayed from a real source's packets")
    mean, se = effect.get(goal.key, (math.nan, math.nan))
    gain = -mean if goal.direction == MINIMIZE else mean
    if not gain > max(REPLAY_SIGMAS * se, 0.0):
        return ReplayVerdict("refuted", measured, f"replay measured {goal.key} {mean:+.4g} (standard error {se:.2g})",
                             effect)
    broken = [lim.name for lim in constraints.limits if _breaks(lim, today.get(lim.target.key), effect.get(lim.target.key))]
    broken += [f"{t.key} (may not get worse)" for t in constraints.guards
               if t != goal and _worsens(t, effect.get(t.key))]
    if broken:
        return ReplayVerdict("refuted", measured, f"replay breaks {', '.join(broken)}", effect)
    return ReplayVerdict("confirmed", measured, f"replay measured {goal.key} {mean:+.4g} (standard error {se:.2g})",
                         effect)


def _normal_cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def _breaks(limit: Any, today: float | None, effect: tuple[float, float] | None) -> bool:
    """Would today's value moved by the replayed difference break the limit (or, broken already, worsen)?"""
    if today is None or effect is None or math.isnan(effect[0]):
        return False
    after = today + effect[0]
    if limit.broken_by(today):
        return (after > today) if limit.target.direction == MINIMIZE else (after < today)
    return limit.broken_by(after)


def _worsens(target: Target, effect: tuple[float, float] | None) -> bool:
    """Does the replayed difference take a guarded target worse than its tolerance allows?"""
    if effect is None or math.isnan(effect[0]):
        return False
    loss = effect[0] if target.direction == MINIMIZE else -effect[0]
    return loss > GUARD_TOLERANCE[target.key]


def _mean(column: np.ndarray) -> float | None:
    present = column[~np.isnan(column)]
    return float(present.mean()) if len(present) else None

