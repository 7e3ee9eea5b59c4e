"""The stream's Prometheus figures, read from the hub at scrape time (nothing counted twice on the hot path)."""
from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from controller.stream.hub import StreamHub
from controller.stream.payloads import Kind


class StreamCollector(Collector):
    def __init__(self, hub: StreamHub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        stats = self.hub.totals()
        clients = GaugeMetricFamily("stream_clients", "Connected streaming clients by transport", labels=["transport"])
        for kind in Kind:
            clients.add_metric([kind.value], sum(1 for c in self.hub.clients.values() if c.conn.kind is kind))
        yield clients
        yield GaugeMetricFamily("stream_shapes", "Distinct subscription shapes (each serialized once per update)",
                                value=len(self.hub.shapes))
        yield CounterMetricFamily("stream_updates_rendered", "metrics-update payloads serialized (one per shape and due tick)",
                                  value=stats.updates_rendered)
        yield CounterMetricFamily("stream_updates_sent", "metrics-update frames written to clients", value=stats.updates_sent)
        yield CounterMetricFamily("stream_updates_skipped", "Updates replaced by a newer one before a slow client took them",
                                  value=stats.updates_skipped)
        yield CounterMetricFamily("stream_events_sent", "Events and replies written to clients", value=stats.events_sent)
        disconnects = CounterMetricFamily("stream_disconnects", "Clients gone, by reason", labels=["reason"])
        for reason, count in sorted(stats.disconnects.items()):
            disconnects.add_metric([reason], count)
        yield disconnects
        yield CounterMetricFamily("stream_fanout_seconds", "Time spent in the per-tick fan-out", value=stats.fanout_seconds)
