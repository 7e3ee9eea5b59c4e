"""The optimizer with real processes: a controller learning from a real agent's what-if replays over CURVE.

One station on the demo's high-jitter path (station 7's conditions). With short learning
intervals the controller asks the agent for replays, keeps their windows as training rows,
trains its models in the spawned worker, and an analysis of the jittery point answers from them.
"""
from __future__ import annotations

import pytest

from tests.procs import get_json, post_json, start_agent, start_controller, wait_until

pytestmark = pytest.mark.slow
JITTERY = {"jitter_ms": 60.0, "reorder_rate": 0.05, "delay_ms": 70.0}


def test_a_real_agents_replays_train_the_models_an_analysis_uses(tmp_path) -> None:
    controller, base, link_port = start_controller(
        tmp_path, stations=1, optimizer_learn_interval_s=2, optimizer_retrain_s=20, optimizer_min_rows=150,
        optimizer_lookback_s=600)
    agent = None
    try:
        agent = start_agent(tmp_path, "Station-1", link_port, sim=JITTERY, replay_trace_s=20.0)

        def trained() -> bool:
            status, doc = get_json(f"{base}/api/v1/optimize/models")
            return status == 200 and doc["replays"] >= 2 and any(
                m["target"] == "underflows_per_s" for m in doc["models"])

        wait_until(trained, 150, controller, interval=1.0)
        models = get_json(f"{base}/api/v1/optimize/models")[1]
        underflows = next(m for m in models["models"] if m["target"] == "underflows_per_s")
        assert underflows["rows"] >= 150 and 0.0 <= underflows["coverage"] <= 1.0
        assert models["replayRows"] > 0

        status, doc = post_json(f"{base}/api/v1/optimize", {
            "targetMetrics": ["buffer"], "mode": "aggressive",
            "scope": {"stations": ["Station-1"], "extensions": ["3333"]}})
        assert status == 200, doc
        # Two replays of a 20 s trace do not yet support a change pessimistically (measured: nothing passed);
        # the answer must say so per point rather than invent one.
        [point] = doc["points"]
        assert point["candidates"] > 0
        if not doc["recommendations"]:
            assert point["outcome"] == "none" and "pessimistic" in point["reason"]
        else:
            impact = doc["recommendations"][0]["expectedImpact"]["underflows"]
            assert impact["p90"] < impact["current"]
    finally:
        if agent is not None:
            agent.stop()
        controller.stop()
