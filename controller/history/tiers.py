"""The four tiers and one point's open rows in each: rollups emitted and segments sealed as time passes.

Raw rows are samples; a 1m row is one minute of raw rows, a 5m row five 1m rows, a 1h row
twelve 5m rows. Each tier's rows are kept in segments spanning a fixed, epoch-aligned
stretch of time. Rows of a span still open are *pending* (saved as small chunks on every
flush); when the point's clock passes the span's end the span is *sealed* into one
compressed segment and its chunks are dropped, in the same transaction.

A segment span is a whole number of buckets of the next tier (raw spans a minute, 1m an
hour, 5m a day, 1h a week), so the bucket a tier is still filling always draws on the
tier below's pending rows only: after a restart the open buckets are recomputed from what
was pending, and the rollups come out as if nothing had happened.

Every row carries its context through all of this (codec.Block.context: a raw row's
conditions, a rollup row's knob versions), in memory, in pending chunks and in segments.

Time is the point's own: its newest sample time, advanced by the monotonic time since
(so a silent point's minute still closes) minus a grace for samples arriving out of order.
A sample older than the open minute (its rollup already emitted) is counted and dropped.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from controller.history import rollup
from controller.history.codec import Block
from controller.history.context import objects
from controller.history.rollup import Layout

MINUTE_MS = 60_000


@dataclass(frozen=True)
class Tier:
    id: int
    name: str
    bucket_ms: int      # rows of this tier are one per bucket (raw: 0, one per sample)
    span_ms: int        # one segment covers this much time, aligned to the epoch
    layout: Layout


TIERS: tuple[Tier, ...] = (
    Tier(0, "raw", 0, MINUTE_MS, rollup.RAW),
    Tier(1, "1m", MINUTE_MS, 60 * MINUTE_MS, rollup.ROLLUP),
    Tier(2, "5m", 5 * MINUTE_MS, 24 * 60 * MINUTE_MS, rollup.ROLLUP),
    Tier(3, "1h", 60 * MINUTE_MS, 7 * 24 * 60 * MINUTE_MS, rollup.ROLLUP),
)
TIER_BY_NAME = {t.name: t for t in TIERS}


@dataclass
class Sealed:
    tier: Tier
    span_ms: int
    block: Block


@dataclass
class Chunk:
    """Rows of an open span not yet saved; `replace` when they stand for all the span's rows (compaction)."""
    tier: Tier
    span_ms: int
    block: Block
    replace: bool = False


@dataclass
class Changes:
    """What one flush of one point writes, in one transaction with every other point's."""
    sealed: list[Sealed] = field(default_factory=list)
    chunks: list[Chunk] = field(default_factory=list)


def _empty(width: int) -> Block:
    return Block(np.empty(0, np.int64), np.empty((0, width)), np.empty((0, width), bool), np.empty(0, object))


def _concat(a: Block, b: Block) -> Block:
    ts = np.concatenate([a.ts, b.ts])
    values = np.concatenate([a.values, b.values])
    context = np.concatenate([a.contexts(), b.contexts()])
    if len(a.ts) and len(b.ts) and b.ts[0] < a.ts[-1]:  # out of order within the open minute: keep time order
        order = np.argsort(ts, kind="stable")
        ts, values, context = ts[order], values[order], context[order]
    return Block(ts, values, np.isnan(values), context)


def _take(block: Block, mask: np.ndarray) -> Block:
    return block.take(mask)


class OpenRows:
    """One tier's rows of one point that are not sealed yet, and which of them the pending table holds."""

    def __init__(self, tier: Tier) -> None:
        self.tier = tier
        self.rows = _empty(len(tier.layout.names))
        self.saved = 0                        # leading rows already in the pending table
        self.rewrite = False                  # rows were reordered: save each open span again as a whole
        self.chunks: dict[int, int] = {}      # span start -> chunks saved for it

    def _span(self, ts: np.ndarray) -> np.ndarray:
        return ts - ts % self.tier.span_ms

    def load(self, block: Block) -> None:
        """A chunk read back from the pending table at startup."""
        self.rows = _concat(self.rows, block)
        self.saved = len(self.rows.ts)
        span = int(self._span(block.ts[:1])[0])
        self.chunks[span] = self.chunks.get(span, 0) + 1

    def add(self, block: Block) -> None:
        if not len(block.ts):
            return
        if len(self.rows.ts) and block.ts[0] < self.rows.ts[-1]:
            self.saved, self.rewrite = 0, True
        self.rows = _concat(self.rows, block)

    def seal_before(self, end_ms: int) -> list[Sealed]:
        """Every span that ends at or before `end_ms`, taken out of the open rows."""
        ts = self.rows.ts
        done = ts < end_ms
        if not done.any():
            return []
        spans = self._span(ts)
        out = []
        for s in np.unique(spans[done]):
            out.append(Sealed(self.tier, int(s), _take(self.rows, spans == s)))
            self.chunks.pop(int(s), None)
        self.rows = _take(self.rows, ~done)
        self.saved = max(0, self.saved - int(done.sum()))
        return out

    def unsaved(self, max_chunks: int) -> list[Chunk]:
        """Rows added since the last flush, one chunk per span; a span's rows as one chunk when it has many."""
        ts = self.rows.ts
        if self.saved >= len(ts):
            return []
        spans = self._span(ts)
        new = np.arange(len(ts)) >= self.saved
        out = []
        for s in np.unique(spans[new] if not self.rewrite else spans):
            s = int(s)
            count = self.chunks.get(s, 0)
            whole = self.rewrite or count + 1 > max_chunks
            mask = spans == s if whole else (spans == s) & new
            out.append(Chunk(self.tier, s, _take(self.rows, mask), replace=whole))
            self.chunks[s] = 1 if whole else count + 1
        self.saved, self.rewrite = len(ts), False
        return out


