# cython: language_level=3
"""DSP primitives for the agent's chain in Cython: the per-sample loops of ext/dsp_py.py in C.

Parameter math (time constants, designs, ring resizing) is imported from the twin so both
compute identical coefficients; only the loops differ, and they follow the twin line by line.
"""
import math

import numpy as np

cimport numpy as cnp
from libc.math cimport INFINITY, exp, fabs, log10, pow, sqrt

cnp.import_array()

from ext.dsp_py import DB_TO_LN as _PY_DB_TO_LN
from ext.dsp_py import AGC_BLOCK_MS, SPEECH_LEVEL_MS, FLOOR_RISE_DB
from ext.dsp_py import FLOOR_MIN_DB as _PY_FLOOR_MIN_DB, VAD_MARGIN_DB as _PY_VAD_MARGIN_DB
from ext.dsp_py import agc_wanted_gain, agc_window_blocks, db_to_lin, ms_to_samples, resized_ring, time_coef

cdef double DB_TO_LN = _PY_DB_TO_LN
cdef double FLOOR_MIN_DB = _PY_FLOOR_MIN_DB
cdef double VAD_MARGIN_DB = _PY_VAD_MARGIN_DB

import ext.dsp_py as _py
cdef Py_ssize_t _NR_INIT_HOPS = _py.NR_INIT_HOPS
cdef double _NR_STATIONARY_ALPHA = _py.NR_STATIONARY_ALPHA
cdef double _NR_MIN_TRACK_RISE = _py.NR_MIN_TRACK_RISE
cdef double _NR_MIN_TRACK_BIAS = _py.NR_MIN_TRACK_BIAS
cdef double _NR_DD_ALPHA = _py.NR_DD_ALPHA
cdef Py_ssize_t _NR_MIN_WINDOW_HOPS = _py.NR_MIN_WINDOW_HOPS
cdef Py_ssize_t _NR_MIN_WINDOWS = _py.NR_MIN_WINDOWS
cdef double _NR_VAD_DB = _py.NR_VAD_DB
cdef Py_ssize_t _NR_VAD_HANGOVER = _py.NR_VAD_HANGOVER
cdef double _NR_TRANSIENT_JUMP = _py.NR_TRANSIENT_JUMP
cdef double _NR_TRANSIENT_CREST = _py.NR_TRANSIENT_CREST


cdef inline const double[::1] _view(object x):
    """The block as a contiguous float64 view; converts only when it is not one already
    (the chain always passes float64 arrays, so the per-call cost stays small)."""
    cdef const double[::1] v
    try:
        v = x
    except (ValueError, TypeError):
        v = np.ascontiguousarray(x, dtype=np.float64).reshape(-1)
    return v


cdef inline cnp.ndarray _empty(Py_ssize_t n):
    cdef cnp.npy_intp dims = n
    return cnp.PyArray_EMPTY(1, &dims, cnp.NPY_DOUBLE, 0)


cdef class BiquadChain:
    """N biquad sections in series (transposed direct form II), one block per call."""
    cdef object _coeffs_arr, _z_arr
    cdef double[:, ::1] _coeffs
    cdef double[:, ::1] _z

    def __init__(self, sections):
        coeffs = np.array([[float(c) for c in s] for s in sections], dtype=np.float64).reshape(-1, 5) \
            if len(sections) else np.zeros((0, 5))
        if any(len(s) != 5 for s in sections):
            raise ValueError("each section needs 5 coefficients (b0, b1, b2, a1, a2)")
        self._coeffs_arr = np.ascontiguousarray(coeffs)
        self._coeffs = self._coeffs_arr
        self._z_arr = np.zeros((coeffs.shape[0], 2))
        self._z = self._z_arr

    @property
    def n_sections(self):
        return self._coeffs.shape[0]

    def set_section(self, Py_ssize_t index, coeffs):
        c = [float(v) for v in coeffs]
        if len(c) != 5:
            raise ValueError("a section needs 5 coefficients (b0, b1, b2, a1, a2)")
        if index < 0:
            index += self._coeffs.shape[0]
        if not 0 <= index < self._coeffs.shape[0]:
            raise IndexError("section index out of range")
        for k in range(5):
            self._coeffs[index, k] = c[k]

    def reset(self):
        self._z_arr[:] = 0.0

    def get_state(self):
        return np.array(self._z_arr)

    def process(self, x):
        cdef const double[::1] xv = _view(x)
        cdef Py_ssize_t n = xv.shape[0], s, i
        out = _empty(n)
        cdef double[::1] buf = out
        buf[:] = xv
        cdef double b0, b1, b2, a1, a2, z1, z2, v, y
        for s in range(self._coeffs.shape[0]):
            b0, b1, b2 = self._coeffs[s, 0], self._coeffs[s, 1], self._coeffs[s, 2]
            a1, a2 = self._coeffs[s, 3], self._coeffs[s, 4]
            z1, z2 = self._z[s, 0], self._z[s, 1]
            for i in range(n):
                v = buf[i]
                y = b0 * v + z1
                z1 = b1 * v - a1 * y + z2
                z2 = b2 * v - a2 * y
                buf[i] = y
            self._z[s, 0], self._z[s, 1] = z1, z2
        return out


