"""Knob change history: who changed which knob of which point, from what to what, and what it did to the key metrics.

One record per accepted change of a point's desired knobs (a version), holding every knob
the change gave with its old and new value; the API lists them a knob per row, like the
plan's knob_config_history table. With each change go the key metrics averaged over the
minute before it (read when it is recorded) and over the minute after it (filled in by a
periodic pass once that minute is in the history store, also after a restart).

Records are written before the desired set they describe (KnobSync), so a crash between
the two leaves a record whose version was never stored: `open` drops those. The file is
capped at `max_changes` records (oldest dropped first): TinyDB rewrites the whole file on
every write, so its size is what every change costs.
"""
from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Protocol

from tinydb import TinyDB
from tinydb.table import Document

from controller.clock import Clock, iso_ms
from controller.documents import DocumentFile
from shared.metrics import METRICS_BY_KEY
from shared.topology import Point, Topology

log = logging.getLogger("tpmon.controller.knobs.changes")

# What an operator looks at to judge a change: delay, loss, quality, dropouts, bandwidth, load.
KEY_METRICS: tuple[str, ...] = ("latency.end_to_end", "packet.loss_rate", "audioQuality.mos_score",
                                "audioQuality.snr", "buffer.underflow_count", "packet.throughput_kbps",
                                "performance.cpu_usage")
# Where a change came from: an open set (the optimizer adds "optimizer"); these are the known ones.
SOURCES: tuple[str, ...] = ("api", "template", "batch", "rollback", "optimizer")
WINDOW_S = 60.0          # the minute before and the minute after a change
SETTLE_S = 5.0           # after-window end + this: the history store has flushed its samples (app: 2 flushes + 1 s)
MAX_CHANGES = 5000       # records kept (about 4 MB of JSON, ~0.1 s to rewrite); older ones are dropped
TABLE = "changes"

assert all(key in METRICS_BY_KEY for key in KEY_METRICS)


class MetricsHistory(Protocol):
    """What the history of metrics offers (controller.history's HistoryStore)."""

    async def mean_between(self, point: Point, start: float, end: float,
                           keys: list[str]) -> dict[str, float | None]: ...


@dataclass(frozen=True)
class Attribution:
    """Who asked for a change, why, and through what (and from where, for the audit log)."""
    by: str
    source: str = "api"
    reason: str | None = None
    batch_id: str | None = None
    template_id: str | None = None
    where: str = ""            # the client's address for an HTTP caller; "" for one inside the controller


@dataclass
class Change:
    """One accepted change of one point's desired knobs."""
    seq: int
    point: Point
    version: int
    knobs: dict[str, tuple[Any, Any]]          # knob -> (old, new), as given (rollbacks: what differed)
    changed_at: float
    who: Attribution
    before: dict[str, float | None] | None = None
    after: dict[str, float | None] | None = None
    after_filled: bool = False

    def to_doc(self) -> dict[str, Any]:
        return {"seq": self.seq, "station": self.point.station, "extension": self.point.extension,
                "version": self.version, "knobs": {k: {"old": o, "new": n} for k, (o, n) in self.knobs.items()},
                "changed_at": self.changed_at, "changed_by": self.who.by, "source": self.who.source,
                "reason": self.who.reason, "batch_id": self.who.batch_id, "template_id": self.who.template_id,
                "before": self.before, "after": self.after, "after_filled": self.after_filled}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> "Change":
        who = Attribution(str(doc.get("changed_by", "")), str(doc.get("source", "api")), doc.get("reason"),
                          doc.get("batch_id"), doc.get("template_id"))
        knobs = {k: (v.get("old"), v.get("new")) for k, v in (doc.get("knobs") or {}).items() if isinstance(v, dict)}
        return cls(int(doc["seq"]), Point(doc["station"], doc["extension"]), int(doc["version"]), knobs,
                   float(doc["changed_at"]), who, doc.get("before"), doc.get("after"), bool(doc.get("after_filled")))


@dataclass
class HistoryPage:
    rows: list[dict[str, Any]]
    next_cursor: str | None


