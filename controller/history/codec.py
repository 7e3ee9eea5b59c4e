"""Columnar segment codec: a block of timestamped rows compressed losslessly, each way in a few numpy calls.

A block is `ts` (int64 milliseconds, n rows) and `values` (float64, n x k) with a null mask.
Every column, timestamps first, becomes one unsigned 64-bit code per row:

- decimal columns (ALP-style): the smallest exponent e in 0..MAX_DECIMALS for which
  round(v * 10^e) / 10^e reproduces every value bit for bit; the integers are then stored as
  they are minus the column's minimum (order 0), as deltas along time (order 1) or as
  deltas of deltas (order 2, counters and timestamps), whichever is smallest, zigzagged;
- any other column (full-precision floats, NaN, -0.0): the float64 bits XORed with the
  previous row's (Gorilla's idea, without its bit-level packing).

The first one or two codes of a differenced column (the column's starting point) go to a
header, so the stream holds only small numbers; each column keeps as many byte planes as
its largest code needs (a constant column none), planes are laid out column by column and
the whole body is deflated (zlib, or lzma when that is smaller). Nulls are filled with the
previous value before encoding (so they cost nothing) and kept in a bitmap, present only
for the columns that have any. Decoding does the same steps backwards, whatever the column
count: one decompression, one pass per byte plane, one cumulative sum per order.
"""
from __future__ import annotations

import lzma
import struct
import zlib
from dataclasses import dataclass

import numpy as np

MAGIC = b"TH"
VERSION = 1
MAX_DECIMALS = 9
FLOAT_BITS = 255            # exponent marker of a column stored as XORed float64 bits
_EXACT_LIMIT = float(2 ** 53)  # beyond this a float64 no longer holds every integer
_ZLIB, _LZMA = 0, 1
_ORDER_XOR = 3
_HEAD = struct.Struct("<IHH")  # rows, columns (timestamps included), columns with nulls
_POW10 = 10.0 ** np.arange(MAX_DECIMALS + 1)
_SMALL = 4096  # values in a block below which the exponent search is one broadcast pass


class CorruptSegment(ValueError):
    """A blob that is not a segment of this codec (or was damaged)."""


@dataclass(frozen=True)
class Block:
    """Rows of one point: timestamps (ms), values (NaN where null) and the null mask.

    `context` is what the store keeps of each row beside its values, in a blob of its own
    (controller.history.context): a raw row's conditions, a rollup row's knob versions. This
    codec neither writes nor reads it; None means no row's context is known.
    """
    ts: np.ndarray      # int64[n]
    values: np.ndarray  # float64[n, k]
    nulls: np.ndarray   # bool[n, k]
    context: np.ndarray | None = None  # object[n], or None

    @classmethod
    def of(cls, ts: np.ndarray, values: np.ndarray) -> Block:
        """A block whose nulls are its NaNs (the store's convention: it never keeps a NaN as a value)."""
        values = np.asarray(values, dtype=np.float64)
        return cls(np.asarray(ts, dtype=np.int64), values, np.isnan(values))

    def __len__(self) -> int:
        return len(self.ts)

    def contexts(self) -> np.ndarray:
        """The per-row context as an object array (None in every row when none is known)."""
        return np.full(len(self.ts), None, dtype=object) if self.context is None else self.context

    def take(self, rows: np.ndarray) -> Block:
        """The rows a mask or an index array picks, context included."""
        return Block(self.ts[rows], self.values[rows], self.nulls[rows],
                     None if self.context is None else self.context[rows])


def encode(ts: np.ndarray, values: np.ndarray, nulls: np.ndarray | None = None, level: int = 6,
           try_lzma: bool = False) -> bytes:
    """`values` (n x k float64) at `ts` (n int64 ms) as one blob; `nulls` marks values that are absent."""
    values = np.asarray(values, dtype=np.float64)
    n, k = values.shape
    if n == 0 or len(ts) != n:
        raise ValueError(f"a segment needs at least one row and one timestamp per row ({len(ts)} for {n})")
    nulls = np.zeros((n, k), dtype=bool) if nulls is None else np.asarray(nulls, dtype=bool)
    matrix = np.empty((n, k + 1))
    matrix[:, 0] = np.asarray(ts, dtype=np.int64)
    matrix[:, 1:] = _fill_forward(values, nulls)
    exponents = _exponents(matrix)
    codes, orders, base, heads = _codes(matrix, exponents)
    widths = _widths(codes)
    null_cols = np.flatnonzero(nulls.any(axis=0)).astype(np.uint16)
    parts = [_HEAD.pack(n, k + 1, len(null_cols)), exponents.tobytes(), orders.tobytes(), widths.tobytes(),
             base.tobytes(), heads.tobytes(), null_cols.tobytes(), _planes(codes, widths),
             np.packbits(nulls[:, null_cols].T, axis=1).tobytes()]
    body = b"".join(parts)
    packed, method = zlib.compress(body, level), _ZLIB
    if try_lzma:
        alternative = lzma.compress(body, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2, "preset": 6}])
        if len(alternative) < len(packed):
            packed, method = alternative, _LZMA
    return MAGIC + bytes((VERSION, method)) + packed


