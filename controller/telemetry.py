"""The controller's own Prometheus figures, registered on an injected registry (nothing at import)."""
from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ControllerTelemetry:
    def __init__(self, registry: CollectorRegistry, recent: int = 256) -> None:
        self.registry = registry
        self.request_duration = Histogram(
            "api_request_duration_seconds", "HTTP request duration by route template and method",
            ["route", "method"], buckets=_LATENCY_BUCKETS, registry=registry)
        self.requests = Counter("api_request", "HTTP requests answered",
                                ["route", "method", "status"], registry=registry)
        self.errors = Counter("api_error", "HTTP requests answered with a 4xx or 5xx status",
                              ["route", "method", "status"], registry=registry)
        self.cache_hit_ratio = Gauge("cache_hit_ratio", "Share of snapshot requests served from prebuilt bytes",
                                     registry=registry)
        self.link_frames = Counter("link_frames_received", "Valid frames received from agents, by message type",
                                   ["type"], registry=registry)
        self.link_malformed = Counter("link_frames_malformed", "Frames from the agent link dropped as malformed",
                                      registry=registry)
        self.link_rejected = Counter("link_messages_rejected", "Valid frames refused: a point outside the topology, or (CURVE) a station other than the sender key's",
                                     registry=registry)
        self.points = Gauge("points_by_status", "Monitoring points by status at the last snapshot build",
                            ["status"], registry=registry)
        self.snapshot_build = Histogram("snapshot_build_seconds", "Time to build and serialize one snapshot",
                                        buckets=_LATENCY_BUCKETS, registry=registry)
        self.sequence_gaps = Gauge("sample_sequence_gaps", "Samples the controller never received (all points)",
                                   registry=registry)
        self.outstanding_acks = Gauge("knob_acks_outstanding", "Knob sets sent and not yet acknowledged",
                                      registry=registry)
        self._recent: deque[float] = deque(maxlen=recent)
        # Labelled children cached: `labels()` takes a lock and builds a key on every call,
        # which is a measurable share of a snapshot request.
        self._durations: dict[tuple[str, str], Any] = {}
        self._counts: dict[tuple[str, str, int], tuple[Any, Any | None]] = {}

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        duration = self._durations.get((route, method))
        if duration is None:
            duration = self._durations[(route, method)] = self.request_duration.labels(route, method)
        duration.observe(seconds)
        counters = self._counts.get((route, method, status))
        if counters is None:
            error = self.errors.labels(route, method, str(status)) if status >= 400 else None
            counters = self._counts[(route, method, status)] = (self.requests.labels(route, method, str(status)), error)
        counters[0].inc()
        if counters[1] is not None:
            counters[1].inc()
        self._recent.append(seconds)

    def recent_latency_ms(self) -> float:
        """Mean duration of the last requests, in ms (the health endpoint's apiLatency)."""
        return 1000 * sum(self._recent) / len(self._recent) if self._recent else 0.0

    def bind_history(self, stats: Callable[[], Any], queued: Callable[[], int]) -> None:
        """History store figures, read at scrape time (`stats()` is its HistoryStats)."""
        for name, text, read in (
                ("history_samples_stored", "Samples accepted into the history store", lambda: stats().samples),
                ("history_samples_late", "Samples dropped: older than their point's open minute", lambda: stats().late),
                ("history_samples_future", "Samples dropped: measured too far ahead of the controller's clock",
                 lambda: stats().future),
                ("history_write_errors", "History flushes that failed (retried with the same samples)",
                 lambda: stats().write_errors),
                ("history_queue_depth", "Samples waiting for the history writer", queued)):
            Gauge(name, text, registry=self.registry).set_function(read)

    def bind(self, hit_ratio: Callable[[], float], gaps: Callable[[], int], outstanding: Callable[[], int]) -> None:
        """Gauges read at scrape time from the services that own the figures."""
        self.cache_hit_ratio.set_function(hit_ratio)
        self.sequence_gaps.set_function(gaps)
        self.outstanding_acks.set_function(outstanding)
