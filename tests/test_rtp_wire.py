"""RTP and RTCP wire formats: hand-made byte vectors from the RFC layouts, round trips, fuzzing, and aiortc as oracle."""
from __future__ import annotations

import os
import random
from types import ModuleType

import pytest

from agent.rtp.packet import MalformedPacket, RtpPacket, build_rtp, parse_rtp, seq_delta
from agent.rtp.rtcp import (
    UNAVAILABLE,
    Bye,
    Dlrr,
    DlrrItem,
    GenericNack,
    JitterBufferMode,
    MalformedRtcp,
    Plc,
    ReceiverReferenceTime,
    ReceiverReport,
    ReportBlock,
    Sdes,
    SdesChunk,
    SenderReport,
    Unknown,
    UnknownBlock,
    VoipMetrics,
    Xr,
    build_compound,
    compact_ntp,
    compact_to_seconds,
    ntp_from_unix,
    parse_compound,
    round_trip_time,
    seconds_to_compact,
    unix_from_ntp,
)

FUZZ_CASES = 5000


def _hex(text: str) -> bytes:
    return bytes.fromhex("".join(line.split("#")[0] for line in text.splitlines()))


def _aiortc() -> ModuleType:
    """aiortc's rtp module, the external oracle. Skipped locally when missing, a failure under CI."""
    try:
        from aiortc import rtp
    except ImportError as exc:
        message = f"aiortc is the RTP/RTCP oracle and is not importable: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return rtp


# --- RTP --------------------------------------------------------------------------------------------------------

# RFC 3550 §5.1 with CC=2, X=1 (RFC 8285 one-byte profile, one word) and three octets of padding.
RTP_VECTOR = _hex("""
    B2 E0 12 34     # V=2 P=1 X=1 CC=2 | M=1 PT=96 | sequence 0x1234
    DE AD BE EF     # timestamp
    11 22 33 44     # SSRC
    AA BB CC DD     # CSRC 1
    01 02 03 04     # CSRC 2
    BE DE 00 01     # extension profile 0xBEDE, 1 word
    10 AA 00 00     # element id 1, 1 octet (audio level: voice, 42 dB down), padding
    01 02 03 04 05  # payload
    00 00 03        # padding, its count last
""")
RTP_EXPECTED = RtpPacket(96, 0x1234, 0xDEADBEEF, 0x11223344, bytes([1, 2, 3, 4, 5]), marker=True,
                         csrcs=(0xAABBCCDD, 0x01020304), extension_profile=0xBEDE, extension_data=b"\x10\xaa\0\0",
                         padding=3)


def test_rtp_hand_vector_parses_and_builds_exactly():
    assert parse_rtp(RTP_VECTOR) == RTP_EXPECTED
    assert RTP_EXPECTED.to_bytes() == RTP_VECTOR
    built = build_rtp(96, 0x1234, 0xDEADBEEF, 0x11223344, bytes([1, 2, 3, 4, 5]), marker=True,
                      csrcs=(0xAABBCCDD, 0x01020304), extension_profile=0xBEDE, extension_data=b"\x10\xaa\0\0",
                      pad_to=4)
    assert built == RTP_VECTOR
    assert RTP_EXPECTED.has_padding and RTP_EXPECTED.has_extension and RtpPacket.version == 2


@pytest.mark.parametrize("packet", [
    RtpPacket(0, 0, 0, 0),
    RtpPacket(127, 0xFFFF, 0xFFFF_FFFF, 0xFFFF_FFFF, b"x" * 160, marker=True),
    RtpPacket(8, 7, 160, 99, b"\x00" * 3, csrcs=tuple(range(15))),
    RtpPacket(96, 1, 2, 3, b"", extension_profile=0x1000, extension_data=b""),   # X set, zero words
    RtpPacket(96, 1, 2, 3, b"pp", padding=1),                                     # the count octet alone
    RtpPacket(96, 1, 2, 3, b"", padding=255),
])
def test_rtp_round_trips(packet):
    assert parse_rtp(packet.to_bytes()) == packet
    assert parse_rtp(memoryview(bytearray(packet.to_bytes()))) == packet


