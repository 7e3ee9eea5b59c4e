"""Desired knob sets per point in TinyDB, written atomically (temp file, fsync, rename, fsync dir).

Versioning: a point nobody has configured has the catalog defaults at version 1 (not
stored until the first change). Version 0 is what an agent reports when it has never
received a set, so a fresh agent always gets one explicit KNOB_SET of the defaults and
the controller knows for certain what it runs. Every accepted change is version + 1.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinydb import Query

from controller.clock import Clock, iso_ms
from controller.documents import DocumentFile
from shared.knobs import KNOBS_BY_NAME, defaults
from shared.topology import Point, Topology

log = logging.getLogger("tpmon.controller.store")

DEFAULT_VERSION = 1


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


class DesiredKnobStore:
    """Desired knobs of every point: served from memory, persisted before a change is accepted.

    The TinyDB document file writes on its own single thread (controller.documents): the
    fsyncs take milliseconds on a real disk and must not stall the event loop, and one
    thread keeps writes in order.
    """

    def __init__(self, file: DocumentFile, topology: Topology, clock: Clock) -> None:
        self.file = file
        self.topology = topology
        self.clock = clock
        self._desired: dict[Point, DesiredKnobs] = {}

    @property
    def path(self) -> Path:
        return self.file.path

    @property
    def open_handles(self) -> int:
        return 1 if self.file.is_open else 0

    async def open(self) -> None:
        await self.file.open()
        for doc in await self.file.load(lambda db: db.table("desired").all()):
            point = self._point_of(doc)
            if point is not None:
                self._desired[point] = self._from_doc(point, doc)

    def _point_of(self, doc: dict[str, Any]) -> Point | None:
        station, ext = doc.get("station"), doc.get("extension")
        if isinstance(station, str) and isinstance(ext, str) and self.topology.has_point(station, ext):
            return Point(station, ext)
        log.warning("desired knobs: ignoring %s/%s (not in the configured topology)", station, ext)
        return None

    def _from_doc(self, point: Point, doc: dict[str, Any]) -> DesiredKnobs:
        """Stored values over today's defaults; a value today's catalog refuses falls back to its default."""
        knobs = defaults()
        for name, value in (doc.get("knobs") or {}).items():
            knob = KNOBS_BY_NAME.get(name)
            if knob is None or knob.check(value) is not None:
                log.warning("desired knobs: %s %s=%r no longer valid, using the default", point.id, name, value)
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
        if not self.file.is_open:
            raise RuntimeError("desired knob store is not open")
        new = DesiredKnobs(point, dict(knobs), self.get(point).version + 1, iso_ms(self.clock.wall()), updated_by)
        doc = new.to_doc()
        q = Query()
        await self.file.write(lambda db: db.table("desired").upsert(
            doc, (q.station == point.station) & (q.extension == point.extension)))
        self._desired[point] = new
        return self.get(point)

    async def close(self) -> None:
        await self.file.close()  # lets a write in progress finish
