"""Prometheus exposition of the agent's latest samples and its own health, on an injected registry.

Naming, derived from the catalog (never written out by hand):
`tpmon_<category>_<name>[_<unit suffix>]`, category in snake case (`audioQuality` ->
`audio_quality`), the unit suffix from the catalog unit (ms -> `_ms`, bytes -> `_bytes`,
% -> `_percent`, ratio -> `_ratio`, dB/dBFS -> `_db`/`_dbfs`, Hz -> `_hz`, kbit/s ->
`_kbps`, timestamp -> `_seconds` (epoch); unitless counts get none) and left out when
the name already ends with it (`packet_overhead_percent`, `packet_goodput_kbps`). So
`latency.end_to_end` is `tpmon_latency_end_to_end_ms` and `audioQuality.snr` is
`tpmon_audio_quality_snr_db`. Every metric is a gauge labelled `station` and `extension`
that mirrors the last sample (catalog counters stay cumulative, deltas are per window);
booleans are 0/1; a null timestamp is omitted. Agent health: `tpmon_agent_up`,
`tpmon_agent_controller_connected`, `tpmon_agent_frames_processed_total{extension}`,
`tpmon_agent_link_frames_malformed_total`, `tpmon_agent_link_messages_dropped_total`,
`tpmon_agent_knob_version{extension}`, `tpmon_agent_last_sample_timestamp_seconds{extension}`,
`tpmon_agent_sim_cpu_seconds_total{extension}` (thread CPU time of the built-in simulator's
sending side, so its share of the process CPU can be told apart from the agent's own cost),
and for a source that owns its sender (the simulator) `tpmon_agent_sim_pacer_drops_total{extension}`
(packets its pacer dropped on a full queue) and `tpmon_agent_sim_pacer_queue_ms{extension}`
(how long until the packets waiting in it at the last frame have all left); sources without a sender omit both.

Nothing happens at import: `AgentCollector` is registered on the registry the caller
passes, and `serve()` starts the HTTP server only when asked.
"""
from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.core import Metric as PromMetric
from prometheus_client.registry import Collector

from shared.metrics import METRICS, Metric, MetricType

_UNIT_SUFFIX = {"ms": "ms", "bytes": "bytes", "%": "percent", "ratio": "ratio", "dB": "db", "dBFS": "dbfs",
                "Hz": "hz", "kbit/s": "kbps", "timestamp": "seconds"}


def metric_name(m: Metric) -> str:
    category = re.sub(r"(?<!^)(?=[A-Z])", "_", m.category).lower()
    suffix = _UNIT_SUFFIX.get(m.unit, "")
    name = f"tpmon_{category}_{m.name}"
    return f"{name}_{suffix}" if suffix and not name.endswith(suffix) else name


NAMES: tuple[str, ...] = tuple(metric_name(m) for m in METRICS)


class AgentCollector(Collector):
    """Reads the agent's state through `snapshot()` at scrape time (no per-sample gauge updates).

    `snapshot()` returns {"station", "connected", "malformed", "dropped", "extensions":
    {ext: {"values": [68 values in catalog order] | None, "frames", "knob_version", "sampled_at", "sim_cpu_s",
    "send": agent.source.SendFigures | None}}}.
    """

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterable[PromMetric]:
        snap = self.snapshot()
        station, exts = snap["station"], snap["extensions"]
        for i, m in enumerate(METRICS):
            family = GaugeMetricFamily(NAMES[i], f"{m.measured} ({m.unit})", labels=["station", "extension"])
            for ext, state in exts.items():
                values = state["values"]
                if values is None or values[i] is None:
                    continue
                value = values[i]
                family.add_metric([station, ext], float(value) if m.type is not MetricType.BOOL else float(bool(value)))
            yield family
        yield _gauge("tpmon_agent_up", "1 while the agent runs.", [], [([], 1.0)])
        yield _gauge("tpmon_agent_controller_connected", "1 while the controller link is up and heard from.", [],
                     [([], 1.0 if snap["connected"] else 0.0)])
        frames = CounterMetricFamily("tpmon_agent_frames_processed", "20 ms frames processed.", labels=["station", "extension"])
        for ext, state in exts.items():
            frames.add_metric([station, ext], state["frames"])
        yield frames
        sim = CounterMetricFamily("tpmon_agent_sim_cpu_seconds", "Thread CPU seconds of the built-in simulator's "
                                  "sending side (source synthesis, sender, network send).", labels=["station", "extension"])
        for ext, state in exts.items():
            sim.add_metric([station, ext], state["sim_cpu_s"])
        yield sim
        drops = CounterMetricFamily("tpmon_agent_sim_pacer_drops", "Packets the simulated sender's pacer dropped "
                                    "because its bounded queue was full.", labels=["station", "extension"])
        queue = GaugeMetricFamily("tpmon_agent_sim_pacer_queue_ms", "Time until the packets waiting in the simulated "
                                  "sender's pacer have all left (ms).", labels=["station", "extension"])
        for ext, state in exts.items():
            send = state.get("send")
            if send is not None:
                drops.add_metric([station, ext], send.pacer_drops)
                queue.add_metric([station, ext], send.pacer_queue_ms)
        yield drops
        yield queue
        yield CounterMetricFamily("tpmon_agent_link_frames_malformed", "Frames from the controller that did not decode.",
                                  value=snap["malformed"])
        yield CounterMetricFamily("tpmon_agent_link_messages_dropped", "Messages dropped because no controller took them.",
                                  value=snap["dropped"])
        yield _gauge("tpmon_agent_knob_version", "Knob set version applied.", ["station", "extension"],
                     [([station, e], float(s["knob_version"])) for e, s in exts.items()])
        yield _gauge("tpmon_agent_last_sample_timestamp_seconds", "Wall-clock time of the last sample.",
                     ["station", "extension"],
                     [([station, e], s["sampled_at"]) for e, s in exts.items() if s["sampled_at"] is not None])


def _gauge(name: str, doc: str, labels: list[str], rows: list[tuple[list[str], float]]) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=labels)
    for values, value in rows:
        g.add_metric(values, value)
    return g


class Exporter:
    """Registers the collector on `registry` and serves it on host:port when `serve()` is called."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]], registry: CollectorRegistry) -> None:
        self.registry = registry
        registry.register(AgentCollector(snapshot))
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def serve(self, host: str, port: int) -> None:
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