def test_build_rtp_pads_to_the_multiple_asked():
    for size in range(0, 20):
        data = build_rtp(0, 1, 2, 3, bytes(size), pad_to=16)
        assert len(data) % 16 == 0
        assert parse_rtp(data).payload == bytes(size)
    assert not parse_rtp(build_rtp(0, 1, 2, 3, bytes(4), pad_to=16)).has_padding   # 16 already


@pytest.mark.parametrize("kwargs", [
    dict(payload_type=128), dict(sequence=1 << 16), dict(timestamp=-1), dict(ssrc=1 << 32),
    dict(csrcs=tuple(range(16))), dict(extension_profile=1, extension_data=b"abc"),
    dict(extension_data=b"abcd"), dict(padding=256),
])
def test_rtp_building_refuses_fields_out_of_range(kwargs):
    fields = dict(payload_type=0, sequence=0, timestamp=0, ssrc=0) | kwargs
    with pytest.raises(ValueError):
        RtpPacket(**fields).to_bytes()


@pytest.mark.parametrize("data, reason", [
    (b"", "short"),
    (RTP_VECTOR[:11], "short"),
    (bytes([0x40]) + RTP_VECTOR[1:], "version"),
    (bytes([0x8F]) + bytes(11), "csrc"),                        # 15 CSRCs promised, none there
    (bytes([0x90]) + bytes(11) + b"\xbe\xde", "extension"),     # extension header cut
    (bytes([0x90]) + bytes(11) + b"\xbe\xde\x00\x02" + bytes(4), "extension"),
    (bytes([0xA0]) + bytes(11) + b"\x00", "padding"),           # count 0
    (bytes([0xA0]) + bytes(11) + b"ab\x04", "padding"),         # count beyond the payload
    (bytes([0xA0]) + bytes(11), "padding"),                     # P set, nothing after the header
])
def test_rtp_malformed_reasons(data, reason):
    with pytest.raises(MalformedPacket) as err:
        parse_rtp(data)
    assert err.value.reason == reason


def _mutations(rng: random.Random, seeds: list[bytes], cases: int) -> list[bytes]:
    """Random byte strings, and valid packets with bytes flipped, cut, duplicated or appended."""
    out = []
    for i in range(cases):
        if i % 4 == 0:
            out.append(rng.randbytes(rng.randrange(0, 80)))
            continue
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, 4)):
            op = rng.randrange(4)
            if op == 0 and data:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif op == 1:
                del data[rng.randrange(len(data) + 1):]
            elif op == 2:
                data += rng.randbytes(rng.randrange(1, 9))
            elif data:
                at = rng.randrange(len(data))
                data[at:at] = data[at:at + rng.randrange(1, 8)]
        out.append(bytes(data))
    return out


def test_rtp_fuzz_raises_only_malformed_packet():
    seeds = [RTP_VECTOR, build_rtp(0, 1, 2, 3, b"abc"), build_rtp(96, 9, 9, 9, b"", csrcs=(1, 2, 3), pad_to=32)]
    parsed = 0
    for data in _mutations(random.Random(3550), seeds, FUZZ_CASES):
        try:
            packet = parse_rtp(data)
        except MalformedPacket as exc:
            assert exc.reason in {"short", "version", "csrc", "extension", "padding"}
            continue
        parsed += 1
        assert parse_rtp(packet.to_bytes()) == packet   # whatever parses rebuilds to the same packet
    assert parsed > FUZZ_CASES // 10


def test_seq_delta_wraps():
    assert seq_delta(5, 3) == 2 and seq_delta(3, 5) == -2
    assert seq_delta(0, 65535) == 1 and seq_delta(65535, 0) == -1
    assert seq_delta(32767, 0) == 32767 and seq_delta(32768, 0) == -32768


# --- RTCP: hand-made vectors ------------------------------------------------------------------------------------