def decode(blob: bytes) -> Block:
    """The block `encode` was given, bit for bit (values at null positions read NaN)."""
    if blob[:2] != MAGIC or len(blob) < 4 or blob[2] != VERSION:
        raise CorruptSegment("not a history segment (bad magic or version)")
    try:
        if blob[3] == _ZLIB:
            body = zlib.decompress(blob[4:])
        else:
            body = lzma.decompress(blob[4:], format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}])
        return _decode_body(body)
    except (zlib.error, lzma.LZMAError, struct.error, ValueError, IndexError) as exc:
        raise CorruptSegment(f"damaged history segment: {exc}") from None


def _decode_body(body: bytes) -> Block:
    n, k, m = _HEAD.unpack_from(body)
    off = _HEAD.size
    exponents = np.frombuffer(body, np.uint8, k, off)
    orders = np.frombuffer(body, np.uint8, k, off + k)
    widths = np.frombuffer(body, np.uint8, k, off + 2 * k)
    off += 3 * k
    base = np.frombuffer(body, np.int64, k, off)
    heads = np.frombuffer(body, np.int64, 2 * k, off + 8 * k).reshape(k, 2)
    null_cols = np.frombuffer(body, np.uint16, m, off + 24 * k)
    off += 24 * k + 2 * m
    # Column-major from here on (a column is a contiguous row of these arrays): gathers and cumulative
    # sums run over contiguous memory; the values come out as the transposed view, rows x columns.
    codes = np.zeros((k, n), dtype=np.uint64)
    as_bytes = codes.view(np.uint8).reshape(k, n, 8)  # little-endian: byte `plane` of each code
    for plane in range(int(widths.max(initial=0))):
        cols = np.flatnonzero(widths > plane)
        size = n * len(cols)
        as_bytes[cols, :, plane] = np.frombuffer(body, np.uint8, size, off).reshape(len(cols), n)
        off += size
    ints = _undo_codes(codes, orders, base, heads)
    decimal = np.flatnonzero(exponents != FLOAT_BITS)
    floats = np.flatnonzero(exponents == FLOAT_BITS)
    matrix = np.empty((k, n))
    matrix[decimal] = ints[decimal] / _POW10[exponents[decimal]][:, None]
    if len(floats):
        matrix[floats] = ints[floats].view(np.float64)
    nulls = np.zeros((k - 1, n), dtype=bool)
    if m:
        bits = np.frombuffer(body, np.uint8, m * ((n + 7) // 8), off).reshape(m, -1)
        nulls[null_cols.astype(np.intp)] = np.unpackbits(bits, axis=1, count=n).astype(bool)
        matrix[1:][nulls] = np.nan
    return Block(ints[0].copy(), matrix[1:].T, nulls.T)


def _fill_forward(values: np.ndarray, nulls: np.ndarray) -> np.ndarray:
    """Each null replaced by the previous value in its column (0 before the first): deltas of 0, no cost."""
    if not nulls.any():
        return values
    rows = np.where(nulls, 0, np.arange(len(values))[:, None])
    np.maximum.accumulate(rows, axis=0, out=rows)
    filled = np.where(nulls, 0.0, values)
    return filled[rows, np.arange(values.shape[1])]


def _exponents(matrix: np.ndarray) -> np.ndarray:
    """Per column the smallest decimal exponent that round-trips every value exactly, else FLOAT_BITS."""
    if matrix.size <= _SMALL:
        return _exponents_at_once(matrix)
    bits = matrix.view(np.uint64)
    found = np.full(matrix.shape[1], FLOAT_BITS, dtype=np.uint8)
    open_cols = np.arange(matrix.shape[1])
    with np.errstate(invalid="ignore", over="ignore"):
        for e in range(MAX_DECIMALS + 1):
            sub = matrix[:, open_cols]
            scaled = np.round(sub * _POW10[e]) + 0.0  # +0.0: a -0.0 must fail (integers have no sign of zero)
            exact = (np.abs(scaled) < _EXACT_LIMIT) & ((scaled / _POW10[e]).view(np.uint64) == bits[:, open_cols])
            done = exact.all(axis=0)
            found[open_cols[done]] = e
            open_cols = open_cols[~done]
            if not len(open_cols):
                break
    return found


def _exponents_at_once(matrix: np.ndarray) -> np.ndarray:
    """As _exponents, every exponent tried in one broadcast pass (cheaper than a loop for small blocks)."""
    p = _POW10[:, None, None]
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = np.round(matrix[None] * p) + 0.0
        exact = ((np.abs(scaled) < _EXACT_LIMIT) & ((scaled / p).view(np.uint64) == matrix.view(np.uint64)[None])).all(axis=1)
    return np.where(exact.any(axis=0), exact.argmax(axis=0), FLOAT_BITS).astype(np.uint8)


def _codes(matrix: np.ndarray, exponents: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Unsigned codes per column, with the order chosen, the order-0 base and the differenced columns' heads."""
    n, k = matrix.shape
    decimal = exponents != FLOAT_BITS
    ints = np.zeros((n, k), dtype=np.int64)
    with np.errstate(invalid="ignore"):
        ints[:, decimal] = np.round(matrix[:, decimal] * _POW10[exponents[decimal]]).astype(np.int64)
    base = np.where(decimal, ints.min(axis=0), 0).astype(np.int64)
    d1 = np.diff(ints, axis=0, prepend=0)
    d2 = np.diff(d1, axis=0, prepend=0)
    heads = np.zeros((k, 2), dtype=np.int64)
    candidates = [(ints - base).view(np.uint64), _zigzag(_headless(d1, 1)), _zigzag(_headless(d2, 2))]
    cost = np.stack([_bit_cost(c) for c in candidates])
    orders = np.where(decimal, np.argmin(cost, axis=0), _ORDER_XOR).astype(np.uint8)
    if n < 2:
        orders[decimal] = 0
    codes = np.choose(np.minimum(orders, 2)[None, :], candidates) if n else candidates[0]
    heads[orders == 1, 0] = d1[0, orders == 1]
    heads[orders == 2, 0] = d2[0, orders == 2]
    if n > 1:
        heads[orders == 2, 1] = d2[1, orders == 2]
    floats = np.flatnonzero(~decimal)
    if len(floats):
        raw = matrix[:, floats].view(np.uint64)
        xored = raw.copy()
        xored[1:] ^= raw[:-1]
        heads[floats, 0] = raw[0].view(np.int64)
        xored[0] = 0
        codes[:, floats] = xored
    return np.ascontiguousarray(codes, dtype=np.uint64), orders, base, heads


def _headless(diffs: np.ndarray, order: int) -> np.ndarray:
    out = diffs.copy()
    out[:order] = 0
    return out


def _zigzag(x: np.ndarray) -> np.ndarray:
    return ((x << 1) ^ (x >> 63)).view(np.uint64)


def _unzigzag(u: np.ndarray) -> np.ndarray:
    return (u >> np.uint64(1)).view(np.int64) ^ -(u & np.uint64(1)).view(np.int64)


def _bit_cost(codes: np.ndarray) -> np.ndarray:
    """About how many bits a column of codes takes: log2 of each code, summed."""
    return np.log2(codes.astype(np.float64) + 1.0).sum(axis=0)


def _widths(codes: np.ndarray) -> np.ndarray:
    """Bytes the largest code of each column needs (0 for an all-zero column)."""
    top = codes.max(axis=0) if len(codes) else np.zeros(codes.shape[1], dtype=np.uint64)
    widths = np.zeros(codes.shape[1], dtype=np.uint8)
    for plane in range(8):
        widths[top >= np.uint64(1) << np.uint64(8 * plane)] = plane + 1
    widths[top == 0] = 0
    return widths


def _planes(codes: np.ndarray, widths: np.ndarray) -> bytes:
    """Byte plane 0 (least significant) of every column that has one, column by column, then plane 1, ..."""
    n = len(codes)
    as_bytes = codes.view(np.uint8).reshape(n, codes.shape[1], 8)
    return b"".join(as_bytes[:, widths > plane, plane].T.tobytes() for plane in range(int(widths.max(initial=0))))


def _undo_codes(codes: np.ndarray, orders: np.ndarray, base: np.ndarray, heads: np.ndarray) -> np.ndarray:
    """The integers (or float bits, as int64) each column's codes stand for; columns x rows."""
    out = np.empty(codes.shape, dtype=np.int64)
    n = codes.shape[1]
    plain = np.flatnonzero(orders == 0)
    out[plain] = codes[plain].view(np.int64) + base[plain][:, None]
    for order in (1, 2):
        cols = np.flatnonzero(orders == order)
        if not len(cols):
            continue
        x = _unzigzag(codes[cols])
        x[:, 0] = heads[cols, 0]
        if order == 2 and n > 1:
            x[:, 1] = heads[cols, 1]
        for _ in range(order):
            np.cumsum(x, axis=1, out=x)
        out[cols] = x
    xor = np.flatnonzero(orders == _ORDER_XOR)
    if len(xor):
        bits = codes[xor]
        bits[:, 0] = heads[xor, 0].view(np.uint64)
        out[xor] = np.bitwise_xor.accumulate(bits, axis=1).view(np.int64)
    return out
