"""A TinyDB document file written crash-safely on one writer thread (thresholds, alerts, templates …).

TinyDB rewrites its whole file on every change; AtomicJSONStorage makes that a temporary
file, fsync and rename, so a kill -9 leaves the previous or the new file. Reads come from
the caller's own in-memory state (loaded once by `load`); every change goes through `write`,
which runs on this file's single writer thread so the event loop never waits on a disk and
writes stay in order. One file per concern keeps each rewrite small.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from tinydb import TinyDB
from tinydb.storages import Storage

from shared.atomic_file import atomic_write, remove_leftovers
from shared.config import ConfigError

T = TypeVar("T")


class AtomicJSONStorage(Storage):
    """TinyDB storage that replaces the whole file atomically on every write.

    TinyDB's JSONStorage truncates and rewrites in place, so a crash mid-write leaves a
    torn file. Here a reader (or a restarted controller) sees either the previous or the
    new complete file: write a sibling temp file, fsync it, rename over the target, then
    fsync the directory so the rename itself survives a power cut.
    """

    def __init__(self, path: str | Path, **_: Any) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(self.path)

    def read(self) -> dict[str, Any] | None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        if not text.strip():
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config store {self.path} is not valid JSON ({exc}); "
                              "restore it from a backup or remove it to start from defaults") from None

    def write(self, data: dict[str, Any]) -> None:
        atomic_write(self.path, json.dumps(data, separators=(",", ":")).encode())

    def close(self) -> None:
        pass


class DocumentFile:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db: TinyDB | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def is_open(self) -> bool:
        return self._db is not None

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"tpmon-{self.path.stem}")
        await asyncio.get_running_loop().run_in_executor(self._executor, self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = TinyDB(self.path, storage=AtomicJSONStorage)

    async def load(self, read: Callable[[TinyDB], T]) -> T:
        """Run `read(db)` on the writer thread (at start, to fill the caller's memory)."""
        return await self._run(read)

    async def write(self, change: Callable[[TinyDB], T]) -> T:
        """Run `change(db)` on the writer thread; returns once it is on disk (or raises)."""
        return await self._run(change)

    async def _run(self, fn: Callable[[TinyDB], T]) -> T:
        if self._db is None or self._executor is None:
            raise RuntimeError(f"{self.path.name} is not open")
        db = self._db
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, db)

    async def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)  # pending writes finish first
            self._executor = None
        if self._db is not None:
            self._db.close()
            self._db = None
