"""Auto-tune on the demo's degraded stations, measured live from their own history: does it help, does it harm?

Real processes: a controller with the demo's 12-station topology and agents for the demo's
three degraded stations (4 bursty loss, 7 high jitter, 11 long noisy path with echo; their
conditions from tpmon/demo_profiles.py) and two healthy ones (1 and 2), every agent starting
from the defaults a new station runs. The other seven stations stay offline: twelve agents
plus replays and training do not fit on a 2-core machine without the points going stale,
and an offline point is neither explored nor tuned.

The run:
1. warm-up, then the before-window (`window_s`) at the defaults;
2. auto-tune enabled per degraded station with its own goal and constraints (one POST with a
   scope per station: both extensions), a short schedule (evaluation every 30 s, cooldown
   60 s), for `tune_s`; the controller learns meanwhile (a replay every `learn_interval_s`,
   retraining every `retrain_s`), so the run includes the learning a new site goes through;
   every 30 s an analysis of each degraded station is asked for (`POST /optimize`), its
   wall time and `estimatedTime` kept (the models exist by then or it says so);
3. auto-tune disabled; a change still under verification is judged (bounded wait);
4. the after-window (`window_s`) on whatever configuration was kept, at the same phase of the
   simulated paths' drift as the before-window: the demo's conditions wander on a 300 s sine
   (delay, jitter and loss), which alone moved station 4's residual loss from 0.083 to 0.035
   and station 11's quality from 0.88 to 0.94 between unaligned windows with no change made.
   So the after-window starts a whole number of drift periods after the before-window.

Figures, per point, from raw history through the REST API with the controller's target
definitions (controller/optimizer/targets.py): the goal's metric before and after, its
improvement, the constraints checked on the after-window (violations in the kept
configuration), the changes made, kept and rolled back (from auto-tune's status, polled), the
error of each judged change's predicted median against what its after-window measured, and
the healthy points' latency, quality, residual loss and underflows, judged with the same
noise-aware rule auto-tune uses (a difference counts only beyond two standard errors of
5-second block means). Goals (the issue's): >= 20 % average improvement on the degraded
points' targets, 0 violations, 0 kept changes measured worse, healthy points not worse, an
analysis answered within 250 ms once trained.
"""
from __future__ import annotations

import math
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np

from bench.children import check_running
from controller.optimizer.targets import TARGETS, columns_for, constraints_of, target_series
from controller.optimizer.verify import WindowStats, judge, window_stats
from shared.topology import EXTENSIONS, Point
from tests.procs import Proc, get_json, post_json, start_agent, start_controller, wait_until
from tpmon.demo_profiles import station_profile

# Station -> (auto-tune goal, the goal's target key, constraints as the plan's auto-tune body takes them).
# The latency ceilings leave each station some 100 ms above what it measures at the defaults
# (station 7's path alone measures ~240-275 ms of network delay).
GOALS: dict[int, tuple[str, str, dict[str, float]]] = {
    4: ("minimize_packet_loss", "residual_loss", {"maxLatencyMs": 250.0}),
    7: ("minimize_underflows", "underflows_per_s", {"maxLatencyMs": 450.0, "maxPacketLoss": 0.02}),
    11: ("maximize_quality", "quality", {"maxLatencyMs": 350.0, "maxPacketLoss": 0.02}),
}
HEALTHY_TARGETS = ("latency.end_to_end", "quality", "residual_loss", "underflows_per_s")
ANALYSIS_GOAL_MS = 250.0
IMPROVEMENT_GOAL = 0.20


@dataclass(frozen=True)
class Sizes:
    degraded: tuple[int, ...]
    healthy: tuple[int, ...]
    warmup_s: float
    window_s: float          # before- and after-windows
    tune_s: float            # auto-tune enabled
    settle_timeout_s: float  # the longest wait for verifications in flight after disabling
    evaluation_ms: int
    cooldown_ms: int
    learn_interval_s: int
    retrain_s: int
    quiet_analyses: int = 10   # per degraded station, after the run with learning paused
    align_drift: bool = True  # the after-window at the before-window's drift phase (a smoke run cannot wait 300 s)


