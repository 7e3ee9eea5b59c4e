"""Acoustic echo cancellation: partitioned-block frequency-domain NLMS, residual-echo NLP, comfort noise."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from agent.dsp import fft
from agent.dsp.stage import FrameContext, Stage

# How echo-dominated a frame must be (echo estimate / microphone energy) before the NLP acts.
NLP_THRESHOLDS = {"conservative": 0.8, "moderate": 0.5, "aggressive": 0.2}
# Attenuation of a frame that is entirely residual echo.
SUPPRESSION_DB = {"low": 6.0, "moderate": 12.0, "high": 24.0}
STEP = 0.12                # NLMS step size (per bin, normalised by the far-end power)
POWER_SMOOTHING = 0.9      # far-end power estimate the step is normalised by
GEIGEL = 0.5               # double talk when |mic| peaks above this fraction of the far-end peak ...
DT_RATIO_DB = 15.0         # ... or when mic power exceeds by 15 dB what the echo path usually returns:
ERL_STEP_DB = 1.0          # the 20th percentile of the mic/far power ratio while the far end talks,
ERL_QUANTILE = 0.2         # tracked in dB (down 1 dB per frame below it, up 0.25 dB above) from 0 dB
DOUBLE_TALK_HANGOVER = 3   # frames adaptation stays frozen after double talk
ADOPT_RATIO = 0.8          # background error this much below the foreground's: copy it over
ERROR_SMOOTHING = 0.85     # per-frame smoothing of the error energies the arbitration compares
RESTORE_RATIO = 4.0        # background error this much above: it diverged, restore it
FAR_SILENT_RMS = 1e-4      # -80 dBFS: no reference, nothing to cancel or suppress
NOISE_RISE = 1.02          # background tracker: +0.17 dB per frame upwards, instant downwards


class EchoCanceller(Stage):
    """Removes the far-end echo from the microphone frame.

    The linear filter is a partitioned-block frequency-domain adaptive filter (overlap-save,
    block = frame): a 200 ms tail at 16 kHz is 10 partitions of 320 taps, updated with one
    batched FFT per frame instead of a 3200-tap per-sample loop. A background filter adapts
    (frozen during double talk: Geigel, or a mic well above the tracked echo-path ratio, which
    catches a talker over a faint echo) and a foreground filter produces the output:
    it takes the background's weights when they cancel better, and a background that
    diverged is restored from it. The non-linear processor then attenuates frames whose
    energy is mostly predicted echo, and comfort noise fills what it removed.
    """

    KNOBS = ("aec_enabled", "aec_filter_length", "aec_nlp_mode", "aec_suppression_level", "aec_comfort_noise")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        b = self.frame_samples
        self._rng = np.random.default_rng(self.seed)
        self._xbuf = np.zeros(2 * b)
        self._Xbuf = np.zeros((0, b + 1), dtype=complex)  # far-end spectra, twice over: see _push_far
        self._head = 0
        self._constrain_next = 0
        # [foreground (produces the output), background (adapts every frame)]: one array, so both
        # echo estimates come from one einsum and one inverse FFT.
        self._filters = np.zeros((2, 0, b + 1), dtype=complex)
        self._tap_mask = np.ones((0, 2 * b))
        self._far_peaks: list[float] = []
        self._silent_run = 0  # consecutive far-end frames of digital silence
        self._far_pows: list[float] = []
        self._erl_db = 0.0  # low percentile of the mic/far power ratio (echo path + noise); 0 dB: Geigel alone
        self._dt_hang = 0
        self._power = np.zeros(b + 1)
        self._err_bg = self._err_fg = self._mic_e = 0.0
        self._nlp_gain = 1.0
        self._noise_rms = -1.0
        self._erle_db = 0.0
        # Per-frame work buffers (the FFTs write into them; see agent/dsp/fft.py).
        self._echo_spec = np.zeros((2, b + 1), dtype=complex)
        self._echo_time = np.zeros((2, 2 * b))
        self._errs = np.zeros((2, b))           # [foreground, background] error of the frame
        self._ebuf = np.zeros(2 * b)            # [zeros, background error]: the overlap-save block
        self._espec = np.zeros(b + 1, dtype=complex)
        self._ctaps = np.zeros((2, 2 * b))
        self._cspec = np.zeros((2, b + 1), dtype=complex)

    def _apply(self, knobs: Mapping[str, Any], previous: Mapping[str, Any]) -> None:
        self.enabled = bool(knobs["aec_enabled"])
        self.nlp_threshold = NLP_THRESHOLDS[knobs["aec_nlp_mode"]]
        self.suppression_db = SUPPRESSION_DB[knobs["aec_suppression_level"]]
        self.comfort_noise = bool(knobs["aec_comfort_noise"])
        if self.changed(knobs, previous, "aec_filter_length"):
            self._resize(int(round(knobs["aec_filter_length"] * self.sample_rate / 1000)))

    def _resize(self, taps: int) -> None:
        """New tail length: keep the partitions both lengths share so a change does not restart learning."""
        b = self.frame_samples
        parts = max(1, math.ceil(taps / b))
        keep = min(parts, len(self._W))
        # Gradient constraint: each partition holds b taps (first half of its 2b window); the
        # last one only the taps left of the tail, so the filter length is exact to the sample.
        mask = np.zeros((parts, 2 * b))
        mask[:, :b] = 1.0
        mask[-1, taps - (parts - 1) * b:] = 0.0
        resized = []
        for old in (self._Wf, self._W, self._X):
            new = np.zeros((parts, b + 1), dtype=complex)
            new[:keep] = old[:keep]
            resized.append(new)
        self._filters = np.fft.rfft(np.fft.irfft(np.stack(resized[:2]), 2 * b, axis=2) * mask, axis=2)
        self._Xbuf, self._head = np.concatenate((resized[2], resized[2])), 0
        self._tap_mask, self.taps = mask, taps
        self._far_peaks = self._far_peaks[-parts:]
        self._far_pows = self._far_pows[-parts:]

    @property
    def active(self) -> bool:
        return self.enabled

    def process(self, x: np.ndarray, ctx: FrameContext) -> np.ndarray:
        if ctx.far_end is None:
            return x
        far = np.asarray(ctx.far_end, dtype=np.float64)
        if far.shape != x.shape:
            raise ValueError(f"far_end must have {len(x)} samples like the frame, got {far.shape}")
        energy_peak = self.impl.energy_peak
        self._push_far(far)
        mic_e, mic_peak = energy_peak(x)
        far_active = max(self._far_peaks) > FAR_SILENT_RMS
        errs = self._errs
        if far_active:
            echoes = self._echoes(2)
            np.subtract(x, echoes, out=errs)  # [foreground error, background error]
            e_fg_e, e_bg_e = energy_peak(errs[0])[0], energy_peak(errs[1])[0]
            self._adapt(mic_e, mic_peak, len(x), errs[1])
            e, e_e, echo = self._arbitrate(x, mic_e, echoes[0], e_fg_e, e_bg_e)
        elif self._silent_run > len(self._W):
            # Every far-end block the filter spans is digital silence: its echo estimate is exactly zero.
            e, e_e, echo = x, mic_e, x
        else:
            echo = self._echoes(1)[0]
            e = np.subtract(x, echo, out=errs[0])
            e_e = energy_peak(e)[0]
        self._track_noise(e_e, len(e))
        return self._nlp(mic_e, e, e_e, echo, far_active)

    @property
    def _Wf(self) -> np.ndarray:
        return self._filters[0]

    @property
    def _W(self) -> np.ndarray:
        return self._filters[1]

    @property
    def _X(self) -> np.ndarray:
        """Far-end spectra of the partitions, newest first (a view, no copy)."""
        return self._Xbuf[self._head:self._head + len(self._W)]

    def _push_far(self, far: np.ndarray) -> None:
        """Every spectrum is stored at head and head + P, so rows head .. head + P - 1 are always the
        partitions newest first: a new frame moves the head instead of rolling the matrix."""
        b, parts = self.frame_samples, len(self._W)
        self._xbuf[:b] = self._xbuf[b:]
        self._xbuf[b:] = far
        self._head = (self._head - 1) % parts
        fft.rfft(self._xbuf, 2 * b, self._Xbuf[self._head])
        self.impl.pbfdaf_push(self._Xbuf, self._head, parts, self._power, POWER_SMOOTHING)
        far_e, far_peak = self.impl.energy_peak(far)
        self._far_peaks = (self._far_peaks + [far_peak])[-parts:]
        self._far_pows = (self._far_pows + [far_e / len(far)])[-parts:]
        self._silent_run = self._silent_run + 1 if far_peak == 0.0 else 0

    def _echoes(self, count: int) -> np.ndarray:
        """The echo estimate of the first `count` filters (foreground, background) for this frame;
        a view of a buffer the next frame overwrites."""
        b = self.frame_samples
        spec = self.impl.pbfdaf_echoes(self._filters[:count], self._Xbuf, self._head, self._echo_spec[:count])
        return fft.irfft(spec, 2 * b, self._echo_time[:count])[:, b:]

    def _double_talk(self, mic_e: float, mic_peak: float, n: int) -> bool:
        """Near speech on top of the echo: Geigel (mic peaks near the far-end peaks), or a mic much
        louder than the echo path usually returns of the far end. The second test matters when
        the echo is faint: near speech then never reaches half the far-end peak, and adapting on
        it would teach the filter to cancel the talker."""
        span = sum(self._far_pows) / len(self._far_pows)
        ratio_db = 10.0 * math.log10((mic_e / n + 1e-20) / (span + 1e-20))
        erl = self._erl_db
        geigel = mic_peak > GEIGEL * max(self._far_peaks)
        self._erl_db = erl - ERL_STEP_DB if ratio_db < erl else erl + ERL_STEP_DB * ERL_QUANTILE / (1 - ERL_QUANTILE)
        return geigel or ratio_db > erl + DT_RATIO_DB

    def _adapt(self, mic_e: float, mic_peak: float, n: int, e: np.ndarray) -> None:
        """One NLMS step of the background filter, skipped during double talk."""
        if self._double_talk(mic_e, mic_peak, n):
            self._dt_hang = DOUBLE_TALK_HANGOVER
        if self._dt_hang > 0:
            self._dt_hang -= 1
            return
        b = self.frame_samples
        self._ebuf[b:] = e  # overlap-save: the error fills the second half, the first stays zero
        spec = fft.rfft(self._ebuf, 2 * b, self._espec)
        self.impl.pbfdaf_adapt(self._filters[1], self._Xbuf, self._head, spec, self._power, STEP, 1e-7 * 2 * b)
        self._constrain()

    def _constrain(self) -> None:
        """Gradient constraint (taps beyond each partition's b zeroed) on partition 0 and one other
        per frame in turn, as Speex's AUMDF does: the full constraint costs two FFTs per partition
        per frame, and the partitions left unconstrained for a few frames converge the same."""
        b, parts = self.frame_samples, len(self._W)
        rows = [0]
        if parts > 1:
            rows.append(1 + self._constrain_next % (parts - 1))
            self._constrain_next += 1
        n = len(rows)
        taps = fft.irfft(self._W[rows], 2 * b, self._ctaps[:n])
        taps *= self._tap_mask[rows]
        self._W[rows] = fft.rfft(taps, 2 * b, self._cspec[:n])

    def _arbitrate(self, mic: np.ndarray, mic_e: float, echo_fg: np.ndarray, e_fg_e: float,
                   e_bg_e: float) -> tuple[np.ndarray, float, np.ndarray]:
        """Two-filter control. The foreground takes the background's weights only when they cancel
        clearly better than both the foreground and no filter at all; a foreground that makes the
        signal louder than the microphone is dropped; a background that diverged (double talk the
        detector missed) restarts from the foreground. Returns (error, its energy, echo estimate)."""
        k = ERROR_SMOOTHING
        e_fg, e_bg = self._errs
        self._mic_e = k * self._mic_e + (1 - k) * mic_e
        self._err_bg = k * self._err_bg + (1 - k) * e_bg_e
        self._err_fg = k * self._err_fg + (1 - k) * e_fg_e
        if self._err_bg < ADOPT_RATIO * min(self._err_fg, self._mic_e):
            self._filters[0] = self._filters[1]
            self._err_fg = self._err_bg
            return e_bg, e_bg_e, mic - e_bg
        if self._err_bg > RESTORE_RATIO * self._err_fg and e_bg_e > mic_e:
            self._filters[1] = self._filters[0]
            self._err_bg = self._err_fg
        if self._err_fg > self._mic_e:
            self._filters[0] = 0.0
            self._err_fg = self._mic_e
            return mic, mic_e, np.zeros_like(mic)
        return e_fg, e_fg_e, echo_fg

    def _track_noise(self, e_energy: float, n: int) -> None:
        rms = math.sqrt(e_energy / n)
        self._noise_rms = rms if self._noise_rms < 0 else min(rms, self._noise_rms * NOISE_RISE)

    def _nlp(self, mic_e: float, e: np.ndarray, e_e: float, echo: np.ndarray, far_active: bool) -> np.ndarray:
        mic_energy = mic_e + 1e-12
        self._erle_db = 10.0 * math.log10(mic_energy / (e_e + 1e-12))
        target = 1.0
        if far_active:
            dominance = min(self.impl.energy_peak(echo)[0] / mic_energy, 1.0)
            share = max(0.0, (dominance - self.nlp_threshold) / (1.0 - self.nlp_threshold))
            target = 10.0 ** (-self.suppression_db * share / 20.0)
        # Ramp across the frame so the attenuation never steps audibly; comfort noise fills what it removed.
        n, start = len(e), self._nlp_gain
        self._nlp_gain = target
        lowest = min(start + (target - start) / n, target)  # the ramp's smallest gain (its first or last)
        noise = self._rng.standard_normal(n) if self.comfort_noise and lowest < 1.0 else None
        return self.impl.nlp_ramp(e, start, target, noise, self._noise_rms, np.empty(n))

    def telemetry(self) -> dict[str, float]:
        return {"aec_erle_db": self._erle_db, "aec_nlp_gain_db": 20.0 * math.log10(max(self._nlp_gain, 1e-6))}
