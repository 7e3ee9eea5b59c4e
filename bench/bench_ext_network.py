"""ext/ network hot paths: Cython build against its pure-Python twin on the same packet streams.

For each class two figures: per-call (one Python call per packet, as a simple caller does) and
batch (push_many/pop_due, update_many, add_many: the per-packet loop runs in C). The value is
the Cython time per packet, the baseline the twin's on the same stream in the same run, the
ratio baseline/value (the speed-up). Goal >= 20x. Run: `python -m bench ext_network`.
Per-call figures include the caller's own Python loop and call overhead (tens of ns), which
bounds their ratio for the cheapest operations; the batch figures show the loops themselves.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from ext import jitter_py, latency_py, sequence_py

GOAL = 20.0


@dataclass(frozen=True)
class Sizes:
    packets: int
    repeats: int  # best of, twin and Cython alternating


FULL = Sizes(packets=50_000, repeats=5)
SMOKE = Sizes(packets=2_000, repeats=1)


def _stream(n: int, seed: int = 1) -> dict[str, np.ndarray]:
    """A 20 ms packet stream with exponential jitter, 1% loss and reordering, sorted by arrival."""
    rng = np.random.default_rng(seed)
    ts = 20.0 * np.arange(n)
    arr = ts + 30.0 + rng.exponential(15.0, n)
    keep = rng.random(n) >= 0.01
    order = np.argsort(arr[keep], kind="stable")
    seq = np.arange(n, dtype=np.int64)[keep][order] & 0xFFFF
    return {"seq": seq, "ts": ts[keep][order], "arr": arr[keep][order],
            "size": np.full(len(seq), 320, np.int64), "bad": np.zeros(len(seq), np.uint8)}


def _ticks(s: dict[str, np.ndarray]) -> list[tuple[float, int, int]]:
    """(tick time, first packet index, end index) for 20 ms ticks."""
    ticks = np.arange(0.0, float(s["arr"][-1]) + 400.0, 20.0)
    ends = np.searchsorted(s["arr"], ticks, side="right")
    starts = np.concatenate(([0], ends[:-1]))
    return list(zip(ticks.tolist(), starts.tolist(), ends.tolist()))


def _best_pair(py_fn: Callable[[], None], c_fn: Callable[[], None], repeats: int) -> tuple[float, float]:
    """Best of `repeats` for each, the two alternating so both see the same load on a shared machine."""
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        for i, fn in enumerate((py_fn, c_fn)):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best[0], best[1]


def _jitter_per_call(mod: ModuleType, s: dict[str, np.ndarray], ticks: list) -> Callable[[], None]:
    rows = list(zip(s["seq"].tolist(), s["ts"].tolist(), s["arr"].tolist(), s["size"].tolist()))

    def run() -> None:
        jb = mod.JitterBuffer(prefetch_ms=40)
        push, pop, wait = jb.push, jb.pop, jitter_py.WAIT
        for t, a, b in ticks:
            for k in range(a, b):
                seq, ts, arr, size = rows[k]
                push(seq, ts, arr, size, False)
            while pop(t)[1] != wait:
                pass
    return run


def _jitter_batch(mod: ModuleType, s: dict[str, np.ndarray], ticks: list) -> Callable[[], None]:
    def run() -> None:
        jb = mod.JitterBuffer(prefetch_ms=40)
        out_seq, out_st, out_w = np.zeros(64, np.int64), np.zeros(64, np.int8), np.zeros(64, np.float64)
        # the batch a station pushes per 150 ms sample: ~8 packets; pops once per 20 ms tick
        for i in range(0, len(ticks), 8):
            group = ticks[i:i + 8]
            a, b = group[0][1], group[-1][2]
            jb.push_many(s["seq"][a:b], s["ts"][a:b], s["arr"][a:b], s["size"][a:b], s["bad"][a:b])
            jb.pop_due(group[-1][0], out_seq, out_st, out_w)
    return run


def _sequence_per_call(mod: ModuleType, s: dict[str, np.ndarray]) -> Callable[[], None]:
    rows = list(zip(s["seq"].tolist(), s["arr"].tolist(), s["ts"].tolist()))

    def run() -> None:
        update = mod.SequenceTracker().update
        for seq, arr, ts in rows:
            update(seq, arr, ts)
    return run


def _sequence_batch(mod: ModuleType, s: dict[str, np.ndarray]) -> Callable[[], None]:
    def run() -> None:
        st = mod.SequenceTracker()
        for a in range(0, len(s["seq"]), 256):
            st.update_many(s["seq"][a:a + 256], s["arr"][a:a + 256], s["ts"][a:a + 256])
    return run


def _latency_per_call(mod: ModuleType, values: list[float]) -> Callable[[], None]:
    def run() -> None:
        add = mod.LatencyStats(capacity=4096).add
        for v in values:
            add(v)
    return run


def _latency_batch(mod: ModuleType, values: np.ndarray) -> Callable[[], None]:
    def run() -> None:
        ls = mod.LatencyStats(capacity=4096)
        for a in range(0, len(values), 256):
            ls.add_many(values[a:a + 256])
    return run


def _latency_summary(mod: ModuleType, values: np.ndarray) -> Callable[[], None]:
    ls = mod.LatencyStats(capacity=4096)
    ls.add_many(values)

    def run() -> None:
        for _ in range(20):
            ls.summary()
    return run


def _row(figure: str, py_fn: Callable[[], None], c_fn: Callable[[], None], units: int, repeats: int) -> dict:
    py_s, c_s = _best_pair(py_fn, c_fn, repeats)
    ratio = py_s / c_s
    return {"figure": figure, "value": c_s / units * 1e9, "baseline": py_s / units * 1e9, "unit": "ns/op",
            "ratio": ratio, "goal": f">= {GOAL:.0f}x", "met": ratio >= GOAL}


def run(smoke: bool = False) -> list[dict]:
    from ext import _jitter, _latency, _sequence  # the Cython builds: a missing build is a failure here
    sizes = SMOKE if smoke else FULL
    s = _stream(sizes.packets)
    ticks = _ticks(s)
    n = len(s["seq"])
    values = np.random.default_rng(2).lognormal(4.0, 0.7, sizes.packets)

    def row(figure: str, py_fn: Callable[[], None], c_fn: Callable[[], None], units: int) -> dict:
        return _row(figure, py_fn, c_fn, units, sizes.repeats)
    return [
        row("JitterBuffer push+pop per call", _jitter_per_call(jitter_py, s, ticks),
            _jitter_per_call(_jitter, s, ticks), n),
        row("JitterBuffer push_many+pop_due", _jitter_batch(jitter_py, s, ticks), _jitter_batch(_jitter, s, ticks), n),
        row("SequenceTracker.update per call", _sequence_per_call(sequence_py, s), _sequence_per_call(_sequence, s), n),
        row("SequenceTracker.update_many", _sequence_batch(sequence_py, s), _sequence_batch(_sequence, s), n),
        row("LatencyStats.add per call", _latency_per_call(latency_py, values.tolist()),
            _latency_per_call(_latency, values.tolist()), sizes.packets),
        row("LatencyStats.add_many", _latency_batch(latency_py, values), _latency_batch(_latency, values),
            sizes.packets),
        row("LatencyStats.summary (4096 values)", _latency_summary(latency_py, values),
            _latency_summary(_latency, values), 20),
    ]


if __name__ == "__main__":
    t0 = time.perf_counter()
    for r in run("--smoke" in sys.argv):
        print(f"{r['figure']:<38} cython {r['value']:>10.0f} ns/op  python {r['baseline']:>10.0f} ns/op  "
              f"x{r['ratio']:6.1f}  goal {r['goal']}  {'met' if r['met'] else 'NOT MET'}")
    print(f"({time.perf_counter() - t0:.1f} s)")
