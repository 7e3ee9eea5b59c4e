"""Speech-like audio: glottal pulses through formant resonators, fricative noise, syllable and phrase rhythm.

Not a recording and not a sine: phrases of 3-10 syllables, each an optional consonant
(fricative noise or a plosive burst) followed by a vowel whose pitch follows a declining
phrase contour with accents and small random fluctuation, separated by pauses. Rendering is
per phrase with the ext.dsp biquad chains (Cython), so reading a 20 ms frame is a slice.
"""
from __future__ import annotations

import numpy as np

from ext.dsp import BiquadChain

SAMPLE_RATE = 16000

# Vowel formants (F1, F2, F3 in Hz; Peterson & Barney averages) and a fixed F4.
_VOWELS: tuple[tuple[float, float, float], ...] = (
    (730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480),
    (570, 840, 2410), (660, 1720, 2410), (490, 1350, 1690), (440, 1020, 2240),
)
_BANDWIDTHS = (80.0, 100.0, 140.0, 200.0)
_F4 = 3500.0
# Fricative bands (low, high Hz): s, sh, f, th-like, h-like.
_FRICATIVES: tuple[tuple[float, float], ...] = ((4000, 7500), (2200, 5000), (1200, 7000), (3000, 7800), (600, 3500))


def _resonator(freq: float, bw: float) -> tuple[float, ...]:
    """One unity-DC-gain two-pole resonator as a biquad section (b0, b1, b2, a1, a2)."""
    r = float(np.exp(-np.pi * bw / SAMPLE_RATE))
    c = float(2 * r * np.cos(2 * np.pi * freq / SAMPLE_RATE))
    return (1 - c + r * r, 0.0, 0.0, -c, r * r)


def sosfilt(sections: list[tuple[float, ...]], x: np.ndarray) -> np.ndarray:
    """Filter a block through biquad sections in series, from rest."""
    return BiquadChain(sections).process(x)


def _bandpass(lo: float, hi: float) -> list[tuple[float, ...]]:
    """Two resonators spanning a band: enough colour for fricative noise."""
    return [_resonator(lo + (hi - lo) * 0.3, (hi - lo) * 0.6), _resonator(lo + (hi - lo) * 0.75, (hi - lo) * 0.6)]


def _envelope(n: int, attack: int, release: int) -> np.ndarray:
    env = np.ones(n)
    a, r = min(attack, n // 2), min(release, n // 2)
    if a:
        env[:a] = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, a))
    if r:
        env[n - r:] = 0.5 + 0.5 * np.cos(np.linspace(0, np.pi, r))
    return env