@dataclass
class Draft:
    """A change about to be stored: the point, its next version, knob -> (old, new), and the full set at it."""
    point: Point
    version: int
    knobs: dict[str, tuple[Any, Any]]
    knob_set: dict[str, Any] | None = None     # every knob's value at `version` (what samples of it ran under)


@dataclass
class _Filter:
    knobs: frozenset[str] = frozenset()
    since: float | None = None
    until: float | None = None
    source: str | None = None
    after: tuple[int, str] | None = None      # cursor: rows strictly after (seq, knob) in listing order

    def keeps(self, change: Change, knob: str) -> bool:
        if self.knobs and knob not in self.knobs:
            return False
        if self.since is not None and change.changed_at < self.since:
            return False
        if self.until is not None and change.changed_at >= self.until:
            return False
        if self.source is not None and change.who.source != self.source:
            return False
        if self.after is not None:
            seq, after_knob = self.after
            return change.seq < seq or (change.seq == seq and knob > after_knob)
        return True


class KnobChangeLog:
    def __init__(self, file: DocumentFile, topology: Topology, clock: Clock, metrics: MetricsHistory | None = None,
                 window_s: float = WINDOW_S, settle_s: float = SETTLE_S, max_changes: int = MAX_CHANGES) -> None:
        self.file = file
        self.topology = topology
        self.clock = clock
        self.metrics = metrics
        self.window_s = window_s
        self.settle_s = settle_s
        self.max_changes = max_changes
        self._changes: list[Change] = []   # oldest first (seq ascending)
        self._next_seq = 1
        self._filler: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._changes)

    async def open(self, stored_version: Callable[[Point], int]) -> None:
        """Load the records; drop those of versions the config store never got (a crash between the writes)."""
        await self.file.open()
        docs = await self.file.load(lambda db: db.table(TABLE).all())
        changes, unstored = [], []
        for doc in docs:
            try:
                change = Change.from_doc(dict(doc))
            except (KeyError, TypeError, ValueError):
                log.warning("knob history: skipping an unreadable record %r", doc)
                continue
            if not self.topology.has_point(change.point.station, change.point.extension):
                continue
            (unstored if change.version > stored_version(change.point) else changes).append(change)
        self._changes = sorted(changes, key=lambda c: c.seq)
        self._next_seq = max((c.seq for c in changes + unstored), default=0) + 1
        if unstored:
            log.warning("knob history: dropping %d record(s) of changes that were never stored "
                        "(the controller stopped between the two writes)", len(unstored))
            await self._remove([c.seq for c in unstored])

    def start_filling(self, interval_s: float | None = None) -> None:
        """Fill after-windows as they come due (at once for those that came due while the controller was down)."""
        interval_s = interval_s or min(5.0, max(0.5, self.window_s / 4))
        self._filler = asyncio.create_task(self._fill_forever(interval_s), name="tpmon-knob-history-fill")

    async def _fill_forever(self, interval_s: float) -> None:
        while True:
            try:
                await self.fill_due()
            except Exception:
                log.exception("knob history: filling after-windows failed")
            await asyncio.sleep(interval_s)

    async def close(self) -> None:
        if self._filler is not None:
            self._filler.cancel()
            await asyncio.gather(self._filler, return_exceptions=True)
            self._filler = None
        await self.file.close()

    # --- writing --------------------------------------------------------------------------

    async def record(self, drafts: Iterable[Draft], who: Attribution) -> list[Change]:
        """Store one record per draft (one write for all of them) with the minute before as `before`."""
        now, drafts = self.clock.wall(), list(drafts)
        if not drafts:
            return []
        befores = await asyncio.gather(*(self._mean(d.point, now - self.window_s, now) for d in drafts))
        changes = []
        for draft, before in zip(drafts, befores):
            changes.append(Change(self._next_seq, draft.point, draft.version, dict(draft.knobs), now, who, before))
            self._next_seq += 1
        overflow = max(0, len(self._changes) + len(changes) - self.max_changes)
        dropped = [c.seq for c in self._changes[:overflow]]

        def write(db: TinyDB) -> None:
            table = db.table(TABLE)
            table.insert_multiple(Document(c.to_doc(), doc_id=c.seq) for c in changes)
            if dropped:
                table.remove(doc_ids=dropped)

        await self.file.write(write)
        self._changes = self._changes[overflow:] + changes
        return changes

    async def discard(self, changes: Iterable[Change]) -> None:
        """Forget records whose desired set could not be stored after all."""
        seqs = {c.seq for c in changes}
        if seqs:
            self._changes = [c for c in self._changes if c.seq not in seqs]
            await self._remove(sorted(seqs))

    async def _remove(self, seqs: list[int]) -> None:
        await self.file.write(lambda db: db.table(TABLE).remove(doc_ids=seqs))

    async def fill_due(self) -> int:
        """Average the minute after every change whose minute is over; returns how many were filled."""
        now = self.clock.wall()
        due = [c for c in self._changes
               if not c.after_filled and c.changed_at + self.window_s + self.settle_s <= now]
        if not due or self.metrics is None:
            return 0
        means = await asyncio.gather(*(self._mean(c.point, c.changed_at, c.changed_at + self.window_s) for c in due))
        after = {c.seq: mean for c, mean in zip(due, means)}

        def fill(doc: dict[str, Any]) -> None:
            doc["after"], doc["after_filled"] = after[doc["seq"]], True

        await self.file.write(lambda db: db.table(TABLE).update(fill, doc_ids=list(after)))
        for c in due:
            c.after, c.after_filled = after[c.seq], True
        return len(due)

    async def _mean(self, point: Point, start: float, end: float) -> dict[str, float | None] | None:
        if self.metrics is None:
            return None
        try:
            means = await self.metrics.mean_between(point, start, end, list(KEY_METRICS))
        except Exception:  # the history store's trouble must not stop a knob change
            log.exception("knob history: mean of %s over [%s, %s) failed", point.id, iso_ms(start), iso_ms(end))
            return None
        return {key: _mean_value(key, means.get(key)) for key in KEY_METRICS}

    # --- reading --------------------------------------------------------------------------

    def changes_of(self, point: Point) -> list[Change]:
        return [c for c in self._changes if c.point == point]

    def page(self, point: Point, limit: int, cursor: str | None = None, knobs: Iterable[str] = (),
             since: float | None = None, until: float | None = None, source: str | None = None) -> HistoryPage:
        """Rows newest first (a change's knobs by name), `limit` at most, from after `cursor`."""
        flt = _Filter(frozenset(knobs), since, until, source, parse_cursor(cursor))
        rows: list[dict[str, Any]] = []
        last: tuple[int, str] | None = None
        for change in reversed(self._changes):
            if change.point != point or (flt.after is not None and change.seq > flt.after[0]):
                continue
            for knob in sorted(change.knobs):
                if not flt.keeps(change, knob):
                    continue
                if len(rows) == limit:
                    return HistoryPage(rows, _cursor(last))
                rows.append(self.row(change, knob))
                last = (change.seq, knob)
        return HistoryPage(rows, None)

    def row(self, change: Change, knob: str) -> dict[str, Any]:
        old, new = change.knobs[knob]
        return {"changeId": change.seq, "knob": knob, "old": old, "new": new, "version": change.version,
                "changedBy": change.who.by, "changedAt": iso_ms(change.changed_at), "reason": change.who.reason,
                "source": change.who.source, "batchId": change.who.batch_id, "templateId": change.who.template_id,
                "metricsBefore": change.before, "metricsAfter": change.after if change.after_filled else None,
                "metricsAfterDue": iso_ms(change.changed_at + self.window_s + self.settle_s)}


def parse_cursor(cursor: str | None) -> tuple[int, str] | None:
    """`<changeId>:<knob>` of the last row of the previous page (the query model checks its form)."""
    if not cursor:
        return None
    seq, _, knob = cursor.partition(":")
    return int(seq), knob


def _cursor(last: tuple[int, str] | None) -> str | None:
    return None if last is None else f"{last[0]}:{last[1]}"


def _mean_value(key: str, value: Any) -> float | None:
    """A mean as JSON: two decimals finer than the metric's own resolution (its values are rounded to that)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return round(float(value), METRICS_BY_KEY[key].decimals + 2)


def epoch_of(moment: datetime) -> float:
    """A query's datetime as epoch seconds; one without a zone is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()