FULL = Sizes(degraded=(4, 7, 11), healthy=(1, 2), warmup_s=20, window_s=120, tune_s=600, settle_timeout_s=180,
             evaluation_ms=30_000, cooldown_ms=60_000, learn_interval_s=2, retrain_s=30)
SMOKE = Sizes(degraded=(7,), healthy=(), warmup_s=2, window_s=5, tune_s=12, settle_timeout_s=30,
              evaluation_ms=10_000, cooldown_ms=0, learn_interval_s=2, retrain_s=10, quiet_analyses=1,
              align_drift=False)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def measure(base: str, point: Point, start: float, end: float, keys: tuple[str, ...]) -> dict[str, WindowStats]:
    """Each target's window figure over [start, end) from the point's raw history (every page)."""
    columns = columns_for(keys)
    query = {"station": point.station, "extension": point.extension, "resolution": "raw", "limit": 1000,
             "from": _iso(start), "to": _iso(end), "fields": ",".join(columns)}
    points: list[dict[str, Any]] = []
    url = f"{base}/api/v1/snapshots/history?{urlencode(query)}"
    while True:
        status, doc = get_json(url)
        if status != 200:
            raise RuntimeError(f"history of {point.id}: {status} {doc}")
        points += doc["points"]
        if not doc["nextCursor"]:
            break
        url = f"{base}/api/v1/snapshots/history?{urlencode({**query, 'cursor': doc['nextCursor']})}"
    ts = np.array([datetime.fromisoformat(p["timestamp"].replace("Z", "+00:00")).timestamp() for p in points])

    def column(key: str) -> np.ndarray:
        category, name = key.split(".", 1)
        return np.array([np.nan if (v := p["metrics"][category][name]) is None else float(v) for p in points])

    series = target_series(ts, {c: column(c) for c in columns}, keys)
    return {k: window_stats(ts, series[k], start) for k in keys}


def _auto_tune(base: str, station: int, sizes: Sizes, enabled: bool = True) -> None:
    goal, _, constraints = GOALS[station]
    status, doc = post_json(f"{base}/api/v1/optimize/auto-tune", {
        "enabled": enabled, "mode": "balanced", "targets": {"primaryGoal": goal, "constraints": constraints},
        "schedule": {"evaluationInterval": sizes.evaluation_ms, "adjustmentCooldown": sizes.cooldown_ms,
                     "maxAdjustmentsPerHour": 30},
        "scope": {"stations": [f"Station-{station}"], "extensions": list(EXTENSIONS)}})
    if status != 200:
        raise RuntimeError(f"auto-tune for Station-{station}: {status} {doc}")


def _analyse(base: str, station: int) -> tuple[float, dict[str, Any]]:
    _, target, _ = GOALS[station]
    started = time.perf_counter()
    status, doc = post_json(f"{base}/api/v1/optimize", {
        "targetMetrics": [target], "constraints": {}, "scope": {"stations": [f"Station-{station}"]}})
    elapsed = (time.perf_counter() - started) * 1000
    if status != 200:
        raise RuntimeError(f"analysis of Station-{station}: {status} {doc}")
    return elapsed, doc


class Outcomes:
    """Every change auto-tune made and how it ended, from its status polled (each outcome once)."""

    def __init__(self) -> None:
        self.made: dict[tuple[str, int], dict[str, Any]] = {}
        self.ended: dict[tuple[str, int], dict[str, Any]] = {}

    def poll(self, base: str) -> list[dict[str, Any]]:
        status, doc = get_json(f"{base}/api/v1/optimize/auto-tune")
        if status != 200:
            raise RuntimeError(f"auto-tune status: {status} {doc}")
        for p in doc["points"]:
            pid = f"{p['station']}/{p['extension']}"
            if p["lastChange"]:
                self.made.setdefault((pid, p["lastChange"]["version"]), p["lastChange"])
            if p["lastOutcome"] and p["lastOutcome"].get("version") is not None:
                self.ended.setdefault((pid, p["lastOutcome"]["version"]), p["lastOutcome"])
        return doc["points"]

    def count(self, pid: str, outcome: str | None = None) -> int:
        if outcome is None:
            return sum(1 for k in self.made if k[0] == pid)
        return sum(1 for k, o in self.ended.items() if k[0] == pid and o["outcome"] == outcome)


