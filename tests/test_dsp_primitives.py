"""ext.dsp primitives: the Cython module against its pure-Python twin, and each primitive's behaviour."""
from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType

import numpy as np
import pytest

from ext import dsp_py
from ext.dsp_py import design_biquad

FS = 16000


# --- signals ---------------------------------------------------------------------------------

def _speechy(n: int, seed: int = 0) -> np.ndarray:
    """Noise with a syllabic envelope and silent gaps (cheap, deterministic)."""
    rng = np.random.default_rng(seed)
    env = np.abs(np.sin(np.arange(n) * 2 * np.pi * 4 / FS)) ** 2
    env[(np.arange(n) // 800) % 5 == 4] = 0.0
    return 0.3 * rng.standard_normal(n) * env


def _impulses(n: int) -> np.ndarray:
    x = np.zeros(n)
    x[::397] = 1.0
    x[100::811] = -4.0  # +12 dB overs
    return x


SIGNALS: dict[str, Callable[[int], np.ndarray]] = {
    "speechy": _speechy,
    "impulses": _impulses,
    "silence": np.zeros,
}

PEAK = design_biquad("peaking", FS, 1000, 1.41, 9.0)
SHELF = design_biquad("lowshelf", FS, 200, 0.7071, -6.0)
HP = design_biquad("highpass", FS, 80)

FACTORIES: dict[str, Callable[[ModuleType], object]] = {
    "biquad": lambda m: m.Biquad(PEAK),
    "biquad_chain": lambda m: m.BiquadChain([PEAK, SHELF, HP]),
    "envelope_peak": lambda m: m.EnvelopeFollower(FS, 1.0, 50.0, "peak"),
    "envelope_rms": lambda m: m.EnvelopeFollower(FS, 5.0, 80.0, "rms"),
    "compressor": lambda m: m.Compressor(FS, -20.0, 4.0, 6.0, 5.0, 80.0, 3.0, 5.0),
    "compressor_hard": lambda m: m.Compressor(FS, -30.0, 20.0, 0.0, 0.1, 10.0, 0.0, 0.0),
    "limiter": lambda m: m.Limiter(FS, -1.0, 50.0, 5.0),
    "limiter_no_lookahead": lambda m: m.Limiter(FS, -6.0, 20.0, 0.0),
    "agc_rms": lambda m: m.AgcGain(FS, -18.0, 30.0, 5.0, 60.0, 20.0, 10.0, "rms", -60.0),
    "agc_peak": lambda m: m.AgcGain(FS, -3.0, 9.0, 5.0, 60.0, 0.0, 20.0, "peak", -60.0),
    "gate": lambda m: m.NoiseGate(FS, -30.0, 1.0, 50.0, 20.0, 3.0, -80.0, 5.0),
    "comb": lambda m: m.FeedbackComb(401, 0.84, 0.3),
    "allpass": lambda m: m.Allpass(89, 0.6),
}


def _run_blocks(proc: object, x: np.ndarray, block: int) -> np.ndarray:
    return np.concatenate([proc.process(x[i:i + block]) for i in range(0, len(x), block)])  # type: ignore[attr-defined]


def _assert_states_equal(a: object, b: object) -> None:
    sa, sb = a.get_state(), b.get_state()  # type: ignore[attr-defined]
    if isinstance(sa, dict):
        assert sa.keys() == sb.keys()
        for key in sa:
            np.testing.assert_allclose(np.asarray(sa[key], dtype=float), np.asarray(sb[key], dtype=float),
                                       rtol=1e-9, atol=1e-12, err_msg=key)
    else:
        np.testing.assert_allclose(sa, sb, rtol=1e-9, atol=1e-12)


# --- equivalence -----------------------------------------------------------------------------

@pytest.mark.parametrize("block", [1, 7, 320])
@pytest.mark.parametrize("signal", list(SIGNALS))
@pytest.mark.parametrize("name", list(FACTORIES))
def test_cython_matches_python_twin(cy: ModuleType, name: str, signal: str, block: int) -> None:
    x = SIGNALS[signal](2400 if block == 1 else 4800)
    py_proc, c_proc = FACTORIES[name](dsp_py), FACTORIES[name](cy)
    y_py, y_c = _run_blocks(py_proc, x, block), _run_blocks(c_proc, x, block)
    np.testing.assert_allclose(y_c, y_py, rtol=1e-9, atol=1e-12)
    _assert_states_equal(py_proc, c_proc)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_block_size_does_not_change_output(impl: ModuleType, name: str) -> None:
    x = _speechy(3200, seed=3) + _impulses(3200) * 0.5
    whole = FACTORIES[name](impl).process(x)  # type: ignore[attr-defined]
    np.testing.assert_allclose(_run_blocks(FACTORIES[name](impl), x, 7), whole, rtol=1e-12, atol=1e-15)


def test_parameter_change_keeps_state_equal(cy: ModuleType) -> None:
    """set_params mid-stream (lookahead resize included) leaves both twins in the same state."""
    x = _speechy(6400, seed=5) * 3
    procs = [m.Compressor(FS, -20, 4, 2, 5, 50, 0, 5) for m in (dsp_py, cy)]
    lims = [m.Limiter(FS, -3, 30, 2) for m in (dsp_py, cy)]
    outs: list[list[np.ndarray]] = [[], []]
    for i, (comp, lim) in enumerate(zip(procs, lims)):
        outs[i].append(lim.process(comp.process(x[:3200])))
        comp.set_params(-30, 8, 0, 1, 100, 6, 12)
        lim.set_params(-6, 10, 8)
        outs[i].append(lim.process(comp.process(x[3200:])))
    np.testing.assert_allclose(np.concatenate(outs[1]), np.concatenate(outs[0]), rtol=1e-9, atol=1e-12)
    _assert_states_equal(procs[0], procs[1])
    _assert_states_equal(lims[0], lims[1])



# --- behaviour (both implementations) -----------------------------------------------------------

def _tone(freq: float, amp: float, n: int) -> np.ndarray:
    return amp * np.sin(2 * np.pi * freq * np.arange(n) / FS)


def _db(x: float) -> float:
    return 20 * math.log10(x)


def _response_db(coeffs: tuple[float, ...], freq: float) -> float:
    b0, b1, b2, a1, a2 = coeffs
    z = np.exp(-1j * 2 * np.pi * freq / FS)
    return _db(abs((b0 + b1 * z + b2 * z * z) / (1 + a1 * z + a2 * z * z)))


@pytest.mark.parametrize("kind,freq,gain,probe,expected", [
    ("peaking", 1000, 9.0, 1000, 9.0), ("peaking", 1000, -12.0, 1000, -12.0),
    ("lowshelf", 200, 6.0, 30, 6.0), ("highshelf", 4000, -6.0, 7500, -6.0),
    ("lowpass", 1000, 0.0, 1000, -3.01), ("highpass", 1000, 0.0, 1000, -3.01),
    ("bandpass", 2000, 0.0, 2000, 0.0), ("peaking", 12000, 6.0, 7200, 6.0),
])
def test_biquad_designs(impl: ModuleType, kind: str, freq: float, gain: float, probe: float, expected: float) -> None:
    coeffs = design_biquad(kind, FS, freq, 1.41 if kind == "peaking" else 0.7071, gain)
    assert _response_db(coeffs, probe) == pytest.approx(expected, abs=0.3)
    if kind in ("lowpass", "highpass"):  # 2nd order: at least 24 dB down two octaves into the stopband
        assert _response_db(coeffs, 4 * freq if kind == "lowpass" else freq / 4) < -23.0
    y = impl.Biquad(coeffs).process(_tone(probe, 0.1, 8000))
    measured = _db(np.sqrt(np.mean(y[4000:] ** 2)) / (0.1 / math.sqrt(2)))
    assert measured == pytest.approx(_response_db(coeffs, probe), abs=0.2)


def test_biquad_rejects_bad_design() -> None:
    with pytest.raises(ValueError):
        design_biquad("notch", FS, 1000)


def test_envelope_follower_levels(impl: ModuleType) -> None:
    x = _tone(440, 0.5, 8000)
    # equal attack and release: an exponentially weighted true RMS
    assert impl.EnvelopeFollower(FS, 50, 50, "rms").process(x)[-1] == pytest.approx(0.5 / math.sqrt(2), rel=0.03)
    peak = impl.EnvelopeFollower(FS, 0.1, 200, "peak").process(x)
    assert 0.45 < peak[-1] <= 0.5
    assert impl.EnvelopeFollower(FS, 5, 100, "peak").process(np.zeros(100))[-1] == 0.0


@pytest.mark.parametrize("makeup", [0.0, 3.0])
def test_compressor_reduces_tone_above_threshold(impl: ModuleType, makeup: float) -> None:
    amp = 10 ** (-6 / 20)  # -6 dBFS peak: 14 dB over a -20 dBFS threshold
    comp = impl.Compressor(FS, -20.0, 4.0, 0.0, 5.0, 100.0, makeup, 0.0)
    y = comp.process(_tone(1000, amp, 16000))
    expected = -6.0 - 14.0 * (1 - 1 / 4) + makeup  # -16.5 dBFS (+ makeup)
    assert _db(np.max(np.abs(y[8000:]))) == pytest.approx(expected, abs=0.3)
    assert comp.gain_reduction_db == pytest.approx(10.5, abs=0.3)


def test_compressor_leaves_quiet_signal_and_delays_it(impl: ModuleType) -> None:
    x = _tone(300, 0.01, 4000)  # -40 dBFS, far below the knee
    comp = impl.Compressor(FS, -20.0, 4.0, 6.0, 5.0, 100.0, 0.0, 5.0)
    y = comp.process(x)
    assert comp.lookahead_samples == 80
    np.testing.assert_allclose(y[80:], x[:-80], atol=1e-12)


def test_compressor_soft_knee_is_gentler_at_threshold(impl: ModuleType) -> None:
    x = _tone(1000, 10 ** (-20 / 20), 16000)  # exactly at threshold
    hard = impl.Compressor(FS, -20.0, 4.0, 0.0, 5.0, 100.0, 0.0, 0.0).process(x)
    soft = impl.Compressor(FS, -20.0, 4.0, 12.0, 5.0, 100.0, 0.0, 0.0).process(x)
    assert np.max(np.abs(soft[8000:])) < np.max(np.abs(hard[8000:])) * 0.9  # the knee starts 6 dB lower


ADVERSARIAL: dict[str, Callable[[int], np.ndarray]] = {
    "impulses": _impulses,
    "full_scale_square": lambda n: np.sign(np.sin(2 * np.pi * 50 * np.arange(n) / FS) + 1e-9),
    "square_plus_12db": lambda n: 4.0 * np.sign(np.sin(2 * np.pi * 1000 * np.arange(n) / FS) + 1e-9),
    "noise_plus_12db": lambda n: np.random.default_rng(9).uniform(-4.0, 4.0, n),
    "single_sample_spikes": lambda n: np.where(np.arange(n) % 333 == 0, 3.98, 0.01),
    "ramp_into_clip": lambda n: np.linspace(0, 8.0, n) * np.sin(2 * np.pi * 220 * np.arange(n) / FS),
}


@pytest.mark.parametrize("lookahead", [0.0, 1.0, 5.0, 20.0])
@pytest.mark.parametrize("ceiling", [-1.0, -6.0, 0.0])
@pytest.mark.parametrize("signal", list(ADVERSARIAL))
def test_limiter_never_exceeds_ceiling(impl: ModuleType, signal: str, ceiling: float, lookahead: float) -> None:
    x = ADVERSARIAL[signal](6400)
    lim = impl.Limiter(FS, ceiling, 50.0, lookahead)
    y = _run_blocks(lim, x, 7) if lookahead == 5.0 else lim.process(x)
    assert np.max(np.abs(y)) <= 10 ** (ceiling / 20)


def test_limiter_is_transparent_below_ceiling(impl: ModuleType) -> None:
    x = _tone(500, 0.5, 4000)  # -6 dBFS under a -1 dBFS ceiling
    y = impl.Limiter(FS, -1.0, 50.0, 5.0).process(x)
    np.testing.assert_allclose(y[80:], x[:-80], atol=1e-12)


def test_limiter_lookahead_starts_reduction_before_the_peak(impl: ModuleType) -> None:
    x = np.full(2000, 0.5)
    x[1000] = 2.0
    y = impl.Limiter(FS, -1.0, 50.0, 5.0).process(x)
    # The peak leaves the delay line at 1080; the gain is already falling well before it.
    assert y[1060] < 0.5 * 0.95 and abs(y[1080]) <= 10 ** (-1 / 20)


def test_agc_brings_quiet_signal_to_target(impl: ModuleType) -> None:
    x = _tone(300, 10 ** (-40 / 20) * math.sqrt(2), 16000)  # -40 dBFS RMS
    agc = impl.AgcGain(FS, -18.0, 30.0, 5.0, 60.0, 0.0, 10.0, "rms", -60.0)
    y = agc.process(x)
    assert _db(np.sqrt(np.mean(y[8000:] ** 2))) == pytest.approx(-18.0, abs=0.5)
    assert agc.gain_db == pytest.approx(22.0, abs=0.5)


def test_agc_respects_max_gain_and_freezes_in_silence(impl: ModuleType) -> None:
    agc = impl.AgcGain(FS, -18.0, 10.0, 5.0, 60.0, 0.0, 10.0, "rms", -60.0)
    agc.process(_tone(300, 0.01 * math.sqrt(2), 16000))  # -40 dBFS wants +22 dB
    assert agc.gain_db == pytest.approx(10.0, abs=0.05)
    agc.process(np.full(8000, 1e-5))  # -100 dBFS: below the freeze level, gain held
    assert agc.gain_db == pytest.approx(10.0, abs=0.05)


def test_agc_hold_delays_release(impl: ModuleType) -> None:
    loud, quiet = _tone(300, 0.5, 8000), _tone(300, 0.02, 24000)
    gains = []
    for hold in (0.0, 2000.0):
        agc = impl.AgcGain(FS, -18.0, 30.0, 5.0, 20.0, hold, 10.0, "rms", -60.0)
        agc.process(loud)
        agc.process(quiet)  # 1.5 s: the speech level has fallen ~7 dB, still inside the 2 s hold
        gains.append(agc.gain_db)
    assert gains[1] < gains[0] - 5.0


def test_agc_gain_follows_the_speech_level_not_syllables_or_pauses(impl: ModuleType) -> None:
    """Syllables 12 dB apart, pauses of room noise: the gain settles and stays within a dB or two."""
    syllable = np.concatenate([_tone(200, 0.05, 2400), _tone(200, 0.0125, 1600), np.zeros(1600)])
    noise = np.random.default_rng(4).standard_normal(len(syllable)) * 10 ** (-65 / 20)
    x = np.tile(syllable, 20) + np.tile(noise, 20)
    agc = impl.AgcGain(FS, -18.0, 30.0, 5.0, 60.0, 0.0, 10.0, "rms", -60.0)
    gains = []
    for block in range(0, len(x), 320):
        agc.process(x[block:block + 320])
        gains.append(agc.gain_db)
    settled = np.array(gains[len(gains) // 2:])
    assert settled.max() - settled.min() < 2.0  # a fast leveller would swing by ~12 dB
    # Loud syllables at -29 dBFS want +11 dB, quiet ones +23: the speech level (a power average) sits near the loud.
    assert 10.0 < float(np.mean(settled)) < 16.0


def test_agc_peak_detector_steers_peaks(impl: ModuleType) -> None:
    agc = impl.AgcGain(FS, -3.0, 20.0, 5.0, 60.0, 0.0, 20.0, "peak", -60.0)
    y = agc.process(_tone(300, 0.2, 16000))  # peak -14 dBFS wants +11 dB
    assert _db(np.max(np.abs(y[8000:]))) == pytest.approx(-3.0, abs=0.5)


def test_gate_closes_below_threshold_and_opens_above(impl: ModuleType) -> None:
    gate = impl.NoiseGate(FS, -40.0, 1.0, 50.0, 20.0, 3.0, -80.0, 5.0)
    quiet = gate.process(_tone(200, 10 ** (-55 / 20), 8000))
    assert not gate.is_open and np.max(np.abs(quiet[-1000:])) < 10 ** (-55 / 20) * 10 ** (-60 / 20)
    loud_in = _tone(200, 10 ** (-20 / 20), 8000)
    loud = gate.process(loud_in)
    assert gate.is_open
    np.testing.assert_allclose(loud[-1000:], loud_in[-1000:], rtol=1e-6, atol=1e-9)


def test_gate_hold_keeps_it_open(impl: ModuleType) -> None:
    states = []
    for hold in (0.0, 300.0):
        gate = impl.NoiseGate(FS, -40.0, 1.0, 20.0, hold, 3.0, -80.0, 2.0)
        gate.process(_tone(200, 0.1, 4000))
        gate.process(np.zeros(1600))  # 100 ms of silence
        states.append(gate.is_open)
    assert states == [False, True]


def test_comb_echoes_at_its_delay_and_decays(impl: ModuleType) -> None:
    x = np.zeros(2000)
    x[0] = 1.0
    y = impl.FeedbackComb(400, 0.8, 0.0).process(x)
    assert y[400] == pytest.approx(1.0) and y[800] == pytest.approx(0.8) and y[1200] == pytest.approx(0.64)
    assert np.count_nonzero(y[:400]) == 0


def test_allpass_preserves_energy(impl: ModuleType) -> None:
    x = np.zeros(20000)
    x[0] = 1.0
    y = impl.Allpass(89, 0.7).process(x)
    assert float(np.sum(y ** 2)) == pytest.approx(1.0, rel=1e-6)


# --- SpectralGain (the noise suppressor's per-band recursion) -----------------------------------

def _hops(signal: np.ndarray, bands: int = 16) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """(band powers, total power, newest 160 samples) of each 10 ms hop, as the NR stage builds them."""
    window = np.sqrt(np.hanning(322)[1:-1])
    out = []
    for start in range(0, len(signal) - 320, 160):
        seg = signal[start:start + 320]
        power = np.abs(np.fft.rfft(seg * window, 512)) ** 2
        starts = np.linspace(0, 257, bands + 1).astype(int)[:-1]
        band = np.add.reduceat(power, starts) / np.diff(np.append(starts, 257))
        out.append((band, float(power.sum()), seg[160:].copy()))
    return out


SPECTRAL_SETTINGS = {
    "wiener_stationary": (True, 10 ** (-18 / 20), 12.0, True, 0.8, True, True),
    "subtraction_nonstationary": (False, 10 ** (-12 / 20), 0.0, False, 2.0, False, False),
}


@pytest.mark.parametrize("setting", list(SPECTRAL_SETTINGS))
@pytest.mark.parametrize("signal", list(SIGNALS))
def test_spectral_gain_cython_matches_python_twin(cy: ModuleType, setting: str, signal: str) -> None:
    x = SIGNALS[signal](16000) + 1e-3 * np.random.default_rng(2).standard_normal(16000)
    py_core, c_core = dsp_py.SpectralGain(16), cy.SpectralGain(16)
    for core in (py_core, c_core):
        core.set_params(*SPECTRAL_SETTINGS[setting])
    for band, total, newest in _hops(x):
        np.testing.assert_allclose(c_core.process(band, total, newest), py_core.process(band, total, newest),
                                   rtol=1e-9, atol=1e-12)
        assert c_core.speech == py_core.speech
    np.testing.assert_allclose(c_core.noise, py_core.noise, rtol=1e-9)
    _assert_states_equal(py_core, c_core)


def test_spectral_gain_floors_noise_and_passes_loud_bands(impl: ModuleType) -> None:
    rng = np.random.default_rng(5)
    noise = 1e-3 * rng.standard_normal(32000)
    core = impl.SpectralGain(16)
    core.set_params(True, 10 ** (-18 / 20), 0.0, True, 0.8, True, False)
    for band, total, newest in _hops(noise[:16000]):
        gains = core.process(band, total, newest)
    assert float(np.max(gains)) < 0.3  # noise alone: held near the 18 dB floor
    tone = noise[16000:] + 0.3 * np.sin(2 * np.pi * 1000 * np.arange(16000) / FS)
    for band, total, newest in _hops(tone):
        gains = core.process(band, total, newest)
    assert float(np.max(gains)) > 0.95 and core.speech  # the 1 kHz band passes, the hop is speech


def test_spectral_gain_pulls_clicks_down(impl: ModuleType) -> None:
    x = 1e-3 * np.random.default_rng(6).standard_normal(16000)
    x[8000] = 0.8
    core = impl.SpectralGain(16)
    core.set_params(True, 0.1, 0.0, True, 0.8, True, True)
    for band, total, newest in _hops(x):
        core.process(band, total, newest)
    assert core.transients >= 1


@pytest.mark.parametrize("stationary", [True, False], ids=["stationary", "non_stationary"])
def test_spectral_gain_learns_noise_after_leading_silence(impl: ModuleType, stationary: bool) -> None:
    """A stream that opens with digital silence (a jitter buffer before playout starts) must not
    train a zero noise estimate that every later hop beats, freezing the gate on "speech"."""
    noise = 1e-2 * np.random.default_rng(8).standard_normal(48000)  # -40 dBFS, 3 s
    x = np.concatenate((np.zeros(4800), noise))                    # 300 ms of zeros first
    core = impl.SpectralGain(16)
    core.set_params(stationary, 10 ** (-18 / 20), 0.0, True, 0.8, True, False)
    for band, total, newest in _hops(x):
        gains = core.process(band, total, newest)
    assert not core.speech
    assert float(np.max(gains)) < 0.3  # back on the 18 dB floor within the 1.6 s minimum window
