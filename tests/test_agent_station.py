"""StationAgent logic with an in-memory link: knob validation, atomic application, persistence, samples, exporter."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from agent.appliers import EXTERNAL_KNOBS
from agent.config import load
from agent.dsp import DspChain
from agent.exporter import NAMES, Exporter
from agent.knob_store import KnobStore
from agent.station import StationAgent
from shared import protocol
from shared.knobs import defaults
from shared.metrics import METRIC_COUNT, METRICS
from shared.protocol import Message, MsgType, decode, encode


class MemoryLink:
    """The ControllerLink interface, in memory: what the agent sends is kept (as encoded frames, decoded back)."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.inbox: list[Message] = []
        self.hello_due = True
        self.connected = True
        self.malformed = self.dropped = 0
        self.socket = self.monitor = None

    def send(self, msg: Message) -> bool:
        self.sent.append(decode(encode(msg)))  # round trip: what goes out must be a valid frame
        return True

    def send_hello(self, msg: Message) -> None:
        self.send(msg)
        self.hello_due = False

    def receive(self) -> list[Message]:
        out, self.inbox = self.inbox, []
        return out

    def of(self, mtype: MsgType) -> list[dict[str, Any]]:
        return [m.body for m in self.sent if m.type is mtype]

    def close(self) -> None:
        pass


def make_agent(tmp: Path, **agent_keys: Any) -> tuple[StationAgent, MemoryLink]:
    cfg_path = tmp / "agent.toml"
    keys = {"station": "Station-3", "data_dir": str(tmp / "data"), "exporter_port": 0, "warmup_s": 0.5, **agent_keys}
    lines = ["[agent]"] + [f"{k} = {json.dumps(v)}" for k, v in keys.items()] + ["[sim.4444]", "loss_rate = 0.05"]
    cfg_path.write_text("\n".join(lines) + "\n")
    link = MemoryLink()
    agent = StationAgent(load(cfg_path, env={}), lambda seed: DspChain(seed=seed), link=link)  # type: ignore[arg-type]
    return agent, link


def knob_set(version: int, ext: str = "3333", station: str = "Station-3", **changes: Any) -> Message:
    return protocol.knob_set(station, ext, version, {**defaults(), **changes})


def deliver(agent: StationAgent, link: MemoryLink, msg: Message) -> None:
    link.inbox.append(msg)
    agent._handle_link()


def test_hello_then_samples_with_68_values_and_increasing_seq(tmp_path):
    agent, link = make_agent(tmp_path)
    try:
        agent.warm_up()
        agent._handle_link()
        hello = link.of(MsgType.HELLO)[0]
        assert hello == {**hello, "station": "Station-3", "extensions": ["3333", "4444"], "applied": {"3333": 0, "4444": 0}}
        for _ in range(3):
            for _ in range(8):
                agent.frame()
            agent.sample()
        samples = link.of(MsgType.SAMPLE)
        assert len(samples) == 6
        for ext in ("3333", "4444"):
            mine = [s for s in samples if s["extension"] == ext]
            assert [s["seq"] for s in mine] == [1, 2, 3]
            assert all(len(s["metrics"]) == METRIC_COUNT and s["knob_version"] == 0 for s in mine)
            assert mine[-1]["conditions"]["packet_size"] == 320 and "loss_rate" in mine[-1]["conditions"]
        assert {s["conditions"]["loss_rate"] > 0.04 for s in samples if s["extension"] == "4444"} == {True}
    finally:
        agent.close()