class SpeechSynth:
    """An endless seeded talker; `read(n)` returns the next n samples at the configured level."""

    def __init__(self, rng: np.random.Generator, f0_hz: float, level_dbfs: float) -> None:
        self.rng = rng
        self.f0_hz = f0_hz
        self.level = 10 ** (level_dbfs / 20)
        self._pending: list[np.ndarray] = []
        self._pending_len = 0
        self._glottal = [(1.0, 0.0, 0.0, -1.9, 0.9025)]  # double pole at 0.95: -12 dB/oct tilt
        self.voiced_f0: list[float] = []  # mean f0 of every rendered vowel (for tests and diagnostics)

    def read(self, n: int) -> np.ndarray:
        while self._pending_len < n:
            phrase = self._phrase()
            self._pending.append(phrase)
            self._pending_len += len(phrase)
        joined = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        out, rest = joined[:n], joined[n:]
        self._pending, self._pending_len = ([rest] if len(rest) else []), len(rest)
        return out

    def _phrase(self) -> np.ndarray:
        rng = self.rng
        syllables = int(rng.integers(3, 11))
        parts: list[np.ndarray] = []
        for i in range(syllables):
            # Declination: pitch falls ~25% across the phrase; every third-ish syllable is accented.
            f0 = self.f0_hz * (1.12 - 0.25 * i / syllables) * (1.12 if rng.random() < 0.3 else 1.0)
            parts.extend(self._syllable(f0))
            parts.append(np.zeros(int(rng.uniform(0, 0.035) * SAMPLE_RATE)))
        speech = np.concatenate(parts)
        active = np.abs(speech) > 1e-6
        rms = np.sqrt(np.mean(speech[active] ** 2)) if active.any() else 1.0
        speech *= self.level / rms
        # Phrase pause: mostly 250-900 ms, sometimes a long breath.
        pause = rng.uniform(0.25, 0.9) if rng.random() < 0.85 else rng.uniform(1.2, 2.0)
        return np.concatenate([speech, np.zeros(int(pause * SAMPLE_RATE))])

    def _syllable(self, f0: float) -> list[np.ndarray]:
        rng = self.rng
        out: list[np.ndarray] = []
        roll = rng.random()
        if roll < 0.45:
            out.append(self._fricative(rng.uniform(0.05, 0.12), rng.uniform(0.15, 0.35)))
        elif roll < 0.7:  # plosive: closure silence then a short burst
            out.append(np.zeros(int(rng.uniform(0.02, 0.05) * SAMPLE_RATE)))
            out.append(self._fricative(rng.uniform(0.012, 0.025), rng.uniform(0.3, 0.6)))
        out.append(self._vowel(f0, rng.uniform(0.08, 0.22), rng.uniform(0.6, 1.0)))
        if rng.random() < 0.3:
            out.append(self._fricative(rng.uniform(0.04, 0.1), rng.uniform(0.1, 0.3)))
        return out

    def _vowel(self, f0: float, seconds: float, amp: float) -> np.ndarray:
        rng = self.rng
        n = int(seconds * SAMPLE_RATE)
        # Pitch contour: a glide within the vowel plus a small random walk (jitter-like fluctuation).
        glide = np.linspace(1.0 + rng.uniform(-0.06, 0.06), 1.0 + rng.uniform(-0.06, 0.06), n)
        wander = 1.0 + np.cumsum(rng.normal(0, 0.0008, n))
        f0_track = f0 * glide * np.clip(wander, 0.9, 1.1)
        phase = np.cumsum(f0_track / SAMPLE_RATE)
        pulses = np.diff(np.floor(phase), prepend=0.0)  # 1 at every glottal closure
        excitation = sosfilt(self._glottal, pulses)
        excitation = np.diff(excitation, prepend=0.0)  # lip radiation: +6 dB/oct
        excitation += rng.normal(0, 0.02 * np.std(excitation) + 1e-9, n)  # aspiration
        f1, f2, f3 = _VOWELS[int(rng.integers(len(_VOWELS)))]
        sos = [_resonator(f, bw) for f, bw in zip((f1, f2, f3, _F4), _BANDWIDTHS)]
        voiced = sosfilt(sos, excitation)
        voiced *= amp * _envelope(n, int(0.015 * SAMPLE_RATE), int(0.03 * SAMPLE_RATE)) / (np.std(voiced) + 1e-12)
        self.voiced_f0.append(float(np.mean(f0_track)))
        return voiced

    def _fricative(self, seconds: float, amp: float) -> np.ndarray:
        rng = self.rng
        n = max(int(seconds * SAMPLE_RATE), 8)
        lo, hi = _FRICATIVES[int(rng.integers(len(_FRICATIVES)))]
        noise = sosfilt(_bandpass(lo, hi), rng.normal(0, 1, n))
        return noise * amp * _envelope(n, n // 4, n // 3) / (np.std(noise) + 1e-12)


class NoiseSource:
    """Background room noise: white noise through a one-pole low-pass (pinkish), at an exact RMS level."""

    def __init__(self, rng: np.random.Generator, level_dbfs: float, pole: float = 0.8) -> None:
        self.rng = rng
        self.pole = pole
        # Output variance of y = (1-a) x + a y[-1] for unit white x is (1-a)^2 / (1-a^2).
        self.scale = 10 ** (level_dbfs / 20) / np.sqrt((1 - pole) ** 2 / (1 - pole ** 2))
        self._filter = BiquadChain([(1 - pole, 0.0, 0.0, -pole, 0.0)])  # keeps its state across reads

    def read(self, n: int) -> np.ndarray:
        return self._filter.process(self.rng.normal(0, 1, n)) * self.scale
