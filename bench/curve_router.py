"""A ROUTER standing in for the controller's agent link, with CURVE keys made for the run.

Benchmarks that need a real agent but no controller (the agent's own cost, recording samples
to replay) run the agent as shipped: CURVE on, its station's keypair and the controller's
public key from a keys folder laid out as `tpmon keys` writes it. This ROUTER is the CURVE
server with the controller's keypair from that folder, and a ZAP handler admits only the
agents' public keys in it, as the controller's allow-list would. It does not replace the
controller (no knobs, no acks): it receives, counts and heartbeats, which is all the agent
needs to see a live link.
"""
from __future__ import annotations

import time
from pathlib import Path

import zmq
from zmq.auth.thread import ThreadAuthenticator

from shared import curve_keys
from shared.protocol import Message, MsgType, decode, encode, heartbeat


class CurveRouter:
    """CURVE ROUTER on a random loopback port; `drain()` takes every waiting message without blocking."""

    def __init__(self, keys: Path, stations: list[str], heartbeat_s: float = 1.0) -> None:
        """Provision `keys` (controller + one keypair per station, kept if present) and bind."""
        curve_keys.provision(keys, stations)
        self.keys = keys
        self.heartbeat_s = heartbeat_s
        self.ctx = zmq.Context()
        self.auth = ThreadAuthenticator(self.ctx)
        self.auth.start()
        self.auth.configure_curve(domain="*", location=str(curve_keys.agent_folder(keys)))
        server = curve_keys.load_keypair(curve_keys.secret_file(keys, curve_keys.CONTROLLER))
        s = self.socket = self.ctx.socket(zmq.ROUTER)
        s.setsockopt(zmq.LINGER, 0)
        s.curve_server = True
        s.curve_secretkey, s.curve_publickey = server.secret, server.public
        self.port = s.bind_to_random_port("tcp://127.0.0.1")
        self.counts: dict[MsgType, int] = {}
        self._last_beat: dict[bytes, float] = {}

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def drain(self, timeout_ms: int = 0) -> list[Message]:
        """Every message waiting (after up to `timeout_ms` for the first), counted by type; heartbeats each
        sender once per `heartbeat_s`, as the controller does, so the agent sees its controller alive."""
        out: list[Message] = []
        wait = timeout_ms
        while self.socket.poll(wait):
            wait = 0
            identity, frame = self.socket.recv_multipart()
            msg = decode(frame)
            self.counts[msg.type] = self.counts.get(msg.type, 0) + 1
            out.append(msg)
            now = time.monotonic()
            if now - self._last_beat.get(identity, 0.0) >= self.heartbeat_s:
                self.socket.send_multipart([identity, encode(heartbeat(time.time()))])
                self._last_beat[identity] = now
        return out

    def close(self) -> None:
        self.socket.close(0)
        self.auth.stop()
        self.ctx.term()

    def __enter__(self) -> CurveRouter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
