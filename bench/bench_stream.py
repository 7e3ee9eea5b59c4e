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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bench.children import check_running
from bench.replay import Replayer, record_samples
from controller.live.state import json_value
from controller.stream.frames import deflate_segment
from controller.stream.payloads import dumps
from shared.metrics import METRICS, nest
from shared.topology import Topology
from tests.procs import ADMIN_TOKENS, request, start_controller, wait_until
from tpmon.processes import Child

TICK_MS = 150
UNEXHAUSTIBLE = 1_000_000_000  # requests per minute: 1000 clients on one token connect and subscribe at once


@dataclass(frozen=True)
class Sizes:
    recorded: int                         # samples recorded from a real agent, replayed as 12 stations
    phases: tuple[tuple[int, str], ...]   # (clients, transport): the last "ws" and "sio" phases are compared
    processes: int                        # client processes sharing each phase's clients
    connect_s: float                      # before the warm-up, plus 1 s per 250 clients
    warmup_s: float
    measure_s: float


FULL = Sizes(recorded=48, phases=((200, "ws"), (1000, "ws"), (1000, "sio")), processes=4, connect_s=2.0,
             warmup_s=3.0, measure_s=15.0)
SMOKE = Sizes(recorded=24, phases=((4, "ws"), (4, "sio")), processes=2, connect_s=1.0,  # one phase per transport
              warmup_s=0.3, measure_s=1.2)


def run(smoke: bool = False) -> list[dict]:
    sizes = SMOKE if smoke else FULL
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "record").mkdir()
        samples = record_samples(tmp / "record", count=sizes.recorded)
        controller, base, link_port = start_controller(tmp, stations=12, rate_limit_per_minute=UNEXHAUSTIBLE,
                                                       write_rate_limit_per_minute=UNEXHAUSTIBLE)
        try:
            with Replayer(f"tcp://127.0.0.1:{link_port}", samples, Topology(12), keys=tmp / "keys", stagger=True):
                wait_until(lambda: _all_active(base), 20, controller)
                results = []
                for clients, transport in sizes.phases:
                    results.append(_phase(base, controller, clients, transport, sizes))
        finally:
            controller.stop()
    for result in results:
        rows += _lag_rows(result, sizes.measure_s)
    rows += _payload_rows(samples)
    ws = [r for r in results if r["transport"] == "ws"][-1]
    sio = [r for r in results if r["transport"] == "sio"][-1]
    ws_rate, sio_rate = ws["per_cpu"], sio["per_cpu"]
    rows.append({"figure": f"Socket.IO vs WebSocket throughput (updates per controller CPU-second, {sio['clients']} "
                           f"vs {ws['clients']} clients)",
                 "value": round(sio_rate), "baseline": round(ws_rate), "ratio": sio_rate / ws_rate,
                 "goal": ">= 0.7", "met": sio_rate / ws_rate >= 0.7})
    return rows


def _phase(base: str, controller_proc: Child, clients: int, transport: str, sizes: Sizes) -> dict[str, Any]:
    """Run `clients` clients in `sizes.processes` processes; merge their figures with the controller's."""
    start_at = time.time() + sizes.connect_s + clients / 250 + sizes.warmup_s
    stop_at = start_at + sizes.measure_s
    n_procs = sizes.processes
    per_process = [clients // n_procs + (1 if i < clients % n_procs else 0) for i in range(n_procs)]
    procs = [subprocess.Popen([sys.executable, "-m", "bench.stream_clients", "--url", base, "--token",
                               ADMIN_TOKENS[base], "--clients", str(n), "--transport", transport,
                               "--interval", str(TICK_MS), "--start-at", str(start_at), "--stop-at", str(stop_at)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in per_process]
    try:
        controller = psutil.Process(controller_proc.proc.pid)
        _sleep_until(start_at)
        cpu0, own0, before = _cpu(controller), time.process_time(), _counters(base)
        _sleep_until(stop_at)
        cpu1, own1, after = _cpu(controller), time.process_time(), _counters(base)
        check_running(controller_proc)
        outputs = [_client_output(p) for p in procs]
    finally:
        for p in procs:  # after a failure, no client process outlives the phase
            if p.poll() is None:
                p.kill()
                p.wait()
    builds0, skipped0, fanout0 = before
    builds1, skipped1, fanout1 = after
    measure_s = sizes.measure_s
    p50, p99, total = _percentiles(outputs, "hist")
    tick_p50, tick_p99, _ = _percentiles(outputs, "hist_tick")
    messages = sum(o["messages"] for o in outputs)
    controller_cpu = cpu1 - cpu0
    return {"clients": clients, "transport": transport, "failed": sum(o["failed"] for o in outputs),
            "errors": [e for o in outputs for e in o["errors"]][:3], "p50": p50, "p99": p99, "lags": total,
            "after_tick_p50": tick_p50, "after_tick_p99": tick_p99,
            "messages": messages, "missed": sum(o["missed"] for o in outputs),
            "expected": clients * measure_s * 1000 / TICK_MS, "ticks": builds1 - builds0,
            "skipped": skipped1 - skipped0, "controller_cpu": controller_cpu / measure_s,
            "fanout_ms": 1000 * (fanout1 - fanout0) / max(builds1 - builds0, 1),
            "clients_cpu": sum(o["cpu_s"] for o in outputs) / measure_s,
            "replayer_cpu": (own1 - own0) / measure_s, "per_cpu": messages / max(controller_cpu, 1e-9)}


def _client_output(proc: subprocess.Popen) -> dict[str, Any]:
    """The JSON line a client process prints last; its stderr in the error if it failed."""
    out, err = proc.communicate(timeout=120)
    lines = out.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"a bench.stream_clients process exited with status {proc.returncode}:\n{err[-3000:]}")
    return json.loads(lines[-1])


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


def _lag_rows(r: dict[str, Any], measure_s: float) -> list[dict]:
    name = f"{r['clients']} {'Socket.IO' if r['transport'] == 'sio' else 'WebSocket'} clients"
    expected_ticks = measure_s * 1000 / TICK_MS
    missed_share = r["missed"] / r["expected"]
    return [
        {"figure": f"{name}: delivery lag p99 ms (measuredAt -> receipt)", "value": r["p99"], "baseline": TICK_MS,
         "ratio": r["p99"] / TICK_MS, "beyond_tick_ms": r["p99"] - TICK_MS, "goal": "<= tick + 50 ms",
         "met": r["p99"] <= TICK_MS + 50 and r["failed"] == 0},
        {"figure": f"{name}: delivery lag p50 ms", "value": r["p50"], "baseline": TICK_MS, "ratio": r["p50"] / TICK_MS},
        {"figure": f"{name}: receipt after the tick that built the update, p50 / p99 ms", "value": r["after_tick_p50"],
         "p99": r["after_tick_p99"]},
        {"figure": f"{name}: controller ticks in {measure_s:g} s (missed)", "value": r["ticks"],
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
    for row in run("--smoke" in sys.argv):
        print(row)
