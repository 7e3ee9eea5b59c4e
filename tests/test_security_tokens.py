"""TokenVerifier and mint in isolation: claims, the cache, expiry on an injected clock."""
from __future__ import annotations

import pytest

from controller.security.principal import Permission, Principal, UnknownRole
from controller.security.tokens import LEEWAY_S, TokenKeys, TokenRejected, TokenVerifier, mint

KEYS = TokenKeys.from_files("HS256", b"k" * 64)
NOW = 1_800_000_000.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_minted_token_round_trips_with_the_plans_claims():
    token = mint(KEYS, "user_123", "operator", ["Station-1", "Station-2"], 3600, now=NOW)
    p = TokenVerifier(KEYS, Clock(NOW + 10)).verify(token)
    assert p == Principal("user_123", "operator", frozenset({Permission.READ_METRICS, Permission.WRITE_KNOBS,
                                                             Permission.EXECUTE_OPTIMIZATION,
                                                             Permission.MANAGE_ALERTS}),
                          frozenset({"Station-1", "Station-2"}), NOW + 3600)
    assert p.sees("Station-1") and not p.sees("Station-3") and p.unseen(["Station-3", "Station-1"]) == ["Station-3"]


def test_a_cached_token_still_expires():
    clock = Clock(NOW)
    verifier = TokenVerifier(KEYS, clock)
    token = mint(KEYS, "a", "viewer", None, 60, now=NOW)
    assert verifier.verify(token).stations is None
    clock.now = NOW + 60 + LEEWAY_S - 0.5
    assert verifier.verify(token).subject == "a"
    clock.now = NOW + 60 + LEEWAY_S + 0.1
    with pytest.raises(TokenRejected, match="expired"):
        verifier.verify(token)
    with pytest.raises(TokenRejected, match="expired"):  # and again once it has left the cache
        verifier.verify(token)


def test_admin_holds_every_permission_and_viewer_only_reading():
    admin = Principal.from_claims("a", "admin", None, ["*"], NOW)
    viewer = Principal.from_claims("v", "viewer", None, ["*"], NOW)
    assert all(admin.can(p) for p in Permission)
    assert viewer.can(Permission.READ_METRICS) and not viewer.can(Permission.WRITE_KNOBS)


def test_mint_refuses_unknown_roles_and_permissions():
    with pytest.raises(UnknownRole):
        mint(KEYS, "a", "root")
    with pytest.raises(ValueError, match="unknown permission"):
        mint(KEYS, "a", "admin", permissions=["fly"])


def test_asymmetric_keys_without_a_private_key_cannot_mint(tmp_path):
    keys = TokenKeys("ES256", "-----BEGIN PUBLIC KEY-----", None)
    with pytest.raises(ValueError, match="private key"):
        mint(keys, "a", "viewer")