cdef class Biquad(BiquadChain):
    """A single biquad section."""

    def __init__(self, coeffs):
        super().__init__([coeffs])

    def set_coeffs(self, coeffs):
        self.set_section(0, coeffs)


cdef class EnvelopeFollower:
    """Attack/release envelope of |x| (mode "peak") or of x^2 reported as RMS (mode "rms")."""
    cdef double _att, _rel, _env
    cdef bint _rms
    cdef public str mode

    def __init__(self, double sample_rate, double attack_ms, double release_ms, str mode="peak"):
        if mode not in ("peak", "rms"):
            raise ValueError(f"mode must be 'peak' or 'rms', got {mode!r}")
        self.mode = mode
        self._rms = mode == "rms"
        self._att = time_coef(attack_ms, sample_rate)
        self._rel = time_coef(release_ms, sample_rate)
        self._env = 0.0

    def get_state(self):
        return {"env": self._env}

    def process(self, x):
        cdef const double[::1] xv = _view(x)
        cdef Py_ssize_t n = xv.shape[0], i
        out = _empty(n)
        cdef double[::1] ov = out
        cdef double att = self._att, rel = self._rel, env = self._env, v
        cdef bint rms = self._rms
        for i in range(n):
            v = xv[i] * xv[i] if rms else fabs(xv[i])
            if v > env:
                env = att * env + (1.0 - att) * v
            else:
                env = rel * env + (1.0 - rel) * v
            ov[i] = sqrt(env) if rms else env
        self._env = env
        return out


cdef class Compressor:
    """Feed-forward compressor: peak detector, soft-knee gain computer, dB-domain smoothing, lookahead."""
    cdef public double sample_rate
    cdef double _thr, _slope, _knee, _quiet, _att, _rel, _makeup, _det, _gain_db
    cdef Py_ssize_t _pos
    cdef object _delay_arr
    cdef double[::1] _delay

    def __init__(self, double sample_rate, double threshold_db=-20.0, double ratio=4.0, double knee_db=2.5,
                 double attack_ms=10.0, double release_ms=100.0, double makeup_db=0.0, double lookahead_ms=0.0):
        self.sample_rate = sample_rate
        self._delay_arr = np.zeros(0)
        self._delay = self._delay_arr
        self._pos = 0
        self._det = 0.0
        self._gain_db = 0.0
        self.set_params(threshold_db, ratio, knee_db, attack_ms, release_ms, makeup_db, lookahead_ms)

    def set_params(self, threshold_db, ratio, knee_db, attack_ms, release_ms, makeup_db, lookahead_ms):
        self._thr = float(threshold_db)
        self._slope = 1.0 / max(float(ratio), 1.0) - 1.0
        self._knee = max(float(knee_db), 0.0)
        self._quiet = db_to_lin(self._thr - self._knee / 2.0)
        self._att = time_coef(attack_ms, self.sample_rate)
        self._rel = time_coef(release_ms, self.sample_rate)
        self._makeup = float(makeup_db)
        n = ms_to_samples(lookahead_ms, self.sample_rate)
        if n != len(self._delay_arr):
            self._delay_arr = resized_ring(self._delay_arr, self._pos, n)
            self._delay = self._delay_arr
            self._pos = 0

    @property
    def lookahead_samples(self):
        return len(self._delay_arr)

    @property
    def gain_reduction_db(self):
        return -self._gain_db

    def get_state(self):
        return {"det": self._det, "gain_db": self._gain_db, "pos": self._pos, "delay": np.array(self._delay_arr)}

    def process(self, x):
        cdef const double[::1] xv = _view(x)
        cdef Py_ssize_t n = xv.shape[0], i
        out = _empty(n)
        cdef double[::1] ov = out
        cdef double thr = self._thr, slope = self._slope, knee = self._knee, att = self._att, rel = self._rel
        cdef double makeup = self._makeup, det = self._det, g = self._gain_db, half = knee / 2.0
        cdef double quiet = self._quiet, v, a, over, gr, d
        cdef double[::1] ring = self._delay
        cdef Py_ssize_t m = ring.shape[0], pos = self._pos
        for i in range(n):
            v = xv[i]
            a = fabs(v)
            det = a if a > det else rel * det + (1.0 - rel) * a
            if det <= quiet:
                gr = 0.0
            else:
                over = 20.0 * log10(det) - thr
                if knee > 0.0 and over < half:
                    gr = slope * (over + half) * (over + half) / (2.0 * knee)
                elif over > 0.0:
                    gr = slope * over
                else:
                    gr = 0.0
            if gr < g:
                g = att * g + (1.0 - att) * gr
            else:
                g = rel * g + (1.0 - rel) * gr
            if m:
                d = ring[pos]
                ring[pos] = v
                pos = pos + 1 if pos + 1 < m else 0
            else:
                d = v
            ov[i] = d * exp((g + makeup) * DB_TO_LN)
        self._det, self._gain_db, self._pos = det, g, pos
        return out


