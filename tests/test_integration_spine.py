"""A real controller and real agents on loopback: snapshot, knobs end to end, crashes, bad input."""
from __future__ import annotations

import json
import re
import socket
import statistics
import time
from datetime import datetime
from pathlib import Path

import pytest
import zmq

from shared import curve_keys
from shared.metrics import METRICS, MetricType, out_of_bounds
from tests.procs import get_json, post_json, request, start_agent, start_controller, wait_until

pytestmark = pytest.mark.slow

CATEGORY_SIZES = {"buffer": 15, "latency": 12, "packet": 14, "audioQuality": 15, "performance": 12}


def flatten(metrics: dict) -> dict:
    """Snapshot JSON back to catalog keys, ISO timestamps back to epoch seconds."""
    flat = {}
    for m in METRICS:
        value = metrics[m.category][m.name]
        if m.type is MetricType.TIMESTAMP and isinstance(value, str):
            value = datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        flat[m.key] = value
    return flat


def point(base: str, station: str, ext: str) -> dict:
    status, snap = get_json(f"{base}/api/v1/snapshots")
    assert status == 200
    return snap["stations"][station][f"extension_{ext}"]


def both_active(base: str, station: str = "Station-1") -> bool:
    return all(point(base, station, ext)["status"] == "active" for ext in ("3333", "4444"))


def mean_of(base: str, station: str, ext: str, key: str, seconds: float) -> float:
    """Average a metric over distinct samples seen during `seconds`."""
    category, name = key.split(".")
    values, last_seen = [], None
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        p = point(base, station, ext)
        if p.get("measuredAt") != last_seen:
            last_seen = p.get("measuredAt")
            values.append(p["metrics"][category][name])
        time.sleep(0.15)
    return statistics.fmean(values)


def _system(tmp_path: Path):
    controller, base, link_port = start_controller(tmp_path, stations=2)
    agent = start_agent(tmp_path, "Station-1", link_port)
    procs = [controller, agent]
    try:
        wait_until(lambda: both_active(base), 30, agent)
        yield tmp_path, controller, agent, base, link_port, procs
    finally:
        for p in procs:
            p.stop()


@pytest.fixture
def system(tmp_path: Path):
    """A system of its own, for tests that change knobs or kill processes."""
    yield from _system(tmp_path)


@pytest.fixture(scope="module")
def steady_system(tmp_path_factory: pytest.TempPathFactory):
    """One system shared by the tests that only read or are refused (they change nothing, so they
    cannot disturb each other), started once instead of once per test."""
    yield from _system(tmp_path_factory.mktemp("steady"))


def test_snapshot_has_active_points_with_68_metrics_in_bounds(steady_system):
    _, _, _, base, _, _ = steady_system
    status, snap = get_json(f"{base}/api/v1/snapshots")
    assert status == 200 and set(snap) >= {"timestamp", "stations"}
    assert set(snap["stations"]) == {"Station-1", "Station-2"}
    for ext in ("3333", "4444"):
        p = snap["stations"]["Station-1"][f"extension_{ext}"]
        assert p["status"] == "active"
        assert {c: len(v) for c, v in p["metrics"].items()} == CATEGORY_SIZES
        assert out_of_bounds(flatten(p["metrics"])) == []
    assert snap["stations"]["Station-2"]["extension_3333"]["status"] == "offline"


def test_knob_post_is_acknowledged_and_moves_its_metric(system):
    _, _, _, base, _, _ = system
    before = mean_of(base, "Station-1", "3333", "packet.avg_size", 1.5)
    status, doc = post_json(f"{base}/api/v1/config/knobs/Station-1/3333", {"packet_size": 640})
    assert status == 200, doc
    assert doc["applied"] is True and doc["config"]["packet_size"] == 640
    time.sleep(1.0)  # let the sample window fill with the new packet size
    after = mean_of(base, "Station-1", "3333", "packet.avg_size", 1.5)
    assert after > before + 200, (before, after)
    untouched = mean_of(base, "Station-1", "4444", "packet.avg_size", 1.0)
    assert untouched < before + 100, "the other extension keeps its packet size"


def test_agc_target_moves_the_output_level(system):
    _, _, _, base, _, _ = system
    status, doc = post_json(f"{base}/api/v1/config/knobs/Station-1/4444",
                            {"agc_target_level": -30, "agc_mode": "adaptive"})
    assert status == 200 and doc["applied"] is True
    time.sleep(2)
    quiet = mean_of(base, "Station-1", "4444", "audioQuality.level_rms", 2)
    status, doc = post_json(f"{base}/api/v1/config/knobs/Station-1/4444", {"agc_target_level": -12})
    assert status == 200 and doc["applied"] is True
    time.sleep(2)
    loud = mean_of(base, "Station-1", "4444", "audioQuality.level_rms", 2)
    assert loud - quiet > 8, (quiet, loud)


def test_plan_unit_test_as_written(system):
    _, _, _, base, _, _ = system
    status, doc = post_json(f"{base}/api/config/knobs/Station-1/3333", {"agc_enabled": True})
    assert status == 200 and doc["config"]["agc_enabled"] is True


def test_agent_kill9_restart_keeps_applied_knobs(system):
    _, _, agent, base, _, _ = system
    status, doc = post_json(f"{base}/api/v1/config/knobs/Station-1/3333", {"nr_level": "low", "eq_enabled": True})
    assert status == 200 and doc["applied"] is True
    version = doc["version"]
    agent.kill9()
    wait_until(lambda: point(base, "Station-1", "3333")["status"] != "active", 10)
    agent.start()
    wait_until(lambda: both_active(base), 30, agent)
    status, knobs = get_json(f"{base}/api/v1/config/knobs/Station-1/3333")
    assert knobs["version"] == version and knobs["applied"] is True
    assert knobs["config"]["nr_level"] == "low" and knobs["config"]["eq_enabled"] is True


