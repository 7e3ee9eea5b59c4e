"""What history keeps of each row beside its metric values: a raw sample's conditions, a rollup row's knob versions.

The knob version a raw sample ran under is a column of the raw segments themselves
(`knob_version`, rollup.KNOB_VERSION: constant for minutes on end, so the codec stores it in
no bytes at all). The rest does not fit a float column, so a segment or pending chunk keeps
it in a second blob, the `context` column of its SQLite row (NULL: no row's context known,
which is what every row written before history kept context has):

- raw tier, the conditions the agent reported (a small dict: path delay, jitter and loss,
  the room, the key applied knobs). In memory a row's conditions are two tuples, its keys
  (shared by the rows that have the same) and its values (`Intake`: a few tuple copies and
  comparisons per sample). On disk they are columnar, like the
  metrics: each key whose values are all floats, all integers or all bools is a float column
  of the segment codec (a steady key costs nothing, a drifting delay a byte or so per row),
  any other key (strings, mixed types, lists) a column of indices into the key's distinct
  values, listed in the header; an absent key is a null. Steady conditions cost next to
  nothing and the few keys that drift every sample (the simulator's path drifts by default)
  little: on the agent's own conditions ~1.5 bytes a row, ~0.02 per raw metric value.
  Layout: MAGIC, VERSION, kind 0, the length of the deflated JSON header
  `[[key, kind] or [key, "d", [values]], ...]`, the header, then a codec blob of the
  columns (column 0: 1 where the row's conditions are known; its timestamps are zeros).
  Pending chunks, written every flush with a few rows each, and segments whose rows have no
  key at all (`{}`: an agent that reports no conditions) take the form that is cheaper to
  make: MAGIC, VERSION, kind 2, deflated msgpack `[[keys, ...], [[keys index, [values]] or nil, ...]]`
  (NaN and infinities, which msgpack keeps, read back as null);
- rollup tiers, the distinct knob versions of the bucket's samples, ascending (None: none of
  them known): MAGIC, VERSION, kind 1, deflated JSON `[[3], [3, 4], null, ...]`.
"""
from __future__ import annotations

import json
import logging
import math
import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgpack
import numpy as np

from controller.history import codec
from controller.history.codec import CorruptSegment

log = logging.getLogger("tpmon.controller.history")

MAGIC = b"TX"
VERSION = 1
CONDITIONS, VERSIONS, CONDITION_ROWS = 0, 1, 2
# An agent's conditions are ~35 keys, ~1 KiB of JSON. Not kept (counted): more keys than MAX_CONDITIONS_KEYS,
# or longer than MAX_CONDITIONS_CHARS as JSON through long strings or nested values.
MAX_CONDITIONS_KEYS = 128
MAX_CONDITIONS_CHARS = 16_384
_LEVEL = 6
_HEADER = struct.Struct("<I")
_EXACT = 2 ** 53                 # integers a float64 column holds exactly
_INT_LIMIT = 2 ** 64             # integers beyond are shown as null
_MAX_DEPTH = 16
_ABSENT = object()


def objects(items: Iterable[Any]) -> np.ndarray:
    """A 1-d object array of `items` (np.array would turn a list of tuples into a 2-d array)."""
    items = list(items)
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = item
    return out


# --- conditions ---------------------------------------------------------------------------

Conditions = tuple[tuple[str, ...], tuple[Any, ...]]
"""One sample's conditions in memory: (keys, values), keys shared by consecutive samples that have the same."""

_SCALARS = frozenset({int, float, bool, str, type(None)})
_SHORT = 64   # keys and string values up to this long take the common path (no JSON size check)


class Intake:
    """Takes samples' conditions as history keeps them, one point's samples in time order.

    The common case, a sample with the same keys and value types as the one before (string keys,
    scalar values, short strings), costs three tuples and two comparisons, and shares the keys
    tuple. Anything else is checked, and if need be first made showable as JSON (non-string keys
    as strings, values JSON cannot hold as null; NaN and infinities become null when written).
    """

    def __init__(self) -> None:
        self._keys: tuple[str, ...] | None = None
        self._types: tuple[type, ...] | None = None
        self._strings: tuple[int, ...] = ()   # where the string values are, in that shape

    def take(self, conditions: Any) -> Conditions | None:
        """(keys, values), or None when `conditions` is not a mapping or too large (MAX_CONDITIONS_KEYS)."""
        if type(conditions) is not dict and not isinstance(conditions, Mapping):
            return None
        if len(conditions) > MAX_CONDITIONS_KEYS:
            return None
        keys = tuple(conditions)
        values = tuple(conditions.values())
        types = tuple(map(type, values))
        if types == self._types and keys == self._keys:
            for j in self._strings:
                if len(values[j]) > _SHORT:
                    return _showable_conditions(conditions)
            return self._keys, values
        if not (_SCALARS.issuperset(types) and all(type(k) is str and len(k) <= _SHORT for k in keys)):
            return _showable_conditions(conditions)
        strings = tuple(j for j, t in enumerate(types) if t is str)
        if any(len(values[j]) > _SHORT for j in strings):
            return _showable_conditions(conditions)
        self._keys, self._types, self._strings = keys, types, strings
        return keys, values


