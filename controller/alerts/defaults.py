"""The shipped default thresholds: data, each with the reason for its levels; operators override them.

A default's id is its metricId, so `POST /api/v1/config/metrics` for that metric without
stations or extensions replaces it (the change is stored; the table here stays the
fallback for whatever an operator never touched). A scoped threshold overrides a default
for its points only. The levels were checked against the demo: every healthy station stays
clear of them with a wide margin, and each degraded one (Station-4 loss, Station-7 jitter,
Station-11 long path and noise) crosses several within a minute. README: "Thresholds and alerts".
"""
from __future__ import annotations

from dataclasses import dataclass

from controller.alerts.rules import Direction, Rule, default_direction
from shared.metrics import METRICS_BY_ID


@dataclass(frozen=True)
class Default:
    metric_id: str
    name: str
    warning: float
    critical: float
    window_ms: int
    duration_ms: int
    clear_duration_ms: int
    hysteresis: float
    why: str


DEFAULTS: tuple[Default, ...] = (
    Default("latency_end_to_end", "End-to-end latency", 200, 300, 10_000, 30_000, 30_000, 20,
            "ITU-T G.114: up to 150 ms one way is transparent, beyond 400 ms unusable for conversation; "
            "an interpreter's turn-taking suffers well before that. The plan's own example is 300 ms critical; "
            "healthy demo points run at ~135 ms."),
    Default("latency_jitter", "Interarrival jitter", 30, 50, 10_000, 30_000, 30_000, 5,
            "Common VoIP guidance keeps jitter under 30 ms; beyond 50 ms (2.5 frames of 20 ms) the jitter "
            "buffer must grow or conceal. Healthy demo points average 3-8 ms."),
    Default("packet_loss_rate", "Packet loss rate", 0.02, 0.05, 0, 30_000, 30_000, 0.005,
            "Loss after FEC and retransmission, cumulative per stream (catalog). G.711 with concealment "
            "degrades audibly from ~2% and badly past 5% (E-model Bpl 25.1). Healthy demo points: <= 0.6%."),
    Default("audioQuality_mos_score", "MOS (E-model)", 3.6, 3.1, 10_000, 30_000, 30_000, 0.1,
            "G.107 user-satisfaction bands: MOS 3.6 (R 70) is where many users are dissatisfied, 3.1 (R 60) "
            "where nearly all are. Healthy demo points score 4.2-4.4."),
    Default("audioQuality_snr", "Signal-to-noise ratio", 15, 10, 10_000, 30_000, 30_000, 2,
            "Speech recognition and interpreters degrade noticeably below 15 dB SNR and badly below 10 dB. "
            "Healthy demo points measure 25-45 dB."),
    Default("buffer_underflow_count", "Jitter buffer underflows", 30, 150, 60_000, 15_000, 30_000, 5,
            "Each underflow is a concealed 20 ms slot: 30 a minute is 1% of the 3000 slots, 150 is 5%, "
            "an audibly broken stream. Healthy demo points see 0-10 a minute."),
    Default("buffer_overflow_count", "Jitter buffer overflows", 5, 10, 60_000, 15_000, 30_000, 1,
            "The plan's example levels (5 and 10), read per minute: each overflow discards audio because "
            "the buffer was full. Healthy demo points see none."),
    Default("performance_cpu_usage", "Agent CPU", 80, 95, 30_000, 60_000, 30_000, 5,
            "Percent of one core for the agent process: near 100% the 20 ms frame loop cannot keep up. "
            "The demo's agents use 3-6%; short spikes (start-up, PESQ) are smoothed by the 30 s mean."),
)


def default_rules() -> dict[str, Rule]:
    """The shipped rules by id (every point, enabled, revision 0 so any operator change wins a tie)."""
    out = {}
    for d in DEFAULTS:
        out[d.metric_id] = Rule(
            id=d.metric_id, name=d.name, metric_id=d.metric_id, direction=default_direction(d.metric_id),
            warning=float(d.warning), critical=float(d.critical), duration_ms=d.duration_ms,
            clear_duration_ms=d.clear_duration_ms, hysteresis=float(d.hysteresis), window_ms=d.window_ms,
            enabled=True, stations=None, extensions=None, source="default")
    return out


assert all(d.metric_id in METRICS_BY_ID for d in DEFAULTS)
assert all((d.critical > d.warning) == (default_direction(d.metric_id) is Direction.ABOVE) for d in DEFAULTS)