def test_controller_kill9_restart_keeps_desired_knobs_and_agent_reconciles(system):
    tmp, controller, agent, base, link_port, _ = system
    status, doc = post_json(f"{base}/api/v1/config/knobs/Station-1/4444", {"compressor_enabled": True})
    assert status == 200 and doc["applied"] is True
    controller.kill9()
    # While the controller is away, a change is made on its disk state by no one: the agent keeps running.
    controller.start()
    wait_until(lambda: get_json(f"{base}/api/v1/health")[0] == 200, 20, controller)
    wait_until(lambda: both_active(base), 30, controller)
    status, knobs = get_json(f"{base}/api/v1/config/knobs/Station-1/4444")
    assert knobs["config"]["compressor_enabled"] is True and knobs["version"] == doc["version"]
    wait_until(lambda: get_json(f"{base}/api/v1/config/knobs/Station-1/4444")[1]["applied"], 10)


def test_change_while_agent_offline_is_applied_when_it_returns(system):
    _, _, agent, base, _, _ = system
    agent.stop()
    wait_until(lambda: point(base, "Station-1", "3333")["status"] == "offline", 10)
    status, doc = post_json(f"{base}/api/v1/config/knobs/Station-1/3333", {"limiter_threshold": -3})
    assert status == 200 and doc["applied"] is False and "offline" in doc["reason"]
    agent.start()
    wait_until(lambda: get_json(f"{base}/api/v1/config/knobs/Station-1/3333")[1]["applied"], 30, agent)


@pytest.mark.parametrize("body,expected", [
    (b"{not json", 400),
    (b"[1, 2]", 400),
    (json.dumps({"agc_enabled": "yes"}).encode(), 400),
    (json.dumps({"no_such_knob": 1}).encode(), 400),
])
def test_bad_knob_bodies_get_400_and_change_nothing(steady_system, body, expected):
    _, _, _, base, _, _ = steady_system
    url = f"{base}/api/v1/config/knobs/Station-1/3333"
    _, before = get_json(url)
    status, doc, _ = request(url, "POST", raw=body)
    assert status == expected and "error" in doc
    _, after = get_json(url)
    assert after["version"] == before["version"] and after["config"] == before["config"]


def test_several_problems_are_listed_by_field(steady_system):
    _, _, _, base, _, _ = steady_system
    status, doc = post_json(f"{base}/api/v1/config/knobs/Station-1/3333",
                            {"agc_target_level": -80, "agc_mode": "loud", "nr_enabled": True})
    assert status == 400
    fields = {d["field"]: d["problem"] for d in doc["error"]["details"]}
    assert fields == {"agc_target_level": "-80 is below the minimum -31",
                      "agc_mode": "'loud' is not one of adaptive, adaptive_digital, fixed_digital"}


@pytest.mark.parametrize("path", ["/api/v1/config/knobs/Station-99/3333", "/api/v1/config/knobs/Station-1/5555",
                                  "/api/v1/snapshots?stations=Station-42"])
def test_unknown_points_are_404(steady_system, path):
    _, _, _, base, _, _ = steady_system
    status, doc, _ = request(f"{base}{path}")
    assert status == 404 and "error" in doc


def test_garbage_on_the_link_port_does_not_disturb_the_controller(system):
    tmp, controller, _, base, link_port, _ = system
    with socket.create_connection(("127.0.0.1", link_port)) as raw:
        raw.sendall(bytes(range(256)) * 40)  # not even a ZMTP greeting
    plain = _dealer(link_port)  # a plaintext peer: refused at the CURVE handshake
    _send_junk(plain)
    keyed = _dealer(link_port, tmp / "keys", "Station-2")  # a listed key: its junk reaches the decoder
    _send_junk(keyed)
    time.sleep(0.5)
    plain.close()
    keyed.close()
    assert controller.exited() is None
    wait_until(lambda: both_active(base), 5, controller)
    _, metrics_text, _ = request(f"{base}/metrics")
    malformed = re.search(r'^link_frames_malformed(?:_total)? (\S+)', metrics_text, re.M)
    assert malformed and float(malformed.group(1)) >= 5, metrics_text[-2000:]


def _dealer(link_port: int, keys: Path | None = None, station: str | None = None) -> zmq.Socket:
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.setsockopt(zmq.SNDTIMEO, 2000)  # a peer whose handshake fails has no pipe: never block the test on it
    if keys is not None and station is not None:
        own = curve_keys.load_keypair(curve_keys.secret_file(curve_keys.agent_folder(keys), station))
        dealer.curve_secretkey, dealer.curve_publickey = own.secret, own.public
        dealer.curve_serverkey = curve_keys.load_public(curve_keys.public_file(keys, curve_keys.CONTROLLER))
    dealer.connect(f"tcp://127.0.0.1:{link_port}")
    return dealer


def _send_junk(dealer: zmq.Socket) -> None:
    try:
        for junk in (b"", b"\xc1\xc1", b"not msgpack at all", json.dumps({"type": "sample"}).encode()):
            dealer.send(junk)
        dealer.send_multipart([b"a", b"b", b"c"])
    except zmq.Again:
        pass  # the refused plaintext peer: nothing to deliver to


def test_agent_runs_on_the_python_twins(tmp_path: Path):
    controller, base, link_port = start_controller(tmp_path, stations=1)
    agent = start_agent(tmp_path, "Station-1", link_port, env={"TPMON_NO_EXTENSIONS": "1"})
    try:
        wait_until(lambda: both_active(base), 30, agent)
        p = point(base, "Station-1", "3333")
        assert out_of_bounds(flatten(p["metrics"])) == []
    finally:
        agent.stop()
        controller.stop()
