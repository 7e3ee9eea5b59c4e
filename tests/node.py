"""The npm `socket.io-client` 4 for tests: installed once into <repo>/.cache/node (gitignored), never globally.

node and npm come from the system (installed with apt-get when missing and we are root).
Under CI=true anything missing fails the test loudly: a skipped client test in CI would
hide a broken install. Elsewhere the test is skipped with the reason.
"""
from __future__ import annotations

import fcntl
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "node"
PACKAGE = "socket.io-client@4"
PLAN_CLIENT = ROOT / "tests" / "js" / "plan_client.js"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the Socket.IO client tests must run)")
    pytest.skip(reason)


def node() -> str:
    """Path of node, with npm beside it, installing Debian's packages when missing and we may."""
    if not (shutil.which("node") and shutil.which("npm")) and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "nodejs", "npm"], capture_output=True, check=False)
    path = shutil.which("node")
    if not path or not shutil.which("npm"):
        _unavailable("node and npm are needed for the socket.io-client tests (apt-get install nodejs npm)")
    return path  # type: ignore[return-value]


def socketio_client() -> Path:
    """node_modules holding socket.io-client 4 (npm install once; a lock keeps parallel runs from racing)."""
    node()
    modules = CACHE / "node_modules"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _installed(modules):
            run = subprocess.run(["npm", "install", "--prefix", str(CACHE), "--no-audit", "--no-fund", PACKAGE],
                                 capture_output=True, text=True, timeout=300, check=False)
            if run.returncode != 0 or not _installed(modules):
                _unavailable(f"npm install {PACKAGE} failed:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    return modules


def _installed(modules: Path) -> bool:
    try:
        version = json.loads((modules / "socket.io-client" / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return False
    return version.startswith("4.")


class PlanClient:
    """tests/js/plan_client.js running; its JSON lines collected on a thread."""

    def __init__(self, url: str, token: str | None, subscribe: dict[str, Any],
                 transports: tuple[str, ...] = ("websocket",)) -> None:
        env = {**os.environ, "NODE_PATH": str(socketio_client()), "TPMON_URL": url,
               "TPMON_SUBSCRIBE": json.dumps(subscribe), "TPMON_TRANSPORTS": json.dumps(list(transports))}
        env.pop("TPMON_TOKEN", None)
        if token is not None:
            env["TPMON_TOKEN"] = token
        self.proc = subprocess.Popen([node(), str(PLAN_CLIENT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def emit(self, event: str, data: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"emit": event, "data": data}) + "\n")
        self.proc.stdin.flush()

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15) -> dict[str, Any]:
        """The first line (seen before or arriving within `timeout`) that `predicate` accepts."""
        for line in self.seen:
            if predicate(line):
                return line
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(line)
            if predicate(line):
                return line
        stderr = self.proc.stderr.read() if self.proc.poll() is not None and self.proc.stderr else ""
        raise AssertionError(f"no matching line within {timeout}s; got {[l['event'] for l in self.seen]} {stderr}")

    def events(self, name: str) -> list[dict[str, Any]]:
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return [line for line in self.seen if line["event"] == name]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
