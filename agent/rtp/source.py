"""Source `rtp`: one extension's RTP stream from a media server (or any RTP sender) as a PacketSource.

The leg's UDP socket is read without blocking once per 20 ms frame; every datagram keeps the
kernel's receive time (SO_TIMESTAMPNS), so the arrival times the jitter buffer and the RFC 3550
jitter work on do not depend on when the frame loop got round to reading. A datagram becomes
an `Arrival` when it parses as RTP (agent/rtp/packet.py) with the leg's payload type from the
stream's SSRC; anything else is counted by reason and dropped, never fatal.

Streams (RFC 3550 §8.2, §A.1): the first SSRC heard starts a stream once `PROBATION` packets in
sequence have arrived from it; another SSRC that does the same replaces it (the sender
restarted, or the media server moved the call), is counted in `ssrc_changes` and logged, and
the pipeline restarts its receiver, so the stream's counters restart from zero. Packets from an
SSRC other than the current stream's are dropped (`stray`). A lone garbage datagram that
happens to parse therefore never resets a healthy stream.

Timestamps: RTP timestamps are unwrapped (32 bits) relative to the stream's first packet and
rescaled to pipeline samples (x2 for the 8 kHz codecs), so media index 0 is the stream's first
packet, and its reference WAV's first sample when one is configured. A real sender's capture
clock is unknown: capture time is taken as media time from the first packet's arrival
(`capture_origin_ms`), so latency.end_to_end counts from when the audio arrived at this host
over the stream's first path delay; the network's one-way delay before the agent is not in it.
"""
from __future__ import annotations

import logging
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.config import RtpLeg
from agent.rtp.packet import HEADER_BYTES, MalformedPacket, parse_rtp, seq_delta
from agent.rtp.reference import WavReference
from agent.source import SAMPLES_PER_MS, Arrival, PacketKind, SendFigures

log = logging.getLogger(__name__)

PROBATION = 2               # packets in sequence before an SSRC is taken as the stream (RFC 3550 MIN_SEQUENTIAL)
SILENT_AFTER_MS = 1000.0    # no packet for this long: the stream is "silent" (the sender stopped or the path broke)
UDP_IP_OVERHEAD = 28        # UDP 8 + IPv4 20 bytes on the wire besides the datagram
_SO_TIMESTAMPNS = 35        # Linux <asm-generic/socket.h>; Python's socket module does not name it
_TIMESPEC = struct.Struct("qq")
_MAX_DATAGRAM = 2048
_RECEIVE_BUFFER = 1 << 20   # 1 MiB: seconds of audio should the frame loop stall, never a kernel drop


@dataclass
class ReceiveCounters:
    """What arrived on the leg's socket besides the stream's packets; exported per extension."""
    datagrams: int = 0
    accepted: int = 0
    malformed: dict[str, int] = field(default_factory=dict)  # parse failure reason -> count
    other_payload_type: int = 0
    stray: int = 0          # RTP from an SSRC that is not the stream's (or still on probation)
    ssrc_changes: int = 0


@dataclass
class _Stream:
    ssrc: int
    base_ts: int            # RTP timestamp of the stream's first packet
    highest_ts: int         # extended RTP timestamp of the newest packet (unwrapped)
    last_raw_ts: int
    generation: int


