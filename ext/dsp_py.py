"""DSP primitives for the agent's chain, pure-Python twin of ext/_dsp.pyx (same algorithm, same results).

Every class works on float64 blocks of any length and keeps its state across calls, so a
signal cut into blocks of 1, 7 or 320 samples gives the same output as one long block.
Parameter-to-coefficient math (time constants, filter designs, ring resizing) lives here
and the Cython module imports it, so only the per-sample loops exist twice.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# Filters are designed at most at this fraction of the sample rate (the catalog's EQ rule).
MAX_DESIGN_FRACTION = 0.45
DB_TO_LN = math.log(10.0) / 20.0  # exp(db * DB_TO_LN) == 10 ** (db / 20)
# AgcGain: level decisions every 5 ms block; a block is speech this far above the noise floor;
# the speech level averages about a second of speech; the floor follows dips at once and rises slowly.
AGC_BLOCK_MS = 5.0
VAD_MARGIN_DB = 10.0
SPEECH_LEVEL_MS = 1000.0
FLOOR_RISE_DB = 5.0       # per second
FLOOR_MIN_DB = -100.0
# SpectralGain (the noise suppressor's per-band recursion), per 10 ms hop.
NR_INIT_HOPS = 10                      # the first 100 ms train the noise estimate
NR_STATIONARY_ALPHA = 0.98             # ~0.5 s noise average (stationary tracking)
NR_MIN_TRACK_RISE = 10 ** (6 / 10 / 100)  # minimum tracker may rise 6 dB/s (non-stationary tracking)
NR_MIN_TRACK_BIAS = 2.0                # the minimum of noisy power sits ~3 dB under its mean
NR_DD_ALPHA = 0.96                     # decision-directed a-priori SNR smoothing
NR_MIN_WINDOW_HOPS = 20                # rolling minimum over 8 sub-windows of 200 ms ...
NR_MIN_WINDOWS = 8                     # ... so the estimate never stays above the last 1.6 s's floor
NR_VAD_DB = 2.5                        # mean band SNR (dB) above which a hop counts as speech
NR_VAD_HANGOVER = 8                    # hops the speech decision persists
NR_TRANSIENT_JUMP = 10 ** 0.3          # a hop 3 dB above the recent level ...
NR_TRANSIENT_CREST = 10 ** 1.65        # ... whose energy sits in a few samples (crest > 16.5 dB) is a click
FILTER_KINDS = ("peaking", "lowshelf", "highshelf", "lowpass", "highpass", "bandpass")

Coeffs = tuple[float, float, float, float, float]  # b0, b1, b2, a1, a2 (a0 normalised to 1)


def time_coef(ms: float, sample_rate: float) -> float:
    """One-pole smoothing coefficient for a time constant in ms (0 ms: follow instantly)."""
    samples = ms * 1e-3 * sample_rate
    return math.exp(-1.0 / samples) if samples > 0 else 0.0


def ms_to_samples(ms: float, sample_rate: float) -> int:
    return max(0, int(round(ms * 1e-3 * sample_rate)))


def db_to_lin(db: float) -> float:
    return math.exp(db * DB_TO_LN)


def resized_ring(ring: np.ndarray, pos: int, size: int) -> np.ndarray:
    """A ring of `size` holding the newest samples of `ring` (read from `pos`), oldest first.

    Used when a delay changes length at runtime, so a lookahead change does not drop audio.
    """
    ordered = np.concatenate((ring[pos:], ring[:pos])) if len(ring) else ring
    out = np.zeros(size)
    keep = min(size, len(ordered))
    if keep:
        out[size - keep:] = ordered[len(ordered) - keep:]
    return out


def design_biquad(kind: str, sample_rate: float, freq: float, q: float = 0.7071,
                  gain_db: float = 0.0) -> Coeffs:
    """RBJ audio-EQ-cookbook biquad; `freq` is clamped to 0.45 x sample rate."""
    if kind not in FILTER_KINDS:
        raise ValueError(f"unknown filter kind {kind!r}; expected one of {', '.join(FILTER_KINDS)}")
    f0 = min(max(float(freq), 1.0), MAX_DESIGN_FRACTION * sample_rate)
    w0 = 2.0 * math.pi * f0 / sample_rate
    cw, sw = math.cos(w0), math.sin(w0)
    alpha = sw / (2.0 * max(q, 1e-3))
    a = 10.0 ** (gain_db / 40.0)
    sa = 2.0 * math.sqrt(a) * alpha
    if kind == "peaking":
        b, den = (1 + alpha * a, -2 * cw, 1 - alpha * a), (1 + alpha / a, -2 * cw, 1 - alpha / a)
    elif kind == "lowshelf":
        b = (a * ((a + 1) - (a - 1) * cw + sa), 2 * a * ((a - 1) - (a + 1) * cw), a * ((a + 1) - (a - 1) * cw - sa))
        den = ((a + 1) + (a - 1) * cw + sa, -2 * ((a - 1) + (a + 1) * cw), (a + 1) + (a - 1) * cw - sa)
    elif kind == "highshelf":
        b = (a * ((a + 1) + (a - 1) * cw + sa), -2 * a * ((a - 1) + (a + 1) * cw), a * ((a + 1) + (a - 1) * cw - sa))
        den = ((a + 1) - (a - 1) * cw + sa, 2 * ((a - 1) - (a + 1) * cw), (a + 1) - (a - 1) * cw - sa)
    elif kind == "lowpass":
        b, den = ((1 - cw) / 2, 1 - cw, (1 - cw) / 2), (1 + alpha, -2 * cw, 1 - alpha)
    elif kind == "highpass":
        b, den = ((1 + cw) / 2, -(1 + cw), (1 + cw) / 2), (1 + alpha, -2 * cw, 1 - alpha)
    else:  # bandpass, 0 dB peak gain
        b, den = (alpha, 0.0, -alpha), (1 + alpha, -2 * cw, 1 - alpha)
    a0 = den[0]
    return (b[0] / a0, b[1] / a0, b[2] / a0, den[1] / a0, den[2] / a0)


def _as_block(x: np.ndarray) -> list[float]:
    return np.ascontiguousarray(x, dtype=np.float64).tolist()


class BiquadChain:
    """N biquad sections in series (transposed direct form II), one block per call."""

    def __init__(self, sections: Sequence[Sequence[float]]) -> None:
        self._coeffs = [tuple(float(c) for c in s) for s in sections]
        if any(len(c) != 5 for c in self._coeffs):
            raise ValueError("each section needs 5 coefficients (b0, b1, b2, a1, a2)")
        self._z = [[0.0, 0.0] for _ in self._coeffs]

    @property
    def n_sections(self) -> int:
        return len(self._coeffs)

    def set_section(self, index: int, coeffs: Sequence[float]) -> None:
        """Replace one section's coefficients, keeping its state (no click on a gain change)."""
        c = tuple(float(v) for v in coeffs)
        if len(c) != 5:
            raise ValueError("a section needs 5 coefficients (b0, b1, b2, a1, a2)")
        self._coeffs[index] = c

    def reset(self) -> None:
        self._z = [[0.0, 0.0] for _ in self._coeffs]

    def get_state(self) -> np.ndarray:
        return np.array(self._z, dtype=np.float64).reshape(len(self._coeffs), 2)

    def process(self, x: np.ndarray) -> np.ndarray:
        buf = _as_block(x)
        for (b0, b1, b2, a1, a2), z in zip(self._coeffs, self._z):
            z1, z2 = z
            for i, v in enumerate(buf):
                y = b0 * v + z1
                z1 = b1 * v - a1 * y + z2
                z2 = b2 * v - a2 * y
                buf[i] = y
            z[0], z[1] = z1, z2
        return np.array(buf, dtype=np.float64)


