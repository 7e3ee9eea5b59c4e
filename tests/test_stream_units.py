"""Stream pieces without sockets: subscriptions, frames and deflate, payload slices, the backpressure policy."""
from __future__ import annotations

import json
import zlib

import pytest

from controller.security.principal import ANONYMOUS_ADMIN, Permission, Principal
from controller.stream import frames
from controller.stream.client import StreamClient, StreamLimits, TooSlow
from controller.stream.frames import SegmentCache
from controller.stream.hub import event_stations
from controller.stream.payloads import Kind, Update, event_payload, update_body, update_tail
from controller.stream.subscriptions import ALIASES, StreamError, parse
from shared.metrics import METRICS
from shared.topology import Topology

TOPOLOGY = Topology(12)
SCOPED = Principal("op", "viewer", frozenset({Permission.READ_METRICS}), frozenset({"Station-2", "Station-5"}), 2e9)


def sub(data, principal: Principal = ANONYMOUS_ADMIN, tick_ms: int = 150):
    return parse(data, principal, TOPOLOGY, "s1", tick_ms)


# --- subscriptions -------------------------------------------------------------------------------

def test_defaults_are_everything_the_token_sees_every_second():
    s = sub({})
    assert (s.id, s.stations, s.metrics, s.interval_ms, s.compression) == ("s1", None, None, 1000, False)
    assert s.events == {"knob-changed", "alert", "status-change", "optimization-complete"}
    assert sub({}, SCOPED).stations == ("Station-2", "Station-5")
    assert sub({"stations": ["*"]}, SCOPED).stations == ("Station-2", "Station-5")


def test_the_plans_subscription_with_its_aliases():
    s = sub({"stations": ["Station-3", "Station-1"], "metrics": ["latency", "packet_loss", "audio_quality"],
             "interval": 1000, "compression": True})
    assert s.stations == ("Station-1", "Station-3")  # topology order: equal sets make equal shapes
    categories = {key.split(".")[0] for key in s.metrics}
    assert categories == {"latency", "packet", "audioQuality"}
    assert set(ALIASES["packet_loss"]) <= set(s.metrics) and "packet.loss_rate" in s.metrics
    assert sub({"metrics": ["packet.loss_rate", "latency_end_to_end"]}).metrics == ("latency.end_to_end",
                                                                                   "packet.loss_rate")
    assert sub({"metrics": [m.key for m in METRICS]}).metrics is None  # all of them: the shared full shape
    assert sub({"stations": list(TOPOLOGY.stations)}).stations is None


def test_equal_requests_have_equal_shapes_whatever_the_id():
    a = sub({"id": "dash-1", "metrics": ["packet", "latency"], "stations": ["Station-2", "Station-1"]})
    b = parse({"metrics": ["latency", "packet"], "stations": ["Station-1", "Station-2"]}, ANONYMOUS_ADMIN,
              TOPOLOGY, "s9", 150)
    assert a.shape == b.shape and a.id != b.id


@pytest.mark.parametrize("data, field, words", [
    ({"interval": 100}, "interval", "below the minimum of 150 ms"),
    ({"interval": 149.5}, "interval", "whole number"),
    ({"interval": "fast"}, "interval", "whole number"),
    ({"metrics": ["latency", "jitterbug"]}, "metrics.1", "unknown metric 'jitterbug'"),
    ({"metrics": "latency"}, "metrics", "should be a list"),
    ({"stations": ["Station-99"]}, "stations.0", "unknown station 'Station-99'"),
    ({"compression": "yes"}, "compression", "true or false"),
    ({"events": ["alerts"]}, "events", "unknown event alerts"),
    ({"id": "has space"}, "id", "1-64 characters"),
    ({"station": ["Station-1"]}, "station", "unknown field"),
])
def test_bad_subscriptions_name_every_field_at_fault(data, field, words):
    with pytest.raises(StreamError) as caught:
        sub(data)
    assert caught.value.code == "validation_failed"
    assert any(d["field"] == field and words in d["problem"] for d in caught.value.details), caught.value.details


def test_the_minimum_interval_is_never_below_the_tick():
    with pytest.raises(StreamError, match="below the minimum of 300 ms"):
        sub({"interval": 200}, tick_ms=300)


def test_a_station_outside_the_scope_refuses_the_whole_subscription():
    with pytest.raises(StreamError) as caught:
        sub({"stations": ["Station-2", "Station-3"]}, SCOPED)
    assert caught.value.code == "forbidden" and "Station-3" in caught.value.message
    assert caught.value.details == [{"field": "stations.1", "problem": "Station-3 is outside the token's stations"}]


# --- frames --------------------------------------------------------------------------------------

