"""Agent cost per station: one real `tpmon agent` (two extensions, 20 ms frames, 150 ms samples), CPU and RSS.

The agent runs as shipped: its link is CURVE, with a keys folder made for the run as `tpmon keys`
writes it, against a CURVE ROUTER that admits its key and heartbeats it (bench/curve_router.py:
a live, encrypted link as in production, without a controller competing for the cores), with
the demo's healthy conditions. The measurement starts 5 s after the first sample arrives over
the link (the start-up, warm-up ahead of real time and first PESQ, is not measured). CPU is
psutil's user+system time of the process over the measured interval as a percentage of one
core; RSS at the end. The baseline, measured in the
same run, is a bare Python process that only wakes on a 20 ms timer: the floor any Python
frame loop pays. Goals: <= 5 % of one core and <= 100 MB. The samples the ROUTER received
over the interval show the link was live throughout.

The simulator's share: the agent counts the thread CPU time of its built-in simulator's sending
side (speech and noise synthesis, mu-law encoding, sender, network send; time.thread_time around
those calls) and exports it as tpmon_agent_sim_cpu_seconds_total; read from the agent's exporter
at both ends of the measured interval, it is reported as a share of the process CPU, i.e. the
part of the figure a station fed by real RTP would not pay.

If the agent exits (a bad config, a missing key), the benchmark stops with the agent's log.
"""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.children import check_running
from bench.curve_router import CurveRouter
from shared.protocol import MsgType
from tests.procs import start_agent
from tpmon.processes import Child, free_port

CPU_GOAL = 5.0
RSS_GOAL_MB = 100.0
SAMPLE_S = 0.150
STATION = "Station-1"
_IDLE_LOOP = "import time\nt = time.monotonic()\nwhile True:\n    t += 0.02\n    time.sleep(max(0.0, t - time.monotonic()))\n"


@dataclass(frozen=True)
class Sizes:
    seconds: float        # measured interval of the agent (the python-twins run measures half)
    settle_s: float       # after the first sample arrives (start-up over, link up)
    idle_seconds: float   # measured interval of the idle-timer baseline
    idle_settle_s: float


FULL = Sizes(seconds=20.0, settle_s=5.0, idle_seconds=10.0, idle_settle_s=1.0)
SMOKE = Sizes(seconds=1.5, settle_s=1.0, idle_seconds=0.5, idle_settle_s=0.2)


@dataclass
class AgentFigures:
    cpu: float          # % of one core
    rss_mb: float
    sim_share: float    # share of that CPU in the simulator's sending side
    samples: int        # SAMPLE messages the ROUTER received over the interval
    seconds: float
    hot_paths: str      # as the agent logs them: "dsp cython, jitter cython, ..."


def _measure(proc: psutil.Process, settle_s: float, seconds: float, tick: Callable[[], None] = lambda: None,
             probe: Callable[[], float] = lambda: 0.0) -> tuple[float, float, float, float]:
    """(% of one core, RSS MB, share of that CPU in `probe`, measured seconds) of `proc` over `seconds`
    after `settle_s`; `tick()` runs every 100 ms meanwhile; `probe()` returns cumulative CPU seconds
    of a part of the process."""
    def wait(span: float) -> None:
        end = time.monotonic() + span
        while time.monotonic() < end:
            tick()
            time.sleep(0.1)
    wait(settle_s)
    p0, c0, t0 = probe(), proc.cpu_times(), time.monotonic()
    wait(seconds)
    c1, t1, p1 = proc.cpu_times(), time.monotonic(), probe()
    used = c1.user + c1.system - c0.user - c0.system
    return used / (t1 - t0) * 100.0, proc.memory_info().rss / 1e6, (p1 - p0) / used if used > 0 else 0.0, t1 - t0


def _sim_cpu_seconds(port: int) -> float:
    """Sum over extensions of the agent's tpmon_agent_sim_cpu_seconds_total, from its exporter."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return sum(float(v) for v in re.findall(r"^tpmon_agent_sim_cpu_seconds_total\{[^}]*\} (\S+)$", text, re.M))


def _wait_for_exporter(agent: Child, port: int, timeout: float = 30.0) -> None:
    """Until the agent's exporter answers; the agent's log if it exits first, or after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check_running(agent)
        try:
            _sim_cpu_seconds(port)
            return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    raise RuntimeError(f"the agent's exporter on port {port} did not answer in {timeout:.0f} s; "
                       f"its log:\n{agent.tail(40)}")


def _agent(tmp: Path, sizes: Sizes, seconds: float, twins: bool) -> AgentFigures:
    with CurveRouter(tmp / "keys", [STATION]) as router:
        exporter = free_port()  # scraped at both ends of the interval, not in between
        env = {"TPMON_NO_EXTENSIONS": "1" if twins else "0"}
        agent = start_agent(tmp, STATION, router.port, exporter_port=exporter, env=env)  # finds tmp/keys: CURVE
        try:
            _wait_for_exporter(agent, exporter)
            hot_paths = _hot_paths(agent, "python" if twins else "cython")
            _wait_for_first_sample(agent, router)  # warm-up done, frame loop running, link up: then settle
            marks: list[int] = []  # samples received so far, at both ends of the interval

            def tick() -> None:
                check_running(agent)
                router.drain()

            def probe() -> float:
                marks.append(router.counts.get(MsgType.SAMPLE, 0))
                return _sim_cpu_seconds(exporter)

            cpu, rss, share, measured = _measure(psutil.Process(agent.proc.pid), sizes.settle_s, seconds, tick, probe)
            check_running(agent)
        finally:
            agent.stop(10)
    received = marks[1] - marks[0]
    if received == 0:
        raise RuntimeError(f"the agent sent no sample over the CURVE link in {measured:.1f} s; "
                           f"its log:\n{agent.tail(40)}")
    return AgentFigures(cpu, rss, share, received, measured, hot_paths)


