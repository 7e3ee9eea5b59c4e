"""In-process controller apps with scripted agents that acknowledge, refuse or ignore knob sets; signed requests."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from controller.app import create_app
from controller.app_keys import SERVICES
from controller.clock import Clock
from controller.security import secret_files
from controller.security.signing import signed_headers
from controller.settings import ControllerSettings
from shared import protocol
from shared.protocol import MsgType
from tests.fake_agent import FakeAgent


def make_app(tmp_path: Path, clock: Clock | None = None, **overrides: Any):
    settings = ControllerSettings(**{"http_host": "127.0.0.1", "link_endpoint": "tcp://127.0.0.1:*",
                                     "data_dir": str(tmp_path), "stations": 3, "tick_ms": 50,
                                     "ack_timeout_ms": 400, "offline_after_ms": 60_000, "stale_after_ms": 60_000,
                                     "heartbeat_ms": 60_000, "insecure": True,
                                     "write_rate_limit_per_minute": 100_000, **overrides})
    return create_app(settings, registry=CollectorRegistry(), clock=clock)


class AckingAgent(FakeAgent):
    """Answers every KNOB_SET for its station: `mode` ack (apply it), refuse, or silent; keeps what it applied."""

    def __init__(self, endpoint: str, station: str, mode: str = "ack", delay: float = 0.0) -> None:
        super().__init__(endpoint, station)
        self.mode = mode
        self.delay = delay
        self.applied: dict[str, tuple[int, dict[str, Any]]] = {}   # extension -> (version, knobs)
        self.received: list[tuple[str, int]] = []                   # (extension, version) of every set
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.hello({"3333": 1, "4444": 1})
        self._task = asyncio.create_task(self._serve())
        await asyncio.sleep(0.15)  # the controller learns the connection from the HELLO

    async def _serve(self) -> None:
        while True:
            msg = await self.recv(MsgType.KNOB_SET, timeout=3600)
            body = msg.body
            self.received.append((body["extension"], body["version"]))
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.mode == "ack":
                self.applied[body["extension"]] = (body["version"], dict(body["knobs"]))
                await self.send(protocol.ack(self.station, body["extension"], body["version"], True))
            elif self.mode == "refuse":
                await self.send(protocol.ack(self.station, body["extension"], body["version"], False,
                                             [{"field": "agc_enabled", "problem": "the audio engine refused it"}]))

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        super().close()


async def start_agents(client: TestClient, modes: dict[str, str], delay: float = 0.0) -> dict[str, AckingAgent]:
    endpoint = client.app[SERVICES].link.endpoint
    agents = {station: AckingAgent(endpoint, station, mode, delay) for station, mode in modes.items()}
    for agent in agents.values():
        await agent.start()
    return agents


def signing_secret(data_dir: Path) -> bytes:
    return secret_files.load(Path(data_dir) / "secrets" / "signing.secret")


async def signed(client: TestClient, method: str, path: str, doc: Any = None,
                 headers: dict[str, str] | None = None):
    """A request signed with the controller's signing secret (the app's data_dir)."""
    body = b"" if doc is None else json.dumps(doc).encode()
    secret = signing_secret(client.app[SERVICES].settings.data_dir)
    sent = {"Content-Type": "application/json", **signed_headers(secret, method, path, body), **(headers or {})}
    return await client.request(method, path, data=body, headers=sent)
