"""RTP data packets (RFC 3550 §5.1): parsing, building and 16-bit sequence arithmetic.

Parsed by hand rather than with an RTP library: the header is twelve bytes and a few optional
words, a receiver must survive any datagram a network hands it (every failure is one
`MalformedPacket` with a machine-friendly `reason`), and the source needs nothing a library
would add. Header extensions are kept as the raw profile and words (RFC 8285 elements are the
caller's business); padding is stripped from the payload and its length kept, so that
`parse_rtp(p.to_bytes()) == p`.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

VERSION = 2
HEADER_BYTES = 12
_HEADER = struct.Struct("!BBHII")
_EXTENSION_HEADER = struct.Struct("!HH")
_MAX_PADDING = 255                  # the padding count is one octet and counts itself


class MalformedPacket(Exception):
    """A datagram that is not a valid packet; `reason` is a short token for counters and logs."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet. The version is always 2, so it is a class constant rather than a field."""
    payload_type: int                      # 7 bits
    sequence: int                          # 16 bits
    timestamp: int                         # 32 bits, in the payload format's clock
    ssrc: int                              # 32 bits
    payload: bytes = b""                   # padding removed
    marker: bool = False
    csrcs: tuple[int, ...] = ()            # at most 15 contributing sources
    extension_profile: int | None = None   # the extension's 16 "defined by profile" bits; None when X is clear
    extension_data: bytes = b""            # the extension's words after its 4-byte header (a multiple of 4 bytes)
    padding: int = 0                       # padding octets after the payload, count octet included; 0: P clear

    version: ClassVar[int] = VERSION

    @property
    def has_padding(self) -> bool:
        return self.padding > 0

    @property
    def has_extension(self) -> bool:
        return self.extension_profile is not None

    def to_bytes(self) -> bytes:
        """The exact wire bytes; ValueError for a field out of its range."""
        _check_header(self)
        first = VERSION << 6 | self.has_padding << 5 | self.has_extension << 4 | len(self.csrcs)
        parts = [_HEADER.pack(first, self.marker << 7 | self.payload_type, self.sequence, self.timestamp, self.ssrc)]
        if self.csrcs:
            parts.append(struct.pack(f"!{len(self.csrcs)}I", *self.csrcs))
        if self.extension_profile is not None:
            parts.append(_EXTENSION_HEADER.pack(self.extension_profile, len(self.extension_data) // 4))
            parts.append(self.extension_data)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes((self.padding,)))
        return b"".join(parts)


def _check_bits(value: int, bits: int, name: str) -> None:
    if not 0 <= value < 1 << bits:
        raise ValueError(f"{name}: {value} does not fit in {bits} bits")


def _check_header(p: RtpPacket) -> None:
    _check_bits(p.payload_type, 7, "payload_type")
    _check_bits(p.sequence, 16, "sequence")
    _check_bits(p.timestamp, 32, "timestamp")
    _check_bits(p.ssrc, 32, "ssrc")
    if len(p.csrcs) > 15:
        raise ValueError(f"csrcs: {len(p.csrcs)} sources, at most 15 fit the CC field")
    for c in p.csrcs:
        _check_bits(c, 32, "csrc")
    if p.extension_profile is not None:
        _check_bits(p.extension_profile, 16, "extension_profile")
        if len(p.extension_data) % 4 or len(p.extension_data) // 4 >= 1 << 16:
            raise ValueError(f"extension_data: {len(p.extension_data)} bytes is not a 16-bit count of 32-bit words")
    elif p.extension_data:
        raise ValueError("extension_data without an extension_profile")
    if not 0 <= p.padding <= _MAX_PADDING:
        raise ValueError(f"padding: {p.padding} octets, the count octet holds 0..{_MAX_PADDING}")


def build_rtp(payload_type: int, sequence: int, timestamp: int, ssrc: int, payload: bytes = b"", *,
              marker: bool = False, csrcs: tuple[int, ...] = (), extension_profile: int | None = None,
              extension_data: bytes = b"", pad_to: int = 0) -> bytes:
    """A packet's wire bytes, padded to a multiple of `pad_to` bytes when given (as a block cipher needs)."""
    unpadded = HEADER_BYTES + 4 * len(csrcs) + len(payload)
    if extension_profile is not None:
        unpadded += 4 + len(extension_data)
    padding = -unpadded % pad_to if pad_to > 0 else 0
    return RtpPacket(payload_type, sequence, timestamp, ssrc, bytes(payload), marker, tuple(csrcs),
                     extension_profile, bytes(extension_data), padding).to_bytes()


def parse_rtp(data: bytes | bytearray | memoryview) -> RtpPacket:
    """The packet in `data`; MalformedPacket (and nothing else) for any datagram that is not one.

    Works on a memoryview so only the payload and extension words are copied.
    """
    view = memoryview(data).cast("B")
    size = len(view)
    if size < HEADER_BYTES:
        raise MalformedPacket("short", f"{size} bytes, a header is {HEADER_BYTES}")
    first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(view)
    if first >> 6 != VERSION:
        raise MalformedPacket("version", f"version {first >> 6}")
    count = first & 0x0F
    pos = HEADER_BYTES + 4 * count
    if pos > size:
        raise MalformedPacket("csrc", f"{count} CSRCs need {pos} bytes, have {size}")
    csrcs = struct.unpack_from(f"!{count}I", view, HEADER_BYTES) if count else ()
    profile, extension = None, b""
    if first & 0x10:
        if pos + 4 > size:
            raise MalformedPacket("extension", "no room for the extension header")
        profile, words = _EXTENSION_HEADER.unpack_from(view, pos)
        pos += 4
        if pos + 4 * words > size:
            raise MalformedPacket("extension", f"{words} extension words overrun the packet")
        extension = view[pos:pos + 4 * words].tobytes()
        pos += 4 * words
    padding = view[size - 1] if first & 0x20 else 0
    if first & 0x20 and not 0 < padding <= size - pos:
        raise MalformedPacket("padding", f"padding count {padding} with {size - pos} bytes after the header")
    return RtpPacket(second & 0x7F, sequence, timestamp, ssrc, view[pos:size - padding].tobytes(),
                     bool(second & 0x80), csrcs, profile, extension, padding)


def seq_delta(a: int, b: int) -> int:
    """a - b for 16-bit sequence numbers, wrapped into -32768..32767 (positive: a is newer)."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000
