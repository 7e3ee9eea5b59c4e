"""Batched writes of TinyDB documents: many documents changed with one crash-safe rewrite of the file.

TinyDB writes its whole file on every insert or update; changing ten alerts one call at a
time would rewrite (and fsync) the file ten times. Here the table is read once through the
storage, changed in memory and written once: the file keeps TinyDB's layout
(`{"table": {"<doc id>": {...}}}`), so TinyDB reads it back as usual.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tinydb import TinyDB


def read_table(db: TinyDB, table: str) -> dict[int, dict[str, Any]]:
    """Every document of `table` by its document id."""
    return {doc.doc_id: dict(doc) for doc in db.table(table).all()}


def write_batch(db: TinyDB, table: str, upserts: Mapping[int, Mapping[str, Any]], removals: Iterable[int]) -> None:
    """Put `upserts` (doc id -> document) and drop `removals` in one write of the file."""
    data = db.storage.read() or {}
    docs = data.setdefault(table, {})
    for doc_id in removals:
        docs.pop(str(doc_id), None)
    for doc_id, doc in upserts.items():
        docs[str(doc_id)] = dict(doc)
    db.storage.write(data)
    db.table(table).clear_cache()  # TinyDB's query cache must not answer from before this write
