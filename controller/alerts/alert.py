"""Alert documents in the plan's shape: ids, readable metric labels, values with their units, messages."""
from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from controller.alerts.rules import Rule, Severity
from controller.alerts.watch import Transition
from controller.clock import iso_ms
from shared.metrics import Metric
from shared.topology import Point

ALERT_TYPE = "threshold_violation"
ACRONYMS = {"mos": "MOS", "pesq": "PESQ", "snr": "SNR", "thd": "THD", "sinad": "SINAD", "cpu": "CPU",
            "gc": "GC", "io": "I/O", "rms": "RMS", "p95": "p95", "p99": "p99", "kbps": "kbit/s"}
# Units written straight after the number, as in the plan's "320ms".
TIGHT_UNITS = {"ms", "%"}


def label(metric: Metric) -> str:
    """A readable name from the catalog: `end-to-end latency`, `packet loss rate`, `MOS score`, `CPU usage`."""
    words = [ACRONYMS.get(w, w) for w in metric.name.replace("end_to_end", "end-to-end").split("_")]
    if metric.category == "latency" and "latency" not in words:
        words = ["latency", *words] if metric.name in ("jitter", "stability") else [*words, "latency"]
    elif metric.category in ("buffer", "packet") and words[0] != metric.category:
        words.insert(0, metric.category)
    return " ".join(words)


def number_text(value: float) -> str:
    """A value as people read it: 3 significant digits, whole numbers without decimals."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    size = abs(value)
    digits = 0 if size >= 100 else 1 if size >= 10 else 2 if size >= 1 else 3
    text = f"{value:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def with_unit(rule: Rule, value: float) -> str:
    """`320ms`, `8.1%` (ratios as percentages), `3.05 MOS`, `240 events/min` (a counter's increase)."""
    metric = rule.metric
    if rule.counter:
        window = rule.window_ms / 1000
        per = "/min" if window == 60 else f" per {window:g} s"
        return f"{number_text(value)} {metric.unit}{per}"
    if metric.unit == "ratio":
        return f"{number_text(value * 100)}%"
    if metric.unit in ("bool",):
        return f"{number_text(value * 100)}% of samples"
    space = "" if metric.unit in TIGHT_UNITS else " "
    return f"{number_text(value)}{space}{metric.unit}"


def message(rule: Rule, severity: Severity, value: float, threshold: float) -> str:
    """`Critical end-to-end latency detected: 320ms (threshold: 300ms)`."""
    return (f"{severity.value.capitalize()} {label(rule.metric)} detected: {with_unit(rule, value)} "
            f"(threshold: {with_unit(rule, threshold)})")


class AlertIds:
    """`alert_20240115_103045_001`: creation time (UTC, to the second) and a counter within that second."""

    def __init__(self, exists: Callable[[str], bool]) -> None:
        self.exists = exists  # ids already given (the alert book's, kept across restarts)

    def next(self, wall: float) -> str:
        stamp = datetime.fromtimestamp(wall, tz=UTC).strftime("%Y%m%d_%H%M%S")
        n = 1
        while self.exists(f"alert_{stamp}_{n:03d}"):
            n += 1
        return f"alert_{stamp}_{n:03d}"


def new_alert(alert_id: str, point: Point, rule: Rule, t: Transition, wall: float) -> dict[str, Any]:
    """The plan's alert document, plus metricId, ruleId, resolved, resolvedAt, resolvedBy, dismissed, comment."""
    assert t.severity is not None and t.threshold is not None
    return {
        "id": alert_id, "severity": t.severity.value, "type": ALERT_TYPE, "metric": rule.metric.category,
        "metricId": rule.metric_id, "ruleId": rule.id, "station": point.station, "extension": point.extension,
        "value": t.value, "threshold": t.threshold, "duration": t.duration_ms,
        "message": message(rule, t.severity, t.value, t.threshold), "timestamp": iso_ms(wall),
        "acknowledged": False, "acknowledgedBy": None, "acknowledgedAt": None, "comment": None,
        "resolved": False, "resolvedAt": None, "resolvedBy": None, "dismissed": False,
    }


def apply_severity(alert: dict[str, Any], rule: Rule, t: Transition) -> None:
    """Escalation or de-escalation in place; an escalation asks for a new acknowledgement."""
    assert t.severity is not None and t.threshold is not None
    alert.update(severity=t.severity.value, value=t.value, threshold=t.threshold, duration=t.duration_ms,
                 message=message(rule, t.severity, t.value, t.threshold), ruleId=rule.id)
    if t.action == "escalated":
        alert.update(acknowledged=False, acknowledgedBy=None, acknowledgedAt=None, comment=None)


def resolve(alert: dict[str, Any], wall: float, by: str, duration_ms: int | None = None,
            dismissed: bool = False) -> None:
    """Resolved (by "system" when the value recovered, else the subject whose action ended it); `value` and
    `message` keep what the alert last reported, `duration` becomes the violation's whole length."""
    alert.update(resolved=True, resolvedAt=iso_ms(wall), resolvedBy=by)
    if duration_ms is not None:
        alert["duration"] = duration_ms
    if dismissed:
        alert["dismissed"] = True
