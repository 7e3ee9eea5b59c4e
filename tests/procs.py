"""Start real tpmon processes on free loopback ports for integration tests."""
from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared import curve_keys
from shared.topology import Topology
from tests.auth import token_for
from tpmon import toml_writer
from tpmon.demo_profiles import station_profile
from tpmon.processes import Child, free_port, tpmon_argv

ADMIN_TOKENS: dict[str, str] = {}  # controller base URL -> an admin token minted with its secret


class Proc(Child):
    """A Child with the operations tests need: kill -9 and restart with the same arguments."""

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()


def start_controller(tmp: Path, stations: int = 1, http_port: int | None = None,
                     link_port: int | None = None, **extra: Any) -> tuple[Proc, str, int]:
    """Controller on free ports; returns (process, base URL, link port).

    Unless `insecure=True`, the agent link runs CURVE with keys for its stations made (once) in
    tmp/"keys", where `start_agent` finds them.
    """
    http_port = http_port or free_port()
    link_port = link_port or free_port()
    if not extra.get("insecure", False):
        keys = tmp / "keys"
        curve_keys.provision(keys, list(Topology(stations).stations))
        extra = {"curve_secret_key_file": str(curve_keys.secret_file(keys, curve_keys.CONTROLLER)),
                 "curve_allowlist_file": str(keys / curve_keys.ALLOWLIST), **extra}
    cfg = tmp / "controller.toml"
    cfg.write_text(toml_writer.dumps({"controller": {
        "http_host": "127.0.0.1", "http_port": http_port, "link_endpoint": f"tcp://127.0.0.1:{link_port}",
        "data_dir": str(tmp / "controller"), "stations": stations, **extra}}))
    proc = Proc("controller", tpmon_argv("controller", "--config", str(cfg)), tmp / "controller.log")
    proc.start()
    base = f"http://127.0.0.1:{http_port}"
    wait_until(lambda: get_json(f"{base}/api/v1/health")[0] == 200, 20, proc)
    if extra.get("auth", True):
        ADMIN_TOKENS[base] = token_for(tmp / "controller", "admin")
    return proc, base, link_port


def start_agent(tmp: Path, station: str, link_port: int, exporter_port: int = 0,
                sim: dict[str, Any] | None = None, env: dict[str, str] | None = None,
                **agent_extra: Any) -> Proc:
    """A station agent with the demo's healthy conditions unless `sim` overrides them.

    It uses its station's CURVE keys from tmp/"keys" when `start_controller` made them there,
    else a plaintext link (insecure), as against a test's own bare ROUTER.
    """
    n = int(station.split("-")[1])
    doc: dict[str, dict[str, Any]] = {"agent": {
        "station": station, "controller": f"tcp://127.0.0.1:{link_port}", "exporter_host": "127.0.0.1",
        "exporter_port": exporter_port, "data_dir": str(tmp / "agents" / station), "seed": 100 + n,
        **_agent_keys(tmp / "keys", station), **agent_extra}}
    for ext in ("3333", "4444"):
        doc[f"sim.{ext}"] = {**station_profile(n).conditions(ext), **(sim or {})}
    cfg = tmp / f"agent-{station}.toml"
    cfg.write_text(toml_writer.dumps(doc))
    proc = Proc(station, tpmon_argv("agent", "--config", str(cfg)), tmp / f"agent-{station}.log", env=env or {})
    proc.start()
    return proc


def _agent_keys(keys: Path, station: str) -> dict[str, Any]:
    secret = curve_keys.secret_file(curve_keys.agent_folder(keys), station)
    if not secret.exists():
        return {"insecure": True}
    return {"curve_secret_key_file": str(secret),
            "controller_public_key_file": str(curve_keys.public_file(keys, curve_keys.CONTROLLER))}


def wait_until(predicate: Callable[[], Any], timeout: float, watched: Child | None = None,
               interval: float = 0.05) -> Any:
    """Poll until `predicate()` is truthy; fail with the watched process's log if it died or time ran out."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        if watched is not None and watched.exited() is not None:
            raise AssertionError(f"{watched.name} exited with {watched.exited()}:\n{watched.tail(40)}")
        try:
            result = predicate()
            if result:
                return result
        except (OSError, ValueError, KeyError) as exc:  # server not up yet, or not the state we wait for
            last_exc = exc
        time.sleep(interval)
    tail = f"\n{watched.name} log:\n{watched.tail(40)}" if watched else ""
    raise AssertionError(f"timed out after {timeout}s (last error: {last_exc!r}){tail}")


def request(url: str, method: str = "GET", body: Any = None, raw: bytes | None = None,
            headers: dict[str, str] | None = None, timeout: float = 10,
            auth: bool = True) -> tuple[int, Any, dict[str, str]]:
    """HTTP request returning (status, parsed JSON or raw text, headers), errors included.

    A request to a controller started by `start_controller` carries an admin token unless
    `auth` is False or `headers` bring their own Authorization.
    """
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    sent = {"Content-Type": "application/json", **(headers or {})}
    if auth and "Authorization" not in sent:
        token = next((t for base, t in ADMIN_TOKENS.items() if url.startswith(base + "/")), None)
        if token:
            sent["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=sent)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, payload, hdrs = resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as err:
        status, payload, hdrs = err.code, err.read(), dict(err.headers)
    try:
        return status, json.loads(payload) if payload else None, hdrs
    except ValueError:
        return status, payload.decode(errors="replace"), hdrs


def get_json(url: str) -> tuple[int, Any]:
    status, doc, _ = request(url)
    return status, doc


def post_json(url: str, body: Any) -> tuple[int, Any]:
    status, doc, _ = request(url, "POST", body)
    return status, doc