@pytest.mark.parametrize("size, header_len", [(10, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)])
def test_frame_headers_carry_the_length(size, header_len):
    frame = frames.frame(b"x" * size)
    assert len(frame) == size + header_len and frame[0] == 0x81
    assert frames.frame(b"x", compressed=True)[0] == 0xC1  # RSV1 marks a compressed message


def test_close_frames_carry_code_and_a_reason_cut_to_fit():
    frame = frames.close_frame(4408, "é" * 100)
    assert frame[0] == 0x88 and int.from_bytes(frame[2:4], "big") == 4408 and len(frame) <= 127
    frame[4:].decode()  # never cut inside a character


def test_segments_deflated_apart_inflate_as_one_message_in_a_stream_with_context_takeover():
    receiver = zlib.decompressobj(-15)  # one window across messages, as a browser keeps it
    cache = SegmentCache()
    for n in range(3):
        inner = json.dumps({"seq": n, "stations": {"Station-1": list(range(200))}})[:-1].encode()
        shared = b'{"event":"metrics-update","data":' + inner
        tail = update_tail(Kind.WS, "dash")
        payload = frames.deflate_segment(shared, 15, last=False) + cache.get(tail, 15, last=True)
        message = json.loads(receiver.decompress(payload + b"\x00\x00\xff\xff"))
        assert message["data"]["seq"] == n and message["data"]["subscription"] == "dash"
    # a receiver's window smaller than ours would be refused at the handshake; ours follows it
    assert frames.inflate(frames.deflate_segment(b"abc" * 1000, 9, last=True), 9) == b"abc" * 1000


def test_an_update_is_serialized_once_and_only_the_tail_differs_per_client():
    snapshot = {"timestamp": "2026-01-01T00:00:00.000Z", "stations": {"Station-1": {"extension_3333": {
        "metrics": {"latency": {"end_to_end": 80.5, "jitter": 2.0}, "packet": {"loss_rate": 0.01}},
        "status": "active", "measuredAt": "2026-01-01T00:00:00.000Z"}}, "Station-2": {}}}
    full = json.dumps(snapshot, separators=(",", ":")).encode()
    whole = update_body(snapshot, full, 7, None, None)
    assert json.loads(whole + b"}") == {"seq": 7, **snapshot}
    sliced = json.loads(update_body(snapshot, full, 7, frozenset({"Station-1"}), {"latency": frozenset({"jitter"})})
                        + b"}")
    assert sliced["stations"] == {"Station-1": {"extension_3333": {
        "metrics": {"latency": {"jitter": 2.0}}, "status": "active", "measuredAt": "2026-01-01T00:00:00.000Z"}}}
    update, cache = Update(7, whole, compress=True), SegmentCache()
    ws = update.frame(Kind.WS, update_tail(Kind.WS, "a"), 0, cache)
    assert json.loads(ws[4:] if ws[1] == 126 else ws[2:])["data"]["subscription"] == "a"
    sio = update.frame(Kind.SIO, update_tail(Kind.SIO, "b"), 15, cache)
    message = frames.inflate(sio[2:] if sio[1] < 126 else sio[4:])
    assert message.startswith(b'42["metrics-update",') and json.loads(message[2:])[1]["subscription"] == "b"
    assert update.frame(Kind.SIO, update_tail(Kind.SIO, "b"), 15, cache) == sio  # cached, not re-deflated


def test_events_in_both_envelopes():
    data = {"station": "Station-1", "status": "active"}
    assert json.loads(event_payload(Kind.WS, "status-change", data)) == {"event": "status-change", "data": data}
    assert json.loads(event_payload(Kind.SIO, "status-change", data)[2:]) == ["status-change", data]


def test_the_stations_an_event_is_about():
    assert event_stations({"station": "Station-1"}) == ("Station-1",)
    assert event_stations({"action": "created", "alert": {"station": "Station-4"}}) == ("Station-4",)
    assert event_stations({"stations": ["Station-1", "Station-2"]}) == ("Station-1", "Station-2")
    assert event_stations({"analysisId": "x", "summary": {}}) is None


# --- the backpressure policy, with a connection that takes writes only when told -----------------

class FakeConnection:
    kind = Kind.WS
    address = "127.0.0.1"

    def __init__(self) -> None:
        self.taking = True
        self.written: list[bytes] = []

    def ready(self, limit: int) -> bool:
        return self.taking

    def open(self) -> bool:
        return True

    def wbits(self) -> int:
        return 0

    def send_update(self, update, tail, segments) -> None:
        self.written.append(update.body + tail)

    def send_text(self, payload: bytes) -> None:
        self.written.append(payload)

    def send_final(self, payload: bytes) -> None:
        self.written.append(payload)

    async def close(self, code: int, reason: str, timeout: float) -> None:
        pass


