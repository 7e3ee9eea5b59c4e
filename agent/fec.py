"""XOR forward error correction (RFC 5109 style, one parity packet per group of equal-size media payloads)."""
from __future__ import annotations

from collections.abc import Iterable


def xor_parity(payloads: Iterable[bytes]) -> bytes:
    """The parity payload of a group: the XOR of its members' payloads (all of one size)."""
    acc, size = 0, 0
    for p in payloads:
        acc ^= int.from_bytes(p, "little")
        size = len(p)
    return acc.to_bytes(size, "little")


def xor_recover(parity: bytes, others: Iterable[bytes]) -> bytes:
    """The one missing member's payload from the parity payload and every other member's."""
    acc = int.from_bytes(parity, "little")
    for p in others:
        acc ^= int.from_bytes(p, "little")
    return acc.to_bytes(len(parity), "little")
