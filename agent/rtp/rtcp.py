"""RTCP wire formats: SR, RR, SDES, BYE (RFC 3550 §6), generic NACK (RFC 4585), XR (RFC 3611), and NTP time.

Every packet type is a frozen dataclass with `to_bytes(padding=0)`; `build_compound` joins them
as RFC 3550 wants a datagram (SR or RR first, padding only on the last), `parse_compound` reads
one back. Parsing raises `MalformedRtcp` and nothing else for any input, and keeps what it does
not know (APP, PSFB, other RTPFB messages, XR block types) as `Unknown` / `UnknownBlock` so a
caller can count them and building can pass them on unchanged.

Times: LSR, DLSR, LRR and DLRR are "compact NTP", the middle 32 bits of a 64-bit NTP timestamp,
in 1/65536 s; `round_trip_time` does RFC 3550 §6.4.1's A - LSR - DLSR on them.
"""
from __future__ import annotations

import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar

from agent.rtp.packet import VERSION, MalformedPacket, _check_bits, seq_delta

SR, RR, SDES, BYE, APP, RTPFB, PSFB, XR = 200, 201, 202, 203, 204, 205, 206, 207
NACK_FMT = 1                    # RTPFB feedback message type of the generic NACK
CNAME = 1                       # SDES item type
RRT_BT, DLRR_BT, VOIP_METRICS_BT = 4, 5, 7
UNAVAILABLE = 127               # VoIP Metrics: the code of a level, R factor or MOS that was not measured
NTP_UNIX_OFFSET = 2_208_988_800  # seconds from 1900-01-01 (NTP's epoch) to 1970-01-01

_COMMON = struct.Struct("!BBH")
_U32 = struct.Struct("!I")
_SSRC_PAIR = struct.Struct("!II")
_SENDER_INFO = struct.Struct("!IQIII")
_REPORT = struct.Struct("!IIIIII")
_NACK_FCI = struct.Struct("!HH")
_XR_BLOCK = struct.Struct("!BBH")
_RRT = struct.Struct("!Q")
_DLRR_ITEM = struct.Struct("!III")
_VOIP = struct.Struct("!IBBBBHHHHbbBBBBBBBBHHH")
_MAX_COUNT = 31                 # the header's 5-bit count


class MalformedRtcp(MalformedPacket):
    """A datagram that is not valid RTCP; `reason` names the packet or field that broke."""


# --- NTP timestamps ---------------------------------------------------------------------------------------------

def ntp_from_unix(unix_s: float) -> int:
    """The 64-bit NTP timestamp (32.32 fixed point since 1900) of a Unix time; wraps in 2036 as NTP does."""
    return (round(unix_s * (1 << 32)) + (NTP_UNIX_OFFSET << 32)) & 0xFFFF_FFFF_FFFF_FFFF


def unix_from_ntp(ntp: int) -> float:
    """The Unix time of a 64-bit NTP timestamp, read in the 1968-2104 window (RFC 4330 §3's era rule)."""
    seconds = ntp >> 32
    if seconds < 0x8000_0000:   # top bit clear: after the 2036 wrap
        seconds += 1 << 32
    return seconds - NTP_UNIX_OFFSET + (ntp & 0xFFFF_FFFF) / (1 << 32)


