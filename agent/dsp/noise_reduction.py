"""Noise reduction: STFT spectral subtraction / Wiener gain on bands, noise tracking, VAD, transients, comfort noise."""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from agent.dsp.stage import FrameContext, Stage

LEVEL_DB = {"low": 6.0, "moderate": 12.0, "high": 18.0, "very_high": 24.0}
WINDOW = 320          # 20 ms analysis window
HOP = 160             # 10 ms hop, 50% overlap: sqrt-Hann analysis x synthesis sums to one
NFFT = 512            # zero-padded: 257 bins, enough for the 256-band setting
INIT_HOPS = 10        # the first 100 ms train the noise estimate
STATIONARY_ALPHA = 0.98             # ~0.5 s noise average (stationary tracking)
MIN_TRACK_RISE = 10 ** (6 / 10 / 100)  # minimum tracker may rise 6 dB/s (non-stationary tracking)
MIN_TRACK_BIAS = 2.0                # the minimum of noisy power sits ~3 dB under its mean
DD_ALPHA = 0.96                     # decision-directed a-priori SNR smoothing
MIN_WINDOW_HOPS = 20                # rolling minimum over 8 sub-windows of 200 ms ...
MIN_WINDOWS = 8                     # ... so the estimate never stays above the last 1.6 s's floor
VAD_DB = 2.5                        # mean band SNR (dB) above which a hop counts as speech
VAD_HANGOVER = 8                    # hops the speech decision persists
TRANSIENT_JUMP = 10 ** 0.3          # a hop 3 dB above the recent level ...
TRANSIENT_CREST = 10 ** 1.65        # ... whose energy sits in a few samples (crest > 16.5 dB) is a click


