"""Configuration templates: named, validated partial knob sets (the plan's config_templates), built-in and user-made.

Built-in templates (controller/builtin_templates.py) come with the release and are read-only:
updating or deleting one is a 409, so a name in a runbook always means the same values; an
operator who wants a variant creates a template of their own. Their usage counts persist.
User templates live in <data_dir>/templates.json. Names are unique, compared without case
and surrounding spaces. Changes are serialized by one lock, so two creates cannot both take
a name; each is on disk before it is answered.
"""
from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from tinydb import Query, TinyDB

from controller.clock import iso_ms
from controller.documents import DocumentFile
from controller.knobs.builtin_templates import BUILTIN_AUTHOR, BUILTINS
from shared.knobs import KnobProblem, consistency_problems, defaults

USER = "templates"   # TinyDB table of user templates
USAGE = "usage"      # TinyDB table of built-in templates' usage counts


class TemplateNotFound(KeyError):
    pass


class TemplateConflict(Exception):
    """A name already taken, or a change to a built-in template (409)."""


@dataclass(frozen=True)
class Template:
    id: str
    name: str
    description: str
    category: str
    config: dict[str, Any]
    created_by: str
    created_at: float | None
    usage_count: int = 0
    builtin: bool = False
    updated_by: str | None = None
    updated_at: float | None = None

    def to_doc(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "description": self.description, "category": self.category,
                "config": self.config, "created_by": self.created_by, "created_at": self.created_at,
                "usage_count": self.usage_count, "updated_by": self.updated_by, "updated_at": self.updated_at}

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Template:
        return cls(str(doc["id"]), str(doc["name"]), str(doc.get("description", "")),
                   str(doc.get("category", "general")), dict(doc["config"]), str(doc.get("created_by", "")),
                   doc.get("created_at"), int(doc.get("usage_count", 0)), False, doc.get("updated_by"),
                   doc.get("updated_at"))

    def to_json(self) -> dict[str, Any]:
        """The API's view: camelCase, times in ISO 8601, and any conflict of its config with the catalog defaults."""
        return {"id": self.id, "name": self.name, "description": self.description, "category": self.category,
                "config": self.config, "builtin": self.builtin, "createdBy": self.created_by,
                "createdAt": iso_ms(self.created_at), "updatedBy": self.updated_by,
                "updatedAt": iso_ms(self.updated_at), "usageCount": self.usage_count,
                "conflictsWithDefaults": [p.to_json() for p in self.conflicts_with_defaults()]}

    def conflicts_with_defaults(self) -> list[KnobProblem]:
        """Cross-knob rules this config breaks on a point at the catalog defaults (it may suit other points)."""
        return consistency_problems({**defaults(), **self.config})


def _key(name: str) -> str:
    return name.strip().casefold()


class TemplateStore:
    def __init__(self, file: DocumentFile, wall: Callable[[], float],
                 new_id: Callable[[], str] = lambda: f"tpl_{secrets.token_hex(6)}") -> None:
        self.file = file
        self.wall = wall
        self.new_id = new_id
        self._builtin = {t.id: Template(t.id, t.name, t.description, t.category, dict(t.config), BUILTIN_AUTHOR,
                                        None, builtin=True) for t in BUILTINS}
        self._user: dict[str, Template] = {}
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        await self.file.open()
        user, usage = await self.file.load(lambda db: (db.table(USER).all(), db.table(USAGE).all()))
        self._user = {t.id: t for t in map(Template.from_doc, user)}
        for doc in usage:
            if doc.get("id") in self._builtin:
                self._builtin[doc["id"]] = replace(self._builtin[doc["id"]], usage_count=int(doc.get("count", 0)))

    async def close(self) -> None:
        await self.file.close()

    def all(self) -> list[Template]:
        """Built-ins first (in release order), then user templates oldest first."""
        return list(self._builtin.values()) + sorted(self._user.values(), key=lambda t: (t.created_at or 0, t.id))

    def get(self, template_id: str) -> Template:
        found = self._builtin.get(template_id) or self._user.get(template_id)
        if found is None:
            raise TemplateNotFound(template_id)
        return found

    async def create(self, name: str, description: str, category: str, config: dict[str, Any], by: str) -> Template:
        async with self._lock:
            self._free(name)
            template = Template(self.new_id(), name, description, category, dict(config), by, self.wall())
            await self.file.write(lambda db: db.table(USER).insert(template.to_doc()))
            self._user[template.id] = template
            return template

    async def update(self, template_id: str, name: str, description: str, category: str, config: dict[str, Any],
                     by: str) -> Template:
        async with self._lock:
            current = self._writable(template_id)
            self._free(name, but=template_id)
            template = replace(current, name=name, description=description, category=category, config=dict(config),
                               updated_by=by, updated_at=self.wall())
            await self.file.write(lambda db: db.table(USER).update(template.to_doc(), Query().id == template_id))
            self._user[template_id] = template
            return template

    async def delete(self, template_id: str) -> Template:
        async with self._lock:
            template = self._writable(template_id)
            await self.file.write(lambda db: db.table(USER).remove(Query().id == template_id))
            del self._user[template_id]
            return template

    async def count_use(self, template_id: str) -> Template:
        """One more application of the template (it may have been deleted meanwhile: then nothing to count)."""
        async with self._lock:
            if template_id in self._builtin:
                used = replace(self._builtin[template_id], usage_count=self._builtin[template_id].usage_count + 1)
                await self.file.write(lambda db: _upsert_usage(db, template_id, used.usage_count))
                self._builtin[template_id] = used
                return used
            current = self.get(template_id)
            used = replace(current, usage_count=current.usage_count + 1)
            await self.file.write(lambda db: db.table(USER).update({"usage_count": used.usage_count},
                                                                   Query().id == template_id))
            self._user[template_id] = used
            return used

    def _writable(self, template_id: str) -> Template:
        if template_id in self._builtin:
            raise TemplateConflict(f"{template_id} is a built-in template and cannot be changed or deleted; "
                                   "create a template of your own from its config instead")
        return self.get(template_id)

    def _free(self, name: str, but: str | None = None) -> None:
        for template in self.all():
            if template.id != but and _key(template.name) == _key(name):
                raise TemplateConflict(f"a template named {template.name!r} already exists ({template.id})")


def _upsert_usage(db: TinyDB, template_id: str, count: int) -> None:
    db.table(USAGE).upsert({"id": template_id, "count": count}, Query().id == template_id)
