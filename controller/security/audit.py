"""The audit trail: one JSON line per security-relevant event, appended to a file that survives restarts.

Every line has `timestamp` (ISO 8601 UTC, milliseconds), `event`, `who`, `what`, `where`,
`traceId` and `outcome`, then the event's details. Callers pass reasons and identities only,
never a token or a secret.

Floods are summarized, not copied: for a `summarized` event (rate-limit refusals by default)
the first one per client per minute is written, the rest of that minute are counted, and the
count leaves as one `<event>.summary` line (`count`, `from`, `until`, the last request's
what/where/traceId) once the minute is over: at the next record, on the log's own timer
(while an event loop runs), or on close.
So every refusal is either its own line or counted in exactly one summary.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from controller.clock import iso_ms

log = logging.getLogger("tpmon.controller.audit")
SUMMARY_WINDOW_S = 60.0


@dataclass
class _Quiet:
    """Refusals of one client being counted instead of written."""
    since: float
    count: int = 0
    last: float = 0.0
    what: str = ""
    where: str = ""
    trace: str = ""


class AuditLog:
    def __init__(self, path: Path, clock: Callable[[], float] = time.time,
                 summarized: Iterable[str] = ("rate_limited",), window_s: float = SUMMARY_WINDOW_S) -> None:
        self.path, self.clock = path, clock
        self.summarized = frozenset(summarized)
        self.window_s = window_s
        self._file: IO[str] | None = None
        self._quiet: dict[tuple[str, str], _Quiet] = {}
        self._next_flush = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Append mode (O_APPEND): restarts add to the file, and after logrotate's copytruncate the
        # next line lands at the new end instead of leaving a hole. Line buffering hands every
        # record to the kernel as it is written, so a kill -9 loses nothing already recorded. No
        # fsync per line: that guards only against power loss or a kernel crash, and would cost a
        # disk flush (milliseconds) on the event loop for every refusal of a flood.
        self._file = open(self.path, "a", encoding="utf-8", buffering=1)
        try:  # in the app (a running loop), pending summaries leave within a window even if all is quiet
            self._timer = asyncio.get_running_loop().call_later(self.window_s, self._on_timer)
        except RuntimeError:
            self._timer = None

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._file is not None:
            self.flush(force=True)
            self._file.close()
            self._file = None

    def record(self, event: str, *, who: str, what: str, where: str, trace: str, outcome: str,
               **details: Any) -> None:
        """Append one line: {"timestamp", "event", "who", "what", "where", "traceId", "outcome", ...details}."""
        now = self.clock()
        if now >= self._next_flush:
            self.flush(now)
        if event in self.summarized and self._counted(event, who, what, where, trace, now):
            return
        self._write(now, event, who, what, where, trace, outcome, details)

    def flush(self, now: float | None = None, force: bool = False) -> None:
        """Write the summaries of counting windows that are over (all of them when `force`)."""
        now = self.clock() if now is None else now
        self._next_flush = now + 1.0  # at most one scan per second from record()
        for key, quiet in list(self._quiet.items()):
            if force or now - quiet.since >= self.window_s:
                del self._quiet[key]
                self._summarize(key, quiet)

    def _counted(self, event: str, who: str, what: str, where: str, trace: str, now: float) -> bool:
        """True when this refusal joins the current minute's count instead of being written."""
        key = (event, who)
        quiet = self._quiet.get(key)
        if quiet is not None and now - quiet.since < self.window_s:
            quiet.count += 1
            quiet.last, quiet.what, quiet.where, quiet.trace = now, what, where, trace
            return True
        if quiet is not None:  # its minute is over: its summary goes before the new first line
            self._summarize(key, quiet)
        self._quiet[key] = _Quiet(since=now)
        return False

    def _summarize(self, key: tuple[str, str], quiet: _Quiet) -> None:
        if quiet.count:
            event, who = key
            self._write(quiet.last, f"{event}.summary", who, quiet.what, quiet.where, quiet.trace, "refused",
                        {"count": quiet.count, "from": iso_ms(quiet.since), "until": iso_ms(quiet.last)})

    def _write(self, when: float, event: str, who: str, what: str, where: str, trace: str, outcome: str,
               details: dict[str, Any]) -> None:
        doc = {"timestamp": iso_ms(when), "event": event, "who": who, "what": what, "where": where,
               "traceId": trace, "outcome": outcome, **details}
        line = json.dumps(doc, default=str, separators=(",", ":"))  # ASCII: no U+2028 to split a line
        if self._file is None:
            log.error("audit log %s is not open; lost record: %s", self.path, line)
            return
        try:
            self._file.write(line + "\n")
        except OSError as exc:  # a full disk must not turn every request into a 500; say it loudly
            log.error("cannot write audit log %s (%s); lost record: %s", self.path, exc.strerror, line)

    def _on_timer(self) -> None:
        self.flush()
        self._timer = asyncio.get_running_loop().call_later(self.window_s, self._on_timer)
