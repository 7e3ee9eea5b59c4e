"""CURVE on the agent link: the controller's keys, the allow-list, and the ZAP handler binding each agent key to its station.

libzmq asks the ZAP handler (inproc, in the link socket's context) about every CURVE
handshake. `StationAuthenticator` accepts a client key only if the allow-list names it, and
answers with the key's station as the connection's ZMQ User-Id; libzmq then stamps that
User-Id on every message the connection delivers, which is how the link knows, per message,
which station the sender may speak for. An unlisted key is refused during the handshake: no
frame of it ever reaches the link.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
from zmq.auth.asyncio import AsyncioAuthenticator
from zmq.utils import z85

from controller.settings import ControllerSettings
from shared import curve_keys
from shared.curve_keys import KeyFileError, Keypair

log = logging.getLogger("tpmon.controller.link.router")

ZAP_DOMAIN = "tpmon-agents"
LOG_WINDOW_S = 60.0  # the same refusal is logged once per window, with how often it repeated


@dataclass(frozen=True)
class CurveServerKeys:
    keypair: Keypair
    allowlist_path: Path
    stations: dict[str, bytes]  # station -> z85 public key, as loaded at start


def load_server_keys(settings: ControllerSettings) -> CurveServerKeys:
    """The controller keypair and the allow-list; a missing file names the `tpmon keys` command to run."""
    secret, allowlist = settings.curve_secret_key_path, settings.curve_allowlist_path
    for path in (secret, allowlist):
        if not path.exists():
            raise KeyFileError(
                f"the agent link uses CURVE and {path} does not exist. Create the keys with "
                f"`tpmon keys --out {path.parent} --stations {settings.stations}` and give each agent its "
                f"{path.parent}/agents/Station-N.key_secret and {path.parent}/controller.key "
                "(or set insecure = true for a plaintext link that anyone can use)")
    return CurveServerKeys(curve_keys.load_keypair(secret), allowlist, curve_keys.load_allowlist(allowlist))


class Throttle:
    """Says when a repeated event is due to be reported again, and how many repeats it swallowed."""

    def __init__(self, window_s: float = LOG_WINDOW_S, clock: Callable[[], float] = time.monotonic,
                 capacity: int = 1024) -> None:
        self.window_s, self.clock, self.capacity = window_s, clock, capacity
        self._seen: dict[Any, tuple[float, int]] = {}  # key -> (last reported, repeats since)

    def due(self, key: Any) -> int | None:
        """None while `key` was reported within the window; else the repeats swallowed since."""
        now = self.clock()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self.window_s:
            self._seen[key] = (last[0], last[1] + 1)
            return None
        if len(self._seen) >= self.capacity:  # a flood of distinct keys must not grow memory
            self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.window_s}
        self._seen[key] = (now, 0)
        return 0 if last is None else last[1]


@dataclass
class AllowList:
    """Agent keys and their stations from allowlist.toml, re-read when the file changes.

    A broken edit keeps the last good list (logged), so a typo cannot lock every agent out.
    """
    path: Path
    stations: dict[str, bytes]
    _by_key: dict[bytes, str] = field(init=False)
    _stamp: tuple[int, int] | None = field(init=False)

    def __post_init__(self) -> None:
        self._by_key = {k: s for s, k in self.stations.items()}
        self._stamp = self._file_stamp()

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def station_of(self, key: bytes) -> str | None:
        """The station a z85 key is bound to (None when unlisted)."""
        return self._by_key.get(key)

    def refresh(self) -> None:
        stamp = self._file_stamp()
        if stamp == self._stamp or stamp is None:
            return
        self._stamp = stamp
        try:
            stations = curve_keys.load_allowlist(self.path)
        except KeyFileError as exc:
            log.error("allow-list changed but cannot be used, keeping the previous one: %s", exc)
            return
        self.stations, self._by_key = stations, {k: s for s, k in stations.items()}
        log.info("allow-list %s re-read: %d agent keys", self.path, len(stations))


Refused = Callable[[str, str, int], None]  # (z85 key, peer address, repeats since last report)


class StationAuthenticator(AsyncioAuthenticator):
    """ZAP handler: listed agent keys pass and get their station as User-Id; others are refused and reported."""

    def __init__(self, context: zmq.Context, allowlist: AllowList, on_refused: Refused,
                 throttle: Throttle | None = None) -> None:
        super().__init__(context, log=logging.getLogger("tpmon.controller.zap"))
        self.allowlist = allowlist
        self.on_refused = on_refused
        self.throttle = throttle or Throttle()
        self._address = ""

    def start(self) -> None:
        super().start()
        self.configure_curve_callback(ZAP_DOMAIN, credentials_provider=self)

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        # The credentials callback sees (domain, key) only; the request's address is kept for it.
        self._address = msg[3].decode("utf-8", "replace") if len(msg) > 3 else "?"
        try:
            await super().handle_zap_message(msg)
        except Exception:  # a crash would end the ZAP task and stall every handshake: refuse and go on
            log.exception("ZAP request failed; refusing it")
            if len(msg) > 1:
                self._send_zap_reply(msg[1], b"500", b"internal error")

    def callback(self, domain: str, key: bytes) -> bool:
        """The credentials provider (see zmq.auth.base): is this z85 key in the allow-list?"""
        self.allowlist.refresh()
        if self.allowlist.station_of(key) is not None:
            return True
        z85_key = key.decode("ascii", "replace")
        repeats = self.throttle.due(z85_key)
        if repeats is not None:
            self.on_refused(z85_key, self._address, repeats)
        return False

    def curve_user_id(self, client_public_key: bytes) -> str:
        station = self.allowlist.station_of(z85.encode(client_public_key))
        if station is None:  # only called for keys the callback accepted; never hand out an empty User-Id
            raise LookupError("accepted key has no station")
        return station