class NoiseReducer(Stage):
    """Frame-based noise suppressor with 10 ms algorithmic delay (WINDOW - HOP)."""

    KNOBS = ("nr_enabled", "nr_level", "nr_type", "nr_stationary_level", "nr_transient_suppression",
             "nr_voice_activity_detection", "nr_frequency_bands", "nr_spectral_subtraction", "nr_wiener_filter",
             "nr_comfort_noise_level")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rng = np.random.default_rng(self.seed)
        self._window = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WINDOW) / WINDOW))  # periodic sqrt-Hann
        self._cn_scale = math.sqrt(float(np.sum(self._window ** 2)))
        self._reset_stream()
        self._bands = 0

    def _reset_stream(self) -> None:
        self._inbuf = np.zeros(WINDOW)
        self._outbuf = np.zeros(WINDOW)
        self._hops = 0
        self._speech_hang = 0
        self._recent_power = 0.0
        self.speech = False
        self.transients = 0

    def _apply(self, knobs: Mapping[str, Any], previous: Mapping[str, Any]) -> None:
        if knobs["nr_enabled"] and not previous.get("nr_enabled", False):
            self._reset_stream()
        self.enabled = bool(knobs["nr_enabled"])
        self.floor = 10 ** (-LEVEL_DB[knobs["nr_level"]] / 20)
        self.stationary = knobs["nr_type"] == "stationary"
        self.extra_floor_db = float(knobs["nr_stationary_level"])
        self.transient = bool(knobs["nr_transient_suppression"])
        self.vad = bool(knobs["nr_voice_activity_detection"])
        self.oversub = float(knobs["nr_spectral_subtraction"])
        self.wiener = bool(knobs["nr_wiener_filter"])
        self.cn_amp = 10 ** (knobs["nr_comfort_noise_level"] / 20) * self._cn_scale / math.sqrt(2)
        if knobs["nr_frequency_bands"] != self._bands:
            self._set_bands(int(knobs["nr_frequency_bands"]))

    def _set_bands(self, bands: int) -> None:
        """Linear band edges over the bins; per-band state restarts (the noise estimate re-learns)."""
        nbins = NFFT // 2 + 1
        starts = np.unique(np.round(np.linspace(0, nbins, min(bands, nbins) + 1)).astype(int))[:-1]
        self._starts = starts
        self._counts = np.diff(np.append(starts, nbins)).astype(float)
        self._bin_band = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, nbins)))
        n = len(starts)
        self._noise = np.zeros(n)
        self._smooth = np.zeros(n)
        self._prev_snr = np.ones(n)
        self._prev_gain = np.ones(n)
        self._sub_min = np.full(n, np.inf)
        self._minima: list[np.ndarray] = []
        self._bands = bands
        self._hops = 0

    @property
    def active(self) -> bool:
        return self.enabled

    @property
    def delay_samples(self) -> int:
        return WINDOW - HOP

    def process(self, x: np.ndarray, ctx: FrameContext) -> np.ndarray:
        out = np.empty_like(x)
        for start in range(0, len(x), HOP):
            self._inbuf = np.concatenate((self._inbuf[HOP:], x[start:start + HOP]))
            spec = self._hop_spectrum(np.fft.rfft(self._inbuf * self._window, NFFT), self._inbuf[-HOP:])
            y = np.fft.irfft(spec, NFFT)[:WINDOW]
            self._outbuf += y * self._window
            out[start:start + HOP] = self._outbuf[:HOP]
            self._outbuf = np.concatenate((self._outbuf[HOP:], np.zeros(HOP)))
        return out

    def _hop_spectrum(self, spec: np.ndarray, newest: np.ndarray) -> np.ndarray:
        power = spec.real ** 2 + spec.imag ** 2
        band = np.add.reduceat(power, self._starts) / self._counts
        self._smooth = 0.6 * self._smooth + 0.4 * band if self._hops else band.copy()
        self._track(band)
        noise = np.maximum(self._noise * (1.0 if self.stationary else MIN_TRACK_BIAS), 1e-20)
        snr_post = band / noise
        gain = self._gain(band, noise, snr_post)
        gain = gain * self._transient_gain(power, newest)
        bins = gain[self._bin_band]
        out = spec * bins
        if self.cn_amp > 0:
            fill = np.sqrt(np.maximum(1.0 - bins * bins, 0.0)) * self.cn_amp
            out = out + fill * (self._rng.standard_normal(len(spec)) + 1j * self._rng.standard_normal(len(spec)))
        self._hops += 1
        return out

    def _rolling_minimum(self) -> np.ndarray:
        """Minimum of the smoothed band power over the last ~1.6 s (minimum statistics)."""
        self._sub_min = np.minimum(self._sub_min, self._smooth)
        if self._hops % MIN_WINDOW_HOPS == MIN_WINDOW_HOPS - 1:
            self._minima = (self._minima + [self._sub_min])[-MIN_WINDOWS:]
            self._sub_min = np.full(len(self._smooth), np.inf)
        return np.minimum.reduce(self._minima + [self._sub_min])

    def _track(self, band: np.ndarray) -> None:
        """Noise estimate per band: trained on the first hops, then updated as nr_type says.

        Speech from the first sample would otherwise be learnt as noise, so the stationary
        average is capped by the rolling minimum (times its bias) as well.
        """
        floor = self._rolling_minimum() * MIN_TRACK_BIAS
        if self._hops < INIT_HOPS:
            self._noise = band.copy() if self._hops == 0 else self._noise + (band - self._noise) / (self._hops + 1)
            return
        snr_db = 10 * np.log10(np.maximum(band, 1e-20) / np.maximum(self._noise, 1e-20))
        speech = float(np.mean(np.clip(snr_db, -10, 30))) > VAD_DB
        self._speech_hang = VAD_HANGOVER if speech else max(self._speech_hang - 1, 0)
        self.speech = self._speech_hang > 0
        frozen = self.vad and self.speech
        if self.stationary:
            if not frozen:
                self._noise = STATIONARY_ALPHA * self._noise + (1 - STATIONARY_ALPHA) * band
            self._noise = np.minimum(self._noise, floor)
        else:
            rise = 1.0 if frozen else MIN_TRACK_RISE
            self._noise = np.minimum(self._smooth, self._noise * rise)

    def _gain(self, band: np.ndarray, noise: np.ndarray, snr_post: np.ndarray) -> np.ndarray:
        if self.wiener:
            prio = DD_ALPHA * self._prev_gain ** 2 * self._prev_snr + (1 - DD_ALPHA) * np.maximum(snr_post - 1.0, 0.0)
            gain = prio / (1.0 + prio)
        else:
            gain = np.sqrt(np.maximum(1.0 - self.oversub * noise / np.maximum(band, 1e-20), 0.0))
        gain = np.maximum(gain, self.floor)
        self._prev_gain, self._prev_snr = gain, snr_post
        if self.extra_floor_db > 0:
            # Bands sitting on the noise floor (smoothed SNR < 3 dB, fading out by 9 dB) lose another
            # nr_stationary_level dB; bands carrying speech keep their gain.
            smooth_db = 10 * np.log10(np.maximum(self._smooth / noise, 1e-10))
            noise_only = np.clip((9.0 - smooth_db) / 6.0, 0.0, 1.0)
            gain = gain * 10 ** (-self.extra_floor_db * noise_only / 20)
        return gain

    def _transient_gain(self, power: np.ndarray, newest: np.ndarray) -> float:
        """Clicks: a hop far above the recent level with its energy in a few samples is pulled down to it.

        The crest test keeps speech onsets (fricatives are loud after a pause too, but noise-like).
        """
        total = float(np.sum(power)) + 1e-20
        recent = self._recent_power
        self._recent_power = total if recent == 0 else 0.8 * recent + 0.2 * min(total, recent * TRANSIENT_JUMP)
        if not self.transient or recent == 0 or total < recent * TRANSIENT_JUMP:
            return 1.0
        sq = newest * newest
        if float(np.max(sq)) < TRANSIENT_CREST * (float(np.mean(sq)) + 1e-20):
            return 1.0
        self.transients += 1
        return math.sqrt(recent / total)

    def telemetry(self) -> dict[str, float]:
        return {"nr_speech": float(self.speech), "nr_transients": float(self.transients)}
