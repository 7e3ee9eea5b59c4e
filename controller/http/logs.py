"""Structured JSON logs in the plan's format, with the current request's trace and span ids."""
from __future__ import annotations

import contextvars
import json
import logging
import random
import re
import sys
from collections.abc import Mapping
from typing import Any

from controller.clock import iso_ms

SERVICE = "tpmon-controller"
trace_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace_id", default=None)
span_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("span_id", default=None)

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, service, traceId, spanId, message, metadata."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "timestamp": iso_ms(record.created),
            "level": record.levelname,
            "service": SERVICE,
            "traceId": trace_id.get(),
            "spanId": span_id.get(),
            "message": record.getMessage(),
            "metadata": {"logger": record.name, **getattr(record, "metadata", {})},
        }
        if record.exc_info:
            doc["metadata"]["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, separators=(",", ":"))


def configure(level: str, stream: Any = None) -> None:
    """Route every `tpmon.*` and aiohttp record through the JSON formatter."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def incoming_trace_id(headers: Mapping[str, str]) -> str:
    """The caller's trace id (W3C traceparent, else X-Request-Id when it is sane), or a new one."""
    match = _TRACEPARENT.match(headers.get("traceparent", "").strip().lower())
    if match and match.group(1) != "0" * 32:
        return match.group(1)
    request_id = headers.get("X-Request-Id", "").strip()
    if _REQUEST_ID.match(request_id):
        return request_id
    return f"{random.getrandbits(128):032x}"


def new_span_id() -> str:
    # Correlation ids, not secrets: the PRNG avoids a getrandom syscall per request.
    return f"{random.getrandbits(64):016x}"
