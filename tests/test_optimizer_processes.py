"""The optimizer with real processes: a controller learning from a real agent's what-if replays over CURVE.

One station on the demo's high-jitter path (station 7's conditions: ~5–6 underflows/s at the
defaults). With short learning intervals the controller asks the agent for replays, keeps
their windows as training rows and trains its models in the spawned worker; then, in order:

1. an analysis of the jittery point answers from those models, first with nothing supported
   and, after enough replays, with a change set;
2. the analysis is applied (signed), the agent runs it, the controller is killed (-9) while
   the change is under verification and restarted: the verification resumes from history and
   its verdict follows the measured figures (kept with the point's underflows measured lower,
   as in most runs, or rolled back when the live fall stayed inside the noise);
3. auto-tune works on the other extension; once its change runs, the path worsens (the agent
   restarts on a lossy network, as when conditions shift under a change): the after-window
   measures worse and breaks the loss limit, so auto-tune rolls its change back (source
   `rollback`). The optimizer only proposes what replays and models support, so a bad change
   cannot be asked of it; what can be tested is that one which turns out bad is not kept.

One test because the learning is the slow part (minutes) and every phase needs it.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from controller.security import secret_files
from controller.security.signing import signed_headers
from tests.procs import Proc, get_json, post_json, request, start_agent, start_controller, wait_until

pytestmark = pytest.mark.slow
JITTERY = {"jitter_ms": 60.0, "reorder_rate": 0.05, "delay_ms": 70.0}
LOSSY = {**JITTERY, "loss_rate": 0.3, "burst_length": 3.0, "drift_loss_rate": 0.3}
STATION = "Station-1"


def signed_post(tmp: Path, base: str, path: str, doc: Any) -> tuple[int, Any]:
    body = json.dumps(doc).encode()
    secret = secret_files.load(tmp / "controller" / "secrets" / "signing.secret")
    status, answer, _ = request(base + path, "POST", raw=body, headers=signed_headers(secret, "POST", path, body))
    return status, answer


def knob_state(base: str, ext: str) -> dict[str, Any]:
    status, doc = get_json(f"{base}/api/v1/config/knobs/{STATION}/{ext}")
    assert status == 200, doc
    return doc


def analyse(base: str, ext: str) -> dict[str, Any]:
    status, doc = post_json(f"{base}/api/v1/optimize", {
        "targetMetrics": ["buffer"], "mode": "aggressive", "scope": {"stations": [STATION], "extensions": [ext]}})
    assert status == 200, doc
    return doc


def test_the_optimizer_learns_improves_a_point_survives_a_kill9_and_rolls_back_what_hurt(tmp_path) -> None:
    controller, base, link_port = start_controller(
        tmp_path, stations=1, optimizer_learn_interval_s=1, optimizer_retrain_s=20, optimizer_min_rows=150,
        optimizer_lookback_s=600)
    agent: Proc | None = None
    try:
        agent = start_agent(tmp_path, STATION, link_port, sim=JITTERY, replay_trace_s=20.0)

        # 1. Models from replays; an analysis says what they support.
        def trained() -> bool:
            status, doc = get_json(f"{base}/api/v1/optimize/models")
            return status == 200 and doc["replays"] >= 2 and any(m["target"] == "underflows_per_s"
                                                                 for m in doc["models"])

        wait_until(trained, 150, controller, interval=1.0)
        models = get_json(f"{base}/api/v1/optimize/models")[1]
        underflows = next(m for m in models["models"] if m["target"] == "underflows_per_s")
        assert underflows["rows"] >= 150 and 0.0 <= underflows["coverage"] <= 1.0 and models["replayRows"] > 0
        [point] = analyse(base, "3333")["points"]
        assert point["candidates"] > 0
        assert point["outcome"] == "recommended" or "pessimistic" in point["reason"]   # never an invented change

        # Measured by hand: some 15-20 replays of the point before a change is supported.
        doc = wait_until(lambda: (d := analyse(base, "3333"))["recommendations"] and d, 480, controller, interval=10)
        rec = doc["recommendations"][0]
        impact = rec["expectedImpact"]["underflows"]
        assert impact["p90"] < impact["current"] and rec["evidence"]
        before_version = knob_state(base, "3333")["version"]

        # 2. Applied (signed), then the controller killed mid-verification and restarted.
        status, applied = signed_post(tmp_path, base, f"/api/v1/optimize/{doc['analysisId']}/apply",
                                      {"changeSetIds": [rec["changeSetId"]]})
        assert status == 200, applied
        version = knob_state(base, "3333")["version"]
        assert version == before_version + 1
        wait_until(lambda: knob_state(base, "3333")["appliedVersion"] == version, 20, controller)
        time.sleep(5)                                      # inside the 60 s after-window
        controller.kill9()
        controller.start()
        wait_until(lambda: get_json(f"{base}/api/v1/health")[1]["activeExtensions"] == 2, 30, controller)

        def verified() -> dict[str, Any] | None:
            stored = get_json(f"{base}/api/v1/optimize/{doc['analysisId']}")[1]
            checks = [v for a in stored["applied"] for v in a["verification"] if v.get("status") != "verifying"]
            return checks[0] if checks else None

        check = wait_until(verified, 180, controller, interval=2.0)
        context = json.dumps({"check": check, "recommendations": doc["recommendations"]})
        history = get_json(f"{base}/api/v1/config/knobs/{STATION}/3333/history")[1]["entries"]
        assert {e["source"] for e in history if e["version"] == version} == {"optimizer"}
        # Verified from history across the restart, and the verdict follows the measured figures: kept only
        # with underflows measured lower; else rolled back to the set before it. On this bursty path most
        # changes are kept (underflows ~4.4 -> ~0.7 /s); a change whose live fall stays inside the noise
        # (replay and models over-promised: CI saw 4.4 -> 2.9 against noise 2.6) is rolled back, as it must be.
        assert check["status"] in ("kept", "rolled_back"), context
        if check["status"] == "kept":
            assert check["after"]["underflows_per_s"] < check["before"]["underflows_per_s"], context
        else:
            assert "no measured improvement" in check["reason"] or "broke" in check["reason"], context
            assert knob_state(base, "3333")["version"] == version + 1
            latest = get_json(f"{base}/api/v1/config/knobs/{STATION}/3333/history")[1]["entries"][0]
            assert latest["source"] == "rollback" and latest["version"] == version + 1, context

        # 3. Auto-tune on 4444; the path worsens once its change runs: rolled back.
        status, tune = post_json(f"{base}/api/v1/optimize/auto-tune", {
            "enabled": True, "mode": "aggressive",
            "targets": {"primaryGoal": "minimize_underflows", "constraints": {"maxPacketLoss": 0.05}},
            "schedule": {"evaluationInterval": 40000, "adjustmentCooldown": 600000, "maxAdjustmentsPerHour": 6},
            "scope": {"stations": [STATION], "extensions": ["4444"]}})
        assert status == 200, tune

        def tuned_point() -> dict[str, Any]:
            return next(p for p in get_json(f"{base}/api/v1/optimize/auto-tune")[1]["points"]
                        if p["extension"] == "4444")

        change = wait_until(lambda: (p := tuned_point())["state"] == "verifying" and p["lastChange"], 300,
                            controller, interval=2.0)
        wait_until(lambda: knob_state(base, "4444")["appliedVersion"] == change["version"], 20, controller)
        agent.stop()
        agent = start_agent(tmp_path, STATION, link_port, sim=LOSSY, replay_trace_s=20.0)
        outcome = wait_until(lambda: (p := tuned_point())["state"] != "verifying" and p["lastOutcome"], 120,
                             controller, interval=2.0)
        assert outcome["outcome"] == "rolled_back" and outcome["version"] == change["version"], outcome
        assert "maxPacketLoss" in outcome["reason"] or "no measured improvement" in outcome["reason"]
        state = knob_state(base, "4444")
        assert state["version"] == change["version"] + 1
        assert all(state["config"][k] == v for k, v in change["previous"].items())
        last = get_json(f"{base}/api/v1/config/knobs/{STATION}/4444/history")[1]["entries"][0]
        assert last["source"] == "rollback"
    finally:
        if agent is not None:
            agent.stop()
        controller.stop()
