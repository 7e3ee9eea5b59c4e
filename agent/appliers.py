"""Hand-off of the knobs the reference pipeline does not implement to the station's audio engine.

Interface (what a station's audio engine integrates with):

- File: `<data_dir>/external-<extension>.json`, replaced atomically (temp file, fsync,
  rename, fsync of the directory) every time a knob set is applied, so a reader never sees
  a partial file. Content:

      {"station": "Station-1", "extension": "3333", "version": 7,
       "applied_at": 1732600000.123,
       "knobs": {"aec_drift_compensation": true, "formant_shift": 0.0, ...}}

  `knobs` holds every knob the catalog marks `applied_by == "external"`, with its applied
  value (the full external set, not a delta). The engine watches the file (inotify or
  polling its mtime) and applies the set; `version` increases with every new set.

- Command (optional, `[agent] external_command`): run after the file is written, as
  `argv + [path]` (a TOML array, or a string split by shlex), without a shell, in its own
  process group, never waited on by the frame loop. Its exit status is logged when it is
  reaped; a failing command does not undo the applied set (the agent's state is the file).
"""
from __future__ import annotations

import json
import logging
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shared.atomic_file import atomic_write
from shared.knobs import EXTERNAL, KNOBS

log = logging.getLogger(__name__)
EXTERNAL_KNOBS: tuple[str, ...] = tuple(k.name for k in KNOBS if k.applied_by == EXTERNAL)


class ExternalApplier:
    def __init__(self, data_dir: str | Path, station: str, command: str | Sequence[str] = "") -> None:
        self.dir = Path(data_dir)
        self.station = station
        self.argv: list[str] = shlex.split(command) if isinstance(command, str) else list(command)
        self._children: list[subprocess.Popen] = []
        self.applied = 0

    def path(self, extension: str) -> Path:
        return self.dir / f"external-{extension}.json"

    def apply(self, extension: str, version: int, knobs: Mapping[str, Any], applied_at: float) -> Path:
        doc = {"station": self.station, "extension": extension, "version": version, "applied_at": applied_at,
               "knobs": {name: knobs[name] for name in EXTERNAL_KNOBS}}
        path = self.path(extension)
        atomic_write(path, json.dumps(doc, indent=1, sort_keys=True).encode())
        self.applied += 1
        if self.argv:
            self._run(path)
        return path

    def _run(self, path: Path) -> None:
        self.reap()
        try:
            self._children.append(subprocess.Popen([*self.argv, str(path)], stdin=subprocess.DEVNULL,
                                                   start_new_session=True))
        except OSError as exc:
            log.error("external_command %s failed to start: %s", self.argv, exc)

    def reap(self) -> None:
        """Collect finished commands (called on every apply and at shutdown): no zombies."""
        alive = []
        for child in self._children:
            code = child.poll()
            if code is None:
                alive.append(child)
            elif code != 0:
                log.warning("external_command %s exited with %d", child.args, code)
        self._children = alive
