"""The agent's end of the controller link: a ZeroMQ DEALER that never blocks and never hoards.

- routing_id = the station name, so the controller's ROUTER addresses the agent by name;
- reconnects with backoff (RECONNECT_IVL 100 ms growing to RECONNECT_IVL_MAX 5 s);
- IMMEDIATE + a small SNDHWM + non-blocking sends: with no controller, a send is refused
  at once and the message is dropped (counted), so a missing controller neither stalls the
  frame loop nor grows memory; LINGER 0 so closing never waits for a dead peer;
- `hello_due` turns true when a connection completes (socket monitor) and when the
  controller is heard again after `silence_s` without a message (it restarted, or the
  path came back); the caller then sends HELLO, which clears it;
- frames that do not decode are counted in `malformed` and dropped.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

import zmq
from zmq.utils.monitor import recv_monitor_message

from shared.protocol import Message, ProtocolError, decode, encode

log = logging.getLogger(__name__)


class ControllerLink:
    def __init__(self, endpoint: str, station: str, context: zmq.Context | None = None,
                 reconnect_ivl_ms: int = 100, reconnect_ivl_max_ms: int = 5000, sndhwm: int = 100,
                 silence_s: float = 3.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.endpoint = endpoint
        self.clock = clock
        self.silence_s = silence_s
        self.ctx = context or zmq.Context.instance()
        s = self.socket = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.ROUTING_ID, station.encode())
        s.setsockopt(zmq.RECONNECT_IVL, reconnect_ivl_ms)
        s.setsockopt(zmq.RECONNECT_IVL_MAX, reconnect_ivl_max_ms)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, sndhwm)
        s.setsockopt(zmq.RCVHWM, 1000)
        s.setsockopt(zmq.IMMEDIATE, 1)
        self.monitor = s.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
        s.connect(endpoint)
        self.transport_up = False
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
                log.info("connected to the controller at %s", self.endpoint)
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self.transport_up = False
                log.warning("lost the controller at %s; reconnecting with backoff", self.endpoint)

    def close(self) -> None:
        self.socket.disable_monitor()
        self.monitor.close(0)
        self.socket.close(0)
