"""The metric catalog: the 68 metrics of every monitoring point, declared once.

Names and categories follow the plan's snapshot example field for field. Every other
part of tpmon (the agent's measurement and exporter, the snapshot layout, the API's
catalog, later the history store and the optimizer's features) derives from this table.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any, Iterable


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

    @property
    def key(self) -> str:
        """Dotted id used in `?fields=` and in subscriptions: `latency.end_to_end`."""
        return f"{self.category}.{self.name}"

    @property
    def metric_id(self) -> str:
        """Underscore id used in thresholds and alerts: `latency_end_to_end`."""
        return f"{self.category}_{self.name}"

    def within_bounds(self, value: Any) -> bool:
        """True when a measured value is of this metric's type and inside its bounds."""
        if self.type is MetricType.BOOL:
            return isinstance(value, bool)
        if self.type is MetricType.TIMESTAMP:
            return value is None or (isinstance(value, (int, float)) and value >= 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.minimum is not None and value < self.minimum:
            return False
        return self.maximum is None or value <= self.maximum

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
    ("avg_level", "%", F, G, 0, 100, "Mean buffer fill as a percentage of the buffer's capacity over the window."),
    ("peak_level", "%", F, G, 0, 100, "Peak buffer fill as a percentage of capacity over the window."),
    ("drain_rate", "%", F, G, 0, INF, "Bytes played out during the window as a percentage of the nominal media rate."),
    ("fill_rate", "%", F, G, 0, INF, "Bytes accepted into the buffer during the window as a percentage of the nominal media rate."),
    ("stability_score", "ratio", F, G, 0, 1, "1 minus the coefficient of variation of the buffer level over the window, clipped to [0, 1]."),
    ("last_overflow_time", "timestamp", T, G, INF, INF, "Wall-clock time of the most recent overflow, null if none."),
    ("last_underflow_time", "timestamp", T, G, INF, INF, "Wall-clock time of the most recent underflow, null if none."),
    ("total_processed_bytes", "bytes", I, C, 0, INF, "Audio bytes played out of the buffer since the stream started."),
    ("dropped_frames", "frames", I, C, 0, INF, "Packets discarded by the buffer: late (after their playout time), duplicate or evicted."),
    ("corrupted_frames", "frames", I, C, 0, INF, "Packets whose payload failed its checksum."),
]
_LATENCY = [
    ("end_to_end", "ms", F, G, 0, INF, "Mean of capture-to-output time over packets played in the window (network + buffer + codec + processing)."),
    ("processing", "ms", F, G, 0, INF, "Mean wall time spent in the DSP chain per 20 ms frame, measured with a monotonic clock, plus the chain's algorithmic delay (lookahead)."),
    ("network", "ms", F, G, 0, INF, "Mean one-way transit time (arrival minus send timestamp) of packets received in the window."),
    ("codec", "ms", F, G, 0, INF, "Packetization delay: the audio duration carried by one packet, from packet_size."),
    ("buffer", "ms", F, G, 0, INF, "Mean time packets waited in the jitter buffer between arrival and playout."),
    ("jitter", "ms", F, G, 0, INF, "RFC 3550 interarrival jitter estimate (J += (|D| - J) / 16)."),
    ("max_latency", "ms", F, G, 0, INF, "Largest end-to-end latency of a packet played in the window."),
    ("min_latency", "ms", F, G, 0, INF, "Smallest end-to-end latency of a packet played in the window."),
    ("avg_latency", "ms", F, G, 0, INF, "Mean end-to-end latency over the rolling statistics window (streaming estimator)."),
    ("p95_latency", "ms", F, G, 0, INF, "95th percentile of end-to-end latency over the rolling window (streaming estimator, <1% error)."),
    ("p99_latency", "ms", F, G, 0, INF, "99th percentile of end-to-end latency over the rolling window (streaming estimator, <1% error)."),
    ("stability", "ratio", F, G, 0, 1, "1 / (1 + stddev/mean) of end-to-end latency over the rolling window."),
]
_PACKET = [
    ("loss_rate", "ratio", F, G, 0, 1, "RFC 3550 cumulative loss: lost / expected, after FEC recovery."),
    ("loss_count", "packets", I, C, 0, INF, "Packets expected from the sequence range but never received nor recovered."),
    ("received_count", "packets", I, C, 0, INF, "Distinct media packets received (duplicates excluded)."),
    ("sent_count", "packets", I, C, 0, INF, "Packets the sender emitted, from the extended highest sequence number."),
    ("duplicate_count", "packets", I, C, 0, INF, "Packets received with a sequence number already seen."),
    ("out_of_order_count", "packets", I, C, 0, INF, "Packets received with a sequence number below the highest seen so far."),
    ("corrected_count", "packets", I, C, 0, INF, "Lost packets reconstructed from FEC parity."),
    ("avg_size", "bytes", F, G, 0, INF, "Mean on-the-wire size (payload + RTP/UDP/IP headers + FEC share) of packets in the window."),
    ("max_size", "bytes", I, G, 0, INF, "Largest on-the-wire packet size in the window."),
    ("min_size", "bytes", I, G, 0, INF, "Smallest on-the-wire packet size in the window."),
    ("throughput_kbps", "kbit/s", F, G, 0, INF, "All bytes received (media, FEC, headers, duplicates) per second over the window."),
    ("goodput_kbps", "kbit/s", F, G, 0, INF, "Useful audio payload bytes delivered to playout per second over the window."),
    ("overhead_percent", "%", F, G, 0, 100, "Share of received bytes that are not audio payload (headers, FEC parity, duplicates)."),
    ("efficiency", "ratio", F, G, 0, 1, "goodput / throughput over the window."),
]
_AUDIO = [
    ("level_rms", "dBFS", F, G, -120, 0, "RMS level of the processed output over the window."),
    ("peak_level", "dBFS", F, G, -120, 0, "Largest absolute sample of the processed output over the window."),
    ("snr", "dB", F, G, -60, 120, "Speech power over noise power, split by the voice activity detector on the processed output."),
    ("thd", "ratio", F, G, 0, 1, "Total harmonic distortion of voiced frames: harmonic energy above the fundamental over the fundamental's, from the spectrum."),
    ("sinad", "dB", F, G, -60, 120, "Signal over noise-and-distortion against the simulator's clean reference, aligned by the known delay."),
    ("pesq_score", "MOS-LQO", F, G, -0.5, 4.64, "ITU-T P.862.2 wideband PESQ of the output against the clean reference (PyPI pesq), every few seconds off the frame path."),
    ("mos_score", "MOS", F, G, 1, 4.5, "ITU-T G.107 E-model (simplified, burst-aware) from measured delay, loss, burst ratio and codec impairment.", True),
    ("frequency_response_deviation", "dB", F, G, 0, INF, "RMS deviation of the output spectrum from the clean reference's spectrum over 10 octave bands."),
    ("spectral_centroid", "Hz", F, G, 0, 8000, "Power-weighted mean frequency of the output spectrum."),
    ("spectral_rolloff", "Hz", F, G, 0, 8000, "Frequency below which 85% of the output's spectral energy lies."),
    ("zero_crossing_rate", "ratio", F, G, 0, 1, "Sign changes per sample of the processed output."),
    ("clipping_detected", "bool", B, G, INF, INF, "True when any output sample in the window reached full scale (|x| >= 0.999)."),
    ("silence_detected", "bool", B, G, INF, INF, "True when the window's output RMS stayed below -60 dBFS."),
    ("noise_level", "dBFS", F, G, -120, 0, "RMS level of the output during frames the voice activity detector marks as non-speech."),
    ("voice_activity_ratio", "ratio", F, G, 0, 1, "Share of frames in the window the energy/zero-crossing voice activity detector marks as speech."),
]
_PERFORMANCE = [
    ("cpu_usage", "%", F, G, 0, INF, "Agent process CPU over the window (psutil), percent of one core."),
    ("memory_usage", "%", F, G, 0, 100, "Agent process resident memory as a percentage of host memory (psutil)."),
    ("thread_count", "threads", I, G, 0, INF, "Threads of the agent process (psutil)."),
    ("handle_count", "handles", I, G, 0, INF, "Open file descriptors of the agent process (psutil)."),
    ("processing_time_ms", "ms", F, G, 0, INF, "Wall time the pipeline spent on this extension's frames during the window."),
    ("queue_depth", "packets", I, G, 0, INF, "Packets in flight in the simulated network (sent, not yet arrived) at measurement time."),
    ("context_switches", "switches", I, D, 0, INF, "Voluntary plus involuntary context switches of the agent process in the window (psutil)."),
    ("page_faults", "faults", I, D, 0, INF, "Page faults of the agent process in the window (getrusage minor + major)."),
    ("io_operations", "ops", I, D, 0, INF, "Read plus write syscalls of the agent process in the window (psutil io_counters)."),
    ("cache_hits", "ratio", F, G, 0, 1, "Hit ratio of the DSP chain's filter-design cache (biquad coefficients reused vs recomputed)."),
    ("gc_collections", "collections", I, D, 0, INF, "Python garbage collections in the window (gc.callbacks)."),
    ("gc_pause_ms", "ms", F, G, 0, INF, "Total time spent in garbage collection in the window (gc.callbacks)."),
]


def _build() -> tuple[Metric, ...]:
    rows: list[Metric] = []
    for category, table in zip(CATEGORIES, (_BUFFER, _LATENCY, _PACKET, _AUDIO, _PERFORMANCE)):
        for row in table:
            name, unit, mtype, kind, lo, hi, how, *est = row
            rows.append(Metric(category, name, unit, mtype, kind, lo, hi, how, bool(est and est[0])))
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