class Biquad(BiquadChain):
    """A single biquad section."""

    def __init__(self, coeffs: Sequence[float]) -> None:
        super().__init__([coeffs])

    def set_coeffs(self, coeffs: Sequence[float]) -> None:
        self.set_section(0, coeffs)


class EnvelopeFollower:
    """Attack/release envelope of |x| (mode "peak") or of x^2 reported as RMS (mode "rms")."""

    def __init__(self, sample_rate: float, attack_ms: float, release_ms: float, mode: str = "peak") -> None:
        if mode not in ("peak", "rms"):
            raise ValueError(f"mode must be 'peak' or 'rms', got {mode!r}")
        self.mode = mode
        self._rms = mode == "rms"
        self._att = time_coef(attack_ms, sample_rate)
        self._rel = time_coef(release_ms, sample_rate)
        self._env = 0.0

    def get_state(self) -> dict[str, float]:
        return {"env": self._env}

    def process(self, x: np.ndarray) -> np.ndarray:
        att, rel, env, rms = self._att, self._rel, self._env, self._rms
        out = _as_block(x)
        for i, v in enumerate(out):
            v = v * v if rms else abs(v)
            if v > env:
                env = att * env + (1.0 - att) * v
            else:
                env = rel * env + (1.0 - rel) * v
            out[i] = math.sqrt(env) if rms else env
        self._env = env
        return np.array(out, dtype=np.float64)


