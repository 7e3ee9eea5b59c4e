"""Agent cost per station: one real `tpmon agent` (two extensions, 20 ms frames, 150 ms samples), CPU and RSS.

The agent runs against a real ROUTER that heartbeats it (a live link, as in production),
with the demo's healthy conditions. CPU is psutil's user+system time of the process over
the measured interval as a percentage of one core; RSS at the end. The baseline, measured
in the same run, is a bare Python process that only wakes on a 20 ms timer: the floor any
Python frame loop pays. Goals: <= 5 % of one core and <= 100 MB.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import zmq

from shared.protocol import encode, heartbeat
from tpmon import toml_writer
from tpmon.demo_profiles import station_profile
from tpmon.processes import tpmon_argv

CPU_GOAL = 5.0
RSS_GOAL_MB = 100.0
_IDLE_LOOP = "import time\nt = time.monotonic()\nwhile True:\n    t += 0.02\n    time.sleep(max(0.0, t - time.monotonic()))\n"


def _measure(proc: psutil.Process, settle_s: float, seconds: float, tick=None) -> tuple[float, float]:
    """(% of one core, RSS MB) of `proc` over `seconds` after `settle_s`; `tick()` runs every 100 ms meanwhile."""
    def wait(span: float) -> None:
        end = time.monotonic() + span
        while time.monotonic() < end:
            if tick:
                tick()
            time.sleep(0.1)
    wait(settle_s)
    c0, t0 = proc.cpu_times(), time.monotonic()
    wait(seconds)
    c1, t1 = proc.cpu_times(), time.monotonic()
    cpu = (c1.user + c1.system - c0.user - c0.system) / (t1 - t0) * 100.0
    return cpu, proc.memory_info().rss / 1e6


def _agent(seconds: float, twins: bool) -> tuple[float, float]:
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    last_beat = [0.0]

    def tick() -> None:  # drain what the agent sends; heartbeat it once a second like the controller
        while router.poll(0):
            identity, _ = router.recv_multipart()
            if time.monotonic() - last_beat[0] > 1.0:
                router.send_multipart([identity, encode(heartbeat(time.time()))])
                last_beat[0] = time.monotonic()

    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "agent.toml"
        doc = {"agent": {"station": "Station-1", "controller": f"tcp://127.0.0.1:{port}", "exporter_port": 0,
                         "data_dir": str(Path(tmp) / "data"), "seed": 1}}
        for ext in ("3333", "4444"):
            doc[f"sim.{ext}"] = station_profile(1).conditions(ext)
        cfg.write_text(toml_writer.dumps(doc))
        env = {"TPMON_NO_EXTENSIONS": "1"} if twins else {}
        child = subprocess.Popen(tpmon_argv("agent", "--config", str(cfg)), env={**os.environ, **env},
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            return _measure(psutil.Process(child.pid), 5.0, seconds, tick)
        finally:
            child.terminate()
            child.wait(10)
            router.close(0)
            ctx.term()


def _idle_timer(seconds: float) -> tuple[float, float]:
    child = subprocess.Popen([sys.executable, "-c", _IDLE_LOOP])
    try:
        return _measure(psutil.Process(child.pid), 1.0, seconds)
    finally:
        child.terminate()
        child.wait(5)


def run(seconds: float = 20.0) -> list[dict]:
    base_cpu, base_rss = _idle_timer(10.0)
    cpu, rss = _agent(seconds, twins=False)
    py_cpu, py_rss = _agent(seconds / 2, twins=True)
    return [
        {"figure": "agent CPU per station (2 ext, 20 ms frames, 150 ms samples)", "value": cpu, "baseline": base_cpu,
         "unit": "% of one core", "ratio": cpu / max(base_cpu, 1e-3), "goal": f"<= {CPU_GOAL} %", "met": cpu <= CPU_GOAL},
        {"figure": "agent RSS per station", "value": rss, "baseline": base_rss, "unit": "MB",
         "ratio": rss / base_rss, "goal": f"<= {RSS_GOAL_MB:.0f} MB", "met": rss <= RSS_GOAL_MB},
        {"figure": "agent CPU per station, python twins (TPMON_NO_EXTENSIONS=1)", "value": py_cpu, "baseline": cpu,
         "unit": "% of one core", "ratio": py_cpu / max(cpu, 1e-3), "goal": "informative", "met": True},
        {"figure": "agent RSS per station, python twins", "value": py_rss, "baseline": rss, "unit": "MB",
         "ratio": py_rss / rss, "goal": f"<= {RSS_GOAL_MB:.0f} MB", "met": py_rss <= RSS_GOAL_MB},
    ]


if __name__ == "__main__":
    for row in run():
        verdict = "meets" if row["met"] else "MISSES"
        print(f"{row['figure']}: {row['value']:.2f} {row['unit']} (baseline {row['baseline']:.2f}, "
              f"ratio {row['ratio']:.2f}) goal {row['goal']}: {verdict}")