# RFC 3550 §6.4.1: one report block, 13 words, so length 12.
SR_VECTOR = _hex("""
    81 C8 00 0C     # V=2 P=0 RC=1 | PT=200 | length 12
    01 02 03 04     # SSRC of sender
    E8 A1 B2 C3     # NTP timestamp, seconds
    80 00 00 00     # NTP timestamp, fraction (0.5)
    00 00 3E 80     # RTP timestamp 16000
    00 00 00 64     # sender's packet count 100
    00 00 3E 80     # sender's octet count 16000
    0A 0B 0C 0D     # SSRC_1
    40 FF FF FE     # fraction lost 64/256 | cumulative lost -2 (24-bit two's complement)
    00 01 00 05     # extended highest sequence number: 1 cycle, seq 5
    00 00 00 10     # interarrival jitter 16
    B1 C3 80 00     # LSR
    00 01 80 00     # DLSR 1.5 s
""")
SR_EXPECTED = SenderReport(0x01020304, 0xE8A1B2C3_80000000, 16000, 100, 16000,
                           (ReportBlock(0x0A0B0C0D, 64, -2, 0x10005, 16, 0xB1C38000, 0x18000),))

# RFC 4585 §6.2.1: 101, 103 and 116 are bits 0, 2 and 15 of the first PID's BLP.
NACK_VECTOR = _hex("""
    81 CD 00 04     # V=2 P=0 FMT=1 | PT=205 (RTPFB) | length 4
    01 02 03 04     # SSRC of packet sender
    0A 0B 0C 0D     # SSRC of media source
    00 64 80 05     # PID 100 | BLP 1000 0000 0000 0101
    00 C8 00 00     # PID 200 | BLP 0
""")
NACK_EXPECTED = GenericNack(0x01020304, 0x0A0B0C0D, (100, 101, 103, 116, 200))

# RFC 3611 §2 and §4.7: an XR with one VoIP Metrics block (block length 8), 11 words, so length 10.
XR_VECTOR = _hex("""
    80 CF 00 0A     # V=2 P=0 reserved | PT=207 (XR) | length 10
    01 02 03 04     # SSRC of the reporter
    07 00 00 08     # BT=7 | reserved | block length 8
    0A 0B 0C 0D     # SSRC of source
    0C 05 80 02     # loss rate 12/256 | discard rate 5/256 | burst density 128/256 | gap density 2/256
    00 78 13 88     # burst duration 120 ms | gap duration 5000 ms
    00 96 00 28     # round trip delay 150 ms | end system delay 40 ms
    EE C4 7F 10     # signal level -18 dBm | noise level -60 dBm | RERL unavailable | Gmin 16
    5D 7F 2A 29     # R factor 93 | ext. R factor unavailable | MOS-LQ 4.2 | MOS-CQ 4.1
    B5 00 00 3C     # RX config PLC=10 (enhanced) JBA=11 (adaptive) rate 5 | reserved | JB nominal 60 ms
    00 78 00 C8     # JB maximum 120 ms | JB abs max 200 ms
""")
VOIP_EXPECTED = VoipMetrics(0x0A0B0C0D, 12, 5, 128, 2, 120, 5000, 150, 40, -18, -60, UNAVAILABLE, 16, 93,
                            UNAVAILABLE, 42, 41, Plc.ENHANCED, JitterBufferMode.ADAPTIVE, 5, 60, 120, 200)
XR_EXPECTED = Xr(0x01020304, (VOIP_EXPECTED,))

# RFC 3611 §4.4 and §4.5: a Receiver Reference Time block and a DLRR block with one item.
XR_RTT_VECTOR = _hex("""
    80 CF 00 08     # XR, length 8
    01 02 03 04     # SSRC of the reporter
    04 00 00 02     # BT=4 | reserved | block length 2
    E8 A1 B2 C3     # NTP timestamp, seconds
    40 00 00 00     # NTP timestamp, fraction
    05 00 00 03     # BT=5 | reserved | block length 3
    0A 0B 0C 0D     # SSRC_1
    B2 C3 40 00     # last RR (compact NTP)
    00 00 80 00     # delay since last RR 0.5 s
""")
XR_RTT_EXPECTED = Xr(0x01020304, (ReceiverReferenceTime(0xE8A1B2C3_40000000),
                                  Dlrr((DlrrItem(0x0A0B0C0D, 0xB2C34000, 0x8000),))))


