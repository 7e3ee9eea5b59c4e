"""The search's candidates: inside catalog bounds and cross-knob rules, inside the trust region, distinct."""
from __future__ import annotations

import numpy as np
import pytest

from controller.optimizer import features as F
from controller.optimizer.proposal import Mode
from controller.optimizer.search import CHANGE_SETS, MOVES, move_weights, sample_candidates
from shared.knobs import KNOBS_BY_NAME, KnobType, consistency_problems, defaults


def _moves_of(partial: dict) -> int:
    return sum(1 for move in MOVES if any(name in partial for name in move))


@pytest.mark.parametrize("mode", list(Mode))
def test_candidates_keep_bounds_rules_and_the_trust_region(mode: Mode) -> None:
    current = defaults()
    rng = np.random.default_rng(3)
    candidates = sample_candidates(current, mode, 400, rng, move_weights("underflows_per_s"))
    assert len(candidates) > 300
    assert len({repr(sorted(c.items())) for c in candidates}) == len(candidates)
    for partial in candidates:
        assert partial and all(partial[k] != current[k] for k in partial)
        assert 1 <= _moves_of(partial) <= mode.max_moves
        assert not consistency_problems({**current, **partial})
        for name, value in partial.items():
            knob = KNOBS_BY_NAME[name]
            assert knob.check(value) is None, (name, value)
            if knob.type in (KnobType.INT, KnobType.FLOAT):
                # a numeric move stays within the mode's step (the repair of a change set may move a partner further)
                if not any(name in s for s in CHANGE_SETS.values()):
                    assert abs(value - current[name]) <= mode.step * (knob.maximum - knob.minimum) + 1


def test_only_searchable_knobs_move() -> None:
    searchable = {k.name for k in F.SEARCHABLE}
    for partial in sample_candidates(defaults(), Mode.AGGRESSIVE, 300, np.random.default_rng(0)):
        assert set(partial) <= searchable


def test_the_prior_puts_most_draws_on_the_targets_categories() -> None:
    candidates = sample_candidates(defaults(), Mode.CONSERVATIVE, 500, np.random.default_rng(1),
                                   move_weights("underflows_per_s"))
    on_prior = sum(all(KNOBS_BY_NAME[k].category in ("buffer", "network") for k in c) for c in candidates)
    assert on_prior / len(candidates) > 0.6


def test_a_jitter_buffer_move_keeps_playout_inside_depth() -> None:
    current = {**defaults(), "jitter_buffer_depth": 60, "playout_delay": 50}
    moved = [c for c in sample_candidates(current, Mode.AGGRESSIVE, 500, np.random.default_rng(2))
             if "playout_delay" in c or "jitter_buffer_depth" in c]
    assert moved
    for c in moved:
        full = {**current, **c}
        assert full["playout_delay"] <= full["jitter_buffer_depth"]


def test_features_encode_every_knob_type_and_round_trip() -> None:
    knobs = defaults()
    vector = F.knob_vector(knobs)
    assert vector.shape == (len(F.SEARCHABLE),) and not np.isnan(vector).any()
    for knob, code in zip(F.SEARCHABLE, vector):
        assert F.decode_knob(knob, float(code)) == pytest.approx(knobs[knob.name])
    context = F.context_vector({"jitter_ms": 60.0, "loss_rate": "bad"}, None, 12.5, 6 * 3600.0, replayed=True)
    row = dict(zip(F.FEATURE_NAMES[len(F.SEARCHABLE):], context))
    assert row["cond.jitter_ms"] == 60.0 and np.isnan(row["cond.loss_rate"]) and np.isnan(row["sibling.jitter_ms"])
    assert row["hour_sin"] == pytest.approx(1.0) and row["replayed"] == 1.0 and row["host_cpu"] == 12.5


class _Linear:
    """A stand-in quantile model (the unit isolates score()): median = a + b * playout_delay, +-spread."""

    def __init__(self, a: float, b: float, spread: float) -> None:
        self.a, self.b, self.spread = a, b, spread

    def predict(self, X: np.ndarray):
        from controller.optimizer.models import Prediction
        m = self.a + self.b * X[:, F.FEATURE_INDEX["knob.playout_delay"]]
        return Prediction(m - self.spread, m, m + self.spread)


def test_without_min_quality_a_quality_loss_beyond_tolerance_is_not_supported() -> None:
    from controller.optimizer.search import score
    from controller.optimizer.targets import GUARD_TOLERANCE, UNDERFLOWS, constraints_of
    current = {**defaults(), "playout_delay": 50, "jitter_buffer_depth": 400}
    # underflows fall with a longer playout delay; quality falls too, 0.001 per ms of it
    models = {"underflows_per_s": _Linear(2.0, -0.01, 0.05), "quality": _Linear(0.9, -0.001, 0.01)}
    small, large = {"playout_delay": 60}, {"playout_delay": 150}
    context = np.zeros(len(F.FEATURE_NAMES) - len(F.KNOB_FEATURES))
    now = {"underflows_per_s": 1.5, "quality": 0.85}
    guarded = constraints_of()                         # no minQuality: quality may not get worse
    assert guarded.keep_quality and "quality" in {t.key for t in guarded.targets}
    picked = [s.partial for s in score(models, UNDERFLOWS, guarded, now, current, [small, large], context)]
    # +10 ms costs 0.01 of quality (within the 0.02 tolerance); +100 ms costs 0.1
    assert GUARD_TOLERANCE["quality"] == 0.02 and picked == [small]
    accepted = constraints_of(min_quality=0.7)         # a quality bound: the trade is the operator's
    assert not accepted.keep_quality
    picked = [s.partial for s in score(models, UNDERFLOWS, accepted, now, current, [small, large], context)]
    assert picked[0] == large
