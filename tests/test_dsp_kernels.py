"""Frame kernels of the echo canceller and noise reducer (ext.dsp): Cython against the twin, and what each computes."""
from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest

from agent.dsp import fft
from ext import dsp_py

B = 320  # frame samples


def _complex(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


# --- FFT helpers --------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,n", [((640,), 640), ((2, 320), 512), ((3, 640), 640), ((320,), 512), ((2, 319), 318)])
def test_fft_helpers_equal_numpy_bit_for_bit(shape: tuple[int, ...], n: int) -> None:
    x = np.random.default_rng(0).standard_normal(shape)
    spec = fft.rfft(x, n, np.empty(shape[:-1] + (n // 2 + 1,), dtype=complex))
    assert np.array_equal(spec, np.fft.rfft(x, n, axis=-1))
    back = fft.irfft(spec, n, np.empty(shape[:-1] + (n,)))
    assert np.array_equal(back, np.fft.irfft(spec, n, axis=-1))


# --- equivalence -----------------------------------------------------------------------------------

def test_energy_peak_twins(cy: ModuleType) -> None:
    x = np.random.default_rng(1).standard_normal(B)
    for k in (dsp_py, cy):
        energy, peak = k.energy_peak(x)
        assert energy == pytest.approx(float(np.sum(x * x)), rel=1e-12) and peak == float(np.max(np.abs(x)))
    assert cy.energy_peak(np.zeros(0)) == dsp_py.energy_peak(np.zeros(0)) == (0.0, 0.0)


@pytest.mark.parametrize("head", [0, 3, 9])
def test_pbfdaf_kernels_twins(cy: ModuleType, head: int) -> None:
    rng = np.random.default_rng(head)
    parts = 10
    spectra = _complex(rng, 2 * parts, B + 1)
    filters = _complex(rng, 2, parts, B + 1)
    power = rng.uniform(0.1, 2.0, B + 1)
    err = _complex(rng, B + 1)
    states = []
    for k in (dsp_py, cy):
        s, p, f = spectra.copy(), power.copy(), filters.copy()
        k.pbfdaf_push(s, head, parts, p, 0.9)
        echoes = k.pbfdaf_echoes(f, s, head, np.empty((2, B + 1), dtype=complex))
        one = k.pbfdaf_echoes(f[:1], s, head, np.empty((1, B + 1), dtype=complex))
        k.pbfdaf_adapt(f[1], s, head, err, p, 0.12, 6.4e-5)
        states.append((s, p, f, echoes, one))
    for a, b in zip(*states):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)
    s, p, f, echoes, one = states[0]
    assert np.array_equal(s[head + parts], s[head])  # the doubled ring
    expected = sum(filters[0, i] * s[head + i] for i in range(parts))
    np.testing.assert_allclose(echoes[0], expected, rtol=1e-12)
    np.testing.assert_allclose(one[0], echoes[0], rtol=1e-12)
    np.testing.assert_allclose(f[0], filters[0])  # only the background adapts


@pytest.mark.parametrize("g0,g1", [(1.0, 1.0), (1.0, 0.25), (0.06, 1.0), (0.5, 0.5)])
@pytest.mark.parametrize("with_noise", [False, True])
def test_nlp_ramp_twins_and_shape(cy: ModuleType, g0: float, g1: float, with_noise: bool) -> None:
    rng = np.random.default_rng(2)
    e, noise = rng.standard_normal(B), rng.standard_normal(B) if with_noise else None
    out_py = dsp_py.nlp_ramp(e, g0, g1, noise, 0.01, np.empty(B))
    out_c = cy.nlp_ramp(e, g0, g1, noise, 0.01, np.empty(B))
    np.testing.assert_allclose(out_c, out_py, rtol=1e-12, atol=1e-15)
    if not with_noise:
        np.testing.assert_allclose(out_py, e * np.linspace(g0, g1, B + 1)[1:], rtol=1e-12)
        assert out_py[-1] == e[-1] * g1


def _nr_frame(k: ModuleType, history: np.ndarray, tail: np.ndarray, x: np.ndarray, gains: np.ndarray,
              noise: np.ndarray, draw: np.ndarray | None) -> tuple[np.ndarray, ...]:
    window = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(320) / 320))
    starts = np.array([0, 10, 40, 100, 200], dtype=np.int64)
    counts = np.diff(np.append(starts, 257)).astype(float)
    bin_band = np.repeat(np.arange(5, dtype=np.int64), np.diff(np.append(starts, 257)))
    frames = np.empty((2, 320))
    k.stft_frames(history, x, window, 160, frames)
    specs = np.fft.rfft(frames, 512, axis=1)
    bands, totals = np.empty((2, 5)), np.empty(2)
    k.band_powers(specs, starts, counts, bands, totals)
    k.band_gains_apply(specs, gains, bin_band, noise, 1e-3, draw)
    out = np.empty(320)
    k.overlap_add(np.fft.irfft(specs, 512, axis=1), window, tail, out)
    return frames, bands, totals, specs, out


@pytest.mark.parametrize("with_noise", [False, True])
def test_noise_reduction_kernels_twins(cy: ModuleType, with_noise: bool) -> None:
    rng = np.random.default_rng(3)
    gains, noise = rng.uniform(0.05, 1.0, (2, 5)), rng.uniform(1e-4, 1e-2, 5)
    states = {k: (np.zeros(480), np.zeros(160)) for k in (dsp_py, cy)}
    for _ in range(4):
        x, draw = rng.standard_normal(320), rng.standard_normal((2, 2, 257)) if with_noise else None
        results = [_nr_frame(k, *states[k], x, gains, noise, draw) for k in (dsp_py, cy)]
        for a, b in zip(*results):
            np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-13)
    for a, b in zip(states[dsp_py], states[cy]):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-13)


