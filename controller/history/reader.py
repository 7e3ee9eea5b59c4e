"""Reads of the history file on read-only connections (one per reader thread), in time order, paged.

Each read is one SQLite read transaction (a consistent snapshot in WAL mode: a flush that
seals a span between the segment and the pending query cannot hide its rows). Blocks come
in time order, sealed segments first (their spans are older than any open span), so a
page stops decoding once it has its rows. A read that asks for context also decodes the
rows' context blobs (only the rows it keeps) and, from raw segments, their knob version.
"""
from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from controller.history import codec
from controller.history import context as _context
from controller.history.db import Layouts, connect, has_context, select
from controller.history.rollup import KNOB_VERSION
from controller.history.tiers import Tier
from shared.topology import Point


@dataclass(frozen=True)
class Rows:
    """Rows of one point and tier in time order: timestamps (ms) and the wanted columns (NaN = null).

    Read with context=True, also each row's context: raw rows their conditions (a dict, None where
    not known; rows with equal conditions share one dict, read only) and their knob version (float
    column, NaN where not known); rollup rows the knob versions of their bucket (an ascending tuple,
    None where not known). Without, both are None.
    """
    ts: np.ndarray
    values: np.ndarray
    more: bool = False   # a page was asked for and rows remain after it
    context: np.ndarray | None = None        # object[n]
    knob_version: np.ndarray | None = None   # float64[n], raw only


@dataclass(frozen=True)
class After:
    """Where a page starts: after the row at `ts_ms`, skipping the first `skip` rows that share its time."""
    ts_ms: int
    skip: int = 1


class Reader:
    """Read-only connections to the history file, one per thread that reads (see `open_handles`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.layouts = Layouts()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: list[sqlite3.Connection] = []

    @property
    def open_handles(self) -> int:
        return len(self._conns)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self.path, readonly=True)
            with self._lock:
                self._conns.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()
        self._local = threading.local()

    def rows(self, tier: Tier, point: Point, start_ms: int, end_ms: int, columns: tuple[str, ...],
             limit: int | None = None, after: After | None = None, context: bool = False) -> Rows:
        """Rows with start_ms <= time < end_ms (after `after`), at most `limit` of them; with their context
        (see Rows) when `context`."""
        conn = self._conn()
        lo = start_ms if after is None else max(start_ms, after.ts_ms)
        skip = after.skip if after is not None and after.ts_ms >= start_ms else 0
        wanted = None if limit is None else limit + 1 + skip
        raw = tier.id == 0
        read = columns + ((KNOB_VERSION,) if context and raw else ())
        times: list[np.ndarray] = []
        parts: list[np.ndarray] = []
        contexts: list[np.ndarray] = []
        count = 0
        conn.execute("BEGIN")
        try:
            column = self._context_column(conn) if context else "NULL"
            for query, params in self._queries(tier, point, lo, end_ms, column):
                cursor = conn.execute(query, params)
                try:
                    for lid, blob, ctx in cursor:
                        block = codec.decode(blob)
                        keep = (block.ts >= lo) & (block.ts < end_ms)
                        if keep.any():
                            times.append(block.ts[keep])
                            parts.append(select(block, self._columns(conn, lid, read))[keep])
                            if context:
                                kept = _context.decode(raw, ctx, len(block.ts), keep)
                                contexts.append(np.full(len(times[-1]), None, object) if kept is None else kept)
                            count += len(times[-1])
                        if wanted is not None and count >= wanted:
                            break
                finally:
                    cursor.close()
                if wanted is not None and count >= wanted:
                    break
        finally:
            conn.execute("COMMIT")
        page = _page(times, parts, contexts if context else None, len(read), lo, skip, limit)
        if context and raw:
            width = len(columns)
            return Rows(page.ts, page.values[:, :width], page.more, page.context, page.values[:, width])
        return page

    def _context_column(self, conn: sqlite3.Connection) -> str:
        """`context`, or NULL in a file from before history kept context that no writer has opened since."""
        known = getattr(self._local, "context_sql", None)
        if known is None:
            known = self._local.context_sql = "context" if has_context(conn, "segments") and has_context(
                conn, "pending") else "NULL"
        return known

    def _columns(self, conn: sqlite3.Connection, lid: int, columns: tuple[str, ...]) -> np.ndarray:
        if lid not in self.layouts.names:
            self.layouts.refresh(conn)
        return self.layouts.columns(lid, columns)

    @staticmethod
    def _queries(tier: Tier, point: Point, lo: int, hi: int, context: str) -> list[tuple[str, tuple]]:
        """Sealed segments overlapping [lo, hi) (a span starts at most span_ms before lo), then pending chunks."""
        key = (tier.id, point.station, point.extension)
        return [(f"SELECT layout, blob, {context} FROM segments WHERE tier = ? AND station = ? AND extension = ? "
                 "AND start_ms >= ? AND start_ms < ? AND end_ms >= ? ORDER BY start_ms", (*key, lo - tier.span_ms, hi, lo)),
                (f"SELECT layout, blob, {context} FROM pending WHERE tier = ? AND station = ? AND extension = ? "
                 "AND start_ms < ? AND end_ms >= ? ORDER BY start_ms", (*key, hi, lo))]


def _page(times: list[np.ndarray], parts: list[np.ndarray], contexts: list[np.ndarray] | None, width: int, lo: int,
          skip: int, limit: int | None) -> Rows:
    if not times:
        empty = None if contexts is None else np.empty(0, object)
        return Rows(np.empty(0, np.int64), np.empty((0, width)), context=empty)
    ts = np.concatenate(times)
    values = np.concatenate(parts)
    context = None if contexts is None else np.concatenate(contexts)
    if skip:
        at_start = int(np.searchsorted(ts, lo, side="right"))  # rows sharing the cursor's time come first
        drop = min(skip, at_start)
        ts, values = ts[drop:], values[drop:]
        context = None if context is None else context[drop:]
    if limit is not None and len(ts) > limit:
        return Rows(ts[:limit], values[:limit], more=True, context=None if context is None else context[:limit])
    return Rows(ts, values, context=context)
