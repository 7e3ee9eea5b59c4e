"""Knob change history: who changed which knob of which point, from what to what, and what it did to the key metrics.

One record per accepted change of a point's desired knobs (a version), holding every knob
the change gave with its old and new value and the full knob set at that version (so a
sample's knob version maps to its complete knob vector); the API lists them a knob per
row, like the plan's knob_config_history table. With each change go the key metrics
averaged over the minute before it (read when it is recorded) and over the minute after it
(filled in by a periodic pass once that minute is in the history store, also after a restart).

The records live in SQLite (`knob_changes.sqlite`, WAL), which grows without rewriting: a
change is one small transaction, a page is an indexed query, and memory holds only the
next sequence number and the count. One writer thread owns the writing connection; reads
use a read-only connection (WAL: they never wait for the writer): `knob_set_at` on a worker
thread, `page` and `changes_of` on the caller's (a page is bounded by its limit; the HTTP
route runs it in a worker thread). synchronous=FULL: the
commit is fsynced before `record` returns, so an acknowledged change survives a kill -9
and a power cut, and its record is on disk before the desired set (fsynced after it) is.

Records are written before the desired set they describe (KnobSync), so a crash between
the two leaves a record whose version was never stored: `open` drops those. Records older
than `retention_days` are deleted, except each point's newest (its knob set is what that
point runs now). An older install's knob_history.json is imported once, then renamed.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from controller.clock import Clock, iso_ms
from controller.knobs.desired import DEFAULT_VERSION
from shared.config import ConfigError
from shared.knobs import defaults
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
RETENTION_DAYS = 365     # as long as the hourly metric history a change explains
EXPIRE_EVERY_S = 3600.0  # how often the filler deletes expired records
FILL_BATCH = 256         # after-windows averaged per pass at most (the rest on the next pass)
TABLE = "changes"        # the table of the legacy TinyDB file
DAY_S = 86_400

assert all(key in METRICS_BY_KEY for key in KEY_METRICS)

SCHEMA = """
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- the changeId; AUTOINCREMENT: never reused, even after a delete
    station TEXT NOT NULL, extension TEXT NOT NULL, version INTEGER NOT NULL,
    changed_at REAL NOT NULL, changed_by TEXT NOT NULL, source TEXT NOT NULL,
    reason TEXT, batch_id TEXT, template_id TEXT,
    before TEXT, after TEXT, after_filled INTEGER NOT NULL DEFAULT 0,  -- JSON {metric: mean or null}
    knob_set TEXT);                         -- JSON {knob: value}, every knob at `version`; NULL: not known
CREATE INDEX IF NOT EXISTS changes_by_point ON changes (station, extension, seq);
CREATE INDEX IF NOT EXISTS changes_by_version ON changes (station, extension, version);
CREATE INDEX IF NOT EXISTS changes_by_time ON changes (changed_at);
CREATE INDEX IF NOT EXISTS changes_unfilled ON changes (changed_at) WHERE after_filled = 0;
CREATE TABLE IF NOT EXISTS change_knobs (
    seq INTEGER NOT NULL, knob TEXT NOT NULL,
    old TEXT, new TEXT,                     -- JSON values (a bool stays a bool)
    PRIMARY KEY (seq, knob)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);  -- 'legacy_imported': the file's path
