"""Quantile models of one target with calibrated intervals: XGBoost `reg:quantileerror`, conformalized on a time holdout.

One booster per target predicts three quantiles at once (`quantile_alpha` = [lo, 0.5, hi],
XGBoost >= 2.0). The rows are split by time, never at random (windows next to each other are
alike, so a random split would flatter the model): the oldest ~70 % train (early stopping
watches the newest ~15 % of those), the next ~15 % calibrate, the newest ~15 % test. Rows of
one group (one knob set of one point from one source) stay on one side of every cut, so the
test asks what the optimizer asks: how well is a configuration predicted that was not seen.

Calibration is conformalized quantile regression (Romano et al., 2019), one tail at a time:
on the calibration rows the lower score is lo - y and the upper y - hi; each end moves by the
ceil((n + 1)(1 - a)) -th smallest of its n scores, where a = (1 - coverage) / 2 is the share
of outcomes each tail may miss. A positive move widens (the raw quantiles under-cover, the
usual case: trees fit their own training rows), a negative one narrows (they over-cover);
an end never passes the median. Each tail is calibrated apart because the optimizer reads
one end at a time (the upper end of a latency, the lower of a quality). Coverage is then
measured on the test rows, which neither training nor calibration saw: that is the figure
GET /optimize/models reports. Crossing quantiles (XGBoost fits each quantile's trees apart)
are repaired by sorting each row's three values before the ends move.

`probability_below` reads the calibrated quantiles as a two-piece ("split") normal: left of
the median a normal whose a-quantile is `lo`, right of it one whose (1 - a)-quantile is `hi`. It passes through all three quantiles, is exact when the outcome is normal,
follows a skewed interval, and between and beyond the ends is an assumption, not a
measurement (the harness figures in the tests' docstring say how far it held).
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from statistics import NormalDist

import numpy as np
import xgboost as xgb

_FORMAT = 2
_MIN_PART = 20        # rows a calibration or test part needs at least


class NotEnoughData(Exception):
    """Too few rows with a known target (or too few distinct groups) to train and check a model honestly."""


@dataclass(frozen=True)
class TrainingSet:
    features: np.ndarray                 # (n, f) float32, NaN = missing
    target: np.ndarray                   # (n,) float64; rows with NaN (or ±inf) are dropped by train()
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
        """P(y < threshold) per row, under the two-piece normal of the module docstring."""
        t = np.broadcast_to(np.asarray(threshold, dtype=float), self.median.shape)
        left = t < self.median
        half = np.where(left, self.median - self.lo, self.hi - self.median)
        z = np.where(left, -_NORMAL.inv_cdf(self.alpha_lo), _NORMAL.inv_cdf(self.alpha_hi))
        d = t - self.median
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.where(half > 0, d * z / half, np.sign(d) * np.inf)   # a zero half-width: a step at the median
        return _norm_cdf(np.where(d == 0, 0.0, u))


@dataclass(frozen=True)
class ModelReport:
    target: str
    rows: int
    trained_at: float
    holdout_rows: int                    # test rows: coverage and MAE are measured on these
    holdout_mae: float                   # of the median
    coverage: float                      # after calibration, on the test rows
    raw_coverage: float                  # before calibration, on the same rows
    nominal_coverage: float
    conformal_offset: float              # mean move of the two ends (target units; > 0 widened, < 0 narrowed)
    mean_interval_width: float           # on the test rows, after calibration
    importances: dict[str, float] = field(default_factory=dict)
    # Details the API does not show (yet); kept with the model.
    offset_lo: float = 0.0               # how far `lo` moved down
    offset_hi: float = 0.0               # how far `hi` moved up
    missed_below: float = 0.0            # test share under `lo` (nominal (1 - coverage) / 2)
    missed_above: float = 0.0            # test share over `hi`
    baseline_mae: float = 0.0            # of a constant (the training rows' median): what "skill" is measured against
    calibration_rows: int = 0
    rounds: int = 0
    stopped: str = ""                    # "early stopping", "time budget" or "max rounds"
    seconds: float = 0.0

    def to_json(self) -> dict[str, object]:
        return {"target": self.target, "rows": self.rows,
                "trainedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.trained_at)),
                "holdoutRows": self.holdout_rows, "holdoutMae": round(self.holdout_mae, 5),
                "coverage": round(self.coverage, 4), "rawCoverage": round(self.raw_coverage, 4),
                "nominalCoverage": self.nominal_coverage, "conformalOffset": round(self.conformal_offset, 5),
                "meanIntervalWidth": round(self.mean_interval_width, 5),
                "importances": {k: round(v, 4) for k, v in self.importances.items()}}


@dataclass(frozen=True)
class Boosting:
    """The booster's settings, in one place. Modest trees: the rows are few and noisy, and calibration pays for overfit."""
    max_depth: int = 4
    eta: float = 0.08
    min_child_weight: float = 8.0        # hessian is 1 per row for the quantile loss: rows per leaf
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    reg_lambda: float = 1.0
    early_stopping_rounds: int = 25
    nthread: int = 1                     # two cores serve the whole controller

    def params(self, alphas: tuple[float, float, float], seed: int, constraints: tuple[int, ...]) -> dict:
        p = {"objective": "reg:quantileerror", "quantile_alpha": list(alphas), "tree_method": "hist",
             "max_depth": self.max_depth, "eta": self.eta, "min_child_weight": self.min_child_weight,
             "subsample": self.subsample, "colsample_bytree": self.colsample_bytree, "lambda": self.reg_lambda,
             "nthread": self.nthread, "seed": seed}
        if any(constraints):
            p["monotone_constraints"] = "(" + ",".join(map(str, constraints)) + ")"
        return p


