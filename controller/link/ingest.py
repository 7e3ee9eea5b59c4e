"""Handlers for what agents send, one small function per message type, in a table for the link."""
from __future__ import annotations

import logging
import math
from collections.abc import Callable

from controller.knobs.sync import KnobSync
from controller.link.router import AgentLink, Handler, Peer
from controller.live.state import LiveState
from controller.sample import Sample, SampleObserver
from shared.protocol import Message, MsgType
from shared.topology import Point, Topology

log = logging.getLogger("tpmon.controller.link.ingest")

class Ingest:
    """Turns agent messages into live state and knob reconciliation.

    The link learns the connection each station speaks from (only from messages accepted
    here), so replies reach the agent whatever routing id its connection has. A body naming a
    station or extension outside the configured topology is counted as rejected and dropped;
    so is, on a CURVE link, a message that speaks for another station than its sender's key.
    """

    def __init__(self, topology: Topology, live: LiveState, knobs: KnobSync, link: AgentLink,
                 on_rejected: Callable[[str], None] | None = None,
                 on_evaluation: Callable[[Point, dict], None] | None = None) -> None:
        self.topology = topology
        self.live = live
        self.knobs = knobs
        self.link = link
        self.rejected = 0
        self.on_rejected = on_rejected
        self.on_evaluation = on_evaluation   # the optimizer's replay client
        # Called with every accepted Sample after the live state took it, on the event loop:
        # the history store and the alert engine. Keep them cheap.
        self.sample_observers: list[SampleObserver] = []

    def table(self) -> dict[MsgType, Handler]:
        return {MsgType.HELLO: self.hello, MsgType.SAMPLE: self.sample,
                MsgType.ACK: self.ack, MsgType.HEARTBEAT: self.heartbeat, MsgType.EVALUATION: self.evaluation}

    def attach(self) -> None:
        for mtype, handler in self.table().items():
            self.link.register(mtype, handler)

    def _reject(self, reason: str) -> None:
        self.rejected += 1
        if self.on_rejected is not None:
            self.on_rejected(reason)
        log.debug("rejected message: %s", reason)

    def _speaks_for(self, peer: Peer, station: str, what: str) -> bool:
        """Under CURVE a message speaks only for its key's station, over a connection no other station owns."""
        if peer.station is None:  # insecure link: nothing to check the claim against
            return True
        learned = self.link.station_of(peer.identity)
        if station == peer.station and learned in (None, station):
            return True
        self._reject(f"{what} for {station} over the key of {peer.station}")
        self.link.spoofing(peer, station, what)
        return False

    def _point(self, body: dict) -> Point | None:
        station, ext = body["station"], body["extension"]
        if not self.topology.has_point(station, ext):
            self._reject(f"unknown point {station!r}/{ext!r}")
            return None
        return Point(station, ext)

    async def hello(self, peer: Peer, msg: Message) -> None:
        station = msg.body["station"]
        if not self.topology.has_station(station):
            self._reject(f"hello from unknown station {station!r}")
            return
        if not self._speaks_for(peer, station, "HELLO"):
            return
        extensions = [e for e in msg.body["extensions"] if isinstance(e, str) and self.topology.has_point(station, e)]
        self.link.learn(station, peer.identity)
        self.live.agent_hello(station)
        log.info("agent %s connected (extensions %s, applied %s)", station, extensions, msg.body["applied"])
        await self.knobs.on_hello(station, extensions, msg.body["applied"])

    async def sample(self, peer: Peer, msg: Message) -> None:
        point = self._point(msg.body)
        if point is None or not self._speaks_for(peer, point.station, "SAMPLE"):
            return
        try:
            sample = Sample.from_body(point, msg.body)
        except (OverflowError, ValueError):  # a measurement time no float holds
            self._reject(f"sample of {point.id} with measured_at {msg.body['measured_at']!r}")
            return
        self.link.learn(point.station, peer.identity)
        self.live.record(sample)
        for observe in self.sample_observers:
            try:
                observe(sample)
            except Exception:  # one observer's bug must not cost the others (or the live state) a sample
                log.exception("sample observer %r failed", observe)
        await self.knobs.on_sample(point, sample.knob_version)

    async def ack(self, peer: Peer, msg: Message) -> None:
        point = self._point(msg.body)
        if point is None or not self._speaks_for(peer, point.station, "ACK"):
            return
        self.link.learn(point.station, peer.identity)
        self.live.agent_seen(point.station)
        body = msg.body
        if not body["ok"]:
            log.warning("agent %s rejected knob version %d: %s", point.id, body["version"], body["errors"])
        applied_at = body.get("applied_at")  # when the agent applied it (agents before it was sent: receipt)
        if isinstance(applied_at, bool) or not isinstance(applied_at, (int, float)) or not math.isfinite(applied_at):
            applied_at = None
        self.knobs.on_ack(point, body["version"], body["ok"], body["errors"], applied_at)

    async def evaluation(self, peer: Peer, msg: Message) -> None:
        point = self._point(msg.body)
        if point is None or not self._speaks_for(peer, point.station, "EVALUATION"):
            return
        self.live.agent_seen(point.station)
        if self.on_evaluation is not None:
            self.on_evaluation(point, msg.body)

    async def heartbeat(self, peer: Peer, msg: Message) -> None:
        # No station in the body: the one learned for this connection, or (CURVE) the key's.
        station = self.link.station_of(peer.identity) or peer.station
        if station is None or not self.topology.has_station(station):
            self._reject("heartbeat from an agent that has not said hello")
            return
        if not self._speaks_for(peer, station, "HEARTBEAT"):
            return
        self.link.learn(station, peer.identity)
        self.live.agent_seen(station)
