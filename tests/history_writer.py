"""A process that writes samples through a HistoryStore as fast as it can, for kill -9 tests.

`python -m tests.history_writer <file> <first_round> <flush_ms>`: 24 points, one sample each
per round, round r measured at T0 + 0.15 r (tests.history_feed.Samples, every 0.15 s) with
round r's knob version and conditions, the store's clocks following the samples. After each
round it prints `<round> <wall time>` (line-buffered), so the test knows what had been
appended by when.

As fast as the store's writer keeps up, that is: when more than MAX_QUEUED samples wait for it,
the rounds pause until it has taken them. The test is of what a kill -9 loses of what the writer
was keeping up with; at ~1500 rounds a second (~230 times the real rate of 24 points every
150 ms) a busy 2-core machine can leave the writer seconds behind, and the test would then
measure that backlog rather than the flush interval. (Throughput is bench/bench_history.py's.)
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from controller.history.store import HistoryStore
from controller.sample import Sample
from shared.topology import Topology
from tests.history_feed import Samples

ROUNDS = 12_000   # 30 minutes of samples: more than a test lets it write before the kill
POINTS = Topology(12).points
MAX_QUEUED = 200 * len(POINTS)   # 200 rounds: a flush of at most a few tenths of a second


def main(path: str, first: int, flush_ms: int) -> None:
    samples = Samples(ROUNDS, every=0.15, seed=11)
    rows = [samples.row(i) for i in range(ROUNDS)]
    now = {"t": float(samples.times[first])}
    store = HistoryStore(Path(path), {"raw": 7, "1m": 30, "5m": 90, "1h": 365}, flush_ms,
                         clock=lambda: now["t"], monotonic=lambda: 0.0)
    store.open()
    print("open", flush=True)
    for r in range(first, ROUNDS):
        now["t"] = float(samples.times[r])
        version, conditions = samples.knob_version(r), samples.conditions(r)
        for point in POINTS:
            store.append(Sample(point, r, now["t"], rows[r], version, conditions))
        print(r, time.time(), flush=True)
        time.sleep(0.0005)  # about 1500 rounds a second: minutes close every fraction of a second
        while store.queued > MAX_QUEUED:
            time.sleep(0.001)
    store.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