PRAGMA user_version = 1;
"""
_COLUMNS = ("seq, station, extension, version, changed_at, changed_by, source, reason, batch_id, template_id, "
            "before, after, after_filled")

T = TypeVar("T")


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

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Change:
        """A record of the legacy knob_history.json."""
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


class KnobChangeLog:
    def __init__(self, path: Path, topology: Topology, clock: Clock, metrics: MetricsHistory | None = None,
                 window_s: float = WINDOW_S, settle_s: float = SETTLE_S, retention_days: float = RETENTION_DAYS,
                 legacy_file: Path | None = None, expire_every_s: float = EXPIRE_EVERY_S) -> None:
        self.path = Path(path)
        self.topology = topology
        self.clock = clock
        self.metrics = metrics
        self.window_s = window_s
        self.settle_s = settle_s
        self.retention_days = retention_days
        self.legacy_file = legacy_file        # knob_history.json of an older install: imported at open
        self.expire_every_s = expire_every_s
        self._next_seq = 1
        self._count = 0
        self._db: sqlite3.Connection | None = None       # the writer's, used on its thread only
        self._reader: sqlite3.Connection | None = None   # read-only, any thread under _read_lock
        self._read_lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._filling = asyncio.Lock()
        self._filler: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return self._count

    async def open(self, stored_version: Callable[[Point], int]) -> None:
        """Open (import a legacy file), drop records of versions the config store never got, expire old ones."""
        stored = {point: stored_version(point) for point in self.topology.points}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tpmon-knob-changes")
        self._next_seq, self._count = await self._run(self._open_db, stored, self._cutoff())
        self._reader = await self._run(_connect, self.path, True)

    def _open_db(self, stored: dict[Point, int], cutoff: float) -> tuple[int, int]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = _connect(self.path)
        if self.legacy_file is not None and self.legacy_file.exists():
            self._import_legacy(self.legacy_file)
        self._drop_unstored(stored)
        self._expire(cutoff)
        (top,) = self._db.execute("SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'changes'").fetchone()
        (count,) = self._db.execute("SELECT count(*) FROM changes").fetchone()
        return top + 1, count

    def _drop_unstored(self, stored: dict[Point, int]) -> None:
        unstored = [seq for point, version in stored.items() for (seq,) in self._db.execute(
            "SELECT seq FROM changes WHERE station = ? AND extension = ? AND version > ?",
            (point.station, point.extension, version))]
        if unstored:
            log.warning("knob history: dropping %d record(s) of changes that were never stored "
                        "(the controller stopped between the two writes)", len(unstored))
            self._delete(unstored)

    def start_filling(self, interval_s: float | None = None) -> None:
        """Fill after-windows as they come due (at once for those that came due while the controller was down)."""
        interval_s = interval_s or min(5.0, max(0.5, self.window_s / 4))
        self._filler = asyncio.create_task(self._fill_forever(interval_s), name="tpmon-knob-history-fill")

    async def _fill_forever(self, interval_s: float) -> None:
        next_expiry = self.clock.monotonic() + self.expire_every_s   # open has just expired
        while True:
            try:
                await self.fill_due()
                if self.clock.monotonic() >= next_expiry:
                    next_expiry = self.clock.monotonic() + self.expire_every_s
                    await self.expire()
            except Exception:
                log.exception("knob history: filling after-windows failed")
            await asyncio.sleep(interval_s)

    async def close(self) -> None:
        if self._filler is not None:
            self._filler.cancel()
            await asyncio.gather(self._filler, return_exceptions=True)
            self._filler = None
        if self._reader is not None:
            with self._read_lock:
                self._reader.close()
                self._reader = None
        if self._executor is not None:
            if self._db is not None:
                await self._run(self._db.close)   # after every write already queued
                self._db = None
            self._executor.shutdown()
            self._executor = None

    # --- writing --------------------------------------------------------------------------

    async def record(self, drafts: Iterable[Draft], who: Attribution) -> list[Change]:
        """Store one record per draft (one transaction, committed on disk) with the minute before as `before`."""
        now, drafts = self.clock.wall(), list(drafts)
        if not drafts:
            return []
        befores = await asyncio.gather(*(self._mean(d.point, now - self.window_s, now) for d in drafts))
        changes = [Change(self._next_seq + i, d.point, d.version, dict(d.knobs), now, who, before)
                   for i, (d, before) in enumerate(zip(drafts, befores))]
        self._next_seq += len(changes)   # taken before the write: a concurrent record gets the next ones
        await self._run(self._insert, changes, [d.knob_set for d in drafts])
        self._count += len(changes)
        return changes

    def _insert(self, changes: list[Change], knob_sets: list[dict[str, Any] | None]) -> None:
        with self._transaction() as db:
            _insert_rows(db, "INSERT", changes, knob_sets)

    async def discard(self, changes: Iterable[Change]) -> None:
        """Forget records whose desired set could not be stored after all."""
        seqs = sorted({c.seq for c in changes})
        if seqs:
            self._count -= await self._run(self._delete, seqs)

    def _delete(self, seqs: list[int]) -> int:
        with self._transaction() as db:
            db.executemany("DELETE FROM change_knobs WHERE seq = ?", [(s,) for s in seqs])
            return sum(db.execute("DELETE FROM changes WHERE seq = ?", (s,)).rowcount for s in seqs)

    async def expire(self) -> int:
        """Delete records older than the retention, except each point's newest; returns how many."""
        deleted = await self._run(self._expire, self._cutoff())
        self._count -= deleted
        return deleted

    def _cutoff(self) -> float:
        return self.clock.wall() - self.retention_days * DAY_S

    def _expire(self, cutoff: float) -> int:
        old = [seq for (seq,) in self._db.execute(
            "SELECT seq FROM changes AS o WHERE changed_at < ? AND EXISTS (SELECT 1 FROM changes AS n "
            "WHERE n.station = o.station AND n.extension = o.extension AND n.seq > o.seq)", (cutoff,))]
        if old:
            log.info("knob history: deleting %d record(s) older than %s days", len(old), self.retention_days)
        return self._delete(old) if old else 0

    async def fill_due(self) -> int:
        """Average the minute after every change whose minute is over; returns how many were filled."""
        if self.metrics is None or self._executor is None:
            return 0
        async with self._filling:   # one pass at a time: a change is averaged once
            due = await self._run(self._due, self.clock.wall() - self.window_s - self.settle_s)
            if not due:
                return 0
            means = await asyncio.gather(*(self._mean(point, at, at + self.window_s) for _, point, at in due))
            await self._run(self._fill, [(_json(mean), seq) for (seq, _, _), mean in zip(due, means)])
            return len(due)

    def _due(self, changed_by: float) -> list[tuple[int, Point, float]]:
        rows = self._db.execute("SELECT seq, station, extension, changed_at FROM changes "
                                "WHERE after_filled = 0 AND changed_at <= ? ORDER BY changed_at LIMIT ?",
                                (changed_by, FILL_BATCH))
        return [(seq, Point(station, ext), at) for seq, station, ext, at in rows]

    def _fill(self, afters: list[tuple[str | None, int]]) -> None:
        with self._transaction() as db:
            db.executemany("UPDATE changes SET after = ?, after_filled = 1 WHERE seq = ?", afters)

    async def _mean(self, point: Point, start: float, end: float) -> dict[str, float | None] | None:
        if self.metrics is None:
            return None
        try:
            means = await self.metrics.mean_between(point, start, end, list(KEY_METRICS))
        except Exception:  # the history store's trouble must not stop a knob change
            log.exception("knob history: mean of %s over [%s, %s) failed", point.id, iso_ms(start), iso_ms(end))
            return None
        return {key: _mean_value(key, means.get(key)) for key in KEY_METRICS}

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise RuntimeError("knob change log is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._db
        assert db is not None
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")   # synchronous=FULL: on disk when this returns
        except BaseException:
            if db.in_transaction:  # a failed COMMIT may have rolled back already
                db.execute("ROLLBACK")
            raise

    # --- the legacy TinyDB file -------------------------------------------------------------

    def _import_legacy(self, path: Path) -> None:
        """Copy knob_history.json in, with a mark in the same transaction, then rename it.

        The mark makes it once only: after a crash between the commit and the rename the
        file is only renamed (its records may have been dropped or expired since).
        """
        if self._db.execute("SELECT 1 FROM meta WHERE key = 'legacy_imported'").fetchone() is None:
            changes = _legacy_changes(path)
            with self._transaction() as db:
                _insert_rows(db, "INSERT OR IGNORE", changes, _chained_knob_sets(changes))
                db.execute("INSERT OR REPLACE INTO meta VALUES ('legacy_imported', ?)", (str(path),))
            log.info("knob history: imported %d change(s) from %s", len(changes), path)
        os.replace(path, path.with_name(path.name + ".imported"))
        _fsync_dir(path.parent)

    # --- reading --------------------------------------------------------------------------

    async def knob_set_at(self, point: Point, version: int) -> dict[str, Any] | None:
        """Every knob's value at a version of the point; version 1 unrecorded is the defaults; None: not known."""
        return await asyncio.to_thread(self._knob_set_at, point, version)

    def _knob_set_at(self, point: Point, version: int) -> dict[str, Any] | None:
        with self._reading() as db:
            row = db.execute("SELECT knob_set FROM changes WHERE station = ? AND extension = ? AND version = ? "
                             "ORDER BY seq DESC LIMIT 1", (point.station, point.extension, version)).fetchone()
        if row is not None and row[0] is not None:
            return json.loads(row[0])
        return defaults() if version == DEFAULT_VERSION else None

    def changes_of(self, point: Point) -> list[Change]:
        """Every record of the point, oldest first."""
        with self._reading() as db:
            return list(_load(db, "station = ? AND extension = ?", (point.station, point.extension)).values())

    def page(self, point: Point, limit: int, cursor: str | None = None, knobs: Iterable[str] = (),
             since: float | None = None, until: float | None = None, source: str | None = None) -> HistoryPage:
        """Rows newest first (a change's knobs by name), `limit` at most, from after `cursor`.

        One indexed query of at most limit + 1 rows (changes_by_point, walked backwards from
        the cursor) and the changes they belong to: the cost is the page's, not the history's.
        """
        where, args = ["c.station = ?", "c.extension = ?"], [point.station, point.extension]
        names = sorted(set(knobs))
        if names:
            where.append(f"k.knob IN ({', '.join('?' * len(names))})")
            args += names
        for clause, value in (("c.changed_at >= ?", since), ("c.changed_at < ?", until), ("c.source = ?", source)):
            if value is not None:
                where.append(clause)
                args.append(value)
        after = parse_cursor(cursor)
        if after is not None:
            where.append("c.seq <= ? AND (c.seq < ? OR k.knob > ?)")
            args += [after[0], after[0], after[1]]
        with self._reading() as db:
            keys = db.execute("SELECT c.seq, k.knob FROM changes AS c INDEXED BY changes_by_point JOIN change_knobs "
                              f"AS k ON k.seq = c.seq WHERE {' AND '.join(where)} ORDER BY c.seq DESC, k.knob "
                              "LIMIT ?", (*args, limit + 1)).fetchall()
            seqs = sorted({seq for seq, _ in keys[:limit]})
            changes = _load(db, f"seq IN ({', '.join('?' * len(seqs))})", seqs) if seqs else {}
        rows = [self.row(changes[seq], knob) for seq, knob in keys[:limit]]
        return HistoryPage(rows, _cursor(keys[limit - 1]) if len(keys) > limit else None)

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The reader connection in one read transaction (a consistent snapshot of several queries)."""
        with self._read_lock:
            if self._reader is None:
                raise RuntimeError("knob change log is not open")
            self._reader.execute("BEGIN")
            try:
                yield self._reader
            finally:
                self._reader.execute("COMMIT")

    def row(self, change: Change, knob: str) -> dict[str, Any]:
        old, new = change.knobs[knob]
        return {"changeId": change.seq, "knob": knob, "old": old, "new": new, "version": change.version,
                "changedBy": change.who.by, "changedAt": iso_ms(change.changed_at), "reason": change.who.reason,
                "source": change.who.source, "batchId": change.who.batch_id, "templateId": change.who.template_id,
                "metricsBefore": change.before, "metricsAfter": change.after if change.after_filled else None,
                "metricsAfterDue": iso_ms(change.changed_at + self.window_s + self.settle_s)}


def _connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False,
                             isolation_level=None)
    else:
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")   # WAL fsynced at every commit: durable before `record` returns
        db.executescript(SCHEMA)
    db.execute("PRAGMA busy_timeout=5000")
    return db


def _load(db: sqlite3.Connection, where: str, args: Iterable[Any]) -> dict[int, Change]:
    """The changes matching `where` (on the changes table), seq ascending, with all their knobs."""
    args = tuple(args)
    changes: dict[int, Change] = {}
    for (seq, station, ext, version, at, by, source, reason, batch, template, before, after,
         filled) in db.execute(f"SELECT {_COLUMNS} FROM changes WHERE {where} ORDER BY seq", args):
        who = Attribution(by, source, reason, batch, template)
        changes[seq] = Change(seq, Point(station, ext), version, {}, at, who, _unjson(before), _unjson(after),
                              bool(filled))
    for seq, knob, old, new in db.execute("SELECT seq, knob, old, new FROM change_knobs WHERE seq IN "
                                          f"(SELECT seq FROM changes WHERE {where}) ORDER BY seq, knob", args):
        if seq in changes:
            changes[seq].knobs[knob] = (_unjson(old), _unjson(new))
    return changes


def _insert_rows(db: sqlite3.Connection, verb: str, changes: list[Change],
                 knob_sets: list[dict[str, Any] | None]) -> None:
    db.executemany(f"{verb} INTO changes ({_COLUMNS}, knob_set) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   [_change_row(c) + (_json(s),) for c, s in zip(changes, knob_sets)])
    db.executemany(f"{verb} INTO change_knobs VALUES (?, ?, ?, ?)",
                   [(c.seq, k, _json(old), _json(new)) for c in changes for k, (old, new) in c.knobs.items()])


def _change_row(c: Change) -> tuple[Any, ...]:
    return (c.seq, c.point.station, c.point.extension, c.version, c.changed_at, c.who.by, c.who.source, c.who.reason,
            c.who.batch_id, c.who.template_id, _json(c.before), _json(c.after), int(c.after_filled))


def _legacy_changes(path: Path) -> list[Change]:
    """The records of a TinyDB knob_history.json ({"changes": {doc_id: record}}), unreadable ones skipped."""
    try:
        docs = (json.loads(path.read_text() or "{}").get(TABLE) or {}).values()
    except (OSError, ValueError, AttributeError) as exc:
        raise ConfigError(f"knob history {path} cannot be imported ({exc}); restore it from a backup "
                          "or remove it to start without the older changes") from None
    changes = []
    for doc in docs:
        try:
            changes.append(Change.from_doc(dict(doc)))
        except (KeyError, TypeError, ValueError):
            log.warning("knob history: skipping an unreadable record %r", doc)
    return changes


def _chained_knob_sets(changes: list[Change]) -> list[dict[str, Any] | None]:
    """Knob sets of legacy records (which had none): the defaults at version 1 plus each change's new values.

    Known only while a point's records run 2, 3, … without a gap and each old value is the
    previous set's; from the first gap or mismatch on, that point's sets stay unknown (None).
    """
    chain: dict[Point, tuple[int, dict[str, Any] | None]] = {}
    sets: dict[int, dict[str, Any] | None] = {}
    for c in sorted(changes, key=lambda c: (c.point, c.version)):
        version, known = chain.get(c.point, (DEFAULT_VERSION, defaults()))
        follows = (known is not None and c.version == version + 1
                   and all(known.get(k) == old for k, (old, _) in c.knobs.items()))
        known = {**known, **{k: new for k, (_, new) in c.knobs.items()}} if follows else None
        chain[c.point], sets[c.seq] = (c.version, known), known
    return [sets[c.seq] for c in changes]


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def _unjson(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
