"""A load process for bench_stream: many streaming clients on one asyncio loop, measuring delivery lag.

`python -m bench.stream_clients --url http://127.0.0.1:3090 --token T --clients 250 --transport ws
--start-at E --stop-at E` connects its clients (plain WebSocket at /api/v1/ws, or Socket.IO v5
spoken by hand over Engine.IO's WebSocket transport: "0" open, "40{auth}" connect, "42[...]"
events, "2"/"3" ping/pong), subscribes each to every point at --interval, and between the two
wall-clock instants records, for every metrics-update, its receipt time and `seq`. Lag is
receipt minus the `measuredAt` of every point whose sample is new in that update (agents and
controller share this host's clock); one client per process parses each update in full, the
others read only its `seq`, so the clients' CPU goes to receiving. Prints one JSON line: counts,
a lag histogram (1 ms bins), updates missed (gaps in seq), and this process's CPU seconds.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from collections import defaultdict
from datetime import datetime
from typing import Any

import aiohttp
import numpy as np

MAX_LAG_MS = 10_000
_SEQ = re.compile(rb'"seq":(\d+)')


class Recorder:
    """Receipts of every client of this process, and the new samples of each update (parsed once)."""

    def __init__(self, start_at: float, stop_at: float) -> None:
        self.start_at, self.stop_at = start_at, stop_at
        self.receipts: dict[int, list[float]] = defaultdict(list)  # seq -> receipt times
        self.new_samples: dict[int, np.ndarray] = {}                # seq -> measuredAt of points new in it
        self.built_at: dict[int, float] = {}                        # seq -> the snapshot's timestamp (its tick)
        self._last_measured: dict[tuple[str, str], str] = {}
        self.missed = 0
        self.messages = 0

    def update(self, payload: bytes, data_at: int, last_seq: int | None, now: float) -> int:
        seq = int(_SEQ.search(payload, data_at, data_at + 40).group(1))
        if seq not in self.new_samples:
            self._parse(seq, payload[data_at:])
        if self.start_at <= now < self.stop_at:
            self.receipts[seq].append(now)
            self.messages += 1
            if last_seq is not None and seq > last_seq + 1:
                self.missed += seq - last_seq - 1
        return seq

    def _parse(self, seq: int, data: bytes) -> None:
        doc, _ = json.JSONDecoder().raw_decode(data.decode())
        self.built_at[seq] = _epoch(doc["timestamp"])
        fresh = []
        for station, extensions in doc["stations"].items():
            for ext, point in extensions.items():
                measured = point.get("measuredAt")
                if measured and self._last_measured.get((station, ext)) != measured:
                    if (station, ext) in self._last_measured:  # the first sighting may be an old sample
                        fresh.append(_epoch(measured))
                    self._last_measured[(station, ext)] = measured
        self.new_samples[seq] = np.array(fresh)

    def histograms(self) -> tuple[dict[str, int], dict[str, int]]:
        """Lags from measurement, and from the tick that built the update, in 1 ms bins."""
        from_measured = np.zeros(MAX_LAG_MS + 1, dtype=np.int64)
        from_tick = np.zeros(MAX_LAG_MS + 1, dtype=np.int64)
        for seq, times in self.receipts.items():
            received = np.asarray(times)
            from_tick += _bins((received - self.built_at[seq]) * 1000)
            fresh = self.new_samples.get(seq)
            if fresh is not None and len(fresh):
                from_measured += _bins((received[:, None] - fresh[None, :]).ravel() * 1000)
        return _sparse(from_measured), _sparse(from_tick)


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _bins(lags_ms: np.ndarray) -> np.ndarray:
    return np.bincount(np.clip(lags_ms, 0, MAX_LAG_MS).astype(np.int64), minlength=MAX_LAG_MS + 1)


def _sparse(counts: np.ndarray) -> dict[str, int]:
    return {str(i): int(c) for i, c in enumerate(counts) if c}


async def ws_client(session: aiohttp.ClientSession, url: str, token: str, subscription: dict[str, Any],
                    rec: Recorder, compress: int) -> None:
    async with session.ws_connect(f"{url}/api/v1/ws", headers={"Authorization": f"Bearer {token}"},
                                  compress=compress, max_msg_size=0, decode_text=False) as ws:
        await ws.send_json({"event": "subscribe", "data": subscription})
        last: int | None = None
        head = len('{"event":"metrics-update","data":')
        async for msg in ws:
            now = time.time()
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            payload = msg.data  # bytes (decode_text=False): no decoding of 45 KB per message
            if payload.startswith(b'{"event":"metrics-update"'):
                last = rec.update(payload, head, last, now)
            if now >= rec.stop_at:
                break


async def sio_client(session: aiohttp.ClientSession, url: str, token: str, subscription: dict[str, Any],
                     rec: Recorder, compress: int) -> None:
    ws_url = f"{url}/socket.io/?EIO=4&transport=websocket"
    async with session.ws_connect(ws_url, compress=compress, max_msg_size=0, decode_text=False) as ws:
        opening = (await ws.receive()).data
        assert opening.startswith(b"0"), opening
        await ws.send_str("40" + json.dumps({"token": token}))
        await ws.send_str("42" + json.dumps(["subscribe", subscription]))
        last: int | None = None
        head = len('42["metrics-update",')
        async for msg in ws:
            now = time.time()
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            payload = msg.data
            if payload == b"2":
                await ws.send_str("3")  # Engine.IO pong
            elif payload.startswith(b'42["metrics-update"'):
                last = rec.update(payload, head, last, now)
            elif payload.startswith(b"44"):
                raise RuntimeError(f"connect refused: {payload[:300]!r}")
            if now >= rec.stop_at:
                break


async def main(args: argparse.Namespace) -> dict[str, Any]:
    rec = Recorder(args.start_at, args.stop_at)
    subscription = {"interval": args.interval, "compression": bool(args.compression)}
    client = ws_client if args.transport == "ws" else sio_client
    connector = aiohttp.TCPConnector(limit=0)
    errors: list[str] = []
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = []
        for n in range(args.clients):
            tasks.append(asyncio.create_task(client(session, args.url, args.token, subscription, rec, args.compress)))
            if n % 50 == 49:
                await asyncio.sleep(0.05)  # connect in waves, not 250 handshakes in one instant
        cpu_start = None
        while time.time() < args.start_at:
            await asyncio.sleep(0.05)
        cpu_start = time.process_time()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        cpu = time.process_time() - cpu_start
    for r in results:
        if isinstance(r, BaseException):
            errors.append(repr(r)[:200])
    from_measured, from_tick = rec.histograms()
    return {"clients": args.clients, "failed": len(errors), "errors": sorted(set(errors))[:5],
            "messages": rec.messages, "missed": rec.missed, "cpu_s": cpu, "hist": from_measured,
            "hist_tick": from_tick}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--transport", choices=("ws", "sio"), default="ws")
    p.add_argument("--interval", type=int, default=150)
    p.add_argument("--compression", type=int, default=0, help="subscribe with compression: true")
    p.add_argument("--compress", type=int, default=0, help="offer permessage-deflate (window bits; 0: no)")
    p.add_argument("--start-at", type=float, required=True)
    p.add_argument("--stop-at", type=float, required=True)
    return p.parse_args(argv)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parse_args(sys.argv[1:])))))
