"""Request and response models of /api/v1/config/templates and POST /api/v1/config/apply-template/{templateId}."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

from controller.http.models import NAME_PATTERN, PYTHON_RE, Body, BodyModel, Problem
from controller.knobs.batch_models import BatchOptions, BatchResult, BatchTargets
from controller.knobs.models import KnobChange

TEMPLATE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
# No leading or trailing space, no line breaks: a name is one line an operator can type.
CATEGORY_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"


def _one_line(value: str) -> str:
    """The value without the one final newline a pattern's `$` lets through."""
    return value[:-1] if value.endswith("\n") else value


class TemplatePath(BaseModel):
    templateId: str = Field(description="A template's id (built-in ones are names like `low-latency`)",
                            json_schema_extra={"pattern": TEMPLATE_ID_PATTERN, "examples": ["low-latency"]})


class TemplateRequest(BodyModel):
    """A template: name (unique, case-insensitive), description, category and a partial knob set."""
    model_config = {**BodyModel.model_config, **PYTHON_RE}

    name: str = Field(min_length=1, max_length=80, pattern=NAME_PATTERN, examples=["Quiet studio"])
    description: str = Field("", max_length=2000)
    category: str = Field("general", min_length=1, max_length=40, pattern=CATEGORY_PATTERN,
                          examples=["noise"])
    config: KnobChange

    _single_lines = field_validator("name", "category")(_one_line)


class TemplateDocument(Body):
    """A configuration template (the plan's config_templates row)."""
    id: str = Field(examples=["low-latency"])
    name: str
    description: str
    category: str
    config: KnobChange
    builtin: bool = Field(description="Shipped with the controller: read-only (PUT and DELETE answer 409)")
    createdBy: str
    createdAt: str | None = Field(description="Null for built-in templates", json_schema_extra={"format": "date-time"})
    updatedBy: str | None
    updatedAt: str | None = Field(json_schema_extra={"format": "date-time"})
    usageCount: int = Field(ge=0, description="Applications that changed at least one point")
    conflictsWithDefaults: list[Problem] = Field(description=(
        "Cross-knob rules the config breaks on a point at the catalog defaults; such a point refuses it"))


class TemplateList(Body):
    templates: list[TemplateDocument]
    count: int = Field(ge=0)


class ApplyTemplateRequest(BatchOptions):
    """Where to apply the template, and how (as a batch)."""
    targets: BatchTargets


class ApplyTemplateResult(BatchResult):
    """The batch that applied the template, and its usage count afterwards."""
    templateId: str
    usageCount: int = Field(ge=0)


class Deleted(Body):
    id: str
    deleted: Literal[True]