class RtpPacketSource:
    """One leg's received RTP (a PacketSource); `clock_ms` reads the frame clock now."""

    def __init__(self, leg: RtpLeg, extension: str, clock_ms: Callable[[], float],
                 wall: Callable[[], float] = time.time) -> None:
        self.leg = leg
        self.extension = extension
        self.payload_format = leg.format
        self._scale = leg.format.upsampling   # pipeline samples per RTP timestamp unit
        self.capture_origin_ms = 0.0
        self.references = WavReference(leg.reference, leg.format) if leg.reference is not None else None
        self._clock_ms, self._wall = clock_ms, wall
        self.counters = ReceiveCounters()
        self.sock = _bind(leg.listen)
        self.sender: tuple[str, int] | None = None   # where the stream's packets come from (symmetric RTP return)
        self._stream: _Stream | None = None
        self._candidate: tuple[int, int, int] | None = None  # (ssrc, last seq, packets in sequence) on probation
        self._generation = 0            # streams started so far
        self._delivered = 0             # the generation whose packets `arrivals` hands out
        self._queue: deque[tuple[int, Arrival]] = deque()
        self.last_arrival_ms: float | None = None

    # -- PacketSource -------------------------------------------------------------------------

    def configure(self, knobs: Mapping[str, Any]) -> None:
        pass  # nothing to set on a received stream: send knobs act on the relay (agent/rtp/relay.py)

    def new_stream(self) -> bool:
        """True once per new stream waiting to be delivered: the pipeline restarts its receiver on it."""
        self._drain()
        if self._queue and self._queue[0][0] != self._delivered:
            self._delivered, first = self._queue[0][0], self._queue[0][1]
            # Media index 0 is the stream's first packet; its arrival anchors capture time (see the module doc).
            self.capture_origin_ms = first.arrival_ms - first.timestamp / SAMPLES_PER_MS
            return True
        return False

    def arrivals(self, until_ms: float) -> list[Arrival]:
        self._drain()
        out = []
        queue = self._queue
        while queue and queue[0][0] == self._delivered and queue[0][1].arrival_ms <= until_ms:
            out.append(queue.popleft()[1])
        return out

    def request_retransmission(self, seq: int, now_ms: float) -> None:
        pass  # plain RTP peers (Asterisk's ExternalMedia among them) do not retransmit: nothing to ask

    def send_figures(self) -> SendFigures | None:
        return None

    def conditions(self, now_ms: float) -> dict[str, Any]:
        """What the source knows of the path: how long since the last packet (the optimizer's inputs)."""
        return {"silent_ms": None if self.last_arrival_ms is None else round(max(0.0, now_ms - self.last_arrival_ms), 1)}

    # -- state ----------------------------------------------------------------------------------

    def state(self, now_ms: float) -> str:
        """"waiting" (nothing heard yet), "receiving", or "silent" (nothing for SILENT_AFTER_MS)."""
        if self.last_arrival_ms is None:
            return "waiting"
        return "silent" if now_ms - self.last_arrival_ms > SILENT_AFTER_MS else "receiving"

    @property
    def ssrc(self) -> int | None:
        return self._stream.ssrc if self._stream is not None else None

    def close(self) -> None:
        self.sock.close()

    # -- the socket -----------------------------------------------------------------------------

    def _drain(self) -> None:
        """Read every datagram the socket holds, stamped with the kernel's receive time on the frame clock."""
        sock = self.sock
        now_ms, wall = self._clock_ms(), self._wall()
        while True:
            try:
                data, ancillary, _, addr = sock.recvmsg(_MAX_DATAGRAM, socket.CMSG_SPACE(_TIMESPEC.size))
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # an ICMP error of an earlier send surfaces here: not a packet
                log.debug("%s: receive error %s", self.extension, exc)
                continue
            received_at = wall
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(payload) >= _TIMESPEC.size:
                    sec, nsec = _TIMESPEC.unpack_from(payload)
                    received_at = sec + nsec * 1e-9
            self._accept(data, addr, now_ms - max(0.0, wall - received_at) * 1000.0)

    def _accept(self, data: bytes, addr: tuple[str, int], arrival_ms: float) -> None:
        c = self.counters
        c.datagrams += 1
        try:
            pkt = parse_rtp(data)
        except MalformedPacket as exc:
            c.malformed[exc.reason] = c.malformed.get(exc.reason, 0) + 1
            return
        if pkt.payload_type != self.payload_format.payload_type:
            c.other_payload_type += 1
            return
        stream = self._stream
        if stream is None or pkt.ssrc != stream.ssrc:
            if not self._on_probation(pkt.ssrc, pkt.sequence):
                c.stray += 1
                return
            stream = self._start_stream(pkt.ssrc, pkt.timestamp, addr)
        delta = (pkt.timestamp - stream.last_raw_ts) & 0xFFFFFFFF
        ext_ts = stream.highest_ts + (delta - (1 << 32) if delta >= 1 << 31 else delta)
        if ext_ts > stream.highest_ts:
            stream.highest_ts, stream.last_raw_ts = ext_ts, pkt.timestamp
        c.accepted += 1
        self.last_arrival_ms = arrival_ms
        self.sender = addr
        media = (ext_ts - stream.base_ts) * self._scale
        self._queue.append((stream.generation, Arrival(pkt.sequence, media, pkt.payload, arrival_ms,
                                                       len(data) + UDP_IP_OVERHEAD, PacketKind.MEDIA)))

    def _on_probation(self, ssrc: int, seq: int) -> bool:
        """True when `ssrc` has now sent PROBATION packets in sequence and may become the stream."""
        cand = self._candidate
        if cand is None or cand[0] != ssrc or seq_delta(seq, cand[1]) != 1:
            self._candidate = (ssrc, seq, 1)
        else:
            self._candidate = (ssrc, seq, cand[2] + 1)
        return self._candidate[2] >= PROBATION

    def _start_stream(self, ssrc: int, timestamp: int, addr: tuple[str, int]) -> _Stream:
        # The probation packets before this one were dropped as stray: the stream starts with this packet.
        if self._stream is not None:
            self.counters.ssrc_changes += 1
            log.warning("%s: new RTP stream from %s:%d, SSRC %08x replaces %08x: the stream's counters restart",
                        self.extension, addr[0], addr[1], ssrc, self._stream.ssrc)
        else:
            log.info("%s: RTP stream from %s:%d, SSRC %08x, %s", self.extension, addr[0], addr[1], ssrc,
                     self.payload_format.name)
        self._generation += 1
        self._candidate = None
        self._stream = _Stream(ssrc, timestamp, timestamp, timestamp, self._generation)
        return self._stream


def _bind(address: tuple[str, int]) -> socket.socket:
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


__all__ = ["HEADER_BYTES", "PROBATION", "ReceiveCounters", "RtpPacketSource"]
