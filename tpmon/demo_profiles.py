"""Network and room conditions of the demo's simulated stations: mostly healthy, a few degraded."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Healthy baseline; each station varies it a little so the 24 points differ.
_BASE: dict[str, Any] = {
    "delay_ms": 20.0, "jitter_ms": 4.0, "loss_rate": 0.002, "burst_length": 1.5,
    "duplicate_rate": 0.001, "reorder_rate": 0.002, "corruption_rate": 0.0005,
    "drift_period_s": 300.0, "drift_delay_ms": 5.0, "drift_loss_rate": 0.002,
    "noise_dbfs": -60.0, "echo_gain_db": -30.0, "echo_delay_ms": 40.0,
}

# Deliberately degraded stations (by number): what an operator, the alerts and the
# optimizer should find.
_DEGRADED: dict[int, tuple[str, dict[str, Any]]] = {
    4: ("bursty packet loss (8%, bursts of 4)", {"loss_rate": 0.08, "burst_length": 4.0, "drift_loss_rate": 0.03}),
    7: ("high jitter and reordering (60 ms)", {"jitter_ms": 60.0, "reorder_rate": 0.05, "delay_ms": 70.0}),
    11: ("long path, noisy room, strong echo", {"delay_ms": 180.0, "noise_dbfs": -32.0, "echo_gain_db": -8.0,
                                                "drift_delay_ms": 60.0}),
}


@dataclass(frozen=True)
class StationProfile:
    number: int
    summary: str
    degraded: bool
    overrides: dict[str, Any] = field(default_factory=dict)
    seed: int = 1

    def conditions(self, extension: str) -> dict[str, Any]:
        """The [sim.<extension>] table: the baseline, varied per station and extension."""
        n, e = self.number, 1 if extension == "4444" else 0
        varied = dict(_BASE)
        varied["delay_ms"] += 3.0 * ((n * 7 + e * 3 + self.seed) % 5)
        varied["jitter_ms"] += 1.0 * ((n * 5 + e + self.seed) % 4)
        varied["noise_dbfs"] -= 2.0 * ((n + e * 2) % 6)
        varied.update(self.overrides)
        return varied


def station_profile(number: int, seed: int = 1) -> StationProfile:
    if number in _DEGRADED:
        summary, overrides = _DEGRADED[number]
        return StationProfile(number, summary, True, overrides, seed)
    return StationProfile(number, "healthy", False, {}, seed)