def _points(stations: tuple[int, ...]) -> list[Point]:
    return [Point(f"Station-{n}", ext) for n in stations for ext in EXTENSIONS]


def _run_site(tmp: Path, sizes: Sizes) -> dict[str, Any]:
    controller, base, link_port = start_controller(
        tmp, stations=12, optimizer_learn_interval_s=sizes.learn_interval_s, optimizer_retrain_s=sizes.retrain_s,
        optimizer_min_rows=150, optimizer_lookback_s=900)
    agents: list[Proc] = []
    try:
        for n in (*sizes.degraded, *sizes.healthy):
            agents.append(start_agent(tmp, f"Station-{n}", link_port, replay_trace_s=20.0))
        every = _points((*sizes.degraded, *sizes.healthy))

        def all_active() -> bool:
            _, doc = get_json(f"{base}/api/v1/health")   # 503 while seven stations are offline
            return doc["activeExtensions"] >= len(every)

        wait_until(all_active, 60, controller, interval=0.5)
        time.sleep(sizes.warmup_s)
        t_before = time.time()
        time.sleep(sizes.window_s)
        t_tune = time.time()
        for n in sizes.degraded:
            _auto_tune(base, n, sizes)
        outcomes, analyses = Outcomes(), []
        next_analysis = time.monotonic()
        while time.time() < t_tune + sizes.tune_s:
            check_running(controller, *agents)
            outcomes.poll(base)
            if time.monotonic() >= next_analysis:
                modelled = {m["target"] for m in get_json(f"{base}/api/v1/optimize/models")[1]["models"]}
                for n in sizes.degraded:
                    elapsed, doc = _analyse(base, n)
                    analyses.append({"wall_ms": elapsed, "estimated_ms": doc["estimatedTime"],
                                     "trained": GOALS[n][1] in modelled,
                                     "recommendations": len(doc["recommendations"])})
                next_analysis = time.monotonic() + 30
            time.sleep(2)
        for n in sizes.degraded:
            _auto_tune(base, n, sizes, enabled=False)
        deadline = time.time() + sizes.settle_timeout_s
        while any(p["state"] == "verifying" for p in outcomes.poll(base)) and time.time() < deadline:
            check_running(controller, *agents)
            time.sleep(2)
        period = station_profile(sizes.degraded[0]).conditions("3333")["drift_period_s"]
        t_after = (t_before + math.ceil((time.time() - t_before) / period) * period   # the same drift phase
                   if sizes.align_drift else time.time())
        while time.time() < t_after + sizes.window_s + 2:   # + history's flush
            check_running(controller, *agents)
            time.sleep(1)
        outcomes.poll(base)
        figures = {}
        for point in every:
            station = int(point.station.split("-")[1])
            keys = HEALTHY_TARGETS if station not in GOALS else tuple(dict.fromkeys(
                [GOALS[station][1], *HEALTHY_TARGETS]))
            figures[point.id] = (measure(base, point, t_before, t_before + sizes.window_s, keys),
                                 measure(base, point, t_after, t_after + sizes.window_s, keys))
        quiet = _quiet_analyses(tmp, controller, base, every, sizes)
        return {"figures": figures, "outcomes": outcomes, "analyses": analyses, "quiet": quiet,
                "tune_s": t_after - t_tune}
    finally:
        for agent in agents:
            agent.stop()
        controller.stop()


