# cython: language_level=3
"""Jitter buffer (Cython build of ext/jitter_py.py: same behaviour, counters and float results)."""
import math

import numpy as np
cimport numpy as cnp
from libc.math cimport NAN, fabs, sqrt
from libc.stdint cimport int64_t, int8_t, uint8_t
from libc.stdlib cimport free, malloc

cnp.import_array()

ACCEPTED, LATE, DUPLICATE, CORRUPTED, OVERFLOW, RESYNC = 0, 1, 2, 3, 4, 5
PLAYED, LOST, UNDERFLOW, WAIT = 10, 11, 12, 13
BUFFERING, PLAYING, REBUFFERING = 0, 1, 2
POLICIES = ("drop_oldest", "drop_newest", "grow")
KNOB_NAMES = (
    "buffer_size", "prefetch_ms", "jitter_buffer_depth", "playout_delay", "adaptive_buffering",
    "buffer_overflow_policy", "max_buffer_size", "min_buffer_size",
)
JITTER_MULTIPLE = 4.0
MAX_MISORDER = 100
SHRINK_AFTER_MS = 1000.0
EPS = 1e-6

cdef enum:
    P_ACCEPTED = 0
    P_LATE = 1
    P_DUPLICATE = 2
    P_CORRUPTED = 3
    P_OVERFLOW = 4
    P_RESYNC = 5
    O_PLAYED = 10
    O_LOST = 11
    O_UNDERFLOW = 12
    O_WAIT = 13
    ST_BUFFERING = 0
    ST_PLAYING = 1
    ST_REBUFFERING = 2
    POL_DROP_OLDEST = 0
    POL_DROP_NEWEST = 1
    POL_GROW = 2
    C_MAX_MISORDER = 100

cdef double C_JITTER_MULTIPLE = 4.0
cdef double C_SHRINK_AFTER_MS = 1000.0
cdef double C_EPS = 1e-6
cdef double C_BASE_BLOCK_MS = 500.0
cdef double C_INF = float("inf")
cdef double MIN_PACKETS = 2.0   # capacity floor in packets, whatever the knobs say (_set_capacity)
BASE_BLOCK_MS = 500.0
BASE_BLOCKS = 4
cdef int64_t EMPTY = -(<int64_t>1 << 62)
cdef tuple _WAIT_ITEM = (-1, O_WAIT, 0.0)


cdef inline cnp.ndarray _carray(object a, int typenum):
    """a itself when it already is a C-contiguous array of that type (no copy), else a converted copy."""
    if cnp.PyArray_Check(a) and cnp.PyArray_TYPE(<cnp.ndarray>a) == typenum and cnp.PyArray_ISCARRAY_RO(<cnp.ndarray>a):
        return <cnp.ndarray>a
    return np.ascontiguousarray(a, dtype=cnp.PyArray_DescrFromType(typenum))


cdef inline cnp.ndarray _out_array(object a, int typenum):
    if not (cnp.PyArray_Check(a) and cnp.PyArray_TYPE(<cnp.ndarray>a) == typenum
            and cnp.PyArray_ISCARRAY(<cnp.ndarray>a)):
        raise TypeError(f"pop_due: output arrays must be writeable C-contiguous int64, int8, float64 arrays")
    return <cnp.ndarray>a


def _check_config(c):
    if c["buffer_overflow_policy"] not in POLICIES:
        raise ValueError(f"buffer_overflow_policy: {c['buffer_overflow_policy']!r} is not one of {POLICIES}")
    for name in ("buffer_size", "prefetch_ms", "jitter_buffer_depth", "playout_delay"):
        if not c[name] >= 0:
            raise ValueError(f"{name}: {c[name]} is negative")
    if not 0 < c["min_buffer_size"] <= c["max_buffer_size"]:
        raise ValueError(f"min_buffer_size {c['min_buffer_size']} must be > 0 and <= max_buffer_size {c['max_buffer_size']}")