def conditions_of(conditions: Any) -> Conditions | None:
    """One sample's conditions as history keeps them (Intake.take)."""
    return Intake().take(conditions)


def _showable_conditions(conditions: Mapping[Any, Any]) -> Conditions | None:
    try:
        doc = _showable(conditions, 0)
        if len(json.dumps(doc, separators=(",", ":"), allow_nan=False)) > MAX_CONDITIONS_CHARS:
            return None
    except (TypeError, ValueError, RecursionError):
        return None
    return tuple(doc), tuple(doc.values())


def _showable(value: Any, depth: int) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):   # msgpack carries 64 bits; a longer one may have more digits than JSON text takes
        return value if -_INT_LIMIT < value < _INT_LIMIT else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth >= _MAX_DEPTH:
        return None
    if isinstance(value, Mapping):
        return {(k if isinstance(k, str) else str(k)): _showable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_showable(v, depth + 1) for v in value]
    return None


def encode_conditions(rows: Sequence[Conditions | None]) -> bytes | None:
    """The conditions of a segment's rows (None where unknown) as one blob; None if no row's are known."""
    n = len(rows)
    known = [i for i, row in enumerate(rows) if row is not None]
    if not known:
        return None
    # Columns by key in first-seen order; the rows of each distinct key tuple (usually one, shared) fill theirs.
    first = rows[known[0]][0]
    if all(rows[i][0] is first for i in known):
        groups = {first: known}
    else:
        groups = {}
        for i in known:
            groups.setdefault(rows[i][0], []).append(i)
    names = list(dict.fromkeys(key for keys in groups for key in keys))
    matrix = np.full((n, len(names) + 1), np.nan)
    matrix[known, 0] = 1.0
    if len(groups) == 1:   # every known row has every key
        where: Any = slice(None) if len(known) == n else np.array(known)
        columns = [(where, values) for values in zip(*(rows[i][1] for i in known))]
    else:
        at = {name: c for c, name in enumerate(names)}
        gathered: list[tuple[list[int], list[Any]]] = [([], []) for _ in names]
        for keys, members in groups.items():
            for key, column in zip(keys, zip(*(rows[i][1] for i in members))):
                rows_of, values_of = gathered[at[key]]
                rows_of += members
                values_of += column
        columns = [(np.array(rows_of), values_of) for rows_of, values_of in gathered]
    header: list[list[Any]] = []
    for c, (name, (where, values)) in enumerate(zip(names, columns), start=1):
        kind, numbers, distinct = _column(values)
        matrix[where, c] = numbers
        header.append([name, kind] if distinct is None else [name, kind, distinct])
    body = codec.encode(np.zeros(n, dtype=np.int64), matrix, np.isnan(matrix), _LEVEL)
    packed = zlib.compress(json.dumps(header, separators=(",", ":")).encode(), _LEVEL)
    return MAGIC + bytes((VERSION, CONDITIONS)) + _HEADER.pack(len(packed)) + packed + body


def _column(values: Sequence[Any]) -> tuple[str, np.ndarray, list[Any] | None]:
    """(kind, a float per value, the distinct values of a "d" column) of one key's values."""
    kinds = set(map(type, values))
    if len(kinds) == 1:
        kind = next(iter(kinds))
        if kind is float:
            numbers = np.array(values, dtype=np.float64)
            if np.isfinite(numbers).all():
                return "f", numbers, None
        elif kind is bool:
            return "b", np.array(values, dtype=np.float64), None
        elif kind is int:
            try:
                ints = np.array(values, dtype=np.int64)
            except OverflowError:
                ints = None
            if ints is not None and (np.abs(ints) < _EXACT).all():
                return "i", ints.astype(np.float64), None
        elif kind is str:
            found: dict[str, int] = {}
            index = [found.setdefault(v, len(found)) for v in values]
            return "d", np.array(index, dtype=np.float64), list(found)
    # Anything else: one entry per distinct JSON text, so 1, 1.0 and true stay three values and NaN is null.
    shown = [_showable(v, 0) for v in values]
    by_text: dict[str, int] = {}
    distinct: list[Any] = []
    index = []
    for v in shown:
        text = json.dumps(v, separators=(",", ":"))
        j = by_text.get(text)
        if j is None:
            j = by_text[text] = len(distinct)
            distinct.append(v)
        index.append(j)
    return "d", np.array(index, dtype=np.float64), distinct