@pytest.mark.parametrize("vector, expected", [
    (SR_VECTOR, SR_EXPECTED), (NACK_VECTOR, NACK_EXPECTED), (XR_VECTOR, XR_EXPECTED),
    (XR_RTT_VECTOR, XR_RTT_EXPECTED),
], ids=["sr", "nack", "xr-voip", "xr-rrt-dlrr"])
def test_rtcp_hand_vectors(vector, expected):
    assert parse_compound(vector) == [expected]
    assert expected.to_bytes() == vector


def test_voip_metrics_from_measurements_gives_the_hand_vector():
    built = VoipMetrics.from_measurements(
        0x0A0B0C0D, loss_fraction=0.05, discard_fraction=0.02, burst_density_fraction=0.5,
        gap_density_fraction=0.01, burst_duration_ms=120, gap_duration_ms=5000, round_trip_delay_ms=150.2,
        end_system_delay_ms=40, signal_level_dbm=-18.2, noise_level_dbm=-60.4, rerl_db=None, r_factor=92.6,
        ext_r_factor=None, mos_lq_score=4.21, mos_cq_score=4.1, plc=Plc.ENHANCED, jb_mode=JitterBufferMode.ADAPTIVE,
        jb_rate=5, jb_nominal_ms=60, jb_maximum_ms=120, jb_abs_max_ms=200)
    assert built == VOIP_EXPECTED
    assert VoipMetrics.from_measurements(VOIP_EXPECTED.ssrc, **VOIP_EXPECTED.measurements()) == VOIP_EXPECTED
    assert VOIP_EXPECTED.measurements()["rerl_db"] is None
    assert VOIP_EXPECTED.measurements()["mos_lq_score"] == pytest.approx(4.2)


def test_voip_metrics_clamp_to_each_field_and_mark_unavailable():
    vm = VoipMetrics.from_measurements(
        1, loss_fraction=1.5, discard_fraction=-0.1, burst_density_fraction=float("nan"),
        gap_density_fraction=float("inf"), burst_duration_ms=1e9, round_trip_delay_ms=None,
        signal_level_dbm=-500, noise_level_dbm=300, rerl_db=200, r_factor=130, ext_r_factor=-5,
        mos_lq_score=0.5, mos_cq_score=9, jb_rate=99, jb_nominal_ms=-3, jb_abs_max_ms=float("nan"))
    assert (vm.loss_rate, vm.discard_rate, vm.burst_density, vm.gap_density) == (255, 0, 0, 255)
    assert vm.burst_duration == 0xFFFF and vm.round_trip_delay == 0
    assert (vm.signal_level, vm.noise_level, vm.rerl) == (-128, 126, 126)    # 127 stays the "unavailable" code
    assert (vm.r_factor, vm.ext_r_factor, vm.mos_lq, vm.mos_cq) == (100, 0, 10, 50)
    assert (vm.jb_rate, vm.jb_nominal, vm.jb_abs_max) == (15, 0, 0)
    nothing = VoipMetrics.from_measurements(2)
    assert (nothing.signal_level, nothing.noise_level, nothing.rerl, nothing.r_factor, nothing.ext_r_factor,
            nothing.mos_lq, nothing.mos_cq) == (UNAVAILABLE,) * 7
    assert parse_compound(Xr(3, (vm, nothing)).to_bytes()) == [Xr(3, (vm, nothing))]


# --- RTCP: round trips and the compound rules --------------------------------------------------------------------

