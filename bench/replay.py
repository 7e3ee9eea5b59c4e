"""Record real samples from one agent, then replay them as every station of a topology.

Benchmarks of the controller's HTTP path need 24 live points without 12 agent processes
competing for the two cores with the load generator: the values are real measurements,
re-sent with fresh sequence numbers and measurement times. A replayer thread that fails
re-raises its error when the `with` block ends, so a benchmark never reports on a dead feed.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import zmq

from bench.children import check_running
from bench.curve_router import CurveRouter
from shared import curve_keys, protocol
from shared.protocol import MsgType
from shared.topology import Topology
from tests.procs import start_agent


def record_samples(tmp: Path, count: int = 20, timeout: float = 30) -> list[dict]:
    """`count` SAMPLE bodies from a real agent run as shipped (CURVE, keys made in tmp/"keys") against our ROUTER.

    The agent's log is in the error if it exits or sends too few samples in `timeout` seconds.
    """
    samples: list[dict] = []
    with CurveRouter(tmp / "keys", ["Station-1"]) as router:
        agent = start_agent(tmp, "Station-1", router.port)  # finds tmp/keys: a CURVE link
        deadline = time.monotonic() + timeout
        try:
            while len(samples) < count and time.monotonic() < deadline:
                check_running(agent)
                samples += [m.body for m in router.drain(200) if m.type is MsgType.SAMPLE]
        finally:
            agent.stop()
    if len(samples) < count:
        raise RuntimeError(f"agent produced {len(samples)} samples in {timeout}s; its log:\n{agent.tail(40)}")
    return samples[:count]


class Replayer:
    """One DEALER per station re-sending recorded samples every `interval` seconds."""

    def __init__(self, endpoint: str, samples: list[dict], topology: Topology, interval: float = 0.15,
                 keys: Path | None = None, stagger: bool = False) -> None:
        """`keys`: the folder `start_controller` made (tmp/"keys"), for a CURVE link; None for an insecure one.

        `stagger`: station i sends at i/N of the interval, as independent agents fall at random
        phases of the controller's tick (all at once, every sample would wait the same time for it).
        """
        self.endpoint, self.samples, self.topology, self.interval = endpoint, samples, topology, interval
        self.keys = keys
        self.stagger = stagger
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._guarded, daemon=True)
        self.error: Exception | None = None

    def __enter__(self) -> Replayer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        if self.error is not None and exc[0] is None:
            raise RuntimeError(f"the sample replayer failed: {self.error!r}") from self.error

    def _guarded(self) -> None:
        try:
            self._run()
        except Exception as exc:  # kept for __exit__: a thread's exception would otherwise only be printed
            self.error = exc

    def _run(self) -> None:
        ctx = zmq.Context.instance()
        sockets = {}
        for station in self.topology.stations:
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            if self.keys is not None:
                own = curve_keys.load_keypair(curve_keys.secret_file(curve_keys.agent_folder(self.keys), station))
                s.curve_secretkey, s.curve_publickey = own.secret, own.public
                s.curve_serverkey = curve_keys.load_public(curve_keys.public_file(self.keys, curve_keys.CONTROLLER))
            s.connect(self.endpoint)
            s.send(protocol.encode(protocol.hello(station, ["3333", "4444"], {"3333": 0, "4444": 0})))
            sockets[station] = s
        versions: dict[tuple[str, str], int] = {}
        seq = 0
        next_tick = time.monotonic()
        offsets = [i * self.interval / len(sockets) if self.stagger else 0.0 for i in range(len(sockets))]
        while not self._stop.is_set():
            seq += 1
            for (station, sock), offset in zip(sockets.items(), offsets):
                if offset:
                    self._stop.wait(max(0.0, next_tick + offset - time.monotonic()))
                for ext in ("3333", "4444"):
                    body = self.samples[seq % len(self.samples)]
                    version = versions.get((station, ext), 0)
                    msg = protocol.sample(station, ext, seq, time.time(), body["metrics"], version, body.get("conditions"))
                    sock.send(protocol.encode(msg), zmq.NOBLOCK)
                while sock.poll(0):
                    self._answer(sock, protocol.decode(sock.recv()), versions)
            next_tick += self.interval
            self._stop.wait(max(0.0, next_tick - time.monotonic()))
        for s in sockets.values():
            s.close()

    @staticmethod
    def _answer(sock: zmq.Socket, msg: protocol.Message, versions: dict[tuple[str, str], int]) -> None:
        """Acknowledge knob sets like an agent would, so the controller sees converged points."""
        if msg.type is MsgType.KNOB_SET:
            b = msg.body
            versions[(b["station"], b["extension"])] = b["version"]
            sock.send(protocol.encode(protocol.ack(b["station"], b["extension"], b["version"], True)), zmq.NOBLOCK)
