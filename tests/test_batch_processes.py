"""Batch, templates and knob history against a real controller and real agents: what the agents end up running."""
from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.security import secret_files
from controller.security.signing import signed_headers
from tests.procs import Proc, get_json, post_json, request, start_agent, start_controller, wait_until

pytestmark = pytest.mark.slow

STATIONS = ("Station-1", "Station-2", "Station-3")
BATCH = "/api/v1/batch/apply-settings"


class System:
    def __init__(self, tmp: Path, base: str, controller: Proc, agents: dict[str, Proc], link_port: int) -> None:
        self.tmp, self.base, self.controller, self.agents, self.link_port = tmp, base, controller, agents, link_port
        self.started = time.monotonic()

    def signed(self, path: str, doc: Any) -> tuple[int, Any]:
        body = json.dumps(doc).encode()
        secret = secret_files.load(self.tmp / "controller" / "secrets" / "signing.secret")
        status, answer, _ = request(self.base + path, "POST", raw=body,
                                    headers=signed_headers(secret, "POST", path, body))
        return status, answer

    def knobs(self, station: str, ext: str) -> dict:
        status, doc = get_json(f"{self.base}/api/v1/config/knobs/{station}/{ext}")
        assert status == 200
        return doc

    def running(self, station: str, ext: str) -> dict:
        """What the agent persisted as applied (it writes the set it runs before acknowledging)."""
        return json.loads((self.tmp / "agents" / station / f"applied-{ext}.json").read_text())

    def active(self, station: str) -> bool:
        status, snap = get_json(f"{self.base}/api/v1/snapshots?stations={station}")
        return status == 200 and all(p["status"] == "active" for p in snap["stations"][station].values())


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    tmp = tmp_path_factory.mktemp("batch")
    controller, base, link_port = start_controller(tmp, stations=3, ack_timeout_ms=800, knob_history_window_s=3)
    agents = {s: start_agent(tmp, s, link_port) for s in STATIONS}
    sys_ = System(tmp, base, controller, agents, link_port)
    try:
        for station, agent in agents.items():
            wait_until(lambda: sys_.active(station), 30, agent)
        yield sys_
    finally:
        for proc in [*agents.values(), controller]:
            proc.stop()


def test_a_strict_batch_with_one_bad_knob_changes_nothing(system):
    before = {s: (system.knobs(s, "3333"), system.running(s, "3333")) for s in STATIONS}
    status, doc = system.signed(BATCH, {"targets": {"stations": list(STATIONS), "extensions": ["3333"]},
                                        "settings": {"agc_target_level": -22, "compressor_ratio": 500},
                                        "validation": "strict", "rollbackOnError": True})
    assert status == 400 and doc["error"]["details"][0]["field"] == "settings.compressor_ratio", doc
    time.sleep(0.3)
    for station in STATIONS:
        assert (system.knobs(station, "3333"), system.running(station, "3333")) == before[station]


def test_unsigned_batches_and_template_applies_are_refused(system):
    body = {"targets": {"stations": ["Station-1"]}, "settings": {"nr_level": "low"}}
    status, doc, _ = request(system.base + BATCH, "POST", body)
    assert status == 401 and "must be signed" in doc["error"]["message"]
    status, _, _ = request(system.base + "/api/v1/config/apply-template/low-latency", "POST",
                           {"targets": {"stations": ["Station-1"]}})
    assert status == 401
    assert system.knobs("Station-1", "4444")["version"] == 1


def test_a_template_applied_reaches_the_agents(system):
    status, doc = system.signed("/api/v1/config/apply-template/low-latency",
                                {"targets": {"stations": ["Station-1", "Station-2"], "extensions": ["3333"]}})
    assert status == 200 and doc["status"] == "applied" and doc["usageCount"] == 1, doc
    for station in ("Station-1", "Station-2"):
        knobs, running = system.knobs(station, "3333"), system.running(station, "3333")
        assert knobs["applied"] and running["version"] == knobs["version"]
        assert running["knobs"]["playout_delay"] == 20 and running["knobs"]["limiter_lookahead"] == 0


def test_when_an_agent_dies_mid_batch_the_others_are_rolled_back(system):
    before = {s: system.knobs(s, "3333") for s in STATIONS}
    system.agents["Station-3"].kill9()
    status, doc = system.signed(BATCH, {"targets": {"stations": list(STATIONS), "extensions": ["3333"]},
                                        "settings": {"agc_target_level": -12, "nr_level": "low"},
                                        "rollbackOnError": True})
    assert status == 200 and doc["status"] == "rolled_back", doc
    results = {r["station"]: r for r in doc["results"]}
    assert results["Station-3"]["status"] == "failed" and "rolled back" in results["Station-3"]["reason"]
    for station in ("Station-1", "Station-2"):
        assert results[station]["status"] == "rolled_back", results[station]
        knobs, running = system.knobs(station, "3333"), system.running(station, "3333")
        assert knobs["config"] == before[station]["config"] and knobs["version"] == before[station]["version"] + 2
        assert knobs["applied"] and running["version"] == knobs["version"]
        assert running["knobs"]["agc_target_level"] == before[station]["config"]["agc_target_level"]
        assert running["knobs"]["nr_level"] == before[station]["config"]["nr_level"]
    # The dead agent comes back to the previous set too (restored while it was away).
    system.agents["Station-3"].start()
    wait_until(lambda: system.knobs("Station-3", "3333")["applied"], 30, system.agents["Station-3"])
    assert system.running("Station-3", "3333")["knobs"]["nr_level"] == before["Station-3"]["config"]["nr_level"]
    _, history = get_json(f"{system.base}/api/v1/config/knobs/Station-1/3333/history?knob=nr_level")
    assert [(e["source"], e["new"]) for e in history["entries"][:2]] == [("rollback", "high"), ("batch", "low")]


