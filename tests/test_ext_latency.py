"""LatencyStats: rolling min/max/mean/std/percentiles against numpy, windows, and the Cython build against its twin."""
from __future__ import annotations

import math
from types import ModuleType

import numpy as np
import pytest

from ext import latency_py
from tests.twins import load_twin


def _load(name: str) -> ModuleType:
    return load_twin(name, latency_py, "_latency")


@pytest.fixture(params=["py", "c"], ids=["py", "c"])
def mod(request: pytest.FixtureRequest) -> ModuleType:
    return _load(request.param)


def distributions(n: int = 20000) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(42)
    bimodal = np.where(rng.random(n) < 0.7, rng.normal(80, 5, n), rng.normal(300, 20, n))
    return {
        "normal": rng.normal(150, 20, n),
        "lognormal": rng.lognormal(4.0, 1.0, n),          # heavy right tail
        "bimodal": bimodal,
        "constant": np.full(n, 42.5),
        "integers": rng.integers(20, 25, n).astype(float),  # many ties
    }


@pytest.mark.parametrize("name", list(distributions()))
def test_rolling_window_matches_numpy_within_one_percent(mod, name):
    data = distributions()[name]
    ls = mod.LatencyStats(capacity=4096)
    ls.add_many(data)
    win = data[-4096:]
    s = ls.summary()
    assert s["count"] == 4096
    assert s["min"] == win.min() and s["max"] == win.max()
    assert s["mean"] == pytest.approx(win.mean(), rel=1e-12)
    assert s["std"] == pytest.approx(win.std(), rel=1e-9, abs=1e-12)
    for p in (50, 95, 99):
        ref = np.percentile(win, p)
        assert abs(s[f"p{p}"] - ref) <= 0.01 * abs(ref), p
        assert s[f"p{p}"] == pytest.approx(ref, rel=1e-12)     # exact order statistics, in fact


@pytest.mark.parametrize("n", [1, 2, 3, 10, 101, 1000])
def test_any_percentile_of_small_windows_matches_numpy(mod, n):
    data = np.random.default_rng(n).lognormal(3.0, 0.8, n)
    ls = mod.LatencyStats(capacity=n)
    ls.add_many(data)
    for p in (0.0, 0.1, 25.0, 33.3, 50.0, 90.0, 99.9, 100.0):
        assert ls.percentile(p) == pytest.approx(np.percentile(data, p), rel=1e-12), p


def test_only_the_last_capacity_values_count(mod):
    ls = mod.LatencyStats(capacity=100)
    for v in range(1000):
        ls.add(float(v))
    s = ls.summary()
    assert s["count"] == 100 and s["min"] == 900.0 and s["max"] == 999.0 and s["mean"] == 949.5


def test_time_window_expires_old_values(mod):
    ls = mod.LatencyStats(capacity=1000, window_ms=1000.0)
    for k in range(50):
        ls.add(1000.0 if k < 25 else 10.0, now_ms=100.0 * k)     # t = 0 .. 4900
    s = ls.summary(now_ms=4900.0)                                  # keeps t >= 3900: 11 values of 10.0
    assert s["count"] == 11 and s["max"] == 10.0 and s["p99"] == 10.0
    assert ls.summary(now_ms=10000.0)["count"] == 0


def test_per_sample_window_resets(mod):
    ls = mod.LatencyStats(capacity=8)
    for v in (5.0, 1.0, 9.0):
        ls.add(v)
    assert ls.window() == {"count": 3, "min": 1.0, "max": 9.0, "mean": 5.0}
    ls.reset_window()
    w = ls.window()
    assert w["count"] == 0 and math.isnan(w["min"]) and math.isnan(w["mean"])
    ls.add(4.0)
    assert ls.window() == {"count": 1, "min": 4.0, "max": 4.0, "mean": 4.0}
    assert ls.summary()["count"] == 4                              # the rolling window is not reset


def test_empty_stats_are_nan_and_bad_input_is_refused(mod):
    ls = mod.LatencyStats()
    s = ls.summary()
    assert s["count"] == 0 and all(math.isnan(s[k]) for k in ("min", "max", "mean", "std", "p50", "p95", "p99"))
    assert math.isnan(ls.percentile(50.0))
    with pytest.raises(ValueError):
        ls.add(float("nan"))
    with pytest.raises(ValueError):
        ls.percentile(101.0)
    with pytest.raises(ValueError):
        mod.LatencyStats(capacity=0)
    ls.add(3.0)
    ls.clear()
    assert ls.count == 0


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        (isinstance(a[k], float) and math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k] for k in a)


def test_cython_and_python_twins_agree_exactly():
    c_mod = _load("c")
    rng = np.random.default_rng(8)
    py, c = latency_py.LatencyStats(capacity=777, window_ms=3000.0), c_mod.LatencyStats(capacity=777, window_ms=3000.0)
    t = 0.0
    for block in range(60):
        vals = rng.lognormal(3.5, 0.9, int(rng.integers(1, 200)))
        times = t + np.cumsum(rng.exponential(20.0, len(vals)))
        t = float(times[-1])
        py.add_many(vals, times)
        c.add_many(vals, times)
        assert _same(py.summary(now_ms=t), c.summary(now_ms=t)), block
        assert _same(py.window(), c.window())
        for p in (1.0, 12.5, 87.0):
            assert py.percentile(p) == c.percentile(p)
        if block % 7 == 0:
            py.reset_window()
            c.reset_window()
    assert py.count == c.count

