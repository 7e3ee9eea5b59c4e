"""Stations, extensions and the point ids that name the 24 monitoring points."""
from __future__ import annotations

import re
from dataclasses import dataclass

EXTENSIONS: dict[str, str] = {"3333": "English", "4444": "French"}
DEFAULT_STATION_COUNT = 12
_STATION_RE = re.compile(r"^Station-([1-9][0-9]{0,3})$")


@dataclass(frozen=True, order=True)
class Point:
    """One monitoring point: a station's extension."""
    station: str
    extension: str

    @property
    def id(self) -> str:
        return f"{self.station}/{self.extension}"

    @property
    def json_key(self) -> str:
        """The plan's key for an extension inside a station: `extension_3333`."""
        return f"extension_{self.extension}"

    @property
    def language(self) -> str:
        return EXTENSIONS[self.extension]


def station_name(n: int) -> str:
    return f"Station-{n}"


def station_number(name: str) -> int | None:
    m = _STATION_RE.fullmatch(name)  # `$` alone would let "Station-1\n" through
    return int(m.group(1)) if m else None


class Topology:
    """The configured set of stations (Station-1 … Station-N) and their extensions."""

    def __init__(self, station_count: int = DEFAULT_STATION_COUNT) -> None:
        if station_count < 1:
            raise ValueError("station_count must be at least 1")
        self.station_count = station_count
        self.stations: tuple[str, ...] = tuple(station_name(n) for n in range(1, station_count + 1))
        self.points: tuple[Point, ...] = tuple(Point(s, e) for s in self.stations for e in EXTENSIONS)

    def has_station(self, station: str) -> bool:
        n = station_number(station)
        return n is not None and n <= self.station_count

    def has_point(self, station: str, extension: str) -> bool:
        return self.has_station(station) and extension in EXTENSIONS

    def point(self, station: str, extension: str) -> Point:
        if not self.has_station(station):
            raise KeyError(f"unknown station {station!r} (known: Station-1 … Station-{self.station_count})")
        if extension not in EXTENSIONS:
            raise KeyError(f"unknown extension {extension!r} (known: {', '.join(EXTENSIONS)})")
        return Point(station, extension)
