"""Snapshot throughput with authentication on (JWT, scope, rate limit, headers) against auth off.

Two controllers in the same run, both as shipped but for auth (CURVE link, each fed the same
replayed samples with its own keys); wrk alternates between them (on, off, on, off) so a drift
of the machine's speed hits both. The auth-on controller keeps its rate limiter running with a
budget wrk cannot exhaust, as does the auth-off one (limits apply to anonymous callers too, by
address): the ratio is the cost of authentication and scopes. Needs wrk (installed from
Debian's packages when missing and root).
"""
from __future__ import annotations

import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.children import check_running
from bench.replay import Replayer, record_samples
from bench.tools import run_wrk
from shared.topology import Topology
from tests.procs import ADMIN_TOKENS, request, start_controller, wait_until

TOOLS = ("wrk",)
UNEXHAUSTIBLE = 1_000_000_000  # requests per minute: the limiter runs, never refuses


@dataclass(frozen=True)
class Sizes:
    connections: int
    seconds: int  # per wrk round
    rounds: int   # of each (on, off) pair


FULL = Sizes(connections=64, seconds=5, rounds=3)
SMOKE = Sizes(connections=4, seconds=1, rounds=1)


def run(smoke: bool = False) -> list[dict]:
    sizes = SMOKE if smoke else FULL
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for sub in ("record", "on", "off"):
            (tmp / sub).mkdir()
        samples = record_samples(tmp / "record")
        on, on_base, on_link = start_controller(tmp / "on", stations=12,
                                                rate_limit_per_minute=UNEXHAUSTIBLE,
                                                write_rate_limit_per_minute=UNEXHAUSTIBLE)
        off, off_base, off_link = start_controller(tmp / "off", stations=12, auth=False,
                                                   rate_limit_per_minute=UNEXHAUSTIBLE,
                                                   write_rate_limit_per_minute=UNEXHAUSTIBLE)
        try:
            with Replayer(f"tcp://127.0.0.1:{on_link}", samples, Topology(12), keys=tmp / "on" / "keys"), \
                    Replayer(f"tcp://127.0.0.1:{off_link}", samples, Topology(12), keys=tmp / "off" / "keys"):
                for base, proc in ((on_base, on), (off_base, off)):
                    wait_until(lambda: _all_active(base), 20, proc)
                token = ADMIN_TOKENS[on_base]
                rounds_on, rounds_off = [], []
                for _ in range(sizes.rounds):
                    rounds_on.append(run_wrk(f"{on_base}/api/v1/snapshots", sizes.connections, sizes.seconds,
                                             headers=(f"Authorization: Bearer {token}",)))
                    rounds_off.append(run_wrk(f"{off_base}/api/v1/snapshots", sizes.connections, sizes.seconds))
                check_running(on, off)  # a controller that died under the load fails here, with its log
        finally:
            on.stop()
            off.stop()
    rps_on = statistics.median(r.requests_per_s for r in rounds_on)
    rps_off = statistics.median(r.requests_per_s for r in rounds_off)
    p99_on = statistics.median(r.p99_ms for r in rounds_on)
    p99_off = statistics.median(r.p99_ms for r in rounds_off)
    return [
        {"figure": f"snapshot req/s, auth on vs off (median of {sizes.rounds})", "value": round(rps_on),
         "baseline": round(rps_off), "ratio": rps_on / rps_off, "goal": ">= 0.90", "met": rps_on / rps_off >= 0.9},
        {"figure": "snapshot p99 ms, auth on vs off", "value": p99_on, "baseline": p99_off, "ratio": p99_on / p99_off},
        {"figure": "errors (socket + non-2xx), on / off", "value": sum(r.errors for r in rounds_on),
         "baseline": sum(r.errors for r in rounds_off)},
    ]


def _all_active(base: str) -> bool:
    _, snap, _ = request(f"{base}/api/v1/snapshots")
    return all(p["status"] == "active" for s in snap["stations"].values() for p in s.values())


if __name__ == "__main__":
    import sys
    for row in run("--smoke" in sys.argv):
        print(row)