def encode_condition_rows(rows: Sequence[Conditions | None]) -> bytes | None:
    """As encode_conditions, row by row (deflated msgpack: the distinct key tuples, then per row the index of its
    keys and its values, or nil): for the pending chunks every flush writes, cheap to make for a few rows."""
    if all(row is None for row in rows):
        return None
    shapes: dict[tuple[str, ...], int] = {}
    out: list[Any] = []
    for row in rows:
        if row is None:
            out.append(None)
        else:
            out.append((shapes.setdefault(row[0], len(shapes)), row[1]))
    try:
        packed = msgpack.packb((list(shapes), out))
    except (OverflowError, TypeError, ValueError):   # an int beyond 64 bits: null, as in a segment
        out = [None if r is None else (r[0], [_showable(v, 0) for v in r[1]]) for r in out]
        packed = msgpack.packb((list(shapes), out))
    return MAGIC + bytes((VERSION, CONDITION_ROWS)) + zlib.compress(packed, 1)


def _decode_condition_rows(blob: bytes, keep: np.ndarray | None) -> list[dict[str, Any] | None]:
    try:
        shapes, rows = msgpack.unpackb(zlib.decompress(blob[4:]), raw=False, strict_map_key=False)
        if keep is not None:
            if len(keep) != len(rows):
                raise ValueError(f"{len(keep)} rows asked of {len(rows)}")
            rows = [r for r, k in zip(rows, keep.tolist(), strict=True) if k]
        return [None if r is None else _shown(dict(zip(shapes[r[0]], r[1], strict=True))) for r in rows]
    except (zlib.error, msgpack.UnpackException, ValueError, TypeError, IndexError) as exc:
        raise CorruptSegment(f"damaged history context: {exc}") from None


def _shown(doc: dict[str, Any]) -> dict[str, Any]:
    """A row as written (msgpack keeps NaN and infinities): JSON's null for what JSON cannot show."""
    for v in doc.values():
        kind = type(v)
        if (kind is float and not math.isfinite(v)) or kind not in _SCALARS:   # lists and maps: looked into
            return _showable(doc, 0)
    return doc


def decode_conditions(blob: bytes, keep: np.ndarray | None = None) -> list[dict[str, Any] | None]:
    """Each row's conditions as a dict (None where unknown), of the rows `keep` selects (a mask; default all),
    from either form. Rows with equal conditions may share one dict: read only."""
    if blob[:4] == MAGIC + bytes((VERSION, CONDITION_ROWS)):
        return _decode_condition_rows(blob, keep)
    _check(blob, CONDITIONS)
    try:
        (size,) = _HEADER.unpack_from(blob, 4)
        header = json.loads(zlib.decompress(blob[4 + _HEADER.size:4 + _HEADER.size + size]))
        block = codec.decode(blob[4 + _HEADER.size + size:])
        if block.values.shape[1] != len(header) + 1:
            raise ValueError("header and columns disagree")
        values = block.values if keep is None else block.values[keep]
        if not len(values):
            return []
        distinct, row_of = np.unique(values.view(np.uint64), axis=0, return_inverse=True)
        built = _docs(header, distinct.view(np.float64))
    except (zlib.error, struct.error, ValueError, TypeError, IndexError, KeyError) as exc:
        raise CorruptSegment(f"damaged history context: {exc}") from None
    return [built[j] for j in row_of.reshape(-1).tolist()]


