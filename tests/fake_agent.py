"""A scripted agent for link tests: a real DEALER (CURVE with a station's keys, or plaintext) speaking the real protocol."""
from __future__ import annotations

import asyncio
from pathlib import Path

import zmq
import zmq.asyncio

from shared import curve_keys, protocol
from shared.metrics import METRICS, MetricType
from shared.protocol import Message, MsgType


def link_keys(tmp: Path, stations: int) -> dict[str, str]:
    """Keys for Station-1..N in tmp/"keys"; the controller settings that use them."""
    keys = tmp / "keys"
    curve_keys.provision(keys, [f"Station-{n}" for n in range(1, stations + 1)])
    return {"curve_secret_key_file": str(curve_keys.secret_file(keys, curve_keys.CONTROLLER)),
            "curve_allowlist_file": str(keys / curve_keys.ALLOWLIST)}


class FakeAgent:
    """Speaks for `station`; with `keys`, over CURVE with the keypair of `key_of` (default: its own station)."""

    def __init__(self, endpoint: str, station: str = "Station-1", keys: Path | None = None,
                 key_of: str | None = None, keypair: curve_keys.Keypair | None = None,
                 routing_id: bytes | None = None) -> None:
        self.station = station
        self.sock = zmq.asyncio.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if keys is not None:
            own = keypair or curve_keys.load_keypair(
                curve_keys.secret_file(curve_keys.agent_folder(keys), key_of or station))
            self.sock.curve_secretkey = own.secret
            self.sock.curve_publickey = own.public
            self.sock.curve_serverkey = curve_keys.load_public(curve_keys.public_file(keys, curve_keys.CONTROLLER))
        if routing_id is not None:
            self.sock.setsockopt(zmq.ROUTING_ID, routing_id)
        self.sock.connect(endpoint)
        self.seen: list[Message] = []

    async def send(self, msg: Message) -> None:
        await self.sock.send(protocol.encode(msg))

    async def hello(self, applied: dict[str, int]) -> None:
        await self.send(protocol.hello(self.station, ["3333", "4444"], applied))

    async def sample(self, ext: str, seq: int, knob_version: int) -> None:
        values = [{MetricType.BOOL: False, MetricType.TIMESTAMP: None, MetricType.INT: 1}.get(m.type, 0.5)
                  for m in METRICS]
        await self.send(protocol.sample(self.station, ext, seq, 1_700_000_000.0 + seq, values, knob_version))

    async def recv(self, mtype: MsgType, timeout: float = 3.0) -> Message:
        """The next message of `mtype` (others are kept in `seen`)."""
        async def wait() -> Message:
            while True:
                msg = protocol.decode(await self.sock.recv())
                self.seen.append(msg)
                if msg.type is mtype:
                    return msg
        return await asyncio.wait_for(wait(), timeout)

    async def nothing(self, mtype: MsgType, within: float) -> bool:
        try:
            await self.recv(mtype, within)
        except TimeoutError:
            return True
        return False

    def close(self) -> None:
        self.sock.close(0)
