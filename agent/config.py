"""agent.toml: the [agent] table and one [sim.<extension>] table per extension (see agent/agent.example.toml)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.sim.conditions import SimConditions
from shared.config import ConfigError, apply_env, load_toml, section
from shared.topology import EXTENSIONS, station_number

AGENT_DEFAULTS: dict[str, Any] = {
    "station": "Station-1",
    "controller": "tcp://127.0.0.1:3091",
    "exporter_host": "127.0.0.1",
    "exporter_port": 9400,          # 0 disables the exporter
    "data_dir": "./data/agent",
    "sample_interval_ms": 150,
    "heartbeat_ms": 1000,
    "source": "sim",
    "seed": 1,
    "pesq_interval_s": 10.0,
    "warmup_s": 3.0,                # simulated audio run ahead at start: buffers fill, the first PESQ exists
    "external_command": "",        # run after the external-knob file is written (agent/appliers.py)
    "log_level": "info",
    "curve_secret_key_file": "",      # this agent's CURVE keypair (Station-N.key_secret from `tpmon keys`)
    "controller_public_key_file": "",  # the controller's public key (controller.key)
    "insecure": False,                 # plaintext link without keys (tests, local experiments): logs a warning
}
SOURCES = ("sim",)


@dataclass(frozen=True)
class AgentConfig:
    station: str
    controller: str
    exporter_host: str
    exporter_port: int
    data_dir: Path
    sample_interval_ms: int
    heartbeat_ms: int
    source: str
    seed: int
    pesq_interval_s: float
    warmup_s: float
    external_command: str | list[str]
    log_level: str
    curve_secret_key_file: str = ""
    controller_public_key_file: str = ""
    insecure: bool = False
    sim: dict[str, SimConditions] = field(default_factory=dict)

    @property
    def extensions(self) -> list[str]:
        return list(self.sim)


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
    cfg = AgentConfig(
        station=_str(a, "station"), controller=_str(a, "controller"), exporter_host=_str(a, "exporter_host"),
        exporter_port=_int(a, "exporter_port", 0, 65535), data_dir=Path(_str(a, "data_dir")),
        sample_interval_ms=_int(a, "sample_interval_ms", 20, 60000), heartbeat_ms=_int(a, "heartbeat_ms", 100, 60000),
        source=_str(a, "source"), seed=_int(a, "seed", 0, 2 ** 63 - 1),
        pesq_interval_s=_num(a, "pesq_interval_s", 1.0, 3600.0), warmup_s=_num(a, "warmup_s", 0.0, 30.0),
        external_command=a["external_command"], log_level=_str(a, "log_level"),
        curve_secret_key_file=_path(a, "curve_secret_key_file"),
        controller_public_key_file=_path(a, "controller_public_key_file"), insecure=_bool(a, "insecure"),
        sim={ext: SimConditions.from_table(sims.get(ext, {}), f"sim.{ext}") for ext in EXTENSIONS},
    )
    if station_number(cfg.station) is None:
        raise ConfigError(f"[agent] station must look like Station-N, got {cfg.station!r}")
    if cfg.source not in SOURCES:
        raise ConfigError(f"[agent] source {cfg.source!r} is not one of {', '.join(SOURCES)}")
    if not isinstance(cfg.external_command, (str, list)):
        raise ConfigError("[agent] external_command must be a string or an array of strings")
    return cfg


def _str(t: dict[str, Any], key: str) -> str:
    if not isinstance(t[key], str) or not t[key]:
        raise ConfigError(f"[agent] {key} must be a non-empty string, got {t[key]!r}")
    return t[key]


def _path(t: dict[str, Any], key: str) -> str:
    if not isinstance(t[key], str):
        raise ConfigError(f"[agent] {key} must be a path string, got {t[key]!r}")
    return t[key]


def _bool(t: dict[str, Any], key: str) -> bool:
    if not isinstance(t[key], bool):
        raise ConfigError(f"[agent] {key} must be true or false, got {t[key]!r}")
    return t[key]


def _int(t: dict[str, Any], key: str, lo: int, hi: int) -> int:
    v = t[key]
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ConfigError(f"[agent] {key} must be an integer in {lo}..{hi}, got {v!r}")
    return v


def _num(t: dict[str, Any], key: str, lo: float, hi: float) -> float:
    v = t[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
        raise ConfigError(f"[agent] {key} must be a number in {lo}..{hi}, got {v!r}")
    return float(v)
