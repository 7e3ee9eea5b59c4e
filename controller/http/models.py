"""Models every API area shares: the request and response bases, the error envelope, comma lists, the point path.

Query models take the strings of the URL (pydantic's lax mode turns "10" into 10 for an
int field); a comma list (`?stations=Station-1,Station-3`) is declared as `CommaList` or a
type built on it and documented as an OpenAPI `form` array with `explode: false`. Path
models only document the `{name}` segments: the handler resolves them, because an unknown
station is a 404 and one outside the token's scope a 403, not a 400.

Response bodies are pydantic models too: the OpenAPI document's schemas, checked against
real answers. Handlers build plain dicts (the snapshot is prebuilt bytes); the models
describe those documents field for field and are never on the request path. Every response
model (`Body`) forbids extra fields, so a field a handler adds without declaring it breaks
the schema test. A field typed `X | SkipJsonSchema[None] = None` is omitted when absent
(never sent as null). Each area's own models live in its `models.py`.
"""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import InitErrorDetails, PydanticCustomError

from shared.metrics import CATEGORIES, METRICS, METRICS_BY_KEY
from shared.topology import EXTENSIONS

STATION_PATTERN = r"^Station-[1-9][0-9]{0,3}$"
STATION_SCHEMA = {"type": "string", "pattern": STATION_PATTERN, "examples": ["Station-1"]}

# A one-line name with no leading or trailing space and no control characters. Spelled with
# explicit classes, not \s: Python's \s also matches \x1c-\x1f, ECMA's (JSON Schema) does not,
# and a client validating against the document must agree with the server.
NAME_PATTERN = r"^[^\x00-\x20\x7f](?:[^\x00-\x1f\x7f]*[^\x00-\x20\x7f])?$"
# Patterns are checked with Python's `re`, the engine schema-driven clients (hypothesis) generate
# from: its `$` also matches before one final newline, which pydantic's default engine refuses.
PYTHON_RE = ConfigDict(regex_engine="python-re")


class QueryModel(BaseModel):
    """Query parameters of one endpoint: every name declared, any other refused with a 400 naming it."""
    model_config = ConfigDict(extra="forbid", frozen=True)


class BodyModel(BaseModel):
    """A JSON request body: every field declared, any other refused (a misspelt option is never ignored)."""
    model_config = ConfigDict(extra="forbid")


class StrictBody(BodyModel):
    """A body whose values must have their JSON types (`false` is not a level, `"5"` not a duration)."""
    model_config = ConfigDict(extra="forbid", strict=True)


class NoQuery(QueryModel):
    """An endpoint that takes no query parameters."""


class Body(BaseModel):
    """A response body: every field declared (the schema test fails on an undeclared one)."""
    model_config = ConfigDict(extra="forbid")


def split_commas(value: Any) -> Any:
    """`a, b,c` -> ("a", "b", "c"). An empty item (`?stations=`, `a,,b`, `a,`) is refused: the
    document says each item is one of the listed values, so the server must not read "" as
    "none given" (schemathesis checks exactly that); leaving the parameter out is the default."""
    if isinstance(value, str):
        parts = tuple(part.strip() for part in value.split(","))
        if not all(parts):
            raise PydanticCustomError("empty_item", "an empty item in the comma-separated list; "
                                                    "leave the parameter out to get the default")
        return parts
    return value


def _catalog_fields(names: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [n for n in names if n not in METRICS_BY_KEY and n not in CATEGORIES]
    if unknown:  # one problem per unknown name, under this parameter's own name
        raise ValidationError.from_exception_data("fields", [
            InitErrorDetails(type=PydanticCustomError("unknown_metric", "unknown metric {name}", {"name": n}),
                             loc=(), input=n) for n in unknown])
    return names


CommaList = Annotated[tuple[str, ...], BeforeValidator(split_commas)]
StationList = Annotated[CommaList, WithJsonSchema({"type": "array", "minItems": 1, "items": STATION_SCHEMA})]
MetricFields = Annotated[CommaList, AfterValidator(_catalog_fields), WithJsonSchema({
    "type": "array", "minItems": 1, "items": {"type": "string", "enum": [*(m.key for m in METRICS), *CATEGORIES]}})]


class PointPath(BaseModel):
    """The `{stationId}/{extension}` segments naming one monitoring point."""
    stationId: str = Field(description="Station-1 … Station-N (N from the controller's `stations`); "
                                       "unknown: 404, outside the token's stations: 403",
                           json_schema_extra={"pattern": STATION_PATTERN, "examples": ["Station-1"]})
    extension: str = Field(description="Language extension (3333 English, 4444 French); unknown: 404",
                           json_schema_extra={"enum": list(EXTENSIONS)})


# --- the error envelope --------------------------------------------------------------------

class Problem(Body):
    """One thing wrong with a request: where (a dotted path into the query, body or headers) and what."""
    field: str = Field(examples=["agc_target_level"])
    problem: str = Field(examples=["-80 is below the minimum -31"])


class ErrorBody(Body):
    code: str = Field(description="Stable machine-readable code: bad_request, validation_failed, unauthorized, "
                                  "forbidden, not_found, method_not_allowed, payload_too_large, rate_limited, "
                                  "conflict, not_ready, internal_error", examples=["validation_failed"])
    message: str = Field(description="What went wrong, in plain words")
    details: list[Problem] = Field(description="One entry per field at fault (may be empty)")
    traceId: str | SkipJsonSchema[None] = Field(None, description="Only on 500: quote it when reporting")


class ErrorEnvelope(Body):
    """Every error the API answers: `{"error": {"code", "message", "details": [{"field", "problem"}]}}`."""
    error: ErrorBody


# --- the OpenAPI document ------------------------------------------------------------------

class OpenApiDocument(BaseModel):
    """This OpenAPI document (3.1)."""
    model_config = ConfigDict(extra="allow")

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]
