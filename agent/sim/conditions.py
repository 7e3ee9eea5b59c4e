"""Simulated conditions of one extension: the [sim.<extension>] table of agent.toml."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from shared.config import ConfigError

DRIFT_KINDS = ("none", "sine", "walk")


@dataclass(frozen=True)
class SimConditions:
    """Network path and room of one extension. agent/agent.example.toml documents every field."""
    delay_ms: float = 20.0            # base one-way transit
    jitter_ms: float = 4.0            # std of the queueing delay added to each packet (exponential)
    loss_rate: float = 0.002          # long-run packet loss probability (Gilbert-Elliott)
    burst_length: float = 1.5         # mean length of a loss burst, packets (>= 1)
    duplicate_rate: float = 0.001     # probability a packet arrives twice
    reorder_rate: float = 0.002       # probability a packet is held back behind its successors
    corruption_rate: float = 0.0005   # probability a delivered payload has a flipped byte
    bandwidth_kbps: float = 0.0       # bottleneck link rate; 0 = unlimited
    queue_ms: float = 200.0           # drop-tail queue of the bottleneck, in ms at its rate
    drift: str = "sine"               # none | sine | walk: how delay/jitter/loss wander over time
    drift_period_s: float = 300.0     # sine period, or the walk's time to cross its range
    drift_delay_ms: float = 5.0       # amplitude of the delay drift
    drift_jitter_ms: float = 0.0      # amplitude of the jitter drift
    drift_loss_rate: float = 0.002    # amplitude of the loss drift
    speech_level_dbfs: float = -26.0  # active speech level of the near-end talker
    far_end_level_dbfs: float = -26.0  # level of the far-end reference played in the room
    noise_dbfs: float = -60.0         # background noise RMS
    echo_gain_db: float = -30.0       # far-end leakage into the microphone (-120 = none)
    echo_delay_ms: float = 40.0       # acoustic echo path delay
    talker_f0_hz: float = 0.0         # near-end mean pitch; 0 = chosen from the seed

    @classmethod
    def from_table(cls, table: Mapping[str, Any], where: str) -> SimConditions:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(table) - set(known))
        if unknown:
            raise ConfigError(f"[{where}] unknown keys: {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for name, value in table.items():
            if name == "drift":
                if value not in DRIFT_KINDS:
                    raise ConfigError(f"[{where}] drift must be one of {', '.join(DRIFT_KINDS)}, got {value!r}")
                values[name] = value
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"[{where}] {name} must be a number, got {value!r}")
            else:
                values[name] = float(value)
        cond = cls(**values)
        cond.check(where)
        return cond

    def check(self, where: str) -> None:
        rates = ("loss_rate", "duplicate_rate", "reorder_rate", "corruption_rate")
        for name in rates:
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"[{where}] {name} must be in [0, 1)")
        for name in ("delay_ms", "jitter_ms", "bandwidth_kbps", "queue_ms", "echo_delay_ms", "drift_period_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"[{where}] {name} must not be negative")
        if self.burst_length < 1:
            raise ConfigError(f"[{where}] burst_length must be at least 1 packet")
        if self.drift_period_s == 0 and self.drift != "none":
            raise ConfigError(f"[{where}] drift_period_s must be positive when drift is {self.drift}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Drift:
    """A slow factor in [-1, 1]: sinusoidal, or a seeded reflecting random walk; 0 when none."""

    def __init__(self, kind: str, period_s: float, rng: np.random.Generator) -> None:
        self.kind = kind
        self.period_ms = period_s * 1000.0
        self.rng = rng
        self._walk = 0.0
        self._walk_at = 0.0
        # A walk with steps every second of this size crosses [-1, 1] in about one period.
        self._step = 2.0 / math.sqrt(max(period_s, 1.0))

    def at(self, t_ms: float) -> float:
        if self.kind == "sine":
            return math.sin(2 * math.pi * t_ms / self.period_ms)
        if self.kind == "walk":
            while self._walk_at + 1000.0 <= t_ms:
                self._walk_at += 1000.0
                w = self._walk + float(self.rng.normal(0, self._step))
                self._walk = 2 - w if w > 1 else (-2 - w if w < -1 else w)
            return self._walk
        return 0.0