class Compressor:
    """Feed-forward compressor: peak detector, soft-knee gain computer, dB-domain smoothing, lookahead."""

    def __init__(self, sample_rate: float, threshold_db: float = -20.0, ratio: float = 4.0,
                 knee_db: float = 2.5, attack_ms: float = 10.0, release_ms: float = 100.0,
                 makeup_db: float = 0.0, lookahead_ms: float = 0.0) -> None:
        self.sample_rate = float(sample_rate)
        self._delay = np.zeros(0)
        self._pos = 0
        self._det = 0.0
        self._gain_db = 0.0
        self.set_params(threshold_db, ratio, knee_db, attack_ms, release_ms, makeup_db, lookahead_ms)

    def set_params(self, threshold_db: float, ratio: float, knee_db: float, attack_ms: float,
                   release_ms: float, makeup_db: float, lookahead_ms: float) -> None:
        """Change parameters keeping the gain state; a new lookahead keeps the newest delayed audio."""
        self._thr = float(threshold_db)
        self._slope = 1.0 / max(float(ratio), 1.0) - 1.0
        self._knee = max(float(knee_db), 0.0)
        # Below the knee's start the gain computer gives 0 dB: compare linearly, skip the log.
        self._quiet = db_to_lin(self._thr - self._knee / 2.0)
        self._att = time_coef(attack_ms, self.sample_rate)
        self._rel = time_coef(release_ms, self.sample_rate)
        self._makeup = float(makeup_db)
        n = ms_to_samples(lookahead_ms, self.sample_rate)
        if n != len(self._delay):
            self._delay, self._pos = resized_ring(self._delay, self._pos, n), 0

    @property
    def lookahead_samples(self) -> int:
        return len(self._delay)

    @property
    def gain_reduction_db(self) -> float:
        return -self._gain_db

    def get_state(self) -> dict[str, object]:
        return {"det": self._det, "gain_db": self._gain_db, "pos": self._pos, "delay": np.array(self._delay)}

    def process(self, x: np.ndarray) -> np.ndarray:
        thr, slope, knee, att, rel = self._thr, self._slope, self._knee, self._att, self._rel
        makeup, det, g, quiet = self._makeup, self._det, self._gain_db, self._quiet
        ring = self._delay.tolist()
        n, pos = len(ring), self._pos
        half = knee / 2.0
        out = _as_block(x)
        for i, v in enumerate(out):
            a = abs(v)
            det = a if a > det else rel * det + (1.0 - rel) * a
            if det <= quiet:
                gr = 0.0
            else:
                over = 20.0 * math.log10(det) - thr
                if knee > 0.0 and over < half:
                    gr = slope * (over + half) * (over + half) / (2.0 * knee)
                elif over > 0.0:
                    gr = slope * over
                else:
                    gr = 0.0
            g = att * g + (1.0 - att) * gr if gr < g else rel * g + (1.0 - rel) * gr
            if n:
                d = ring[pos]
                ring[pos] = v
                pos = pos + 1 if pos + 1 < n else 0
            else:
                d = v
            out[i] = d * math.exp((g + makeup) * DB_TO_LN)
        self._det, self._gain_db, self._pos = det, g, pos
        self._delay = np.array(ring, dtype=np.float64)
        return np.array(out, dtype=np.float64)


class Limiter:
    """Lookahead peak limiter: no output sample exceeds the ceiling, whatever the input.

    The gain follows the smallest gain any sample inside the lookahead window needs (so it is
    already down when a peak leaves the delay line), and is additionally clamped to the gain the
    outgoing sample itself needs; a final clamp absorbs floating-point rounding.
    """

    def __init__(self, sample_rate: float, ceiling_db: float = -1.0, release_ms: float = 50.0,
                 lookahead_ms: float = 5.0) -> None:
        self.sample_rate = float(sample_rate)
        self._delay = np.zeros(0)
        self._greq = np.ones(1)
        self._pos = 0
        self._gpos = 0
        self._gain = 1.0
        self._tmin = 1.0  # running minimum of the required-gain ring
        self.set_params(ceiling_db, release_ms, lookahead_ms)

    def set_params(self, ceiling_db: float, release_ms: float, lookahead_ms: float) -> None:
        self._ceiling = db_to_lin(min(float(ceiling_db), 0.0))
        self._rel = time_coef(release_ms, self.sample_rate)
        n = ms_to_samples(lookahead_ms, self.sample_rate)
        # Attack reaches ~98% of the needed reduction within the lookahead; the clamp does the rest.
        self._att = math.exp(-4.0 / n) if n > 0 else 0.0
        if n != len(self._delay):
            self._delay, self._pos = resized_ring(self._delay, self._pos, n), 0
            self._greq, self._gpos, self._tmin = np.ones(n + 1), 0, 1.0

    @property
    def ceiling(self) -> float:
        return self._ceiling

    @property
    def lookahead_samples(self) -> int:
        return len(self._delay)

    @property
    def gain_reduction_db(self) -> float:
        return -20.0 * math.log10(max(self._gain, 1e-12))

    def get_state(self) -> dict[str, object]:
        return {"gain": self._gain, "pos": self._pos, "gpos": self._gpos, "tmin": self._tmin,
                "delay": np.array(self._delay), "greq": np.array(self._greq)}

    def process(self, x: np.ndarray) -> np.ndarray:
        c, att, rel, g, target = self._ceiling, self._att, self._rel, self._gain, self._tmin
        ring, greq = self._delay.tolist(), self._greq.tolist()
        n, m, pos, gpos = len(ring), len(greq), self._pos, self._gpos
        out = _as_block(x)
        for i, v in enumerate(out):
            a = abs(v)
            new = c / a if a > c else 1.0
            old = greq[gpos]
            greq[gpos] = new
            gpos = gpos + 1 if gpos + 1 < m else 0
            # Window minimum kept incrementally; rescan only when the minimum itself leaves.
            if new <= target:
                target = new
            elif old == target:
                target = min(greq)
            g = target + (g - target) * (att if target < g else rel)
            if n:
                d = ring[pos]
                ring[pos] = v
                pos = pos + 1 if pos + 1 < n else 0
            else:
                d = v
            need = greq[gpos]  # the oldest entry belongs to the sample leaving the delay line
            y = d * (g if g < need else need)
            out[i] = c if y > c else (-c if y < -c else y)
        self._gain, self._pos, self._gpos, self._tmin = g, pos, gpos, target
        self._delay, self._greq = np.array(ring, dtype=np.float64), np.array(greq, dtype=np.float64)
        return np.array(out, dtype=np.float64)


