"""A process that writes samples through a HistoryStore as fast as it can, for kill -9 tests.

`python -m tests.history_writer <file> <first_round> <flush_ms>`: 24 points, one sample each
per round, round r measured at T0 + 0.15 r (tests.history_feed.Samples, every 0.15 s), the
store's clocks following the samples. After each round it prints `<round> <wall time>`
(line-buffered), so the test knows what had been appended by when.
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
        for point in POINTS:
            store.append(Sample(point, 0, now["t"], rows[r], 0))
        print(r, time.time(), flush=True)
        time.sleep(0.0005)  # about 1500 rounds a second: minutes close every fraction of a second
    store.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
