"""Quantile models of one target with calibrated intervals: XGBoost `reg:quantileerror`, conformalized on a time holdout.

One booster per target predicts three quantiles at once (`quantile_alpha` = [lo, 0.5, hi],
XGBoost >= 2.0). The rows are split by time, never at random (windows next to each other are
alike, so a random split would flatter the model): the oldest 70 % train (with early stopping
on the last part of them), the next 15 % calibrate, the newest 15 % test. Rows of one group
(one knob set of one point from one source) stay on one side of every cut.

Calibration is conformalized quantile regression (Romano et al., 2019): on the calibration
part the score of each row is max(lo - y, y - hi); the intervals are widened (or narrowed, a
negative offset, when the raw ones over-cover) by the ceil((n + 1)(coverage)) / n empirical
quantile of those scores. Coverage is then measured on the test part, which neither training
nor calibration saw: that is the figure GET /optimize/models reports. Crossing quantiles are
repaired by sorting each row's three values.

`probability_below` reads the calibrated quantiles as a distribution: piecewise linear
between (lo, alpha_lo), (median, 0.5), (hi, alpha_hi), with normal tails outside matched to
the interval's width — enough for confidence and risk figures, and never sharper than the
calibrated interval.
"""
from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from statistics import NormalDist

import numpy as np
import xgboost as xgb

_FORMAT = 1


class NotEnoughData(Exception):
    """Too few rows with a known target to train and check a model honestly."""


@dataclass(frozen=True)
class TrainingSet:
    features: np.ndarray                 # (n, f) float32, NaN = missing
    target: np.ndarray                   # (n,) float64; rows with NaN are dropped by train()
    times: np.ndarray                    # (n,) epoch seconds: the holdout is the newest rows
    feature_names: tuple[str, ...]
    groups: np.ndarray | None = None     # (n,) int ids; a group never straddles a cut


@dataclass(frozen=True)
class Prediction:
    lo: np.ndarray
    median: np.ndarray
    hi: np.ndarray
    alpha_lo: float = 0.1
    alpha_hi: float = 0.9

    def probability_below(self, threshold: float | np.ndarray) -> np.ndarray:
        """P(y < threshold) per row (see the module docstring for the distribution assumed)."""
        t = np.broadcast_to(np.asarray(threshold, dtype=float), self.median.shape)
        lo, med, hi = self.lo, self.median, self.hi
        a, b = self.alpha_lo, self.alpha_hi
        z = _norm_ppf(b)
        sigma = np.maximum((hi - lo) / (2 * z), 1e-12)
        below = np.empty_like(med, dtype=float)
        left = t < lo
        mid_lo = (t >= lo) & (t < med)
        mid_hi = (t >= med) & (t < hi)
        right = t >= hi
        below[left] = a * _norm_cdf((t[left] - lo[left]) / sigma[left]) / 0.5
        below[mid_lo] = a + (0.5 - a) * (t[mid_lo] - lo[mid_lo]) / np.maximum(med[mid_lo] - lo[mid_lo], 1e-12)
        below[mid_hi] = 0.5 + (b - 0.5) * (t[mid_hi] - med[mid_hi]) / np.maximum(hi[mid_hi] - med[mid_hi], 1e-12)
        below[right] = 1 - (1 - b) * (1 - _norm_cdf((t[right] - hi[right]) / sigma[right])) / 0.5
        return np.clip(below, 0.0, 1.0)


@dataclass(frozen=True)
class ModelReport:
    target: str
    rows: int
    trained_at: float
    holdout_rows: int
    holdout_mae: float
    coverage: float
    raw_coverage: float
    nominal_coverage: float
    conformal_offset: float
    mean_interval_width: float
    rounds: int = 0
    seconds: float = 0.0
    importances: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {"target": self.target, "rows": self.rows,
                "trainedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.trained_at)),
                "holdoutRows": self.holdout_rows, "holdoutMae": round(self.holdout_mae, 5),
                "coverage": round(self.coverage, 4), "rawCoverage": round(self.raw_coverage, 4),
                "nominalCoverage": self.nominal_coverage, "conformalOffset": round(self.conformal_offset, 5),
                "meanIntervalWidth": round(self.mean_interval_width, 5),
                "importances": {k: round(v, 4) for k, v in self.importances.items()}}


