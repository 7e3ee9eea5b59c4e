"""A real `tpmon agent` process against a real ZeroMQ ROUTER: hello, samples, knob sets, kill -9, exporter, SIGTERM."""
from __future__ import annotations

import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import zmq

from shared import protocol
from shared.knobs import defaults
from shared.metrics import METRIC_COUNT, METRICS, out_of_bounds
from shared.protocol import Message, MsgType, decode, encode
from tests.procs import start_agent
from tpmon.processes import free_port

pytestmark = pytest.mark.slow


class Router:
    """The controller's side of the link, minimal: receive, send to the station, heartbeat."""

    def __init__(self) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.identity: bytes | None = None

    def recv(self, timeout: float = 10.0) -> Message:
        if not self.sock.poll(timeout * 1000):
            raise AssertionError("no message from the agent")
        self.identity, frame = self.sock.recv_multipart()
        return decode(frame)

    def wait_for(self, predicate, timeout: float = 20.0, what: str = "") -> Message:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.recv(max(0.05, deadline - time.monotonic()))
            if predicate(msg):
                return msg
        raise AssertionError(f"timed out waiting for {what}")

    def send(self, msg: Message) -> None:
        self.sock.send_multipart([self.identity or b"Station-1", encode(msg)])

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


def _is(mtype: MsgType, **fields: Any):
    return lambda m: m.type is mtype and all(m.body.get(k) == v for k, v in fields.items())


def _flat(sample: dict[str, Any]) -> dict[str, Any]:
    return {m.key: v for m, v in zip(METRICS, sample["metrics"])}


def test_agent_process_end_to_end(tmp_path: Path):
    router = Router()
    exporter_port = free_port()
    agent = start_agent(tmp_path, "Station-1", router.port, exporter_port=exporter_port)
    try:
        hello = router.wait_for(_is(MsgType.HELLO), what="HELLO")
        assert hello.body["station"] == "Station-1" and hello.body["applied"] == {"3333": 0, "4444": 0}
        seen: dict[str, dict[str, Any]] = {}
        while len(seen) < 2:
            msg = router.wait_for(_is(MsgType.SAMPLE), what="SAMPLE")
            seen[msg.body["extension"]] = msg.body
        for body in seen.values():
            assert len(body["metrics"]) == METRIC_COUNT and out_of_bounds(_flat(body)) == []

        # A valid set is acknowledged and the samples carry its version.
        router.send(protocol.knob_set("Station-1", "3333", 7, {**defaults(), "agc_target_level": -10.0}))
        ack = router.wait_for(_is(MsgType.ACK, extension="3333"), what="ACK")
        assert ack.body["ok"] and ack.body["version"] == 7
        router.wait_for(_is(MsgType.SAMPLE, extension="3333", knob_version=7), what="sample with version 7")
        # An out-of-range set is refused; the agent keeps version 7.
        router.send(protocol.knob_set("Station-1", "3333", 8, {**defaults(), "agc_target_level": -80}))
        nack = router.wait_for(_is(MsgType.ACK, extension="3333", version=8), what="refusal")
        assert nack.body["ok"] is False and nack.body["errors"][0]["field"] == "agc_target_level"
        router.wait_for(_is(MsgType.SAMPLE, extension="3333", knob_version=7), what="still version 7")
        # Garbage from the controller is counted and dropped.
        router.sock.send_multipart([router.identity, b"\xc1garbage"])

        text = urllib.request.urlopen(f"http://127.0.0.1:{exporter_port}/metrics", timeout=5).read().decode()
        assert 'tpmon_latency_end_to_end_ms{extension="3333",station="Station-1"}' in text
        assert 'tpmon_agent_knob_version{extension="3333",station="Station-1"} 7.0' in text
        deadline = time.monotonic() + 5
        while "tpmon_agent_link_frames_malformed_total 1.0" not in text and time.monotonic() < deadline:
            time.sleep(0.2)
            text = urllib.request.urlopen(f"http://127.0.0.1:{exporter_port}/metrics", timeout=5).read().decode()
        assert "tpmon_agent_link_frames_malformed_total 1.0" in text

        # kill -9 and restart: the HELLO reports the version applied before the crash.
        agent.kill9()
        agent.start()
        hello = router.wait_for(_is(MsgType.HELLO), what="HELLO after restart")
        assert hello.body["applied"] == {"3333": 7, "4444": 0}
        router.wait_for(_is(MsgType.SAMPLE, extension="3333", knob_version=7), what="sample after restart")

        # SIGTERM: exits 0 within a second, the exporter port is free again.
        started = time.monotonic()
        agent.proc.send_signal(signal.SIGTERM)
        assert agent.proc.wait(5) == 0
        assert time.monotonic() - started < 1.5
    finally:
        agent.stop()
        router.close()


def test_agent_runs_without_controller_and_says_hello_when_it_appears(tmp_path: Path):
    port = free_port()
    agent = start_agent(tmp_path, "Station-2", port)
    try:
        time.sleep(2.0)  # no controller: the agent runs on, sends are dropped, memory does not grow
        assert agent.exited() is None
        ctx = zmq.Context()
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(f"tcp://127.0.0.1:{port}")
        try:
            assert sock.poll(10_000), "the agent reconnects within the backoff"
            kinds = set()
            deadline = time.monotonic() + 10
            while MsgType.HELLO not in kinds and time.monotonic() < deadline:
                if sock.poll(500):
                    kinds.add(decode(sock.recv_multipart()[1]).type)
            assert MsgType.HELLO in kinds
        finally:
            sock.close(0)
            ctx.term()
    finally:
        agent.stop()
