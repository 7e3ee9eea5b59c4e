"""The built-in templates do what their names say on the agent's reference pipeline, and fit the catalog."""
from __future__ import annotations

import statistics
from typing import Any

import pytest

from agent.dsp import DspChain
from agent.measure.host import HostMeter
from agent.measure.sample import PointMeter
from agent.pipeline import ExtensionPipeline
from agent.sim.conditions import SimConditions
from controller.knobs.builtin_templates import BUILTINS, BUILTINS_BY_ID, check_builtins
from shared.knobs import consistency_problems, defaults

CLEAN = dict(delay_ms=20.0, jitter_ms=5.0, loss_rate=0.002, drift="none")
NOISY = dict(CLEAN, noise_dbfs=-32.0, echo_gain_db=-120.0)
ECHO = dict(CLEAN, noise_dbfs=-60.0, echo_gain_db=-8.0, echo_delay_ms=120.0)
LOSSY = dict(CLEAN, loss_rate=0.08, burst_length=4.0)

# template -> (path and room, metric, the change it must make at least: signed, in the metric's unit)
EFFECTS: dict[str, list[tuple[dict[str, Any], str, float]]] = {
    "low-latency": [(CLEAN, "latency.end_to_end", -15.0)],
    "noisy-room": [(NOISY, "audioQuality.snr", +6.0), (NOISY, "audioQuality.noise_level", -6.0)],
    "echo-heavy-room": [(ECHO, "audioQuality.sinad", +0.5)],
    "bandwidth-saver": [(CLEAN, "packet.throughput_kbps", -15.0)],
    "lossy-network": [(LOSSY, "packet.loss_rate", -0.03), (LOSSY, "audioQuality.mos_score", +0.5)],
}


def mean_of(path: dict[str, Any], knobs: dict[str, Any], key: str, seconds: float = 30.0, seed: int = 5) -> float:
    """A metric averaged over the pipeline's samples after a 4 s warm-up."""
    pipe = ExtensionPipeline("3333", SimConditions(**path), seed, {**defaults(), **knobs}, lambda: DspChain(seed=seed))
    meter, host, values = PointMeter(pipe, epoch=0.0), HostMeter(), []
    for k in range(1, int(seconds * 50) + 1):
        pipe.step(k * 20.0)
        if k % 8 == 0 and k * 20 > 4000:
            values.append(meter.sample(k * 20.0, host.read())[key])
    return statistics.fmean(values)


def test_every_built_in_has_an_effect_checked():
    assert sorted(EFFECTS) == sorted(BUILTINS_BY_ID)


def test_built_ins_are_valid_and_consistent_with_the_defaults():
    assert check_builtins() == []
    for template in BUILTINS:
        assert consistency_problems({**defaults(), **template.config}) == [], template.id
        assert template.config, template.id


@pytest.mark.slow
@pytest.mark.parametrize("template_id", sorted(EFFECTS))
def test_the_template_moves_its_metrics_the_way_its_name_says(template_id):
    config = BUILTINS_BY_ID[template_id].config
    for path, key, at_least in EFFECTS[template_id]:
        before, after = mean_of(path, {}, key), mean_of(path, config, key)
        change = after - before
        assert change * at_least > 0 and abs(change) >= abs(at_least), (template_id, key, before, after)
