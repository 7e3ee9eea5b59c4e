"""WebSocket frames the stream writes itself (RFC 6455), compressed once per payload (RFC 7692).

aiohttp's writer compresses per connection with a shared window (context takeover), so one
update sent to a thousand clients would be deflated a thousand times. Here a payload is
deflated once with a fresh compressor and the same bytes go to every client that negotiated
permessage-deflate: a message that never refers back before its own start inflates the same
whatever the receiver's window holds. A message may be several such segments (the shared
update, then a client's own few bytes): each ends on a sync flush, so the next one starts on
a byte boundary, and the last loses the 00 00 ff ff the receiver puts back (RFC 7692 7.2.1).

Every frame is one `transport.write`, so frames from here and aiohttp's control frames
(pings, pongs, close) interleave only between frames, never inside one.
"""
from __future__ import annotations

import struct
import zlib

TEXT, BINARY, CLOSE = 0x1, 0x2, 0x8
_FIN, _RSV1 = 0x80, 0x40
_SYNC_TAIL = b"\x00\x00\xff\xff"
DEFLATE_LEVEL = 6        # once per update and shape, not per client: the better ratio is worth ~1 ms
MAX_REASON_BYTES = 123   # a close frame's payload is at most 125 bytes, 2 of them the code
_CACHE_LIMIT = 4096      # small per-client segments remembered (subscription ids repeat across clients)


def header(length: int, opcode: int = TEXT, compressed: bool = False) -> bytes:
    first = _FIN | (_RSV1 if compressed else 0) | opcode
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


def frame(payload: bytes, opcode: int = TEXT, compressed: bool = False) -> bytes:
    return header(len(payload), opcode, compressed) + payload


def close_frame(code: int, reason: str) -> bytes:
    encoded = reason.encode()[:MAX_REASON_BYTES]
    return frame(struct.pack("!H", code) + encoded.decode(errors="ignore").encode(), CLOSE)


def deflate_segment(data: bytes, wbits: int, last: bool) -> bytes:
    """`data` deflated on its own, ending on a sync flush; the last segment of a message loses the tail."""
    compressor = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, -wbits)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return out[:-4] if last and out.endswith(_SYNC_TAIL) else out


class SegmentCache:
    """Deflated small segments (a subscription's closing bytes) by content and window size."""

    def __init__(self) -> None:
        self._segments: dict[tuple[bytes, int, bool], bytes] = {}

    def get(self, data: bytes, wbits: int, last: bool) -> bytes:
        key = (data, wbits, last)
        found = self._segments.get(key)
        if found is None:
            if len(self._segments) >= _CACHE_LIMIT:
                self._segments.clear()
            found = self._segments[key] = deflate_segment(data, wbits, last)
        return found


def inflate(payload: bytes, wbits: int = 15) -> bytes:
    """What a receiver does with a compressed message (tests and benchmarks use it)."""
    return zlib.decompressobj(-wbits).decompress(payload + _SYNC_TAIL)
