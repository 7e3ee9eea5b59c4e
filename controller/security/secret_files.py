"""Shared secrets kept in files: created once with 32 random bytes, readable by their owner only."""
from __future__ import annotations

import os
import secrets
from pathlib import Path

from shared.atomic_file import atomic_write


class SecretError(Exception):
    """A secret file that cannot be read or is unusable; the message names the file."""


def load_or_create(path: Path) -> bytes:
    """The secret in `path`, created (0600, in a 0700 folder) when it does not exist yet."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(path, (secrets.token_hex(32) + "\n").encode(), mode=0o600)
    return load(path)


def load(path: Path) -> bytes:
    """The secret in `path` (surrounding whitespace removed), refusing an empty or short one."""
    try:
        value = path.read_bytes().strip()
    except OSError as exc:
        raise SecretError(f"cannot read secret file {path}: {exc.strerror}") from None
    if len(value) < 32:
        raise SecretError(f"secret file {path} holds {len(value)} bytes; use at least 32 "
                          "(delete it and the controller creates a new one)")
    if os.name == "posix" and path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)  # a secret readable by others is tightened rather than refused
    return value