def _quiet_analyses(tmp: Path, controller: Proc, base: str, every: list[Point], sizes: Sizes) -> list[float]:
    """POST /optimize wall times (ms) with the trained models but no learning in the background.

    During the run the two cores are saturated by five agents, their replay workers and the
    training worker, which says little about the analysis itself. So the controller restarts
    with `optimizer_learning = false` (the models are on disk), and each degraded station is
    analysed `quiet_analyses` times, a second apart, with the agents still streaming."""
    config = tmp / "controller.toml"
    config.write_text(config.read_text().replace("[controller]\n", "[controller]\noptimizer_learning = false\n", 1))
    controller.stop()
    controller.start()
    wait_until(lambda: get_json(f"{base}/api/v1/health")[1]["activeExtensions"] >= len(every), 60, controller,
               interval=0.5)
    time.sleep(sizes.warmup_s)
    times = []
    for _ in range(sizes.quiet_analyses):
        for n in sizes.degraded:
            check_running(controller)
            times.append(_analyse(base, n)[0])
            time.sleep(1)
    return times


def _relative_gain(before: float | None, after: float | None, direction: int) -> float | None:
    """The improvement as a share of the before figure (positive: better)."""
    if before is None or after is None:
        return None
    if abs(before) < 1e-9:
        return 0.0 if abs(after) < 1e-9 else -1.0 if (after - before) * direction < 0 else 1.0
    return (after - before) / abs(before) * direction


