"""The metric and knob catalogs: counts, names, defaults and the one validation function."""
from collections import Counter

import pytest

from shared import knobs, metrics


def test_metric_counts_per_category_match_the_plan():
    counts = Counter(m.category for m in metrics.METRICS)
    assert counts == {"buffer": 15, "latency": 12, "packet": 14, "audioQuality": 15, "performance": 12}
    assert metrics.METRIC_COUNT == 68
    assert len(metrics.METRICS_BY_KEY) == 68, "metric keys must be unique"


def test_plan_snapshot_names_are_present():
    for key in ("buffer.overflow_count", "buffer.last_underflow_time", "latency.p99_latency",
                "packet.goodput_kbps", "audioQuality.pesq_score", "audioQuality.voice_activity_ratio",
                "performance.gc_pause_ms"):
        assert key in metrics.METRICS_BY_KEY


def test_every_metric_says_how_it_is_measured_and_has_a_unit():
    for m in metrics.METRICS:
        assert m.unit and len(m.measured) > 20, m.key


def test_metric_bounds_check():
    snr = metrics.METRICS_BY_KEY["audioQuality.snr"]
    assert snr.within_bounds(30.0)
    assert not snr.within_bounds(float("nan"))
    assert not snr.within_bounds(True)
    assert metrics.METRICS_BY_KEY["audioQuality.clipping_detected"].within_bounds(False)
    assert not metrics.METRICS_BY_KEY["packet.loss_rate"].within_bounds(1.5)


def test_nest_keeps_catalog_order_and_filters():
    flat = {m.key: 0 for m in metrics.METRICS}
    nested = metrics.nest(flat)
    assert list(nested) == list(metrics.CATEGORIES)
    assert [len(v) for v in nested.values()] == [15, 12, 14, 15, 12]
    assert metrics.nest(flat, ["latency.end_to_end"]) == {"latency": {"end_to_end": 0}}


def test_knob_count_is_112_with_21_equalizer_knobs():
    counts = Counter(k.category for k in knobs.KNOBS)
    assert knobs.KNOB_COUNT == 112
    assert counts == {"agc": 15, "aec": 12, "noise_reduction": 10, "equalizer": 21, "voice_enhancement": 15,
                      "compression": 12, "spatial": 10, "buffer": 8, "network": 9}


@pytest.mark.parametrize("name,value", [
    ("agc_target_level", -18), ("agc_mode", "adaptive"), ("aec_filter_length", 200), ("nr_level", "high"),
    ("eq_band_1_freq", 60), ("eq_band_2_freq", 170), ("compressor_knee", 2.5), ("limiter_threshold", -1),
    ("high_frequency_damping", 6000), ("buffer_overflow_policy", "drop_oldest"), ("packet_size", 320),
    ("pacing_rate", 1.25), ("congestion_control", "bbr"),
])
def test_plan_defaults(name, value):
    assert knobs.KNOBS_BY_NAME[name].default == value


def test_defaults_are_valid_and_consistent():
    clean, problems = knobs.validate(knobs.defaults(), base=knobs.defaults())
    assert problems == []
    assert clean == knobs.defaults()


def test_every_knob_is_documented_and_says_who_applies_it():
    for k in knobs.KNOBS:
        assert k.description, k.name
        assert k.applied_by in (knobs.PIPELINE, knobs.EXTERNAL)


def test_validation_reports_every_problem_by_name():
    _, problems = knobs.validate({"agc_target_level": -80, "nope": 1, "agc_mode": "loud",
                                  "agc_enabled": "yes", "packet_size": 3.5, "nr_stationary_level": float("inf")})
    text = sorted(str(p) for p in problems)
    assert text == sorted([
        "agc_target_level: -80 is below the minimum -31",
        "nope: unknown knob",
        "agc_mode: 'loud' is not one of adaptive, adaptive_digital, fixed_digital",
        "agc_enabled: expected a boolean, got a string",
        "packet_size: expected an integer, got 3.5",
        "nr_stationary_level: expected a finite number, got inf",
    ])


def test_validation_canonicalises_integral_floats_and_rejects_bools_for_numbers():
    clean, problems = knobs.validate({"packet_size": 640.0, "compressor_ratio": 3})
    assert problems == [] and clean == {"packet_size": 640, "compressor_ratio": 3.0}
    assert isinstance(clean["packet_size"], int)
    _, problems = knobs.validate({"packet_size": True})
    assert [p.field for p in problems] == ["packet_size"]


def test_cross_knob_rules_need_the_merged_set():
    base = knobs.defaults()
    _, problems = knobs.validate({"min_buffer_size": 4000}, base=base)
    assert [p.field for p in problems] == ["min_buffer_size"]
    _, problems = knobs.validate({"playout_delay": 500}, base=base)
    assert [p.field for p in problems] == ["playout_delay"]
    _, problems = knobs.validate({"playout_delay": 500, "jitter_buffer_depth": 600}, base=base)
    assert problems == []


def test_body_that_is_not_an_object():
    _, problems = knobs.validate([1, 2])
    assert problems[0].field == "body"


# The knobs handed to the station's engine since the catalog first said who applies what.
EXTERNAL_KNOBS = {
    "aec_drift_compensation", "aec_mobile_mode", "aec_routing_mode", "aec_skew_mode", "aec_delay_logging",
    "aec_extended_filter", "aec_refined_adaptive_filter", "formant_shift", "pitch_correction",
    "vibrato_suppression", "stereo_width", "congestion_control", "network_priority",
}


def test_every_knob_says_where_it_acts_and_the_catalog_json_carries_it():
    Acts = knobs.Acts
    assert {a.value for a in Acts} == {"receive", "dsp", "send", "external"}
    for k in knobs.KNOBS:
        assert isinstance(k.acts, Acts), k.name
        doc = k.to_json()
        assert doc["acts"] == k.acts.value and doc["appliedBy"] == k.applied_by
    assert [d["acts"] for d in knobs.catalog_json()] == [k.acts.value for k in knobs.KNOBS]
    acts = {k.name: k.acts for k in knobs.KNOBS}
    buffer = [k.name for k in knobs.KNOBS if k.category == "buffer"]
    assert len(buffer) == 8 and all(acts[n] is Acts.RECEIVE for n in buffer)  # the jitter buffer
    for name in ("packet_size", "fec_enabled", "fec_percentage", "pacing_rate", "burst_size"):
        assert acts[name] is Acts.SEND, name
    for name in ("retransmit_timeout", "max_retransmits"):  # the receiver asks; the simulated sender only answers
        assert acts[name] is Acts.RECEIVE, name
    assert {n for n, a in acts.items() if a is Acts.EXTERNAL} == EXTERNAL_KNOBS
    # The pipeline/external split follows from it, unchanged.
    assert {k.name for k in knobs.KNOBS if k.applied_by == knobs.EXTERNAL} == EXTERNAL_KNOBS
    chain = ("agc", "aec", "noise_reduction", "equalizer", "voice_enhancement", "compression", "spatial")
    assert {n for n, a in acts.items() if a is Acts.DSP} == {
        k.name for k in knobs.KNOBS if k.category in chain and k.name not in EXTERNAL_KNOBS}