cdef class Limiter:
    """Lookahead peak limiter: no output sample exceeds the ceiling, whatever the input."""
    cdef public double sample_rate
    cdef double _ceiling, _att, _rel, _gain, _tmin
    cdef Py_ssize_t _pos, _gpos
    cdef object _delay_arr, _greq_arr
    cdef double[::1] _delay
    cdef double[::1] _greq

    def __init__(self, double sample_rate, double ceiling_db=-1.0, double release_ms=50.0, double lookahead_ms=5.0):
        self.sample_rate = sample_rate
        self._delay_arr = np.zeros(0)
        self._delay = self._delay_arr
        self._greq_arr = np.ones(1)
        self._greq = self._greq_arr
        self._pos = 0
        self._gpos = 0
        self._gain = 1.0
        self._tmin = 1.0
        self.set_params(ceiling_db, release_ms, lookahead_ms)

    def set_params(self, ceiling_db, release_ms, lookahead_ms):
        self._ceiling = db_to_lin(min(float(ceiling_db), 0.0))
        self._rel = time_coef(release_ms, self.sample_rate)
        n = ms_to_samples(lookahead_ms, self.sample_rate)
        self._att = math.exp(-4.0 / n) if n > 0 else 0.0
        if n != len(self._delay_arr):
            self._delay_arr = resized_ring(self._delay_arr, self._pos, n)
            self._delay = self._delay_arr
            self._pos = 0
            self._greq_arr = np.ones(n + 1)
            self._greq = self._greq_arr
            self._gpos = 0
            self._tmin = 1.0

    @property
    def ceiling(self):
        return self._ceiling

    @property
    def lookahead_samples(self):
        return len(self._delay_arr)

    @property
    def gain_reduction_db(self):
        return -20.0 * math.log10(max(self._gain, 1e-12))

    def get_state(self):
        return {"gain": self._gain, "pos": self._pos, "gpos": self._gpos, "tmin": self._tmin,
                "delay": np.array(self._delay_arr), "greq": np.array(self._greq_arr)}

    def process(self, x):
        cdef const double[::1] xv = _view(x)
        cdef Py_ssize_t n = xv.shape[0], i, k
        out = _empty(n)
        cdef double[::1] ov = out
        cdef double c = self._ceiling, att = self._att, rel = self._rel, g = self._gain, target = self._tmin
        cdef double v, a, d, need, y, new, old
        cdef double[::1] ring = self._delay
        cdef double[::1] greq = self._greq
        cdef Py_ssize_t m = ring.shape[0], gm = greq.shape[0], pos = self._pos, gpos = self._gpos
        for i in range(n):
            v = xv[i]
            a = fabs(v)
            new = c / a if a > c else 1.0
            old = greq[gpos]
            greq[gpos] = new
            gpos = gpos + 1 if gpos + 1 < gm else 0
            if new <= target:
                target = new
            elif old == target:
                target = greq[0]
                for k in range(1, gm):
                    if greq[k] < target:
                        target = greq[k]
            g = target + (g - target) * (att if target < g else rel)
            if m:
                d = ring[pos]
                ring[pos] = v
                pos = pos + 1 if pos + 1 < m else 0
            else:
                d = v
            need = greq[gpos]
            y = d * (g if g < need else need)
            ov[i] = c if y > c else (-c if y < -c else y)
        self._gain, self._pos, self._gpos, self._tmin = g, pos, gpos, target
        return out