def test_stft_and_overlap_add_reconstruct_with_unit_gains(impl: ModuleType) -> None:
    """sqrt-Hann analysis x synthesis at 50 % overlap sums to one: unit gains give the input back, one hop late."""
    x = np.random.default_rng(4).standard_normal(320 * 6)
    history, tail = np.zeros(480), np.zeros(160)
    out = np.concatenate([_nr_frame(impl, history, tail, x[i:i + 320], np.ones((2, 5)), np.ones(5), None)[4]
                          for i in range(0, len(x), 320)])
    np.testing.assert_allclose(out[160:], x[:-160], atol=1e-12)


def test_band_powers_average_each_bands_bins(impl: ModuleType) -> None:
    specs = _complex(np.random.default_rng(5), 2, 257)
    starts = np.array([0, 1, 129], dtype=np.int64)
    counts = np.array([1.0, 128.0, 128.0])
    bands, totals = np.empty((2, 3)), np.empty(2)
    impl.band_powers(specs, starts, counts, bands, totals)
    power = np.abs(specs) ** 2
    np.testing.assert_allclose(bands[:, 2], power[:, 129:].mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(totals, power.sum(axis=1), rtol=1e-12)


def test_comfort_noise_never_louder_than_the_noise_and_absent_at_unit_gain(impl: ModuleType) -> None:
    rng = np.random.default_rng(6)
    bin_band = np.repeat(np.arange(2, dtype=np.int64), [100, 157])
    noise, draw = np.array([1.0, 4.0]), rng.standard_normal((2, 1, 257))
    silent = np.zeros((1, 257), dtype=complex)
    impl.band_gains_apply(silent, np.zeros((1, 2)), bin_band, noise, 1e6, draw)  # comfort level far above the noise
    filled = np.abs(silent[0]) ** 2
    assert filled[100:].mean() == pytest.approx(4.0, rel=0.3) and filled[:100].mean() == pytest.approx(1.0, rel=0.3)
    untouched = np.ones((1, 257), dtype=complex)
    impl.band_gains_apply(untouched, np.ones((1, 2)), bin_band, noise, 1e6, draw)
    assert np.array_equal(untouched, np.ones((1, 257), dtype=complex))


def test_echo_canceller_skip_on_a_silent_far_end_is_exact(impl: ModuleType) -> None:
    """Once every far-end block the filter spans is digital silence the AEC skips its filters; the output
    must be exactly what the full path gives (an echo estimate of zeros)."""
    from agent.dsp.chain import DspChain

    rng = np.random.default_rng(7)
    n = 320 * 120
    far = np.zeros(n)
    far[:320 * 80] = 0.1 * rng.standard_normal(320 * 80)  # the far end talks 1.6 s, then stops for 0.8 s
    # An echo 190 ms late lives in the filter's last partition, the one a late skip would cut short.
    mic = 0.001 * rng.standard_normal(n) + 0.3 * np.concatenate((np.zeros(3040), far[:-3040]))
    outs = []
    for skip in (True, False):
        chain = DspChain(impl=impl, seed=1)
        chain.configure({"nr_enabled": False, "agc_enabled": False, "limiter_enabled": False})
        aec = chain.stages[0]
        frames = []
        for i in range(0, n, 320):
            if not skip:
                aec._silent_run = 0  # force the full path
            frames.append(chain.process(mic[i:i + 320], far[i:i + 320]))
        assert np.abs(aec._filters[0][-1]).max() > 0.01  # the foreground learnt the late echo
        outs.append(np.concatenate(frames))
    assert np.array_equal(outs[0], outs[1])
