"""What the receiver measures of its stream: RFC 3550 accounting, per-window counters and the figures the meter reads."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ext.sequence import SequenceTracker


class StreamStats:
    """RFC 3550 statistics of the received media stream: A.1 counts over every intact media packet
    (first copies and retransmissions), A.8 jitter over first transmissions only.

    Two SequenceTrackers: `counts` sees every packet (received, duplicates, out of order, loss
    after retransmission); the jitter one sees only what the path delivered on its own, as an
    RTX stream (RFC 4588) would keep retransmissions out of the media stream's jitter.
    Every other attribute is the counting tracker's.
    """

    def __init__(self) -> None:
        self.counts = SequenceTracker()
        self._timing = SequenceTracker()

    def update(self, seq: int, arrival_ms: float, ts_ms: float, retransmission: bool = False) -> int:
        status = self.counts.update(seq, arrival_ms, ts_ms)
        if not retransmission:
            self._timing.update(seq, arrival_ms, ts_ms)
        return status

    @property
    def jitter_ms(self) -> float:
        return self._timing.jitter_ms

    @property
    def last_transit_ms(self) -> float:
        return self._timing.last_transit_ms

    def counters(self) -> dict[str, Any]:
        doc = dict(self.counts.counters())
        doc.update(jitter_ms=self.jitter_ms, last_transit_ms=self.last_transit_ms)
        return doc

    def __getattr__(self, name: str) -> Any:
        return getattr(self.counts, name)


@dataclass
class WindowCounters:
    """What the receiver saw during one sample window (reset by `Receiver.take_window`)."""
    transit_ms: list[float] = field(default_factory=list)     # arrival - send of media packets received (where known)
    played_base_ms: list[float] = field(default_factory=list)  # output time - capture time of packets played
    buffer_wait_ms: list[float] = field(default_factory=list)  # output time - arrival of packets played
    wire_bytes: int = 0          # every byte received: media, parity, duplicates, corrupted, headers
    media_packets: int = 0       # media packets received (duplicates and corrupted included)
    parity_packets: int = 0
    payload_bytes: int = 0       # audio payload of new, intact media packets (not duplicates)
    max_wire: int = 0
    min_wire: int = 0
    played_payload_bytes: int = 0  # audio payload that reached playout (received, retransmitted or recovered)
    slots_played: int = 0
    slots_concealed: int = 0
    buffer: dict[str, float] = field(default_factory=dict)  # the jitter buffer's level and wait statistics (ext/README.md)


@dataclass(frozen=True)
class ReceiveFigures:
    """The receiver's cumulative figures at one instant: a copy the meter reads, never the live state."""
    expected: int                # RFC 3550 extended highest - base + 1
    received: int                # distinct intact media packets, first copies or retransmissions
    lost_unique: int             # sequence numbers never received (before FEC)
    duplicates: int
    out_of_order: int
    corrected: int               # FEC reconstructions accepted by the jitter buffer
    corrected_then_received: int  # of those, later received after all
    jitter_ms: float             # RFC 3550 interarrival jitter of first transmissions
    packet_ms: float             # audio carried by the last intact media packet received
    bytes_per_ms: float          # the payload format's
    buffer: dict[str, Any]       # the jitter buffer's cumulative counters and gauges (ext/README.md)
    slots: tuple[bool, ...]      # the last playout slots, oldest first: True played, False concealed
