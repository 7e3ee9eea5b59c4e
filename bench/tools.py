"""System tools the benchmarks drive (wrk), installed from Debian's packages when missing."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass


def ensure_tool(name: str, package: str | None = None) -> str:
    """Path of `name`, installing its Debian package as root when absent; fail loudly otherwise."""
    path = shutil.which(name)
    if path:
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        install = ["apt-get", "install", "-y", "-qq", package or name]
        if subprocess.run(install, check=False, capture_output=True).returncode != 0:  # stale or no package lists
            subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
            subprocess.run(install, check=False, capture_output=True)
        path = shutil.which(name)
    if not path:
        raise RuntimeError(f"{name} is required (apt-get install {package or name})")
    return path


@dataclass
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(f"cannot parse wrk duration {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def run_wrk(url: str, connections: int = 64, seconds: int = 10, threads: int = 1,
            headers: tuple[str, ...] = ()) -> WrkResult:
    """Load `url` with wrk and parse throughput, latency percentiles and socket/HTTP errors."""
    argv = [ensure_tool("wrk"), f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for h in headers:
        argv += ["-H", h]
    out = subprocess.run(argv + [url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return WrkResult(rps, p50, p99, errors + (int(non2xx.group(1)) if non2xx else 0))
