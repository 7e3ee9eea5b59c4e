"""The quality score: SINAD against the reference where the agent has one, SNR otherwise."""
from __future__ import annotations

import numpy as np
import pytest

from controller.optimizer.targets import quality_score, target_series


def test_the_audio_term_is_sinad_where_known_and_snr_where_not() -> None:
    mos = np.array([4.5, 4.5, 4.5, np.nan])
    snr = np.array([40.0, 40.0, np.nan, 40.0])
    sinad = np.array([6.0, np.nan, np.nan, 6.0])
    q = quality_score(mos, snr, sinad)
    assert q[0] == pytest.approx(0.6 + 0.4 * 6 / 30)      # loud echo: high SNR, low SINAD -> SINAD counts
    assert q[1] == pytest.approx(1.0)                     # no reference: SNR (clipped at 30 dB)
    assert q[2] == pytest.approx(0.6)                     # neither: 0 dB
    assert np.isnan(q[3])                                 # no MOS: unknown


def test_target_series_reads_sinad_when_the_history_has_it() -> None:
    ts = np.arange(4, dtype=float)
    values = {"audioQuality.mos_score": np.full(4, 4.5), "audioQuality.snr": np.full(4, 40.0),
              "audioQuality.sinad": np.full(4, 15.0)}
    assert target_series(ts, values, ["quality"])["quality"] == pytest.approx(np.full(4, 0.6 + 0.2))
    del values["audioQuality.sinad"]
    assert target_series(ts, values, ["quality"])["quality"] == pytest.approx(np.full(4, 1.0))


def test_verification_rolls_back_a_change_that_lowered_an_unbounded_quality() -> None:
    from controller.optimizer.targets import constraints_of
    from controller.optimizer.verify import WindowStats, broken_constraints
    before = {"underflows_per_s": WindowStats(1.2, 0.1, 40), "quality": WindowStats(0.80, 0.01, 40)}
    worse = {"underflows_per_s": WindowStats(0.0, 0.0, 40), "quality": WindowStats(0.40, 0.01, 40)}
    within_noise = {"underflows_per_s": WindowStats(0.0, 0.0, 40), "quality": WindowStats(0.79, 0.01, 40)}
    guarded = constraints_of(max_latency_ms=450)
    assert broken_constraints(before, worse, guarded) == ["quality may not get worse (0.8 -> 0.4)"]
    assert broken_constraints(before, within_noise, guarded) == []
    # measurably lower, but by less than the search's tolerance (a longer playout delay costs a little MOS)
    slight = {"underflows_per_s": WindowStats(0.0, 0.0, 40), "quality": WindowStats(0.785, 0.001, 40)}
    assert broken_constraints({**before, "quality": WindowStats(0.80, 0.001, 40)}, slight, guarded) == []
    assert broken_constraints(before, worse, constraints_of(max_latency_ms=450, min_quality=0.3)) == []