cdef class JitterBuffer:
    """Orders packets by sequence number and releases them at ts + offset (see ext/README.md)."""
    # ring of packet metadata, indexed by sequence number & mask
    cdef int64_t* _r_seq
    cdef int64_t* _r_seen
    cdef double* _r_ts
    cdef double* _r_arr
    cdef int64_t* _r_size
    cdef uint8_t* _r_present
    cdef int64_t _slots, _mask
    cdef double _bpm
    # configuration
    cdef object _cfg
    cdef double _buffer_size, _prefetch, _depth, _playout_delay, _max_ms, _min_ms
    cdef bint _adaptive
    cdef int _policy
    # stream state
    cdef int _state
    cdef int64_t _count, _level, _low, _high, _cursor, _highest, _cand
    cdef bint _has_cursor, _pending, _has_high, _has_cand, _has_transit
    cdef double _next_ts, _offset, _anchor, _anchor_base, _slot_time, _quiet_ms, _last_dur, _capacity_ms
    cdef double _last_transit, _mean_transit, _jitter
    cdef double _base, _b_start, _b_cur, _b_prev0, _b_prev1, _b_prev2, _covered
    cdef bint _held
    # counters
    cdef int64_t _overflow_count, _underflow_count, _underflow_events, _grow_count, _shrink_count
    cdef int64_t _fill_bytes, _drain_bytes, _played_bytes, _received_bytes, _played, _lost
    cdef int64_t _dropped_late, _dropped_duplicate, _dropped_evicted, _dropped_overflow, _dropped_resync
    cdef int64_t _corrupted, _resyncs, _peak_bytes
    cdef double _last_overflow, _last_underflow, _wait_total, _peak_pct
    # statistics window
    cdef bint _w_init
    cdef double _w_start, _w_last, _w_area, _w_area2, _w_parea, _w_pmin, _w_pmax, _w_wait_sum, _w_wait_max
    cdef int64_t _w_min, _w_max, _w_fill, _w_drain, _w_played

    def __cinit__(self, *args, int slots=4096, **kwargs):
        if slots < 16 or slots & (slots - 1):
            raise ValueError(f"slots: {slots} is not a power of two >= 16")
        self._slots = slots
        self._mask = slots - 1
        self._r_seq = <int64_t*>malloc(slots * sizeof(int64_t))
        self._r_seen = <int64_t*>malloc(slots * sizeof(int64_t))
        self._r_ts = <double*>malloc(slots * sizeof(double))
        self._r_arr = <double*>malloc(slots * sizeof(double))
        self._r_size = <int64_t*>malloc(slots * sizeof(int64_t))
        self._r_present = <uint8_t*>malloc(slots * sizeof(uint8_t))
        if (self._r_seq == NULL or self._r_seen == NULL or self._r_ts == NULL or self._r_arr == NULL
                or self._r_size == NULL or self._r_present == NULL):
            raise MemoryError()
        self._clear_ring()

    def __dealloc__(self):
        free(self._r_seq)
        free(self._r_seen)
        free(self._r_ts)
        free(self._r_arr)
        free(self._r_size)
        free(self._r_present)

    def __init__(self, buffer_size=512, prefetch_ms=100, jitter_buffer_depth=200, playout_delay=50,
                 adaptive_buffering=True, buffer_overflow_policy="drop_oldest", max_buffer_size=2048,
                 min_buffer_size=128, double bytes_per_ms=16.0, double frame_ms=20.0, int slots=4096):
        if not (bytes_per_ms > 0 and frame_ms > 0):
            raise ValueError("bytes_per_ms and frame_ms must be > 0")
        self._bpm = bytes_per_ms
        self._last_dur = frame_ms
        self._cfg = {"buffer_size": 0.0, "prefetch_ms": 0.0, "jitter_buffer_depth": 0.0, "playout_delay": 0.0,
                     "adaptive_buffering": False, "buffer_overflow_policy": "drop_oldest",
                     "max_buffer_size": 1.0, "min_buffer_size": 1.0}
        self._reset_stream_state()
        self._reset_counters()
        self._capacity_ms = 1.0
        self.configure(buffer_size=buffer_size, prefetch_ms=prefetch_ms, jitter_buffer_depth=jitter_buffer_depth,
                       playout_delay=playout_delay, adaptive_buffering=adaptive_buffering,
                       buffer_overflow_policy=buffer_overflow_policy, max_buffer_size=max_buffer_size,
                       min_buffer_size=min_buffer_size)

    @classmethod
    def from_knobs(cls, knobs, **kwargs):
        """Build from a knob mapping (other keys are ignored); kwargs: bytes_per_ms, frame_ms, slots."""
        return cls(**{k: knobs[k] for k in KNOB_NAMES if k in knobs}, **kwargs)

    cdef void _clear_ring(self) noexcept:
        cdef int64_t k
        for k in range(self._slots):
            self._r_seq[k] = EMPTY
            self._r_seen[k] = EMPTY
            self._r_ts[k] = 0.0
            self._r_arr[k] = 0.0
            self._r_size[k] = 0
            self._r_present[k] = 0

    cdef void _reset_stream_state(self) noexcept:
        self._state = ST_BUFFERING
        self._count = 0
        self._level = 0
        self._low = self._high = 0
        self._has_cursor = False
        self._cursor = 0
        self._next_ts = 0.0
        self._offset = 0.0
        self._anchor = 0.0
        self._anchor_base = 0.0            # base transit when the fixed offset was anchored
        self._slot_time = 0.0
        self._pending = False
        self._quiet_ms = 0.0
        self._has_high = False
        self._highest = 0
        self._has_cand = False
        self._cand = 0
        self._has_transit = False
        self._last_transit = 0.0
        self._mean_transit = 0.0
        self._jitter = 0.0
        self._base = 0.0                   # lowest recent transit: the fixed delay is measured from it
        self._b_start = 0.0                # arrival time the current block began
        self._b_cur = C_INF                # lowest transit in the current block
        self._b_prev0 = self._b_prev1 = self._b_prev2 = C_INF   # the previous 3 blocks', newest first
        self._held = False                 # rebuffering: the head's slot came before prefetch was met
        self._covered = 0.0                # rebuffering: media time played out as silence so far

    cdef void _reset_counters(self) noexcept:
        self._overflow_count = self._underflow_count = self._underflow_events = 0
        self._grow_count = self._shrink_count = 0
        self._fill_bytes = self._drain_bytes = self._played_bytes = self._received_bytes = 0
        self._played = self._lost = 0
        self._dropped_late = self._dropped_duplicate = self._dropped_evicted = 0
        self._dropped_overflow = self._dropped_resync = 0
        self._corrupted = self._resyncs = self._peak_bytes = 0
        self._last_overflow = NAN
        self._last_underflow = NAN
        self._wait_total = 0.0
        self._peak_pct = 0.0
        self._w_init = False
        self._w_start = self._w_last = 0.0
        self._w_area = self._w_area2 = self._w_parea = 0.0
        self._w_min = self._w_max = 0
        self._w_pmin = self._w_pmax = 0.0
        self._w_fill = self._w_drain = self._w_played = 0
        self._w_wait_sum = self._w_wait_max = 0.0

    # ---- configuration -------------------------------------------------------------------
    def configure(self, **knobs):
        """Change any subset of the buffer knobs; delay changes apply at the next packet boundary."""
        unknown = set(knobs) - set(KNOB_NAMES)
        if unknown:
            raise ValueError(f"unknown jitter buffer knob(s): {sorted(unknown)}")
        new = dict(self._cfg)
        new.update(knobs)
        for name in KNOB_NAMES:
            if name == "adaptive_buffering":
                new[name] = bool(new[name])
            elif name != "buffer_overflow_policy":
                new[name] = float(new[name])
        _check_config(new)
        old = self._cfg
        was_adaptive = old["adaptive_buffering"]
        self._cfg = new
        self._buffer_size = new["buffer_size"]
        self._prefetch = new["prefetch_ms"]
        self._depth = new["jitter_buffer_depth"]
        self._playout_delay = new["playout_delay"]
        self._adaptive = new["adaptive_buffering"]
        self._policy = POLICIES.index(new["buffer_overflow_policy"])
        self._max_ms = new["max_buffer_size"]
        self._min_ms = new["min_buffer_size"]
        if was_adaptive and not self._adaptive:
            self._anchor = self._anchor_base = self._base     # fixed delay measured from the base transit
        cap = new["buffer_size"] if new["buffer_size"] != old["buffer_size"] else self._capacity_ms
        self._set_capacity(min(max(cap, self._min_ms), self._max_ms))
        self._pending = self._state == ST_PLAYING
        if self._adaptive:
            self._grow_for_delay()

    def apply_knobs(self, knobs):
        """configure() with the buffer knobs found in a full knob mapping."""
        self.configure(**{k: knobs[k] for k in KNOB_NAMES if k in knobs})

    cdef void _set_capacity(self, double cap_ms) noexcept:
        # never under two packets (the one playing and the one arriving): a smaller buffer
        # could never start playout, whatever its knobs say
        self._capacity_ms = max(cap_ms, MIN_PACKETS * self._last_dur)
        self._mark()

    cdef double _target_delay(self) noexcept:
        if not self._adaptive:
            return self._depth
        return min(max(C_JITTER_MULTIPLE * self._jitter, self._playout_delay), self._depth)

    cdef double _need_ms(self) noexcept:
        # room for the delay plus a burst as long again
        return 2.0 * max(self._target_delay(), self._prefetch) + 2.0 * self._last_dur

    cdef void _grow_for_delay(self) noexcept:
        # grow to 25% over the need and shrink only to that: a 25% band so growth and shrink do not chatter
        cdef double need = self._need_ms()
        if need > self._capacity_ms and self._capacity_ms < self._max_ms:
            self._set_capacity(min(self._max_ms, 1.25 * need))
            self._grow_count += 1

    cdef double _floor_ms(self) noexcept:
        cdef double floor = 1.25 * self._need_ms() if self._adaptive else self._buffer_size
        return min(max(floor, self._min_ms), self._max_ms)

    # ---- level accounting ----------------------------------------------------------------
    cdef inline double _pct(self) noexcept:
        return <double>self._level * 100.0 / (self._capacity_ms * self._bpm)

    cdef void _advance(self, double t) noexcept:
        """Integrate the current level over [last event, t] for the window's time-weighted mean."""
        cdef double dt, lvl
        if not self._w_init:
            self._w_init = True
            self._w_start = self._w_last = t
            self._w_min = self._w_max = self._level
            self._w_pmin = self._w_pmax = self._pct()
            return
        if t > self._w_last:
            dt = t - self._w_last
            lvl = <double>self._level
            self._w_area += lvl * dt
            self._w_area2 += lvl * lvl * dt
            self._w_parea += self._pct() * dt
            self._w_last = t

    cdef void _mark(self) noexcept:
        cdef int64_t lvl = self._level
        cdef double pct = self._pct()
        if lvl < self._w_min:
            self._w_min = lvl
        if lvl > self._w_max:
            self._w_max = lvl
        if pct < self._w_pmin:
            self._w_pmin = pct
        if pct > self._w_pmax:
            self._w_pmax = pct
        if lvl > self._peak_bytes:
            self._peak_bytes = lvl
        if pct > self._peak_pct:
            self._peak_pct = pct

    # ---- push ------------------------------------------------------------------------------
    cdef inline int64_t _unwrap(self, int64_t seq) noexcept:
        cdef int64_t delta
        if not self._has_high:
            return seq
        delta = (seq - self._highest) & 0xFFFF
        if delta >= 0x8000:
            delta -= 0x10000
        return self._highest + delta

    cdef int _push(self, int64_t seq, double ts_ms, double arrival_ms, int64_t size_bytes, bint corrupted,
                   bint repaired) except -1:
        cdef int64_t ext, i
        if size_bytes < 1:
            raise ValueError(f"size_bytes: {size_bytes} must be >= 1")
        self._received_bytes += size_bytes
        if corrupted:
            self._corrupted += 1
            return P_CORRUPTED
        ext = self._unwrap(seq)
        i = ext & self._mask
        if self._r_seen[i] == ext:
            self._dropped_duplicate += 1
            return P_DUPLICATE
        if self._is_jump(ext):
            if not (self._has_cand and (seq & 0xFFFF) == self._cand):
                self._has_cand = True
                self._cand = (seq + 1) & 0xFFFF
                self._dropped_resync += 1
                return P_RESYNC
            self._resync(arrival_ms)
            ext = seq
            i = ext & self._mask
        self._has_cand = False
        if not self._has_high or ext > self._highest:
            self._has_high = True
            self._highest = ext
        if not repaired:  # a retransmission or FEC reconstruction: no transit of the path (see the twin)
            self._observe_transit(arrival_ms - ts_ms, arrival_ms)
        self._r_seen[i] = ext
        if (self._has_cursor and ext < self._cursor
                or self._state == ST_REBUFFERING and ts_ms <= self._covered + C_EPS):  # its slot went by as silence
            self._dropped_late += 1
            return P_LATE
        if self._level + size_bytes > self._capacity_ms * self._bpm and not self._make_room(ext, size_bytes, arrival_ms):
            self._dropped_overflow += 1
            return P_OVERFLOW
        self._store(i, ext, ts_ms, arrival_ms, size_bytes)
        return P_ACCEPTED

    def push(self, int64_t seq, double ts_ms, double arrival_ms, int64_t size_bytes, bint corrupted=False,
             bint repaired=False):
        """Offer one packet; returns ACCEPTED, LATE, DUPLICATE, CORRUPTED, OVERFLOW or RESYNC.

        `repaired`: a retransmission or an FEC reconstruction. It is stored for playout like any
        packet, but its arrival says nothing about the path's transit (it holds a NACK round trip,
        or it has no arrival of its own), so it does not feed jitter, mean or base transit.
        """
        return self._push(seq, ts_ms, arrival_ms, size_bytes, corrupted, repaired)

    cdef bint _is_jump(self, int64_t ext) noexcept:
        cdef int64_t lo = ext, hi = ext
        if self._has_cursor and self._cursor - ext > C_MAX_MISORDER:
            return True
        if self._has_cursor:
            lo = min(lo, self._cursor)
        if self._count:
            lo = min(lo, self._low)
            hi = max(hi, self._high)
        return hi - lo >= self._slots

    cdef void _resync(self, double t) noexcept:
        """The sender restarted: flush the old stream and start buffering the new one."""
        cdef double cap, dur
        self._advance(t)
        self._dropped_evicted += self._count
        self._drain_bytes += self._level
        self._w_drain += self._level
        self._clear_ring()
        cap, dur = self._capacity_ms, self._last_dur
        self._reset_stream_state()
        self._capacity_ms, self._last_dur = cap, dur
        self._resyncs += 1
        self._mark()

    cdef inline void _observe_transit(self, double transit, double arrival) noexcept:
        cdef double d, base
        if self._has_transit:
            d = fabs(transit - self._last_transit)
            self._jitter = self._jitter + (d - self._jitter) / 16.0
            self._mean_transit = self._mean_transit + (transit - self._mean_transit) / 16.0
            if arrival >= self._b_start + C_BASE_BLOCK_MS:
                if arrival >= self._b_start + 4 * C_BASE_BLOCK_MS:
                    self._b_prev0 = self._b_prev1 = self._b_prev2 = C_INF   # a long silence: all of it is stale
                    self._b_start = arrival
                else:
                    while arrival >= self._b_start + C_BASE_BLOCK_MS:
                        self._b_prev2 = self._b_prev1
                        self._b_prev1 = self._b_prev0
                        self._b_prev0 = self._b_cur
                        self._b_cur = C_INF
                        self._b_start += C_BASE_BLOCK_MS
                self._b_cur = transit
            elif transit < self._b_cur:
                self._b_cur = transit
        else:
            self._has_transit = True
            self._mean_transit = transit
            self._b_start = arrival
            self._b_cur = transit
        self._last_transit = transit
        base = self._b_cur
        if self._b_prev0 < base:
            base = self._b_prev0
        if self._b_prev1 < base:
            base = self._b_prev1
        if self._b_prev2 < base:
            base = self._b_prev2
        self._base = base

    cdef bint _make_room(self, int64_t ext, int64_t size, double t) noexcept:
        """Apply the overflow policy; True if the packet may now be stored."""
        self._overflow_count += 1
        self._last_overflow = t
        if self._policy == POL_GROW and self._capacity_ms < self._max_ms:
            self._advance(t)
            self._set_capacity(min(self._max_ms, max(self._capacity_ms * 1.5, (self._level + size) / self._bpm)))
            self._grow_count += 1
            if self._level + size <= self._capacity_ms * self._bpm:
                return True
        elif self._policy == POL_DROP_NEWEST:
            return False
        while self._count and self._level + size > self._capacity_ms * self._bpm:
            if ext < self._low:
                return False            # the arriving packet is itself the oldest
            self._evict_low(t)
        return self._level + size <= self._capacity_ms * self._bpm

    cdef void _store(self, int64_t i, int64_t ext, double ts, double arr, int64_t size) noexcept:
        self._advance(arr)
        self._r_seq[i] = ext
        self._r_ts[i] = ts
        self._r_arr[i] = arr
        self._r_size[i] = size
        self._r_present[i] = 1
        if self._count == 0:
            self._low = self._high = ext
        elif ext < self._low:
            self._low = ext
        elif ext > self._high:
            self._high = ext
        self._count += 1
        self._level += size
        self._fill_bytes += size
        self._w_fill += size
        self._mark()

    cdef int64_t _remove_low(self, double t) noexcept:
        """Take the lowest buffered packet out; returns its ring index."""
        cdef int64_t i, s, size
        self._advance(t)
        i = self._low & self._mask
        self._r_present[i] = 0
        size = self._r_size[i]
        self._count -= 1
        self._level -= size
        self._drain_bytes += size
        self._w_drain += size
        if self._count:
            s = self._low + 1
            while not (self._r_present[s & self._mask] and self._r_seq[s & self._mask] == s):
                s += 1
            self._low = s
        self._mark()
        return i

    cdef void _evict_low(self, double t) noexcept:
        """drop_oldest: evict the lowest packet; a running playout skips ahead past it."""
        cdef int64_t e = self._low, i
        cdef double new_next, shift
        i = self._remove_low(t)
        self._dropped_evicted += 1
        if self._has_cursor:
            self._lost += e - self._cursor
            self._cursor = e + 1
            new_next = self._r_ts[i] + self._r_size[i] / self._bpm
            shift = new_next - self._next_ts
            self._next_ts = new_next
            self._offset -= shift
            self._anchor -= shift

    # ---- pop -------------------------------------------------------------------------------
    cdef inline bint _present(self, int64_t s) noexcept:
        cdef int64_t i = s & self._mask
        return self._r_present[i] and self._r_seq[i] == s

    cdef inline bint _full(self) noexcept:
        return self._level + self._last_dur * self._bpm > self._capacity_ms * self._bpm

    cdef bint _can_start(self, double now) noexcept:
        cdef double head_ts
        if self._count == 0:
            return False
        if self._full():
            return True                 # full: waiting longer would only overflow
        head_ts = self._r_ts[self._low & self._mask]
        return self._prefetched() and now + C_EPS >= head_ts + self._restart_offset()

    cdef inline double _reference(self) noexcept:
        """The transit the delay is counted from: the base (lowest recent) fixed, the mean adaptive."""
        return self._mean_transit if self._adaptive else self._base

    cdef inline double _restart_offset(self) noexcept:
        return self._reference() + self._target_delay()

    cdef bint _prefetched(self) noexcept:
        cdef double prefetch
        if self._full():
            return True
        prefetch = max(0.0, min(self._prefetch, self._capacity_ms - self._last_dur))
        return self._level / self._bpm + C_EPS >= prefetch

    cdef void _start(self, double offset) noexcept:
        cdef int64_t head = self._low
        if self._has_cursor and head > self._cursor:
            self._lost += head - self._cursor
        self._has_cursor = True
        self._cursor = head
        self._next_ts = self._r_ts[head & self._mask]
        self._offset = offset
        self._anchor = offset - self._depth
        self._anchor_base = self._base
        self._state = ST_PLAYING
        self._pending = False
        self._held = False

    cdef int _rebuffer(self, double now) noexcept:
        """Ran dry: the slot clock runs on at the re-anchored offset; -1 once playout restarts."""
        cdef double head_ts
        cdef bint due
        self._offset = self._restart_offset()
        if self._count:
            head_ts = self._r_ts[self._low & self._mask]
            due = head_ts + self._offset <= now + C_EPS
            if self._full() or (due and self._prefetched()):
                # on its slot unless it waited for prefetch (held) or the buffer filled first
                self._start(self._offset if due and not self._held else now - head_ts)
                return -1
            if due:                     # hold the head until prefetch is met: the delay grows by the wait
                if self._slot_time <= now + C_EPS:
                    self._held = True
                    return self._underflow(now, self._slot_time)
                return O_WAIT
        if now - self._offset > self._covered:
            self._covered = now - self._offset    # media time whose slot went by as silence: late if it comes
        if self._slot_time <= now + C_EPS:
            return self._underflow(now, self._slot_time)
        return O_WAIT

    cdef void _adjust(self, double now) noexcept:
        """Move the playout offset toward its target at a packet boundary (see README)."""
        cdef double half, desired, band, diff
        cdef bint spurt
        self._pending = False
        half = self._last_dur / 2.0
        if self._adaptive:
            desired = self._mean_transit + self._target_delay()
            band = half
            self._advance(now)
            self._grow_for_delay()
        else:
            if self._anchor_base - self._base > half:
                # the path got faster, or playout started on slow packets: follow the base down
                self._anchor -= self._anchor_base - self._base
                self._anchor_base = self._base
            desired = self._anchor + self._depth
            band = C_EPS
        diff = desired - self._offset
        if diff > band:
            self._offset = desired
        elif diff < -band:
            spurt = self._present(self._cursor) and self._r_ts[self._cursor & self._mask] > self._next_ts + half
            self._offset = desired if spurt else max(desired, self._offset - self._last_dur / 4.0)

    cdef int _pop(self, double now_ms, int64_t* seq, double* wait) noexcept:
        cdef int64_t cur
        cdef double slot
        cdef int st
        seq[0] = -1
        wait[0] = 0.0
        if self._state == ST_BUFFERING:
            if not self._can_start(now_ms):
                return O_WAIT
            self._start(now_ms - self._r_ts[self._low & self._mask])     # the head plays at once
        elif self._state == ST_REBUFFERING:
            st = self._rebuffer(now_ms)
            if st != -1:
                return st
        if self._pending:
            self._adjust(now_ms)
        cur = self._cursor
        if self._present(cur):
            if self._r_ts[cur & self._mask] + self._offset <= now_ms + C_EPS:
                return self._play(now_ms, seq, wait)
            return O_WAIT
        slot = self._next_ts + self._offset
        if slot > now_ms + C_EPS:
            return O_WAIT
        if self._count:
            self._lost += 1
            self._cursor = cur + 1
            self._next_ts += self._last_dur
            self._pending = True
            seq[0] = cur
            return O_LOST
        self._underflow_events += 1
        self._state = ST_REBUFFERING
        self._covered = now_ms - self._restart_offset()
        return self._underflow(now_ms, slot)

    def pop(self, double now_ms):
        """Next output item due at now_ms: (seq, PLAYED|LOST|UNDERFLOW|WAIT, wait_ms)."""
        cdef int64_t seq
        cdef double wait
        cdef int status = self._pop(now_ms, &seq, &wait)
        if status == O_WAIT:
            return _WAIT_ITEM           # the common answer of a pop loop: no tuple to build
        return seq, status, wait

    cdef int _underflow(self, double now, double slot) noexcept:
        self._advance(now)
        self._underflow_count += 1
        self._last_underflow = slot
        self._slot_time = slot + self._last_dur
        return O_UNDERFLOW

    cdef int _play(self, double now, int64_t* seq, double* wait) noexcept:
        cdef int64_t cur = self._cursor, i, size
        cdef double dur, w
        i = self._remove_low(now)
        size = self._r_size[i]
        dur = size / self._bpm
        w = now - self._r_arr[i]
        self._played += 1
        self._played_bytes += size
        self._wait_total += w
        self._w_played += 1
        self._w_wait_sum += w
        if w > self._w_wait_max:
            self._w_wait_max = w
        self._next_ts = self._r_ts[i] + dur
        self._last_dur = dur
        if self._capacity_ms < MIN_PACKETS * dur:   # longer packets than assumed: keep room for two
            self._set_capacity(self._capacity_ms)
        self._cursor = cur + 1
        self._pending = True
        self._maybe_shrink(now, dur)
        seq[0] = cur
        wait[0] = w
        return O_PLAYED

    cdef void _maybe_shrink(self, double now, double dur) noexcept:
        cdef double floor
        if self._level * 2.0 < self._capacity_ms * self._bpm:
            self._quiet_ms += dur
        else:
            self._quiet_ms = 0.0
        if self._quiet_ms >= C_SHRINK_AFTER_MS:
            self._quiet_ms = 0.0
            floor = self._floor_ms()
            if self._capacity_ms > floor:
                self._advance(now)
                self._set_capacity(max(floor, self._capacity_ms * 0.75))
                self._shrink_count += 1

    # ---- batch calls ---------------------------------------------------------------------------
    def push_many(self, seq, ts_ms, arrival_ms, size_bytes, corrupted, repaired=None):
        """push() over arrays of one length (`repaired` None: none is); returns the statuses as int8."""
        cdef cnp.ndarray s = _carray(seq, cnp.NPY_INT64)
        cdef cnp.ndarray t = _carray(ts_ms, cnp.NPY_FLOAT64)
        cdef cnp.ndarray a = _carray(arrival_ms, cnp.NPY_FLOAT64)
        cdef cnp.ndarray z = _carray(size_bytes, cnp.NPY_INT64)
        cdef cnp.ndarray c = _carray(corrupted, cnp.NPY_UINT8)
        cdef Py_ssize_t n = cnp.PyArray_SIZE(s), k
        cdef cnp.ndarray r = None
        if repaired is not None:
            r = _carray(repaired, cnp.NPY_UINT8)
        if (cnp.PyArray_SIZE(t) != n or cnp.PyArray_SIZE(a) != n or cnp.PyArray_SIZE(z) != n or cnp.PyArray_SIZE(c) != n
                or r is not None and cnp.PyArray_SIZE(r) != n):
            raise ValueError("push_many: arrays differ in length")
        cdef int64_t* sp = <int64_t*>cnp.PyArray_DATA(s)
        cdef double* tp = <double*>cnp.PyArray_DATA(t)
        cdef double* ap = <double*>cnp.PyArray_DATA(a)
        cdef int64_t* zp = <int64_t*>cnp.PyArray_DATA(z)
        cdef uint8_t* cp = <uint8_t*>cnp.PyArray_DATA(c)
        cdef uint8_t* rp = <uint8_t*>cnp.PyArray_DATA(r) if r is not None else NULL
        cdef cnp.npy_intp dims = n
        cdef cnp.ndarray out = cnp.PyArray_EMPTY(1, &dims, cnp.NPY_INT8, 0)
        cdef int8_t* op = <int8_t*>cnp.PyArray_DATA(out)
        for k in range(n):
            op[k] = <int8_t>self._push(sp[k], tp[k], ap[k], zp[k], cp[k] != 0, rp != NULL and rp[k] != 0)
        return out

    def pop_due(self, double now_ms, out_seq, out_status, out_wait):
        """pop() until WAIT or the arrays are full; returns the number of items written."""
        cdef cnp.ndarray os_ = _out_array(out_seq, cnp.NPY_INT64)
        cdef cnp.ndarray ot = _out_array(out_status, cnp.NPY_INT8)
        cdef cnp.ndarray ow = _out_array(out_wait, cnp.NPY_FLOAT64)
        cdef int64_t* sp = <int64_t*>cnp.PyArray_DATA(os_)
        cdef int8_t* tp = <int8_t*>cnp.PyArray_DATA(ot)
        cdef double* wp = <double*>cnp.PyArray_DATA(ow)
        cdef Py_ssize_t k = 0, n = min(cnp.PyArray_SIZE(os_), cnp.PyArray_SIZE(ot), cnp.PyArray_SIZE(ow))
        cdef int64_t seq
        cdef double wait
        cdef int st
        while k < n:
            st = self._pop(now_ms, &seq, &wait)
            if st == O_WAIT:
                break
            sp[k] = seq
            tp[k] = <int8_t>st
            wp[k] = wait
            k += 1
        return k

    # ---- read-out ----------------------------------------------------------------------------
    @property
    def state(self):
        return self._state

    @property
    def capacity_ms(self):
        return self._capacity_ms

    @property
    def capacity_bytes(self):
        return self._capacity_ms * self._bpm

    @property
    def level_bytes(self):
        return self._level

    @property
    def level_ms(self):
        return self._level / self._bpm

    @property
    def level_percent(self):
        return self._pct()

    @property
    def packets(self):
        return self._count

    @property
    def evicted(self):
        return self._dropped_evicted

    @property
    def playout_offset_ms(self):
        return self._offset

    @property
    def playout_delay_ms(self):
        return self._offset - self._reference() if self._state == ST_PLAYING else 0.0

    @property
    def base_transit_ms(self):
        return self._base

    @property
    def target_delay_ms(self):
        return self._target_delay()

    @property
    def jitter_ms(self):
        return self._jitter

    @property
    def mean_transit_ms(self):
        return self._mean_transit

    def counters(self):
        """Cumulative counters and current gauges (see ext/README.md)."""
        return {
            "overflow_count": self._overflow_count, "underflow_count": self._underflow_count,
            "underflow_events": self._underflow_events, "grow_count": self._grow_count,
            "shrink_count": self._shrink_count, "fill_bytes": self._fill_bytes, "drain_bytes": self._drain_bytes,
            "played_bytes": self._played_bytes, "received_bytes": self._received_bytes, "played": self._played,
            "lost": self._lost, "dropped_late": self._dropped_late, "dropped_duplicate": self._dropped_duplicate,
            "dropped_evicted": self._dropped_evicted, "dropped_overflow": self._dropped_overflow,
            "dropped_resync": self._dropped_resync, "corrupted": self._corrupted, "resyncs": self._resyncs,
            "peak_bytes": self._peak_bytes,
            "dropped": (self._dropped_late + self._dropped_duplicate + self._dropped_evicted
                        + self._dropped_overflow + self._dropped_resync),
            "last_overflow_ms": self._last_overflow, "last_underflow_ms": self._last_underflow,
            "wait_total_ms": self._wait_total, "peak_percent": self._peak_pct, "state": self._state,
            "capacity_ms": self._capacity_ms, "capacity_bytes": self.capacity_bytes, "level_bytes": self._level,
            "level_ms": self.level_ms, "level_percent": self._pct(), "packets": self._count,
            "playout_offset_ms": self._offset, "playout_delay_ms": self.playout_delay_ms,
            "target_delay_ms": self._target_delay(), "jitter_ms": self._jitter,
            "mean_transit_ms": self._mean_transit,
            "base_transit_ms": self._base,
        }

    def window(self, double now_ms):
        """Level and wait statistics since reset_window(), the level integrated up to now_ms."""
        cdef double lvl = <double>self._level, pct = self._pct()
        cdef double start, last, area, area2, parea, lmin, lmax, pmin, pmax, dt, dur, avg, pavg, std
        cdef int64_t played = self._w_played
        if not self._w_init:
            start = last = now_ms
            area = area2 = parea = 0.0
            lmin = lmax = lvl
            pmin = pmax = pct
        else:
            start, last = self._w_start, self._w_last
            area, area2, parea = self._w_area, self._w_area2, self._w_parea
            lmin, lmax, pmin, pmax = <double>self._w_min, <double>self._w_max, self._w_pmin, self._w_pmax
        if now_ms > last:
            dt = now_ms - last
            area += lvl * dt
            area2 += lvl * lvl * dt
            parea += pct * dt
            last = now_ms
        dur = last - start
        if dur > 0.0:
            avg = area / dur
            pavg = parea / dur
            std = sqrt(max(0.0, area2 / dur - avg * avg))
        else:
            avg, pavg, std = lvl, pct, 0.0
        return {"duration_ms": dur, "level_min_bytes": lmin, "level_max_bytes": lmax, "level_avg_bytes": avg,
                "level_std_bytes": std, "level_min_percent": pmin, "level_max_percent": pmax,
                "level_avg_percent": pavg, "fill_bytes": <double>self._w_fill,
                "drain_bytes": <double>self._w_drain, "played": <double>played,
                "wait_avg_ms": self._w_wait_sum / played if played else NAN,
                "wait_max_ms": self._w_wait_max if played else NAN}

    def reset_window(self, double now_ms):
        """Start a new statistics window at now_ms with the current level."""
        self._advance(now_ms)
        self._w_start = self._w_last = max(now_ms, self._w_last)
        self._w_area = self._w_area2 = self._w_parea = 0.0
        self._w_min = self._w_max = self._level
        self._w_pmin = self._w_pmax = self._pct()
        self._w_fill = self._w_drain = self._w_played = 0
        self._w_wait_sum = self._w_wait_max = 0.0
