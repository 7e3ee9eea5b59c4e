"""Security headers on every response and CORS for a configured whitelist of exact origins."""
from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from aiohttp import web
from multidict import CIMultiDict

from controller.http.errors import error_response
from shared.config import ConfigError

# A JSON API loads nothing and is framed by nothing: the strictest policy costs no feature.
CONTENT_SECURITY_POLICY = "default-src 'none'; frame-ancestors 'none'"
# One year, the usual preload-list minimum. No includeSubDomains: the controller's host name
# says nothing about which sibling hosts serve HTTPS, and HSTS cannot be taken back quickly.
HSTS = "max-age=31536000"
ALLOW_METHODS = "GET, POST, PUT, DELETE"
ALLOW_HEADERS = ("Authorization, Content-Type, If-None-Match, "
                 "X-Tpmon-Timestamp, X-Tpmon-Nonce, X-Tpmon-Signature, X-Trace-Id")
# Browsers hide every response header outside the CORS safelist unless it is exposed.
EXPOSE_HEADERS = "ETag, Retry-After, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, X-Trace-Id"
PREFLIGHT_MAX_AGE_S = 600  # a browser asks again every 10 minutes per URL: negligible load


class SecurityHeaders:
    """Adds the fixed security headers and, for whitelisted origins, CORS headers.

    Everything is built once here, so `apply` is one multidict update on the common path
    (about 0.3 us; the snapshot endpoint's whole budget is a few microseconds). Credentials
    are bearer tokens, not cookies, so Access-Control-Allow-Credentials is never sent.
    """

    def __init__(self, cors_origins: Iterable[str], hsts: bool = False) -> None:
        self.cors_origins = frozenset(_checked_origin(o) for o in cors_origins)
        base = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff",
                "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"}
        if hsts:  # only over TLS: browsers ignore it on plain HTTP, and it would promise HTTPS we lack
            base["Strict-Transport-Security"] = HSTS
        self._base = CIMultiDict(base)
        self._cors = {origin: CIMultiDict({"Access-Control-Allow-Origin": origin,
                                           "Access-Control-Expose-Headers": EXPOSE_HEADERS})
                      for origin in self.cors_origins}
        self._preflight = CIMultiDict({"Access-Control-Allow-Methods": ALLOW_METHODS,
                                       "Access-Control-Allow-Headers": ALLOW_HEADERS,
                                       "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_S)})

    def apply(self, request: web.Request, response: web.StreamResponse) -> None:
        """Add the security headers (and CORS headers for a whitelisted Origin) to `response`."""
        headers = response.headers
        headers.update(self._base)
        if self._cors:
            # With a whitelist, every answer depends on Origin (allowed ones carry CORS headers),
            # so shared caches must key on it even for a request without one.
            vary = headers.get("Vary")
            headers["Vary"] = f"{vary}, Origin" if vary else "Origin"
            cors = self._cors.get(request.headers.get("Origin", ""))
            if cors is not None:
                headers.update(cors)

    def preflight(self, request: web.Request) -> web.Response:
        """Answer an OPTIONS preflight: 204 with CORS headers for a whitelisted origin, else 403.

        Allow-Origin and Vary are not set here: the middleware calls `apply` on this
        response as on every other, and that adds them.
        """
        origin = request.headers.get("Origin")
        if origin is not None and origin in self.cors_origins:
            return web.Response(status=204, headers=self._preflight)
        if origin is None:
            message = "OPTIONS is answered only as a CORS preflight, and this request has no Origin header"
            problem = "missing"
        else:  # the whitelist itself is not listed: it is the operator's business, not the caller's
            message = (f"origin {origin} may not call this API from a browser: "
                       "it is not in the controller setting cors_origins")
            problem = "not in cors_origins"
        return error_response(403, "forbidden", message, [{"field": "Origin", "problem": problem}])


def _checked_origin(origin: str) -> str:
    """`origin` if a browser could send it as is; else a ConfigError suggesting the origin meant.

    Browsers send `scheme://host[:port]` in lower case with no path and no default port, and
    matching is exact:
    an entry such as "https://Ops.example.org/" would silently never match.
    """
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"[controller] cors_origins entry {origin!r} is not an origin like \"https://ops.example.org\"")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname  # IPv6 literal
    default_port = 443 if parts.scheme == "https" else 80  # browsers leave the default port out
    meant = f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, default_port) else "")
    if origin != meant:
        raise ConfigError(f"[controller] cors_origins entry {origin!r} is not an origin as browsers send it "
                          f"(scheme://host[:port], lower case, no path): did you mean {meant!r}?")
    return origin