ALL_TYPES = [
    SR_EXPECTED,
    SenderReport(1, 0, 0, 0, 0, tuple(ReportBlock(i, 255, -(1 << 23), 0xFFFF_FFFF, 7, 8, 9) for i in range(31))),
    SenderReport(1, 2, 3, 4, 5, extension=b"prof"),
    ReceiverReport(7),
    ReceiverReport(7, (ReportBlock(8, 0, (1 << 23) - 1, 65536, 0),), extension=b"12345678"),
    Sdes.of_cnames({1: "a", 2: "station-1@agent", 3: "ünïcode"}),
    Sdes((SdesChunk(5), SdesChunk(6, ((1, b"abcd"), (6, b"tpmon"), (8, b"\x03prv"))))),
    Sdes(),
    Bye(), Bye((1, 2, 3)), Bye((9,), "shutting down"), Bye((), "x" * 255),
    NACK_EXPECTED, GenericNack(1, 2), GenericNack(1, 2, (65534, 65535, 0, 1, 17)),
    XR_EXPECTED, XR_RTT_EXPECTED, Xr(4), Xr(4, (UnknownBlock(42, 3, b"12345678"), Dlrr())),
    Unknown(204, 3, b"\x00\x00\x00\x01NAMEdata"), Unknown(206, 1, b"\x00\x00\x00\x01\x00\x00\x00\x02"),
    Unknown(205, 15, b"\x00" * 12), Unknown(250, 0, b""),
]


@pytest.mark.parametrize("packet", ALL_TYPES, ids=lambda p: type(p).__name__)
def test_rtcp_round_trips_every_type(packet):
    assert parse_compound(packet.to_bytes()) == [packet]
    assert parse_compound(packet.to_bytes(padding=8)) == [packet]


def test_compound_round_trip_with_padding_on_the_last_packet_only():
    items = [SR_EXPECTED, Sdes.of_cnames({1: "abc"}), XR_EXPECTED, NACK_EXPECTED, Bye((1,), "bye")]
    for pad_to in (0, 4, 16, 64, 256):
        data = build_compound(items, pad_to=pad_to)
        assert pad_to == 0 or len(data) % pad_to == 0
        parsed = parse_compound(data)
        assert parsed == items and parsed.starts_with_report
    padded, flags, pos = build_compound(items, pad_to=64), [], 0
    while pos < len(padded):
        flags.append(bool(padded[pos] & 0x20))
        pos += 4 + 4 * int.from_bytes(padded[pos + 2:pos + 4], "big")
    assert flags == [False, False, False, False, True]


def test_nack_packs_across_the_sequence_wrap_in_one_pair():
    nack = GenericNack(1, 2, (0, 65535, 2, 65534))
    assert nack.to_bytes()[12:] == bytes.fromhex("FFFE 000B")   # PID 65534, then 65535, 0 and 2
    assert parse_compound(nack.to_bytes())[0].lost == (65534, 65535, 0, 2)
    spread = GenericNack(1, 2, tuple(range(0, 1000, 7)))
    assert parse_compound(spread.to_bytes())[0].lost == tuple(range(0, 1000, 7))


def test_building_requires_sr_or_rr_first_and_parsing_flags_it():
    for items in ([], [NACK_EXPECTED], [Bye((1,)), ReceiverReport(1)]):
        with pytest.raises(ValueError):
            build_compound(items)
    lone = parse_compound(NACK_EXPECTED.to_bytes())     # reduced-size RTCP (RFC 5506) parses, flagged
    assert lone == [NACK_EXPECTED] and not lone.starts_with_report


@pytest.mark.parametrize("packet", [
    SenderReport(1 << 32, 0, 0, 0, 0), SenderReport(1, 1 << 64, 0, 0, 0),
    SenderReport(1, 0, 0, 0, 0, tuple(ReportBlock(i, 0, 0, 0, 0) for i in range(32))),
    ReceiverReport(1, (ReportBlock(1, 256, 0, 0, 0),)), ReceiverReport(1, (ReportBlock(1, 0, 1 << 23, 0, 0),)),
    ReceiverReport(1, extension=b"abc"), Sdes((SdesChunk(1, ((0, b"x"),)),)), Sdes((SdesChunk(1, ((1, bytes(256)),)),)),
    Bye((), "x" * 256), GenericNack(1, 2, (65536,)), VoipMetrics(1, loss_rate=256), VoipMetrics(1, signal_level=128),
    VoipMetrics(1, jb_rate=16), Unknown(204, 32, b""), Unknown(204, 0, b"abc"),
], ids=lambda p: type(p).__name__)
def test_rtcp_building_refuses_fields_out_of_range(packet):
    with pytest.raises(ValueError):
        (Xr(1, (packet,)) if isinstance(packet, VoipMetrics) else packet).to_bytes()