cdef class AgcGain:
    """Automatic gain steered by the talker's speech level (see ext/dsp_py.py AgcGain: the same loop)."""
    cdef public double sample_rate
    cdef double _target, _max_gain, _att, _rel, _freeze, _sum, _acc, _floor_db, _speech, _want, _gain_db
    cdef double _speech_blocks, _floor_step
    cdef Py_ssize_t _hold, _pos, _count, _block, _hold_count, _n_speech
    cdef bint _peak_mode
    cdef object _ring_arr
    cdef double[::1] _ring

    def __init__(self, double sample_rate, double target_db=-18.0, double max_gain_db=30.0, double attack_ms=5.0,
                 double release_ms=60.0, double hold_ms=0.0, double window_ms=10.0, str detector="rms",
                 double freeze_below_db=-60.0):
        self.sample_rate = sample_rate
        self._block = max(1, ms_to_samples(AGC_BLOCK_MS, sample_rate))
        self._speech_blocks = max(1.0, SPEECH_LEVEL_MS / AGC_BLOCK_MS)
        self._floor_step = FLOOR_RISE_DB * AGC_BLOCK_MS / 1000.0
        self._ring_arr = np.zeros(1)
        self._ring = self._ring_arr
        self._pos = 0
        self._sum = 0.0
        self._acc = 0.0
        self._count = 0
        self._floor_db = freeze_below_db
        self._speech = 0.0
        self._n_speech = 0
        self._want = 0.0
        self._hold_count = 0
        self._gain_db = 0.0
        self.set_params(target_db, max_gain_db, attack_ms, release_ms, hold_ms, window_ms, detector, freeze_below_db)

    def set_params(self, target_db, max_gain_db, attack_ms, release_ms, hold_ms, window_ms, detector, freeze_below_db):
        if detector not in ("rms", "peak"):
            raise ValueError(f"detector must be 'rms' or 'peak', got {detector!r}")
        self._target, self._max_gain = float(target_db), abs(float(max_gain_db))
        self._att = time_coef(attack_ms, self.sample_rate)
        self._rel = time_coef(release_ms, self.sample_rate)
        self._hold = ms_to_samples(hold_ms, self.sample_rate)
        self._freeze = float(freeze_below_db)
        self._peak_mode = detector == "peak"
        w = agc_window_blocks(window_ms)
        if w != len(self._ring_arr):
            self._ring_arr = resized_ring(self._ring_arr, self._pos, w)
            self._ring = self._ring_arr
            self._pos = 0
            self._sum = float(np.sum(self._ring_arr))
        if self._n_speech:
            self._want = agc_wanted_gain(self._target, self._max_gain, self._speech)

    @property
    def gain_db(self):
        return self._gain_db

    @property
    def speech_level_db(self):
        return 10.0 * log10(self._speech) if self._speech > 1e-20 else -200.0

    def get_state(self):
        return {"gain_db": self._gain_db, "sum": self._sum, "pos": self._pos, "acc": self._acc, "count": self._count,
                "floor_db": self._floor_db, "speech": self._speech, "n_speech": self._n_speech, "want": self._want,
                "hold_count": self._hold_count, "ring": np.array(self._ring_arr)}

    def process(self, x):
        cdef const double[::1] xv = _view(x)
        cdef Py_ssize_t n = xv.shape[0], i
        out = _empty(n)
        cdef double[::1] ov = out
        cdef double att = self._att, rel = self._rel, acc = self._acc, g = self._gain_db, want = self._want
        cdef Py_ssize_t hold = self._hold, hc = self._hold_count, count = self._count, block = self._block
        cdef bint peak_mode = self._peak_mode
        cdef double v, a
        for i in range(n):
            v = xv[i]
            if peak_mode:
                a = fabs(v)
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
            ov[i] = v * exp(g * DB_TO_LN)
        self._acc, self._count, self._hold_count, self._gain_db, self._want = acc, count, hc, g, want
        return out

    cdef double _decide(self, double value):
        cdef double[::1] ring = self._ring
        cdef Py_ssize_t w = ring.shape[0], k
        cdef double pk, level, power, floor, want, kk, level_s
        if self._peak_mode:
            ring[self._pos] = value
            pk = ring[0]
            for k in range(1, w):
                if ring[k] > pk:
                    pk = ring[k]
            level = 20.0 * log10(pk) if pk > 1e-10 else -200.0
            power = pk * pk
        else:
            self._sum = self._sum + value - ring[self._pos]
            ring[self._pos] = value
            power = self._sum / w
            level = 10.0 * log10(power) if power > 1e-20 else -200.0
        self._pos = self._pos + 1 if self._pos + 1 < w else 0
        floor = self._floor_db
        if level > self._freeze and level > floor + VAD_MARGIN_DB:
            self._n_speech += 1
            kk = 1.0 / self._n_speech if self._n_speech < self._speech_blocks else 1.0 / self._speech_blocks
            self._speech += kk * (power - self._speech)
            level_s = 10.0 * log10(self._speech) if self._speech > 1e-20 else -200.0
            want = self._target - level_s
            self._want = self._max_gain if want > self._max_gain else (-self._max_gain if want < -self._max_gain else want)
        if level < floor:
            self._floor_db = level if level > FLOOR_MIN_DB else FLOOR_MIN_DB
        else:
            self._floor_db = floor + self._floor_step
        return self._want


