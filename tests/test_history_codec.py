"""The segment codec is lossless bit for bit (nulls, NaN, -0.0, bools, ints, counters, floats) and refuses damage."""
from __future__ import annotations

import numpy as np
import pytest

from controller.history import codec
from controller.history.codec import CorruptSegment, decode, encode
from shared.metrics import METRICS, MetricKind, MetricType

T0 = 1_700_000_000_000


def roundtrip(ts: np.ndarray, values: np.ndarray, nulls: np.ndarray | None = None, **kw) -> codec.Block:
    nulls = np.zeros(values.shape, bool) if nulls is None else nulls
    block = decode(encode(ts, values, nulls, **kw))
    assert block.ts.dtype == np.int64 and np.array_equal(block.ts, ts)
    assert np.array_equal(block.nulls, nulls)
    kept = ~nulls
    assert np.array_equal(block.values.view(np.uint64)[kept], values.view(np.uint64)[kept]), "values differ in bits"
    assert np.isnan(block.values[nulls]).all()
    return block


def times(n: int, rng: np.random.Generator) -> np.ndarray:
    return T0 + np.cumsum(rng.integers(140, 160, n)).astype(np.int64)


def real_like(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A minute of one point as agents send it: every metric rounded to its resolution, counters rising."""
    cols = []
    for m in METRICS:
        if m.type is MetricType.BOOL:
            cols.append((rng.random(n) < 0.1).astype(float))
        elif m.kind is MetricKind.COUNTER:
            cols.append(np.cumsum(rng.integers(0, 30, n)).astype(float) + 10_000)
        elif m.type is MetricType.TIMESTAMP:
            cols.append(np.round(np.maximum.accumulate(T0 / 1000 + rng.random(n) * 60), 3))
        elif m.type is MetricType.INT:
            cols.append(rng.integers(0, 3200, n).astype(float))
        else:
            walk = 100 + np.cumsum(rng.normal(0, 1, n))
            cols.append(np.array([round(v, m.decimals) + 0.0 for v in walk]))
    return times(n, rng), np.column_stack(cols)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_real_like_minute_round_trips_and_compresses_well(seed):
    rng = np.random.default_rng(seed)
    ts, values = real_like(400, rng)
    nulls = np.zeros(values.shape, bool)
    nulls[rng.random(values.shape) < 0.02] = True
    values[nulls] = np.nan
    blob = encode(ts, values, nulls)
    roundtrip(ts, values, nulls)
    assert len(blob) < values.size * 2.5  # random walks at full resolution: far below the 8 bytes of a float


def test_full_precision_random_floats_round_trip_through_the_float_bits_path():
    rng = np.random.default_rng(7)
    values = rng.normal(0, 1e3, (300, 20)) * 10.0 ** rng.integers(-12, 12, 20)
    roundtrip(times(300, rng), values)


def test_special_floats_round_trip_bit_for_bit():
    ts = np.arange(6, dtype=np.int64) * 150 + T0
    column = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 5e-324])
    odd_nan = np.array([0x7FF8_0000_0000_1234], dtype=np.uint64).view(np.float64)
    values = np.column_stack([column, np.r_[odd_nan, column[1:]], np.full(6, -0.0), np.full(6, 0.1)])
    roundtrip(ts, values)


def test_nulls_all_null_constant_and_empty_columns():
    rng = np.random.default_rng(3)
    n = 50
    values = np.column_stack([np.full(n, np.nan), np.full(n, 42.5), np.where(np.arange(n) % 7 == 0, np.nan, 1.25),
                              np.r_[np.full(10, np.nan), np.arange(n - 10, dtype=float)]])
    roundtrip(times(n, rng), values, np.isnan(values))


def test_nan_as_a_value_differs_from_null():
    ts = np.array([T0, T0 + 150], dtype=np.int64)
    values = np.array([[np.nan, 1.0], [2.0, np.nan]])
    nulls = np.array([[False, False], [False, True]])  # the first NaN is a value, the second a null
    block = roundtrip(ts, values, nulls)
    assert not block.nulls[0, 0] and np.isnan(block.values[0, 0])


def test_counters_with_resets_bools_and_big_integers():
    rng = np.random.default_rng(4)
    n = 400
    counter = np.cumsum(rng.integers(0, 5, n)).astype(float)
    counter[200:] -= counter[200] - 3  # an agent restart: the counter starts over
    bools = (rng.random(n) < 0.5).astype(float)
    big = 2.0 ** 52 + np.arange(n)
    negative = -np.cumsum(rng.integers(0, 1000, n)).astype(float)
    roundtrip(times(n, rng), np.column_stack([counter, bools, big, negative]))


@pytest.mark.parametrize("n", [1, 2, 3])
def test_short_blocks(n):
    rng = np.random.default_rng(n)
    ts, values = real_like(n, rng)
    roundtrip(ts, values)


def test_irregular_and_repeated_timestamps():
    ts = np.array([T0, T0, T0 + 1, T0 + 90_000, T0 + 90_150, T0 + 50], dtype=np.int64)  # dup, gap, going back
    roundtrip(ts, np.arange(12, dtype=float).reshape(6, 2) / 8)


def test_decimal_columns_are_stored_as_small_integers():
    rng = np.random.default_rng(5)
    n = 400
    rounded = np.round(100 + np.cumsum(rng.normal(0, 0.5, n)), 2)
    noisy = rounded + rng.normal(0, 1e-9, n)  # the same series with float noise in the last digits
    ts = times(n, rng)
    small = len(encode(ts, rounded[:, None]))
    big = len(encode(ts, noisy[:, None]))
    assert small * 2 < big


def test_lzma_option_round_trips():
    rng = np.random.default_rng(6)
    ts, values = real_like(100, rng)
    roundtrip(ts, values, try_lzma=True)


def test_damaged_blobs_are_refused_with_corrupt_segment():
    rng = np.random.default_rng(8)
    ts, values = real_like(20, rng)
    blob = encode(ts, values)
    for bad in (b"", b"XX" + blob[2:], blob[:3] + b"\x07" + blob[4:], blob[:len(blob) // 2], blob[:4] + b"junk" * 9):
        with pytest.raises(CorruptSegment):
            decode(bad)


def test_a_segment_needs_rows_with_one_time_each():
    with pytest.raises(ValueError):
        encode(np.empty(0, np.int64), np.empty((0, 3)))
    with pytest.raises(ValueError):
        encode(np.array([T0], np.int64), np.zeros((2, 3)))
