"""Quantile models: a known effect is learned, calibrated intervals cover, monotone physics holds, bytes round-trip."""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from controller.optimizer.models import NotEnoughData, Prediction, QuantileModel, TrainingSet, train_in_pool

NAMES = ("x1", "x2", "x3", "x4")


def world(n: int, seed: int, noise: float = 1.0) -> TrainingSet:
    """y = 2 x1 - x2 + noise whose spread grows with x3; x4 is irrelevant; some values missing."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 10, (n, 4)).astype(np.float32)
    y = 2 * X[:, 0] - X[:, 1] + rng.normal(0, noise * (0.3 + X[:, 2] / 5), n)
    X[rng.random(n) < 0.03, 3] = np.nan
    groups = np.arange(n) // 10                     # ten consecutive rows share a configuration
    return TrainingSet(X, y, 1000.0 + np.arange(n), NAMES, groups)


@pytest.fixture(scope="module")
def model() -> QuantileModel:
    return QuantileModel.train(world(3000, 1), "y", seed=0)


def test_the_known_effect_is_learned(model: QuantileModel) -> None:
    fresh = world(2000, 2)
    p = model.predict(fresh.features)
    truth = 2 * fresh.features[:, 0] - fresh.features[:, 1]
    assert np.mean(np.abs(p.median - truth)) < 1.0
    assert set(model.report.importances) >= {"x1", "x2"}
    assert model.report.importances["x1"] > model.report.importances.get("x4", 0.0)


def test_calibrated_intervals_cover_about_eighty_percent(model: QuantileModel) -> None:
    fresh = world(4000, 3)
    p = model.predict(fresh.features)
    inside = (fresh.target >= p.lo) & (fresh.target <= p.hi)
    assert 0.75 <= inside.mean() <= 0.85
    assert 0.7 <= model.report.coverage <= 0.9          # as measured on the newest holdout rows
    noisy = fresh.features[:, 2] > 7
    quiet = fresh.features[:, 2] < 3
    assert (p.hi - p.lo)[noisy].mean() > 1.5 * (p.hi - p.lo)[quiet].mean()


def test_conformal_step_repairs_raw_under_coverage() -> None:
    # Few noisy rows: deep trees fit the training noise, so the raw quantiles are too narrow on new data.
    small = QuantileModel.train(world(400, 4, noise=3.0), "y", seed=0, min_rows=100)
    assert small.report.raw_coverage < 0.7
    assert small.report.conformal_offset > 0
    fresh = world(3000, 5, noise=3.0)
    p = small.predict(fresh.features)
    assert 0.75 <= ((fresh.target >= p.lo) & (fresh.target <= p.hi)).mean() <= 0.9


def test_monotone_constraint_holds_along_a_grid() -> None:
    rng = np.random.default_rng(6)
    X = rng.uniform(0, 10, (2000, 4)).astype(np.float32)
    y = np.sin(X[:, 0]) * 3 + X[:, 1] + rng.normal(0, 1, 2000)   # not monotone in x1 by itself
    data = TrainingSet(X, y, np.arange(2000.0), NAMES)
    m = QuantileModel.train(data, "y", monotone={"x1": 1}, seed=0)
    grid = np.tile(np.array([5, 5, 5, 5], np.float32), (50, 1))
    grid[:, 0] = np.linspace(0, 10, 50)
    assert np.all(np.diff(m.predict(grid).median) >= -1e-6)


def test_quantiles_never_cross_and_probability_is_monotone(model: QuantileModel) -> None:
    p = model.predict(world(500, 7).features)
    assert np.all(p.lo <= p.median) and np.all(p.median <= p.hi)
    row = Prediction(p.lo[:1], p.median[:1], p.hi[:1])
    thresholds = np.linspace(float(p.lo[0]) - 10, float(p.hi[0]) + 10, 200)
    probs = np.array([row.probability_below(t)[0] for t in thresholds])
    assert np.all(np.diff(probs) >= -1e-12) and probs[0] < 0.02 and probs[-1] > 0.98
    assert row.probability_below(float(p.median[0]))[0] == pytest.approx(0.5)
    assert row.probability_below(float(p.hi[0]))[0] == pytest.approx(0.9)


def test_too_few_rows_and_missing_targets() -> None:
    data = world(300, 8)
    target = data.target.copy()
    target[:200] = np.nan
    with pytest.raises(NotEnoughData, match="100 rows with a value, 200 needed"):
        QuantileModel.train(TrainingSet(data.features, target, data.times, NAMES, data.groups), "y")


def test_bytes_round_trip_and_a_real_process_pool(model: QuantileModel) -> None:
    X = world(200, 9).features
    again = QuantileModel.from_bytes(model.to_bytes())
    a, b = model.predict(X), again.predict(X)
    assert np.array_equal(a.lo, b.lo) and np.array_equal(a.median, b.median) and np.array_equal(a.hi, b.hi)
    assert again.report == model.report
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        blob = pool.submit(train_in_pool, world(800, 10), "y", {}, 0.8, 0, 10.0, 1.0e9).result(timeout=120)
    trained = QuantileModel.from_bytes(blob)
    assert trained.target == "y" and trained.report.rows == 800 and trained.report.trained_at == 1.0e9
