"""/api/v1/config/templates (list, read, create, update, delete) and POST /api/v1/config/apply-template/{templateId}."""
from __future__ import annotations

from aiohttp import web

from controller.app_keys import SERVICES
from controller.http import logs
from controller.http.endpoint import Endpoint, Reply, add_endpoint
from controller.http.errors import ApiError, json_response
from controller.http.params import body_of
from controller.knobs.batch import TargetStatus
from controller.knobs.batch_routes import batch_json, run_batch, target_points
from controller.knobs.template_models import (
    ApplyTemplateRequest,
    ApplyTemplateResult,
    Deleted,
    TemplateDocument,
    TemplateList,
    TemplatePath,
    TemplateRequest,
)
from controller.knobs.templates import Template, TemplateConflict, TemplateNotFound
from controller.security.guard import client_address, principal_of
from controller.security.principal import Permission

TEMPLATES = "/config/templates"
ONE = "/config/templates/{templateId}"
APPLY = "/config/apply-template/{templateId}"


def _template(request: web.Request) -> Template:
    template_id = request.match_info["templateId"]
    try:
        return request.app[SERVICES].templates.get(template_id)
    except TemplateNotFound:
        raise ApiError(404, f"unknown template {template_id!r} (GET /api/v1/config/templates lists them)",
                       [{"field": "templateId", "problem": f"unknown template {template_id}"}]) from None


def _audit(request: web.Request, action: str, template: Template) -> None:
    request.app[SERVICES].audit.record(f"config.template.{action}", who=principal_of(request).subject,
                                   what=f"template {template.id} ({template.name})", where=client_address(request),
                                   trace=logs.trace_id.get() or "", outcome="done", config=template.config)


async def list_templates(request: web.Request) -> web.Response:
    templates = request.app[SERVICES].templates.all()
    return json_response({"templates": [t.to_json() for t in templates], "count": len(templates)})


async def get_template(request: web.Request) -> web.Response:
    return json_response(_template(request).to_json())


async def create_template(request: web.Request) -> web.Response:
    body = body_of(request, TemplateRequest)
    try:
        template = await request.app[SERVICES].templates.create(body.name, body.description, body.category,
                                                            body.config.root, principal_of(request).subject)
    except TemplateConflict as exc:
        raise ApiError(409, str(exc), [{"field": "name", "problem": str(exc)}]) from None
    _audit(request, "create", template)
    return json_response(template.to_json(), status=201)


async def update_template(request: web.Request) -> web.Response:
    current = _template(request)
    body = body_of(request, TemplateRequest)
    try:
        template = await request.app[SERVICES].templates.update(current.id, body.name, body.description, body.category,
                                                            body.config.root, principal_of(request).subject)
    except TemplateConflict as exc:
        field = "templateId" if current.builtin else "name"
        raise ApiError(409, str(exc), [{"field": field, "problem": str(exc)}]) from None
    _audit(request, "update", template)
    return json_response(template.to_json())


async def delete_template(request: web.Request) -> web.Response:
    current = _template(request)
    try:
        template = await request.app[SERVICES].templates.delete(current.id)
    except TemplateConflict as exc:
        raise ApiError(409, str(exc), [{"field": "templateId", "problem": str(exc)}]) from None
    _audit(request, "delete", template)
    return json_response({"id": template.id, "deleted": True})


async def apply_template(request: web.Request) -> web.Response:
    template = _template(request)
    body = body_of(request, ApplyTemplateRequest)
    points = target_points(request, body.targets)
    outcome = await run_batch(request, points, template.config, body, "template", template.id)
    usage = template.usage_count
    if any(t.status is TargetStatus.APPLIED for t in outcome.targets):  # counted only when it changed something
        try:
            usage = (await request.app[SERVICES].templates.count_use(template.id)).usage_count
        except TemplateNotFound:  # deleted while it was being applied
            pass
    return json_response({**batch_json(outcome, body), "templateId": template.id, "usageCount": usage})


def setup_routes(app: web.Application) -> None:
    tags = ("templates",)
    add_endpoint(app, Endpoint("GET", TEMPLATES, list_templates, "Configuration templates, built-in first",
                               Permission.READ_METRICS, tags=tags,
                               responses={200: Reply("Every template", TemplateList)},
                               description="Reading needs only read:metrics, so whoever may apply a template "
                                           "(write:knobs) can find it; changing templates needs manage:templates."))
    add_endpoint(app, Endpoint("GET", ONE, get_template, "One configuration template", Permission.READ_METRICS,
                               tags=tags, path_params=TemplatePath, errors=(404,),
                               responses={200: Reply("The template", TemplateDocument)}))
    add_endpoint(app, Endpoint("POST", TEMPLATES, create_template, "Create a configuration template",
                               Permission.MANAGE_TEMPLATES, write=True, tags=tags, body=TemplateRequest,
                               errors=(409,), responses={201: Reply("The new template", TemplateDocument)},
                               description="`config` is checked against the knob catalog (any problem: 400, nothing "
                                           "stored). Cross-knob rules depend on the point it is applied to and are "
                                           "checked then; `conflictsWithDefaults` lists those a point at the "
                                           "catalog defaults would refuse. A name already taken (ignoring case) "
                                           "is a 409."))
    add_endpoint(app, Endpoint("PUT", ONE, update_template, "Replace a configuration template",
                               Permission.MANAGE_TEMPLATES, write=True, tags=tags, path_params=TemplatePath,
                               body=TemplateRequest, errors=(404, 409),
                               responses={200: Reply("The updated template", TemplateDocument)},
                               description="The whole template (name, description, category, config) is replaced; "
                                           "usage count and creation stay. Built-in templates are read-only (409)."))
    add_endpoint(app, Endpoint("DELETE", ONE, delete_template, "Delete a configuration template (signed)",
                               Permission.MANAGE_TEMPLATES, write=True, signed=True, tags=tags,
                               path_params=TemplatePath, errors=(404, 409),
                               responses={200: Reply("Deleted", Deleted)},
                               description="Built-in templates cannot be deleted (409). Points the template was "
                                           "applied to keep their knobs. Without a valid signature the answer is 401."))
    add_endpoint(app, Endpoint("POST", APPLY, apply_template, "Apply a template to many points (signed)",
                               Permission.WRITE_KNOBS, write=True, signed=True, tags=tags, path_params=TemplatePath,
                               body=ApplyTemplateRequest, errors=(404,),
                               responses={200: Reply("The batch that applied it", ApplyTemplateResult)},
                               description="Runs the template's config as a batch (POST /api/v1/batch/apply-settings: "
                                           "same validation, rollback and answer), recorded with source `template`. "
                                           "The usage count grows only when at least one point ends up applied. "
                                           "Without a valid signature the answer is 401."))
