"""The OpenAPI 3.1 document, generated from the Endpoint declarations and the pydantic models they name.

Nothing here is written per route: parameters come from the query and path models, bodies
and answers from the models (`components.schemas`, pydantic's JSON Schema with refs), the
error answers from what the declaration implies (400 for any input, 401/403/429 for a
permission, 413 for a body, 304 for `cached`), security and rate-limit headers from the
permission, signature headers from `signed`. Routes served at `/api/` as well as
`/api/v1/` appear under both paths (the alias's operationId ends in `_plan`).
"""
from __future__ import annotations

import inspect
import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, models_json_schema

from controller.http.endpoint import Endpoint, paths_of
from controller.http.models import ErrorEnvelope
from controller.live.snapshot import Rendered, render
from controller.security.principal import ROLES, Permission
from controller.security.signing import NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER
from shared.version import VERSION

OPENAPI_VERSION = "3.1.0"
SCHEMAS = "#/components/schemas/"
ERROR_REF = {"$ref": SCHEMAS + "ErrorEnvelope"}

# The error answers, each documented once in components.responses.
ERRORS: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "Bad input: a malformed or invalid body, an unknown, repeated or invalid query parameter. "
                        "`details` lists every field at fault; nothing was changed."),
    401: ("Unauthorized", "No valid bearer token (missing, malformed, expired, forged, wrong algorithm), or a "
                          "missing, stale, replayed or wrong signature on a signed request. `message` says which."),
    403: ("Forbidden", "The token's role lacks the operation's permission, or the request names a station "
                       "outside the token's `stations`."),
    404: ("NotFound", "An unknown station or extension (the message names it and the known ones)."),
    409: ("Conflict", "The request conflicts with the current state."),
    413: ("PayloadTooLarge", "The request body is larger than max_body_bytes."),
    429: ("RateLimited", "The client's request or write budget is spent; retry after Retry-After seconds."),
    503: ("NotReady", "The controller cannot serve this now."),
}
HEADERS: dict[str, dict[str, Any]] = {
    "X-Trace-Id": {"description": "Trace id of this request (the X-Request-Id or traceparent sent, else a new one)",
                   "schema": {"type": "string"}},
    "RateLimit-Limit": {"description": "Requests per minute of the budget closer to running out",
                        "schema": {"type": "integer", "minimum": 1}},
    "RateLimit-Remaining": {"description": "Requests left in that budget", "schema": {"type": "integer", "minimum": 0}},
    "RateLimit-Reset": {"description": "Seconds until that budget is whole again",
                        "schema": {"type": "integer", "minimum": 0}},
    "Retry-After": {"description": "Whole seconds to wait before retrying", "required": True,
                    "schema": {"type": "integer", "minimum": 1}},
    "ETag": {"description": "Validator of this representation; send it back in If-None-Match", "required": True,
             "schema": {"type": "string"}},
}
RATE_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")
SIGNATURE_PARAMETERS = [
    (TIMESTAMP_HEADER, "Unix seconds when the request was signed (refused beyond signature_max_age_s)",
     r"^[0-9]{1,12}$"),
    (NONCE_HEADER, "A new random value per request (16-64 of A-Z a-z 0-9 _ -); a replay is refused",
     r"^[A-Za-z0-9_-]{16,64}$"),
    (SIGNATURE_HEADER, "HMAC-SHA256 (hex) of method, target, timestamp, nonce and body SHA-256; see `tpmon sign`",
     r"^[0-9a-fA-F]{64}$"),
]