class QuantileModel:
    def __init__(self, booster: xgb.Booster, target: str, feature_names: tuple[str, ...], offset: float,
                 alphas: tuple[float, float, float], report: ModelReport, ignored: tuple[str, ...] = ()) -> None:
        self.booster, self.target, self.feature_names = booster, target, feature_names
        self.offset, self.alphas, self.report = offset, alphas, report
        self.ignored = ignored
        self._ignored_idx = [feature_names.index(n) for n in ignored if n in feature_names]

    def _masked(self, features: np.ndarray) -> np.ndarray:
        """Features the model was told to ignore are missing for it, in training and prediction alike."""
        X = np.array(features, dtype=np.float32, copy=bool(self._ignored_idx))
        if self._ignored_idx:
            X[:, self._ignored_idx] = np.nan
        return X

    @classmethod
    def train(cls, data: TrainingSet, target: str, *, monotone: Mapping[str, int] | None = None,
              coverage: float = 0.8, min_rows: int = 200, seed: int = 0, max_rounds: int = 300,
              time_budget_s: float = 20.0, trained_at: float | None = None,
              ignore: tuple[str, ...] = ()) -> QuantileModel:
        """`ignore`: features to treat as missing (e.g. the hour of day while history spans less than two days,
        when it would only stand for "recently" and tie the configuration to the clock)."""
        started = time.monotonic()
        keep = ~np.isnan(data.target)
        names = list(data.feature_names)
        X = cls(None, target, tuple(names), 0.0, (0.1, 0.5, 0.9), _EMPTY, ignore)._masked(data.features[keep])
        y, t = data.target[keep], data.times[keep]
        groups = data.groups[keep] if data.groups is not None else np.arange(len(y))
        if len(y) < min_rows:
            raise NotEnoughData(f"{target}: {len(y)} rows with a value, {min_rows} needed")
        train, calib, test = _time_split(t, groups)
        if min(len(calib), len(test)) < 20:
            raise NotEnoughData(f"{target}: {len(y)} rows in too few distinct groups for a calibration and a test "
                                "part of 20 rows each")
        half = (1 - coverage) / 2
        alphas = (half, 0.5, 1 - half)
        constraints = tuple(int((monotone or {}).get(n, 0)) for n in names)
        params = {"objective": "reg:quantileerror", "quantile_alpha": np.array(alphas), "tree_method": "hist",
                  "max_depth": 6, "eta": 0.08, "min_child_weight": 4, "subsample": 0.9, "colsample_bytree": 0.8,
                  "lambda": 1.0, "nthread": 1, "seed": seed}
        if any(constraints):
            params["monotone_constraints"] = "(" + ",".join(map(str, constraints)) + ")"
        fit, stop = _tail_split(train, t)
        dfit = xgb.DMatrix(X[fit], label=y[fit], feature_names=names, missing=np.nan)
        dstop = xgb.DMatrix(X[stop], label=y[stop], feature_names=names, missing=np.nan)
        budget = _Budget(time_budget_s - (time.monotonic() - started))
        booster = xgb.train(params, dfit, num_boost_round=max_rounds, evals=[(dstop, "stop")],
                            early_stopping_rounds=25, verbose_eval=False, callbacks=[budget])
        rounds = booster.best_iteration + 1 if hasattr(booster, "best_iteration") else booster.num_boosted_rounds()
        booster = booster[:rounds]
        raw = cls(booster, target, tuple(names), 0.0, alphas, _EMPTY, ignore)
        pc = raw.predict(X[calib])
        scores = np.maximum(pc.lo - y[calib], y[calib] - pc.hi)
        n = len(scores)
        level = min(1.0, math.ceil((n + 1) * coverage) / n)
        offset = float(np.quantile(scores, level, method="higher"))
        model = cls(booster, target, tuple(names), offset, alphas, _EMPTY, ignore)
        pt, pr = model.predict(X[test]), raw.predict(X[test])
        inside = (y[test] >= pt.lo) & (y[test] <= pt.hi)
        raw_inside = (y[test] >= pr.lo) & (y[test] <= pr.hi)
        model.report = ModelReport(
            target, int(len(y)), time.time() if trained_at is None else trained_at, int(len(test)),
            float(np.mean(np.abs(pt.median - y[test]))), float(inside.mean()), float(raw_inside.mean()),
            coverage, offset, float(np.mean(pt.hi - pt.lo)), int(rounds), time.monotonic() - started,
            _importances(booster))
        return model

    def predict(self, features: np.ndarray) -> Prediction:
        d = xgb.DMatrix(self._masked(features), feature_names=list(self.feature_names),
                        missing=np.nan)
        q = np.sort(np.asarray(self.booster.predict(d), dtype=float).reshape(len(features), 3), axis=1)
        lo, med, hi = q[:, 0] - self.offset, q[:, 1], q[:, 2] + self.offset
        lo, hi = np.minimum(lo, med), np.maximum(hi, med)   # a negative offset never crosses the median
        return Prediction(lo, med, hi, self.alphas[0], self.alphas[2])

    def to_bytes(self) -> bytes:
        meta = json.dumps({"format": _FORMAT, "target": self.target, "features": list(self.feature_names),
                           "offset": self.offset, "alphas": list(self.alphas), "report": asdict(self.report),
                           "ignored": list(self.ignored)}).encode()
        raw = bytes(self.booster.save_raw("ubj"))
        buf = io.BytesIO()
        buf.write(len(meta).to_bytes(4, "big"))
        buf.write(meta)
        buf.write(raw)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> QuantileModel:
        size = int.from_bytes(blob[:4], "big")
        meta = json.loads(blob[4:4 + size])
        if meta.get("format") != _FORMAT:
            raise ValueError(f"model format {meta.get('format')!r} is not {_FORMAT}")
        booster = xgb.Booster()
        booster.load_model(bytearray(blob[4 + size:]))
        return cls(booster, meta["target"], tuple(meta["features"]), float(meta["offset"]), tuple(meta["alphas"]),
                   ModelReport(**meta["report"]), tuple(meta.get("ignored", ())))


