"""The audit trail: one JSON line per security-relevant event (INTERFACE STUB: helper replaces)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable


class AuditLog:
    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path, self.clock = path, clock

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def record(self, event: str, *, who: str, what: str, where: str, trace: str, outcome: str,
               **details: Any) -> None:
        """Append one line: {"timestamp", "event", "who", "what", "where", "traceId", "outcome", ...details}."""