class QuantileModel:
    def __init__(self, booster: xgb.Booster, target: str, feature_names: tuple[str, ...],
                 offsets: tuple[float, float], alphas: tuple[float, float, float], report: ModelReport,
                 ignored: tuple[str, ...] = ()) -> None:
        self.booster, self.target, self.feature_names = booster, target, feature_names
        self.offsets, self.alphas, self.report, self.ignored = offsets, alphas, report, ignored
        self._ignored_idx = [feature_names.index(n) for n in ignored if n in feature_names]

    @classmethod
    def train(cls, data: TrainingSet, target: str, *, monotone: Mapping[str, int] | None = None,
              coverage: float = 0.8, min_rows: int = 200, seed: int = 0, max_rounds: int = 300,
              time_budget_s: float = 20.0, trained_at: float | None = None, ignore: tuple[str, ...] = (),
              boosting: Boosting = Boosting()) -> QuantileModel:
        """Fit, calibrate and test a model of `target` (see the module docstring).

        `monotone`: feature name -> +1 (the target never falls as it rises) or -1. `ignore`: features
        treated as missing in training and prediction alike (e.g. the hour of day while history spans
        less than two days, when it would only stand for "recently"). Training stops early when the
        `time_budget_s` is spent; the rounds so far are kept."""
        started = time.monotonic()
        if not 0.0 < coverage < 1.0:
            raise ValueError(f"coverage {coverage} is not between 0 and 1")
        names = tuple(data.feature_names)
        constraints = _constraints(names, monotone or {})
        keep = np.isfinite(np.asarray(data.target, dtype=float))
        y, t = np.asarray(data.target, dtype=float)[keep], np.asarray(data.times, dtype=float)[keep]
        if len(y) < min_rows:
            raise NotEnoughData(f"{target}: {len(y)} rows with a value, {min_rows} needed")
        groups = np.asarray(data.groups)[keep] if data.groups is not None else np.arange(len(y))
        tail = (1.0 - coverage) / 2
        alphas = (tail, 0.5, 1.0 - tail)
        shell = cls(None, target, names, (0.0, 0.0), alphas, _EMPTY, tuple(ignore))  # type: ignore[arg-type]
        X = shell._matrix(np.asarray(data.features)[keep])
        part = _cut(t, groups, (0.70, 0.85))
        calib, test = np.flatnonzero(part == 1), np.flatnonzero(part == 2)
        needed = max(_MIN_PART, math.ceil(1.0 / tail))   # below this the conformal rank does not exist
        if min(len(calib), len(test)) < needed:
            raise NotEnoughData(f"{target}: {len(y)} rows in {len(np.unique(groups))} groups leave "
                                f"{len(calib)} to calibrate and {len(test)} to test; {needed} each needed")
        booster, stopped = _boost(X, y, t, groups, part == 0, names, boosting.params(alphas, seed, constraints),
                                  max_rounds, boosting, time_budget_s - (time.monotonic() - started))
        raw = cls(booster, target, names, (0.0, 0.0), alphas, _EMPTY, tuple(ignore))
        pc = raw.predict(X[calib])
        offsets = (_conformal(pc.lo - y[calib], 1.0 - tail), _conformal(y[calib] - pc.hi, 1.0 - tail))
        model = cls(booster, target, names, offsets, alphas, _EMPTY, tuple(ignore))
        pt, pr, yt = model.predict(X[test]), raw.predict(X[test]), y[test]
        model.report = ModelReport(
            target=target, rows=int(len(y)), trained_at=time.time() if trained_at is None else float(trained_at),
            holdout_rows=int(len(test)), holdout_mae=float(np.mean(np.abs(pt.median - yt))),
            coverage=float(np.mean((yt >= pt.lo) & (yt <= pt.hi))),
            raw_coverage=float(np.mean((yt >= pr.lo) & (yt <= pr.hi))), nominal_coverage=float(coverage),
            conformal_offset=float(np.mean(offsets)), mean_interval_width=float(np.mean(pt.hi - pt.lo)),
            importances=_importances(booster), offset_lo=offsets[0], offset_hi=offsets[1],
            missed_below=float(np.mean(yt < pt.lo)), missed_above=float(np.mean(yt > pt.hi)),
            baseline_mae=float(np.mean(np.abs(yt - np.median(y[part == 0])))), calibration_rows=int(len(calib)),
            rounds=booster.num_boosted_rounds(), stopped=stopped, seconds=time.monotonic() - started)
        return model

    def predict(self, features: np.ndarray) -> Prediction:
        """Calibrated quantiles of each row of `features` ((n, f), columns in `feature_names` order)."""
        X = self._matrix(features)
        # In place, without a DMatrix (a third of the cost at a thousand rows, a quarter at five, as prune
        # asks); _matrix has checked the width, the column order is feature_names' by construction.
        q = np.sort(np.asarray(self.booster.inplace_predict(X, missing=np.nan, validate_features=False),
                               dtype=float).reshape(len(X), 3), axis=1)
        med = q[:, 1]
        lo = np.minimum(q[:, 0] - self.offsets[0], med)     # a narrowed end stops at the median
        hi = np.maximum(q[:, 2] + self.offsets[1], med)
        return Prediction(lo, med, hi, self.alphas[0], self.alphas[2])

    def _matrix(self, features: np.ndarray) -> np.ndarray:
        """float32 rows of the right width, with the ignored features missing."""
        X = np.asarray(features, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != len(self.feature_names):
            raise ValueError(f"features of shape {X.shape}; (n, {len(self.feature_names)}) expected")
        if self._ignored_idx:
            X = X.copy()
            X[:, self._ignored_idx] = np.nan
        return X

    def to_bytes(self) -> bytes:
        """Metadata (JSON) and the booster (UBJSON, `save_raw`) behind a 4-byte length."""
        meta = json.dumps({"format": _FORMAT, "target": self.target, "features": list(self.feature_names),
                           "offsets": list(self.offsets), "alphas": list(self.alphas), "report": asdict(self.report),
                           "ignored": list(self.ignored)}).encode()
        return len(meta).to_bytes(4, "big") + meta + bytes(self.booster.save_raw("ubj"))

    @classmethod
    def from_bytes(cls, blob: bytes) -> QuantileModel:
        size = int.from_bytes(blob[:4], "big")
        meta = json.loads(blob[4:4 + size])
        if meta.get("format") != _FORMAT:
            raise ValueError(f"model format {meta.get('format')!r} is not {_FORMAT}")
        booster = xgb.Booster()
        booster.load_model(bytearray(blob[4 + size:]))
        booster.set_param({"nthread": 1})
        return cls(booster, meta["target"], tuple(meta["features"]), tuple(meta["offsets"]), tuple(meta["alphas"]),
                   ModelReport(**meta["report"]), tuple(meta["ignored"]))


def train_in_pool(data: TrainingSet, target: str, monotone: dict[str, int], coverage: float, seed: int,
                  time_budget_s: float, trained_at: float, ignore: tuple[str, ...] = (), min_rows: int = 200) -> bytes:
    """A ProcessPoolExecutor worker's entry (top level, so it pickles): train and return the model's bytes."""
    model = QuantileModel.train(data, target, monotone=monotone, coverage=coverage, seed=seed, min_rows=min_rows,
                                time_budget_s=time_budget_s, trained_at=trained_at, ignore=ignore)
    return model.to_bytes()


def _constraints(names: tuple[str, ...], monotone: Mapping[str, int]) -> tuple[int, ...]:
    """Per feature -1, 0 or +1; a name that is not a feature is an error (a typo would drop the physics silently)."""
    unknown = sorted(set(monotone) - set(names))
    if unknown:
        raise ValueError(f"monotone constraints on unknown features: {', '.join(unknown)}")
    bad = {k: v for k, v in monotone.items() if v not in (-1, 0, 1)}
    if bad:
        raise ValueError(f"monotone constraints must be -1, 0 or +1: {bad}")
    return tuple(int(monotone.get(n, 0)) for n in names)


def _cut(times: np.ndarray, groups: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
    """Part index per row: groups in order of their first time, a new part once the rows before pass each edge.

    A group sits wholly in the part its first row falls in, so a long-running group stays in the
    oldest part it touches and a part can come out smaller than its share (or empty)."""
    uniq, inverse = np.unique(groups, return_inverse=True)
    first = np.full(len(uniq), np.inf)
    np.minimum.at(first, inverse, times)
    order = np.lexsort((uniq, first))                    # by first time, ties by id: deterministic
    sizes = np.bincount(inverse, minlength=len(uniq))[order]
    before = np.cumsum(sizes) - sizes                    # rows in the groups that start earlier
    part_of_group = np.empty(len(uniq), np.int64)
    part_of_group[order] = np.searchsorted(np.asarray(edges) * len(times), before, side="right")
    return part_of_group[inverse]


def _boost(X: np.ndarray, y: np.ndarray, t: np.ndarray, groups: np.ndarray, train: np.ndarray,
           names: tuple[str, ...], params: dict, max_rounds: int, boosting: Boosting,
           budget_s: float) -> tuple[xgb.Booster, str]:
    """Boost on the train rows, early stopping on their newest groups; returns the booster cut at its best round."""
    rows = np.flatnonzero(train)
    watch = _cut(t[rows], groups[rows], (0.85,)) == 1
    if watch.sum() < _MIN_PART or (~watch).sum() < _MIN_PART:   # one big group: the newest rows, whatever their group
        watch = np.zeros(len(rows), bool)
        watch[np.argsort(t[rows], kind="stable")[int(len(rows) * 0.85):]] = True
    fit, stop = rows[~watch], rows[watch]
    dfit = xgb.DMatrix(X[fit], label=y[fit], missing=np.nan, nthread=boosting.nthread, feature_names=list(names))
    dstop = xgb.DMatrix(X[stop], label=y[stop], missing=np.nan, nthread=boosting.nthread, feature_names=list(names))
    budget = _Budget(budget_s)
    booster = xgb.train(params, dfit, num_boost_round=max_rounds, evals=[(dstop, "watch")],
                        early_stopping_rounds=boosting.early_stopping_rounds, verbose_eval=False, callbacks=[budget])
    done = booster.num_boosted_rounds()
    stopped = "time budget" if budget.fired else "max rounds" if done >= max_rounds else "early stopping"
    return booster[:booster.best_iteration + 1], stopped


class _Budget(xgb.callback.TrainingCallback):
    """Stops boosting once the time budget is spent (at least one round is always made)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.deadline = time.monotonic() + seconds
        self.fired = False

    def after_iteration(self, model: xgb.Booster, epoch: int, evals_log: dict) -> bool:
        self.fired = time.monotonic() > self.deadline
        return self.fired


def _conformal(scores: np.ndarray, level: float) -> float:
    """The ceil((n + 1) level)-th smallest score: the split-conformal move that covers `level` of new rows."""
    k = math.ceil((len(scores) + 1) * level)
    return float(np.sort(scores)[min(k, len(scores)) - 1])


def _importances(booster: xgb.Booster, top: int = 12) -> dict[str, float]:
    """Gain importance normalised over all features (sum 1), the `top` largest."""
    gain = booster.get_score(importance_type="gain")
    total = sum(gain.values()) or 1.0
    ranked = sorted(gain.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return {k: v / total for k, v in ranked}


_NORMAL = NormalDist()
_ERF = np.frompyfunc(math.erf, 1, 1)


def _norm_cdf(x: np.ndarray) -> np.ndarray:
    return (0.5 * (1.0 + _ERF(np.asarray(x, dtype=float) / math.sqrt(2)).astype(float))).reshape(np.shape(x))


_EMPTY = ModelReport("", 0, 0.0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
