"""Admission of a streaming connection: the same tokens, permission, rate budget and audit as the HTTP guard.

A socket is authenticated once, when it connects (Socket.IO: the `auth` payload, `?token=`
or an Authorization header; /api/v1/ws: the header, `?token=`, or a first `auth` message,
since browsers cannot set headers on a WebSocket). Every attempt spends one request of the
client's budget (an address's when the token is missing or bad, as on HTTP); every refusal
is written to the audit log with its reason and answered with it.
"""
from __future__ import annotations

from collections.abc import Mapping

from controller.security.audit import AuditLog
from controller.security.guard import Guard
from controller.security.principal import ANONYMOUS_ADMIN, Permission, Principal
from controller.security.tokens import TokenRejected

STATUS_CODES = {401: "unauthorized", 403: "forbidden", 429: "rate_limited"}


class StreamRefused(Exception):
    """The connection is refused; `status` is the HTTP status it would have, `message` the reason."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = STATUS_CODES.get(status, "refused")
        self.message = message
        self.headers = dict(headers) if headers else None

    def to_json(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message, "details": [{"field": "token", "problem": self.message}]}


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` value, None when there is none."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else authorization


def admit(guard: Guard, audit: AuditLog, token: str | None, address: str, what: str, trace: str = "") -> Principal:
    """The principal of a connection attempt, or StreamRefused (audited) with the reason."""
    if guard.verifier is None:  # auth = false: everyone is the anonymous admin, budgeted by address
        _spend(guard, audit, address, address, what, trace)
        return ANONYMOUS_ADMIN
    if not token:
        _refuse_unauthenticated(guard, audit, address, what, trace,
                                "missing token: send it in the Socket.IO auth payload ({token}), as ?token=, "
                                "in an Authorization: Bearer header, or (WebSocket) as the first message "
                                "{\"event\": \"auth\", \"data\": {\"token\": ...}}; mint one with `tpmon token`")
    try:
        principal = guard.verifier.verify(token)  # type: ignore[arg-type]
    except TokenRejected as exc:
        _refuse_unauthenticated(guard, audit, address, what, trace, str(exc))
        raise AssertionError("unreachable") from None
    _spend(guard, audit, principal.subject, address, what, trace)
    if not principal.can(Permission.READ_METRICS):
        reason = f"role {principal.role} lacks the read:metrics permission"
        audit.record("authz.denied", who=principal.subject, what=what, where=address, trace=trace,
                     outcome="refused", reason=reason)
        raise StreamRefused(403, reason)
    return principal


def _refuse_unauthenticated(guard: Guard, audit: AuditLog, address: str, what: str, trace: str, reason: str) -> None:
    decision = guard.limiter.check(address, write=False)  # failed attempts spend the address's budget
    if not decision.allowed:
        audit.record("rate_limited", who=address, what=what, where=address, trace=trace, outcome="refused",
                     limit=decision.limit, reason="unauthenticated requests")
        raise StreamRefused(429, f"too many attempts; retry in {decision.retry_after_s} s", decision.headers())
    audit.record("auth.failure", who=address, what=what, where=address, trace=trace, outcome="refused", reason=reason)
    raise StreamRefused(401, reason, {"WWW-Authenticate": 'Bearer realm="tpmon"'})


def _spend(guard: Guard, audit: AuditLog, client: str, address: str, what: str, trace: str) -> None:
    decision = guard.limiter.check(client, write=False)
    if not decision.allowed:
        audit.record("rate_limited", who=client, what=what, where=address, trace=trace, outcome="refused",
                     limit=decision.limit)
        raise StreamRefused(429, f"rate limit of {decision.limit} requests per minute reached; "
                                 f"retry in {decision.retry_after_s} s", decision.headers())


def spend_message(guard: Guard, principal: Principal, address: str) -> str | None:
    """A client message (subscribe, unsubscribe, ping) spends one request; the refusal text when over budget."""
    client = principal.subject if guard.verifier is not None else address
    decision = guard.limiter.check(client, write=False)
    if decision.allowed:
        return None
    return f"rate limit of {decision.limit} requests per minute reached; retry in {decision.retry_after_s} s"


def origin_allowed(origin: str | None, scheme: str, host: str, cors_origins: tuple[str, ...]) -> bool:
    """A browser's Origin may open a socket: the controller's own origin or a cors_origins entry (no Origin: not a browser)."""
    return origin is None or origin == f"{scheme}://{host}" or origin in cors_origins
