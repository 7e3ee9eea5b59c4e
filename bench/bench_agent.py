"""Agent cost per station: one real `tpmon agent` (two extensions, 20 ms frames, 150 ms samples), CPU and RSS.

The agent runs against a real ROUTER that heartbeats it (a live link, as in production),
with the demo's healthy conditions. CPU is psutil's user+system time of the process over
the measured interval as a percentage of one core; RSS at the end. The baseline, measured
in the same run, is a bare Python process that only wakes on a 20 ms timer: the floor any
Python frame loop pays. Goals: <= 5 % of one core and <= 100 MB.

The simulator's share: the agent counts the thread CPU time of its built-in simulator's sending
side (speech and noise synthesis, mu-law encoding, sender, network send; time.thread_time around
those calls) and exports it as tpmon_agent_sim_cpu_seconds_total; read from the agent's exporter
at both ends of the measured interval, it is reported as a share of the process CPU, i.e. the
part of the figure a station fed by real RTP would not pay.
"""
from __future__ import annotations

import os
import re
import subprocess
import urllib.request
import sys
import tempfile
import time
from pathlib import Path

import psutil
import zmq

from shared.protocol import encode, heartbeat
from tpmon import toml_writer
from tpmon.demo_profiles import station_profile
from tpmon.processes import free_port, tpmon_argv

CPU_GOAL = 5.0
RSS_GOAL_MB = 100.0
_IDLE_LOOP = "import time\nt = time.monotonic()\nwhile True:\n    t += 0.02\n    time.sleep(max(0.0, t - time.monotonic()))\n"


def _measure(proc: psutil.Process, settle_s: float, seconds: float, tick=None, probe=None) -> tuple[float, float, float]:
    """(% of one core, RSS MB, share of that CPU in `probe`) of `proc` over `seconds` after `settle_s`;
    `tick()` runs every 100 ms meanwhile; `probe()` returns cumulative CPU seconds of a part of the process."""
    def wait(span: float) -> None:
        end = time.monotonic() + span
        while time.monotonic() < end:
            if tick:
                tick()
            time.sleep(0.1)
    wait(settle_s)
    p0, c0, t0 = probe() if probe else 0.0, proc.cpu_times(), time.monotonic()
    wait(seconds)
    c1, t1, p1 = proc.cpu_times(), time.monotonic(), probe() if probe else 0.0
    used = c1.user + c1.system - c0.user - c0.system
    return used / (t1 - t0) * 100.0, proc.memory_info().rss / 1e6, (p1 - p0) / used if used > 0 else 0.0


def _sim_cpu_seconds(port: int) -> float:
    """Sum over extensions of the agent's tpmon_agent_sim_cpu_seconds_total, from its exporter."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return sum(float(v) for v in re.findall(r"^tpmon_agent_sim_cpu_seconds_total\{[^}]*\} (\S+)$", text, re.M))


def _agent(seconds: float, twins: bool) -> tuple[float, float, float]:
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
        exporter = free_port()  # scraped twice per run (the simulator's CPU counter), not in between
        doc = {"agent": {"station": "Station-1", "controller": f"tcp://127.0.0.1:{port}", "exporter_port": exporter,
                         "data_dir": str(Path(tmp) / "data"), "seed": 1}}
        for ext in ("3333", "4444"):
            doc[f"sim.{ext}"] = station_profile(1).conditions(ext)
        cfg.write_text(toml_writer.dumps(doc))
        env = {"TPMON_NO_EXTENSIONS": "1"} if twins else {}
        child = subprocess.Popen(tpmon_argv("agent", "--config", str(cfg)), env={**os.environ, **env},
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            return _measure(psutil.Process(child.pid), 5.0, seconds, tick, lambda: _sim_cpu_seconds(exporter))
        finally:
            child.terminate()
            child.wait(10)
            router.close(0)
            ctx.term()


def _idle_timer(seconds: float) -> tuple[float, float]:
    child = subprocess.Popen([sys.executable, "-c", _IDLE_LOOP])
    try:
        return _measure(psutil.Process(child.pid), 1.0, seconds)[:2]
    finally:
        child.terminate()
        child.wait(5)


def run(seconds: float = 20.0) -> list[dict]:
    base_cpu, base_rss = _idle_timer(10.0)
    cpu, rss, sim_share = _agent(seconds, twins=False)
    py_cpu, py_rss, _ = _agent(seconds / 2, twins=True)
    return [
        {"figure": "agent CPU per station (2 ext, 20 ms frames, 150 ms samples)", "value": cpu, "baseline": base_cpu,
         "unit": "% of one core", "ratio": cpu / max(base_cpu, 1e-3), "goal": f"<= {CPU_GOAL} %", "met": cpu <= CPU_GOAL},
        {"figure": "  of which the built-in simulator's sending side (thread CPU time)", "value": cpu * sim_share,
         "baseline": cpu, "unit": "% of one core", "ratio": sim_share, "goal": "informative", "met": True},
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