class PointTiers:
    """One point's open rows in every tier, the rollups it owes and the clock it keeps."""

    def __init__(self) -> None:
        self.open = [OpenRows(t) for t in TIERS]
        # Per tier (1m and up): buckets starting before this are emitted; raw rows older are late.
        self.emitted_until = [0] * len(TIERS)
        self.previous_raw: np.ndarray | None = None   # last value of each metric before the open minute
        self.newest_ms: int | None = None             # newest sample time seen
        self.newest_at: float = 0.0                   # monotonic seconds when it was seen

    def snapshot(self) -> PointTiers:
        """A copy to go back to if a flush fails (row arrays are never changed in place, so they are shared)."""
        twin = copy.copy(self)
        twin.open = [copy.copy(rows) for rows in self.open]
        for rows in twin.open:
            rows.chunks = dict(rows.chunks)
        twin.emitted_until = list(self.emitted_until)
        return twin

    def watermark(self, monotonic_now: float, grace_ms: int) -> int | None:
        """The point's clock: its newest sample time plus the time since, minus the grace."""
        if self.newest_ms is None:
            return None
        return int(self.newest_ms + (monotonic_now - self.newest_at) * 1000) - grace_ms

    def accept(self, block: Block, monotonic_now: float) -> int:
        """Add raw rows; returns how many were late (older than the open minute) and dropped."""
        if len(block.ts) > 1 and (np.diff(block.ts) < 0).any():
            block = block.take(np.argsort(block.ts, kind="stable"))
        fresh = block.ts >= self.emitted_until[1]
        late = int(len(block.ts) - fresh.sum())
        if late:
            block = _take(block, fresh)
        if len(block.ts):
            newest = int(block.ts.max())
            if self.newest_ms is None or newest >= self.newest_ms:
                self.newest_ms, self.newest_at = newest, monotonic_now
            self.open[0].add(block)
        return late

    def advance(self, watermark: int, max_chunks: int) -> Changes:
        """Emit every rollup whose bucket has closed, seal every span that has ended, save the rest."""
        changes = Changes()
        for k, tier in enumerate(TIERS):
            if k + 1 < len(TIERS):
                self._emit(k, watermark)
            changes.sealed += self.open[k].seal_before(watermark - watermark % tier.span_ms)
        for rows in self.open:
            changes.chunks += rows.unsaved(max_chunks)
        return changes

    def _emit(self, k: int, watermark: int) -> None:
        upper = TIERS[k + 1]
        rows = self.open[k].rows
        closed_before = watermark - watermark % upper.bucket_ms
        due = (rows.ts >= self.emitted_until[k + 1]) & (rows.ts < closed_before)
        if not due.any():
            return
        ts, values = rows.ts[due], rows.values[due]
        if k == 0:
            starts, rolled = rollup.from_raw(ts, values, upper.bucket_ms, self.previous_raw)
            self.previous_raw = rollup.last_values(values, self.previous_raw)
            versions = rollup.versions_from_raw(ts, values[:, rollup.KNOB_COLUMN], upper.bucket_ms)
        else:
            starts, rolled = rollup.from_rollups(ts, values, upper.bucket_ms)
            versions = rollup.versions_from_rollups(ts, rows.contexts()[due].tolist(), upper.bucket_ms)
        self.open[k + 1].add(Block(starts, rolled, np.isnan(rolled), objects(versions)))
        self.emitted_until[k + 1] = int(closed_before)