def _docs(header: list[list[Any]], rows: np.ndarray) -> list[dict[str, Any] | None]:
    """The dicts of distinct rows (column 0: known; then one column per header key, NaN where absent)."""
    names = [entry[0] for entry in header]
    columns = []
    gaps = False   # some key absent from some row: rows are built key by key
    for (_, kind, *distinct), column in zip(header, rows[:, 1:].T):
        absent = np.isnan(column)
        filled = np.where(absent, 0, column)
        if kind == "f":
            shown = filled.tolist()
        elif kind == "i":
            shown = filled.astype(np.int64).tolist()
        elif kind == "b":
            shown = (filled != 0).tolist()
        elif kind == "d":
            shown = [distinct[0][j] for j in filled.astype(np.intp).tolist()]
        else:
            raise ValueError(f"unknown column kind {kind!r}")
        if absent.any():
            gaps = True
            shown = [_ABSENT if a else v for a, v in zip(absent.tolist(), shown)]
        columns.append(shown)
    out: list[dict[str, Any] | None] = []
    for known, values in zip(rows[:, 0].tolist(), zip(*columns) if columns else ((),) * len(rows)):
        if known != known:
            out.append(None)
        elif gaps:
            out.append({k: v for k, v in zip(names, values) if v is not _ABSENT})
        else:
            out.append(dict(zip(names, values)))
    return out


def as_kept(docs: np.ndarray | None) -> np.ndarray | None:
    """Decoded raw context back to the in-memory form (Conditions), for rows taken back from pending."""
    if docs is None:
        return None
    cache: dict[int, Conditions | None] = {}
    keys: dict[tuple[str, ...], tuple[str, ...]] = {}
    out = []
    for doc in docs.tolist():
        if id(doc) not in cache:
            if doc is None:
                cache[id(doc)] = None
            else:
                names = tuple(doc)
                cache[id(doc)] = (keys.setdefault(names, names), tuple(doc.values()))
        out.append(cache[id(doc)])
    return objects(out)


# --- knob versions of rollup rows ---------------------------------------------------------

def encode_versions(sets: Sequence[tuple[int, ...] | None]) -> bytes | None:
    """Each rollup row's knob versions (None where unknown) as one blob; None if none is known."""
    if all(s is None for s in sets):
        return None
    text = json.dumps([None if s is None else list(s) for s in sets], separators=(",", ":"))
    return MAGIC + bytes((VERSION, VERSIONS)) + zlib.compress(text.encode(), _LEVEL)


def decode_versions(blob: bytes) -> list[tuple[int, ...] | None]:
    _check(blob, VERSIONS)
    try:
        rows = json.loads(zlib.decompress(blob[4:]))
        return [None if s is None else tuple(int(v) for v in s) for s in rows]
    except (zlib.error, ValueError, TypeError) as exc:
        raise CorruptSegment(f"damaged history context: {exc}") from None


def _check(blob: bytes, kind: int) -> None:
    if len(blob) < 4 or blob[:2] != MAGIC or blob[2] != VERSION or blob[3] != kind:
        raise CorruptSegment("not a history context blob of this kind (bad magic, version or kind)")


# --- per tier -----------------------------------------------------------------------------

def encode(raw: bool, context: np.ndarray | None, sealed: bool = True) -> bytes | None:
    """A block's context as its blob (raw: Conditions, columnar in a sealed segment, row by row in a pending
    chunk; rollups: version tuples); None when none is known. Never raises for what an agent sent: a context
    that cannot be written (none known so far) is logged and left out, so it cannot stop every later flush."""
    if context is None:
        return None
    try:
        if not raw:
            return encode_versions(context.tolist())
        rows = context.tolist()
        if sealed and any(row is not None and row[0] for row in rows):
            return encode_conditions(rows)
        return encode_condition_rows(rows)   # a pending chunk, or rows none of which has a key ({}): cheaper so
    except (TypeError, ValueError, OverflowError, RecursionError):
        log.exception("history: the context of %d rows could not be written; the rows are kept without it",
                      len(context))
        return None


def decode(raw: bool, blob: bytes | None, rows: int, keep: np.ndarray | None = None) -> np.ndarray | None:
    """The context `encode` was given, as shown (raw rows' conditions as dicts, rollup rows' version tuples),
    of a segment of `rows` rows; only the rows `keep` selects when it is given. None: no row's context known."""
    if blob is None:
        return None
    wanted = rows if keep is None else int(np.count_nonzero(keep))
    if raw:
        out = decode_conditions(blob, keep)
        if keep is not None and len(keep) != rows:
            raise CorruptSegment(f"history context asked for {len(keep)} rows of a segment of {rows}")
    else:
        out = decode_versions(blob)
        if len(out) != rows:
            raise CorruptSegment(f"history context of {len(out)} rows for a segment of {rows}")
        if keep is not None:
            out = [s for s, k in zip(out, keep.tolist()) if k]
    if len(out) != wanted:
        raise CorruptSegment(f"history context of {len(out)} rows for a segment of {rows}")
    return objects(out)
