"""A real controller and real agents: the demo's degraded Station-4 raises alerts within a minute from the
shipped defaults, the healthy Station-1 none; a threshold fires after its duration and resolves; a kill -9
of the controller loses no alert or acknowledgement."""
from __future__ import annotations

import time
from typing import Any

import pytest

from tests.procs import get_json, post_json, request, start_agent, start_controller, wait_until

pytestmark = pytest.mark.slow

HEALTHY_WATCH_S = 40   # how long the healthy station is watched for a false alarm (defaults fire within ~30 s)


def alerts(base: str, query: str = "") -> list[dict[str, Any]]:
    status, doc = get_json(f"{base}/api/v1/alerts?limit=1000{query}")
    assert status == 200, doc
    return doc["alerts"]


def test_degraded_station_alerts_healthy_one_does_not_and_alerts_survive_kill9(tmp_path):
    controller, base, link_port = start_controller(tmp_path, stations=4)
    started = time.monotonic()
    healthy, degraded = start_agent(tmp_path, "Station-1", link_port), start_agent(tmp_path, "Station-4", link_port)
    try:
        wait_until(lambda: alerts(base, "&station=Station-4"), 60, degraded, interval=0.5)
        assert time.monotonic() - started < 60
        while time.monotonic() - started < HEALTHY_WATCH_S:
            assert alerts(base, "&station=Station-1&state=all") == [], "a healthy station raised an alert"
            time.sleep(1.0)
        assert {a["extension"] for a in alerts(base, "&station=Station-4")} == {"3333", "4444"}

        # A threshold the healthy point crosses (its end-to-end latency is ~135 ms): pending, then firing.
        posted_at = time.monotonic()
        status, rule = post_json(f"{base}/api/v1/config/metrics", {
            "metricId": "latency_end_to_end", "thresholds": {"warning": 60}, "stations": ["Station-1"],
            "extensions": ["3333"], "duration": 3000, "clearDuration": 2000, "window": 0})
        assert status == 201, rule
        assert alerts(base, "&station=Station-1") == []  # not before its duration
        [fired] = wait_until(lambda: alerts(base, "&station=Station-1"), 10, controller, interval=0.2)
        assert time.monotonic() - posted_at >= 3.0 and fired["ruleId"] == rule["id"]
        assert fired["severity"] == "warning" and fired["value"] > 60 and fired["duration"] >= 3000
        status, _ = post_json(f"{base}/api/v1/config/metrics", {
            "metricId": "latency_end_to_end", "thresholds": {"warning": 1000}, "stations": ["Station-1"],
            "extensions": ["3333"]})
        assert status == 200
        wait_until(lambda: not alerts(base, "&station=Station-1"), 10, controller, interval=0.2)
        [resolved] = alerts(base, "&station=Station-1&state=resolved")
        assert resolved["id"] == fired["id"] and resolved["resolvedBy"] == "system"

        # kill -9: the active alerts and an acknowledgement come back.
        target = alerts(base, "&station=Station-4")[0]
        status, acked = request(f"{base}/api/v1/alerts/acknowledge/{target['id']}", "POST", {"comment": "seen"})[:2]
        assert status == 200 and acked["acknowledged"]
        before = {a["id"] for a in alerts(base, "&station=Station-4")}
        controller.kill9()
        controller.start()
        wait_until(lambda: get_json(f"{base}/api/v1/health")[0] in (200, 503), 20, controller)
        after = {a["id"]: a for a in alerts(base, "&station=Station-4")}
        assert before <= set(after), (before, after)
        assert after[target["id"]]["acknowledgedBy"] == "test-admin" and after[target["id"]]["comment"] == "seen"
    finally:
        for proc in (healthy, degraded, controller):
            proc.stop()
