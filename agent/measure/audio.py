"""Audio-quality metrics of one extension's processed output, computed once per sample window.

Per window (7-8 frames of 20 ms): levels, zero-crossing rate, clipping, silence and the
spectrum (centroid, roll-off) straight from the samples; a statistical-model voice activity
detector per 20 ms frame (agent/measure/vad.py) splits speech from noise (SNR, noise level, VAR); THD
comes from the spectrum of the longest voiced run; SINAD and the frequency-response
deviation compare the output with the clean reference aligned sample by sample (the
receiver's media indices shifted by the chain's algorithmic delay). Quantities a window
cannot define (no noise frame for the noise level, no voiced run for THD, a silent
reference for SINAD) keep their running estimate instead of inventing one. A window whose
output is silent while the reference speaks counts for SINAD as all error (a dropout).
"""
from __future__ import annotations

import functools
import math

import numpy as np

from agent.dsp import fft
from agent.measure.vad import VoiceActivityDetector

SAMPLE_RATE = 16000
FRAME = 320
_FLOOR_DB = -120.0
_VOICED_ZCR = 0.15
_ROLLOFF = 0.85
# Ten log-spaced bands from 62.5 Hz to 8 kHz (0.7 octave each: 16 kHz audio has seven octaves of speech band).
_BAND_EDGES = np.geomspace(62.5, 8000.0, 11)
_EMA = 0.15                  # per-window weight of the running estimates (about one second)
_DROPOUT = 1e-6              # output energy under this share of the reference's (-60 dB): nothing was heard
# ufunc reductions without the Python-level wrappers of np.mean / np.sum / ndarray.max (same results:
# np.mean is this sum divided by the count).
_SUM, _MAX = np.add.reduce, np.maximum.reduce


def db(power: float) -> float:
    return 10 * math.log10(power) if power > 1e-12 else _FLOOR_DB