def make_client(**limits) -> tuple[StreamClient, FakeConnection]:
    conn = FakeConnection()
    client = StreamClient(conn, ANONYMOUS_ADMIN, StreamLimits(**limits), now=0.0)
    return client, conn


def test_a_slow_client_gets_the_latest_update_and_every_event_in_order():
    client, conn = make_client()
    entry = client.add(sub({"id": "a"}))
    cache = SegmentCache()
    conn.taking = False
    for seq in (1, 2, 3):
        client.offer_update(entry, Update(seq, b'{"seq":%d' % seq, False), cache, now=seq)
    client.offer(b"event-1", cache, now=3)
    client.offer(b"event-2", cache, now=3)
    assert conn.written == [] and client.skipped_updates == 2
    conn.taking = True
    client.flush(cache, now=4)
    assert conn.written == [b"event-1", b"event-2", b'{"seq":3' + entry.tail]
    assert client.sent_updates == 1 and client.sent_events == 2


def test_too_many_waiting_events_is_too_slow():
    client, conn = make_client(max_pending_events=3)
    conn.taking = False
    for n in range(3):
        client.offer(b"e%d" % n, SegmentCache(), now=0)
    with pytest.raises(TooSlow, match="4 events waited"):
        client.offer(b"e3", SegmentCache(), now=0)


def test_taking_nothing_for_the_stall_timeout_is_too_slow_but_a_slow_reader_is_not():
    client, conn = make_client(stall_timeout_s=10)
    entry = client.add(sub({"id": "a"}))
    cache = SegmentCache()
    for now in range(0, 30):  # takes one update in three: slow, but it makes progress
        conn.taking = now % 3 == 0
        client.offer_update(entry, Update(now, b"{}", False), cache, now=now)
        client.check_stall(now)
    conn.taking = False
    client.offer_update(entry, Update(99, b"{}", False), cache, now=31)
    client.check_stall(37)  # the last write was at 27
    with pytest.raises(TooSlow, match="stopped reading"):
        client.check_stall(38)


def test_events_reach_clients_whose_scope_and_subscriptions_cover_them():
    client, _ = make_client()
    assert not client.wants("alert", ("Station-1",))  # no subscription, no events
    client.add(sub({"stations": ["Station-1"], "events": ["alert"]}))
    assert client.wants("alert", ("Station-1",)) and not client.wants("alert", ("Station-2",))
    assert not client.wants("knob-changed", ("Station-1",))
    assert client.wants("alert", None)  # about no station: unscoped tokens only
    scoped = StreamClient(FakeConnection(), SCOPED, StreamLimits(), 0.0)
    scoped.add(sub({}, SCOPED))
    assert scoped.wants("alert", ("Station-2",)) and not scoped.wants("alert", ("Station-3",))
    assert not scoped.wants("alert", ("Station-2", "Station-3"))  # one unseen station is enough to withhold it
    assert not scoped.wants("optimization-complete", None)


def test_no_request_however_malformed_breaks_the_handler(tmp_path):
    from controller.clock import ManualClock
    from controller.events import EventBus
    from controller.security.audit import AuditLog
    from controller.security.guard import Guard
    from controller.security.ratelimit import RateLimiter
    from controller.stream.hub import StreamHub
    from controller.stream.requests import handle

    clock = ManualClock()
    hub = StreamHub(TOPOLOGY, None, EventBus(), clock, 150, StreamLimits())  # type: ignore[arg-type]
    audit = AuditLog(tmp_path / "audit.log", clock.wall)
    guard = Guard(None, RateLimiter(10**9, 10**9, clock.monotonic), None, audit)  # type: ignore[arg-type]
    client = hub.connect(FakeConnection(), ANONYMOUS_ADMIN)
    weird = [None, 1, "x", [], [1, 2], {"id": []}, {"id": {"a": 1}}, {"stations": {"a": 1}}, {"stations": [None, 3]},
             {"metrics": [["latency"]]}, {"interval": float("inf")}, {"interval": float("nan")}, {"interval": 10**30},
             {"events": "alert"}, {"compression": None}, {"id": "x" * 100}, {"": 1}]
    for event in ("subscribe", "unsubscribe", "ping", 7, None, ["subscribe"]):
        for data in weird:
            name, reply = handle(hub, guard, client, event, data)
            assert name in ("subscribed", "unsubscribed", "pong", "error"), (event, data, name)
            if name == "error":
                assert reply["code"] != "internal_error", (event, data, reply)
