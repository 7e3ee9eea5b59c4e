"""agent.toml: the [agent] table and one [sim.<extension>] table per extension (see agent/agent.example.toml)."""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from agent.sim.conditions import SimConditions
from shared.config import ConfigError, apply_env, load_toml, section
from shared.topology import EXTENSIONS, station_number

SOURCES = ("sim",)
Check = Callable[[str, Any], Any]  # (key, value from the file or env) -> the checked value, or ConfigError


def _setting(default: Any, check: Check) -> Any:
    """One `[agent]` key: its default, and the check its value must pass (kept in the field's metadata)."""
    return field(default=default, metadata={"check": check})


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"[agent] {key} must be a non-empty string, got {value!r}")
    return value


def _path(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"[agent] {key} must be a path string, got {value!r}")
    return value


def _directory(key: str, value: Any) -> Path:
    return Path(_text(key, value))


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"[agent] {key} must be true or false, got {value!r}")
    return value


def _int(lo: int, hi: int) -> Check:
    def check(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ConfigError(f"[agent] {key} must be an integer in {lo}..{hi}, got {value!r}")
        return value
    return check


def _num(lo: float, hi: float) -> Check:
    def check(key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            raise ConfigError(f"[agent] {key} must be a number in {lo}..{hi}, got {value!r}")
        return float(value)
    return check


def _command(key: str, value: Any) -> str | list[str]:
    if not isinstance(value, (str, list)):
        raise ConfigError(f"[agent] {key} must be a string or an array of strings")
    return value


@dataclass(frozen=True)
class AgentConfig:
    """Every `[agent]` key, declared once: its default and its check (every key is in agent.example.toml)."""
    station: str = _setting("Station-1", _text)
    controller: str = _setting("tcp://127.0.0.1:3091", _text)
    exporter_host: str = _setting("127.0.0.1", _text)
    exporter_port: int = _setting(9400, _int(0, 65535))            # 0 disables the exporter
    data_dir: Path = _setting("./data/agent", _directory)
    sample_interval_ms: int = _setting(150, _int(20, 60000))
    heartbeat_ms: int = _setting(1000, _int(100, 60000))
    source: str = _setting("sim", _text)
    seed: int = _setting(1, _int(0, 2 ** 63 - 1))
    pesq_interval_s: float = _setting(10.0, _num(1.0, 3600.0))
    warmup_s: float = _setting(3.0, _num(0.0, 30.0))  # simulated audio run ahead at start: buffers fill, a PESQ exists
    replay_trace_s: float = _setting(60.0, _num(0.0, 300.0))   # what-if replay's trace per extension; 0 = no replays
    replay_budget_s: float = _setting(30.0, _num(1.0, 600.0))  # wall time one replay request may take in its worker
    external_command: str | list[str] = _setting("", _command)  # run after the external-knob file is written
    log_level: str = _setting("info", _text)
    curve_secret_key_file: str = _setting("", _path)        # this agent's CURVE keypair (`tpmon keys`)
    controller_public_key_file: str = _setting("", _path)   # the controller's public key (controller.key)
    insecure: bool = _setting(False, _bool)  # plaintext link without keys (tests, local experiments): logs a warning
    sim: dict[str, SimConditions] = field(default_factory=dict)  # [sim.<extension>] tables

    @property
    def extensions(self) -> list[str]:
        return list(self.sim)


_KEYS = tuple(f for f in fields(AgentConfig) if "check" in f.metadata)
AGENT_DEFAULTS: Mapping[str, Any] = MappingProxyType({f.name: f.default for f in _KEYS})


def load(path: str | Path | None, env: dict[str, str] | None = None) -> AgentConfig:
    """Read and check agent.toml (TPMON_AGENT_<KEY> variables override [agent] keys)."""
    doc = load_toml(path, os.environ if env is None else env)
    doc.setdefault("agent", {})
    table = {**AGENT_DEFAULTS, **doc["agent"]}  # env overrides also reach keys the file left out
    apply_env({"agent": table}, os.environ if env is None else env, "TPMON_")
    a = section({"agent": table}, "agent", AGENT_DEFAULTS)
    unknown = sorted(set(doc) - {"agent", "sim"})
    if unknown:
        raise ConfigError(f"unknown sections: {', '.join(unknown)}")
    sims = doc.get("sim", {})
    if not isinstance(sims, dict) or any(not isinstance(v, dict) for v in sims.values()):
        raise ConfigError("[sim.<extension>] tables expected, e.g. [sim.3333]")
    bad = sorted(set(sims) - set(EXTENSIONS))
    if bad:
        raise ConfigError(f"[sim.{bad[0]}]: unknown extension (known: {', '.join(EXTENSIONS)})")
    cfg = AgentConfig(**{f.name: f.metadata["check"](f.name, a[f.name]) for f in _KEYS},
                      sim={ext: SimConditions.from_table(sims.get(ext, {}), f"sim.{ext}") for ext in EXTENSIONS})
    if station_number(cfg.station) is None:
        raise ConfigError(f"[agent] station must look like Station-N, got {cfg.station!r}")
    if cfg.source not in SOURCES:
        raise ConfigError(f"[agent] source {cfg.source!r} is not one of {', '.join(SOURCES)}")
    return cfg
