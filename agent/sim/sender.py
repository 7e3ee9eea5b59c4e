"""The far side's sender: mu-law packetisation, XOR FEC, pacing and retransmission on NACK.

Knobs acting here: packet_size (payload bytes per packet: packet rate and header overhead),
fec_enabled / fec_percentage (one parity packet per round(100 / percentage) media packets),
pacing_rate / burst_size (the pacer in agent/sim/pacer.py: a bounded queue paced at a
multiple of everything sent), max_retransmits (how many NACKs per packet it answers).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from agent.sim.network import SimNetwork
from agent.sim.pacer import Pacer
from agent.sim.packet import BYTES_PER_MS, MEDIA, Packet, media_packet, parity_packet

_HISTORY = 1024  # media packets kept for retransmission (>= 5 s at the smallest packet_size)


class Sender:
    def __init__(self, network: SimNetwork, knobs: Mapping[str, Any], pacer: Pacer | None = None) -> None:
        self.network = network
        self.pacer = pacer or Pacer()
        self._pending = bytearray()
        self._pending_ts = 0           # timestamp of the first pending byte (sample index)
        self._seq = 0
        self._group: list[Packet] = []
        self._history: OrderedDict[int, Packet] = OrderedDict()
        self._resends: dict[int, int] = {}
        self._last_ms = 0.0            # the latest time a packet was handed to the pacer
        self.media_sent = self.parity_sent = self.retransmits_sent = 0
        self.configure(knobs)

    def configure(self, knobs: Mapping[str, Any]) -> None:
        """Take the send knobs; called at a frame boundary, so an open FEC group is closed first."""
        new_size = int(knobs["packet_size"])
        if self._group and getattr(self, "packet_size", new_size) != new_size:
            self._close_group(self._last_ms)
        self.packet_size = new_size
        pct = int(knobs["fec_percentage"]) if knobs["fec_enabled"] else 0
        self.fec_group = max(1, round(100 / pct)) if pct > 0 else 0
        self.max_retransmits = int(knobs["max_retransmits"])
        self.pacer.configure(float(knobs["pacing_rate"]), int(knobs["burst_size"]), self.packet_ms, self.fec_group)

    @property
    def packet_ms(self) -> float:
        return self.packet_size / BYTES_PER_MS

    @property
    def pacer_drops(self) -> int:
        return self.pacer.drops

    def push(self, payload: bytes, first_sample: int, now_ms: float) -> None:
        """Queue one frame of mu-law bytes captured up to `now_ms` and send every full packet."""
        if not self._pending:
            self._pending_ts = first_sample
        self._pending += payload
        size = self.packet_size
        while len(self._pending) >= size:
            chunk = bytes(self._pending[:size])
            del self._pending[:size]
            pkt = media_packet(self._seq, self._pending_ts, chunk, self._pending_ts / BYTES_PER_MS)
            self._seq += 1
            self._pending_ts += size
            self._remember(pkt)
            self._emit(pkt, now_ms)
            self.media_sent += 1
            if self.fec_group:
                self._group.append(pkt)
                if len(self._group) >= self.fec_group:
                    self._close_group(now_ms)

    def nack(self, seq: int, now_ms: float) -> bool:
        """A NACK for `seq` reached the sender at `now_ms`: resend once per NACK up to max_retransmits."""
        pkt = self._history.get(seq & 0xFFFF)
        count = self._resends.get(seq & 0xFFFF, 0)
        if pkt is None or count >= self.max_retransmits:
            return False
        self._resends[seq & 0xFFFF] = count + 1
        again = pkt.copy()
        again.retransmit = True
        self.retransmits_sent += 1
        self._emit(again, now_ms)
        return True

    def _close_group(self, now_ms: float) -> None:
        group, self._group = self._group, []
        if group:
            self.parity_sent += 1
            self._emit(parity_packet(group[0].seq, group), now_ms)

    def _remember(self, pkt: Packet) -> None:
        self._history[pkt.seq] = pkt
        self._resends.pop(pkt.seq, None)  # the 16-bit sequence wrapped: a new packet owns it
        while len(self._history) > _HISTORY:
            self._history.popitem(last=False)

    def _emit(self, pkt: Packet, ready_ms: float) -> None:
        """Through the pacer onto the network; a packet the pacer's full queue refuses is lost at the sender."""
        self._last_ms = max(self._last_ms, ready_ms)
        t = self.pacer.schedule(ready_ms, pkt.retransmit)
        if t is None:
            return
        # The network stamps send and arrival times on what it carries: the copy kept for retransmission stays clean.
        self.network.send(pkt.copy() if pkt.kind == MEDIA and not pkt.retransmit else pkt, t, self.packet_ms)
