"""CURVE on the agent link: listed keys only, each bound to its station; `tpmon keys`; refusing to start without keys."""
from __future__ import annotations

import asyncio
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import zmq
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from agent.config import load as load_agent_config
from agent.link import ControllerLink, client_keys
from controller.app import create_app
from controller.app_keys import SERVICES
from controller.link.curve import Throttle
from controller.settings import ControllerSettings
from shared import curve_keys, protocol
from shared.config import ConfigError
from shared.protocol import MsgType
from tests.auth import bearer
from tests.fake_agent import FakeAgent, link_keys
from tests.procs import get_json, start_agent, start_controller, wait_until
from tpmon import cli, toml_writer

SETTINGS = dict(http_host="127.0.0.1", link_endpoint="tcp://127.0.0.1:*", stations=2, tick_ms=50,
                ack_timeout_ms=800, heartbeat_ms=200, stale_after_ms=1000, offline_after_ms=3000)


# --- key files and the allow-list -------------------------------------------------------------

def test_provision_writes_loadable_keys_and_an_allowlist_bound_to_stations(tmp_path: Path):
    out = tmp_path / "keys"
    done = curve_keys.provision(out, ["Station-1", "Station-2"])
    assert done.created == ["controller", "Station-1", "Station-2"]
    allowed = curve_keys.load_allowlist(out / "allowlist.toml")
    for station in ("Station-1", "Station-2"):
        public, secret = zmq.auth.load_certificate(out / "agents" / f"{station}.key_secret")
        assert allowed[station] == public and secret is not None
        assert zmq.auth.load_certificate(out / "agents" / f"{station}.key") == (public, None)
    assert curve_keys.provision(out, ["Station-1", "Station-3"]).created == ["Station-3"]
    assert set(curve_keys.load_allowlist(out / "allowlist.toml")) == {"Station-1", "Station-2", "Station-3"}
    assert curve_keys.load_allowlist(out / "allowlist.toml")["Station-1"] == allowed["Station-1"]


@pytest.mark.parametrize("text,problem", [
    ('[agents]\n"Station-1" = "short"\n', "not a 40-character z85 public key"),
    ('[agents]\n"Kitchen" = "{key}"\n', "not a station name"),
    ('[agents]\n"Station-1" = "{key}"\n"Station-2" = "{key}"\n', "same key is listed for Station-1 and Station-2"),
    ('[other]\n', "expected only an [agents] table"),
    ('[agents\n', "allowlist.toml"),
])
def test_a_bad_allowlist_is_refused_naming_the_file(tmp_path: Path, text: str, problem: str):
    path = tmp_path / "allowlist.toml"
    path.write_text(text.replace("{key}", zmq.curve_keypair()[0].decode()))
    with pytest.raises(ConfigError, match="allowlist.toml") as err:
        curve_keys.load_allowlist(path)
    assert problem in str(err.value)


def test_key_file_errors_name_the_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="nope.key_secret does not exist"):
        curve_keys.load_keypair(tmp_path / "nope.key_secret")
    curve_keys.generate(tmp_path, "a")
    with pytest.raises(ConfigError, match=r"a\.key holds no secret key"):
        curve_keys.load_keypair(tmp_path / "a.key")
    (tmp_path / "junk.key").write_text("hello\n")
    with pytest.raises(ConfigError, match="junk.key is not a CURVE key file"):
        curve_keys.load_public(tmp_path / "junk.key")


def test_throttle_reports_once_per_window_with_the_repeats():
    now = [0.0]
    throttle = Throttle(60, lambda: now[0])
    assert throttle.due("k") == 0
    assert throttle.due("k") is None and throttle.due("k") is None
    assert throttle.due("other") == 0
    now[0] = 61
    assert throttle.due("k") == 2


# --- tpmon keys ---------------------------------------------------------------------------------

