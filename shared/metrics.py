"""The metric catalog: the 68 metrics of every monitoring point, declared once.

Names and categories follow the plan's snapshot example field for field. Every other
part of tpmon (the agent's measurement and exporter, the snapshot layout, the API's
catalog, later the history store and the optimizer's features) derives from this table.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any


class MetricType(str, Enum):
    FLOAT = "float"
    INT = "int"
    BOOL = "bool"
    TIMESTAMP = "timestamp"  # epoch seconds on the wire, ISO-8601 or null in JSON


class MetricKind(str, Enum):
    GAUGE = "gauge"        # a level at measurement time (or over the last sample window)
    COUNTER = "counter"    # cumulative since the stream started; only goes up
    DELTA = "delta"        # events counted during the last sample window


CATEGORIES: tuple[str, ...] = ("buffer", "latency", "packet", "audioQuality", "performance")


@dataclass(frozen=True)
class Metric:
    category: str
    name: str
    unit: str
    type: MetricType
    kind: MetricKind
    minimum: float | None
    maximum: float | None
    measured: str          # how the agent computes it, in one sentence
    estimate: bool = False  # True when the value is a model's estimate, not a measurement
    nullable: bool = False  # True when the value is null (JSON null, omitted by the exporter) while undefined
    # Resolution: agents round values to this many decimal places (0 for ints and bools). Far finer than
    # the measurement resolves, so nothing meaningful is lost; it keeps full-precision float noise out of
    # the wire and lets the history store encode every value exactly as a small integer (see `quantize`).
    decimals: int = 0

    @property
    def key(self) -> str:
        """Dotted id used in `?fields=` and in subscriptions: `latency.end_to_end`."""
        return f"{self.category}.{self.name}"

    @property
    def metric_id(self) -> str:
        """Underscore id used in thresholds and alerts: `latency_end_to_end`."""
        return f"{self.category}_{self.name}"

    def within_bounds(self, value: Any) -> bool:
        """True when a measured value is of this metric's type and inside its bounds (None only if nullable)."""
        if value is None:
            return self.nullable
        if self.type is MetricType.BOOL:
            return isinstance(value, bool)
        if self.type is MetricType.TIMESTAMP:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.minimum is not None and value < self.minimum:
            return False
        return self.maximum is None or value <= self.maximum

    @property
    def resolution(self) -> float:
        """The smallest step a value of this metric takes: 10^-decimals (1 for ints and bools)."""
        return 10.0 ** -self.decimals

    def quantize(self, value: Any) -> Any:
        """`value` as an agent sends it: rounded to `decimals` (+0.0: no negative zero); None and bools unchanged."""
        if value is None or self.type is MetricType.BOOL or self.type is MetricType.INT:
            return value
        return round(float(value), self.decimals) + 0.0

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc.update(type=self.type.value, kind=self.kind.value, key=self.key, metricId=self.metric_id)
        return doc


F, I, B, T = MetricType.FLOAT, MetricType.INT, MetricType.BOOL, MetricType.TIMESTAMP
G, C, D = MetricKind.GAUGE, MetricKind.COUNTER, MetricKind.DELTA
INF = None

