"""Desired knob sets per point in TinyDB, written atomically (temp file, fsync, rename, fsync dir).

Versioning: a point nobody has configured has the catalog defaults at version 1 (not
stored until the first change). Version 0 is what an agent reports when it has never
received a set, so a fresh agent always gets one explicit KNOB_SET of the defaults and
the controller knows for certain what it runs. Every accepted change is version + 1.
"""
from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinydb import Query, TinyDB
from tinydb.storages import Storage

from controller.clock import Clock, iso_ms
from shared.config import ConfigError
from shared.knobs import KNOBS_BY_NAME, defaults
from shared.atomic_file import atomic_write, remove_leftovers
from shared.topology import Point, Topology

log = logging.getLogger("tpmon.controller.store")

DEFAULT_VERSION = 1


class AtomicJSONStorage(Storage):
    """TinyDB storage that replaces the whole file atomically on every write.

    TinyDB's JSONStorage truncates and rewrites in place, so a crash mid-write leaves a
    torn file. Here a reader (or a restarted controller) sees either the previous or the
    new complete file: write a sibling temp file, fsync it, rename over the target, then
    fsync the directory so the rename itself survives a power cut.
    """

    def __init__(self, path: str | Path, **_: Any) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(self.path)

    def read(self) -> dict[str, Any] | None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        if not text.strip():
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config store {self.path} is not valid JSON ({exc}); "
                              "restore it from a backup or remove it to start from defaults") from None

    def write(self, data: dict[str, Any]) -> None:
        atomic_write(self.path, json.dumps(data, separators=(",", ":")).encode())

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class DesiredKnobs:
    point: Point
    knobs: dict[str, Any]
    version: int
    updated_at: str | None
    updated_by: str

    def to_doc(self) -> dict[str, Any]:
        return {"station": self.point.station, "extension": self.point.extension, "knobs": self.knobs,
                "version": self.version, "updated_at": self.updated_at, "updated_by": self.updated_by}


class ConfigStore:
    """Desired knobs of every point: served from memory, persisted before a change is accepted.

    Writes run on a single-thread executor: the fsyncs take milliseconds on a real disk and
    must not stall the event loop, and one thread keeps writes in order.
    """

    def __init__(self, path: str | Path, topology: Topology, clock: Clock) -> None:
        self.path = Path(path)
        self.topology = topology
        self.clock = clock
        self._db: TinyDB | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._desired: dict[Point, DesiredKnobs] = {}

    @property
    def open_handles(self) -> int:
        return 0 if self._db is None else 1

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tpmon-store")
        await asyncio.get_running_loop().run_in_executor(self._executor, self._load)

    def _load(self) -> None:
        self._db = TinyDB(self.path, storage=AtomicJSONStorage)
        for doc in self._db.table("desired").all():
            point = self._point_of(doc)
            if point is not None:
                self._desired[point] = self._from_doc(point, doc)

    def _point_of(self, doc: dict[str, Any]) -> Point | None:
        station, ext = doc.get("station"), doc.get("extension")
        if isinstance(station, str) and isinstance(ext, str) and self.topology.has_point(station, ext):
            return Point(station, ext)
        log.warning("config store: ignoring desired knobs of %s/%s (not in the configured topology)", station, ext)
        return None

    def _from_doc(self, point: Point, doc: dict[str, Any]) -> DesiredKnobs:
        """Stored values over today's defaults; a value today's catalog refuses falls back to its default."""
        knobs = defaults()
        for name, value in (doc.get("knobs") or {}).items():
            knob = KNOBS_BY_NAME.get(name)
            if knob is None or knob.check(value) is not None:
                log.warning("config store: %s %s=%r no longer valid, using the default", point.id, name, value)
                continue
            knobs[name] = knob.coerce(value)
        return DesiredKnobs(point, knobs, int(doc.get("version", DEFAULT_VERSION)),
                            doc.get("updated_at"), str(doc.get("updated_by", "")))

    def get(self, point: Point) -> DesiredKnobs:
        found = self._desired.get(point)
        if found is None:
            return DesiredKnobs(point, defaults(), DEFAULT_VERSION, None, "defaults")
        return DesiredKnobs(point, dict(found.knobs), found.version, found.updated_at, found.updated_by)

    async def put(self, point: Point, knobs: dict[str, Any], updated_by: str) -> DesiredKnobs:
        """Persist a full set as the next version; the new state is visible once it is on disk.

        Callers serialize writes per point (KnobSync's lock) so versions stay monotonic.
        """
        if self._db is None or self._executor is None:
            raise RuntimeError("config store is not open")
        new = DesiredKnobs(point, dict(knobs), self.get(point).version + 1, iso_ms(self.clock.wall()), updated_by)
        await asyncio.get_running_loop().run_in_executor(self._executor, self._write, new)
        self._desired[point] = new
        return self.get(point)

    def _write(self, desired: DesiredKnobs) -> None:
        assert self._db is not None
        q = Query()
        self._db.table("desired").upsert(desired.to_doc(), (q.station == desired.point.station)
                                         & (q.extension == desired.point.extension))

    async def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)  # lets a write in progress finish
            self._executor = None
        if self._db is not None:
            self._db.close()
            self._db = None