def _wait_for_first_sample(agent: Child, router: CurveRouter, timeout: float = 60.0) -> None:
    """Until a SAMPLE arrives over the link: the agent's start-up (warm-up ahead of real time, first
    PESQ, CURVE handshake) is over and must not be measured. The agent's log if it exits or never sends."""
    deadline = time.monotonic() + timeout
    while not router.counts.get(MsgType.SAMPLE) and time.monotonic() < deadline:
        check_running(agent)
        router.drain(100)
    if not router.counts.get(MsgType.SAMPLE):
        raise RuntimeError(f"the agent sent no sample over the CURVE link in {timeout:.0f} s; its log:\n"
                           f"{agent.tail(40)}")


def _hot_paths(agent: Child, expected: str) -> str:
    """The implementations the agent logged at start; an error unless every hot path is `expected`
    (a missing Cython build would otherwise be measured as the twins under the Cython row's name)."""
    deadline = time.monotonic() + 10  # logged just after the exporter starts listening
    while (found := re.search(r"hot paths (.*)$", agent.tail(200), re.M)) is None and time.monotonic() < deadline:
        check_running(agent)
        time.sleep(0.05)
    if found is None:
        raise RuntimeError(f"the agent did not log its hot paths; its log:\n{agent.tail(40)}")
    paths = found.group(1).strip()
    if any(not part.endswith(f" {expected}") for part in paths.split(", ")):
        raise RuntimeError(f"the agent runs hot paths {paths}, expected all {expected} (is ext/ built? make ext)")
    return paths


def _idle_timer(sizes: Sizes) -> tuple[float, float]:
    child = subprocess.Popen([sys.executable, "-c", _IDLE_LOOP])
    try:
        return _measure(psutil.Process(child.pid), sizes.idle_settle_s, sizes.idle_seconds)[:2]
    finally:
        child.terminate()
        child.wait(5)


def run(smoke: bool = False) -> list[dict]:
    sizes = SMOKE if smoke else FULL
    base_cpu, base_rss = _idle_timer(sizes)
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "c").mkdir()
        (Path(d) / "py").mkdir()
        c = _agent(Path(d) / "c", sizes, sizes.seconds, twins=False)
        py = _agent(Path(d) / "py", sizes, sizes.seconds / 2, twins=True)
    expected = 2 * c.seconds / SAMPLE_S  # two extensions, a sample each per 150 ms
    return [
        {"figure": "agent CPU per station (2 ext, 20 ms frames, 150 ms samples, CURVE link)", "value": c.cpu,
         "baseline": base_cpu, "unit": "% of one core", "ratio": c.cpu / max(base_cpu, 1e-3),
         "goal": f"<= {CPU_GOAL} %", "met": c.cpu <= CPU_GOAL, "hot_paths": c.hot_paths},
        {"figure": "  of which the built-in simulator's sending side (thread CPU time)", "value": c.cpu * c.sim_share,
         "baseline": c.cpu, "unit": "% of one core", "ratio": c.sim_share, "goal": "informative", "met": True},
        {"figure": "agent RSS per station", "value": c.rss_mb, "baseline": base_rss, "unit": "MB",
         "ratio": c.rss_mb / base_rss, "goal": f"<= {RSS_GOAL_MB:.0f} MB", "met": c.rss_mb <= RSS_GOAL_MB},
        {"figure": "samples received over the CURVE link in the interval", "value": c.samples,
         "baseline": round(expected), "unit": "samples", "ratio": c.samples / expected,
         "goal": "informative: the link was live", "met": True},
        {"figure": "agent CPU per station, python twins (TPMON_NO_EXTENSIONS=1)", "value": py.cpu, "baseline": c.cpu,
         "unit": "% of one core", "ratio": py.cpu / max(c.cpu, 1e-3), "goal": "informative", "met": True},
        {"figure": "agent RSS per station, python twins", "value": py.rss_mb, "baseline": c.rss_mb, "unit": "MB",
         "ratio": py.rss_mb / c.rss_mb, "goal": f"<= {RSS_GOAL_MB:.0f} MB", "met": py.rss_mb <= RSS_GOAL_MB},
    ]


if __name__ == "__main__":
    for row in run("--smoke" in sys.argv):
        verdict = "meets" if row["met"] else "MISSES"
        print(f"{row['figure']}: {row['value']:.2f} {row['unit']} (baseline {row['baseline']:.2f}, "
              f"ratio {row['ratio']:.2f}) goal {row['goal']}: {verdict}")