def compact_ntp(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp (16.16 seconds): what LSR and LRR carry."""
    return (ntp >> 16) & 0xFFFF_FFFF


def seconds_to_compact(seconds: float) -> int:
    """A duration in 1/65536 s, clamped to 32 bits: what DLSR and DLRR carry."""
    return min(max(round(seconds * 65536), 0), 0xFFFF_FFFF)


def compact_to_seconds(units: int) -> float:
    return units / 65536


def round_trip_time(arrival: int, lsr: int, dlsr: int) -> float | None:
    """RFC 3550 §6.4.1's round trip in seconds from a report block: arrival - LSR - DLSR, all compact NTP.

    `arrival` is the compact NTP time the report arrived. None when LSR is 0 (the peer has had
    no SR yet). The subtraction is modulo 2^32, so a wrap of the 16-bit seconds between the SR
    and the report costs nothing; a negative result (the peer's DLSR rounded up on a very short
    path) reads as 0.
    """
    if lsr == 0:
        return None
    units = (arrival - lsr - dlsr) & 0xFFFF_FFFF
    return 0.0 if units >= 1 << 31 else units / 65536


# --- packets ------------------------------------------------------------------------------------------------------

def _frame(packet_type: int, count: int, body: bytes, padding: int) -> bytes:
    """Header + body (+ padding): the length field counts 32-bit words minus one, the header's word included."""
    if padding:
        if not 0 < padding <= 255:
            raise ValueError(f"padding: {padding} octets, the count octet holds 1..255")
        body += bytes(padding - 1) + bytes((padding,))
    if len(body) % 4 or len(body) // 4 >= 1 << 16:
        raise ValueError(f"RTCP body of {len(body)} bytes is not a 16-bit count of 32-bit words")
    if not 0 <= count <= _MAX_COUNT:
        raise ValueError(f"count: {count}, the header holds 0..{_MAX_COUNT} (split into more packets)")
    return _COMMON.pack(VERSION << 6 | (padding > 0) << 5 | count, packet_type, len(body) // 4) + body


class _Framed:
    """What every packet type shares: a common header around its body."""
    __slots__ = ()
    packet_type: ClassVar[int]

    def _count(self) -> int:
        return 0

    def _body(self) -> bytes:
        raise NotImplementedError

    def to_bytes(self, padding: int = 0) -> bytes:
        """This packet alone (padding: octets to append, a multiple of 4 to keep 32-bit alignment)."""
        return _frame(self.packet_type, self._count(), self._body(), padding)


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """One reception report (RFC 3550 §6.4.1) about the source `ssrc`."""
    ssrc: int
    fraction_lost: int      # 8 bits: lost / expected since the previous report, in 1/256
    cumulative_lost: int    # signed 24 bits: expected - received since the start (duplicates can make it negative)
    highest_seq: int        # extended highest sequence number received: cycles << 16 | seq
    jitter: int             # interarrival jitter, in RTP timestamp units
    lsr: int = 0            # compact NTP of the last SR from `ssrc`; 0: none received
    dlsr: int = 0           # 1/65536 s between receiving that SR and sending this report

    def to_bytes(self) -> bytes:
        for name in ("ssrc", "highest_seq", "jitter", "lsr", "dlsr"):
            _check_bits(getattr(self, name), 32, name)
        _check_bits(self.fraction_lost, 8, "fraction_lost")
        if not -(1 << 23) <= self.cumulative_lost < 1 << 23:
            raise ValueError(f"cumulative_lost: {self.cumulative_lost} does not fit a signed 24-bit field")
        lost_word = self.fraction_lost << 24 | self.cumulative_lost & 0xFF_FFFF
        return _REPORT.pack(self.ssrc, lost_word, self.highest_seq, self.jitter, self.lsr, self.dlsr)


def _reports_bytes(reports: tuple[ReportBlock, ...], extension: bytes) -> bytes:
    if len(extension) % 4:
        raise ValueError(f"extension: {len(extension)} bytes is not whole 32-bit words")
    return b"".join(r.to_bytes() for r in reports) + extension


@dataclass(frozen=True, slots=True)
class SenderReport(_Framed):
    ssrc: int
    ntp: int                               # 64-bit NTP time of `rtp_ts`
    rtp_ts: int
    packet_count: int                      # packets and payload octets sent since the start (32 bits, wrapping)
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""                 # profile-specific words after the report blocks

    packet_type: ClassVar[int] = SR

    def _count(self) -> int:
        return len(self.reports)

    def _body(self) -> bytes:
        for name in ("ssrc", "rtp_ts", "packet_count", "octet_count"):
            _check_bits(getattr(self, name), 32, name)
        _check_bits(self.ntp, 64, "ntp")
        info = _SENDER_INFO.pack(self.ssrc, self.ntp, self.rtp_ts, self.packet_count, self.octet_count)
        return info + _reports_bytes(self.reports, self.extension)


@dataclass(frozen=True, slots=True)
class ReceiverReport(_Framed):
    ssrc: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""

    packet_type: ClassVar[int] = RR

    def _count(self) -> int:
        return len(self.reports)

    def _body(self) -> bytes:
        _check_bits(self.ssrc, 32, "ssrc")
        return _U32.pack(self.ssrc) + _reports_bytes(self.reports, self.extension)


@dataclass(frozen=True, slots=True)
class SdesChunk:
    """The SDES items of one source, in wire order; values are the raw octets (UTF-8 text by the RFC)."""
    ssrc: int
    items: tuple[tuple[int, bytes], ...] = ()

    @classmethod
    def of_cname(cls, ssrc: int, cname: str) -> SdesChunk:
        return cls(ssrc, ((CNAME, cname.encode()),))

    @property
    def cname(self) -> str | None:
        return next((v.decode("utf-8", "replace") for kind, v in self.items if kind == CNAME), None)

    def to_bytes(self) -> bytes:
        _check_bits(self.ssrc, 32, "ssrc")
        out = bytearray(_U32.pack(self.ssrc))
        for kind, value in self.items:
            if not 0 < kind < 256 or len(value) > 255:
                raise ValueError(f"SDES item type {kind} with {len(value)} octets (types 1..255, at most 255 octets)")
            out += bytes((kind, len(value))) + value
        # The null item ends the list; more nulls pad the chunk to the next 32-bit boundary.
        return bytes(out + bytes(4 - len(out) % 4))


@dataclass(frozen=True, slots=True)
class Sdes(_Framed):
    chunks: tuple[SdesChunk, ...] = ()

    packet_type: ClassVar[int] = SDES

    @classmethod
    def of_cnames(cls, cnames: dict[int, str]) -> Sdes:
        return cls(tuple(SdesChunk.of_cname(ssrc, cname) for ssrc, cname in cnames.items()))

    def _count(self) -> int:
        return len(self.chunks)

    def _body(self) -> bytes:
        return b"".join(c.to_bytes() for c in self.chunks)


@dataclass(frozen=True, slots=True)
class Bye(_Framed):
    ssrcs: tuple[int, ...] = ()
    reason: str = ""        # "": none given

    packet_type: ClassVar[int] = BYE

    def _count(self) -> int:
        return len(self.ssrcs)

    def _body(self) -> bytes:
        for s in self.ssrcs:
            _check_bits(s, 32, "ssrc")
        body = struct.pack(f"!{len(self.ssrcs)}I", *self.ssrcs)
        if not self.reason:
            return body
        text = self.reason.encode()
        if len(text) > 255:
            raise ValueError(f"reason: {len(text)} octets, at most 255")
        body += bytes((len(text),)) + text
        return body + bytes(-len(body) % 4)


@dataclass(frozen=True, slots=True)
class GenericNack(_Framed):
    """RFC 4585 §6.2.1: the media packets `sender_ssrc` asks `media_ssrc` to send again."""
    sender_ssrc: int
    media_ssrc: int
    lost: tuple[int, ...] = ()      # 16-bit sequence numbers; parsed back in ascending (wrapping) order

    packet_type: ClassVar[int] = RTPFB

    def _count(self) -> int:
        return NACK_FMT

    def _body(self) -> bytes:
        _check_bits(self.sender_ssrc, 32, "sender_ssrc")
        _check_bits(self.media_ssrc, 32, "media_ssrc")
        pairs = b"".join(_NACK_FCI.pack(pid, blp) for pid, blp in _nack_pairs(self.lost))
        return _SSRC_PAIR.pack(self.sender_ssrc, self.media_ssrc) + pairs


def _nack_pairs(lost: Iterable[int]) -> list[tuple[int, int]]:
    """PID/BLP pairs covering `lost`: a PID and a bit for each of the 16 sequence numbers after it."""
    seqs = list(dict.fromkeys(lost))
    for s in seqs:
        _check_bits(s, 16, "lost sequence number")
    if seqs:
        first = seqs[0]
        seqs.sort(key=lambda s: seq_delta(s, first))   # wrap-aware, so 65535, 0, 1 share one pair
    pairs: list[tuple[int, int]] = []
    for s in seqs:
        gap = (s - pairs[-1][0]) & 0xFFFF if pairs else 0
        if 0 < gap <= 16:
            pairs[-1] = (pairs[-1][0], pairs[-1][1] | 1 << (gap - 1))
        else:
            pairs.append((s, 0))
    return pairs


# --- XR (RFC 3611) ------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ReceiverReferenceTime:
    """RFC 3611 §4.4: a receiver's NTP time, so that a sender can answer with DLRR and the receiver learn the RTT."""
    ntp: int

    block_type: ClassVar[int] = RRT_BT
    type_specific: ClassVar[int] = 0

    def _block_body(self) -> bytes:
        _check_bits(self.ntp, 64, "ntp")
        return _RRT.pack(self.ntp)


@dataclass(frozen=True, slots=True)
class DlrrItem:
    ssrc: int       # the receiver whose RRT this answers
    lrr: int        # compact NTP of that RRT; 0: none received
    dlrr: int       # 1/65536 s since it arrived


@dataclass(frozen=True, slots=True)
class Dlrr:
    """RFC 3611 §4.5: delay since last RRT, one item per receiver; round_trip_time() applies as for LSR/DLSR."""
    items: tuple[DlrrItem, ...] = ()

    block_type: ClassVar[int] = DLRR_BT
    type_specific: ClassVar[int] = 0

    def _block_body(self) -> bytes:
        for item in self.items:
            for name in ("ssrc", "lrr", "dlrr"):
                _check_bits(getattr(item, name), 32, name)
        return b"".join(_DLRR_ITEM.pack(i.ssrc, i.lrr, i.dlrr) for i in self.items)


class Plc(IntEnum):
    """RX config's packet loss concealment bits."""
    UNSPECIFIED = 0
    DISABLED = 1
    ENHANCED = 2
    STANDARD = 3


class JitterBufferMode(IntEnum):
    """RX config's JBA bits."""
    UNKNOWN = 0
    RESERVED = 1
    NON_ADAPTIVE = 2
    ADAPTIVE = 3


# Wire ranges of the VoIP Metrics fields, checked when building.
_VOIP_RANGES = {
    **dict.fromkeys(("loss_rate", "discard_rate", "burst_density", "gap_density", "rerl", "gmin", "r_factor",
                     "ext_r_factor", "mos_lq", "mos_cq"), (0, 255)),
    **dict.fromkeys(("burst_duration", "gap_duration", "round_trip_delay", "end_system_delay", "jb_nominal",
                     "jb_maximum", "jb_abs_max"), (0, 0xFFFF)),
    "signal_level": (-128, 127), "noise_level": (-128, 127), "ssrc": (0, 0xFFFF_FFFF),
    "plc": (0, 3), "jb_mode": (0, 3), "jb_rate": (0, 15),
}


@dataclass(frozen=True, slots=True)
class VoipMetrics:
    """RFC 3611 §4.7, in wire units; `from_measurements` converts from physical values, `measurements` back."""
    ssrc: int                       # the media source reported on
    loss_rate: int = 0              # fractions since the start of reception, in 1/256 (255 at most)
    discard_rate: int = 0
    burst_density: int = 0          # lost or discarded within bursts / gaps, 1/256
    gap_density: int = 0
    burst_duration: int = 0         # mean burst / gap duration, ms
    gap_duration: int = 0
    round_trip_delay: int = 0       # ms; 0: not measured (the RFC has no "unavailable" code for delays)
    end_system_delay: int = 0       # ms
    signal_level: int = UNAVAILABLE  # dBm0, signed
    noise_level: int = UNAVAILABLE   # dBm0, signed
    rerl: int = UNAVAILABLE         # residual echo return loss, dB
    gmin: int = 16                  # the gap threshold (RFC 3611 recommends 16)
    r_factor: int = UNAVAILABLE     # 0..100
    ext_r_factor: int = UNAVAILABLE
    mos_lq: int = UNAVAILABLE       # MOS x 10, 10..50
    mos_cq: int = UNAVAILABLE
    plc: Plc = Plc.UNSPECIFIED      # RX config: 2 bits PLC, 2 bits JBA, 4 bits JB rate
    jb_mode: JitterBufferMode = JitterBufferMode.UNKNOWN
    jb_rate: int = 0
    jb_nominal: int = 0             # jitter buffer delays, ms
    jb_maximum: int = 0
    jb_abs_max: int = 0

    block_type: ClassVar[int] = VOIP_METRICS_BT
    type_specific: ClassVar[int] = 0

    @classmethod
    def from_measurements(
        cls, ssrc: int, *, loss_fraction: float = 0.0, discard_fraction: float = 0.0,
        burst_density_fraction: float = 0.0, gap_density_fraction: float = 0.0, burst_duration_ms: float = 0.0,
        gap_duration_ms: float = 0.0, round_trip_delay_ms: float | None = None,
        end_system_delay_ms: float | None = None, signal_level_dbm: float | None = None,
        noise_level_dbm: float | None = None, rerl_db: float | None = None, gmin: int = 16,
        r_factor: float | None = None, ext_r_factor: float | None = None, mos_lq_score: float | None = None,
        mos_cq_score: float | None = None, plc: Plc = Plc.UNSPECIFIED,
        jb_mode: JitterBufferMode = JitterBufferMode.UNKNOWN, jb_rate: int = 0, jb_nominal_ms: float = 0.0,
        jb_maximum_ms: float = 0.0, jb_abs_max_ms: float = 0.0,
    ) -> VoipMetrics:
        """Physical values to wire codes: clamped to each field's range, None (or NaN) to the "unavailable" code."""
        return cls(
            ssrc, _fraction(loss_fraction), _fraction(discard_fraction), _fraction(burst_density_fraction),
            _fraction(gap_density_fraction), _code(burst_duration_ms, 0, 0xFFFF, 0),
            _code(gap_duration_ms, 0, 0xFFFF, 0), _code(round_trip_delay_ms, 0, 0xFFFF, 0),
            _code(end_system_delay_ms, 0, 0xFFFF, 0), _code(signal_level_dbm, -128, 126),
            _code(noise_level_dbm, -128, 126), _code(rerl_db, 0, 126), _code(gmin, 0, 255, 16),
            _code(r_factor, 0, 100), _code(ext_r_factor, 0, 100), _code(mos_lq_score, 10, 50, scale=10),
            _code(mos_cq_score, 10, 50, scale=10), Plc(plc), JitterBufferMode(jb_mode), _code(jb_rate, 0, 15, 0),
            _code(jb_nominal_ms, 0, 0xFFFF, 0), _code(jb_maximum_ms, 0, 0xFFFF, 0),
            _code(jb_abs_max_ms, 0, 0xFFFF, 0))

    def measurements(self) -> dict[str, Any]:
        """The physical values, keyed as from_measurements takes them (None where the code says unavailable)."""
        level = lambda code, scale=1: None if code == UNAVAILABLE else code / scale
        return {
            "loss_fraction": self.loss_rate / 256, "discard_fraction": self.discard_rate / 256,
            "burst_density_fraction": self.burst_density / 256, "gap_density_fraction": self.gap_density / 256,
            "burst_duration_ms": self.burst_duration, "gap_duration_ms": self.gap_duration,
            "round_trip_delay_ms": self.round_trip_delay, "end_system_delay_ms": self.end_system_delay,
            "signal_level_dbm": level(self.signal_level), "noise_level_dbm": level(self.noise_level),
            "rerl_db": level(self.rerl), "gmin": self.gmin, "r_factor": level(self.r_factor),
            "ext_r_factor": level(self.ext_r_factor), "mos_lq_score": level(self.mos_lq, 10),
            "mos_cq_score": level(self.mos_cq, 10), "plc": self.plc, "jb_mode": self.jb_mode,
            "jb_rate": self.jb_rate, "jb_nominal_ms": self.jb_nominal, "jb_maximum_ms": self.jb_maximum,
            "jb_abs_max_ms": self.jb_abs_max,
        }

    def _block_body(self) -> bytes:
        for name, (lo, hi) in _VOIP_RANGES.items():
            if not lo <= getattr(self, name) <= hi:
                raise ValueError(f"{name}: {getattr(self, name)} outside {lo}..{hi}")
        rx_config = self.plc << 6 | self.jb_mode << 4 | self.jb_rate
        return _VOIP.pack(
            self.ssrc, self.loss_rate, self.discard_rate, self.burst_density, self.gap_density,
            self.burst_duration, self.gap_duration, self.round_trip_delay, self.end_system_delay,
            self.signal_level, self.noise_level, self.rerl, self.gmin, self.r_factor, self.ext_r_factor,
            self.mos_lq, self.mos_cq, rx_config, 0, self.jb_nominal, self.jb_maximum, self.jb_abs_max)


def _fraction(value: float | None) -> int:
    """RFC 3611's rates: the fraction times 256, limited to 255, integer part."""
    if value is None or math.isnan(value):
        return 0
    return min(math.floor(min(max(value, 0.0), 1.0) * 256), 255)


def _code(value: float | None, lo: int, hi: int, unavailable: int = UNAVAILABLE, scale: float = 1) -> int:
    if value is None or math.isnan(value):
        return unavailable
    return round(min(max(value * scale, lo), hi))


@dataclass(frozen=True, slots=True)
class UnknownBlock:
    """An XR block of a type not parsed here, kept whole."""
    block_type: int
    type_specific: int
    body: bytes         # after the block's 4-byte header

    def _block_body(self) -> bytes:
        return self.body


@dataclass(frozen=True, slots=True)
class Xr(_Framed):
    ssrc: int                                   # the reporter
    blocks: tuple[XrBlock, ...] = ()

    packet_type: ClassVar[int] = XR

    def _body(self) -> bytes:
        _check_bits(self.ssrc, 32, "ssrc")
        out = [_U32.pack(self.ssrc)]
        for block in self.blocks:
            body = block._block_body()
            _check_bits(block.block_type, 8, "block_type")
            _check_bits(block.type_specific, 8, "type_specific")
            if len(body) % 4 or len(body) // 4 >= 1 << 16:
                raise ValueError(f"XR block body of {len(body)} bytes is not a 16-bit count of 32-bit words")
            out += [_XR_BLOCK.pack(block.block_type, block.type_specific, len(body) // 4), body]
        return b"".join(out)


@dataclass(frozen=True, slots=True)
class Unknown(_Framed):
    """A packet of a type not parsed here (APP, PSFB, an RTPFB other than NACK, ...), kept whole."""
    packet_type: int
    count: int          # the header's 5-bit count / FMT / subtype
    body: bytes         # after the 4-byte header, padding removed

    def _count(self) -> int:
        return self.count

    def _body(self) -> bytes:
        return self.body


XrBlock = ReceiverReferenceTime | Dlrr | VoipMetrics | UnknownBlock
RtcpPacket = SenderReport | ReceiverReport | Sdes | Bye | GenericNack | Xr | Unknown


class Compound(list[RtcpPacket]):
    """The packets of one RTCP datagram, in order.

    RFC 3550 wants SR or RR first; parsing accepts a datagram that does not start so (RFC 5506
    reduced-size RTCP, a lax peer) and says so in `starts_with_report`.
    """
    __slots__ = ()

    @property
    def starts_with_report(self) -> bool:
        return bool(self) and isinstance(self[0], SenderReport | ReceiverReport)


def build_compound(items: Iterable[RtcpPacket], *, pad_to: int = 0) -> bytes:
    """One datagram of `items`; SR or RR must come first. With pad_to (a multiple of 4), the last packet is padded
    so the datagram's length is a multiple of it (RFC 3550 pads only the last packet of a compound)."""
    items = list(items)
    if not items or not isinstance(items[0], SenderReport | ReceiverReport):
        raise ValueError("a compound RTCP packet starts with an SR or RR (RFC 3550 §6.1)")
    if pad_to % 4 or pad_to < 0:
        raise ValueError(f"pad_to: {pad_to} is not a multiple of 4")
    parts = [item.to_bytes() for item in items]
    padding = -sum(map(len, parts)) % pad_to if pad_to else 0
    if padding:
        parts[-1] = items[-1].to_bytes(padding)
    return b"".join(parts)


# --- parsing ------------------------------------------------------------------------------------------------------

def parse_compound(data: bytes | bytearray | memoryview) -> Compound:
    """Every packet of one RTCP datagram; MalformedRtcp (and nothing else) for any input that is not one."""
    view = memoryview(data).cast("B")
    size = len(view)
    if size == 0:
        raise MalformedRtcp("short", "empty datagram")
    packets, pos = Compound(), 0
    while pos < size:
        if pos + 4 > size:
            raise MalformedRtcp("short", f"{size - pos} bytes left, a header is 4")
        first, packet_type, words = _COMMON.unpack_from(view, pos)
        if first >> 6 != VERSION:
            raise MalformedRtcp("version", f"version {first >> 6} at byte {pos}")
        end = pos + 4 + 4 * words
        if end > size:
            raise MalformedRtcp("length", f"packet at byte {pos} claims {4 + 4 * words} bytes, {size - pos} left")
        body = view[pos + 4:end]
        if first & 0x20:
            padding = body[-1] if len(body) else 0
            if not 0 < padding <= len(body):
                raise MalformedRtcp("padding", f"padding count {padding} in a {len(body)}-byte body")
            body = body[:len(body) - padding]
        parser = _PARSERS.get(packet_type)
        packets.append(parser(first & 0x1F, body) if parser else Unknown(packet_type, first & 0x1F, body.tobytes()))
        pos = end
    return packets


def _parse_reports(body: memoryview, start: int, count: int, reason: str) -> tuple[tuple[ReportBlock, ...], bytes]:
    end = start + 24 * count
    if end > len(body):
        raise MalformedRtcp(reason, f"{count} report blocks need {end} bytes, have {len(body)}")
    reports = []
    for ssrc, lost_word, highest, jitter, lsr, dlsr in _REPORT.iter_unpack(body[start:end]):
        lost = lost_word & 0xFF_FFFF
        reports.append(ReportBlock(ssrc, lost_word >> 24, lost - (lost >> 23 << 24), highest, jitter, lsr, dlsr))
    return tuple(reports), body[end:].tobytes()


def _parse_sr(count: int, body: memoryview) -> SenderReport:
    if len(body) < _SENDER_INFO.size:
        raise MalformedRtcp("sr", f"{len(body)} bytes, sender info is {_SENDER_INFO.size}")
    reports, extension = _parse_reports(body, _SENDER_INFO.size, count, "sr")
    return SenderReport(*_SENDER_INFO.unpack_from(body), reports, extension)


def _parse_rr(count: int, body: memoryview) -> ReceiverReport:
    if len(body) < 4:
        raise MalformedRtcp("rr", "no room for the SSRC")
    reports, extension = _parse_reports(body, 4, count, "rr")
    return ReceiverReport(_U32.unpack_from(body)[0], reports, extension)


def _parse_sdes(count: int, body: memoryview) -> Sdes:
    chunks, pos, size = [], 0, len(body)
    for _ in range(count):
        if pos + 4 > size:
            raise MalformedRtcp("sdes", f"chunk at byte {pos} overruns the packet")
        ssrc, items = _U32.unpack_from(body, pos)[0], []
        pos += 4
        while True:
            if pos >= size:
                raise MalformedRtcp("sdes", "item list without its null terminator")
            kind = body[pos]
            if kind == 0:
                pos = (pos + 4) & ~3    # the null octet, then up to the next 32-bit boundary
                break
            if pos + 2 > size or pos + 2 + body[pos + 1] > size:
                raise MalformedRtcp("sdes", f"item at byte {pos} overruns the packet")
            items.append((kind, body[pos + 2:pos + 2 + body[pos + 1]].tobytes()))
            pos += 2 + body[pos + 1]
        chunks.append(SdesChunk(ssrc, tuple(items)))
    return Sdes(tuple(chunks))


def _parse_bye(count: int, body: memoryview) -> Bye:
    end = 4 * count
    if end > len(body):
        raise MalformedRtcp("bye", f"{count} SSRCs need {end} bytes, have {len(body)}")
    ssrcs = struct.unpack_from(f"!{count}I", body)
    if end == len(body):
        return Bye(ssrcs)
    length = body[end]
    if end + 1 + length > len(body):
        raise MalformedRtcp("bye", f"a {length}-octet reason overruns the packet")
    return Bye(ssrcs, body[end + 1:end + 1 + length].tobytes().decode("utf-8", "replace"))


def _parse_rtpfb(fmt: int, body: memoryview) -> GenericNack | Unknown:
    if fmt != NACK_FMT:
        return Unknown(RTPFB, fmt, body.tobytes())
    if len(body) < 8 or len(body) % 4:
        raise MalformedRtcp("nack", f"{len(body)} bytes: two SSRCs and whole PID/BLP words expected")
    lost: list[int] = []
    for pid, blp in _NACK_FCI.iter_unpack(body[8:]):
        lost.append(pid)
        lost.extend((pid + bit + 1) & 0xFFFF for bit in range(16) if blp >> bit & 1)
    return GenericNack(*_SSRC_PAIR.unpack_from(body), tuple(dict.fromkeys(lost)))


def _parse_xr(_reserved: int, body: memoryview) -> Xr:
    if len(body) < 4:
        raise MalformedRtcp("xr", "no room for the SSRC")
    blocks, pos = [], 4
    while pos < len(body):
        if pos + 4 > len(body):
            raise MalformedRtcp("xr", f"block header at byte {pos} overruns the packet")
        block_type, type_specific, words = _XR_BLOCK.unpack_from(body, pos)
        end = pos + 4 + 4 * words
        if end > len(body):
            raise MalformedRtcp("xr", f"block type {block_type} claims {4 * words} bytes past the packet")
        parser = _BLOCK_PARSERS.get(block_type)
        block_body = body[pos + 4:end]
        blocks.append(parser(block_body) if parser else UnknownBlock(block_type, type_specific, block_body.tobytes()))
        pos = end
    return Xr(_U32.unpack_from(body)[0], tuple(blocks))


def _fixed_block(body: memoryview, size: int, name: str) -> None:
    if len(body) != size:
        raise MalformedRtcp("xr", f"{name} block of {len(body)} bytes, {size} expected")


def _parse_rrt(body: memoryview) -> ReceiverReferenceTime:
    _fixed_block(body, _RRT.size, "RRT")
    return ReceiverReferenceTime(_RRT.unpack_from(body)[0])


def _parse_dlrr(body: memoryview) -> Dlrr:
    if len(body) % _DLRR_ITEM.size:
        raise MalformedRtcp("xr", f"DLRR block of {len(body)} bytes is not whole 12-byte items")
    return Dlrr(tuple(DlrrItem(*item) for item in _DLRR_ITEM.iter_unpack(body)))


def _parse_voip(body: memoryview) -> VoipMetrics:
    _fixed_block(body, _VOIP.size, "VoIP Metrics")
    *head, rx_config, _reserved, jb_nominal, jb_maximum, jb_abs_max = _VOIP.unpack_from(body)
    return VoipMetrics(*head, Plc(rx_config >> 6), JitterBufferMode(rx_config >> 4 & 3), rx_config & 0x0F,
                       jb_nominal, jb_maximum, jb_abs_max)


_PARSERS = {SR: _parse_sr, RR: _parse_rr, SDES: _parse_sdes, BYE: _parse_bye, RTPFB: _parse_rtpfb, XR: _parse_xr}
_BLOCK_PARSERS = {RRT_BT: _parse_rrt, DLRR_BT: _parse_dlrr, VOIP_METRICS_BT: _parse_voip}
