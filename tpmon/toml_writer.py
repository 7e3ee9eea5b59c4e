"""Writes the flat two-level TOML the demo generates (tables of scalars and lists)."""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dumps(doc: Mapping[str, Mapping[str, Any]]) -> str:
    """`{"agent": {"station": "Station-1"}, "sim.3333": {...}}` -> TOML text (dotted table names kept)."""
    out = []
    for table, values in doc.items():
        out.append(f"[{table}]")
        out.extend(f"{k} = {_value(v)}" for k, v in values.items())
        out.append("")
    return "\n".join(out)
