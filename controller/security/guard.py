"""Admission of one API request: authenticate, rate-limit, authorize, verify a signature.

The order matters: a request with no valid token is refused before it can spend anyone's
budget but still spends its address's (so guessing tokens is rate-limited too); permissions
are checked before a signature so an unauthorized caller learns nothing about signing.
Every refusal is an ApiError with the reason and is written to the audit log.
"""
from __future__ import annotations

from aiohttp import web

from controller.http import logs
from controller.http.endpoint import Endpoint
from controller.http.errors import ApiError
from controller.security.audit import AuditLog
from controller.security.principal import ANONYMOUS_ADMIN, Principal
from controller.security.ratelimit import RateLimiter
from controller.security.signing import RequestVerifier, SignatureRejected
from controller.security.tokens import TokenRejected, TokenVerifier

PRINCIPAL = web.RequestKey("principal", Principal)
RATE_HEADERS = web.RequestKey("ratelimit_headers", dict)


class Guard:
    def __init__(self, verifier: TokenVerifier | None, limiter: RateLimiter, signatures: RequestVerifier,
                 audit: AuditLog) -> None:
        self.verifier = verifier  # None: auth is off (settings.auth = false)
        self.limiter = limiter
        self.signatures = signatures
        self.audit = audit

    def admit(self, request: web.Request, endpoint: Endpoint) -> Principal | None:
        """The caller of an endpoint that needs one, or None for an open endpoint; raise ApiError to refuse.

        Synchronous (no coroutine per request on the snapshot path); a signed endpoint's
        signature is checked after this by `verify_signature`, which has to read the body.
        """
        if endpoint.permission is None:
            return None
        principal = self._authenticate(request)
        self._spend(request, principal, endpoint)
        if not principal.can(endpoint.permission):
            self._refuse(request, principal.subject, "authz.denied", 403,
                         f"role {principal.role} lacks the {endpoint.permission.value} permission",
                         "permission")
        request[PRINCIPAL] = principal
        return principal

    def _authenticate(self, request: web.Request) -> Principal:
        if self.verifier is None:
            return ANONYMOUS_ADMIN
        header = request.headers.get("Authorization", "")
        if not header:
            self._unauthenticated(request, "missing Authorization header; send 'Authorization: Bearer <token>' "
                                           "(mint one with `tpmon token`)")
        try:
            return self.verifier.verify_header(header)
        except TokenRejected as exc:
            self._unauthenticated(request, str(exc))
        raise AssertionError("unreachable")

    def _unauthenticated(self, request: web.Request, reason: str) -> None:
        client = client_address(request)
        decision = self.limiter.check(client, write=False)  # failed attempts spend the address's budget
        if not decision.allowed:
            self.audit.record("rate_limited", who=client, what=f"{request.method} {request.path}", where=client,
                              trace=logs.trace_id.get() or "", outcome="refused", limit=decision.limit,
                              reason="unauthenticated requests")
            raise ApiError(429, "too many requests; retry later", headers=decision.headers())
        self._refuse(request, client, "auth.failure", 401, reason, "Authorization",
                     headers={"WWW-Authenticate": 'Bearer realm="tpmon"'})

    def _spend(self, request: web.Request, principal: Principal, endpoint: Endpoint) -> None:
        # With auth off every caller is the same anonymous admin: budget them by address instead.
        client = principal.subject if self.verifier is not None else client_address(request)
        decision = self.limiter.check(client, write=endpoint.write)
        request[RATE_HEADERS] = decision.headers()  # sent on the response too, as the draft suggests
        if not decision.allowed:
            kind = "write " if endpoint.write and decision.limit == self.limiter.writes_per_minute else ""
            self.audit.record("rate_limited", who=principal.subject, what=f"{request.method} {request.path}",
                              where=client_address(request), trace=logs.trace_id.get() or "",
                              outcome="refused", limit=decision.limit)
            raise ApiError(429, f"{kind}rate limit of {decision.limit} requests per minute reached; "
                                f"retry in {decision.retry_after_s} s", headers=decision.headers())

    async def verify_signature(self, request: web.Request, principal: Principal) -> None:
        body = await request.read()
        try:
            self.signatures.verify(request.method, request.raw_path, request.headers, body)  # target as sent
        except SignatureRejected as exc:
            self._refuse(request, principal.subject, "signature.failure", 401, str(exc), "signature")

    def _refuse(self, request: web.Request, who: str, event: str, status: int, reason: str, field: str,
                headers: dict[str, str] | None = None) -> None:
        self.audit.record(event, who=who, what=f"{request.method} {request.path}", where=client_address(request),
                          trace=logs.trace_id.get() or "", outcome="refused", reason=reason)
        raise ApiError(status, reason, [{"field": field, "problem": reason}], headers=headers)


def client_address(request: web.Request) -> str:
    return request.remote or "unknown"


def principal_of(request: web.Request) -> Principal:
    """The caller admitted by the guard (every endpoint with a permission has one)."""
    return request[PRINCIPAL]