def test_tpmon_keys_writes_a_set_with_private_secrets_and_refuses_to_overwrite(tmp_path: Path, capsys):
    out = tmp_path / "k"
    assert cli.main(["keys", "--out", str(out), "--stations", "3"]) == 0
    secrets = [out / "controller.key_secret"] + [out / "agents" / f"Station-{n}.key_secret" for n in (1, 2, 3)]
    for path in secrets:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert curve_keys.load_keypair(path).secret is not None
    text = (out / "allowlist.toml").read_text()
    assert text.startswith("# ") and "[agents]" in text
    allowed = curve_keys.load_allowlist(out / "allowlist.toml")
    assert allowed == {f"Station-{n}": curve_keys.load_public(out / "agents" / f"Station-{n}.key") for n in (1, 2, 3)}
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    capsys.readouterr()
    assert cli.main(["keys", "--out", str(out), "--stations", "3"]) == 1
    assert "already holds keys" in capsys.readouterr().err
    assert cli.main(["keys", "--out", str(out), "--station", "Station-2"]) == 1
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before

    # Adding a missing station keeps everything else and extends the allow-list.
    assert cli.main(["keys", "--out", str(out), "--station", "Station-4"]) == 0
    assert all(p.read_bytes() == before[p] for p in before if p.name != "allowlist.toml")
    assert set(curve_keys.load_allowlist(out / "allowlist.toml")) == {"Station-1", "Station-2", "Station-3", "Station-4"}

    # --force on one station rotates that key only; the controller keypair stays.
    assert cli.main(["keys", "--out", str(out), "--station", "Station-2", "--force"]) == 0
    rotated = curve_keys.load_allowlist(out / "allowlist.toml")
    assert rotated["Station-2"] != allowed["Station-2"] and rotated["Station-1"] == allowed["Station-1"]
    assert (out / "controller.key_secret").read_bytes() == before[out / "controller.key_secret"]
    assert cli.main(["keys", "--out", str(out), "--station", "Kitchen"]) == 2


# --- a CURVE controller in process, agents on real sockets -------------------------------------

@pytest.fixture
async def ctl(tmp_path: Path, monkeypatch):
    settings = ControllerSettings(data_dir=str(tmp_path), **SETTINGS, **link_keys(tmp_path, 2))
    app = create_app(settings, registry=CollectorRegistry())
    audited: list[tuple[str, dict[str, Any]]] = []
    real_record = app[SERVICES].audit.record

    def spy(event: str, **fields: Any) -> None:
        audited.append((event, fields))
        real_record(event, **fields)

    monkeypatch.setattr(app[SERVICES].audit, "record", spy)
    async with TestClient(TestServer(app), headers=bearer(tmp_path)) as client:
        client.app_ = app
        client.keys = tmp_path / "keys"
        client.audited = audited
        client.agents = []
        yield client
        for agent in client.agents:
            agent.close()


def agent(ctl, station: str = "Station-1", **kwargs: Any) -> FakeAgent:
    a = FakeAgent(ctl.app_[SERVICES].link.endpoint, station, ctl.keys, **kwargs)
    ctl.agents.append(a)
    return a


async def point_status(ctl, station: str, ext: str = "3333") -> str:
    snap = await (await ctl.get("/api/v1/snapshots")).json()
    return snap["stations"][station][f"extension_{ext}"]["status"]


@pytest.mark.slow
async def test_a_listed_agent_connects_and_its_samples_arrive(ctl):
    a = agent(ctl)
    await a.hello({"3333": 1, "4444": 1})
    for seq in (1, 2, 3):
        await a.sample("3333", seq, knob_version=1)
    await asyncio.sleep(0.3)
    assert await point_status(ctl, "Station-1") == "active"
    assert ctl.app_[SERVICES].link.known_stations() == ["Station-1"]
    assert (await a.recv(MsgType.HEARTBEAT, 1.0)).body["sent_at"] > 0


@pytest.mark.slow
async def test_an_unlisted_key_is_refused_and_reported_while_a_listed_agent_keeps_working(ctl, caplog):
    caplog.set_level(logging.WARNING, "tpmon.controller.link.router")
    link, ingest = ctl.app_[SERVICES].link, ctl.app_[SERVICES].ingest
    stranger_public, stranger_secret = zmq.curve_keypair()
    stranger = agent(ctl, keypair=curve_keys.Keypair(stranger_public, stranger_secret))
    good = agent(ctl, "Station-2")
    await stranger.hello({"3333": 0, "4444": 0})
    await stranger.sample("3333", 1, knob_version=0)
    await good.hello({"3333": 1, "4444": 1})
    for seq in (1, 2, 3):
        await good.sample("3333", seq, knob_version=1)
        await asyncio.sleep(0.1)
    assert await point_status(ctl, "Station-2") == "active"
    assert await point_status(ctl, "Station-1") == "offline"
    # Nothing of the stranger reached ingest: only the listed agent's HELLO and samples were received.
    assert link.received == {"HELLO": 1, "SAMPLE": 3} and ingest.rejected == 0 and link.malformed == 0
    assert await stranger.nothing(MsgType.KNOB_SET, 0.3) and not stranger.seen
    key = stranger_public.decode()
    assert link.refused >= 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(key in m and "127.0.0.1" in m and "not in the allow-list" in m for m in warnings), warnings
    refused = [f for e, f in ctl.audited if e == "agent.refused"]
    assert refused and refused[0]["key"] == key and refused[0]["where"] == "127.0.0.1"
    assert refused[0]["outcome"] == "refused"


