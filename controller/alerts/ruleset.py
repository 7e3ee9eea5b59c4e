"""The rules in force: the shipped defaults overlaid by the operators' thresholds and rules, stored in TinyDB.

A stored rule with a default's id replaces that default; every other stored rule adds to
them. A change is on disk (temp file, fsync, rename) before the API answers it.
"""
from __future__ import annotations

from typing import Any

from controller.alerts.defaults import default_rules
from controller.alerts.records import read_table, write_batch
from controller.alerts.rules import Rule
from controller.documents import DocumentFile

TABLE = "rules"


class RuleSet:
    def __init__(self, file: DocumentFile) -> None:
        self.file = file
        self.defaults = default_rules()
        self._stored: dict[str, Rule] = {}
        self._doc_ids: dict[str, int] = {}
        self.revision = 0   # the highest revision given so far
        self._next_doc_id = 1

    async def load(self) -> None:
        records: dict[int, dict[str, Any]] = await self.file.load(lambda db: read_table(db, TABLE))
        for doc_id, record in sorted(records.items()):
            rule = Rule.from_record(record)
            self._stored[rule.id], self._doc_ids[rule.id] = rule, doc_id
            self.revision = max(self.revision, rule.revision)
            self._next_doc_id = max(self._next_doc_id, doc_id + 1)

    def all(self) -> dict[str, Rule]:
        """Every rule in force by id: defaults first (in the shipped order), then the operators' own."""
        return {**self.defaults, **self._stored}

    def get(self, rule_id: str) -> Rule | None:
        return self._stored.get(rule_id) or self.defaults.get(rule_id)

    def by_name(self, name: str) -> Rule | None:
        return next((r for r in self.all().values() if r.name == name), None)

    def next_rule_id(self) -> str:
        n = 1
        while f"rule_{n}" in self.all():
            n += 1
        return f"rule_{n}"

    async def save(self, rule: Rule) -> Rule:
        """Store `rule` as the newest revision; returns what was stored."""
        self.revision += 1
        rule = rule.changed(revision=self.revision)
        doc_id = self._doc_ids.get(rule.id)
        if doc_id is None:
            doc_id, self._next_doc_id = self._next_doc_id, self._next_doc_id + 1
        record = rule.to_record()
        await self.file.write(lambda db: write_batch(db, TABLE, {doc_id: record}, ()))
        self._stored[rule.id], self._doc_ids[rule.id] = rule, doc_id
        return rule

    async def delete(self, rule_id: str) -> None:
        doc_id = self._doc_ids[rule_id]
        await self.file.write(lambda db: write_batch(db, TABLE, {}, (doc_id,)))
        del self._stored[rule_id], self._doc_ids[rule_id]

    def is_default(self, rule_id: str) -> bool:
        return rule_id in self.defaults
