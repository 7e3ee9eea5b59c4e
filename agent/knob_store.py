"""The applied knob set of each extension on disk: atomic writes, reloaded at start."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from shared.atomic_file import atomic_write
from shared.knobs import defaults, validate

log = logging.getLogger(__name__)


class KnobStore:
    """`applied-<extension>.json` in data_dir: {"version", "knobs" (full set), "applied_at"}."""

    def __init__(self, data_dir: str | Path) -> None:
        self.dir = Path(data_dir)

    def path(self, extension: str) -> Path:
        return self.dir / f"applied-{extension}.json"

    def load(self, extension: str) -> tuple[int, dict[str, Any]]:
        """The persisted (version, full knob set), or (0, defaults) when none or unusable.

        A stored set is re-validated against today's catalog over the defaults, so a knob
        the catalog dropped or a value it no longer allows never gets applied.
        """
        path = self.path(extension)
        try:
            doc = json.loads(path.read_text())
            version, stored = doc["version"], doc["knobs"]
            if not isinstance(version, int) or isinstance(version, bool) or version < 0:
                raise ValueError(f"bad version {version!r}")
        except FileNotFoundError:
            return 0, defaults()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("ignoring unreadable applied knobs %s (%s): starting from the defaults", path, exc)
            return 0, defaults()
        base = defaults()
        clean, problems = validate(stored, base)
        if problems:
            log.error("ignoring applied knobs %s: %s", path, "; ".join(map(str, problems)))
            return 0, base
        return version, {**base, **clean}

    def save(self, extension: str, version: int, knobs: dict[str, Any], applied_at: float) -> None:
        doc = {"extension": extension, "version": version, "knobs": knobs, "applied_at": applied_at}
        atomic_write(self.path(extension), json.dumps(doc, indent=1, sort_keys=True).encode())
