"""Replacing a file so that a crash at any moment leaves the previous or the new content."""
from __future__ import annotations

import os
from pathlib import Path


def temp_path(path: Path) -> Path:
    """The sibling a write goes through first (per process, so two writers never share one)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Temp file, fsync, rename over `path`, fsync the directory (so the rename survives power loss).

    `mode` applies from the moment the temp file exists, so a secret is never readable by others.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_leftovers(path: Path) -> None:
    """Delete temp files of writes that a crash interrupted before their rename."""
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        leftover.unlink(missing_ok=True)