def test_out_of_range_knob_set_is_refused_and_previous_knobs_stay(tmp_path):
    agent, link = make_agent(tmp_path)
    try:
        deliver(agent, link, knob_set(4, agc_target_level=-12.0))
        agent.frame()
        # The ACK also says when the set took effect (the frame boundary), so the controller's
        # applied signal carries the agent's time: a field added on purpose.
        ack = link.of(MsgType.ACK)[-1]
        assert isinstance(ack.pop("applied_at"), float)
        assert ack == {"station": "Station-3", "extension": "3333", "version": 4, "ok": True, "errors": []}
        bad = knob_set(5, agc_target_level=-80, packet_size=5000, nonsense_knob=1)
        deliver(agent, link, bad)
        agent.frame()
        ack = link.of(MsgType.ACK)[-1]
        assert ack["version"] == 5 and ack["ok"] is False
        fields = {e["field"] for e in ack["errors"]}
        assert fields == {"agc_target_level", "packet_size", "nonsense_knob"}
        assert any("below the minimum -31" in e["problem"] for e in ack["errors"])
        point = agent.points["3333"]
        assert point.version == 4 and point.knobs["agc_target_level"] == -12.0 and point.knobs["packet_size"] == 320
        assert agent.store.load("3333") == (4, point.knobs)
        # Wrong station or extension: refused, nothing applied.
        deliver(agent, link, knob_set(6, station="Station-9"))
        deliver(agent, link, knob_set(7, ext="5555"))
        agent.frame()
        assert [a["ok"] for a in link.of(MsgType.ACK)[-2:]] == [False, False]
        assert point.version == 4
    finally:
        agent.close()


def test_knob_set_applies_at_a_frame_boundary_to_chain_buffer_and_sender_together(tmp_path):
    agent, link = make_agent(tmp_path)
    try:
        point = agent.points["3333"]
        pipe = point.pipeline
        deliver(agent, link, knob_set(2, packet_size=640, jitter_buffer_depth=300, adaptive_buffering=False,
                                      compressor_enabled=True, compressor_lookahead=10.0, fec_percentage=50))
        assert point.version == 0 and pipe.source.sender.packet_size == 320  # not yet: waits for the frame boundary
        assert not link.of(MsgType.ACK)
        agent.frame()
        assert point.version == 2 and link.of(MsgType.ACK)[-1]["ok"]
        assert pipe.source.sender.packet_size == 640 and pipe.source.sender.fec_group == 2
        assert pipe.receiver.jb.target_delay_ms == 300
        assert pipe.chain.algorithmic_delay_ms >= 10.0
        for _ in range(8):
            agent.frame()
        agent.sample()
        sample = [s for s in link.of(MsgType.SAMPLE) if s["extension"] == "3333"][-1]
        assert sample["knob_version"] == 2
        codec_ms = sample["metrics"][[m.key for m in METRICS].index("latency.codec")]
        assert codec_ms == 40.0
    finally:
        agent.close()


def test_applied_knobs_persist_and_reload_after_a_restart(tmp_path):
    agent, link = make_agent(tmp_path)
    deliver(agent, link, knob_set(9, ext="4444", agc_target_level=-20.0, formant_shift=3.0))
    agent.frame()
    agent.close()
    stored = json.loads((tmp_path / "data" / "applied-4444.json").read_text())
    assert stored["version"] == 9 and stored["knobs"]["agc_target_level"] == -20.0
    external = json.loads((tmp_path / "data" / "external-4444.json").read_text())
    assert external["version"] == 9 and set(external["knobs"]) == set(EXTERNAL_KNOBS)
    assert external["knobs"]["formant_shift"] == 3.0
    again, link2 = make_agent(tmp_path)
    try:
        assert again.points["4444"].version == 9 and again.points["4444"].knobs["agc_target_level"] == -20.0
        assert again.points["3333"].version == 0
        again._handle_link()
        assert link2.of(MsgType.HELLO)[0]["applied"] == {"3333": 0, "4444": 9}
    finally:
        again.close()


def test_corrupt_or_out_of_catalog_persisted_knobs_fall_back_to_defaults(tmp_path):
    store = KnobStore(tmp_path)
    store.path("3333").write_text("{not json")
    assert store.load("3333") == (0, defaults())
    store.save("3333", 3, {**defaults(), "agc_target_level": -50}, 0.0)  # a value today's catalog refuses
    assert store.load("3333") == (0, defaults())
    store.save("3333", 4, {**defaults(), "agc_target_level": -25}, 0.0)
    assert store.load("3333")[0] == 4 and not list(tmp_path.glob(".*.tmp"))


