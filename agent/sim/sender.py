"""The far side's sender: mu-law packetisation, XOR FEC, pacing and retransmission on NACK.

Knobs acting here: packet_size (payload bytes per packet: packet rate and header overhead),
fec_enabled / fec_percentage (one parity packet per round(100 / percentage) media packets),
pacing_rate / burst_size (a token bucket of burst_size packets refilled at pacing_rate times
the media packet rate), max_retransmits (how many NACKs per packet it answers). Packets the
pacer would hold back longer than MAX_QUEUE_MS are dropped at the sender, as a real sender
with a bounded queue does when it is paced below its send rate.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping

from agent.sim.network import SimNetwork
from agent.sim.packet import BYTES_PER_MS, Packet, media_packet, parity_packet

MAX_QUEUE_MS = 1000.0
_HISTORY = 1024  # media packets kept for retransmission (>= 5 s at the smallest packet_size)


class Sender:
    def __init__(self, network: SimNetwork, knobs: Mapping[str, Any]) -> None:
        self.network = network
        self._pending = bytearray()
        self._pending_ts = 0           # timestamp of the first pending byte (sample index)
        self._seq = 0
        self._group: list[Packet] = []
        self._history: OrderedDict[int, Packet] = OrderedDict()
        self._resends: dict[int, int] = {}
        self._tokens = 0.0
        self._token_at = 0.0
        self.media_sent = self.parity_sent = self.retransmits_sent = self.sender_drops = 0
        self.configure(knobs)
        self._tokens = float(self.burst_size)

    def configure(self, knobs: Mapping[str, Any]) -> None:
        """Take the network knobs; called at a frame boundary, so an open FEC group is closed first."""
        new_size = int(knobs["packet_size"])
        if self._group and getattr(self, "packet_size", new_size) != new_size:
            self._close_group(self._token_at)
        self.packet_size = new_size
        pct = int(knobs["fec_percentage"]) if knobs["fec_enabled"] else 0
        self.fec_group = max(1, round(100 / pct)) if pct > 0 else 0
        self.pacing_rate = float(knobs["pacing_rate"])
        self.burst_size = int(knobs["burst_size"])
        self.max_retransmits = int(knobs["max_retransmits"])

    @property
    def packet_ms(self) -> float:
        return self.packet_size / BYTES_PER_MS

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
        """Token-bucket pacing: burst_size packets leave at once, the rest at pacing_rate x media rate."""
        rate = self.pacing_rate / self.packet_ms  # packets per ms
        t = max(ready_ms, self._token_at)
        self._tokens = min(float(self.burst_size), self._tokens + (t - self._token_at) * rate)
        if self._tokens < 1.0:
            t += (1.0 - self._tokens) / rate
            self._tokens = 1.0
        if t - ready_ms > MAX_QUEUE_MS:
            self.sender_drops += 1
            return
        self._tokens -= 1.0
        self._token_at = t
        self.network.send(pkt.copy() if pkt.kind == 0 and not pkt.retransmit else pkt, t, self.packet_ms)
