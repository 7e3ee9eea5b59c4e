"""What the optimizer can aim at: targets, their direction, the quality score and windowed counter rates.

A target is something measured per sample window that a knob change can move. Four are
derived from the 68 catalog metrics because the catalog's own form misleads an optimizer:

- `quality` — a score in [0, 1]: 0.6 * (MOS - 1) / 3.5 + 0.4 * clip(S / 30 dB, 0, 1), where
  MOS is the G.107 E-model estimate the agent computes from measured delay and the measured
  sequence of played and concealed playout slots (so late packets count, as a listener hears
  them), and S is the measured audioQuality.sinad of the processed audio against the clean
  reference where the agent has one (the simulator, a lab set-up), else audioQuality.snr. The
  first term carries the transport (delay, loss, underflows), the second what reaches the
  listener besides the talker. SINAD counts echo, noise and distortion alike; SNR alone, split
  by a voice detector, counts loud echo as speech, so it scored "echo cancellation off" as
  better on a station with strong echo (bench optimize, the first run).
- `residual_loss` — packets lost after every repair (FEC, retransmission) in the window divided
  by the packets expected in it, from the loss_count and received_count counters (not the
  cumulative packet.loss_rate, which a change moves only slowly).
- `underflows_per_s` — playout ticks that found nothing due, per second of the window, from
  the buffer.underflow_count counter.
- `latency.end_to_end` — as measured.

Other gauge metrics with a known better direction may be named by key. Categories of the plan
map to one target each (CATEGORY_TARGETS).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np

from shared.metrics import METRICS

MINIMIZE, MAXIMIZE = -1, 1


@dataclass(frozen=True)
class Target:
    key: str
    direction: int        # MINIMIZE or MAXIMIZE
    unit: str
    label: str            # the expectedImpact key of the plan's answer ("latency", "quality", ...)
    derived: bool = False  # computed from several metrics or counters, not one catalog gauge


LATENCY = Target("latency.end_to_end", MINIMIZE, "ms", "latency")
QUALITY = Target("quality", MAXIMIZE, "score", "quality", derived=True)
RESIDUAL_LOSS = Target("residual_loss", MINIMIZE, "ratio", "packetLoss", derived=True)
UNDERFLOWS = Target("underflows_per_s", MINIMIZE, "1/s", "underflows", derived=True)

# Gauges a caller may name by key, with the direction that is better.
_GAUGE_DIRECTIONS: dict[str, int] = {
    "latency.end_to_end": MINIMIZE, "latency.processing": MINIMIZE, "latency.network": MINIMIZE,
    "latency.buffer": MINIMIZE, "latency.jitter": MINIMIZE, "latency.p95_latency": MINIMIZE,
    "latency.p99_latency": MINIMIZE, "latency.avg_latency": MINIMIZE, "latency.stability": MAXIMIZE,
    "buffer.stability_score": MAXIMIZE, "audioQuality.snr": MAXIMIZE, "audioQuality.sinad": MAXIMIZE,
    "audioQuality.pesq_score": MAXIMIZE, "audioQuality.mos_score": MAXIMIZE, "audioQuality.thd": MINIMIZE,
    "audioQuality.noise_level": MINIMIZE, "audioQuality.frequency_response_deviation": MINIMIZE,
    "packet.overhead_percent": MINIMIZE, "packet.efficiency": MAXIMIZE, "packet.goodput_kbps": MAXIMIZE,
    "performance.processing_time_ms": MINIMIZE, "performance.cpu_usage": MINIMIZE,
}
_UNITS = {m.key: m.unit for m in METRICS}
_LABELS = {"latency.end_to_end": "latency", "audioQuality.snr": "snr", "audioQuality.mos_score": "mos"}

TARGETS: dict[str, Target] = {t.key: t for t in (LATENCY, QUALITY, RESIDUAL_LOSS, UNDERFLOWS)}
for _key, _direction in _GAUGE_DIRECTIONS.items():
    TARGETS.setdefault(_key, Target(_key, _direction, _UNITS[_key], _LABELS.get(_key, _key.split(".", 1)[1])))

CATEGORY_TARGETS: dict[str, Target] = {"latency": LATENCY, "audioQuality": QUALITY, "packet": RESIDUAL_LOSS,
                                       "buffer": UNDERFLOWS}


class Goal(str, Enum):
    """Auto-tune's primary and secondary goals."""
    MINIMIZE_LATENCY = "minimize_latency"
    MAXIMIZE_QUALITY = "maximize_quality"
    MINIMIZE_PACKET_LOSS = "minimize_packet_loss"
    MINIMIZE_UNDERFLOWS = "minimize_underflows"

    @property
    def target(self) -> Target:
        return _GOAL_TARGETS[self]


_GOAL_TARGETS = {Goal.MINIMIZE_LATENCY: LATENCY, Goal.MAXIMIZE_QUALITY: QUALITY,
                 Goal.MINIMIZE_PACKET_LOSS: RESIDUAL_LOSS, Goal.MINIMIZE_UNDERFLOWS: UNDERFLOWS}


def resolve_target(name: str) -> Target | None:
    """A category of the plan or a target key; None when neither."""
    return CATEGORY_TARGETS.get(name) or TARGETS.get(name)


