"""A request's query and body parsed into the endpoint's declared models; any problem is a 400 in the envelope.

`validating(handler, query, body)` wraps a handler (add_endpoint does it for every route):
the guard has already admitted the request, so an anonymous caller gets 401, never a
400 that describes the API. The handler then reads `query_of(request, Model)` and
`body_of(request, Model)`. Each pydantic error becomes one `{"field", "problem"}`: the
field a dotted path (`targets.0.station`; `query` or `body` for the whole), the problem
in plain words, never pydantic's raw dump.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from aiohttp import web
from multidict import MultiMapping
from pydantic import BaseModel, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from controller.http.errors import ApiError, read_json_object
from controller.http.models import NoQuery

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=BaseModel)

QUERY = web.RequestKey("validated_query", BaseModel)
BODY = web.RequestKey("validated_body", BaseModel)
MAX_LISTED = 5  # problems quoted in a query error's message; every one is in `details`


def validating(handler: Handler, query: type[BaseModel] | None, body: type[BaseModel] | None,
               body_required: bool = True) -> Handler:
    """`handler` behind validation of its query (None: takes none) and JSON body (None: ignored).

    With `body_required` False an empty body stands for the body model's defaults (an optional body).
    """
    query_model = query or NoQuery
    empty = _default_of(query_model)

    async def validated(request: web.Request) -> web.StreamResponse:
        request[QUERY] = empty if empty is not None and not request.query else parse_query(request.query, query_model)
        if body is not None:
            if not body_required and not (await request.read()).strip():
                request[BODY] = parse_body({}, body)
            else:
                request[BODY] = parse_body(await read_json_object(request), body)
        return await handler(request)

    validated.__name__ = validated.__qualname__ = getattr(handler, "__name__", "handler")
    validated.__doc__ = handler.__doc__
    return validated


def _default_of(model: type[BaseModel]) -> BaseModel | None:
    """The model of a request without a query, built once (the snapshot route's fast path)."""
    try:
        return model()
    except ValidationError:
        return None  # it has a required parameter: parse_query reports it missing


def query_of(request: web.Request, model: type[M]) -> M:
    value = request[QUERY]
    if not isinstance(value, model):
        raise TypeError(f"the route declares {type(value).__name__} as its query, not {model.__name__}")
    return value


def body_of(request: web.Request, model: type[M]) -> M:
    value = request[BODY]
    if not isinstance(value, model):
        raise TypeError(f"the route declares {type(value).__name__} as its body, not {model.__name__}")
    return value


def parse_query(query: MultiMapping[str], model: type[M]) -> M:
    """The query string as `model`: unknown, repeated and malformed parameters are a 400 naming each."""
    repeated = sorted({name for name in query if len(query.getall(name)) > 1})
    try:
        if repeated:
            raise _repeated(repeated)
        return model.model_validate({name: query[name] for name in query})
    except ValidationError as exc:
        details = problems(exc, "query", known=_names(model))
        listed = "; ".join(f"{d['field']}: {d['problem']}" for d in details[:MAX_LISTED])
        more = f" (and {len(details) - MAX_LISTED} more)" if len(details) > MAX_LISTED else ""
        raise ApiError(400, f"invalid query: {listed}{more}", details, code="validation_failed") from None


def parse_body(doc: Any, model: type[M]) -> M:
    """A decoded JSON body as `model`; every problem listed, nothing changed."""
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        details = problems(exc, "body")
        noun = getattr(model, "problem_noun", "field")
        count = len(details)
        raise ApiError(400, f"{count} invalid {noun}{'s' if count != 1 else ''}; nothing was changed", details,
                       code="validation_failed") from None


def problems(exc: ValidationError, where: str, known: tuple[str, ...] = ()) -> list[dict[str, str]]:
    """pydantic's errors as `{"field", "problem"}`: dotted paths, plain words, inputs quoted briefly."""
    out = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(part) for part in error["loc"]) or where
        out.append({"field": field, "problem": _plain(error, where, known)})
    return out


def _plain(error: Mapping[str, Any], where: str, known: tuple[str, ...]) -> str:
    kind = error["type"]
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        if where == "query":
            takes = f"this endpoint takes {', '.join(known)}" if known else "this endpoint takes no query parameters"
            return f"unknown query parameter ({takes})"
        return "unknown field"
    if kind == "repeated":
        return error["msg"]
    message = str(error["msg"])
    if message.startswith("Input should be"):
        message = "should be" + message[len("Input should be"):]
        given = error.get("input")
        if isinstance(given, (str, int, float, bool)) and len(repr(given)) <= 40:
            message += f", got {given!r}"
    elif message.startswith("Value error, "):
        message = message[len("Value error, "):]
    return message


def _names(model: type[BaseModel]) -> tuple[str, ...]:
    return tuple(field.alias or name for name, field in model.model_fields.items())


def _repeated(names: list[str]) -> ValidationError:
    return ValidationError.from_exception_data("query", [
        InitErrorDetails(type=PydanticCustomError("repeated", "given more than once; give it once "
                                                  "(several values as one comma-separated list)"),
                         loc=(name,), input=None) for name in names])
