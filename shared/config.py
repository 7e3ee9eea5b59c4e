"""TOML configuration with environment overrides (`TPMON_<SECTION>_<KEY>=value`)."""
from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration file or override that cannot be used; the message names the key."""


def load_toml(path: str | Path | None, env: Mapping[str, str] | None = None,
              prefix: str = "TPMON_") -> dict[str, Any]:
    """Read `path` (or nothing) and apply overrides from `env` onto existing keys.

    `TPMON_CONTROLLER_HTTP_PORT=4000` overrides `[controller] http_port`; the value is
    parsed as a TOML value when it can be (numbers, booleans, arrays) and kept as a
    string otherwise. Only keys that the file or the defaults define can be overridden,
    so a typo in a variable name does not silently do nothing: it is simply not ours.
    """
    doc: dict[str, Any] = {}
    if path is not None:
        try:
            doc = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
    apply_env(doc, os.environ if env is None else env, prefix)
    return doc


def apply_env(doc: dict[str, Any], env: Mapping[str, str], prefix: str) -> None:
    for section, table in doc.items():
        if not isinstance(table, dict):
            continue
        for key in table:
            name = f"{prefix}{section}_{key}".upper()
            if name in env:
                table[key] = parse_value(env[name])


def parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def section(doc: Mapping[str, Any], name: str, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Merge a section over its defaults, refusing keys the defaults do not know."""
    table = doc.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"[{name}] must be a table")
    unknown = sorted(set(table) - set(defaults))
    if unknown:
        raise ConfigError(f"[{name}] unknown keys: {', '.join(unknown)}")
    return {**defaults, **table}
