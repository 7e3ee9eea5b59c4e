"""Controller settings: `[controller]` of a TOML file, then TPMON_CONTROLLER_* env, then CLI flags."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from shared.config import ConfigError, apply_env, load_toml, section
from shared.topology import DEFAULT_STATION_COUNT

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Asymmetric algorithms verify with a public key; `none` is never accepted, whatever a token says.
JWT_ALGORITHMS = ("HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512",
                  "PS256", "PS384", "PS512")
_OPTIONAL_PATHS = ("jwt_secret_file", "jwt_public_key_file", "signing_secret_file", "tls_cert", "tls_key",
                   "curve_secret_key_file", "curve_allowlist_file", "audit_log")


@dataclass(frozen=True)
class ControllerSettings:
    """Every `[controller]` key, declared once: its type, its default and what it does.

    The file's known keys, the env overrides (TPMON_CONTROLLER_<KEY>) and DEFAULTS all come
    from these fields, so a new setting is one line here (plus its check, if it needs one).
    """
    http_host: str = "0.0.0.0"
    http_port: int = 3090
    link_endpoint: str = "tcp://*:3091"
    data_dir: str = "./data"
    stations: int = DEFAULT_STATION_COUNT
    tick_ms: int = 150
    stale_after_ms: int = 1000
    offline_after_ms: int = 3000
    ack_timeout_ms: int = 2000
    heartbeat_ms: int = 1000
    log_level: str = "INFO"
    # --- security: tokens, rate limits, signed requests, TLS, the CURVE agent link, the audit log.
    # Empty paths mean "under data_dir" (see the properties below).
    auth: bool = True                       # false only for benchmarks and local experiments: logs a warning
    jwt_algorithm: str = "HS256"            # HS256 | HS384 | HS512 (secret) or RS256 | ES256 ... (public key)
    jwt_secret_file: str = ""               # HS*: created with 32 random bytes on first start when missing
    jwt_public_key_file: str = ""           # RS*/ES*/PS*: PEM public key; tokens are minted elsewhere
    rate_limit_per_minute: int = 1000       # per client (token subject, else address), all requests
    write_rate_limit_per_minute: int = 100  # per client, requests that change something
    signing_secret_file: str = ""           # HMAC-SHA256 key for critical requests; created when missing
    signature_max_age_s: int = 300          # a signed request older (or newer) than this is refused
    cors_origins: tuple[str, ...] = ()      # exact origins allowed to call the API from a browser
    tls_cert: str = ""                      # PEM certificate chain; with tls_key turns HTTPS on (TLS 1.3 only)
    tls_key: str = ""
    insecure: bool = False                  # plaintext agent link (no CURVE); logs a warning
    curve_secret_key_file: str = ""         # the controller's CURVE keypair (`tpmon keys` writes it)
    curve_allowlist_file: str = ""          # agent public keys, each bound to its station
    audit_log: str = ""                     # JSON lines; default <data_dir>/audit.log
    max_body_bytes: int = 1 << 20           # larger request bodies get 413
    # --- real-time stream: Socket.IO at /socket.io/, WebSocket at /api/v1/ws
    stream_ping_ms: int = 25000             # WebSocket pings / Engine.IO ping interval (no pong in half of it: closed)
    stream_max_buffer_bytes: int = 524288   # unsent bytes a client may hold before updates wait (latest wins)
    stream_max_pending_events: int = 256    # events waiting for one client before it is told and disconnected
    stream_stall_timeout_ms: int = 10000    # a client that takes nothing for this long while data waits is dropped
    stream_max_subscriptions: int = 16      # per connection
    # --- metric history (history.sqlite): tiers and how long each is kept
    history_retention_raw_days: int = 7
    history_retention_1m_days: int = 30
    history_retention_5m_days: int = 90
    history_retention_1h_days: int = 365
    history_flush_ms: int = 1000            # a kill -9 loses at most this much of the newest samples
    # --- alerts: resolved alerts kept, whichever limit is reached first; active ones always kept
    alerts_keep_resolved: int = 1000
    alerts_keep_resolved_days: int = 30
    # --- knob change history: key metrics averaged over this window before and after each change
    knob_history_window_s: int = 60
    knob_history_retention_days: int = 365  # knob changes kept this long (each point's newest always: it is what runs)
    # --- optimizer: learning by what-if replay, training, stored analyses (docs/optimizer.md)
    optimizer_learning: bool = True         # replay-driven exploration and periodic retraining in the background
    optimizer_learn_interval_s: int = 30    # one exploration replay (the next online point) this often
    optimizer_retrain_s: int = 300          # retrain the models this often (and as soon as first rows exist)
    optimizer_lookback_s: int = 3600        # live history the models learn from, besides the replay rows
    optimizer_train_budget_s: int = 20      # CPU time one model's training may take (in the worker process)
    optimizer_min_rows: int = 200           # fewer training rows than this: no model, nothing recommended
    optimizer_keep_analyses_s: int = 86400  # stored analyses kept this long (at least an hour)

    def __post_init__(self) -> None:
        if isinstance(self.cors_origins, list):  # TOML arrays arrive as lists; keep the settings hashable
            object.__setattr__(self, "cors_origins", tuple(self.cors_origins))
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _OPTIONAL_PATHS:
                if not isinstance(value, str):
                    raise ConfigError(f"[controller] {f.name} must be a path string, got {value!r}")
            elif f.type in ("bool", bool):
                if not isinstance(value, bool):
                    raise ConfigError(f"[controller] {f.name} must be true or false, got {value!r}")
            elif f.name == "cors_origins":
                if not all(isinstance(o, str) and o.startswith(("http://", "https://")) for o in value):
                    raise ConfigError("[controller] cors_origins must be a list of origins like "
                                      f"\"https://ops.example.org\", got {list(value)!r}")
            elif f.type in ("int", int):
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
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("[controller] tls_cert and tls_key go together: set both or neither")
        if self.jwt_algorithm not in JWT_ALGORITHMS:
            raise ConfigError(f"[controller] jwt_algorithm must be one of {', '.join(JWT_ALGORITHMS)}")
        if not self.jwt_algorithm.startswith("HS") and not self.jwt_public_key_file:
            raise ConfigError(f"[controller] jwt_algorithm {self.jwt_algorithm} needs jwt_public_key_file")

    def _under_data(self, value: str, default: str) -> Path:
        return Path(value) if value else Path(self.data_dir) / default

    @property
    def jwt_secret_path(self) -> Path:
        return self._under_data(self.jwt_secret_file, "secrets/jwt.secret")

    @property
    def signing_secret_path(self) -> Path:
        return self._under_data(self.signing_secret_file, "secrets/signing.secret")

    @property
    def curve_secret_key_path(self) -> Path:
        return self._under_data(self.curve_secret_key_file, "keys/controller.key_secret")

    @property
    def curve_allowlist_path(self) -> Path:
        return self._under_data(self.curve_allowlist_file, "keys/allowlist.toml")

    @property
    def audit_log_path(self) -> Path:
        return self._under_data(self.audit_log, "audit.log")

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)

    @property
    def history_path(self) -> Path:
        return Path(self.data_dir) / "history.sqlite"

    def data_file(self, name: str) -> Path:
        """A document file of one concern under data_dir (thresholds.json, alerts.json, …)."""
        return Path(self.data_dir) / name

    @property
    def store_path(self) -> Path:
        return Path(self.data_dir) / "config.json"


# Every key's default, read off the fields: the keys `[controller]` may spell and env may override.
DEFAULTS: Mapping[str, Any] = MappingProxyType({f.name: f.default for f in fields(ControllerSettings)})


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
