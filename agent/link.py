"""The agent's end of the controller link: a ZeroMQ DEALER that never blocks and never hoards.

- CURVE (unless `insecure`): the agent's own keypair and the controller's public key; the
  controller admits the key only if its allow-list binds it to this station;
- no routing id of its own: the controller's ROUTER gives each connection one and learns
  it from the messages it accepts (see controller/link.py for why);
- reconnects with backoff (RECONNECT_IVL 100 ms growing to RECONNECT_IVL_MAX 5 s);
- IMMEDIATE + a small SNDHWM + non-blocking sends: with no controller, a send is refused
  at once and the message is dropped (counted), so a missing controller neither stalls the
  frame loop nor grows memory; LINGER 0 so closing never waits for a dead peer;
- `hello_due` turns true when a connection completes (socket monitor) and when the
  controller is heard again after `silence_s` without a message (it restarted, or the
  path came back); the caller then sends HELLO, which clears it;
- frames that do not decode are counted in `malformed` and dropped;
- a refused or failed handshake (key not listed, wrong controller key) is logged once per
  failure streak, with what to check.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import zmq
from zmq.utils.monitor import recv_monitor_message

from agent.config import AgentConfig
from shared import curve_keys
from shared.config import ConfigError
from shared.protocol import Message, ProtocolError, decode, encode

log = logging.getLogger(__name__)

_HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                     | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


@dataclass(frozen=True)
class CurveClientKeys:
    own: curve_keys.Keypair   # this agent's keypair
    controller: bytes          # the controller's public key (z85)


def client_keys(cfg: AgentConfig) -> CurveClientKeys | None:
    """The agent's CURVE keys from its config; None (logged as a warning) when `insecure`."""
    if cfg.insecure:
        log.warning("the controller link is NOT authenticated or encrypted (insecure = true); the controller "
                    "must run with insecure = true too")
        return None
    missing = [k for k in ("curve_secret_key_file", "controller_public_key_file") if not getattr(cfg, k)]
    if missing:
        raise ConfigError(
            f"[agent] {' and '.join(missing)} not set: the controller link uses CURVE. On the controller host "
            f"run `tpmon keys --out DIR --station {cfg.station}` (or use the set `tpmon keys` made), copy "
            f"DIR/agents/{cfg.station}.key_secret and DIR/controller.key here and set curve_secret_key_file and "
            "controller_public_key_file to them; or set insecure = true for a plaintext link")
    return CurveClientKeys(curve_keys.load_keypair(Path(cfg.curve_secret_key_file)),
                           curve_keys.load_public(Path(cfg.controller_public_key_file)))


class ControllerLink:
    def __init__(self, endpoint: str, station: str, context: zmq.Context | None = None,
                 curve: CurveClientKeys | None = None,
                 reconnect_ivl_ms: int = 100, reconnect_ivl_max_ms: int = 5000, sndhwm: int = 100,
                 silence_s: float = 3.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.endpoint = endpoint
        self.station = station
        self.curve = curve
        self.clock = clock
        self.silence_s = silence_s
        self.ctx = context or zmq.Context.instance()
        s = self.socket = self.ctx.socket(zmq.DEALER)
        if curve is not None:
            s.setsockopt(zmq.CURVE_SECRETKEY, curve.own.secret)
            s.setsockopt(zmq.CURVE_PUBLICKEY, curve.own.public)
            s.setsockopt(zmq.CURVE_SERVERKEY, curve.controller)
        s.setsockopt(zmq.RECONNECT_IVL, reconnect_ivl_ms)
        s.setsockopt(zmq.RECONNECT_IVL_MAX, reconnect_ivl_max_ms)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, sndhwm)
        s.setsockopt(zmq.RCVHWM, 1000)
        s.setsockopt(zmq.IMMEDIATE, 1)
        self.monitor = s.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
                                            | _HANDSHAKE_FAILED)
        s.connect(endpoint)
        self.transport_up = False
        self.handshake_failures = 0
        self._failing = False
        self.hello_due = True
        self.last_heard: float | None = None
        self.sent = self.dropped = self.received = self.malformed = 0

    @property
    def connected(self) -> bool:
        """A completed connection that has carried a controller message in the last `silence_s`."""
        return self.transport_up and self.last_heard is not None and self.clock() - self.last_heard < self.silence_s

    def send(self, msg: Message) -> bool:
        try:
            self.socket.send(encode(msg), zmq.NOBLOCK)
        except zmq.Again:  # no connected controller, or its queue is full: drop, never wait
            self.dropped += 1
            return False
        self.sent += 1
        return True

    def send_hello(self, msg: Message) -> None:
        if self.send(msg):
            self.hello_due = False

    def receive(self) -> list[Message]:
        """Every message waiting now (never blocks); monitor events are handled on the way."""
        self._drain_monitor()
        out: list[Message] = []
        while True:
            try:
                frame = self.socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return out
            now = self.clock()
            if self.last_heard is None or now - self.last_heard >= self.silence_s:
                self.hello_due = True  # the controller is back after a silence: tell it who we are
            self.last_heard = now
            try:
                out.append(decode(frame))
                self.received += 1
            except ProtocolError as exc:
                self.malformed += 1
                log.warning("dropped a malformed frame from the controller: %s", exc)

    def _drain_monitor(self) -> None:
        while True:
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.transport_up = True
                self.hello_due = True
                self._failing = False
                log.info("connected to the controller at %s%s", self.endpoint, " (CURVE)" if self.curve else "")
            elif event["event"] & _HANDSHAKE_FAILED:
                self._handshake_failed(event["event"])
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self.transport_up = False
                log.warning("lost the controller at %s; reconnecting with backoff", self.endpoint)

    def _handshake_failed(self, event: int) -> None:
        self.handshake_failures += 1
        if self._failing:  # one message per failure streak; the reconnect backoff keeps trying
            return
        self._failing = True
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH and self.curve is not None:
            log.error("the controller at %s refused this agent's key %s: it must be listed for %s in the "
                      "controller's allow-list (tpmon keys); retrying with backoff", self.endpoint,
                      self.curve.own.public.decode(), self.station)
        else:
            log.error("handshake with the controller at %s failed: check controller_public_key_file and that "
                      "both sides agree on CURVE (or both run insecure); retrying with backoff", self.endpoint)

    def close(self) -> None:
        self.socket.disable_monitor()
        self.monitor.close(0)
        self.socket.close(0)