def test_exporter_names_every_metric_with_labels_and_health(tmp_path):
    agent, link = make_agent(tmp_path)
    try:
        agent.warm_up()
        for _ in range(8):
            agent.frame()
        agent.sample()
        text = generate_latest(_registry(agent)).decode()
        assert len(set(NAMES)) == METRIC_COUNT
        values = agent.points["3333"].values
        for name, value in zip(NAMES, values):
            series = f'{name}{{extension="3333",station="Station-3"}}'
            if value is None:  # a null timestamp (no overflow yet): omitted, not exported as 0
                assert series not in text
            else:
                assert f"{series} {float(value)!r}" in text or series in text, name
        assert any(v is None for v in values) and any(v is True or v is False for v in values)
        assert 'tpmon_latency_end_to_end_ms{extension="4444",station="Station-3"}' in text
        assert "tpmon_audio_quality_clipping_detected{" in text
        assert "tpmon_agent_up 1.0" in text
        assert 'tpmon_agent_frames_processed_total{extension="3333",station="Station-3"}' in text
        sim_cpu = agent.points["3333"].pipeline.sim_cpu_s
        assert sim_cpu > 0  # the warm-up and 8 frames synthesised speech and sent packets
        assert f'tpmon_agent_sim_cpu_seconds_total{{extension="3333",station="Station-3"}} {sim_cpu!r}' in text
        assert "tpmon_agent_link_frames_malformed_total 0.0" in text
        assert 'tpmon_agent_knob_version{extension="3333",station="Station-3"} 0.0' in text
    finally:
        agent.close()


def _registry(agent: StationAgent) -> CollectorRegistry:
    registry = CollectorRegistry()
    Exporter(agent.snapshot, registry)
    return registry


def test_bad_agent_config_is_refused_with_the_key_named(tmp_path):
    from shared.config import ConfigError
    bad = tmp_path / "bad.toml"
    for text, needle in (('[agent]\nstation = "Lab-1"\n', "station"), ("[agent]\nsample_interval_ms = 0\n", "sample_interval_ms"),
                         ("[sim.5555]\nloss_rate = 0.1\n", "5555"), ("[agent]\ncolour = 1\n", "colour")):
        bad.write_text(text)
        with pytest.raises(ConfigError, match=needle):
            load(bad, env={})


def test_startup_log_names_the_implementation_of_every_hot_path():
    import ext.dsp
    import ext.vad
    from agent.main import hot_paths
    line = hot_paths()
    assert f"dsp {ext.dsp.IMPLEMENTATION}" in line and f"vad {ext.vad.IMPLEMENTATION}" in line
    assert all(name in line for name in ("jitter", "sequence", "latency"))


def test_a_metric_outside_its_bounds_is_logged_once_and_sample_values_are_plain(tmp_path, caplog):
    agent, link = make_agent(tmp_path)
    try:
        agent.warm_up()
        point = agent.points["3333"]
        real = point.meter.sample
        point.meter.sample = lambda now, host: {**real(now, host), "packet.loss_rate": 1.5}  # type: ignore[method-assign]
        with caplog.at_level("ERROR", logger="agent.station"):
            for _ in range(3):
                agent.frame()
                agent.sample()
        assert point.out_of_bounds == {"packet.loss_rate"}
        assert sum("packet.loss_rate" in r.getMessage() for r in caplog.records) == 1
        assert not agent.points["4444"].out_of_bounds
        for value, m in zip(point.values, METRICS):
            assert value is None or type(value) is {"bool": bool, "int": int}.get(m.type.value, float), m.key
    finally:
        agent.close()



def test_exporter_shows_the_simulated_pacer(tmp_path):
    agent, _ = make_agent(tmp_path)
    try:
        agent.frame()
        pacer = agent.points["4444"].pipeline.source.sender.pacer
        pacer.drops = 7  # as if its queue had overflowed 7 times
        text = generate_latest(_registry(agent)).decode()
        assert 'tpmon_agent_sim_pacer_drops_total{extension="4444",station="Station-3"} 7.0' in text
        assert 'tpmon_agent_sim_pacer_drops_total{extension="3333",station="Station-3"} 0.0' in text
        assert 'tpmon_agent_sim_pacer_queue_ms{extension="3333",station="Station-3"}' in text
    finally:
        agent.close()


def test_hello_carries_the_one_tpmon_version(tmp_path):
    from shared.version import VERSION
    agent, _ = make_agent(tmp_path)
    try:
        assert agent.hello().body["agent_version"] == VERSION
    finally:
        agent.close()