cdef class SpectralGain:
    """Per-band gain of a hop-based noise suppressor (see ext/dsp_py.py SpectralGain: the same loops)."""
    cdef public Py_ssize_t bands, transients
    cdef public bint speech
    cdef bint _stationary, _vad, _wiener, _transient
    cdef double _floor, _extra, _oversub, _recent
    cdef Py_ssize_t _hops, _hang, _filled, _slot
    cdef object _arrays
    cdef double[::1] _noise, _smooth, _prev_snr, _prev_gain, _sub_min, _minima_min, _noise_used
    cdef double[:, ::1] _minima

    def __init__(self, bands):
        n = int(bands)
        self.bands = n
        inf = math.inf
        self._arrays = {"noise": np.zeros(n), "smooth": np.zeros(n), "prev_snr": np.ones(n), "prev_gain": np.ones(n),
                        "sub_min": np.full(n, inf), "minima_min": np.full(n, inf), "noise_used": np.full(n, 1e-20),
                        "minima": np.full((_NR_MIN_WINDOWS, n), inf)}
        a = self._arrays
        self._noise, self._smooth, self._prev_snr, self._prev_gain = a["noise"], a["smooth"], a["prev_snr"], a["prev_gain"]
        self._sub_min, self._minima_min, self._noise_used, self._minima = a["sub_min"], a["minima_min"], a["noise_used"], a["minima"]
        self._hops = self._hang = self._filled = self._slot = self.transients = 0
        self._recent = 0.0
        self.speech = False
        self.set_params(True, 1.0, 0.0, True, 1.0, True, True)

    def set_params(self, stationary, floor, extra_floor_db, vad, oversub, wiener, transient):
        self._stationary, self._floor, self._extra = bool(stationary), float(floor), float(extra_floor_db)
        self._vad, self._oversub, self._wiener, self._transient = bool(vad), float(oversub), bool(wiener), bool(transient)

    @property
    def noise(self):
        return np.array(self._arrays["noise_used"])

    def get_state(self):
        a = self._arrays
        return {"noise": np.array(a["noise"]), "smooth": np.array(a["smooth"]), "prev_snr": np.array(a["prev_snr"]),
                "prev_gain": np.array(a["prev_gain"]), "sub_min": np.array(a["sub_min"]),
                "minima_min": np.array(a["minima_min"]), "hops": self._hops, "hang": self._hang,
                "recent": self._recent, "transients": self.transients}

    def process(self, band, double total, newest):
        cdef const double[::1] bv = _view(band)
        cdef const double[::1] nv = _view(newest)
        cdef Py_ssize_t n = self.bands, b
        if bv.shape[0] != n:
            raise ValueError(f"expected {n} band powers, got {bv.shape[0]}")
        out = _empty(n)
        cdef double[::1] ov = out
        self._smooth_and_minimum(bv)
        self._track(bv)
        self._gains(bv, ov)
        self._hops += 1
        cdef double g = self._click_gain(total, nv)
        if g != 1.0:
            for b in range(n):
                ov[b] = ov[b] * g
        return out

    cdef void _smooth_and_minimum(self, const double[::1] band):
        cdef Py_ssize_t n = self.bands, b, w
        cdef bint first = self._hops == 0
        cdef double s, m, inf = INFINITY
        for b in range(n):
            s = band[b] if first else 0.6 * self._smooth[b] + 0.4 * band[b]
            self._smooth[b] = s
            if s < self._sub_min[b]:
                self._sub_min[b] = s
        if self._hops % _NR_MIN_WINDOW_HOPS == _NR_MIN_WINDOW_HOPS - 1:
            for b in range(n):
                self._minima[self._slot, b] = self._sub_min[b]
            self._slot = (self._slot + 1) % _NR_MIN_WINDOWS
            self._filled = min(self._filled + 1, _NR_MIN_WINDOWS)
            for b in range(n):
                m = inf
                for w in range(self._filled):
                    if self._minima[w, b] < m:
                        m = self._minima[w, b]
                self._minima_min[b] = m
                self._sub_min[b] = inf

    cdef void _track(self, const double[::1] band):
        cdef Py_ssize_t n = self.bands, b, hops = self._hops
        cdef double acc = 0.0, snr_db, v, x, floor, nb, mn
        cdef bint frozen
        if hops < _NR_INIT_HOPS:
            for b in range(n):
                self._noise[b] = band[b] if hops == 0 else self._noise[b] + (band[b] - self._noise[b]) / (hops + 1)
            return
        for b in range(n):
            v = band[b]
            nb = self._noise[b]
            snr_db = 10.0 * log10((v if v > 1e-20 else 1e-20) / (nb if nb > 1e-20 else 1e-20))
            acc += -10.0 if snr_db < -10.0 else (30.0 if snr_db > 30.0 else snr_db)
        self._hang = _NR_VAD_HANGOVER if acc / n > _NR_VAD_DB else max(self._hang - 1, 0)
        self.speech = self._hang > 0
        frozen = self._vad and self.speech
        for b in range(n):
            v = band[b]
            mn = self._minima_min[b] if self._minima_min[b] < self._sub_min[b] else self._sub_min[b]
            if self._stationary:
                x = self._noise[b] if frozen else _NR_STATIONARY_ALPHA * self._noise[b] + (1.0 - _NR_STATIONARY_ALPHA) * v
                floor = mn * _NR_MIN_TRACK_BIAS
                x = x if x < floor else floor
            else:
                x = self._noise[b] * (1.0 if frozen else _NR_MIN_TRACK_RISE)
                x = self._smooth[b] if self._smooth[b] < x else x
            self._noise[b] = x if x > mn else mn  # never under the rolling minimum: see the twin

    cdef void _gains(self, const double[::1] band, double[::1] out):
        cdef Py_ssize_t n = self.bands, b
        cdef double bias = 1.0 if self._stationary else _NR_MIN_TRACK_BIAS
        cdef double v, nz, post, pg, prio, g, r, ratio, s_db, share
        for b in range(n):
            v = band[b]
            nz = self._noise[b] * bias
            nz = nz if nz > 1e-20 else 1e-20
            post = v / nz
            if self._wiener:
                pg = self._prev_gain[b]
                prio = _NR_DD_ALPHA * (pg * pg) * self._prev_snr[b] + (1.0 - _NR_DD_ALPHA) * (post - 1.0 if post > 1.0 else 0.0)
                g = prio / (1.0 + prio)
            else:
                r = 1.0 - self._oversub * nz / (v if v > 1e-20 else 1e-20)
                g = sqrt(r) if r > 0.0 else 0.0
            g = g if g > self._floor else self._floor
            self._prev_gain[b] = g
            self._prev_snr[b] = post
            if self._extra > 0.0:
                ratio = self._smooth[b] / nz
                s_db = 10.0 * log10(ratio if ratio > 1e-10 else 1e-10)
                share = (9.0 - s_db) / 6.0
                share = 0.0 if share < 0.0 else (1.0 if share > 1.0 else share)
                g = g * pow(10.0, -self._extra * share / 20.0)
            self._noise_used[b] = nz
            out[b] = g

    cdef double _click_gain(self, double total, const double[::1] newest):
        cdef double t = total + 1e-20, recent = self._recent, cap = recent * _NR_TRANSIENT_JUMP
        cdef double peak = 0.0, acc = 0.0, sq
        cdef Py_ssize_t i, m = newest.shape[0]
        self._recent = t if recent == 0.0 else 0.8 * recent + 0.2 * (t if t < cap else cap)
        if not self._transient or recent == 0.0 or t < cap:
            return 1.0
        for i in range(m):
            sq = newest[i] * newest[i]
            acc += sq
            if sq > peak:
                peak = sq
        if peak < _NR_TRANSIENT_CREST * (acc / m + 1e-20):
            return 1.0
        self.transients += 1
        return sqrt(recent / t)


