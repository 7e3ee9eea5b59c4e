"""`tpmon token`: finds the secret like an operator expects and prints a token the controller accepts."""
from __future__ import annotations

import jwt
import pytest

from controller.security import secret_files
from tpmon.cli import main
from tpmon.token import parse_ttl


def decode(token: str, secret: bytes) -> dict:
    return jwt.decode(token, secret, algorithms=["HS256"])


def test_in_the_demo_folder_no_flag_is_needed(tmp_path, monkeypatch, capsys):
    secret = secret_files.load_or_create(tmp_path / ".tpmon-demo" / "controller" / "secrets" / "jwt.secret")
    monkeypatch.chdir(tmp_path)
    assert main(["token", "--role", "operator", "--stations", "Station-1,Station-2", "--ttl", "30m"]) == 0
    claims = decode(capsys.readouterr().out.strip(), secret)
    assert claims["role"] == "operator" and claims["stations"] == ["Station-1", "Station-2"]
    assert claims["exp"] - claims["iat"] == 1800 and claims["sub"] == "operator@cli"
    assert "write:knobs" in claims["permissions"]


def test_data_dir_and_config_and_secret_file(tmp_path, capsys):
    secret = secret_files.load_or_create(tmp_path / "d" / "secrets" / "jwt.secret")
    assert main(["token", "--role", "viewer", "--data-dir", str(tmp_path / "d")]) == 0
    assert decode(capsys.readouterr().out.strip(), secret)["stations"] == ["*"]
    cfg = tmp_path / "controller.toml"
    cfg.write_text(f'[controller]\ndata_dir = "{tmp_path / "d"}"\n')
    assert main(["token", "--role", "admin", "--config", str(cfg), "--subject", "ops"]) == 0
    assert decode(capsys.readouterr().out.strip(), secret)["sub"] == "ops"
    assert main(["token", "--role", "admin", "--secret-file", str(tmp_path / "d" / "secrets" / "jwt.secret")]) == 0


@pytest.mark.parametrize("argv, message", [
    (["--role", "root"], "use one of viewer, operator, admin"),
    (["--role", "viewer", "--ttl", "0"], "--ttl"),
    (["--role", "viewer", "--ttl", "5 weeks"], "--ttl"),
    (["--role", "viewer", "--data-dir", "/nonexistent"], "no jwt secret found"),
    (["--role", "viewer", "--algorithm", "ES256"], "--private-key"),
])
def test_clear_errors(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(["token", *argv]) == 2
    assert message in capsys.readouterr().err


def test_ttl_units():
    assert [parse_ttl(t) for t in ("90", "90s", "30m", "8h", "7d")] == [90, 90, 1800, 28800, 604800]
