"""Serving prebuilt bytes: ETag / If-None-Match -> 304, gzip when the client accepts it."""
from __future__ import annotations

from aiohttp import web

from controller.live.snapshot import Rendered


def accepts_gzip(header: str) -> bool:
    """True unless the client did not list gzip (or `*`) or gave it q=0."""
    for part in header.split(","):
        name, _, params = part.strip().partition(";")
        if name.strip().lower() in ("gzip", "*"):
            q = params.strip().lower()
            return not (q.startswith("q=") and _q_is_zero(q[2:]))
    return False


def _q_is_zero(text: str) -> bool:
    try:
        return float(text) == 0
    except ValueError:
        return False


def etag_matches(header: str, etag: str) -> bool:
    """Weak comparison (RFC 9110): W/ prefixes and our -gzip suffix do not matter."""
    if header.strip() == "*":
        return True
    base = etag.strip('"')
    for tag in header.split(","):
        tag = tag.strip().removeprefix("W/").strip('"').removesuffix("-gzip")
        if tag == base:
            return True
    return False


def serve(request: web.Request, rendered: Rendered) -> web.Response:
    use_gzip = accepts_gzip(request.headers.get("Accept-Encoding", ""))
    # The gzip body is another representation, so it gets its own (related) validator.
    etag = f'{rendered.etag[:-1]}-gzip"' if use_gzip else rendered.etag
    headers = {"ETag": etag, "Vary": "Accept-Encoding", "Cache-Control": "no-cache"}
    if etag_matches(request.headers.get("If-None-Match", ""), rendered.etag):
        return web.Response(status=304, headers=headers)
    if use_gzip:
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=rendered.gzipped if use_gzip else rendered.body,
                        content_type="application/json", headers=headers)
