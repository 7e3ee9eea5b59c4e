"""Streaming at scale: 200 and 1000 WebSocket clients on one controller, then Socket.IO against plain WebSocket.

One controller as shipped (auth on: every client connects with a token; CURVE link) is fed
12 stations of replayed samples every 150 ms. Client processes (bench/stream_clients.py, a
few hundred connections each on one asyncio loop) subscribe every client to all 24 points
at 150 ms and measure, over the same wall-clock window, the lag from each new sample's
measurement (`measuredAt`) to its receipt, and the updates they missed (gaps in `seq`). The
controller's own CPU comes from psutil; its ticks from its /metrics (snapshot builds).

Everything shares this machine's cores: the clients' receiving competes with the
controller, so the lags are an upper bound for a controller on its own host. The lag's
baseline is the tick itself: a sample waits up to one tick for the next fan-out.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bench.replay import Replayer, record_samples
from controller.live import json_value
from controller.stream.frames import deflate_segment
from controller.stream.payloads import dumps
from shared.metrics import METRICS, nest
from shared.topology import Topology
from tests.procs import ADMIN_TOKENS, request, start_controller, wait_until

TICK_MS = 150
MEASURE_S = 15
WARMUP_S = 3
PROCESSES = 4
UNEXHAUSTIBLE = 1_000_000_000  # requests per minute: 1000 clients on one token connect and subscribe at once


def run() -> list[dict]:
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "record").mkdir()
        samples = record_samples(tmp / "record", count=48)
        controller, base, link_port = start_controller(tmp, stations=12, rate_limit_per_minute=UNEXHAUSTIBLE,
                                                       write_rate_limit_per_minute=UNEXHAUSTIBLE)
        try:
            with Replayer(f"tcp://127.0.0.1:{link_port}", samples, Topology(12), keys=tmp / "keys", stagger=True):
                wait_until(lambda: _all_active(base), 20, controller)
                ws200 = _phase(base, controller.proc.pid, 200, "ws")
                ws1000 = _phase(base, controller.proc.pid, 1000, "ws")
                sio1000 = _phase(base, controller.proc.pid, 1000, "sio")
        finally:
            controller.stop()
    for result in (ws200, ws1000):
        rows += _lag_rows(result)
    rows += _lag_rows(sio1000)
    rows += _payload_rows(samples)
    ws_rate, sio_rate = ws1000["per_cpu"], sio1000["per_cpu"]
    rows.append({"figure": "Socket.IO vs WebSocket throughput (updates per controller CPU-second, 1000 clients)",
                 "value": round(sio_rate), "baseline": round(ws_rate), "ratio": sio_rate / ws_rate,
                 "goal": ">= 0.7", "met": sio_rate / ws_rate >= 0.7})
    return rows


def _phase(base: str, pid: int, clients: int, transport: str) -> dict[str, Any]:
    """Run `clients` clients in PROCESSES processes; merge their figures with the controller's."""
    connect_s = 2 + clients / 250
    start_at = time.time() + connect_s + WARMUP_S
    stop_at = start_at + MEASURE_S
    per_process = [clients // PROCESSES + (1 if i < clients % PROCESSES else 0) for i in range(PROCESSES)]
    procs = [subprocess.Popen([sys.executable, "-m", "bench.stream_clients", "--url", base, "--token",
                               ADMIN_TOKENS[base], "--clients", str(n), "--transport", transport,
                               "--interval", str(TICK_MS), "--start-at", str(start_at), "--stop-at", str(stop_at)],
                              stdout=subprocess.PIPE, text=True) for n in per_process]
    controller = psutil.Process(pid)
    _sleep_until(start_at)
    cpu0, own0, before = _cpu(controller), time.process_time(), _counters(base)
    _sleep_until(stop_at)
    cpu1, own1, after = _cpu(controller), time.process_time(), _counters(base)
    builds0, skipped0, fanout0 = before
    builds1, skipped1, fanout1 = after
    outputs = [json.loads(p.communicate(timeout=120)[0].strip().splitlines()[-1]) for p in procs]
    p50, p99, total = _percentiles(outputs, "hist")
    tick_p50, tick_p99, _ = _percentiles(outputs, "hist_tick")
    messages = sum(o["messages"] for o in outputs)
    controller_cpu = cpu1 - cpu0
    return {"clients": clients, "transport": transport, "failed": sum(o["failed"] for o in outputs),
            "errors": [e for o in outputs for e in o["errors"]][:3], "p50": p50, "p99": p99, "lags": total,
            "after_tick_p50": tick_p50, "after_tick_p99": tick_p99,
            "messages": messages, "missed": sum(o["missed"] for o in outputs),
            "expected": clients * MEASURE_S * 1000 / TICK_MS, "ticks": builds1 - builds0,
            "skipped": skipped1 - skipped0, "controller_cpu": controller_cpu / MEASURE_S,
            "fanout_ms": 1000 * (fanout1 - fanout0) / max(builds1 - builds0, 1),
            "clients_cpu": sum(o["cpu_s"] for o in outputs) / MEASURE_S,
            "replayer_cpu": (own1 - own0) / MEASURE_S, "per_cpu": messages / max(controller_cpu, 1e-9)}


def _percentiles(outputs: list[dict[str, Any]], key: str) -> tuple[int, int, int]:
    """p50 and p99 (ms) of the processes' merged 1 ms histograms, and the number of lags."""
    hist = np.zeros(20_001, dtype=np.int64)
    for out in outputs:
        for lag, count in out[key].items():
            hist[min(int(lag), 20_000)] += count
    cumulative = np.cumsum(hist)
    total = int(cumulative[-1])
    if not total:
        return 0, 0, 0
    p50, p99 = (int(np.searchsorted(cumulative, q * total)) for q in (0.5, 0.99))
    return p50, p99, total


def _lag_rows(r: dict[str, Any]) -> list[dict]:
    name = f"{r['clients']} {'Socket.IO' if r['transport'] == 'sio' else 'WebSocket'} clients"
    expected_ticks = MEASURE_S * 1000 / TICK_MS
    missed_share = r["missed"] / r["expected"]
    return [
        {"figure": f"{name}: delivery lag p99 ms (measuredAt -> receipt)", "value": r["p99"], "baseline": TICK_MS,
         "ratio": r["p99"] / TICK_MS, "beyond_tick_ms": r["p99"] - TICK_MS, "goal": "<= tick + 50 ms",
         "met": r["p99"] <= TICK_MS + 50 and r["failed"] == 0},
        {"figure": f"{name}: delivery lag p50 ms", "value": r["p50"], "baseline": TICK_MS, "ratio": r["p50"] / TICK_MS},
        {"figure": f"{name}: receipt after the tick that built the update, p50 / p99 ms", "value": r["after_tick_p50"],
         "p99": r["after_tick_p99"]},
        {"figure": f"{name}: controller ticks in {MEASURE_S} s (missed)", "value": r["ticks"],
         "baseline": round(expected_ticks), "ratio": r["ticks"] / expected_ticks,
         "missed_ticks": max(0, round(expected_ticks) - r["ticks"]), "goal": "no missed ticks",
         "met": r["ticks"] >= round(expected_ticks) - 1},
        {"figure": f"{name}: updates received / expected", "value": r["messages"], "baseline": round(r["expected"]),
         "ratio": r["messages"] / r["expected"], "missed_updates": r["missed"],
         "missed_share": round(missed_share, 5), "skipped_by_backpressure": r["skipped"],
         "failed_clients": r["failed"], "errors": r["errors"]},
        {"figure": f"{name}: fan-out time per tick, ms (all subscribers written)", "value": round(r["fanout_ms"], 2),
         "baseline": TICK_MS, "ratio": r["fanout_ms"] / TICK_MS},
        {"figure": f"{name}: CPU, share of one core", "value": round(r["controller_cpu"], 3),
         "clients": round(r["clients_cpu"], 3), "replayer_and_bench": round(r["replayer_cpu"], 3),
         "updates_per_controller_cpu_s": round(r["per_cpu"])},
    ]


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def _counters(base: str) -> tuple[float, float, float]:
    """Snapshot builds (ticks), updates skipped by backpressure, fan-out seconds: from the controller's /metrics."""
    _, text, _ = request(f"{base}/metrics")

    def value(name: str) -> float:
        match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", str(text), re.M)
        return float(match.group(1)) if match else 0.0
    return (value("snapshot_build_seconds_count"), value("stream_updates_skipped_total"),
            value("stream_fanout_seconds_total"))


def _payload_rows(samples: list[dict]) -> list[dict]:
    """What `compression: true` saves on a 12-station update of distinct real samples, and what deltas would.

    The replayer sends one recording to every station (identical points deflate unrealistically
    well), so here each of the 24 points gets its own recorded sample.
    """
    points = {}
    for n, sample in enumerate(samples[:24]):
        metrics = nest({m.key: json_value(m, v) for m, v in zip(METRICS, sample["metrics"])})
        points.setdefault(f"Station-{n // 2 + 1}", {})[f"extension_{3333 + 1111 * (n % 2)}"] = {
            "metrics": metrics, "status": "active", "measuredAt": "2026-01-01T00:00:00.000Z"}
    body = dumps({"seq": 1, "timestamp": "2026-01-01T00:00:00.150Z", "stations": points})
    started = time.perf_counter()
    deflated = deflate_segment(body, 15, last=True)
    deflate_ms = (time.perf_counter() - started) * 1000
    changed = total = 0
    by_point: dict[tuple[str, str], list[dict]] = {}
    for sample in samples:
        by_point.setdefault((sample["station"], sample["extension"]), []).append(sample)
    for series in by_point.values():
        for a, b in zip(series, series[1:]):
            for metric, x, y in zip(METRICS, a["metrics"], b["metrics"]):
                total += 1
                changed += json_value(metric, x) != json_value(metric, y)
    return [
        {"figure": "12-station update, 24 distinct real samples: bytes plain vs deflated (compression: true)",
         "value": len(deflated), "baseline": len(body), "ratio": len(deflated) / len(body),
         "deflate_ms_once_per_shape": round(deflate_ms, 2)},
        {"figure": "metric values changed from one sample to the next (what changed-only updates would save)",
         "value": changed, "baseline": total, "ratio": changed / max(total, 1)},
    ]


def _sleep_until(at: float) -> None:
    time.sleep(max(0.0, at - time.time()))


def _all_active(base: str) -> bool:
    _, snap, _ = request(f"{base}/api/v1/snapshots")
    return all(p["status"] == "active" for s in snap["stations"].values() for p in s.values())


if __name__ == "__main__":
    for row in run():
        print(row)