# (name, unit, type, kind, min, max, how it is measured)
_BUFFER = [
    ("overflow_count", "events", I, C, 0, INF, "Jitter buffer inserts refused or evicted because the buffer was at max_buffer_size."),
    ("underflow_count", "events", I, C, 0, INF, "Playout ticks that found no packet due (concealed with silence)."),
    ("current_size", "bytes", I, G, 0, INF, "Audio bytes held in the jitter buffer at measurement time."),
    ("max_size", "bytes", I, G, 0, INF, "Largest buffer occupancy seen during the last sample window."),
    ("min_size", "bytes", I, G, 0, INF, "Smallest buffer occupancy seen during the last sample window."),
    ("avg_level", "%", F, G, 0, 100, "Time-weighted mean buffer fill as a percentage of the buffer's capacity over the window."),
    ("peak_level", "%", F, G, 0, 100, "Peak buffer fill as a percentage of capacity over the window."),
    ("drain_rate", "%", F, G, 0, INF, "Bytes played out of the buffer during the window as a percentage of the nominal media rate (16 bytes/ms times the window's duration); concealed slots play no bytes."),
    ("fill_rate", "%", F, G, 0, INF, "Bytes stored in the buffer during the window (received or FEC-recovered packets it accepted) as a percentage of the nominal media rate (16 bytes/ms times the window's duration)."),
    ("stability_score", "ratio", F, G, 0, 1, "1 minus the coefficient of variation (time-weighted stddev / mean) of the buffer level over the window, clipped to [0, 1]; 0 when the buffer stayed empty (starved)."),
    ("last_overflow_time", "timestamp", T, G, INF, INF, "Wall-clock time of the most recent overflow, null if none."),
    ("last_underflow_time", "timestamp", T, G, INF, INF, "Wall-clock time of the most recent underflow, null if none."),
    ("total_processed_bytes", "bytes", I, C, 0, INF, "Audio bytes played out of the buffer since the stream started."),
    ("dropped_frames", "frames", I, C, 0, INF, "Packets discarded by the buffer: late (after their playout time), duplicate, evicted, refused on overflow or flushed on a resync."),
    ("corrupted_frames", "frames", I, C, 0, INF, "Packets whose payload failed its checksum."),
]
_LATENCY = [
    ("end_to_end", "ms", F, G, 0, INF, "Mean capture-to-output time of the packets played in the window (packetisation, pacing, network, buffer and playout wait) plus latency.processing; held from the previous window when none played."),
    ("processing", "ms", F, G, 0, INF, "Mean wall time the DSP chain spent per 20 ms frame in the window (monotonic clock), plus the chain's algorithmic delay (noise-reduction overlap, compressor and limiter lookahead)."),
    ("network", "ms", F, G, 0, INF, "Mean one-way transit time (arrival minus send time) of the intact media packets received in the window; held from the previous window when none arrived."),
    ("codec", "ms", F, G, 0, INF, "Packetization delay: the audio duration carried by one packet, from packet_size."),
    ("buffer", "ms", F, G, 0, INF, "Mean time the packets played in the window waited between arrival and leaving the output (jitter buffer plus playout queue); held from the previous window when none played."),
    ("jitter", "ms", F, G, 0, INF, "RFC 3550 interarrival jitter estimate (J += (|D| - J) / 16)."),
    ("max_latency", "ms", F, G, 0, INF, "Largest end-to-end latency (as latency.end_to_end) of a packet played in the window; held from the previous window when none played."),
    ("min_latency", "ms", F, G, 0, INF, "Smallest end-to-end latency (as latency.end_to_end) of a packet played in the window; held from the previous window when none played."),
    ("avg_latency", "ms", F, G, 0, INF, "Mean end-to-end latency of the packets played in the last 10 s (streaming estimator)."),
    ("p95_latency", "ms", F, G, 0, INF, "95th percentile of end-to-end latency of the packets played in the last 10 s (streaming estimator, <1% error)."),
    ("p99_latency", "ms", F, G, 0, INF, "99th percentile of end-to-end latency of the packets played in the last 10 s (streaming estimator, <1% error)."),
    ("stability", "ratio", F, G, 0, 1, "1 / (1 + stddev/mean) of end-to-end latency of the packets played in the last 10 s."),
]
_PACKET = [
    ("loss_rate", "ratio", F, G, 0, 1, "Cumulative packet.loss_count / packet.sent_count (RFC 3550 fraction lost, after retransmission and FEC recovery)."),
    ("loss_count", "packets", I, C, 0, INF, "Packets expected from the sequence range but never received nor recovered."),
    ("received_count", "packets", I, C, 0, INF, "Distinct intact media packets received, first copies or retransmissions (duplicates and corrupted packets excluded)."),
    ("sent_count", "packets", I, C, 0, INF, "Media packets expected from the sequence numbers seen (RFC 3550: extended highest - first + 1); parity and retransmissions not counted."),
    ("duplicate_count", "packets", I, C, 0, INF, "Packets received with a sequence number already seen."),
    ("out_of_order_count", "packets", I, C, 0, INF, "Packets received with a sequence number below the highest seen so far."),
    ("corrected_count", "packets", I, C, 0, INF, "Lost packets reconstructed from FEC parity and accepted by the jitter buffer."),
    ("avg_size", "bytes", F, G, 0, INF, "Mean on-the-wire size (payload + RTP 12 + UDP 8 + IPv4 20 bytes; a parity packet's payload includes its 14-byte FEC header) of every packet received in the window: media, FEC parity, retransmissions, duplicates, corrupted; null when none arrived."),
    ("max_size", "bytes", I, G, 0, INF, "Largest on-the-wire size (as packet.avg_size) of a packet received in the window; null when none arrived."),
    ("min_size", "bytes", I, G, 0, INF, "Smallest on-the-wire size (as packet.avg_size) of a packet received in the window; null when none arrived."),
    ("throughput_kbps", "kbit/s", F, G, 0, INF, "On-the-wire bits of every packet received in the window (as packet.avg_size) per second of the window."),
    ("goodput_kbps", "kbit/s", F, G, 0, INF, "Audio payload bits of the distinct intact media packets received in the window (first copies and useful retransmissions; no headers, parity, duplicates or corrupted packets) per second of the window; never above throughput_kbps. FEC-recovered audio shows in corrected_count, not here."),
    ("overhead_percent", "%", F, G, 0, 100, "Share of the window's received bytes that are not goodput: headers, FEC parity, duplicates, corrupted packets; null when none arrived."),
    ("efficiency", "ratio", F, G, 0, 1, "goodput_kbps / throughput_kbps over the window (= 1 - overhead_percent / 100); null when nothing arrived."),
]
_AUDIO = [
    ("level_rms", "dBFS", F, G, -120, 0, "RMS level of the processed output over the window."),
    ("peak_level", "dBFS", F, G, -120, 0, "Largest absolute sample of the processed output over the window."),
    ("snr", "dB", F, G, -60, 120, "Speech power over noise power of the processed output, in dB: frames split by the voice activity detector, each power averaged over about 1 s, the speech frames' power minus the noise power taken as the speech's; 120 when the non-speech frames are digital silence."),
    ("thd", "ratio", F, G, 0, 1, "THD-R of the longest voiced run (40 ms or more) of the window's output: sqrt(energy at harmonics 2..N / energy at harmonics 1..N) at the autocorrelation pitch, harmonics below 7.5 kHz; for speech it includes the voice's own harmonics, so watch its change, not its level; held from the last window that had a voiced run."),
    ("sinad", "dB", F, G, -60, 120, "Signal over noise-and-distortion against the simulator's clean reference aligned by the known delay: the least-squares-scaled reference is the signal, the residual the noise and distortion, powers averaged over about 1 s; held while the reference is silent; a window of silent output while the reference speaks counts as all error (a dropout)."),
    ("pesq_score", "MOS-LQO", F, G, -0.5, 4.64, "ITU-T P.862.2 wideband PESQ of the last 3 s of output against the clean reference (PyPI pesq), every pesq_interval_s off the frame path; the latest score, null until the first one is computed."),
    ("mos_score", "MOS", F, G, 1, 4.5, "ITU-T G.107 E-model (simplified, burst-aware): delay latency.avg_latency, loss and BurstR from the last 500 playout slots, a slot concealed or a packet the buffer evicted unplayed counting as lost, G.711 with PLC (Ie 0, Bpl 25.1).", True),
    ("frequency_response_deviation", "dB", F, G, 0, INF, "RMS over 10 log-spaced bands (62.5 Hz - 8 kHz, 0.7 octave each) of the output's minus the clean reference's band level in dB, the mean difference (overall gain) removed; band powers averaged over about 1 s, bands more than 60 dB below the reference's loudest skipped."),
    ("spectral_centroid", "Hz", F, G, 0, 8000, "Power-weighted mean frequency of the window's output spectrum; 0 for a silent window."),
    ("spectral_rolloff", "Hz", F, G, 0, 8000, "Frequency below which 85% of the window's output spectral energy lies; 0 for a silent window."),
    ("zero_crossing_rate", "ratio", F, G, 0, 1, "Sign changes per sample of the window's processed output."),
    ("clipping_detected", "bool", B, G, INF, INF, "True when any output sample in the window reached full scale (|x| >= 0.999)."),
    ("silence_detected", "bool", B, G, INF, INF, "True when the window's output RMS stayed below -60 dBFS."),
    ("noise_level", "dBFS", F, G, -120, 0, "RMS level of the window's output frames the voice activity detector marks as non-speech; the running (about 1 s) estimate when every frame was speech."),
    ("voice_activity_ratio", "ratio", F, G, 0, 1, "Share of the window's 20 ms output frames marked as speech by a statistical-model detector: per-band likelihood ratios (Sohn) against a noise spectrum tracked on non-speech frames within 3 dB of a minimum-statistics floor (last 3.2 s), one frame of hangover."),
]
_PERFORMANCE = [
    ("cpu_usage", "%", F, G, 0, INF, "Agent process CPU time (user + system, getrusage, microsecond resolution) since the previous sample over the wall time elapsed, percent of one core."),
    ("memory_usage", "%", F, G, 0, 100, "Agent process resident memory as a percentage of host memory (psutil)."),
    ("thread_count", "threads", I, G, 0, INF, "Threads of the agent process (psutil)."),
    ("handle_count", "handles", I, G, 0, INF, "Open file descriptors of the agent process (psutil)."),
    ("processing_time_ms", "ms", F, G, 0, INF, "Total wall time of this extension's 20 ms steps during the window: simulated capture and network, receiver (jitter buffer, FEC, decode) and DSP chain."),
    ("queue_depth", "packets", I, G, 0, INF, "Packets in flight in the simulated network (sent, not yet arrived) at measurement time."),
    ("context_switches", "switches", I, D, 0, INF, "Voluntary plus involuntary context switches of the agent process since the previous sample (psutil)."),
    ("page_faults", "faults", I, D, 0, INF, "Page faults of the agent process since the previous sample (getrusage minor + major)."),
    ("io_operations", "ops", I, D, 0, INF, "Read plus write syscalls of the agent process since the previous sample (psutil io_counters; 0 where the OS hides them)."),
    ("cache_hits", "ratio", F, G, 0, 1, "Hit ratio of the DSP chain's filter-design cache since the agent started: cumulative hits / lookups (biquad designs reused vs computed; lookups happen on knob changes and in the dynamic voice stages); null before the first lookup."),
    ("gc_collections", "collections", I, D, 0, INF, "Python garbage collections (all generations) since the previous sample (gc.callbacks)."),
    ("gc_pause_ms", "ms", F, G, 0, INF, "Total time spent in garbage collection since the previous sample (gc.callbacks)."),
]


