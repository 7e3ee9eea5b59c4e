"""The bytes the stream sends: one metrics-update per shape and tick, events once per event, both transports.

Both transports carry the same JSON; only the envelope differs:
- plain WebSocket: `{"event": "<name>", "data": <data>}`
- Socket.IO v5 over Engine.IO v4: `42["<name>",<data>]` ("4" message, "2" event, default namespace)

A metrics-update's data is `{"seq", "timestamp", "stations", "subscription"}`: the serialized
part (everything but the subscription id) is shared by every subscriber of the shape, and
the id is a few bytes appended per client, so a thousand subscribers cost one serialization
and one deflate, not a thousand.
"""
from __future__ import annotations

import json
from enum import Enum
from typing import Any

from controller.stream import frames
from controller.stream.frames import SegmentCache


class Kind(str, Enum):
    WS = "ws"
    SIO = "sio"


_HEADS = {Kind.WS: b'{"event":"metrics-update","data":', Kind.SIO: b'42["metrics-update",'}
_CLOSERS = {Kind.WS: b"}}", Kind.SIO: b"}]"}


def dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def event_payload(kind: Kind, name: str, data: Any) -> bytes:
    """One event in `kind`'s envelope (data already JSON-ready)."""
    body = dumps(data)
    if kind is Kind.WS:
        return b'{"event":"' + name.encode() + b'","data":' + body + b"}"
    return b'42["' + name.encode() + b'",' + body + b"]"


def update_tail(kind: Kind, subscription_id: str) -> bytes:
    """A subscriber's own bytes after the shared part (ids are [A-Za-z0-9_.:-], nothing to escape)."""
    return b',"subscription":"' + subscription_id.encode() + b'"' + _CLOSERS[kind]


class Update:
    """One metrics-update of one shape: shared bytes per transport kind, deflated at most once per window size."""

    __slots__ = ("seq", "body", "compress", "_shared", "_deflated")

    def __init__(self, seq: int, body: bytes, compress: bool) -> None:
        self.seq = seq
        self.body = body              # `{"seq":…,"timestamp":…,"stations":{…}` without its closing brace
        self.compress = compress
        self._shared: dict[Kind, bytes] = {}
        self._deflated: dict[tuple[Kind, int], bytes] = {}

    def frame(self, kind: Kind, tail: bytes, wbits: int, segments: SegmentCache) -> bytes:
        """The whole WebSocket frame for one subscriber (`wbits` 0: the connection has no permessage-deflate)."""
        shared = self._shared.get(kind)
        if shared is None:
            shared = self._shared[kind] = _HEADS[kind] + self.body
        if not (self.compress and wbits):
            return b"".join((frames.header(len(shared) + len(tail)), shared, tail))
        deflated = self._deflated.get((kind, wbits))
        if deflated is None:
            deflated = self._deflated[(kind, wbits)] = frames.deflate_segment(shared, wbits, last=False)
        end = segments.get(tail, wbits, last=True)
        return b"".join((frames.header(len(deflated) + len(end), compressed=True), deflated, end))

    def message(self, kind: Kind, tail: bytes) -> bytes:
        """The message without a WebSocket frame (Engine.IO long-polling carries it as text)."""
        return _HEADS[kind] + self.body + tail


def update_body(snapshot: dict[str, Any], full_body: bytes, seq: int, stations: frozenset[str] | None,
                metrics: dict[str, frozenset[str]] | None) -> bytes:
    """`{"seq":…,"timestamp":…,"stations":{…}` for a shape; the whole snapshot reuses its serialized bytes."""
    if stations is None and metrics is None:
        return b'{"seq":' + str(seq).encode() + b"," + full_body[1:-1]
    out: dict[str, Any] = {}
    for station, extensions in snapshot["stations"].items():
        if stations is None or station in stations:
            out[station] = {ext: _slice_point(entry, metrics) for ext, entry in extensions.items()}
    return dumps({"seq": seq, "timestamp": snapshot["timestamp"], "stations": out})[:-1]


def _slice_point(entry: dict[str, Any], metrics: dict[str, frozenset[str]] | None) -> dict[str, Any]:
    values = entry["metrics"]
    if metrics is None or values is None:
        return entry
    return {"metrics": {cat: {n: v for n, v in by_name.items() if n in metrics[cat]}
                        for cat, by_name in values.items() if cat in metrics},
            "status": entry["status"], "measuredAt": entry["measuredAt"]}
