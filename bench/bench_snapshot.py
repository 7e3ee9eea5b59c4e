"""Snapshot endpoint under wrk (64 connections) against a plain aiohttp handler serving the same bytes.

The controller runs as shipped (auth on, the rate limiter running with a budget wrk cannot
exhaust, CURVE link) fed 12 stations of replayed samples; the baseline is the cheapest aiohttp
server returning the same body, in its own process. Needs wrk (installed from Debian's
packages when missing and root).
"""
from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.children import check_running
from bench.replay import Replayer, record_samples
from bench.tools import run_wrk
from shared.topology import Topology
from tests.procs import ADMIN_TOKENS, request, start_controller, wait_until
from tpmon.processes import Child, free_port

TOOLS = ("wrk",)


@dataclass(frozen=True)
class Sizes:
    connections: int
    seconds: int  # per wrk run


FULL = Sizes(connections=64, seconds=10)
SMOKE = Sizes(connections=4, seconds=1)

# The baseline: the cheapest aiohttp server that returns the same body, in its own process.
_PLAIN_SERVER = """
import sys
from aiohttp import web
body = open(sys.argv[2], 'rb').read()
async def handler(request):
    return web.Response(body=body, content_type='application/json')
app = web.Application()
app.router.add_get('/snapshot', handler)
web.run_app(app, host='127.0.0.1', port=int(sys.argv[1]), print=None, access_log=None)
"""


def run(smoke: bool = False) -> list[dict]:
    sizes = SMOKE if smoke else FULL
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "record").mkdir()
        samples = record_samples(tmp / "record")
        # As shipped (auth on, the rate limiter running) but with a budget wrk cannot exhaust.
        controller, base, link_port = start_controller(tmp, stations=12,
                                                       rate_limit_per_minute=1_000_000_000,
                                                       write_rate_limit_per_minute=1_000_000_000)
        try:
            with Replayer(f"tcp://127.0.0.1:{link_port}", samples, Topology(12), keys=tmp / "keys"):
                wait_until(lambda: _all_active(base), 20, controller)
                body_path = tmp / "snapshot.json"
                body_path.write_bytes(_raw(f"{base}/api/v1/snapshots", ADMIN_TOKENS[base]))
                size = body_path.stat().st_size
                plain = _plain_server(tmp, body_path)
                try:
                    baseline = run_wrk(f"http://127.0.0.1:{plain[1]}/snapshot", sizes.connections, sizes.seconds)
                    ours = run_wrk(f"{base}/api/v1/snapshots", sizes.connections, sizes.seconds,
                                   headers=(f"Authorization: Bearer {ADMIN_TOKENS[base]}",))
                    check_running(controller, plain[0])  # a process that died under the load fails here
                finally:
                    plain[0].stop()
        finally:
            controller.stop()
    return [
        {"figure": f"snapshot req/s (24 points, {sizes.connections} conns)", "value": round(ours.requests_per_s),
         "baseline": round(baseline.requests_per_s), "ratio": ours.requests_per_s / baseline.requests_per_s,
         "goal": ">= 0.60", "met": ours.requests_per_s / baseline.requests_per_s >= 0.6},
        {"figure": "snapshot p99 ms", "value": ours.p99_ms, "baseline": baseline.p99_ms,
         "ratio": ours.p99_ms / baseline.p99_ms, "goal": "<= 2.0 (plan: < 50 ms)",
         "met": ours.p99_ms <= 2 * baseline.p99_ms and ours.p99_ms < 50},
        {"figure": "snapshot p50 ms", "value": ours.p50_ms, "baseline": baseline.p50_ms,
         "ratio": ours.p50_ms / baseline.p50_ms},
        {"figure": "errors (socket + non-2xx)", "value": ours.errors, "baseline": baseline.errors},
        {"figure": "snapshot body bytes", "value": size},
    ]


def _all_active(base: str) -> bool:
    _, snap, _ = request(f"{base}/api/v1/snapshots")
    return all(p["status"] == "active" for s in snap["stations"].values() for p in s.values())


def _raw(url: str, token: str) -> bytes:
    import urllib.request
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req) as resp:
        return resp.read()


def _plain_server(tmp: Path, body: Path) -> tuple[Child, int]:
    port = free_port()
    proc = Child("plain aiohttp server", [sys.executable, "-c", _PLAIN_SERVER, str(port), str(body)], tmp / "plain.log")
    proc.start()
    wait_until(lambda: request(f"http://127.0.0.1:{port}/snapshot")[0] == 200, 10, proc)
    return proc, port


if __name__ == "__main__":
    for row in run("--smoke" in sys.argv):
        print(row)
