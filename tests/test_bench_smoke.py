"""Every benchmark runs in the suite, in smoke mode, so a broken one fails CI instead of rotting until `make bench`.

`python -m bench --smoke NAME` runs a benchmark at the smallest sizes that still go through all
of its code (real agents, controllers, CURVE links, wrk, client processes: seconds, not
minutes) and prints the same report. No figure is asserted, since smoke sizes measure
nothing: only that the benchmark ran to the end and printed its rows with their ratios. The
list of benchmarks is bench/'s own, so a new benchmark is covered without editing this file.

A benchmark that drives a system tool names it in its `TOOLS`; the tool is installed from
Debian's packages when missing and we are root (bench/tools.py). If it cannot be, the test is
skipped with the reason, and under CI=true it fails: a skipped benchmark in CI would hide a
broken install.
"""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import available
from bench.tools import ensure_tool

ROOT = Path(__file__).resolve().parent.parent
IN_PROCESS = {"alerts", "dsp", "ext_network"}  # about a second each; every other benchmark starts real processes
TIMEOUT_S = 150


def _params() -> list:
    return [pytest.param(name, id=name, marks=() if name in IN_PROCESS else pytest.mark.slow)
            for name in available()]


def _require(tools: tuple[str, ...]) -> None:
    for tool in tools:
        try:
            ensure_tool(tool)
        except RuntimeError as exc:
            if os.environ.get("CI") == "true":
                pytest.fail(f"{exc} (CI=true: every benchmark's smoke run must run)")
            pytest.skip(str(exc))


@pytest.mark.timeout(TIMEOUT_S + 30)
@pytest.mark.parametrize("name", _params())
def test_bench_smoke(name: str, tmp_path: Path) -> None:
    _require(getattr(importlib.import_module(f"bench.bench_{name}"), "TOOLS", ()))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("TPMON_BENCH_SMOKE", None)  # the flag below is what is tested
    run = subprocess.run([sys.executable, "-m", "bench", "--smoke", name], cwd=tmp_path, env=env, check=False,
                         capture_output=True, text=True, timeout=TIMEOUT_S)
    output = f"stdout:\n{run.stdout[-6000:]}\nstderr:\n{run.stderr[-6000:]}"
    assert run.returncode == 0, f"python -m bench --smoke {name} exited with {run.returncode}\n{output}"
    lines = run.stdout.splitlines()
    assert f"== bench_{name} (smoke) ==" in lines, output
    rows = [line for line in lines if line.startswith("  figure=")]
    assert rows, f"bench_{name} printed no figure rows\n{output}"
    assert any(" ratio=" in row for row in rows), f"bench_{name} printed no ratio\n{output}"
    assert not (tmp_path / "bench-results.json").exists(), "a smoke run must not write figures"