class AgcGain:
    """Automatic gain steered by the talker's speech level, not by the instantaneous envelope.

    The detector measures the level (RMS, or peak) over the last `window_ms`, in 5 ms blocks.
    A block is speech when that level is above `freeze_below_db` and VAD_MARGIN_DB above a
    tracked noise floor; only speech blocks update the speech level, a power average over
    about SPEECH_LEVEL_MS of speech (so pauses, noise and the ups and downs of syllables do not
    move it). The gain wanted is target - speech level within +-max gain; the gain (in dB)
    falls towards it with the attack time constant, is held for `hold_ms` when it would rise,
    then rises with the release time constant. Decisions take effect from the next block.
    """

    def __init__(self, sample_rate: float, target_db: float = -18.0, max_gain_db: float = 30.0,
                 attack_ms: float = 5.0, release_ms: float = 60.0, hold_ms: float = 0.0,
                 window_ms: float = 10.0, detector: str = "rms", freeze_below_db: float = -60.0) -> None:
        self.sample_rate = float(sample_rate)
        self._block = max(1, ms_to_samples(AGC_BLOCK_MS, self.sample_rate))
        self._speech_blocks = max(1.0, SPEECH_LEVEL_MS / AGC_BLOCK_MS)
        self._ring = np.zeros(1)
        self._pos = 0
        self._sum = 0.0
        self._acc = 0.0
        self._count = 0
        self._floor_db = float(freeze_below_db)
        self._speech = 0.0
        self._n_speech = 0
        self._want = 0.0
        self._hold_count = 0
        self._gain_db = 0.0
        self.set_params(target_db, max_gain_db, attack_ms, release_ms, hold_ms, window_ms, detector, freeze_below_db)

    def set_params(self, target_db: float, max_gain_db: float, attack_ms: float, release_ms: float,
                   hold_ms: float, window_ms: float, detector: str, freeze_below_db: float) -> None:
        if detector not in ("rms", "peak"):
            raise ValueError(f"detector must be 'rms' or 'peak', got {detector!r}")
        self._target, self._max_gain = float(target_db), abs(float(max_gain_db))
        self._att = time_coef(attack_ms, self.sample_rate)
        self._rel = time_coef(release_ms, self.sample_rate)
        self._hold = ms_to_samples(hold_ms, self.sample_rate)
        self._freeze = float(freeze_below_db)
        self._peak_mode = detector == "peak"
        w = agc_window_blocks(window_ms)
        if w != len(self._ring):
            # The running sum restarts from the kept block values so it always equals their sum.
            self._ring, self._pos = resized_ring(self._ring, self._pos, w), 0
            self._sum = float(np.sum(self._ring))
        if self._n_speech:
            self._want = agc_wanted_gain(self._target, self._max_gain, self._speech)

    @property
    def gain_db(self) -> float:
        return self._gain_db

    @property
    def speech_level_db(self) -> float:
        """The speech level the gain is steered by (-200 before any speech)."""
        return 10.0 * math.log10(self._speech) if self._speech > 1e-20 else -200.0

    def get_state(self) -> dict[str, object]:
        return {"gain_db": self._gain_db, "sum": self._sum, "pos": self._pos, "acc": self._acc, "count": self._count,
                "floor_db": self._floor_db, "speech": self._speech, "n_speech": self._n_speech, "want": self._want,
                "hold_count": self._hold_count, "ring": np.array(self._ring)}

    def process(self, x: np.ndarray) -> np.ndarray:
        att, rel, hold = self._att, self._rel, self._hold
        peak_mode, block = self._peak_mode, self._block
        acc, count, hc, g, want = self._acc, self._count, self._hold_count, self._gain_db, self._want
        out = _as_block(x)
        for i, v in enumerate(out):
            if peak_mode:
                a = abs(v)
                if a > acc:
                    acc = a
            else:
                acc += v * v
            count += 1
            if count == block:
                want = self._decide(acc if peak_mode else acc / block)
                acc, count = 0.0, 0
            if want < g:
                g = att * g + (1.0 - att) * want
                hc = hold
            elif hc > 0:
                hc -= 1
            else:
                g = rel * g + (1.0 - rel) * want
            out[i] = v * math.exp(g * DB_TO_LN)
        self._acc, self._count, self._hold_count, self._gain_db, self._want = acc, count, hc, g, want
        return np.array(out, dtype=np.float64)

    def _decide(self, value: float) -> float:
        """End of a block: window level, speech decision, speech level, wanted gain."""
        ring = self._ring
        w = len(ring)
        if self._peak_mode:
            ring[self._pos] = value
            pk = float(np.max(ring))
            level = 20.0 * math.log10(pk) if pk > 1e-10 else -200.0
            power = pk * pk
        else:
            self._sum = self._sum + value - float(ring[self._pos])
            ring[self._pos] = value
            power = self._sum / w
            level = 10.0 * math.log10(power) if power > 1e-20 else -200.0
        self._pos = self._pos + 1 if self._pos + 1 < w else 0
        floor = self._floor_db
        if level > self._freeze and level > floor + VAD_MARGIN_DB:
            self._n_speech += 1
            k = 1.0 / self._n_speech if self._n_speech < self._speech_blocks else 1.0 / self._speech_blocks
            self._speech += k * (power - self._speech)
            self._want = agc_wanted_gain(self._target, self._max_gain, self._speech)
        self._floor_db = max(level, FLOOR_MIN_DB) if level < floor else floor + FLOOR_RISE_DB * AGC_BLOCK_MS / 1000.0
        return self._want