@dataclass(frozen=True)
class Limit:
    """A bound on one target a candidate must keep: the value must stay `<= bound` (MINIMIZE) or `>=`."""
    target: Target
    bound: float
    name: str                 # the request field it came from ("constraints.maxLatency")

    def broken_by(self, value: float) -> bool:
        return value > self.bound if self.target.direction == MINIMIZE else value < self.bound

    def pessimistic(self, lo: float, hi: float) -> float:
        """The end of an interval that matters for this limit: the upper end of a maximum, the lower of a minimum."""
        return hi if self.target.direction == MINIMIZE else lo


# What a guarded target may lose, on the predicted median (search) and the replayed difference.
GUARD_TOLERANCE: dict[str, float] = {"underflows_per_s": 0.1, "quality": 0.02}


@dataclass(frozen=True)
class Constraints:
    limits: tuple[Limit, ...] = ()
    preserve_stability: bool = False   # underflows per second may not rise (median) above today's
    keep_quality: bool = False         # no minQuality given: the quality score may not fall either

    @property
    def guards(self) -> tuple[Target, ...]:
        """Targets that may not get worse by more than GUARD_TOLERANCE (predicted median, replayed difference,
        and measured: beyond the noise too)."""
        return ((UNDERFLOWS,) if self.preserve_stability else ()) + ((QUALITY,) if self.keep_quality else ())

    @property
    def targets(self) -> tuple[Target, ...]:
        return tuple(dict.fromkeys([lim.target for lim in self.limits] + list(self.guards)))


def constraints_of(max_latency_ms: float | None = None, min_quality: float | None = None,
                   max_packet_loss: float | None = None, preserve_stability: bool = False,
                   field_prefix: str = "constraints.") -> Constraints:
    limits = []
    if max_latency_ms is not None:
        limits.append(Limit(LATENCY, float(max_latency_ms), field_prefix + "maxLatency"))
    if min_quality is not None:
        limits.append(Limit(QUALITY, float(min_quality), field_prefix + "minQuality"))
    if max_packet_loss is not None:
        limits.append(Limit(RESIDUAL_LOSS, float(max_packet_loss), field_prefix + "maxPacketLoss"))
    # Without a quality bound nobody accepted a quality trade: what the listener hears may not get worse.
    return Constraints(tuple(limits), preserve_stability, keep_quality=min_quality is None)


# --- computing targets from samples ---------------------------------------------------------

_INDEX = {m.key: i for i, m in enumerate(METRICS)}
NEEDED_METRICS: tuple[str, ...] = ("latency.end_to_end", "audioQuality.mos_score", "audioQuality.snr",
                                   "audioQuality.sinad", "packet.loss_count", "packet.received_count", "buffer.underflow_count")


def quality_score(mos: np.ndarray, snr_db: np.ndarray, sinad_db: np.ndarray | None = None) -> np.ndarray:
    """The documented score in [0, 1] (module docstring): SINAD where known, else SNR (0 dB when neither);
    NaN where MOS is unknown."""
    snr = np.asarray(snr_db, dtype=float)
    if sinad_db is not None:
        sinad = np.asarray(sinad_db, dtype=float)
        snr = np.where(np.isnan(sinad), snr, sinad)
    snr = np.nan_to_num(snr, nan=0.0)
    return np.clip(0.6 * (np.asarray(mos, dtype=float) - 1.0) / 3.5 + 0.4 * np.clip(snr / 30.0, 0.0, 1.0), 0.0, 1.0)


def target_series(ts_s: np.ndarray, values: Mapping[str, np.ndarray], keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Each target of `keys` per sample window, from consecutive samples of one point (time order).

    `values` holds each needed catalog metric as a column. Counter rates are differences between
    consecutive samples over the time between them; the first row, and any row after a counter
    went backwards (an agent restarted) or after a gap of more than 10 s, is NaN.
    """
    ts_s = np.asarray(ts_s, dtype=float)
    n = len(ts_s)
    dt = np.full(n, np.nan)
    dt[1:] = np.diff(ts_s)
    ok = (dt > 0) & (dt <= 10.0)
    out: dict[str, np.ndarray] = {}
    for key in keys:
        if key == "quality":
            out[key] = quality_score(values["audioQuality.mos_score"], values["audioQuality.snr"],
                                     values.get("audioQuality.sinad"))
        elif key == "underflows_per_s":
            d = _delta(values["buffer.underflow_count"])
            out[key] = np.where(ok & (d >= 0), d / np.where(ok, dt, 1.0), np.nan)
        elif key == "residual_loss":
            lost, got = _delta(values["packet.loss_count"]), _delta(values["packet.received_count"])
            expected = lost + got
            out[key] = np.where(ok & (lost >= 0) & (got >= 0) & (expected > 0),
                                lost / np.where(expected > 0, expected, 1.0), np.nan)
        else:
            out[key] = np.asarray(values[key], dtype=float)
    return out


def columns_for(keys: Sequence[str]) -> tuple[str, ...]:
    """The catalog metrics `target_series` needs for `keys`."""
    needed: list[str] = []
    for key in keys:
        if key == "quality":
            needed += ["audioQuality.mos_score", "audioQuality.snr", "audioQuality.sinad"]
        elif key == "underflows_per_s":
            needed.append("buffer.underflow_count")
        elif key == "residual_loss":
            needed += ["packet.loss_count", "packet.received_count"]
        else:
            needed.append(key)
    return tuple(dict.fromkeys(needed))


def metric_index(key: str) -> int:
    """Position of a catalog metric in a sample's 68 values."""
    return _INDEX[key]


def _delta(column: np.ndarray) -> np.ndarray:
    c = np.asarray(column, dtype=float)
    d = np.full(len(c), np.nan)
    d[1:] = np.diff(c)
    return d
