"""Resolution at the source: every metric has one, agents round to it, and the codec then stores integers."""
from __future__ import annotations

import numpy as np

from agent.measure.sample import PointMeter
from controller.history.codec import _exponents
from shared.metrics import METRICS, MetricType


def test_every_float_metric_has_a_resolution_and_ints_and_bools_are_exact():
    for m in METRICS:
        if m.type in (MetricType.INT, MetricType.BOOL):
            assert m.decimals == 0, m.key
        else:
            assert 1 <= m.decimals <= 6, m.key
        assert m.to_json()["decimals"] == m.decimals


def test_the_agent_sends_values_rounded_to_their_resolution():
    rng = np.random.default_rng(1)
    flat = {}
    for m in METRICS:
        if m.type is MetricType.BOOL:
            flat[m.key] = np.bool_(True)
        elif m.type is MetricType.INT:
            flat[m.key] = np.int64(rng.integers(0, 10_000))
        else:
            flat[m.key] = np.float64(rng.normal(0, 100))
    flat["packet.avg_size"] = None
    flat["latency.jitter"] = -0.0001            # rounds to -0.0: sent as 0.0
    values = PointMeter.values(None, flat)      # `values` reads only the flat sample
    for m, v in zip(METRICS, values):
        raw = flat[m.key]
        if raw is None:
            assert v is None
        elif m.type is MetricType.BOOL:
            assert v is True
        elif m.type is MetricType.INT:
            assert type(v) is int and v == raw
        else:
            assert type(v) is float and v == round(float(raw), m.decimals), m.key
            assert abs(v - raw) <= 0.5 * 10.0 ** -m.decimals
            assert np.signbit(v) == (v < 0), m.key
    # Each column of such values is stored as integers at (at most) the metric's decimals, never as float bits.
    column = np.array([[v if v is not None else 0.0 for v in values]], dtype=float)
    exponents = _exponents(np.vstack([column, column]))
    for m, e in zip(METRICS, exponents):
        assert e <= m.decimals, m.key
