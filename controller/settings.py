"""Controller settings: `[controller]` of a TOML file, then TPMON_CONTROLLER_* env, then CLI flags."""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from shared.config import ConfigError, apply_env, load_toml, section
from shared.topology import DEFAULT_STATION_COUNT

DEFAULTS: dict[str, Any] = {
    "http_host": "0.0.0.0",
    "http_port": 3090,
    "link_endpoint": "tcp://*:3091",
    "data_dir": "./data",
    "stations": DEFAULT_STATION_COUNT,
    "tick_ms": 150,
    "stale_after_ms": 1000,
    "offline_after_ms": 3000,
    "ack_timeout_ms": 2000,
    "heartbeat_ms": 1000,
    "log_level": "INFO",
}

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class ControllerSettings:
    http_host: str = DEFAULTS["http_host"]
    http_port: int = DEFAULTS["http_port"]
    link_endpoint: str = DEFAULTS["link_endpoint"]
    data_dir: str = DEFAULTS["data_dir"]
    stations: int = DEFAULTS["stations"]
    tick_ms: int = DEFAULTS["tick_ms"]
    stale_after_ms: int = DEFAULTS["stale_after_ms"]
    offline_after_ms: int = DEFAULTS["offline_after_ms"]
    ack_timeout_ms: int = DEFAULTS["ack_timeout_ms"]
    heartbeat_ms: int = DEFAULTS["heartbeat_ms"]
    log_level: str = DEFAULTS["log_level"]

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("int", int):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ConfigError(f"[controller] {f.name} must be an integer, got {value!r}")
                minimum = 0 if f.name == "http_port" else 1
                if value < minimum or (f.name == "http_port" and value > 65535):
                    raise ConfigError(f"[controller] {f.name} = {value} is out of range")
            elif not isinstance(value, str) or not value:
                raise ConfigError(f"[controller] {f.name} must be a non-empty string, got {value!r}")
        if self.log_level.upper() not in _LOG_LEVELS:
            raise ConfigError(f"[controller] log_level must be one of {', '.join(_LOG_LEVELS)}")
        if self.stale_after_ms > self.offline_after_ms:
            raise ConfigError("[controller] stale_after_ms must not exceed offline_after_ms")

    @property
    def store_path(self) -> Path:
        return Path(self.data_dir) / "config.json"


def load_settings(path: str | Path | None, env: Mapping[str, str] | None = None,
                  overrides: Mapping[str, Any] | None = None) -> ControllerSettings:
    """Defaults < file `[controller]` < TPMON_CONTROLLER_<KEY> < `overrides` (CLI flags that were given).

    Env overrides apply to every known key even without a file, unlike shared.config.load_toml
    alone (which only overrides keys the file spells out), so a container can be configured
    by environment only. Other sections of a shared file (e.g. `[agent]`) are ignored.
    """
    doc = load_toml(path, env={})
    table = section(doc, "controller", DEFAULTS)
    apply_env({"controller": table}, os.environ if env is None else env, "TPMON_")
    table.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return ControllerSettings(**table)
