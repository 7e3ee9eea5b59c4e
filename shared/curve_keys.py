"""CURVE key files for the agent link (pyzmq/czmq certificates) and the allow-list binding agent keys to stations.

Layout of a keys folder (what `tpmon keys --out DIR` writes):

    DIR/controller.key            the controller's public key (copy to every station host)
    DIR/controller.key_secret     the controller's keypair (0600, stays on the controller host)
    DIR/agents/Station-N.key      an agent's public key
    DIR/agents/Station-N.key_secret  that agent's keypair (0600, copied to its station host only)
    DIR/allowlist.toml            [agents] "Station-N" = "<z85 public key>", read by the controller

Key files are pyzmq's `zmq.auth.create_certificates` format (ZPL text, czmq-compatible), so
`zmq.auth.load_certificate` and czmq tools read them. Keys are kept as z85 bytes (40 characters).
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

import zmq.auth
from zmq.utils import z85

from shared.atomic_file import atomic_write
from shared.config import ConfigError
from shared.topology import station_number

CONTROLLER = "controller"
ALLOWLIST = "allowlist.toml"
_ALLOWLIST_HEADER = """\
# tpmon agent allow-list: the controller accepts an agent on its link only if the agent's
# CURVE public key (z85) is listed here, and that agent then speaks for the station it is
# listed under, and for no other. Written by `tpmon keys`; one line per station.
# `tpmon keys --out DIR --station S` adds a station, `... --force` replaces its key. The
# controller re-reads this file when it changes, for new connections; restart it to also drop
# a connection made with a key you removed.
"""


class KeyFileError(ConfigError):
    """A key or allow-list file that is missing or unusable; the message names the file."""


@dataclass(frozen=True)
class Keypair:
    public: bytes         # z85, 40 bytes
    secret: bytes | None  # z85, 40 bytes; None for a public certificate


def public_file(folder: Path, name: str) -> Path:
    return folder / f"{name}.key"


def secret_file(folder: Path, name: str) -> Path:
    return folder / f"{name}.key_secret"


def agent_folder(folder: Path) -> Path:
    return folder / "agents"


def generate(folder: Path, name: str, metadata: dict[str, str] | None = None, replace: bool = False) -> Keypair:
    """Write `name.key` and `name.key_secret` (0600) in `folder`; refuse to overwrite unless `replace`.

    pyzmq writes the files with the process umask, so they are created in a private (0700)
    temporary folder, tightened there, and moved into place: the secret is never readable by others.
    """
    targets = (public_file(folder, name), secret_file(folder, name))
    if not replace and (existing := [str(p) for p in targets if p.exists()]):
        raise KeyFileError(f"{' and '.join(existing)} already exist; not replacing them")
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    staging = Path(tempfile.mkdtemp(prefix=".keys-", dir=folder))
    try:
        pub, sec = (Path(p) for p in zmq.auth.create_certificates(staging, name, metadata))
        os.chmod(sec, 0o600)
        os.chmod(pub, 0o644)
        os.replace(sec, targets[1])
        os.replace(pub, targets[0])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return load_keypair(targets[1])


def load_keypair(path: Path) -> Keypair:
    """Both keys from a `.key_secret` file."""
    pair = _load(path)
    if pair.secret is None:
        raise KeyFileError(f"{path} holds no secret key (is it the public `.key` file? "
                           "use the `.key_secret` file next to it)")
    return pair


def load_public(path: Path) -> bytes:
    """The public key from a `.key` (or `.key_secret`) file."""
    return _load(path).public


def _load(path: Path) -> Keypair:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except OSError:
        raise KeyFileError(f"key file {path} does not exist or cannot be read") from None
    except ValueError:
        raise KeyFileError(f"{path} is not a CURVE key file (no public-key line)") from None
    for what, key in (("public", public), ("secret", secret)):
        if key is not None and not _is_z85_key(key):
            raise KeyFileError(f"{path}: the {what} key is not a 40-character z85 CURVE key")
    return Keypair(public, secret)


def _is_z85_key(key: bytes) -> bool:
    try:
        return len(key) == 40 and len(z85.decode(key)) == 32
    except (ValueError, KeyError, struct.error):  # outside the alphabet (KeyError), or a chunk over 2**32
        return False


def load_allowlist(path: Path) -> dict[str, bytes]:
    """station -> z85 public key; a key listed for two stations or a malformed entry is an error."""
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise KeyFileError(f"allow-list {path} does not exist") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read allow-list {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"allow-list {path}: {exc}") from None
    if set(doc) - {"agents"} or not isinstance(doc.get("agents", {}), dict):
        raise KeyFileError(f"allow-list {path}: expected only an [agents] table of \"Station-N\" = \"<z85 key>\"")
    stations: dict[str, bytes] = {}
    owner: dict[bytes, str] = {}
    for station, key in doc.get("agents", {}).items():
        if station_number(station) is None:
            raise KeyFileError(f"allow-list {path}: {station!r} is not a station name like Station-1")
        if not isinstance(key, str) or not _is_z85_key(key.encode()):
            raise KeyFileError(f"allow-list {path}: {station} = {key!r} is not a 40-character z85 public key")
        if key.encode() in owner:
            raise KeyFileError(f"allow-list {path}: the same key is listed for {owner[key.encode()]} and {station}; "
                               "each agent needs its own key")
        owner[key.encode()] = station
        stations[station] = key.encode()
    return stations


def write_allowlist(path: Path, stations: dict[str, bytes]) -> None:
    """Atomically (re)write the allow-list, stations in numeric order."""
    lines = [f"{json.dumps(s)} = {json.dumps(k.decode())}"
             for s, k in sorted(stations.items(), key=lambda sk: station_number(sk[0]) or 0)]
    atomic_write(path, (_ALLOWLIST_HEADER + "\n[agents]\n" + "\n".join(lines) + "\n").encode())


@dataclass
class Provisioned:
    created: list[str]   # "controller" and/or station names whose keypairs were written now
    kept: list[str]      # those that already had keys and were left alone


def provision(folder: Path, stations: list[str], replace_controller: bool = False,
              replace_agents: bool = False) -> Provisioned:
    """The controller keypair and a keypair per station in `folder`, and their allow-list entries.

    Existing keys are kept unless the matching `replace_*` is set; new agent keys are added to
    the allow-list next to the stations already in it.
    """
    result = Provisioned([], [])
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    if replace_controller or not secret_file(folder, CONTROLLER).exists():
        generate(folder, CONTROLLER, {"role": "tpmon controller"}, replace=True)
        result.created.append(CONTROLLER)
    else:
        result.kept.append(CONTROLLER)
    allowlist_path = folder / ALLOWLIST
    allowed = load_allowlist(allowlist_path) if allowlist_path.exists() else {}
    agents = agent_folder(folder)
    for station in stations:
        if replace_agents or not secret_file(agents, station).exists():
            generate(agents, station, {"station": station}, replace=True)
            result.created.append(station)
        else:
            result.kept.append(station)
        allowed[station] = load_keypair(secret_file(agents, station)).public
    write_allowlist(allowlist_path, allowed)
    return result