cdef class NoiseGate:
    """Gate: opens when the peak envelope exceeds the threshold, closes (after hold) below it minus hysteresis."""
    cdef public double sample_rate
    cdef double _thr_open, _thr_close, _att, _rel, _floor, _det, _env, _gain
    cdef Py_ssize_t _hold, _hold_count
    cdef int _open

    def __init__(self, double sample_rate, double threshold_db=-50.0, double attack_ms=1.0, double release_ms=100.0,
                 double hold_ms=50.0, double hysteresis_db=3.0, double floor_db=-80.0, double detector_ms=10.0):
        self.sample_rate = sample_rate
        self._env = 0.0
        self._gain = 1.0
        self._open = 1
        self._hold_count = 0
        self.set_params(threshold_db, attack_ms, release_ms, hold_ms, hysteresis_db, floor_db, detector_ms)

    def set_params(self, threshold_db, attack_ms, release_ms, hold_ms, hysteresis_db, floor_db, detector_ms):
        self._thr_open = db_to_lin(float(threshold_db))
        self._thr_close = db_to_lin(float(threshold_db) - abs(float(hysteresis_db)))
        self._att = time_coef(attack_ms, self.sample_rate)
        self._rel = time_coef(release_ms, self.sample_rate)
        self._hold = ms_to_samples(hold_ms, self.sample_rate)
        self._floor = db_to_lin(min(float(floor_db), 0.0))
        self._det = time_coef(detector_ms, self.sample_rate)

    @property
    def is_open(self):
        return bool(self._open)

    @property
    def gain(self):
        return self._gain

    def get_state(self):
        return {"env": self._env, "gain": self._gain, "open": self._open, "hold_count": self._hold_count}

    def process(self, x):
        cdef const double[::1] xv = _view(x)
        cdef Py_ssize_t n = xv.shape[0], i
        out = _empty(n)
        cdef double[::1] ov = out
        cdef double t_open = self._thr_open, t_close = self._thr_close, att = self._att, rel = self._rel
        cdef double floor = self._floor, det = self._det, env = self._env, g = self._gain, v, a, target
        cdef Py_ssize_t hold = self._hold, hc = self._hold_count
        cdef int is_open = self._open
        for i in range(n):
            v = xv[i]
            a = fabs(v)
            env = a if a > env else det * env + (1.0 - det) * a
            if env > t_open:
                is_open = 1
                hc = hold
            elif env < t_close:
                if hc > 0:
                    hc -= 1
                else:
                    is_open = 0
            target = 1.0 if is_open else floor
            g = target + (g - target) * (att if target > g else rel)
            ov[i] = v * g
        self._env, self._gain, self._open, self._hold_count = env, g, is_open, hc
        return out