class AudioMeter:
    def __init__(self) -> None:
        self.vad = VoiceActivityDetector()
        self._sums = np.zeros(4)     # speech energy, speech frames, noise energy, noise frames
        self.speech_pow = 0.0
        self.noise_pow = 0.0
        self.thd = 0.0
        self.sinad = 0.0
        self.band_out = np.zeros(10)
        self.band_ref = np.zeros(10)
        self._sig = self._err = 0.0
        self._gain = 1.0             # running |gain| of the reference in the output (scales a dropout's error)

    def measure(self, out: np.ndarray, ref: np.ndarray) -> dict[str, float | bool]:
        """Metrics of one window of output `out` and its aligned clean reference `ref`.

        The sampler measures on the frame clock, so a window holds whole 20 ms frames; a
        shorter one has no spectrum or voice activity to measure and is refused by name.
        """
        if len(out) < FRAME:
            raise ValueError(f"an audio window needs at least one {FRAME}-sample frame, got {len(out)} samples")
        n = len(out)
        power = float(_SUM(out * out)) / n
        peak = float(_MAX(np.abs(out)))
        m = n // FRAME * FRAME
        frames = out[:m].reshape(-1, FRAME)
        # Sign changes between neighbouring samples, once for the window and each frame (np.diff of
        # the sign bits is this not_equal); the last slot stands for no neighbour.
        sign = np.signbit(out)
        changes = np.zeros(n, dtype=bool)
        np.not_equal(sign[1:], sign[:-1], out=changes[:-1])
        zcr_f = np.count_nonzero(changes[:m].reshape(-1, FRAME)[:, :FRAME - 1], axis=1) / (FRAME - 1)
        speech = self._vad(frames)
        spectrum, ref_spec = _power_spectra(out, ref)
        freqs = _rfft_freqs(n)
        self._update_thd(frames, speech, zcr_f)
        self._update_sinad(out, ref)
        quiet = ~speech
        noise_now = float(_SUM(frames[quiet] ** 2, axis=None)) / (int(np.count_nonzero(quiet)) * FRAME) if quiet.any() else None
        total = float(_SUM(spectrum))
        return {
            "level_rms": max(_FLOOR_DB, min(0.0, db(power))),
            "peak_level": max(_FLOOR_DB, min(0.0, 20 * math.log10(peak) if peak > 1e-6 else _FLOOR_DB)),
            "snr": self._snr(),
            "thd": self.thd,
            "sinad": self.sinad,
            "frequency_response_deviation": self._response_deviation(spectrum, ref_spec, freqs),
            "spectral_centroid": _centroid(spectrum, freqs, total),
            "spectral_rolloff": _rolloff(spectrum, freqs, total),
            "zero_crossing_rate": float(np.count_nonzero(changes)) / max(1, n - 1),
            "clipping_detected": bool(peak >= 0.999),
            "silence_detected": bool(db(power) < -60.0),
            "noise_level": max(_FLOOR_DB, min(0.0, db(noise_now if noise_now is not None else self.noise_pow))),
            "voice_activity_ratio": float(np.count_nonzero(speech)) / len(speech),
        }

    def _vad(self, frames: np.ndarray) -> np.ndarray:
        energy = _SUM(frames * frames, axis=1) / FRAME
        speech = self.vad.classify(frames, energy)
        # Running sums of frame energy and frame counts (about 1 s): every frame weighs the same,
        # whether its window held one speech frame or eight.
        self._sums += _EMA * (np.array([energy[speech].sum(), speech.sum(), energy[~speech].sum(), (~speech).sum()])
                              - self._sums)
        e_sp, n_sp, e_no, n_no = self._sums
        if n_sp > 0:
            self.speech_pow = float(e_sp / n_sp)
        if n_no > 0:
            self.noise_pow = float(e_no / n_no)
        return speech

    def _snr(self) -> float:
        if self.speech_pow <= 0:
            return 0.0
        if self.noise_pow <= 1e-12:
            return 120.0  # digital silence between words (a closed gate): the catalog's ceiling
        # Speech frames carry the noise too: their power minus the noise power is the speech's.
        speech = max(self.speech_pow - self.noise_pow, 1e-12 * self.noise_pow)
        return max(-60.0, min(120.0, 10 * math.log10(speech / self.noise_pow)))

    def _update_thd(self, frames: np.ndarray, speech: np.ndarray, zcr: np.ndarray) -> None:
        """THD-R of the longest run of voiced frames (at least 40 ms, so harmonics are resolved)."""
        voiced = speech & (zcr < _VOICED_ZCR)
        best, run_start, best_start = 0, 0, 0
        for i, v in enumerate(np.append(voiced, False)):
            if not v:
                if i - run_start > best:
                    best, best_start = i - run_start, run_start
                run_start = i + 1
        if best < 2:
            return
        seg = frames[best_start:best_start + best].ravel()
        seg = seg - seg.mean()
        f0 = _pitch(seg)
        if f0 is None:
            return
        spec = np.abs(fft.rfft(seg * _hanning(len(seg)), 4096, np.empty(2049, dtype=complex))) ** 2
        energies = _harmonic_energies(spec, f0)
        total = float(energies.sum())
        if total > 0:
            self.thd = math.sqrt(float(energies[1:].sum()) / total)

    def _update_sinad(self, out: np.ndarray, ref: np.ndarray) -> None:
        """Least-squares gain of the reference in the output; the rest is noise + distortion (EMA over ~1 s)."""
        rr = float(np.dot(ref, ref))
        if rr < 1e-9 or len(out) != len(ref):
            return
        oo = float(np.dot(out, out))
        if oo < _DROPOUT * rr:
            # The talker speaks and the output is silent (a dropout): the least-squares gain would be 0
            # and the error 0, which reads as perfect. What should have been heard is all error instead.
            sig, noise = 0.0, self._gain * self._gain * rr
        else:
            g = float(np.dot(out, ref)) / rr
            err = out - g * ref
            sig, noise = g * g * rr, float(np.dot(err, err))
            self._gain += _EMA * (abs(g) - self._gain)
        self._sig += _EMA * (sig - self._sig)
        self._err += _EMA * (noise - self._err)
        if self._err <= 1e-15:
            self.sinad = 120.0
        elif self._sig > 0:
            self.sinad = max(-60.0, min(120.0, 10 * math.log10(self._sig / self._err)))

    def _response_deviation(self, spec: np.ndarray, ref_spec: np.ndarray, freqs: np.ndarray) -> float:
        """RMS over bands of (output - reference) band level in dB, the overall gain removed."""
        if float(_SUM(ref_spec)) > 1e-9:
            idx = np.searchsorted(freqs, _BAND_EDGES)
            out_b = np.add.reduceat(spec, idx[:-1])[:10]
            ref_b = np.add.reduceat(ref_spec, idx[:-1])[:10]
            self.band_out += _EMA * (out_b - self.band_out)
            self.band_ref += _EMA * (ref_b - self.band_ref)
        ref_b, out_b = self.band_ref, self.band_out
        top = _MAX(ref_b)
        if top <= 0:
            return 0.0
        live = ref_b > top * 1e-6  # bands the talker actually excites (within 60 dB of the loudest)
        diff = 10 * np.log10(np.maximum(out_b[live], 1e-20) / ref_b[live])
        diff = np.clip(diff - diff.mean(), -60, 60)
        return float(np.sqrt(np.mean(diff * diff)))