class _Schemas(GenerateJsonSchema):
    """pydantic's JSON Schema without a title on every field (the property name says it)."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def build_document(endpoints: Iterable[Endpoint], max_body_bytes: int) -> dict[str, Any]:
    """The whole document for these endpoints (in declaration order)."""
    endpoints = list(endpoints)
    components = _component_schemas(endpoints)
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        for n, path in enumerate(paths_of(endpoint)):
            operation = _operation(endpoint, components, alias=n > 0)
            paths.setdefault(path, {})[endpoint.method.lower()] = operation
    tags = sorted({tag for e in endpoints for tag in e.tags})
    return _tidy({
        "openapi": OPENAPI_VERSION,
        "info": {"title": "tpmon controller API", "version": VERSION,
                 "description": _overview(max_body_bytes)},
        "servers": [{"url": "/"}],
        "tags": [{"name": tag} for tag in tags],
        "paths": paths,
        "components": {
            "schemas": components["schemas"],
            "responses": {name: {"description": text, "headers": _headers(status),
                                 "content": {"application/json": {"schema": ERROR_REF}}}
                          for status, (name, text) in ERRORS.items()},
            "headers": HEADERS,
            "securitySchemes": {"bearerAuth": {
                "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": "A JWT with the claims sub, role (viewer | operator | admin), permissions, stations, "
                               "iat and exp; mint one with `tpmon token`."}},
        },
    })


class ApiDocument:
    """The rendered document (bytes, gzip, ETag), built once when every area has declared its routes."""

    def __init__(self) -> None:
        self.rendered: Rendered | None = None

    def build(self, endpoints: Iterable[Endpoint], max_body_bytes: int, built_at: float) -> Rendered:
        self.rendered = render(build_document(endpoints, max_body_bytes), built_at)
        return self.rendered


def _overview(max_body_bytes: int) -> str:
    return inspect.cleandoc(f"""
        Monitoring and tuning of the speech translation pipeline: Station-1 … Station-N × extensions 3333/4444.
        Every path under `/api/v1/` is also served under `/api/` (operations ending in `_plan`)
        for clients written against the plan.

        Every request body and query parameter is validated before the handler runs; a problem
        is a 400 whose `details` has one `{{"field", "problem"}}` per field at fault, and nothing
        changes. Errors are always `{{"error": {{"code", "message", "details"}}}}`. Bodies over
        {max_body_bytes} bytes are refused with 413; a method a path does not serve gets 405
        with `Allow`. Protected operations need `Authorization: Bearer <JWT>` (`x-permission`
        names the permission) and answer RateLimit-* headers; operations with `x-signed: true`
        also need the HMAC signature headers (`tpmon sign`).""")


def _component_schemas(endpoints: list[Endpoint]) -> dict[str, Any]:
    """components.schemas from every model the endpoints name; query and path models are expanded apart."""
    wanted: list[tuple[type[BaseModel], str]] = [(ErrorEnvelope, "serialization")]
    for e in endpoints:
        wanted += [(reply.model, "serialization") for reply in e.responses.values() if reply.model is not None]
        wanted += [(model, "validation") for model in (e.body, e.query, e.path_params) if model is not None]
    keys, top = models_json_schema(list(dict.fromkeys(wanted)), ref_template=SCHEMAS + "{model}",
                                   schema_generator=_Schemas)
    schemas = top.get("$defs", {})
    refs = {model: ref["$ref"] for (model, _), ref in keys.items()}
    parameters = {}
    for e in endpoints:
        for model in (e.query, e.path_params):
            if model is not None:
                parameters[model] = schemas[refs[model].removeprefix(SCHEMAS)]
    for model in parameters:  # parameter models become parameters, not schemas
        schemas.pop(refs[model].removeprefix(SCHEMAS), None)
    return {"schemas": schemas, "refs": refs, "parameters": parameters}


def _operation(endpoint: Endpoint, components: dict[str, Any], alias: bool) -> dict[str, Any]:
    name = endpoint.handler.__name__
    operation: dict[str, Any] = {
        "operationId": f"{name}_plan" if alias else name,
        "summary": endpoint.summary,
        "description": _description(endpoint, alias),
        "tags": list(endpoint.tags),
        "parameters": _parameters(endpoint, components),
        "responses": _responses(endpoint, components),
    }
    if endpoint.body is not None:
        operation["requestBody"] = {"required": endpoint.body_required, "content": {"application/json": {
            "schema": {"$ref": components["refs"][endpoint.body]}}}}
    if endpoint.permission is None:
        operation["security"] = []
    else:
        operation["security"] = [{"bearerAuth": []}]
        operation["x-permission"] = endpoint.permission.value
    if endpoint.write:
        operation["x-write"] = True
    if endpoint.signed:
        operation["x-signed"] = True
    return operation


def _description(endpoint: Endpoint, alias: bool) -> str:
    parts = [inspect.cleandoc(endpoint.description)] if endpoint.description else []
    if endpoint.permission is None:
        parts.append("Open: no token needed (reveals no configuration or client data).")
    else:
        parts.append(f"Requires a bearer token whose role grants `{endpoint.permission.value}` "
                     f"({', '.join(_roles_with(endpoint.permission))}).")
    if endpoint.write:
        parts.append("Counts against the write budget as well as the request budget.")
    if endpoint.signed:
        parts.append(f"Must be signed: {TIMESTAMP_HEADER}, {NONCE_HEADER} and {SIGNATURE_HEADER} "
                     "(HMAC-SHA256, see `tpmon sign`).")
    if alias:
        parts.append(f"Alias of the `/api/v1{endpoint.path}` operation, for clients written against the plan.")
    return "\n\n".join(parts)


def _roles_with(permission: Permission) -> list[str]:
    return [role for role, granted in ROLES.items() if permission in granted or Permission.ADMIN in granted]


def _parameters(endpoint: Endpoint, components: dict[str, Any]) -> list[dict[str, Any]]:
    out = _from_model(endpoint.path_params, "path", components) if endpoint.path_params else [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", endpoint.path)]
    if endpoint.query is not None:
        out += _from_model(endpoint.query, "query", components)
    if endpoint.cached:
        out.append({"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"},
                    "description": "An ETag from an earlier answer: 304 with no body while it is current"})
    if endpoint.signed:
        out += [{"name": header, "in": "header", "required": True, "description": text,
                 "schema": {"type": "string", "pattern": pattern}} for header, text, pattern in SIGNATURE_PARAMETERS]
    return out


def _from_model(model: type[BaseModel], where: str, components: dict[str, Any]) -> list[dict[str, Any]]:
    schema = components["parameters"][model]
    required = set(schema.get("required", ()))
    out = []
    for name, prop in schema.get("properties", {}).items():
        prop = dict(prop)
        param: dict[str, Any] = {"name": name, "in": where, "required": where == "path" or name in required}
        if "description" in prop:
            param["description"] = prop.pop("description")
        if prop.get("type") == "array":  # comma lists: ?stations=Station-1,Station-3
            param.update(style="form", explode=False)
        param["schema"] = prop
        out.append(param)
    return out


def _responses(endpoint: Endpoint, components: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status, reply in sorted(endpoint.responses.items()):
        schema = {"$ref": components["refs"][reply.model]} if reply.model is not None else dict(reply.schema or {})
        headers = {"X-Trace-Id": {"$ref": "#/components/headers/X-Trace-Id"}}
        if endpoint.permission is not None and 200 <= status < 300:
            headers.update({h: {"$ref": f"#/components/headers/{h}"} for h in RATE_HEADERS})
        if endpoint.cached and status == 200:
            headers["ETag"] = {"$ref": "#/components/headers/ETag"}
        out[str(status)] = {"description": reply.description, "headers": headers,
                            "content": {reply.media_type: {"schema": schema}}}
    if endpoint.cached:
        out["304"] = {"description": "Not modified: If-None-Match matched the current ETag (no body)",
                      "headers": {"ETag": {"$ref": "#/components/headers/ETag"},
                                  "X-Trace-Id": {"$ref": "#/components/headers/X-Trace-Id"}}}
    for status in _error_statuses(endpoint):
        out[str(status)] = {"$ref": f"#/components/responses/{ERRORS[status][0]}"}
    return out


def _error_statuses(endpoint: Endpoint) -> list[int]:
    statuses = {400, *endpoint.errors}  # every route validates its query (none declared: any is refused)
    if endpoint.permission is not None:
        statuses |= {401, 403, 429}
    if endpoint.body is not None:
        statuses.add(413)
    if endpoint.signed:
        statuses.add(401)
    return sorted(s for s in statuses if str(s) not in {str(k) for k in endpoint.responses})


def _headers(status: int) -> dict[str, Any]:
    headers: dict[str, Any] = {"X-Trace-Id": {"$ref": "#/components/headers/X-Trace-Id"}}
    if status == 429:
        headers["Retry-After"] = {"$ref": "#/components/headers/Retry-After"}
        headers.update({h: {"$ref": f"#/components/headers/{h}"} for h in RATE_HEADERS})
    if status == 401:
        headers["WWW-Authenticate"] = {"description": "`Bearer realm=\"tpmon\"` when the token is at fault",
                                       "schema": {"type": "string"}}
    return headers


def _tidy(node: Any) -> Any:
    """Drop pydantic's `"default": null` where null is not allowed (fields omitted when absent)."""
    if isinstance(node, dict):
        out = {k: _tidy(v) for k, v in node.items()}
        if "default" in out and out["default"] is None and not _allows_null(out):
            del out["default"]
        return out
    if isinstance(node, list):
        return [_tidy(v) for v in node]
    return node


def _allows_null(schema: dict[str, Any]) -> bool:
    kinds = schema.get("type")
    if kinds == "null" or (isinstance(kinds, list) and "null" in kinds):
        return True
    return any(_allows_null(s) for s in schema.get("anyOf", ()) if isinstance(s, dict))
