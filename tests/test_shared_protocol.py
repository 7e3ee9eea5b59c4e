"""Wire protocol: round trips for every message type; malformed frames raise ProtocolError."""
import msgpack
import pytest

from shared import protocol
from shared.metrics import METRIC_COUNT
from shared.protocol import MsgType, ProtocolError


def _messages():
    yield protocol.hello("Station-1", ["3333", "4444"], {"3333": 2, "4444": 0}, pid=42)
    yield protocol.sample("Station-1", "3333", 7, 1700000000.25, [0.5] * METRIC_COUNT, 2, {"loss": 0.01})
    yield protocol.knob_set("Station-1", "4444", 3, {"agc_enabled": True})
    yield protocol.ack("Station-1", "4444", 3, False, [{"field": "x", "problem": "unknown knob"}])
    yield protocol.heartbeat(1700000000.0)
    yield protocol.evaluate("Station-1", "3333", "ev1", [{"agc_enabled": True}])
    yield protocol.evaluation("Station-1", "3333", "ev1", True, [{"windows": [[0.5] * METRIC_COUNT], "send_replayed": True}],
                              window_s=1.0, trace_s=60.0, conditions={"jitter_ms": 4.0})


@pytest.mark.parametrize("msg", list(_messages()), ids=lambda m: m.type.name)
def test_round_trip(msg):
    back = protocol.decode(protocol.encode(msg))
    assert back.type is msg.type and back.body == msg.body


def test_every_message_type_has_a_constructor_round_trip():
    assert {m.type for m in _messages()} == set(MsgType)


@pytest.mark.parametrize("frame", [
    b"", b"\xc1", b"garbage bytes \x00\xff", msgpack.packb([1, 2]), msgpack.packb({"a": 1}),
    msgpack.packb([99, 1, {}]), msgpack.packb([1, 77, {}]), msgpack.packb([1, 1, []]),
    msgpack.packb([1, int(MsgType.SAMPLE), {"station": "Station-1", "extension": "3333", "seq": 1,
                                             "measured_at": 1.0, "metrics": [1, 2], "knob_version": 0}]),
    msgpack.packb([1, int(MsgType.ACK), {"station": "S", "extension": "3333", "version": True,
                                          "ok": True, "errors": []}]),
    msgpack.packb([1, int(MsgType.HEARTBEAT), {"sent_at": "now"}]),
    msgpack.packb([1, int(MsgType.EVALUATE), {"station": "Station-1", "extension": "3333", "request_id": "e",
                                               "candidates": [1, 2]}]),
    msgpack.packb([1, int(MsgType.EVALUATION), {"station": "Station-1", "extension": "3333", "request_id": "e",
                                                 "ok": True, "results": [{"windows": [[1, 2]]}]}]),
    msgpack.packb([1, int(MsgType.EVALUATION), {"station": "Station-1", "extension": "3333", "request_id": "e",
                                                 "ok": True, "results": ["x"]}]),
])
def test_malformed_frames_raise_protocol_error(frame):
    with pytest.raises(ProtocolError):
        protocol.decode(frame)
