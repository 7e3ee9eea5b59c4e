"""Tokens for tests: minted with the secret a controller under test created in its data folder."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from controller.security import secret_files
from controller.security.tokens import TokenKeys, mint


def token_for(data_dir: Path | str, role: str = "admin", stations: Iterable[str] | None = None,
              subject: str | None = None, ttl_s: float = 3600, **kwargs) -> str:
    secret = secret_files.load(Path(data_dir) / "secrets" / "jwt.secret")
    return mint(TokenKeys.from_files("HS256", secret), subject or f"test-{role}", role, stations, ttl_s, **kwargs)


def bearer(data_dir: Path | str, role: str = "admin", stations: Iterable[str] | None = None, **kwargs) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(data_dir, role, stations, **kwargs)}"}