def agc_window_blocks(window_ms: float) -> int:
    """Blocks of AGC_BLOCK_MS in the level-measurement window (at least one)."""
    return max(1, int(round(float(window_ms) / AGC_BLOCK_MS)))


def agc_wanted_gain(target_db: float, max_gain_db: float, speech_power: float) -> float:
    level = 10.0 * math.log10(speech_power) if speech_power > 1e-20 else -200.0
    want = target_db - level
    return max_gain_db if want > max_gain_db else (-max_gain_db if want < -max_gain_db else want)


class SpectralGain:
    """Per-band gain of a hop-based noise suppressor: noise tracking, VAD, Wiener / subtraction, clicks.

    One call per analysis hop with the band powers of its spectrum (|X|^2 averaged over each
    band's bins), their total over all bins and the hop's newest samples. Noise estimate:
    the first NR_INIT_HOPS hops train it; then stationary tracking (a slow average frozen
    during speech when `vad`, capped by NR_MIN_TRACK_BIAS x the rolling minimum of the smoothed
    power over the last ~1.6 s) or non-stationary tracking (a minimum that may rise 6 dB/s); in
    both, never under that rolling minimum, so a wrong start is unlearned within ~1.6 s.
    Gain: decision-directed Wiener, or power subtraction with over-subtraction `oversub`,
    floored at `floor`; bands on the noise floor lose another `extra_floor_db`. A click (a hop
    3 dB above the recent level whose newest samples have a crest above 16.5 dB) is pulled
    down to the recent level when `transient` is set.
    """

    def __init__(self, bands: int) -> None:
        self.bands = int(bands)
        inf = math.inf
        n = self.bands
        self._noise, self._smooth = [0.0] * n, [0.0] * n
        self._prev_snr, self._prev_gain = [1.0] * n, [1.0] * n
        self._sub_min, self._minima_min = [inf] * n, [inf] * n
        self._minima = [[inf] * n for _ in range(NR_MIN_WINDOWS)]
        self._noise_used = [1e-20] * n
        self._hops = self._hang = self._filled = self._slot = self.transients = 0
        self._recent = 0.0
        self.speech = False
        self.set_params(True, 1.0, 0.0, True, 1.0, True, True)

    def set_params(self, stationary: bool, floor: float, extra_floor_db: float, vad: bool, oversub: float,
                   wiener: bool, transient: bool) -> None:
        self._stationary, self._floor, self._extra = bool(stationary), float(floor), float(extra_floor_db)
        self._vad, self._oversub, self._wiener, self._transient = bool(vad), float(oversub), bool(wiener), bool(transient)

    @property
    def noise(self) -> np.ndarray:
        """The noise power per band the last gain was computed against (tracker x bias, >= 1e-20)."""
        return np.array(self._noise_used)

    def get_state(self) -> dict[str, object]:
        return {"noise": np.array(self._noise), "smooth": np.array(self._smooth), "prev_snr": np.array(self._prev_snr),
                "prev_gain": np.array(self._prev_gain), "sub_min": np.array(self._sub_min),
                "minima_min": np.array(self._minima_min), "hops": self._hops, "hang": self._hang,
                "recent": self._recent, "transients": self.transients}

    def process(self, band: np.ndarray, total: float, newest: np.ndarray) -> np.ndarray:
        """Gains (one per band) for one hop."""
        b_in = _as_block(band)
        n = self.bands
        if len(b_in) != n:
            raise ValueError(f"expected {n} band powers, got {len(b_in)}")
        self._smooth_and_minimum(b_in)
        self._track(b_in)
        gains = self._gains(b_in)
        self._hops += 1
        g = self._click_gain(float(total), _as_block(newest))
        if g != 1.0:
            gains = [v * g for v in gains]
        return np.array(gains, dtype=np.float64)

    def _smooth_and_minimum(self, band: list[float]) -> None:
        smooth, sub = self._smooth, self._sub_min
        first = self._hops == 0
        for b, v in enumerate(band):
            s = v if first else 0.6 * smooth[b] + 0.4 * v
            smooth[b] = s
            if s < sub[b]:
                sub[b] = s
        if self._hops % NR_MIN_WINDOW_HOPS == NR_MIN_WINDOW_HOPS - 1:
            self._minima[self._slot] = list(sub)
            self._slot = (self._slot + 1) % NR_MIN_WINDOWS
            self._filled = min(self._filled + 1, NR_MIN_WINDOWS)
            for b in range(self.bands):
                m = math.inf
                for w in range(self._filled):
                    if self._minima[w][b] < m:
                        m = self._minima[w][b]
                self._minima_min[b] = m
                sub[b] = math.inf

    def _track(self, band: list[float]) -> None:
        noise, hops = self._noise, self._hops
        if hops < NR_INIT_HOPS:
            for b, v in enumerate(band):
                noise[b] = v if hops == 0 else noise[b] + (v - noise[b]) / (hops + 1)
            return
        acc = 0.0
        for b, v in enumerate(band):
            snr_db = 10.0 * math.log10((v if v > 1e-20 else 1e-20) / (noise[b] if noise[b] > 1e-20 else 1e-20))
            acc += -10.0 if snr_db < -10.0 else (30.0 if snr_db > 30.0 else snr_db)
        self._hang = NR_VAD_HANGOVER if acc / self.bands > NR_VAD_DB else max(self._hang - 1, 0)
        self.speech = self._hang > 0
        frozen = self._vad and self.speech
        smooth, sub, mins = self._smooth, self._sub_min, self._minima_min
        for b, v in enumerate(band):
            # The rolling minimum of the smoothed power over the last ~1.6 s never exceeds the noise:
            # the estimate never stays under it, so a gate frozen on a too-low estimate (trained on the
            # stream's leading silence, or speech judged against it forever) re-learns within 1.6 s.
            low = mins[b] if mins[b] < sub[b] else sub[b]
            if self._stationary:
                x = noise[b] if frozen else NR_STATIONARY_ALPHA * noise[b] + (1.0 - NR_STATIONARY_ALPHA) * v
                cap = low * NR_MIN_TRACK_BIAS
                x = x if x < cap else cap
            else:
                x = noise[b] * (1.0 if frozen else NR_MIN_TRACK_RISE)
                x = smooth[b] if smooth[b] < x else x
            noise[b] = x if x > low else low

    def _gains(self, band: list[float]) -> list[float]:
        bias = 1.0 if self._stationary else NR_MIN_TRACK_BIAS
        out = [0.0] * self.bands
        for b, v in enumerate(band):
            nz = self._noise[b] * bias
            nz = nz if nz > 1e-20 else 1e-20
            post = v / nz
            if self._wiener:
                pg = self._prev_gain[b]
                prio = NR_DD_ALPHA * (pg * pg) * self._prev_snr[b] + (1.0 - NR_DD_ALPHA) * (post - 1.0 if post > 1.0 else 0.0)
                g = prio / (1.0 + prio)
            else:
                r = 1.0 - self._oversub * nz / (v if v > 1e-20 else 1e-20)
                g = math.sqrt(r) if r > 0.0 else 0.0
            g = g if g > self._floor else self._floor
            self._prev_gain[b], self._prev_snr[b] = g, post
            if self._extra > 0.0:
                # Bands on the noise floor (smoothed SNR < 3 dB, fading out by 9 dB) lose extra_floor_db more.
                ratio = self._smooth[b] / nz
                s_db = 10.0 * math.log10(ratio if ratio > 1e-10 else 1e-10)
                share = (9.0 - s_db) / 6.0
                share = 0.0 if share < 0.0 else (1.0 if share > 1.0 else share)
                g = g * 10.0 ** (-self._extra * share / 20.0)
            self._noise_used[b] = nz
            out[b] = g
        return out

    def _click_gain(self, total: float, newest: list[float]) -> float:
        t = total + 1e-20
        recent = self._recent
        cap = recent * NR_TRANSIENT_JUMP
        self._recent = t if recent == 0.0 else 0.8 * recent + 0.2 * (t if t < cap else cap)
        if not self._transient or recent == 0.0 or t < cap:
            return 1.0
        peak = acc = 0.0
        for v in newest:
            sq = v * v
            acc += sq
            if sq > peak:
                peak = sq
        if peak < NR_TRANSIENT_CREST * (acc / len(newest) + 1e-20):
            return 1.0
        self.transients += 1
        return math.sqrt(recent / t)


