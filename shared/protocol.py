"""Wire protocol between agents and the controller: msgpack frames, nothing about sockets.

A frame is the msgpack array `[PROTOCOL_VERSION, type, body]`. Bodies are maps whose
fields each message type documents below. `decode` raises `ProtocolError` on anything
malformed; receivers count that and drop the frame, they never die of it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import msgpack

from shared.metrics import METRIC_COUNT

PROTOCOL_VERSION = 1
MAX_FRAME_BYTES = 1 << 20  # a sample is ~1 KiB; anything this large is not ours


class MsgType(IntEnum):
    HELLO = 1       # agent -> controller: {station, extensions: [..], applied: {ext: version}, agent_version, pid, started_at}
    SAMPLE = 2      # agent -> controller: {station, extension, seq, measured_at, metrics: [68 values, catalog order], knob_version, conditions: {..}}
    KNOB_SET = 3    # controller -> agent: {station, extension, version, knobs: {name: value} (full set)}
    ACK = 4         # agent -> controller: {station, extension, version, ok, errors: [{field, problem}], applied_at?}
    HEARTBEAT = 5   # either way: {sent_at}
    EVALUATE = 6    # controller -> agent: {station, extension, request_id, candidates: [full knob sets]}
    EVALUATION = 7  # agent -> controller: {station, extension, request_id, ok, error?, window_s, trace_s,
                    #   conditions: {..}, results: [{windows: [[68 values] per window], send_replayed}]}


# Fields every body of a type must carry, and their Python types after decoding.
_REQUIRED: dict[MsgType, dict[str, type | tuple[type, ...]]] = {
    MsgType.HELLO: {"station": str, "extensions": list, "applied": dict},
    MsgType.SAMPLE: {"station": str, "extension": str, "seq": int, "measured_at": (int, float),
                     "metrics": list, "knob_version": int},
    MsgType.KNOB_SET: {"station": str, "extension": str, "version": int, "knobs": dict},
    MsgType.ACK: {"station": str, "extension": str, "version": int, "ok": bool, "errors": list},
    MsgType.HEARTBEAT: {"sent_at": (int, float)},
    MsgType.EVALUATE: {"station": str, "extension": str, "request_id": str, "candidates": list},
    MsgType.EVALUATION: {"station": str, "extension": str, "request_id": str, "ok": bool, "results": list},
}
MAX_CANDIDATES = 16   # knob sets per EVALUATE: 16 x 60 s of 1 s windows x 68 values stays far below MAX_FRAME_BYTES


class ProtocolError(ValueError):
    """A frame that is not a valid tpmon message. Count it, drop it, carry on."""


@dataclass
class Message:
    type: MsgType
    body: dict[str, Any] = field(default_factory=dict)


def encode(msg: Message) -> bytes:
    return msgpack.packb([PROTOCOL_VERSION, int(msg.type), msg.body], use_bin_type=True)


def decode(frame: bytes) -> Message:
    if len(frame) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(frame)} bytes exceeds {MAX_FRAME_BYTES}")
    try:
        obj = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise ProtocolError(f"not a msgpack frame: {exc.__class__.__name__}") from None
    if not (isinstance(obj, list) and len(obj) == 3):
        raise ProtocolError("frame is not [version, type, body]")
    version, mtype, body = obj
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {version!r} is not {PROTOCOL_VERSION}")
    try:
        mtype = MsgType(mtype)
    except (ValueError, TypeError):
        raise ProtocolError(f"unknown message type {mtype!r}") from None
    if not isinstance(body, dict):
        raise ProtocolError("body is not a map")
    for name, expected in _REQUIRED[mtype].items():
        value = body.get(name)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ProtocolError(f"{mtype.name.lower()}.{name} missing or of the wrong type")
    if mtype is MsgType.SAMPLE and len(body["metrics"]) != METRIC_COUNT:
        raise ProtocolError(f"sample.metrics has {len(body['metrics'])} values, expected {METRIC_COUNT}")
    if mtype is MsgType.EVALUATE and not all(isinstance(c, dict) for c in body["candidates"]):
        raise ProtocolError("evaluate.candidates must be a list of knob sets (maps)")
    if mtype is MsgType.EVALUATION:
        _check_evaluation(body)
    return Message(mtype, body)


# Small constructors so both sides spell bodies the same way.

def hello(station: str, extensions: list[str], applied: dict[str, int], **extra: Any) -> Message:
    return Message(MsgType.HELLO, {"station": station, "extensions": extensions, "applied": applied, **extra})


def sample(station: str, extension: str, seq: int, measured_at: float, metrics: list[Any],
           knob_version: int, conditions: dict[str, Any] | None = None) -> Message:
    return Message(MsgType.SAMPLE, {"station": station, "extension": extension, "seq": seq,
                                    "measured_at": measured_at, "metrics": metrics,
                                    "knob_version": knob_version, "conditions": conditions or {}})


def knob_set(station: str, extension: str, version: int, knobs: dict[str, Any]) -> Message:
    return Message(MsgType.KNOB_SET, {"station": station, "extension": extension, "version": version, "knobs": knobs})


def ack(station: str, extension: str, version: int, ok: bool, errors: list[dict[str, str]] | None = None,
        applied_at: float | None = None) -> Message:
    """`applied_at`: the agent's wall time when the set took effect (a frame boundary), when it did."""
    body: dict[str, Any] = {"station": station, "extension": extension, "version": version,
                            "ok": ok, "errors": errors or []}
    if applied_at is not None:
        body["applied_at"] = applied_at
    return Message(MsgType.ACK, body)


def heartbeat(sent_at: float) -> Message:
    return Message(MsgType.HEARTBEAT, {"sent_at": sent_at})


def evaluate(station: str, extension: str, request_id: str, candidates: list[dict[str, Any]]) -> Message:
    """Ask an agent to replay its recent trace of `extension` under each full knob set of `candidates`."""
    return Message(MsgType.EVALUATE, {"station": station, "extension": extension, "request_id": request_id,
                                      "candidates": candidates})


def evaluation(station: str, extension: str, request_id: str, ok: bool, results: list[dict[str, Any]] | None = None,
               error: str | None = None, **extra: Any) -> Message:
    """The replay's answer: per candidate its windows of 68 values (catalog order) and whether send knobs were
    re-simulated; `extra` carries window_s, trace_s and the trace's conditions."""
    body: dict[str, Any] = {"station": station, "extension": extension, "request_id": request_id, "ok": ok,
                            "results": results or [], **extra}
    if error is not None:
        body["error"] = error
    return Message(MsgType.EVALUATION, body)


def _check_evaluation(body: dict[str, Any]) -> None:
    for i, result in enumerate(body["results"]):
        windows = result.get("windows") if isinstance(result, dict) else None
        if not isinstance(windows, list) or not all(isinstance(w, list) and len(w) == METRIC_COUNT for w in windows):
            raise ProtocolError(f"evaluation.results[{i}].windows must be lists of {METRIC_COUNT} values")
