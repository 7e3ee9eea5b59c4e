"""The 68 catalog metrics of one point, once per sample window, from the pipeline's measured state.

Each value follows its catalog `measured` sentence; notes where a choice had to be made:

- Wall-clock timestamps (last over/underflow) map the frame clock to epoch seconds
  through `epoch` (wall time at frame-clock 0).
- Everything is read through what the pipeline exposes: the receiver's `figures()` and
  `take_window()`, the chain's delay and cache counters, and the optional send-side figures
  of the source (performance.queue_depth is the path's in-flight count, which only a source
  that owns the sender knows).
- Latency: per packet played in the window, end_to_end = (time its first sample left the
  output) - (capture time of that sample) + processing, where processing = mean DSP wall
  time per frame + the chain's algorithmic delay; so it holds packetisation, sender
  pacing, network transit, buffer and playout-queue wait and processing. A window in which
  no packet played keeps the previous window's per-window values. latency.codec is the
  audio carried by the last media packet received.
- Packet loss after FEC: loss_count = RFC 3550 unique loss - FEC reconstructions (those
  later also received excluded); sent_count = extended highest - base + 1 (expected).
- Packet sizes, throughput, goodput, overhead and efficiency are all over one population:
  the packets received in the window (media, parity, retransmissions, duplicates and
  corrupted packets, each at its on-the-wire size: payload + 40 header bytes, + 14 FEC
  header bytes on parity). Goodput is the payload of the distinct intact media packets
  among them, so goodput <= throughput and efficiency = 1 - overhead share hold by
  construction. Sizes, overhead and efficiency are None (null) in a window that received
  nothing: a ratio with nothing to divide by has no value.
- pesq_score is None until the first score; performance.cache_hits is the cumulative hit
  ratio (None before the first lookup).
- MOS (estimate): E-model on the rolling mean end-to-end latency and the share and
  burstiness of concealed playout slots over the last 500 slots (agent/measure/emodel.py).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from agent.measure import emodel
from agent.measure.audio import AudioMeter
from agent.pipeline import Pipeline
from agent.stream_stats import ReceiveFigures, WindowCounters
from ext.latency import LatencyStats
from shared.metrics import METRICS, Metric, MetricType


def _finite(x: float, default: float = 0.0) -> float:
    return float(x) if x is not None and math.isfinite(x) else default


class PointMeter:
    def __init__(self, pipeline: Pipeline, epoch: float) -> None:
        self.p = pipeline
        self.epoch = epoch
        self.audio = AudioMeter()
        self.latency = LatencyStats(capacity=4096, window_ms=10_000.0)  # end-to-end latency of the last 10 s
        self._window_start_ms = 0.0
        self._played_bytes = 0
        self._held: dict[str, float] = {"end_to_end": 0.0, "network": 0.0, "buffer": 0.0,
                                        "max_latency": 0.0, "min_latency": 0.0}
        pipeline.receiver.take_window(0.0)  # the first window starts at frame-clock 0
        self.pesq: float | None = None  # the latest PESQ score, set by the agent's worker; None until the first

    def sample(self, now_ms: float, host: dict[str, Any]) -> dict[str, Any]:
        """Every metric as {catalog key: value}; resets the window."""
        p = self.p
        audio = p.take_audio()
        win = p.receiver.take_window(now_ms)
        rx = p.receiver.figures()
        processing = (audio.dsp_s * 1000.0 / audio.frames if audio.frames else 0.0) + float(p.chain.algorithmic_delay_ms)
        flat: dict[str, Any] = {}
        flat.update(self._buffer(win, rx))
        flat.update(self._latency(win, rx, processing, now_ms))
        flat.update(self._packet(win, rx, now_ms))
        aq = self.audio.measure(audio.out, audio.ref)
        aq["pesq_score"] = self.pesq
        aq["mos_score"] = self._mos(rx.slots, flat["latency.avg_latency"])
        flat.update({f"audioQuality.{k}": v for k, v in aq.items()})
        perf = dict(host)
        hits, misses = p.chain.cache_stats()
        sent = p.source.send_figures()
        perf.update(processing_time_ms=audio.step_s * 1000.0, queue_depth=sent.in_flight if sent is not None else None,
                    cache_hits=hits / (hits + misses) if hits + misses else None)
        flat.update({f"performance.{k}": v for k, v in perf.items()})
        self._window_start_ms = now_ms
        return flat

    def values(self, flat: dict[str, Any]) -> list[Any]:
        """The wire form of a sample: catalog order, plain Python types, floats rounded to the metric's resolution.

        Rounding here (not at the controller) means history stores exactly what the agent sent, and a
        value of N decimals is encoded there as a small integer rather than 64 bits of float noise.
        """
        return [None if (v := flat[key]) is None else plain(v) for key, plain in _PLAIN]

    def _wall(self, ms: float) -> float | None:
        return self.epoch + ms / 1000.0 if math.isfinite(ms) else None

    def _buffer(self, win: WindowCounters, rx: ReceiveFigures) -> dict[str, Any]:
        c, w = rx.buffer, win.buffer
        nominal = max(w["duration_ms"], 1e-9) * rx.bytes_per_ms
        played = int(c["played_bytes"]) - self._played_bytes
        self._played_bytes = int(c["played_bytes"])
        avg, std = _finite(w["level_avg_bytes"]), _finite(w["level_std_bytes"])
        return {
            "buffer.overflow_count": int(c["overflow_count"]),
            "buffer.underflow_count": int(c["underflow_count"]),
            "buffer.current_size": int(c["level_bytes"]),
            "buffer.max_size": int(_finite(w["level_max_bytes"])),
            "buffer.min_size": int(_finite(w["level_min_bytes"])),
            "buffer.avg_level": min(100.0, _finite(w["level_avg_percent"])),
            "buffer.peak_level": min(100.0, _finite(w["level_max_percent"])),
            "buffer.drain_rate": played / nominal * 100.0,
            "buffer.fill_rate": _finite(w["fill_bytes"]) / nominal * 100.0,
            "buffer.stability_score": min(1.0, max(0.0, 1.0 - std / avg)) if avg > 0 else 0.0,
            "buffer.last_overflow_time": self._wall(c["last_overflow_ms"]),
            "buffer.last_underflow_time": self._wall(c["last_underflow_ms"]),
            "buffer.total_processed_bytes": int(c["played_bytes"]),
            "buffer.dropped_frames": int(c["dropped"]),
            "buffer.corrupted_frames": int(c["corrupted"]),
        }

    def _latency(self, win: WindowCounters, rx: ReceiveFigures, processing: float, now_ms: float) -> dict[str, Any]:
        held = self._held
        if win.played_base_ms:
            e2e = np.asarray(win.played_base_ms) + processing
            self.latency.add_many(e2e, np.full(len(e2e), now_ms))
            held.update(end_to_end=float(e2e.mean()), max_latency=float(e2e.max()), min_latency=float(e2e.min()),
                        buffer=float(np.mean(win.buffer_wait_ms)))
        if win.transit_ms:
            held["network"] = float(np.mean(win.transit_ms))
        s = self.latency.summary(now_ms)
        mean, std = _finite(s["mean"], held["end_to_end"]), _finite(s["std"])
        return {
            "latency.end_to_end": held["end_to_end"],
            "latency.processing": processing,
            "latency.network": held["network"],
            "latency.codec": rx.packet_ms,
            "latency.buffer": max(0.0, held["buffer"]),
            "latency.jitter": _finite(rx.jitter_ms),
            "latency.max_latency": held["max_latency"],
            "latency.min_latency": held["min_latency"],
            "latency.avg_latency": mean,
            "latency.p95_latency": _finite(s["p95"], mean),
            "latency.p99_latency": _finite(s["p99"], mean),
            "latency.stability": 1.0 / (1.0 + std / mean) if mean > 0 else 0.0,
        }

    def _packet(self, win: WindowCounters, rx: ReceiveFigures, now_ms: float) -> dict[str, Any]:
        expected = rx.expected
        lost = max(0, rx.lost_unique - (rx.corrected - rx.corrected_then_received))
        seconds = max(now_ms - self._window_start_ms, 1e-9) / 1000.0
        packets = win.media_packets + win.parity_packets  # every packet received in the window
        wire, useful = win.wire_bytes, win.payload_bytes  # on-the-wire bytes; payload of the distinct intact media
        throughput = wire * 8 / seconds / 1000.0
        goodput = useful * 8 / seconds / 1000.0
        return {
            "packet.loss_rate": min(1.0, lost / expected) if expected > 0 else 0.0,
            "packet.loss_count": lost,
            "packet.received_count": rx.received,
            "packet.sent_count": expected,
            "packet.duplicate_count": rx.duplicates,
            "packet.out_of_order_count": rx.out_of_order,
            "packet.corrected_count": int(rx.corrected),
            "packet.avg_size": wire / packets if packets else None,
            "packet.max_size": int(win.max_wire) if packets else None,
            "packet.min_size": int(win.min_wire) if packets else None,
            "packet.throughput_kbps": throughput,
            "packet.goodput_kbps": goodput,
            "packet.overhead_percent": (wire - useful) / wire * 100.0 if wire else None,
            "packet.efficiency": useful / wire if wire else None,
        }

    def _mos(self, slots: tuple[bool, ...], delay_ms: float) -> float:
        if not slots:
            return emodel.mos(delay_ms, 0.0)
        concealed = slots.count(False)
        if not concealed:  # no loss: the burst ratio does not enter Ie-eff (and the scan of 500 slots is skipped)
            return emodel.mos(delay_ms, 0.0)
        return emodel.mos(delay_ms, 100.0 * concealed / len(slots), emodel.burst_ratio(slots))


def _plain(metric: Metric) -> Callable[[Any], Any]:
    """Converter of a measured value (a numpy scalar, maybe) to the plain Python value msgpack sends."""
    if metric.type is MetricType.BOOL:
        return bool
    if metric.type is MetricType.INT:
        return int
    return lambda v, d=metric.decimals: round(float(v), d) + 0.0  # +0.0: never a negative zero


# Catalog order, each key with its converter, built once.
_PLAIN: tuple[tuple[str, Callable[[Any], Any]], ...] = tuple((m.key, _plain(m)) for m in METRICS)