@pytest.mark.parametrize("data, reason", [
    (b"", "short"), (b"\x81\xc9\x00", "short"), (SR_VECTOR + b"\x80", "short"),
    (b"\x41\xc9\x00\x01" + bytes(4), "version"),
    (SR_VECTOR[:-4], "length"),
    (b"\xa0\xc9\x00\x01\x00\x00\x00\x00", "padding"), (b"\xa0\xc9\x00\x01\x00\x00\x00\x05", "padding"),
    (b"\xa0\xc9\x00\x00", "padding"),
    (b"\x80\xc8\x00\x01" + bytes(4), "sr"), (b"\x81\xc8\x00\x06" + bytes(24), "sr"),
    (b"\x80\xc9\x00\x00", "rr"), (b"\x81\xc9\x00\x01" + bytes(4), "rr"),
    (b"\x81\xca\x00\x01\x00\x00\x00\x01", "sdes"),                        # chunk without a null item
    (b"\x81\xca\x00\x02\x00\x00\x00\x01\x01\x09ab", "sdes"),              # item longer than the packet
    (b"\x82\xca\x00\x02\x00\x00\x00\x01\x00\x00\x00\x00", "sdes"),        # second chunk missing
    (b"\x82\xcb\x00\x01\x00\x00\x00\x01", "bye"), (b"\x81\xcb\x00\x02\x00\x00\x00\x01\x09abc", "bye"),
    (b"\x81\xcd\x00\x01\x00\x00\x00\x01", "nack"),
    (b"\x80\xcf\x00\x00", "xr"), (b"\x80\xcf\x00\x02\x00\x00\x00\x01\x07\x00\x00\x01", "xr"),
    (b"\x80\xcf\x00\x03\x00\x00\x00\x01\x07\x00\x00\x01\x00\x00\x00\x00", "xr"),   # VoIP Metrics of 1 word
    (b"\x80\xcf\x00\x03\x00\x00\x00\x01\x05\x00\x00\x01\x00\x00\x00\x00", "xr"),   # DLRR not whole items
], ids=lambda v: v if isinstance(v, str) else None)
def test_rtcp_malformed_reasons(data, reason):
    with pytest.raises(MalformedRtcp) as err:
        parse_compound(data)
    assert err.value.reason == reason
    assert isinstance(err.value, MalformedPacket)