@pytest.mark.slow
async def test_a_station_1_key_cannot_publish_for_station_2(ctl, caplog):
    caplog.set_level(logging.WARNING, "tpmon.controller.link.router")
    link, ingest = ctl.app_[SERVICES].link, ctl.app_[SERVICES].ingest
    impostor = agent(ctl, "Station-2", key_of="Station-1")
    await impostor.hello({"3333": 0, "4444": 0})
    for seq in (1, 2, 3):
        await impostor.sample("3333", seq, knob_version=1)
    await impostor.send(protocol.ack("Station-2", "3333", 1, True))
    await asyncio.sleep(0.3)
    assert await point_status(ctl, "Station-2") == "offline"
    assert "Station-2" not in link.known_stations()
    assert ingest.rejected == 5
    assert await impostor.nothing(MsgType.KNOB_SET, 0.3)
    spoofing = [f for e, f in ctl.audited if e == "agent.spoofing"]
    assert {(f["keyStation"], f["claimedStation"]) for f in spoofing} == {("Station-1", "Station-2")}
    assert any("the sender's key belongs to Station-1" in r.getMessage() for r in caplog.records)
    health = await (await ctl.get("/api/v1/health")).json()
    assert health["link"]["messagesRejected"] == 5
    # The same connection speaking for its own station is fine.
    impostor.station = "Station-1"
    await impostor.hello({"3333": 1, "4444": 1})
    await impostor.sample("3333", 4, knob_version=1)
    await asyncio.sleep(0.2)
    assert await point_status(ctl, "Station-1") == "active"


@pytest.mark.slow
async def test_a_station_1_key_cannot_receive_station_2_knob_sets(ctl):
    link = ctl.app_[SERVICES].link
    real = agent(ctl, "Station-2")
    await real.hello({"3333": 1, "4444": 1})
    await asyncio.sleep(0.1)
    # The impostor presents Station-2's name as its routing id, holds Station-1's key, and asks.
    impostor = agent(ctl, "Station-2", key_of="Station-1", routing_id=b"Station-2")
    await impostor.hello({"3333": 0, "4444": 0})
    await asyncio.sleep(0.2)

    async def ack_as_real_agent() -> protocol.Message:
        msg = await real.recv(MsgType.KNOB_SET)
        await real.send(protocol.ack("Station-2", "3333", msg.body["version"], True))
        return msg

    acker = asyncio.create_task(ack_as_real_agent())
    doc = await (await ctl.post("/api/v1/config/knobs/Station-2/3333", json={"agc_target_level": -12})).json()
    sent = await acker
    assert doc["applied"] is True and sent.body["station"] == "Station-2" and sent.body["knobs"]["agc_target_level"] == -12
    assert await impostor.nothing(MsgType.KNOB_SET, 0.3)

    # The real agent goes away: its route dies with its connection; the impostor still gets nothing.
    real.close()
    ctl.agents.remove(real)
    await wait_for(lambda: "Station-2" not in link.known_stations(), 3)
    await impostor.hello({"3333": 0, "4444": 0})
    doc = await (await ctl.post("/api/v1/config/knobs/Station-2/3333", json={"agc_target_level": -20})).json()
    assert doc["applied"] is False and "offline" in doc["reason"]
    assert await impostor.nothing(MsgType.KNOB_SET, 0.5)
    assert not any(m.type is MsgType.KNOB_SET for m in impostor.seen)


@pytest.mark.slow
async def test_a_key_added_to_the_allowlist_is_accepted_without_a_restart(ctl):
    assert cli.main(["keys", "--out", str(ctl.keys), "--station", "Station-2", "--force"]) == 0
    a = agent(ctl, "Station-2")  # the new key, never seen when the controller started
    await a.hello({"3333": 0, "4444": 1})
    assert (await a.recv(MsgType.KNOB_SET)).body["station"] == "Station-2"


