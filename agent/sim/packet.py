"""An RTP-like packet of the simulated link: media, FEC parity or a retransmission."""
from __future__ import annotations

import zlib
from dataclasses import dataclass

from agent.fec import xor_parity
from agent.source import Arrival, PacketKind

# On-the-wire overhead of every packet: RTP 12 + UDP 8 + IPv4 20 bytes.
HEADER_BYTES = 40
# An FEC parity packet also carries an RFC 5109-style FEC header (10) and level header (4).
FEC_HEADER_BYTES = 14
BYTES_PER_MS = 16  # G.711 mu-law at 16 kHz

MEDIA, PARITY = int(PacketKind.MEDIA), int(PacketKind.PARITY)


@dataclass(slots=True)
class Packet:
    kind: int                 # MEDIA or PARITY
    seq: int                  # 16-bit media sequence number (parity: first media seq of its group)
    timestamp: int            # media timestamp: index of the first sample carried
    payload: bytes
    checksum: int             # CRC-32 of the payload as sent
    capture_ms: float         # capture time of the first sample, on the frame clock
    send_ms: float = 0.0      # when it left the sender (after pacing)
    arrival_ms: float = 0.0   # when it reached the receiver
    group_size: int = 0       # parity only: media packets covered (seq .. seq + group_size - 1)
    retransmit: bool = False  # a resend answering a NACK

    @property
    def wire_bytes(self) -> int:
        return len(self.payload) + HEADER_BYTES + (FEC_HEADER_BYTES if self.kind == PARITY else 0)

    @property
    def duration_ms(self) -> float:
        return len(self.payload) / BYTES_PER_MS

    def intact(self) -> bool:
        return zlib.crc32(self.payload) == self.checksum

    def copy(self) -> Packet:
        return Packet(self.kind, self.seq, self.timestamp, self.payload, self.checksum, self.capture_ms,
                      self.send_ms, self.arrival_ms, self.group_size, self.retransmit)


def media_packet(seq: int, timestamp: int, payload: bytes, capture_ms: float) -> Packet:
    return Packet(MEDIA, seq & 0xFFFF, timestamp, payload, zlib.crc32(payload), capture_ms)


def parity_packet(first_seq: int, members: list[Packet]) -> Packet:
    """The XOR parity of a group of media packets (equal sizes: one packet_size per group)."""
    payload = xor_parity(m.payload for m in members)
    return Packet(PARITY, first_seq & 0xFFFF, members[0].timestamp, payload, zlib.crc32(payload),
                  members[-1].capture_ms, group_size=len(members))


def arrival(packet: Packet) -> Arrival:
    """The packet as the receiving side sees it: no sender internals beyond its send time."""
    return Arrival(packet.seq, packet.timestamp, packet.payload, packet.arrival_ms, packet.wire_bytes,
                   PacketKind(packet.kind), packet.intact(), packet.retransmit, packet.group_size, packet.send_ms)