def test_rtcp_fuzz_raises_only_malformed_rtcp():
    seeds = [SR_VECTOR, NACK_VECTOR, XR_VECTOR, XR_RTT_VECTOR, build_compound(ALL_TYPES[3:8], pad_to=32),
             build_compound([ReceiverReport(1)] + ALL_TYPES[8:])]
    rng = random.Random(3611)
    cases = _mutations(rng, seeds, FUZZ_CASES)
    # Headers that look right make the fuzzer reach the type parsers rather than stop at the version check.
    cases += [bytes([0x80 | rng.randrange(32), rng.randrange(200, 208)]) + rng.randbytes(rng.randrange(2, 60))
              for _ in range(FUZZ_CASES // 5)]
    parsed = 0
    for data in cases:
        try:
            parse_compound(data)
        except MalformedRtcp:
            continue
        parsed += 1
    assert parsed > len(cases) // 20


# --- NTP time and the round trip ----------------------------------------------------------------------------------

def test_ntp_timestamps():
    assert ntp_from_unix(0) == 2_208_988_800 << 32
    assert ntp_from_unix(1.5) == (2_208_988_801 << 32) | 0x8000_0000
    for t in (0.0, 1_764_000_000.25, 2_085_978_495.75, 2_085_978_496.5, 3_000_000_000.125):   # across the 2036 wrap
        assert unix_from_ntp(ntp_from_unix(t)) == pytest.approx(t, abs=1e-6)
    assert ntp_from_unix(2_085_978_496.5) >> 32 == 0                          # 2036-02-07: NTP era 1 begins
    assert compact_ntp(0xE8A1B2C3_80000000) == 0xB2C38000
    assert seconds_to_compact(1.5) == 0x18000 and seconds_to_compact(-1) == 0
    assert seconds_to_compact(1e9) == 0xFFFF_FFFF and compact_to_seconds(0x18000) == 1.5


def test_round_trip_time_rfc3550_example_and_wrap():
    # RFC 3550 §6.4.1, Figure 2: A = 0xb7108000, LSR = 0xb7052000, DLSR = 0x00054000 -> 0x00062000 = 6.125 s.
    assert round_trip_time(0xB7108000, 0xB7052000, 0x00054000) == 6.125
    assert round_trip_time(0x0000_0100, 0xFFFF_FF00, 0x80) == 0x180 / 65536   # the 16-bit seconds wrapped
    assert round_trip_time(0x1234_0000, 0, 0) is None                       # no SR received yet
    assert round_trip_time(0x1000_0000, 0x1000_0000, 0x10) == 0.0           # the peer's DLSR ran over


# --- aiortc as oracle ----------------------------------------------------------------------------------------------

def _extension_map(rtp: ModuleType):
    from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
    uris = {1: "urn:ietf:params:rtp-hdrext:ssrc-audio-level", 2: "urn:ietf:params:rtp-hdrext:sdes:mid",
            3: "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"}
    extension_map = rtp.HeaderExtensionsMap()
    extension_map.configure(RTCRtpParameters(
        headerExtensions=[RTCRtpHeaderExtensionParameters(id=i, uri=uri) for i, uri in uris.items()]))
    return extension_map


def test_aiortc_parses_our_rtp():
    rtp = _aiortc()
    # One-byte elements: audio level (id 1) voice at 42 dB down, transport-cc (id 3) 0x1234, then a padding octet.
    data = build_rtp(111, 65535, 0xFFFF_FFF0, 0xCAFEBABE, b"opus frame", marker=True, csrcs=(5, 6, 7),
                     extension_profile=0xBEDE, extension_data=b"\x10\xaa\x31\x12\x34\x00\x00\x00", pad_to=32)
    theirs = rtp.RtpPacket.parse(data, _extension_map(rtp))
    assert (theirs.version, theirs.payload_type, theirs.marker, theirs.sequence_number, theirs.timestamp,
            theirs.ssrc) == (2, 111, 1, 65535, 0xFFFF_FFF0, 0xCAFEBABE)
    assert theirs.csrc == [5, 6, 7] and theirs.payload == b"opus frame"
    assert theirs.padding_size == parse_rtp(data).padding and len(data) % 32 == 0
    assert theirs.extensions.audio_level == (True, 42) and theirs.extensions.transport_sequence_number == 0x1234


@pytest.mark.parametrize("mid", ["a", "a-mid-longer-than-sixteen"], ids=["one-byte", "two-byte"])
def test_we_parse_aiortc_rtp(mid):
    rtp = _aiortc()
    extension_map = _extension_map(rtp)
    theirs = rtp.RtpPacket(payload_type=0, marker=1, sequence_number=4242, timestamp=160 * 9, ssrc=77, payload=b"u" * 160)
    theirs.csrc = [1, 0xFFFF_FFFF]
    theirs.extensions.audio_level = (False, 30)
    theirs.extensions.mid = mid
    theirs.padding_size = 7
    ours = parse_rtp(theirs.serialize(extension_map))
    profile, extension_data = extension_map.set(theirs.extensions)
    assert ours == RtpPacket(0, 4242, 1440, 77, b"u" * 160, marker=True, csrcs=(1, 0xFFFF_FFFF),
                             extension_profile=profile, extension_data=extension_data, padding=7)
    assert profile == (0xBEDE if len(mid) <= 16 else 0x1000)


def _their_block(rtp: ModuleType, block: ReportBlock):
    return rtp.RtcpReceiverInfo(ssrc=block.ssrc, fraction_lost=block.fraction_lost,
                                packets_lost=block.cumulative_lost, highest_sequence=block.highest_seq,
                                jitter=block.jitter, lsr=block.lsr, dlsr=block.dlsr)


def test_aiortc_parses_our_compound():
    rtp = _aiortc()
    rr = ReceiverReport(9, (ReportBlock(1, 3, 4, 5, 6, 7, 8), ReportBlock(2, 0, -(1 << 23), 0, 0)))
    items = [SR_EXPECTED, rr, Sdes.of_cnames({1: "abcd", 2: "cname-of-8"}), XR_EXPECTED,
             GenericNack(1, 2, (10, 11, 26, 27, 300)), Bye((1, 2), "done")]
    theirs = rtp.RtcpPacket.parse(build_compound(items, pad_to=64))
    assert [type(p).__name__ for p in theirs] == ["RtcpSrPacket", "RtcpRrPacket", "RtcpSdesPacket",
                                                  "RtcpRtpfbPacket", "RtcpByePacket"]   # XR skipped by its length
    sr, their_rr, sdes, nack, bye = theirs
    assert (sr.ssrc, sr.sender_info.ntp_timestamp, sr.sender_info.rtp_timestamp, sr.sender_info.packet_count,
            sr.sender_info.octet_count) == (0x01020304, 0xE8A1B2C3_80000000, 16000, 100, 16000)
    assert sr.reports == [_their_block(rtp, b) for b in SR_EXPECTED.reports]
    assert their_rr.ssrc == 9 and their_rr.reports == [_their_block(rtp, b) for b in rr.reports]
    assert [(c.ssrc, c.items) for c in sdes.chunks] == [(1, [(1, b"abcd")]), (2, [(1, b"cname-of-8")])]
    assert (nack.fmt, nack.ssrc, nack.media_ssrc, nack.lost) == (1, 1, 2, [10, 11, 26, 27, 300])
    assert bye.sources == [1, 2]


def test_we_parse_aiortc_rtcp():
    rtp = _aiortc()
    blocks = [ReportBlock(11, 25, -7, 0x2_0010, 33, 0xAABBCCDD, 0x10000), ReportBlock(12, 0, 500, 9, 0)]
    sender_info = rtp.RtcpSenderInfo(ntp_timestamp=ntp_from_unix(1_764_790_000.5), rtp_timestamp=48000,
                                     packet_count=50, octet_count=8000)
    data = b"".join(bytes(p) for p in [
        rtp.RtcpSrPacket(ssrc=3, sender_info=sender_info, reports=[_their_block(rtp, b) for b in blocks]),
        rtp.RtcpRrPacket(ssrc=4, reports=[_their_block(rtp, blocks[1])]),
        rtp.RtcpSdesPacket(chunks=[rtp.RtcpSourceInfo(ssrc=3, items=[(1, b"station-7")])]),
        rtp.RtcpRtpfbPacket(fmt=1, ssrc=4, media_ssrc=3, lost=[1000, 1001, 1016, 1017, 1040]),
        rtp.RtcpPsfbPacket(fmt=1, ssrc=4, media_ssrc=3),
        rtp.RtcpByePacket(sources=[3]),
    ])
    ours = parse_compound(data)
    assert ours == [
        SenderReport(3, sender_info.ntp_timestamp, 48000, 50, 8000, tuple(blocks)),
        ReceiverReport(4, (blocks[1],)),
        Sdes.of_cnames({3: "station-7"}),
        GenericNack(4, 3, (1000, 1001, 1016, 1017, 1040)),
        Unknown(206, 1, bytes.fromhex("00000004 00000003")),   # PLI, kept whole
        Bye((3,)),
    ]
    assert ours.starts_with_report and ours[2].chunks[0].cname == "station-7"
