"""The templates every controller ships: partial knob sets tuned on the agent's simulator, read-only.

Each value was chosen by measuring the reference pipeline (agent.pipeline with the demo's
path and room conditions) before and after, and tests/test_templates_builtin.py measures it
again: a template whose name no longer matches what it does fails there. The figures in
the descriptions are from that simulator; a real station's will differ in size, not sign.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.knobs import validate

BUILTIN_AUTHOR = "tpmon"


@dataclass(frozen=True)
class BuiltinTemplate:
    id: str
    name: str
    category: str
    description: str
    config: dict[str, Any]


BUILTINS: tuple[BuiltinTemplate, ...] = (
    BuiltinTemplate(
        "low-latency", "Low latency", "latency",
        "Smallest safe delays: adaptive playout starting at 20 ms and capped at 120 ms, 40 ms prefetch, no "
        "compressor or limiter lookahead. On a clean path end-to-end latency falls from about 115 to 90 ms with "
        "no more underflows; on a path with heavy jitter it trades some dropouts for delay.",
        {"adaptive_buffering": True, "playout_delay": 20, "prefetch_ms": 40, "jitter_buffer_depth": 120,
         "compressor_lookahead": 0, "limiter_lookahead": 0}),
    BuiltinTemplate(
        "noisy-room", "Noisy room", "noise",
        "Noise reduction that keeps learning the background while people talk (VAD-gated tracking off, so "
        "a background that changes during speech is followed at once), the deepest gain floor and 18 dB more "
        "on bands at the noise floor, click suppression on. With room noise at -32 dBFS the output SNR goes "
        "from about 33 dB (the defaults) to 42 dB and the noise level from about -52 to -61 dBFS.",
        {"nr_enabled": True, "nr_voice_activity_detection": False, "nr_level": "very_high",
         "nr_type": "stationary", "nr_stationary_level": 18, "nr_transient_suppression": True}),
    BuiltinTemplate(
        "echo-heavy-room", "Echo-heavy room", "echo",
        "Echo cancellation with a 150 ms tail (converges faster than the 200 ms default while still covering "
        "echo paths up to 150 ms), aggressive residual-echo suppression at full depth, comfort noise, and no "
        "added reverb. With loud far-end leakage (-8 dB) on a 120 ms path, SINAD rises by about 1 dB.",
        {"aec_enabled": True, "aec_filter_length": 150, "aec_nlp_mode": "aggressive",
         "aec_suppression_level": "high", "aec_comfort_noise": True, "reverb_amount": 0}),
    BuiltinTemplate(
        "bandwidth-saver", "Bandwidth saver", "bandwidth",
        "Fewer, larger packets (40 ms, 640 bytes: half the header overhead), one FEC parity per 10 packets "
        "instead of 5, one retransmission at most. Wire throughput falls by about 14% (174 to 150 kbit/s) for "
        "40 ms more latency and slightly less loss protection.",
        {"packet_size": 640, "fec_enabled": True, "fec_percentage": 10, "max_retransmits": 1}),
    BuiltinTemplate(
        "lossy-network", "Lossy network", "network",
        "Repair for a lossy path: one FEC parity per 4 packets, up to 5 retransmission requests over 400 ms, "
        "a 120 ms playout floor so repairs arrive in time, and pacing at 2x the media rate so parity and "
        "retransmissions do not queue behind the media. With 8% bursty loss, loss after repair falls from "
        "about 9% to 4% and MOS rises from 2.6 to 3.6, for about 80 ms of latency and 5% more bandwidth.",
        {"fec_enabled": True, "fec_percentage": 25, "pacing_rate": 2.0, "max_retransmits": 5,
         "retransmit_timeout": 400, "playout_delay": 120}),
)
BUILTINS_BY_ID: dict[str, BuiltinTemplate] = {t.id: t for t in BUILTINS}


def check_builtins() -> list[str]:
    """Problems of the built-in templates against today's catalog (none, or the release is broken)."""
    problems = []
    for template in BUILTINS:
        _, found = validate(template.config)
        problems += [f"{template.id}: {p}" for p in found]
    return problems
