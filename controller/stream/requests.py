"""What a streaming client may ask, the same over Socket.IO and plain WebSocket; handlers in a table.

- `subscribe` {id?, stations?, metrics?, interval?, compression?, events?} -> `subscribed` {id, stations,
  metrics, interval, compression, events}
- `unsubscribe` {id?} (no id: all) -> `unsubscribed` {ids}
- `ping` (any data) -> `pong` (the same data): a keep-alive browsers can send themselves
Any refusal is an `error` event {code, message, details: [{field, problem}], request}; the
connection stays open. Each request spends one request of the client's rate budget.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from controller.security.guard import Guard
from controller.stream.admission import spend_message
from controller.stream.client import StreamClient
from controller.stream.hub import StreamHub
from controller.stream.subscriptions import StreamError

log = logging.getLogger("tpmon.controller.stream")

Reply = tuple[str, Any]
Handler = Callable[[StreamHub, StreamClient, Any], Reply]


def _subscribe(hub: StreamHub, client: StreamClient, data: Any) -> Reply:
    return "subscribed", hub.subscribe(client, data)


def _unsubscribe(hub: StreamHub, client: StreamClient, data: Any) -> Reply:
    return "unsubscribed", hub.unsubscribe(client, data)


def _ping(hub: StreamHub, client: StreamClient, data: Any) -> Reply:
    return "pong", data


HANDLERS: dict[str, Handler] = {"subscribe": _subscribe, "unsubscribe": _unsubscribe, "ping": _ping}


def handle(hub: StreamHub, guard: Guard, client: StreamClient, event: Any, data: Any) -> Reply:
    """Answer one request; the reply is also queued to the client, in order with its stream."""
    handler = HANDLERS.get(event) if isinstance(event, str) else None
    try:
        if handler is None:
            raise StreamError("unknown_request", f"unknown request {event!r}; send one of {', '.join(HANDLERS)}",
                              [{"field": "event", "problem": "unknown"}])
        refused = spend_message(guard, client.principal, client.conn.address)
        if refused is not None:
            raise StreamError("rate_limited", refused)
        reply = handler(hub, client, data)
    except StreamError as exc:
        if exc.code == "forbidden":
            guard.audit.record("authz.denied", who=client.principal.subject, what=f"stream {event}",
                               where=client.conn.address, trace="", outcome="refused", reason=exc.message)
        reply = ("error", exc.to_json(event if isinstance(event, str) else None))
    except Exception:  # a defect of ours: the client is told, the connection and the others go on
        log.exception("stream request %r failed", event)
        reply = ("error", {"code": "internal_error", "message": "the request failed on the controller; it is logged",
                           "details": [], "request": event if isinstance(event, str) else None})
    hub.reply(client, *reply)
    return reply
