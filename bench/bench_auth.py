"""Snapshot throughput with authentication on (JWT, scope, rate limit, headers) against auth off.

Two controllers in the same run, fed the same replayed samples; wrk alternates between them
(on, off, on, off) so a drift of the machine's speed hits both. The auth-on controller keeps its
rate limiter running with a budget wrk cannot exhaust, as does the auth-off one (limits apply
to anonymous callers too, by address): the ratio is the cost of authentication and scopes.
"""
from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from bench.replay import Replayer, record_samples
from bench.tools import run_wrk
from shared.topology import Topology
from tests.procs import ADMIN_TOKENS, request, start_controller, wait_until

CONNECTIONS = 64
SECONDS = 5
ROUNDS = 3
UNEXHAUSTIBLE = 1_000_000_000  # requests per minute: the limiter runs, never refuses


def run() -> list[dict]:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "record").mkdir()
        samples = record_samples(tmp / "record")
        (tmp / "on").mkdir()
        (tmp / "off").mkdir()
        on, on_base, on_link = start_controller(tmp / "on", stations=12, insecure=True,
                                                rate_limit_per_minute=UNEXHAUSTIBLE,
                                                write_rate_limit_per_minute=UNEXHAUSTIBLE)
        off, off_base, off_link = start_controller(tmp / "off", stations=12, insecure=True, auth=False,
                                                   rate_limit_per_minute=UNEXHAUSTIBLE,
                                                   write_rate_limit_per_minute=UNEXHAUSTIBLE)
        try:
            with Replayer(f"tcp://127.0.0.1:{on_link}", samples, Topology(12)), \
                    Replayer(f"tcp://127.0.0.1:{off_link}", samples, Topology(12)):
                for base, proc in ((on_base, on), (off_base, off)):
                    wait_until(lambda: _all_active(base), 20, proc)
                token = ADMIN_TOKENS[on_base]
                rounds_on, rounds_off = [], []
                for _ in range(ROUNDS):
                    rounds_on.append(run_wrk(f"{on_base}/api/v1/snapshots", CONNECTIONS, SECONDS,
                                             headers=(f"Authorization: Bearer {token}",)))
                    rounds_off.append(run_wrk(f"{off_base}/api/v1/snapshots", CONNECTIONS, SECONDS))
        finally:
            on.stop()
            off.stop()
    rps_on = statistics.median(r.requests_per_s for r in rounds_on)
    rps_off = statistics.median(r.requests_per_s for r in rounds_off)
    p99_on = statistics.median(r.p99_ms for r in rounds_on)
    p99_off = statistics.median(r.p99_ms for r in rounds_off)
    return [
        {"figure": "snapshot req/s, auth on vs off (median of 3)", "value": round(rps_on),
         "baseline": round(rps_off), "ratio": rps_on / rps_off, "goal": ">= 0.90", "met": rps_on / rps_off >= 0.9},
        {"figure": "snapshot p99 ms, auth on vs off", "value": p99_on, "baseline": p99_off, "ratio": p99_on / p99_off},
        {"figure": "errors (socket + non-2xx), on / off", "value": sum(r.errors for r in rounds_on),
         "baseline": sum(r.errors for r in rounds_off)},
    ]


def _all_active(base: str) -> bool:
    _, snap, _ = request(f"{base}/api/v1/snapshots")
    return all(p["status"] == "active" for s in snap["stations"].values() for p in s.values())


if __name__ == "__main__":
    for row in run():
        print(row)
