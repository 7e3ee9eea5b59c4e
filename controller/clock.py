"""Clocks the controller reads: monotonic for ages and timeouts, wall for timestamps; injectable."""
from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...
    def wall(self) -> float: ...


class SystemClock:
    """The real clocks."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()


class ManualClock:
    """A clock tests move by hand; both readings advance together."""

    def __init__(self, wall: float = 1_700_000_000.0) -> None:
        self._mono = 1000.0
        self._wall = wall

    def monotonic(self) -> float:
        return self._mono

    def wall(self) -> float:
        return self._wall

    def advance(self, seconds: float) -> None:
        self._mono += seconds
        self._wall += seconds


def iso_ms(epoch: float | None) -> str | None:
    """Epoch seconds as ISO-8601 UTC with milliseconds and a Z (`2024-01-15T10:30:00.123Z`)."""
    if epoch is None:
        return None
    try:
        dt = datetime.fromtimestamp(float(epoch), tz=UTC)
    except (OverflowError, OSError, ValueError, TypeError):
        return None
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")
