"""The one error envelope: `{"error": {"code", "message", "details": [{"field", "problem"}]}}`."""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from aiohttp import web

CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
         405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
         415: "unsupported_media_type", 429: "rate_limited", 500: "internal_error", 503: "not_ready"}


class ApiError(Exception):
    """Raised by handlers for any answer that is not a success; the middleware renders it."""

    def __init__(self, status: int, message: str, details: Iterable[Mapping[str, str]] = (),
                 code: str | None = None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or CODES.get(status, "error")
        self.message = message
        self.details = [dict(d) for d in details]
        self.headers = dict(headers) if headers else None


def error_response(status: int, code: str, message: str, details: Iterable[Mapping[str, str]] = (),
                   headers: Mapping[str, str] | None = None, **extra: str) -> web.Response:
    doc = {"error": {"code": code, "message": message, "details": [dict(d) for d in details], **extra}}
    return web.Response(status=status, body=json.dumps(doc).encode(), content_type="application/json",
                        headers=headers)


def json_response(doc: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(doc, separators=(",", ":")).encode(),
                        content_type="application/json")


async def read_json_object(request: web.Request) -> dict:
    """The request body as a JSON object, or an ApiError 400 saying what is wrong with it."""
    raw = await request.read()
    if not raw.strip():
        raise ApiError(400, "the request body is empty; send a JSON object",
                       [{"field": "body", "problem": "empty"}])
    try:
        doc = json.loads(raw)
    except UnicodeDecodeError:
        raise ApiError(400, "the request body is not UTF-8 text", [{"field": "body", "problem": "not UTF-8"}]) from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, "the request body is not valid JSON",
                       [{"field": "body", "problem": f"{exc.msg} at line {exc.lineno} column {exc.colno}"}]) from None
    except RecursionError:
        raise ApiError(400, "the request body nests too deeply", [{"field": "body", "problem": "too deep"}]) from None
    except ValueError as exc:  # an integer literal over Python's 4300-digit conversion limit
        raise ApiError(400, "the request body holds a number too long to read",
                       [{"field": "body", "problem": str(exc).split(";")[0]}]) from None
    if not isinstance(doc, dict):
        kind = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
        raise ApiError(400, "the request body must be a JSON object",
                       [{"field": "body", "problem": f"expected an object, got {kind.get(type(doc), 'null')}"}])
    return doc