cdef class FeedbackComb:
    """Freeverb comb: a delay line whose feedback passes a one-pole low-pass (damping)."""
    cdef double _fb, _damp, _filt
    cdef Py_ssize_t _pos
    cdef object _buf_arr
    cdef double[::1] _buf

    def __init__(self, delay_samples, double feedback=0.8, double damping=0.2):
        self._buf_arr = np.zeros(max(1, int(delay_samples)))
        self._buf = self._buf_arr
        self._pos = 0
        self._filt = 0.0
        self.set_params(feedback, damping)

    def set_params(self, feedback, damping):
        self._fb = float(feedback)
        self._damp = min(max(float(damping), 0.0), 1.0)

    def get_state(self):
        return {"filt": self._filt, "pos": self._pos, "buf": np.array(self._buf_arr)}

    def process(self, x):
        cdef const double[::1] xv = _view(x)
        cdef Py_ssize_t n = xv.shape[0], i
        out = _empty(n)
        cdef double[::1] ov = out
        cdef double fb = self._fb, damp = self._damp, filt = self._filt, y
        cdef double[::1] buf = self._buf
        cdef Py_ssize_t m = buf.shape[0], pos = self._pos
        for i in range(n):
            y = buf[pos]
            filt = y * (1.0 - damp) + filt * damp
            buf[pos] = xv[i] + filt * fb
            pos = pos + 1 if pos + 1 < m else 0
            ov[i] = y
        self._filt, self._pos = filt, pos
        return out


cdef class Allpass:
    """Schroeder all-pass section (diffuser): y = -g x + d, d' = x + g y."""
    cdef double _g
    cdef Py_ssize_t _pos
    cdef object _buf_arr
    cdef double[::1] _buf

    def __init__(self, delay_samples, double gain=0.5):
        self._buf_arr = np.zeros(max(1, int(delay_samples)))
        self._buf = self._buf_arr
        self._pos = 0
        self.set_params(gain)

    def set_params(self, gain):
        self._g = float(gain)

    def get_state(self):
        return {"pos": self._pos, "buf": np.array(self._buf_arr)}

    def process(self, x):
        cdef const double[::1] xv = _view(x)
        cdef Py_ssize_t n = xv.shape[0], i
        out = _empty(n)
        cdef double[::1] ov = out
        cdef double g = self._g, d, y, v
        cdef double[::1] buf = self._buf
        cdef Py_ssize_t m = buf.shape[0], pos = self._pos
        for i in range(n):
            v = xv[i]
            d = buf[pos]
            y = d - g * v
            buf[pos] = v + g * y
            pos = pos + 1 if pos + 1 < m else 0
            ov[i] = y
        self._pos = pos
        return out


# --- Frame kernels of the echo canceller and the noise reducer (see ext/dsp_py.py: same loops) ----

def energy_peak(x):
    cdef const double[::1] v = _view(x)
    cdef Py_ssize_t i, n = v.shape[0]
    cdef double acc = 0.0, peak = 0.0, a
    for i in range(n):
        acc += v[i] * v[i]
        a = fabs(v[i])
        if a > peak:
            peak = a
    return acc, peak


def pbfdaf_push(double complex[:, ::1] spectra, Py_ssize_t head, Py_ssize_t parts, double[::1] power,
                double smoothing):
    cdef Py_ssize_t k, nk = spectra.shape[1]
    cdef double re, im, rest = 1.0 - smoothing
    for k in range(nk):
        spectra[head + parts, k] = spectra[head, k]
        re = spectra[head, k].real
        im = spectra[head, k].imag
        power[k] = smoothing * power[k] + rest * (re * re + im * im)


