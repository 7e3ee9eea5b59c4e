"""`tpmon demo` as an operator runs it: processes up, points live, Ctrl-C stops everything, reruns clean."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.procs import get_json, request, wait_until
from tpmon.processes import free_port

pytestmark = pytest.mark.slow


def _demo(tmp: Path, http: int, link: int, exporter: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tpmon.cli", "demo", "--stations", "2", "--data-dir", str(tmp / "demo"),
         "--http-port", str(http), "--link-port", str(link), "--exporter-base-port", str(exporter)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _still_running(demo: subprocess.Popen) -> bool:
    if demo.poll() is not None:
        raise AssertionError(f"tpmon demo exited with {demo.returncode}:\n{demo.stdout.read()}")
    return True


def _active_points(base: str, token: str) -> int:
    status, snap, _ = request(f"{base}/api/v1/snapshots", headers={"Authorization": f"Bearer {token}"})
    return sum(p["status"] == "active" for s in snap["stations"].values() for p in s.values())


def test_demo_runs_stops_on_ctrl_c_and_restarts_cleanly(tmp_path: Path):
    http, link, exporter = free_port(), free_port(), free_port()
    base = f"http://127.0.0.1:{http}"
    for _attempt in range(2):  # the second run must find no stale ports or processes
        tokens = tmp_path / "demo" / "tokens"
        for old in tokens.glob("*.jwt"):  # every run writes fresh ones; wait for this run's
            old.unlink()
        demo = _demo(tmp_path, http, link, exporter)
        try:
            wait_until(lambda: _still_running(demo) and (tokens / "admin.jwt").exists(), 20)
            operator = (tokens / "operator.jwt").read_text().strip()
            wait_until(lambda: _still_running(demo) and _active_points(base, operator) == 4, 40)
            assert request(f"{base}/api/v1/snapshots")[0] == 401
            admin = (tokens / "admin.jwt").read_text().strip()
            status, doc, _ = request(f"{base}/api/v1/config/knobs/Station-2/4444", "POST", {"agc_max_gain": 12},
                                     headers={"Authorization": f"Bearer {operator}"})
            assert status == 200 and doc["config"]["agc_max_gain"] == 12
            assert request(f"{base}/api/v1/catalog", headers={"Authorization": f"Bearer {admin}"})[0] == 200
            children = psutil.Process(demo.pid).children(recursive=True)   # workers too: all must stop
            tpmon = [c for c in children if "tpmon.cli" in " ".join(c.cmdline())]
            assert len(tpmon) == 3  # controller + 2 agents (beside the controller's search worker and the like)
            status, text = get_json(f"http://127.0.0.1:{exporter}/metrics")
            assert status == 200 and 'tpmon_agent_up 1.0' in text and 'station="Station-1"' in text
        finally:
            demo.send_signal(signal.SIGINT)
            out, _ = demo.communicate(timeout=20)
        assert demo.returncode == 0, out
        assert "api/v1/snapshots" in out and "all processes stopped" in out
        assert operator in out and admin in out  # the banner prints both tokens
        time.sleep(0.2)
        assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
