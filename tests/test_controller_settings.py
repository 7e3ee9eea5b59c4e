"""Controller settings precedence and validation, and the `tpmon controller` process lifecycle."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from controller.settings import DEFAULTS, ControllerSettings, load_settings
from shared.config import ConfigError
from tpmon.processes import free_port

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_without_a_file():
    s = load_settings(None, env={})
    assert s == ControllerSettings()
    assert (s.http_port, s.link_endpoint, s.stations, s.tick_ms) == (3090, "tcp://*:3091", 12, 150)
    assert (s.stale_after_ms, s.offline_after_ms, s.ack_timeout_ms) == (1000, 3000, 2000)


def test_file_then_env_then_flags(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[controller]\nhttp_port = 4000\nstations = 3\ndata_dir = "/srv/x"\n[agent]\nstation = "Station-1"\n')
    env = {"TPMON_CONTROLLER_STATIONS": "5", "TPMON_CONTROLLER_TICK_MS": "100"}
    s = load_settings(cfg, env=env, overrides={"data_dir": "/tmp/y", "http_port": None})
    assert (s.http_port, s.stations, s.tick_ms, s.data_dir) == (4000, 5, 100, "/tmp/y")


def test_env_overrides_apply_without_a_file():
    assert load_settings(None, env={"TPMON_CONTROLLER_HTTP_PORT": "4555"}).http_port == 4555


@pytest.mark.parametrize("text,message", [
    ("[controller]\nhttp_prt = 1\n", "unknown keys: http_prt"),
    ("[controller]\nhttp_port = \"x\"\n", "http_port must be an integer"),
    ("[controller]\nstations = 0\n", "stations = 0 is out of range"),
    ("[controller]\nlog_level = \"LOUD\"\n", "log_level must be one of"),
    ("[controller]\nstale_after_ms = 5000\n", "stale_after_ms must not exceed offline_after_ms"),
    ("[controller\n", "c.toml"),
])
def test_bad_settings_name_the_key(tmp_path, text, message):
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(cfg, env={})


def test_every_default_is_a_setting():
    assert set(DEFAULTS) == set(ControllerSettings.__dataclass_fields__)


def _start(tmp_path: Path, http_port: int, link_port: int) -> subprocess.Popen:
    argv = [sys.executable, "-m", "tpmon.cli", "controller", "--http-port", str(http_port),
            "--link-endpoint", f"tcp://127.0.0.1:{link_port}", "--data-dir", str(tmp_path / "data"),
            "--stations", "2", "--insecure"]
    return subprocess.Popen(argv, cwd=ROOT, stderr=subprocess.PIPE, text=True,
                            env={"PATH": "/usr/bin:/bin", "TPMON_CONTROLLER_HTTP_HOST": "127.0.0.1"})


@pytest.mark.slow
def test_the_process_serves_and_stops_cleanly_on_sigterm(tmp_path):
    http_port, link_port = free_port(), free_port()
    proc = _start(tmp_path, http_port, link_port)
    try:
        deadline, doc = time.monotonic() + 20, None
        while time.monotonic() < deadline and doc is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/api/v1/health", timeout=1) as r:
                    doc = json.loads(r.read())
            except OSError:
                assert proc.poll() is None, proc.stderr.read()
                time.sleep(0.1)
        assert doc is not None and doc["status"] == "degraded"
        assert doc["link"]["endpoint"] == f"tcp://127.0.0.1:{link_port}"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        lines = [json.loads(line) for line in proc.stderr.read().splitlines() if line.startswith("{")]
        assert any(line["message"] == "controller stopping" for line in lines)
        assert all(line["service"] == "tpmon-controller" for line in lines)
    finally:
        proc.kill()


@pytest.mark.slow
def test_a_port_in_use_is_a_clear_error_not_a_traceback(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        proc = _start(tmp_path, busy.getsockname()[1], free_port())
        code = proc.wait(20)
        err = proc.stderr.read()
    assert code == 1 and "controller cannot start" in err and "Traceback" not in err