class NoiseGate:
    """Gate: opens when the peak envelope exceeds the threshold, closes (after hold) below it minus hysteresis."""

    def __init__(self, sample_rate: float, threshold_db: float = -50.0, attack_ms: float = 1.0,
                 release_ms: float = 100.0, hold_ms: float = 50.0, hysteresis_db: float = 3.0,
                 floor_db: float = -80.0, detector_ms: float = 10.0) -> None:
        self.sample_rate = float(sample_rate)
        self._env = 0.0
        self._gain = 1.0
        self._open = 1
        self._hold_count = 0
        self.set_params(threshold_db, attack_ms, release_ms, hold_ms, hysteresis_db, floor_db, detector_ms)

    def set_params(self, threshold_db: float, attack_ms: float, release_ms: float, hold_ms: float,
                   hysteresis_db: float, floor_db: float, detector_ms: float) -> None:
        self._thr_open = db_to_lin(float(threshold_db))
        self._thr_close = db_to_lin(float(threshold_db) - abs(float(hysteresis_db)))
        self._att = time_coef(attack_ms, self.sample_rate)
        self._rel = time_coef(release_ms, self.sample_rate)
        self._hold = ms_to_samples(hold_ms, self.sample_rate)
        self._floor = db_to_lin(min(float(floor_db), 0.0))
        self._det = time_coef(detector_ms, self.sample_rate)

    @property
    def is_open(self) -> bool:
        return bool(self._open)

    @property
    def gain(self) -> float:
        return self._gain

    def get_state(self) -> dict[str, float]:
        return {"env": self._env, "gain": self._gain, "open": self._open, "hold_count": self._hold_count}

    def process(self, x: np.ndarray) -> np.ndarray:
        t_open, t_close, att, rel, hold, floor, det = (self._thr_open, self._thr_close, self._att, self._rel,
                                                       self._hold, self._floor, self._det)
        env, g, is_open, hc = self._env, self._gain, self._open, self._hold_count
        out = _as_block(x)
        for i, v in enumerate(out):
            a = abs(v)
            env = a if a > env else det * env + (1.0 - det) * a
            if env > t_open:
                is_open, hc = 1, hold
            elif env < t_close:
                if hc > 0:
                    hc -= 1
                else:
                    is_open = 0
            target = 1.0 if is_open else floor
            g = target + (g - target) * (att if target > g else rel)
            out[i] = v * g
        self._env, self._gain, self._open, self._hold_count = env, g, is_open, hc
        return np.array(out, dtype=np.float64)