# Decimal places by unit (see Metric.decimals), each far finer than what the measurement resolves:
# packet timings come from RTP-style timestamps (62.5 us at 16 kHz) -> 0.01 ms; levels in dB are
# meaningful to ~0.1 dB -> 0.01; MOS and PESQ scores to ~0.01 -> 0.001; ratios -> 1e-5; percentages of
# buffers and rates (one byte of a 150 ms window is ~0.04 %) -> 0.01 %; frequencies -> 0.1 Hz;
# wall-clock times -> 1 ms. Ints and bools are exact (0).
_DECIMALS_BY_UNIT: dict[str, int] = {
    "ms": 2, "%": 2, "ratio": 5, "dB": 2, "dBFS": 2, "MOS": 3, "MOS-LQO": 3, "Hz": 1, "kbit/s": 2,
    "bytes": 2, "timestamp": 3,
}
# Finer where the source is finer: CPU timings (monotonic clock, getrusage microseconds) to 1 us, resident
# memory to ~100 bytes of a 1 GB host, cumulative ratios over millions of packets or lookups to 1e-6.
_DECIMALS_BY_KEY: dict[str, int] = {
    "latency.processing": 3, "performance.processing_time_ms": 3, "performance.gc_pause_ms": 3,
    "performance.cpu_usage": 3, "performance.memory_usage": 5, "packet.loss_rate": 6, "performance.cache_hits": 6,
}


