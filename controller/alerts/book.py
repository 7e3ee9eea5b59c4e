"""The alert book: every active alert and the recent resolved ones, in memory and in a TinyDB file.

Documents are read from memory; changes are written in batches. A change the engine makes
(created, escalated, resolved) is written within `flush_delay` seconds, together with any
others of that moment; a change made over the API (acknowledge, dismiss) is on disk before
the API answers. A kill -9 can lose at most the engine's last `flush_delay` of transitions,
which it finds again from the next samples. Resolved alerts are kept up to `keep_resolved`
documents and `keep_days` days, whichever is smaller; active ones are always kept.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from controller.alerts.records import read_table, write_batch
from controller.documents import DocumentFile

log = logging.getLogger("tpmon.controller.alerts")

TABLE = "alerts"
Key = tuple[str, str, str]  # station, extension, metricId


def epoch_of(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def key_of(alert: dict[str, Any]) -> Key:
    return alert["station"], alert["extension"], alert["metricId"]


class AlertBook:
    def __init__(self, file: DocumentFile, wall: Callable[[], float], keep_resolved: int, keep_days: float,
                 flush_delay: float = 0.25) -> None:
        self.file = file
        self.wall = wall
        self.keep_resolved = keep_resolved
        self.keep_seconds = keep_days * 86400
        self.flush_delay = flush_delay
        self.alerts: dict[int, dict[str, Any]] = {}   # seq (the document id) -> alert, oldest first
        self._seq_of: dict[str, int] = {}
        self._active: dict[Key, int] = {}
        self._next_seq = 1
        self._dirty: set[int] = set()
        self._removed: set[int] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[None]] = set()

    async def load(self) -> None:
        docs: dict[int, dict[str, Any]] = await self.file.load(lambda db: read_table(db, TABLE))
        for seq in sorted(docs):
            self._remember(seq, docs[seq])
            self._next_seq = seq + 1

    def _remember(self, seq: int, alert: dict[str, Any]) -> None:
        self.alerts[seq] = alert
        self._seq_of[alert["id"]] = seq
        if not alert["resolved"]:
            self._active[key_of(alert)] = seq

    # --- reading ----------------------------------------------------------------------------------

    def get(self, alert_id: str) -> dict[str, Any] | None:
        seq = self._seq_of.get(alert_id)
        return None if seq is None else self.alerts[seq]

    def active_for(self, key: Key) -> dict[str, Any] | None:
        seq = self._active.get(key)
        return None if seq is None else self.alerts[seq]

    def active(self) -> list[dict[str, Any]]:
        return [self.alerts[seq] for seq in self._active.values()]

    def newest_first(self, before: int | None = None) -> Iterable[tuple[int, dict[str, Any]]]:
        """(seq, alert) from the newest, only those older than the cursor `before` when given."""
        for seq in reversed(self.alerts):
            if before is None or seq < before:
                yield seq, self.alerts[seq]

    # --- changing ---------------------------------------------------------------------------------

    def add(self, alert: dict[str, Any]) -> None:
        seq, self._next_seq = self._next_seq, self._next_seq + 1
        self._remember(seq, alert)
        self.changed(alert)

    def changed(self, alert: dict[str, Any]) -> None:
        """`alert` was changed in place: index it again and write it with the next batch."""
        seq = self._seq_of[alert["id"]]
        key = key_of(alert)
        if alert["resolved"] and self._active.get(key) == seq:
            del self._active[key]
        self._dirty.add(seq)

    def schedule_flush(self) -> None:
        """Write pending changes within flush_delay (one batch for whatever changes until then)."""
        if self._timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a unit test of the engine): close() or flush() writes them
        self._timer = loop.call_later(self.flush_delay, self._flush_in_background)

    def _flush_in_background(self) -> None:
        self._timer = None
        task = asyncio.ensure_future(self.flush())
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def flush(self) -> None:
        """Write every pending change (and drop expired resolved alerts) in one rewrite of the file."""
        self._prune(self.wall())
        if not self._dirty and not self._removed:
            return
        upserts = {seq: dict(self.alerts[seq]) for seq in self._dirty if seq in self.alerts}
        removals = set(self._removed)
        self._dirty.clear()
        self._removed.clear()
        try:
            await self.file.write(lambda db: write_batch(db, TABLE, upserts, removals))
        except Exception:
            self._dirty |= set(upserts)  # try again with the next batch
            self._removed |= removals
            log.exception("writing %d alert changes failed; retrying with the next batch", len(upserts))
            raise

    def _prune(self, now: float) -> None:
        """Forget resolved alerts beyond keep_resolved (oldest first) or resolved more than keep_days ago."""
        resolved = [seq for seq, alert in self.alerts.items() if alert["resolved"]]
        excess = len(resolved) - self.keep_resolved
        for i, seq in enumerate(resolved):
            at = epoch_of(self.alerts[seq]["resolvedAt"])
            if i < excess or (at is not None and now - at > self.keep_seconds):
                alert = self.alerts.pop(seq)
                del self._seq_of[alert["id"]]
                self._dirty.discard(seq)
                self._removed.add(seq)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flushing:
            await asyncio.gather(*self._flushing, return_exceptions=True)
        await self.flush()