class FeedbackComb:
    """Freeverb comb: a delay line whose feedback passes a one-pole low-pass (damping)."""

    def __init__(self, delay_samples: int, feedback: float = 0.8, damping: float = 0.2) -> None:
        self._buf = np.zeros(max(1, int(delay_samples)))
        self._pos = 0
        self._filt = 0.0
        self.set_params(feedback, damping)

    def set_params(self, feedback: float, damping: float) -> None:
        self._fb = float(feedback)
        self._damp = min(max(float(damping), 0.0), 1.0)

    def get_state(self) -> dict[str, object]:
        return {"filt": self._filt, "pos": self._pos, "buf": np.array(self._buf)}

    def process(self, x: np.ndarray) -> np.ndarray:
        fb, damp, filt = self._fb, self._damp, self._filt
        buf = self._buf.tolist()
        n, pos = len(buf), self._pos
        out = _as_block(x)
        for i, v in enumerate(out):
            y = buf[pos]
            filt = y * (1.0 - damp) + filt * damp
            buf[pos] = v + filt * fb
            pos = pos + 1 if pos + 1 < n else 0
            out[i] = y
        self._filt, self._pos = filt, pos
        self._buf = np.array(buf, dtype=np.float64)
        return np.array(out, dtype=np.float64)


class Allpass:
    """Schroeder all-pass section (diffuser): y = -g x + d, d' = x + g y."""

    def __init__(self, delay_samples: int, gain: float = 0.5) -> None:
        self._buf = np.zeros(max(1, int(delay_samples)))
        self._pos = 0
        self.set_params(gain)

    def set_params(self, gain: float) -> None:
        self._g = float(gain)

    def get_state(self) -> dict[str, object]:
        return {"pos": self._pos, "buf": np.array(self._buf)}

    def process(self, x: np.ndarray) -> np.ndarray:
        g = self._g
        buf = self._buf.tolist()
        n, pos = len(buf), self._pos
        out = _as_block(x)
        for i, v in enumerate(out):
            d = buf[pos]
            y = d - g * v
            buf[pos] = v + g * y
            pos = pos + 1 if pos + 1 < n else 0
            out[i] = y
        self._pos = pos
        self._buf = np.array(buf, dtype=np.float64)
        return np.array(out, dtype=np.float64)


# --- Frame kernels of the echo canceller and the noise reducer ------------------------------------
# Stateless: the stage owns every array and these update them in place, so one frame of AEC or
# noise reduction is a handful of calls (plus its FFTs) instead of dozens of small numpy operations.

