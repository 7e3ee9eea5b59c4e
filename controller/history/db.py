"""The history file: SQLite (WAL) holding compressed segments and pending chunks, one writer, many readers.

Tables: `segments` (sealed spans: tier, point, first and last row time, row count, column
layout, blob, context), `pending` (chunks of spans still open, rewritten into a segment when
the span seals; the same columns), `layouts` (the column names a blob's columns stand for, so
a catalog that gains or loses a metric still reads old segments by name). `context` is the
rows' context blob (controller.history.context), NULL when no row's context is known.

Files written before history kept context read as they are: their raw layout lacks the
`knob_version` column (it reads null, like any column a layout lacks) and their segments and
pending chunks have no `context` (the writer adds the column to their tables, NULL in their
rows; a reader of a file no writer has opened since reads NULL for it).

WAL with synchronous=NORMAL: a committed transaction survives a kill -9 of the process
(SQLite's WAL is in the file system, not in the process); a power cut may lose the last
commits but never corrupts.
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from controller.history import codec, context
from controller.history.codec import Block
from controller.history.rollup import Layout
from controller.history.tiers import TIERS, Chunk, Sealed, Tier
from shared.topology import Point

SCHEMA = """
CREATE TABLE IF NOT EXISTS layouts (id INTEGER PRIMARY KEY, names TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS segments (
    tier INTEGER NOT NULL, station TEXT NOT NULL, extension TEXT NOT NULL,
    start_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL, rows INTEGER NOT NULL,
    layout INTEGER NOT NULL, blob BLOB NOT NULL, context BLOB);
CREATE INDEX IF NOT EXISTS segments_by_point ON segments (tier, station, extension, start_ms);
CREATE INDEX IF NOT EXISTS segments_by_age ON segments (tier, end_ms);
CREATE TABLE IF NOT EXISTS pending (
    tier INTEGER NOT NULL, station TEXT NOT NULL, extension TEXT NOT NULL, span_ms INTEGER NOT NULL,
    start_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL, rows INTEGER NOT NULL,
    layout INTEGER NOT NULL, blob BLOB NOT NULL, context BLOB);
CREATE INDEX IF NOT EXISTS pending_by_point ON pending (tier, station, extension, span_ms);
"""
CONTEXT_TABLES = ("segments", "pending")
SEGMENT_LEVEL = 6   # zlib level of sealed segments (written once, read many times)
CHUNK_LEVEL = 1     # pending chunks: rewritten within the span, so cheap to make


def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None)
    else:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL: a commit survives the process's death
        conn.executescript(SCHEMA)
        for table in CONTEXT_TABLES:
            if not has_context(conn, table):   # a file from before history kept context
                conn.execute(f"ALTER TABLE {table} ADD COLUMN context BLOB")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def has_context(conn: sqlite3.Connection, table: str) -> bool:
    return any(row[1] == "context" for row in conn.execute(f"PRAGMA table_info({table})"))


class Layouts:
    """Layout ids <-> column names, and for each stored layout where today's columns are in it."""

    def __init__(self) -> None:
        self.names: dict[int, tuple[str, ...]] = {}
        self.ids: dict[tuple[str, ...], int] = {}
        self._maps: dict[tuple[int, tuple[str, ...]], np.ndarray] = {}

    def register(self, conn: sqlite3.Connection, layout: Layout) -> int:
        text = json.dumps(list(layout.names))
        conn.execute("INSERT OR IGNORE INTO layouts (names) VALUES (?)", (text,))
        (lid,) = conn.execute("SELECT id FROM layouts WHERE names = ?", (text,)).fetchone()
        self.names[lid], self.ids[layout.names] = layout.names, lid
        return lid

    def refresh(self, conn: sqlite3.Connection) -> None:
        for lid, text in conn.execute("SELECT id, names FROM layouts"):
            names = tuple(json.loads(text))
            self.names[lid], self.ids[names] = names, lid

    def columns(self, lid: int, wanted: tuple[str, ...]) -> np.ndarray:
        """Index of each wanted column in layout `lid`, -1 where that layout lacks it."""
        key = (lid, wanted)
        found = self._maps.get(key)
        if found is None:
            at = {name: i for i, name in enumerate(self.names[lid])}
            found = self._maps[key] = np.array([at.get(name, -1) for name in wanted], dtype=np.intp)
        return found


def select(block: Block, cols: np.ndarray) -> np.ndarray:
    """The block's values in the wanted columns (NaN for a column its layout lacks)."""
    out = block.values[:, np.maximum(cols, 0)]
    if (cols < 0).any():
        out[:, cols < 0] = np.nan
    return out


class Writer:
    """The writer's connection: one transaction per flush."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = connect(path)
        self.layouts = Layouts()
        self.layouts.refresh(self.conn)
        self.layout_ids = {t.id: self.layouts.register(self.conn, t.layout) for t in TIERS}

    def close(self) -> None:
        self.conn.close()

    def commit(self, point_changes: list[tuple[Point, list[Sealed], list[Chunk]]]) -> int:
        """Seal, save and drop in one transaction; returns the bytes of blobs written."""
        written = 0
        seg_rows, chunk_rows, drop, replace = [], [], [], []
        for point, sealed, chunks in point_changes:
            for s in sealed:
                blob = codec.encode(s.block.ts, s.block.values, s.block.nulls, SEGMENT_LEVEL)
                ctx = context.encode(s.tier.id == 0, s.block.context)
                seg_rows.append((s.tier.id, point.station, point.extension, int(s.block.ts[0]), int(s.block.ts[-1]),
                                 len(s.block.ts), self.layout_ids[s.tier.id], blob, ctx))
                drop.append((s.tier.id, point.station, point.extension, s.span_ms))
                written += len(blob) + len(ctx or b"")
            for c in chunks:
                blob = codec.encode(c.block.ts, c.block.values, c.block.nulls, CHUNK_LEVEL)
                ctx = context.encode(c.tier.id == 0, c.block.context, sealed=False)
                if c.replace:
                    replace.append((c.tier.id, point.station, point.extension, c.span_ms))
                chunk_rows.append((c.tier.id, point.station, point.extension, c.span_ms, int(c.block.ts[0]),
                                   int(c.block.ts[-1]), len(c.block.ts), self.layout_ids[c.tier.id], blob, ctx))
                written += len(blob) + len(ctx or b"")
        if not (seg_rows or chunk_rows):
            return 0
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            drops = "DELETE FROM pending WHERE tier = ? AND station = ? AND extension = ? AND span_ms = ?"
            cur.executemany(drops, drop + replace)
            cur.executemany("INSERT INTO segments (tier, station, extension, start_ms, end_ms, rows, layout, blob, "
                            "context) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", seg_rows)
            cur.executemany("INSERT INTO pending (tier, station, extension, span_ms, start_ms, end_ms, rows, layout, "
                            "blob, context) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", chunk_rows)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return written

    def expire(self, cutoffs: dict[int, int]) -> int:
        """Delete segments whose newest row is older than their tier's cutoff (ms); returns how many."""
        deleted = 0
        with self.conn:
            for tier_id, cutoff in cutoffs.items():
                deleted += self.conn.execute("DELETE FROM segments WHERE tier = ? AND end_ms < ?",
                                             (tier_id, cutoff)).rowcount
        return deleted

    def pending(self) -> Iterator[tuple[Tier, Point, Block]]:
        """Every saved chunk of the open spans, per tier and point in time order, context included (for startup)."""
        rows = self.conn.execute("SELECT tier, station, extension, layout, blob, context FROM pending "
                                 "ORDER BY tier, station, extension, start_ms")
        for tier_id, station, ext, lid, blob, ctx in rows:
            tier = TIERS[tier_id]
            block = codec.decode(blob)
            rows_context = context.decode(tier.id == 0, ctx, len(block.ts))
            if tier.id == 0:
                rows_context = context.as_kept(rows_context)   # raw rows' conditions in their in-memory form
            block = Block(block.ts, block.values, block.nulls, rows_context)
            yield tier, Point(station, ext), _in_layout(self.layouts, lid, tier, block)

    def newest_pending(self, tier: Tier, point: Point) -> int | None:
        (end,) = self.conn.execute("SELECT max(end_ms) FROM pending WHERE tier = ? AND station = ? AND extension = ?",
                                   (tier.id, point.station, point.extension)).fetchone()
        return end

    def newest(self, tier: Tier, point: Point) -> tuple[int | None, Block | None]:
        """(newest row time, newest sealed segment) of a tier for a point."""
        row = self.conn.execute("SELECT end_ms, layout, blob FROM segments WHERE tier = ? AND station = ? "
                                "AND extension = ? ORDER BY start_ms DESC LIMIT 1",
                                (tier.id, point.station, point.extension)).fetchone()
        if row is None:
            return None, None
        return row[0], _in_layout(self.layouts, row[1], tier, codec.decode(row[2]))


def _in_layout(layouts: Layouts, lid: int, tier: Tier, block: Block) -> Block:
    if layouts.names.get(lid) == tier.layout.names:
        return block
    values = select(block, layouts.columns(lid, tier.layout.names))
    return Block(block.ts, values, np.isnan(values), block.context)