def pbfdaf_echoes(double complex[:, :, ::1] filters, double complex[:, ::1] spectra, Py_ssize_t head,
                  out):
    cdef double complex[:, ::1] o = out
    cdef Py_ssize_t f, p, k, nf = o.shape[0], parts = filters.shape[1], nk = filters.shape[2]
    cdef double re, im, wr, wi, xr, xi
    for f in range(nf):
        for k in range(nk):
            re = 0.0
            im = 0.0
            for p in range(parts):
                wr = filters[f, p, k].real
                wi = filters[f, p, k].imag
                xr = spectra[head + p, k].real
                xi = spectra[head + p, k].imag
                re += wr * xr - wi * xi
                im += wr * xi + wi * xr
            o[f, k] = re + 1j * im
    return out


def pbfdaf_adapt(double complex[:, ::1] weights, double complex[:, ::1] spectra, Py_ssize_t head,
                 const double complex[::1] err, const double[::1] power, double step, double eps):
    cdef Py_ssize_t p, k, parts = weights.shape[0], nk = weights.shape[1]
    cdef double mu, gr, gi, xr, xi
    for k in range(nk):
        mu = step / (power[k] + eps)
        gr = err[k].real * mu
        gi = err[k].imag * mu
        for p in range(parts):
            xr = spectra[head + p, k].real
            xi = -spectra[head + p, k].imag
            weights[p, k] = (weights[p, k].real + (xr * gr - xi * gi)) + 1j * (weights[p, k].imag + (xr * gi + xi * gr))


def nlp_ramp(e, double g0, double g1, noise, double noise_scale, out):
    cdef const double[::1] ev = _view(e)
    cdef double[::1] ov = out
    cdef const double[::1] nv
    cdef Py_ssize_t i, n = ev.shape[0]
    cdef double step = (g1 - g0) / n, g, fill
    cdef bint fill_noise = noise is not None
    if fill_noise:
        nv = _view(noise)
    for i in range(n):
        g = g1 if i == n - 1 else (i + 1) * step + g0
        ov[i] = ev[i] * g
        if fill_noise:
            fill = 1.0 - g * g
            ov[i] = ov[i] + nv[i] * (noise_scale * sqrt(fill if fill > 0.0 else 0.0))
    return out


def stft_frames(double[::1] history, x, const double[::1] window, Py_ssize_t hop, double[:, ::1] out):
    cdef const double[::1] xv = _view(x)
    cdef Py_ssize_t i, h, n = history.shape[0], m = xv.shape[0], keep = n - m, w = window.shape[0]
    for i in range(keep):
        history[i] = history[n - keep + i]
    for i in range(m):
        history[keep + i] = xv[i]
    for h in range(out.shape[0]):
        for i in range(w):
            out[h, i] = history[h * hop + i] * window[i]


def band_powers(const double complex[:, ::1] specs, const cnp.int64_t[::1] starts, const double[::1] counts,
                double[:, ::1] bands, double[::1] totals):
    cdef Py_ssize_t h, b, k, end, nb = starts.shape[0], nk = specs.shape[1]
    cdef double acc, total, re, im, pw
    for h in range(specs.shape[0]):
        total = 0.0
        for b in range(nb):
            end = starts[b + 1] if b + 1 < nb else nk
            acc = 0.0
            for k in range(starts[b], end):
                re = specs[h, k].real
                im = specs[h, k].imag
                pw = re * re + im * im
                acc += pw
                total += pw
            bands[h, b] = acc / counts[b]
        totals[h] = total


def band_gains_apply(double complex[:, ::1] specs, const double[:, ::1] gains, const cnp.int64_t[::1] bin_band,
                     const double[::1] noise, double comfort_power, draw):
    cdef Py_ssize_t h, k, nh = specs.shape[0], nk = specs.shape[1]
    cdef double g, scale = 0.0, mean = 0.0, amp, fill
    cdef const double[:, :, ::1] d
    cdef bint fill_noise = draw is not None
    if fill_noise:
        d = draw
        for k in range(nk):
            mean += noise[bin_band[k]]
        scale = comfort_power / (mean / nk + 1e-30)
        scale = 1.0 if scale > 1.0 else scale
    for h in range(nh):
        for k in range(nk):
            g = gains[h, bin_band[k]]
            specs[h, k] = specs[h, k].real * g + 1j * (specs[h, k].imag * g)
            if fill_noise:
                fill = 1.0 - g * g
                amp = sqrt((fill if fill > 0.0 else 0.0) * (0.5 * scale) * noise[bin_band[k]])
                specs[h, k] = (specs[h, k].real + amp * d[0, h, k]) + 1j * (specs[h, k].imag + amp * d[1, h, k])


def overlap_add(const double[:, ::1] frames, const double[::1] window, double[::1] tail, double[::1] out):
    cdef Py_ssize_t h, i, hop = tail.shape[0]
    for h in range(frames.shape[0]):
        for i in range(hop):
            out[h * hop + i] = tail[i] + frames[h, i] * window[i]
        for i in range(hop):
            tail[i] = frames[h, hop + i] * window[hop + i]
