"""HistoryStore: samples appended on the event loop, tiers kept by one writer thread, reads on reader threads.

`append` only queues the sample, whole (a deque append, well under a microsecond): its
values, the knob version it ran under and its conditions are taken apart on the writer
thread. Every history_flush_ms the writer thread takes what was queued, rolls up every bucket that
closed, seals every span that ended and commits it all in one SQLite transaction; so a
kill -9 loses at most the samples of the last flush interval. Reads run on their own
threads and read-only connections and never wait for the writer (WAL).
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from controller.history.db import Writer
from controller.history.reader import After, Reader, Rows
from controller.history.rollup import last_values
from controller.history.samples import to_block
from controller.history.tiers import TIER_BY_NAME, TIERS, PointTiers
from controller.sample import Sample
from shared.metrics import METRICS_BY_KEY
from shared.topology import Point

log = logging.getLogger("tpmon.controller.history")

DAY_MS = 86_400_000


@dataclass
class HistoryStats:
    samples: int = 0          # accepted into the store
    late: int = 0             # older than their point's open minute (its rollup already made): dropped
    future: int = 0           # measured more than max_future_s ahead of the controller's clock: dropped
    conditions_dropped: int = 0  # samples kept without their conditions (too large: context.MAX_CONDITIONS_KEYS)
    flushes: int = 0
    segments: int = 0         # sealed segments written
    bytes_written: int = 0    # blob bytes (segments and chunks)
    write_errors: int = 0     # failed flushes (retried with the same samples on the next one)
    expired: int = 0          # segments deleted by retention
    last_flush_s: float = 0.0


class HistoryStore:
    def __init__(self, path: Path, retention_days: Mapping[str, int], flush_ms: int = 1000, *,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic,
                 grace_ms: int = 2000, max_future_s: float = 300.0, readers: int = 2, max_chunks: int = 16,
                 expire_every_s: float = 60.0) -> None:
        self.path = Path(path)
        self.retention_days = {name: int(retention_days[name]) for name in TIER_BY_NAME}
        self.flush_s = flush_ms / 1000
        self.clock, self.monotonic = clock, monotonic
        self.grace_ms, self.max_future_s, self.max_chunks = grace_ms, max_future_s, max_chunks
        self.expire_every_s = expire_every_s
        self.stats = HistoryStats()
        self._readers = readers
        self._incoming: deque[Sample] = deque()
        self._points: dict[Point, PointTiers] = {}
        self._lock = threading.Lock()        # the writer's state and connection: its thread or flush_now
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._writer: Writer | None = None
        self._reader: Reader | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._next_expiry = 0.0

    @classmethod
    def from_settings(cls, settings: Any, clock: Any) -> HistoryStore:
        """From ControllerSettings (history_path, history_retention_*_days, history_flush_ms) and a Clock."""
        days = {name: getattr(settings, f"history_retention_{name}_days") for name in TIER_BY_NAME}
        return cls(settings.history_path, days, settings.history_flush_ms, clock=clock.wall, monotonic=clock.monotonic)

    # --- the event loop's side --------------------------------------------------------------

    def append(self, sample: Sample) -> None:
        """Queue one sample (the 68 values in catalog order, its knob version and conditions) for the next flush."""
        self._incoming.append(sample)

    __call__ = append  # so the store itself can be an ingest sample observer

    async def query(self, point: Point, resolution: str, start_ms: int, end_ms: int, columns: tuple[str, ...],
                    limit: int | None = None, after: After | None = None, context: bool = False) -> Rows:
        """Rows of one tier (`raw`, `1m`, `5m`, `1h`) with start_ms <= time < end_ms, read on a reader thread;
        with `context`, each raw row's knob version and conditions, each rollup row's knob versions (Rows)."""
        reader, pool = self._reader, self._pool
        if reader is None or pool is None:
            raise RuntimeError("the history store is not open")
        tier = TIER_BY_NAME[resolution]
        return await asyncio.get_running_loop().run_in_executor(
            pool, reader.rows, tier, point, start_ms, end_ms, columns, limit, after, context)

    async def mean_between(self, point: Point, start: float, end: float, keys: list[str]) -> dict[str, float | None]:
        """Mean of each metric (`latency.end_to_end`) over the samples measured in [start, end) (epoch
        seconds), from the raw tier; None where no sample had a value. Samples reach the file within
        history_flush_ms of arriving (call `flush` first to include the newest)."""
        unknown = [k for k in keys if k not in METRICS_BY_KEY]
        if unknown:
            raise KeyError(f"unknown metric {', '.join(unknown)}")
        rows = await self.query(point, "raw", _ms(start), _ms(end), tuple(keys))
        present = ~np.isnan(rows.values)
        counts = present.sum(axis=0)
        sums = np.where(present, rows.values, 0.0).sum(axis=0)
        return {k: (float(sums[i] / counts[i]) if counts[i] else None) for i, k in enumerate(keys)}

    async def flush(self) -> None:
        """Write what is queued now (tests, shutdown) rather than at the next interval."""
        await asyncio.get_running_loop().run_in_executor(None, self.flush_now)

    @property
    def open_handles(self) -> int:
        """Open SQLite connections: the writer's plus one per reader thread that has read."""
        return (self._writer is not None) + (self._reader.open_handles if self._reader else 0)

    @property
    def queued(self) -> int:
        return len(self._incoming)

    # --- lifecycle --------------------------------------------------------------------------

    def open(self) -> None:
        """Open (or create) the file, take back the open spans' pending rows, start the writer thread."""
        self._writer = Writer(self.path)
        now = self.monotonic()
        for tier, point, block in self._writer.pending():
            self._state(point).open[tier.id].load(block)
        for state in self._points.values():
            raw = state.open[0].rows.ts
            if len(raw):
                state.newest_ms, state.newest_at = int(raw.max()), now
        self._reader = Reader(self.path)
        self._pool = ThreadPoolExecutor(self._readers, thread_name_prefix="tpmon-history-read")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="tpmon-history-write", daemon=True)
        self._thread.start()
        log.info("history store open: %s (%d points with open spans)", self.path, len(self._points))

    def close(self) -> None:
        """Stop the writer after a last flush, then close every connection."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._writer is not None:
            self.flush_now()
            self._writer.close()
            self._writer = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    # --- the writer's side ------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            self.flush_now()

    def flush_now(self) -> None:
        with self._lock:
            if self._writer is None:
                return
            started = time.perf_counter()
            try:
                self._flush()
            except Exception:
                self.stats.write_errors += 1
                log.exception("history flush failed; its samples stay queued for the next one")
            self.stats.last_flush_s = time.perf_counter() - started

    def _flush(self) -> None:
        batch = [self._incoming.popleft() for _ in range(len(self._incoming))]
        before = {p: s.snapshot() for p, s in self._points.items()}
        try:
            self._take(batch)
            now = self.monotonic()
            changes = []
            for point, state in self._points.items():
                mark = state.watermark(now, self.grace_ms)
                if mark is not None:
                    step = state.advance(mark, self.max_chunks)
                    if step.sealed or step.chunks:
                        changes.append((point, step.sealed, step.chunks))
            self.stats.bytes_written += self._writer.commit(changes)
        except Exception:
            self._points = before           # as if this flush never ran: the same samples next time
            self._incoming.extendleft(reversed(batch))
            raise
        self.stats.flushes += 1
        self.stats.segments += sum(len(sealed) for _, sealed, _ in changes)
        if self.monotonic() >= self._next_expiry:
            self._expire()

    def _take(self, batch: list[Sample]) -> None:
        by_point: dict[Point, list[Sample]] = {}
        for sample in batch:
            by_point.setdefault(sample.point, []).append(sample)
        horizon_ms = (self.clock() + self.max_future_s) * 1000
        now = self.monotonic()
        for point, samples in by_point.items():
            block = to_block(samples)
            self.stats.conditions_dropped += sum(kept is None for kept in block.contexts().tolist())
            future = block.ts > horizon_ms
            if future.any():
                self.stats.future += int(future.sum())
                block = block.take(~future)
            late = self._state(point).accept(block, now)
            self.stats.late += late
            self.stats.samples += len(block.ts) - late

    def _state(self, point: Point) -> PointTiers:
        """A point's tiers, picked up where the file left them the first time the point is seen."""
        state = self._points.get(point)
        if state is None:
            state = self._points[point] = PointTiers()
            for tier in TIERS[1:]:
                newest = [t for t in (self._writer.newest(tier, point)[0], self._writer.newest_pending(tier, point))
                          if t is not None]
                if newest:
                    state.emitted_until[tier.id] = max(newest) + tier.bucket_ms
            newest_raw, block = self._writer.newest(TIERS[0], point)
            if block is not None:
                state.previous_raw = last_values(block.values, None)
                state.newest_ms, state.newest_at = newest_raw, self.monotonic()
        return state

    def _expire(self) -> None:
        now_ms = int(self.clock() * 1000)
        cutoffs = {t.id: now_ms - self.retention_days[t.name] * DAY_MS for t in TIERS}
        self.stats.expired += self._writer.expire(cutoffs)
        self._next_expiry = self.monotonic() + self.expire_every_s


def _ms(seconds: float) -> int:
    return int(np.floor(seconds * 1000))