def _decimals(key: str, unit: str, mtype: MetricType) -> int:
    if mtype in (MetricType.INT, MetricType.BOOL):
        return 0
    return _DECIMALS_BY_KEY.get(key, _DECIMALS_BY_UNIT[unit])


# Values that are undefined at times (a ratio with nothing to divide by, a score not computed yet): null
# then, never a placeholder number. Timestamps are nullable too ("never happened").
_NULLABLE = frozenset({
    "packet.avg_size", "packet.max_size", "packet.min_size", "packet.overhead_percent", "packet.efficiency",
    "audioQuality.pesq_score", "performance.cache_hits",
})


def _build() -> tuple[Metric, ...]:
    rows: list[Metric] = []
    for category, table in zip(CATEGORIES, (_BUFFER, _LATENCY, _PACKET, _AUDIO, _PERFORMANCE)):
        for row in table:
            name, unit, mtype, kind, lo, hi, how, *est = row
            key = f"{category}.{name}"
            nullable = mtype is MetricType.TIMESTAMP or key in _NULLABLE
            rows.append(Metric(category, name, unit, mtype, kind, lo, hi, how, bool(est and est[0]), nullable,
                               _decimals(key, unit, mtype)))
    return tuple(rows)


METRICS: tuple[Metric, ...] = _build()
METRICS_BY_KEY: dict[str, Metric] = {m.key: m for m in METRICS}
METRICS_BY_ID: dict[str, Metric] = {m.metric_id: m for m in METRICS}
METRIC_COUNT = len(METRICS)


def metrics_in(category: str) -> tuple[Metric, ...]:
    return tuple(m for m in METRICS if m.category == category)


def nest(flat: dict[str, Any], keys: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """Turn {"latency.end_to_end": v} into {"latency": {"end_to_end": v}} in catalog order."""
    wanted = set(keys) if keys is not None else None
    out: dict[str, dict[str, Any]] = {}
    for m in METRICS:
        if (wanted is None or m.key in wanted) and m.key in flat:
            out.setdefault(m.category, {})[m.name] = flat[m.key]
    return out


def out_of_bounds(flat: dict[str, Any]) -> list[str]:
    """Catalog keys that are missing from `flat` or whose value breaks the catalog's bounds."""
    return [m.key for m in METRICS if m.key not in flat or not m.within_bounds(flat[m.key])]
