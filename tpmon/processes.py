"""Child processes that die with their parent, and checks that the ports they need are free."""
from __future__ import annotations

import ctypes
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel sends SIGTERM if the parent dies (even kill -9)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # not Linux: Ctrl-C still reaches the children through the process group


@dataclass
class Child:
    """One supervised child process whose output goes to a log file."""
    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    restarts: int = 0
    _log: IO[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env={**os.environ, **self.env},
                                     preexec_fn=_die_with_parent)

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`; always reaps the process."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def tpmon_argv(*args: str) -> list[str]:
    """Run a tpmon subcommand with the same interpreter, whether or not the script is on PATH."""
    return [sys.executable, "-m", "tpmon.cli", *args]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def free_port() -> int:
    """A port that is free now, chosen below the kernel's ephemeral range.

    Binding port 0 would hand out an ephemeral port, and the kernel gives those to outgoing
    connections too: between choosing the port and the server binding it, any client on
    the host could take it. Ports below the range are only ever taken by a bind.
    """
    low = _ephemeral_low()
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12000), low)
        if not port_in_use(port) and not port_in_use(port, "0.0.0.0"):
            return port
    raise RuntimeError("no free port below the ephemeral range")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def kill_leftovers(pidfile: Path) -> list[int]:
    """Stop processes a previous run recorded in `pidfile` if they are still tpmon processes."""
    killed = []
    if not pidfile.exists():
        return killed
    for line in pidfile.read_text().split():
        pid = int(line) if line.isdigit() else 0
        if pid > 0 and _is_tpmon(pid):
            os.kill(pid, signal.SIGTERM)
            killed.append(pid)
    deadline = time.monotonic() + 5
    while killed and time.monotonic() < deadline and any(_alive(p) for p in killed):
        time.sleep(0.05)
    for pid in killed:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    pidfile.unlink(missing_ok=True)
    return killed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _is_tpmon(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(b"tpmon" in part for part in cmdline)
