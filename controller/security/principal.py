"""Roles, permissions and the authenticated caller (`Principal`) with its station scope."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum


class Permission(str, Enum):
    """The plan's permission strings, as they appear in a token's `permissions` claim."""
    READ_METRICS = "read:metrics"
    WRITE_KNOBS = "write:knobs"
    EXECUTE_OPTIMIZATION = "execute:optimization"
    MANAGE_ALERTS = "manage:alerts"
    MANAGE_TEMPLATES = "manage:templates"
    ADMIN = "admin"


P = Permission
ROLES: dict[str, frozenset[Permission]] = {
    "viewer": frozenset({P.READ_METRICS}),
    "operator": frozenset({P.READ_METRICS, P.WRITE_KNOBS, P.EXECUTE_OPTIMIZATION, P.MANAGE_ALERTS}),
    "admin": frozenset(P),
}
ALL_STATIONS = "*"  # the `stations` claim value for a token that is not limited to some stations


class UnknownRole(ValueError):
    pass


def permissions_of(role: str) -> frozenset[Permission]:
    try:
        return ROLES[role]
    except KeyError:
        raise UnknownRole(f"unknown role {role!r}; known: {', '.join(ROLES)}") from None


@dataclass(frozen=True)
class Principal:
    """The caller of one request, as its verified token describes it.

    Permissions are the role's, narrowed by the token's `permissions` claim when it lists
    fewer: a token can give up rights its role has, never gain rights its role lacks.
    `stations` is None for every station, else the set the token may see and touch.
    """
    subject: str
    role: str
    permissions: frozenset[Permission]
    stations: frozenset[str] | None
    expires_at: float
    # The permission strings this principal holds (admin expanded): `can` runs on every request,
    # and a str hash is cached while an Enum member's hash is a Python-level call.
    granted: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        held = set(Permission) if Permission.ADMIN in self.permissions else self.permissions
        object.__setattr__(self, "granted", frozenset(p.value for p in held))

    @classmethod
    def from_claims(cls, sub: str, role: str, claimed: Iterable[str] | None, stations: Iterable[str] | None,
                    exp: float) -> Principal:
        allowed = permissions_of(role)
        if claimed is not None:
            allowed = allowed & {p for p in Permission if p.value in set(claimed)}
        scope = None if stations is None or ALL_STATIONS in stations else frozenset(stations)
        return cls(sub, role, allowed, scope, float(exp))

    def can(self, permission: Permission) -> bool:
        return permission._value_ in self.granted

    def sees(self, station: str) -> bool:
        return self.stations is None or station in self.stations

    def unseen(self, stations: Iterable[str]) -> list[str]:
        """The stations among `stations` this principal may not see, in the given order."""
        return [] if self.stations is None else [s for s in stations if s not in self.stations]


# The caller when `auth = false`: every right, every station (benchmarks and local experiments only).
ANONYMOUS_ADMIN = Principal("anonymous", "admin", frozenset(Permission), None, float("inf"))