def energy_peak(x: np.ndarray) -> tuple[float, float]:
    """(sum of squares, largest magnitude) of a block; (0, 0) for an empty one."""
    if not len(x):
        return 0.0, 0.0
    return float(np.dot(x, x)), float(np.max(np.abs(x)))


def pbfdaf_push(spectra: np.ndarray, head: int, parts: int, power: np.ndarray, smoothing: float) -> None:
    """The far-end spectrum just written at row `head` of the doubled ring is copied to row
    head + parts, and the per-bin far-end power moves towards its |X|^2 by 1 - smoothing."""
    x0 = spectra[head]
    spectra[head + parts] = x0
    power[:] = smoothing * power + (1 - smoothing) * (x0.real ** 2 + x0.imag ** 2)


def pbfdaf_echoes(filters: np.ndarray, spectra: np.ndarray, head: int, out: np.ndarray) -> np.ndarray:
    """Echo spectrum of each filter: out[f] = sum over partitions p of filters[f, p] * spectra[head + p]."""
    parts = filters.shape[1]
    np.einsum("fpk,pk->fk", filters, spectra[head:head + parts], out=out)
    return out


def pbfdaf_adapt(weights: np.ndarray, spectra: np.ndarray, head: int, err: np.ndarray, power: np.ndarray,
                 step: float, eps: float) -> None:
    """One normalised LMS step of a partitioned filter, in place:
    weights[p] += conj(spectra[head + p]) * err * step / (power + eps)."""
    parts = weights.shape[0]
    weights += np.conj(spectra[head:head + parts]) * (err * (step / (power + eps)))


def nlp_ramp(e: np.ndarray, g0: float, g1: float, noise: np.ndarray | None, noise_scale: float,
             out: np.ndarray) -> np.ndarray:
    """out = e x a gain ramping linearly from g0 (the previous block's, excluded) to g1 (reached on the
    last sample); with a standard-normal `noise` draw, plus noise x noise_scale x sqrt(1 - gain^2)."""
    gains = np.linspace(g0, g1, len(e) + 1)[1:]
    np.multiply(e, gains, out=out)
    if noise is not None:
        out += noise * (noise_scale * np.sqrt(np.maximum(1.0 - gains * gains, 0.0)))
    return out


def stft_frames(history: np.ndarray, x: np.ndarray, window: np.ndarray, hop: int, out: np.ndarray) -> None:
    """Shift block `x` into the end of `history` (its older samples move forward) and write the windowed
    analysis frame of each hop: out[h] = history[h * hop : h * hop + len(window)] * window."""
    keep = len(history) - len(x)
    history[:keep] = history[len(history) - keep:]
    history[keep:] = x
    w = len(window)
    for h in range(out.shape[0]):
        np.multiply(history[h * hop:h * hop + w], window, out=out[h])


def band_powers(specs: np.ndarray, starts: np.ndarray, counts: np.ndarray, bands: np.ndarray,
                totals: np.ndarray) -> None:
    """Per row of spectra: |X_k|^2 averaged over each band's bins (band b covers bins starts[b] up to
    the next start, the last one to the end) into `bands`, and summed over all bins into `totals`."""
    power = specs.real ** 2 + specs.imag ** 2
    bands[:] = np.add.reduceat(power, starts, axis=1) / counts
    totals[:] = power.sum(axis=1)


def band_gains_apply(specs: np.ndarray, gains: np.ndarray, bin_band: np.ndarray, noise: np.ndarray,
                     comfort_power: float, draw: np.ndarray | None) -> None:
    """specs[h, k] *= gains[h, bin_band[k]], in place. With `draw` (standard normal, 2 x rows x bins:
    real and imaginary parts) comfort noise fills what the gain removed, shaped like the band noise
    powers `noise` and never louder than them: per bin, with n = noise[bin_band[k]],
    sqrt((1 - gain^2) x 0.5 x min(1, comfort_power / mean of n over the bins) x n) x (draw[0] + j draw[1])."""
    bins = gains[:, bin_band]
    specs *= bins
    if draw is not None:
        noise_bins = noise[bin_band]
        scale = min(1.0, comfort_power / (float(np.mean(noise_bins)) + 1e-30))
        amp = np.sqrt(np.maximum(1.0 - bins * bins, 0.0) * (0.5 * scale) * noise_bins)
        specs += amp * (draw[0] + 1j * draw[1])


def overlap_add(frames: np.ndarray, window: np.ndarray, tail: np.ndarray, out: np.ndarray) -> None:
    """50% overlap-add of synthesis frames (rows of at least len(window) samples, each windowed):
    hop h of `out` is the first half of frame h plus what the previous frame left in `tail`; the
    last frame's second half is left in `tail` for the next block."""
    hop = len(tail)
    for h in range(frames.shape[0]):
        y = frames[h, :2 * hop] * window
        out[h * hop:(h + 1) * hop] = tail + y[:hop]
        tail[:] = y[hop:]