async def wait_for(predicate, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_the_agent_says_plainly_when_the_controller_refuses_its_key(ctl, tmp_path: Path, caplog):
    caplog.set_level(logging.ERROR, "agent.link")
    curve_keys.generate(tmp_path / "elsewhere", "Station-1")  # a key the allow-list does not know
    cfg = load_agent_config(_agent_toml(tmp_path, {
        "curve_secret_key_file": str(tmp_path / "elsewhere" / "Station-1.key_secret"),
        "controller_public_key_file": str(ctl.keys / "controller.key")}), env={})
    link = ControllerLink(ctl.app_[SERVICES].link.endpoint, "Station-1", zmq.Context.instance(), curve=client_keys(cfg))
    try:
        await wait_for(lambda: link.receive() == [] and link.handshake_failures > 0, 5)
    finally:
        link.close()
    assert any("refused this agent's key" in r.getMessage() for r in caplog.records)


# --- refusing to start ------------------------------------------------------------------------

def _agent_toml(tmp: Path, extra: dict[str, Any]) -> Path:
    path = tmp / "agent.toml"
    path.write_text(toml_writer.dumps({"agent": {"station": "Station-1", "controller": "tcp://127.0.0.1:1",
                                                 "exporter_port": 0, "data_dir": str(tmp / "a"), **extra}}))
    return path


def test_the_agent_needs_keys_unless_insecure(tmp_path: Path, caplog):
    cfg = load_agent_config(_agent_toml(tmp_path, {}), env={})
    with pytest.raises(ConfigError, match=r"tpmon keys --out DIR --station Station-1") as err:
        client_keys(cfg)
    assert "insecure = true" in str(err.value)
    missing = load_agent_config(_agent_toml(tmp_path, {"curve_secret_key_file": str(tmp_path / "x.key_secret"),
                                                        "controller_public_key_file": str(tmp_path / "c.key")}), env={})
    with pytest.raises(ConfigError, match="x.key_secret does not exist"):
        client_keys(missing)
    caplog.set_level(logging.WARNING, "agent.link")
    assert client_keys(load_agent_config(_agent_toml(tmp_path, {"insecure": True}), env={})) is None
    assert any("NOT authenticated or encrypted" in r.getMessage() for r in caplog.records)
    with pytest.raises(ConfigError, match="insecure must be true or false"):
        load_agent_config(_agent_toml(tmp_path, {"insecure": "yes"}), env={})


@pytest.mark.slow
def test_the_agent_process_refuses_to_start_without_keys(tmp_path: Path):
    done = subprocess.run([sys.executable, "-m", "tpmon.cli", "agent", "--config", str(_agent_toml(tmp_path, {}))],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "tpmon keys --out DIR --station Station-1" in done.stderr


async def test_the_controller_refuses_to_start_without_keys_and_names_the_command(tmp_path: Path):
    app = create_app(ControllerSettings(data_dir=str(tmp_path / "data"), **SETTINGS), registry=CollectorRegistry())
    runner = web.AppRunner(app)
    with pytest.raises(ConfigError) as err:
        await runner.setup()
    await runner.cleanup()
    keys_dir = tmp_path / "data" / "keys"
    assert f"tpmon keys --out {keys_dir} --stations 2" in str(err.value)
    assert str(keys_dir / "controller.key_secret") in str(err.value) and "insecure = true" in str(err.value)


async def test_an_insecure_controller_runs_plaintext_and_warns(tmp_path: Path, caplog):
    caplog.set_level(logging.WARNING, "tpmon.controller.link.router")
    app = create_app(ControllerSettings(data_dir=str(tmp_path), insecure=True, **SETTINGS),
                     registry=CollectorRegistry())
    async with TestClient(TestServer(app), headers=bearer(tmp_path)):
        plain = FakeAgent(app[SERVICES].link.endpoint, "Station-1")
        try:
            await plain.hello({"3333": 0, "4444": 1})
            assert (await plain.recv(MsgType.KNOB_SET)).body["station"] == "Station-1"
        finally:
            plain.close()
    assert any("NOT authenticated or encrypted" in r.getMessage() for r in caplog.records)


# --- real processes ---------------------------------------------------------------------------

@pytest.mark.slow
def test_real_controller_and_agent_over_curve(tmp_path: Path):
    controller, base, link_port = start_controller(tmp_path, stations=2)
    agent_proc = start_agent(tmp_path, "Station-1", link_port)
    try:
        def active() -> bool:
            snap = get_json(f"{base}/api/v1/snapshots")[1]
            return all(p["status"] == "active" for p in snap["stations"]["Station-1"].values())
        wait_until(active, 30, agent_proc)
        assert "CURVE" in controller.tail(200) and "(CURVE)" in agent_proc.tail(200)
        assert "NOT authenticated" not in controller.tail(200)
    finally:
        agent_proc.stop()
        controller.stop()
    assert os.path.exists(tmp_path / "keys" / "agents" / "Station-1.key_secret")


@pytest.mark.slow
def test_the_controller_process_refuses_to_start_without_keys(tmp_path: Path):
    cfg = tmp_path / "controller.toml"
    cfg.write_text(toml_writer.dumps({"controller": {"data_dir": str(tmp_path / "data"), "http_port": 0,
                                                     "link_endpoint": "tcp://127.0.0.1:*", "stations": 3}}))
    done = subprocess.run([sys.executable, "-m", "tpmon.cli", "controller", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert f"tpmon keys --out {tmp_path / 'data' / 'keys'} --stations 3" in done.stdout + done.stderr