@functools.lru_cache(maxsize=16)
def _hanning(n: int) -> np.ndarray:
    """np.hanning(n), built once per length (voiced runs are whole frames, so a few lengths recur)."""
    window = np.hanning(n)
    window.flags.writeable = False
    return window


def _harmonic_energies(spec: np.ndarray, f0: float) -> np.ndarray:
    """Energy of `spec` (a 4096-point power spectrum) within f0/4 of each harmonic of f0 below 7.5 kHz (30 at most)."""
    hz_per_bin = SAMPLE_RATE / 4096
    half = max(1, int(f0 / 4 / hz_per_bin))
    ks = np.arange(1, 31)
    ks = ks[ks * f0 < 7500]
    centers = np.rint(ks * f0 / hz_per_bin).astype(np.intp)  # half to even, as round()
    bounds = np.empty(2 * len(ks), dtype=np.intp)
    bounds[0::2] = np.maximum(centers - half, 0)
    bounds[1::2] = np.minimum(centers + half + 1, len(spec))
    # One reduceat for every band: the sums over [lo, hi) sit at the even positions (a trailing zero
    # makes hi == len(spec) a valid index; odd positions are the gaps between bands, unused).
    return np.add.reduceat(np.append(spec, 0.0), bounds)[0::2]


def _power_spectra(out: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """|rfft|^2 of the output and of the reference; one FFT call for both when they have one length."""
    n = len(out)
    if n != len(ref) or n % 2:
        return np.abs(np.fft.rfft(out)) ** 2, np.abs(np.fft.rfft(ref)) ** 2
    pair = np.empty((2, n))
    pair[0], pair[1] = out, ref
    both = np.abs(fft.rfft(pair, n, np.empty((2, n // 2 + 1), dtype=complex))) ** 2
    return both[0], both[1]


@functools.lru_cache(maxsize=16)
def _rfft_freqs(n: int) -> np.ndarray:
    """np.fft.rfftfreq(n, 1 / SAMPLE_RATE), built once per window length (windows are 7 or 8 frames)."""
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    freqs.flags.writeable = False
    return freqs


def _pitch(seg: np.ndarray) -> float | None:
    """f0 by autocorrelation between 70 and 400 Hz; None when the segment is not periodic enough."""
    n = len(seg)
    lo, hi = SAMPLE_RATE // 400, min(n - 1, SAMPLE_RATE // 70)
    # Linear (not circular) autocorrelation up to lag hi needs n + hi points; n + FRAME (n is whole
    # frames, so a multiple of 320 = 2^6 x 5) keeps the transform sizes smooth and about half of 2n.
    size = n + FRAME if n % FRAME == 0 else 2 * n
    spec = fft.rfft(seg, size, np.empty(size // 2 + 1, dtype=complex))
    ac = fft.irfft(spec * np.conj(spec), size, np.empty(size))[:n]
    if ac[0] <= 0:
        return None
    lag = lo + int(np.argmax(ac[lo:hi]))
    return SAMPLE_RATE / lag if ac[lag] / ac[0] > 0.3 else None


def _centroid(spec: np.ndarray, freqs: np.ndarray, total: float) -> float:
    """Power-weighted mean frequency; `total` is the spectrum's sum."""
    return float(np.dot(spec, freqs)) / total if total > 0 else 0.0


def _rolloff(spec: np.ndarray, freqs: np.ndarray, total: float) -> float:
    """Frequency below which _ROLLOFF of the power lies; `total` is the spectrum's sum."""
    if total <= 0:
        return 0.0
    return float(freqs[min(len(freqs) - 1, int(np.searchsorted(np.cumsum(spec), _ROLLOFF * total)))])
