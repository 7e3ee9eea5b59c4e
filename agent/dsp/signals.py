"""Seeded speech-like test signals for the chain's tests and benchmarks (voiced/unvoiced segments, pauses, echo)."""
from __future__ import annotations

import numpy as np

from ext.dsp import BiquadChain, design_biquad

FORMANTS = ((700, 1220, 2600), (300, 2300, 3000), (500, 1000, 2500), (400, 1900, 2550), (600, 1700, 2700))


def rms_db(x: np.ndarray) -> float:
    return 10 * np.log10(float(np.mean(np.square(x))) + 1e-20)


def scale_to(x: np.ndarray, level_db: float) -> np.ndarray:
    return x * 10 ** ((level_db - rms_db(x)) / 20)


def _voiced(n: int, fs: int, rng: np.random.Generator) -> np.ndarray:
    f0 = rng.uniform(100, 220)
    phase = np.cumsum(np.full(n, f0 / fs) * (1 + 0.02 * rng.standard_normal(n).cumsum() / np.sqrt(n)))
    pulses = np.diff(np.floor(phase), prepend=0.0)  # one impulse per glottal period
    source = np.convolve(pulses, np.exp(-np.arange(40) / 6.0))[:n] + 0.02 * rng.standard_normal(n)
    f1, f2, f3 = FORMANTS[rng.integers(len(FORMANTS))]
    formants = BiquadChain([design_biquad("bandpass", fs, f, 5.0) for f in (f1, f2, f3)]
                           + [design_biquad("lowshelf", fs, 400, 0.7, 6)])
    return formants.process(source * 30)


def _unvoiced(n: int, fs: int, rng: np.random.Generator) -> np.ndarray:
    centre = rng.uniform(3500, 6500)
    return BiquadChain([design_biquad("bandpass", fs, centre, 1.2)]).process(rng.standard_normal(n)) * 0.4


def speech_like(seconds: float, fs: int = 16000, level_db: float = -26.0, seed: int = 0,
                pauses: bool = True) -> np.ndarray:
    """Syllable-like segments (voiced with formants, or fricative noise ~12 dB lower) with smooth onsets.

    `level_db` is the RMS of the whole signal; with `pauses`, 20% of the segments are silence.
    """
    rng = np.random.default_rng(seed)
    total = int(seconds * fs)
    out = np.zeros(total)
    pos = 0
    while pos < total:
        n = min(int(rng.uniform(0.08, 0.22) * fs), total - pos)
        kind = rng.random()
        if pauses and kind < 0.2:
            pos += n
            continue
        voiced = kind < 0.76
        seg = _voiced(n, fs, rng) if voiced else _unvoiced(n, fs, rng)
        # Vowels near the talker's level, fricatives ~12 dB under it (as in real speech).
        seg = scale_to(seg, (0.0 if voiced else -12.0) + rng.uniform(-3.0, 3.0))
        ramp = min(n // 4, int(0.02 * fs))
        env = np.ones(n)
        if ramp:
            env[:ramp] = env[-ramp:][::-1] = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
        out[pos:pos + n] = seg * env
        pos += n
    return scale_to(out, level_db)


def white_noise(seconds: float, fs: int = 16000, level_db: float = -50.0, seed: int = 1) -> np.ndarray:
    return scale_to(np.random.default_rng(seed).standard_normal(int(seconds * fs)), level_db)


def room_echo(far: np.ndarray, fs: int = 16000, delay_ms: float = 40.0, tail_ms: float = 120.0,
              gain: float = 0.4, seed: int = 2) -> np.ndarray:
    """The far-end signal as the microphone hears it: delayed, decaying random room response."""
    rng = np.random.default_rng(seed)
    d, t = int(delay_ms * fs / 1000), int(tail_ms * fs / 1000)
    rir = np.zeros(d + t)
    rir[d:] = rng.standard_normal(t) * np.exp(-np.arange(t) / (t / 5))
    rir *= gain / np.sqrt(np.sum(rir ** 2))
    return np.convolve(far, rir)[:len(far)]


def frames(x: np.ndarray, n: int = 320) -> list[np.ndarray]:
    return [x[i:i + n] for i in range(0, len(x) - n + 1, n)]