def run(smoke: bool = False) -> list[dict]:
    sizes = SMOKE if smoke else FULL
    keep = os.environ.get("TPMON_BENCH_KEEP_DIR")   # logs and data of the run, for a look afterwards
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        site = _run_site(Path(tempfile.mkdtemp(dir=keep)), sizes)
    else:
        with tempfile.TemporaryDirectory() as d:
            site = _run_site(Path(d), sizes)
    figures, outcomes, analyses = site["figures"], site["outcomes"], site["analyses"]
    rows: list[dict] = []
    gains, violations, kept_worse = [], 0, 0
    for n in sizes.degraded:
        goal, key, limits = GOALS[n]
        target = TARGETS[key]
        constraints = constraints_of(limits.get("maxLatencyMs"), limits.get("minQualityScore"),
                                     limits.get("maxPacketLoss"))
        for point in _points((n,)):
            before, after = figures[point.id]
            b, a = before[key], after[key]
            gain = _relative_gain(b.mean, a.mean, target.direction)
            if gain is not None:
                gains.append(gain)
            verdict = judge(b, a, target)
            broken = [lim.name for lim in constraints.limits
                      if (s := after.get(lim.target.key)) is not None and s.mean is not None and lim.broken_by(s.mean)
                      and not (before[lim.target.key].mean is not None and lim.broken_by(before[lim.target.key].mean))]
            kept = outcomes.count(point.id, "kept")
            violations += len(broken) if kept else 0
            kept_worse += 1 if kept and verdict.worse else 0
            rows.append({"figure": f"{point.id} {goal} ({key})", "value": a.mean, "baseline": b.mean,
                         "unit": target.unit, "ratio": None if gain is None else 1 + gain,
                         "goal": "better (ratio: 1 + improvement)", "met": verdict.improved,
                         "changes": outcomes.count(point.id), "kept": kept,
                         "rolled_back": outcomes.count(point.id, "rolled_back"),
                         "cancelled": outcomes.count(point.id, "cancelled"),
                         "broken_constraints": ", ".join(broken) or "none"})
    average = statistics.fmean(gains) if gains else None
    rows.append({"figure": "average improvement of the targeted metrics, degraded points", "value": average,
                 "baseline": 0.0, "unit": "share", "ratio": None if average is None else 1 + average,
                 "goal": f">= {IMPROVEMENT_GOAL:.0%}", "met": average is not None and average >= IMPROVEMENT_GOAL})
    rows.append({"figure": "constraint violations in kept configurations", "value": violations, "baseline": 0,
                 "unit": "count", "ratio": None, "goal": "0", "met": violations == 0})
    rows.append({"figure": "kept changes whose point measured worse at the end", "value": kept_worse, "baseline": 0,
                 "unit": "count", "ratio": None, "goal": "0", "met": kept_worse == 0})
    errors = []
    for o in outcomes.ended.values():
        predicted, measured = o.get("predicted", {}).get(o.get("goal")), o.get("after", {}).get(o.get("goal"))
        before = o.get("before", {}).get(o.get("goal"))
        if predicted is not None and measured is not None and before is not None:
            errors.append(abs(predicted - measured) / max(abs(before), 1e-6))
    rows.append({"figure": "expectedImpact error: |predicted median - measured after| / before, judged changes",
                 "value": statistics.median(errors) if errors else None, "baseline": None, "unit": "share",
                 "ratio": None, "goal": "informative", "met": True, "changes": len(errors)})
    gaps = []   # what the agent's replay measured for a change against what happened live after it
    for o in outcomes.ended.values():
        goal = o.get("goal")
        replayed, before, after = (o.get("replayDelta") or {}).get(goal), o.get("before", {}).get(goal), \
            o.get("after", {}).get(goal)
        if replayed is not None and before is not None and after is not None:
            gaps.append((replayed, after - before, before))
    rows.append({"figure": "replay-vs-live gap: |replayed difference - live difference| / before, judged changes",
                 "value": statistics.median(abs(r - m) / max(abs(b), 1e-6) for r, m, b in gaps) if gaps else None,
                 "baseline": None, "unit": "share", "ratio": None, "goal": "informative", "met": True,
                 "changes": len(gaps), "pairs": "; ".join(f"{r:+.3g} vs {m:+.3g}" for r, m, _ in gaps[:8])})
    worse_healthy = []
    for point in _points(sizes.healthy):
        before, after = figures[point.id]
        worse = [k for k in HEALTHY_TARGETS if judge(before[k], after[k], TARGETS[k]).worse]
        worse_healthy += [f"{point.id} {k}" for k in worse]
        rows.append({"figure": f"{point.id} (healthy, not tuned) latency ms", "value": after["latency.end_to_end"].mean,
                     "baseline": before["latency.end_to_end"].mean, "unit": "ms",
                     "ratio": _ratio(after["latency.end_to_end"].mean, before["latency.end_to_end"].mean),
                     "goal": "not worse beyond noise (any target)", "met": not worse,
                     "quality": f"{_fmt(before['quality'].mean)} -> {_fmt(after['quality'].mean)}",
                     "worse": ", ".join(worse) or "none"})
    trained = [a for a in analyses if a["trained"]]
    wall = [a["wall_ms"] for a in trained]
    rows.append({"figure": "POST /optimize wall time during the run, once models exist (median; max below)",
                 "value": statistics.median(wall) if wall else None, "baseline": ANALYSIS_GOAL_MS, "unit": "ms",
                 "ratio": statistics.median(wall) / ANALYSIS_GOAL_MS if wall else None,
                 "goal": f"<= {ANALYSIS_GOAL_MS:.0f} ms", "met": bool(wall) and max(wall) <= ANALYSIS_GOAL_MS,
                 "max": max(wall) if wall else None, "analyses": len(wall),
                 "estimatedTime_median": statistics.median(a["estimated_ms"] for a in trained) if trained else None})
    quiet = site["quiet"]
    rows.append({"figure": "POST /optimize wall time, models trained, learning paused, agents streaming (median)",
                 "value": statistics.median(quiet) if quiet else None, "baseline": ANALYSIS_GOAL_MS, "unit": "ms",
                 "ratio": statistics.median(quiet) / ANALYSIS_GOAL_MS if quiet else None,
                 "goal": f"<= {ANALYSIS_GOAL_MS:.0f} ms", "met": bool(quiet) and max(quiet) <= ANALYSIS_GOAL_MS,
                 "max": max(quiet) if quiet else None, "analyses": len(quiet)})
    rows.append({"figure": "auto-tune time (enabled until the last verification ended)", "value": site["tune_s"],
                 "baseline": sizes.tune_s, "unit": "s", "ratio": site["tune_s"] / sizes.tune_s,
                 "goal": "informative", "met": True})
    return rows


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"