def test_knob_history_keeps_the_metrics_before_and_after_a_change(system):
    # The minute before (3 s here: knob_history_window_s) must hold flushed samples of the point.
    time.sleep(max(0.0, system.started + 5 - time.monotonic()))
    # packet_size 640: twice the audio per packet, so half the headers on the wire.
    status, doc, _ = request(f"{system.base}/api/v1/config/knobs/Station-2/4444?reason=save%20bandwidth", "POST",
                             {"packet_size": 640})
    assert status == 200 and doc["applied"], doc
    url = f"{system.base}/api/v1/config/knobs/Station-2/4444/history"
    row = get_json(url)[1]["entries"][0]
    assert (row["knob"], row["old"], row["new"], row["reason"]) == ("packet_size", 320, 640, "save bandwidth")
    assert row["metricsBefore"]["packet.throughput_kbps"] is not None, row
    row = wait_until(lambda: (r := get_json(url)[1]["entries"][0])["metricsAfter"] and r, 20, system.controller)
    before, after = row["metricsBefore"], row["metricsAfter"]
    assert after["packet.throughput_kbps"] < before["packet.throughput_kbps"] - 5, (before, after)


# --- kill -9 in the middle of configuration writes --------------------------------------------

def test_controller_kill9_mid_config_write_loses_nothing_acknowledged(tmp_path):
    import threading

    controller, base, link_port = start_controller(tmp_path, stations=1, ack_timeout_ms=500)
    agent = start_agent(tmp_path, "Station-1", link_port)
    acked: list[tuple[str, int, float]] = []   # (extension, version, agc_target_level) answered 200
    templates: list[str] = []
    stop = threading.Event()

    def write_forever() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            ext = ("3333", "4444")[n % 2]
            level = -10.0 - n % 20
            try:
                status, doc = post_json(f"{base}/api/v1/config/knobs/Station-1/{ext}", {"agc_target_level": level})
                if status == 200:
                    acked.append((ext, doc["version"], level))
                if n % 4 == 0:
                    status, doc = post_json(f"{base}/api/v1/config/templates",
                                            {"name": f"t{n}", "config": {"agc_target_level": level}})
                    if status == 201:
                        templates.append(doc["id"])
            except OSError:
                return  # the controller is gone

    try:
        wait_until(lambda: System(tmp_path, base, controller, {}, link_port).active("Station-1"), 30, agent)
        writer = threading.Thread(target=write_forever)
        writer.start()
        wait_until(lambda: len(acked) >= 15, 30, controller)  # well into the writes, then kill mid-stream
        controller.kill9()
        stop.set()
        writer.join(10)
        assert len(acked) > 10, acked
        for name in ("config.json", "templates.json"):
            json.loads((tmp_path / "controller" / name).read_text())   # never torn
        # The knob change log moved from a JSON file to SQLite on purpose: checked for integrity instead.
        db = sqlite3.connect(tmp_path / "controller" / "knob_changes.sqlite")
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        db.close()
        controller.start()
        wait_until(lambda: get_json(f"{base}/api/v1/health")[0] in (200, 503), 20, controller)
        for ext in ("3333", "4444"):
            status, knobs = get_json(f"{base}/api/v1/config/knobs/Station-1/{ext}")
            mine = [a for a in acked if a[0] == ext]
            assert knobs["version"] >= mine[-1][1]
            if knobs["version"] == mine[-1][1]:
                assert knobs["config"]["agc_target_level"] == mine[-1][2]
            _, history = get_json(f"{base}/api/v1/config/knobs/Station-1/{ext}/history?limit=1000")
            versions = {e["version"]: e["new"] for e in history["entries"]}
            assert sorted(versions) == list(range(2, knobs["version"] + 1))   # one record per stored version
            assert all(versions[version] == level for _, version, level in mine)
            wait_until(lambda: get_json(f"{base}/api/v1/config/knobs/Station-1/{ext}")[1]["applied"], 30, agent)
        _, listed = get_json(f"{base}/api/v1/config/templates")
        assert set(templates) <= {t["id"] for t in listed["templates"]}
    finally:
        stop.set()
        agent.stop()
        controller.stop()