def train_in_pool(data: TrainingSet, target: str, monotone: dict[str, int], coverage: float, seed: int,
                  time_budget_s: float, trained_at: float, ignore: tuple[str, ...] = (), min_rows: int = 200) -> bytes:
    """A ProcessPoolExecutor worker's entry: train and return the model's bytes."""
    model = QuantileModel.train(data, target, monotone=monotone, coverage=coverage, seed=seed, min_rows=min_rows,
                                time_budget_s=time_budget_s, trained_at=trained_at, ignore=ignore)
    return model.to_bytes()


class _Budget(xgb.callback.TrainingCallback):
    """Stops boosting once the time budget is spent (the rounds so far are kept)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.deadline = time.monotonic() + max(seconds, 1.0)

    def after_iteration(self, model: xgb.Booster, epoch: int, evals_log: dict) -> bool:
        return time.monotonic() > self.deadline


def _time_split(times: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of train (oldest ~70 %), calibration (~15 %) and test (newest ~15 %), by each group's first time."""
    order = np.argsort(times, kind="stable")
    first: dict[int, float] = {}
    for g, t in zip(groups[order], times[order]):
        first.setdefault(int(g), float(t))
    ranked = sorted(first, key=first.__getitem__)
    sizes = {g: 0 for g in ranked}
    for g in groups:
        sizes[int(g)] += 1
    n, cum, part = len(groups), 0, {}
    for g in ranked:
        part[g] = 0 if cum < 0.70 * n else 1 if cum < 0.85 * n else 2
        cum += sizes[g]
    label = np.array([part[int(g)] for g in groups])
    return np.flatnonzero(label == 0), np.flatnonzero(label == 1), np.flatnonzero(label == 2)


def _tail_split(train: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The newest 15 % of the training rows watch early stopping; the rest fit."""
    ordered = train[np.argsort(times[train], kind="stable")]
    cut = int(len(ordered) * 0.85)
    return ordered[:cut], ordered[cut:]


def _importances(booster: xgb.Booster, top: int = 12) -> dict[str, float]:
    gain = booster.get_score(importance_type="gain")
    total = sum(gain.values()) or 1.0
    ranked = sorted(gain.items(), key=lambda kv: -kv[1])[:top]
    return {k: v / total for k, v in ranked}


_ERF = np.vectorize(math.erf, otypes=[float])


def _norm_cdf(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + _ERF(x / math.sqrt(2))) if len(x) else np.zeros(0)


def _norm_ppf(p: float) -> float:
    return NormalDist().inv_cdf(p)


_EMPTY = ModelReport("", 0, 0.0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
