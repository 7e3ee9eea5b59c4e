"""Jitter buffer (pure-Python twin of ext/_jitter.pyx): packet metadata in, playout order out."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

# push() statuses
ACCEPTED, LATE, DUPLICATE, CORRUPTED, OVERFLOW, RESYNC = 0, 1, 2, 3, 4, 5
# pop() statuses
PLAYED, LOST, UNDERFLOW, WAIT = 10, 11, 12, 13
# states
BUFFERING, PLAYING, REBUFFERING = 0, 1, 2

POLICIES: tuple[str, ...] = ("drop_oldest", "drop_newest", "grow")
KNOB_NAMES: tuple[str, ...] = (
    "buffer_size", "prefetch_ms", "jitter_buffer_depth", "playout_delay", "adaptive_buffering",
    "buffer_overflow_policy", "max_buffer_size", "min_buffer_size",
)
JITTER_MULTIPLE = 4.0     # adaptive delay = 4 x RFC 3550 jitter (about 2% late on exponential jitter)
MAX_MISORDER = 100        # packets further behind the playout point than this may be a new stream
SHRINK_AFTER_MS = 1000.0  # played audio with the level under half capacity before capacity shrinks
EPS = 1e-6                # ms; absorbs float rounding in "is it due yet" comparisons
BASE_BLOCK_MS = 500.0     # base transit = lowest transit in the current and the last 3 blocks of arrivals:
BASE_BLOCKS = 4           # 1.5-2 s, longer than a stall, short enough to follow a route change
MIN_PACKETS = 2.0         # capacity floor in packets, whatever the knobs say (see _set_capacity)
_EMPTY = -(1 << 62)       # never a real sequence number


def _check_config(c: dict[str, Any]) -> None:
    if c["buffer_overflow_policy"] not in POLICIES:
        raise ValueError(f"buffer_overflow_policy: {c['buffer_overflow_policy']!r} is not one of {POLICIES}")
    for name in ("buffer_size", "prefetch_ms", "jitter_buffer_depth", "playout_delay"):
        if not c[name] >= 0:
            raise ValueError(f"{name}: {c[name]} is negative")
    if not 0 < c["min_buffer_size"] <= c["max_buffer_size"]:
        raise ValueError(f"min_buffer_size {c['min_buffer_size']} must be > 0 and <= max_buffer_size {c['max_buffer_size']}")


class JitterBuffer:
    """Orders packets by sequence number and releases them at ts + offset (see ext/README.md)."""

    def __init__(self, buffer_size: float = 512, prefetch_ms: float = 100, jitter_buffer_depth: float = 200,
                 playout_delay: float = 50, adaptive_buffering: bool = True,
                 buffer_overflow_policy: str = "drop_oldest", max_buffer_size: float = 2048,
                 min_buffer_size: float = 128, bytes_per_ms: float = 16.0, frame_ms: float = 20.0,
                 slots: int = 4096) -> None:
        if slots < 16 or slots & (slots - 1):
            raise ValueError(f"slots: {slots} is not a power of two >= 16")
        if not (bytes_per_ms > 0 and frame_ms > 0):
            raise ValueError("bytes_per_ms and frame_ms must be > 0")
        self._slots, self._mask = slots, slots - 1
        self._bpm = float(bytes_per_ms)
        self._r_seq = [_EMPTY] * slots      # seq stored in the slot (while present)
        self._r_seen = [_EMPTY] * slots     # last seq ever received in the slot (duplicates)
        self._r_ts = [0.0] * slots
        self._r_arr = [0.0] * slots
        self._r_size = [0] * slots
        self._r_present = [False] * slots
        self._last_dur = float(frame_ms)
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
    def from_knobs(cls, knobs: Mapping[str, Any], **kwargs: Any) -> JitterBuffer:
        """Build from a knob mapping (other keys are ignored); kwargs: bytes_per_ms, frame_ms, slots."""
        return cls(**{k: knobs[k] for k in KNOB_NAMES if k in knobs}, **kwargs)

    def _reset_stream_state(self) -> None:
        self._state = BUFFERING
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
        self._b_cur = math.inf             # lowest transit in the current block
        self._b_prev = [math.inf] * (BASE_BLOCKS - 1)   # the previous blocks', newest first
        self._held = False                 # rebuffering: the head's slot came before prefetch was met
        self._covered = 0.0                # rebuffering: media time played out as silence so far

    def _reset_counters(self) -> None:
        self._n = {k: 0 for k in (
            "overflow_count", "underflow_count", "underflow_events", "grow_count", "shrink_count", "fill_bytes",
            "drain_bytes", "played_bytes", "received_bytes", "played", "lost", "dropped_late",
            "dropped_duplicate", "dropped_evicted", "dropped_overflow", "dropped_resync", "corrupted", "resyncs",
            "peak_bytes")}
        self._last_overflow = math.nan
        self._last_underflow = math.nan
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
    def configure(self, **knobs: Any) -> None:
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
        if was_adaptive and not new["adaptive_buffering"]:
            self._anchor = self._anchor_base = self._base     # fixed delay measured from the base transit
        cap = new["buffer_size"] if new["buffer_size"] != old["buffer_size"] else self._capacity_ms
        self._set_capacity(min(max(cap, new["min_buffer_size"]), new["max_buffer_size"]))
        self._pending = self._state == PLAYING
        if new["adaptive_buffering"]:
            self._grow_for_delay()

    def apply_knobs(self, knobs: Mapping[str, Any]) -> None:
        """configure() with the buffer knobs found in a full knob mapping."""
        self.configure(**{k: knobs[k] for k in KNOB_NAMES if k in knobs})

    def _set_capacity(self, cap_ms: float) -> None:
        """Callers that know the time integrate the old level first (_advance).

        Never under two packets (the one playing and the one arriving): a smaller buffer could
        never start playout, whatever its knobs say."""
        self._capacity_ms = max(cap_ms, MIN_PACKETS * self._last_dur)
        self._mark()

    def _target_delay(self) -> float:
        c = self._cfg
        if not c["adaptive_buffering"]:
            return c["jitter_buffer_depth"]
        return min(max(JITTER_MULTIPLE * self._jitter, c["playout_delay"]), c["jitter_buffer_depth"])

    def _need_ms(self) -> float:
        # room for the delay plus a burst as long again
        return (2.0 * max(self._target_delay(), self._cfg["prefetch_ms"]) + 2.0 * self._last_dur)

    def _grow_for_delay(self) -> None:
        # grow to 25% over the need and shrink only to that: a 25% band so growth and shrink do not chatter
        need = self._need_ms()
        if need > self._capacity_ms and self._capacity_ms < self._cfg["max_buffer_size"]:
            self._set_capacity(min(self._cfg["max_buffer_size"], 1.25 * need))
            self._n["grow_count"] += 1

    def _floor_ms(self) -> float:
        c = self._cfg
        floor = 1.25 * self._need_ms() if c["adaptive_buffering"] else c["buffer_size"]
        return min(max(floor, c["min_buffer_size"]), c["max_buffer_size"])

    # ---- level accounting ----------------------------------------------------------------
    def _pct(self) -> float:
        return self._level * 100.0 / (self._capacity_ms * self._bpm)

    def _advance(self, t: float) -> None:
        """Integrate the current level over [last event, t] for the window's time-weighted mean."""
        if not self._w_init:
            self._w_init = True
            self._w_start = self._w_last = t
            self._w_min = self._w_max = self._level
            self._w_pmin = self._w_pmax = self._pct()
            return
        if t > self._w_last:
            dt = t - self._w_last
            lvl = float(self._level)
            self._w_area += lvl * dt
            self._w_area2 += lvl * lvl * dt
            self._w_parea += self._pct() * dt
            self._w_last = t

    def _mark(self) -> None:
        lvl, pct = self._level, self._pct()
        if lvl < self._w_min:
            self._w_min = lvl
        if lvl > self._w_max:
            self._w_max = lvl
        if pct < self._w_pmin:
            self._w_pmin = pct
        if pct > self._w_pmax:
            self._w_pmax = pct
        if lvl > self._n["peak_bytes"]:
            self._n["peak_bytes"] = lvl
        if pct > self._peak_pct:
            self._peak_pct = pct

    # ---- push ------------------------------------------------------------------------------
    def _unwrap(self, seq: int) -> int:
        if not self._has_high:
            return seq
        delta = (seq - self._highest) & 0xFFFF
        if delta >= 0x8000:
            delta -= 0x10000
        return self._highest + delta

    def push(self, seq: int, ts_ms: float, arrival_ms: float, size_bytes: int, corrupted: bool = False,
             repaired: bool = False) -> int:
        """Offer one packet; returns ACCEPTED, LATE, DUPLICATE, CORRUPTED, OVERFLOW or RESYNC.

        `repaired`: a retransmission or an FEC reconstruction. It is stored for playout like any
        packet, but its arrival says nothing about the path's transit (it holds a NACK round trip,
        or it has no arrival of its own), so it does not feed jitter, mean or base transit.
        """
        if size_bytes < 1:
            raise ValueError(f"size_bytes: {size_bytes} must be >= 1")
        seq, ts_ms, arrival_ms, size_bytes = int(seq), float(ts_ms), float(arrival_ms), int(size_bytes)
        n = self._n
        n["received_bytes"] += size_bytes
        if corrupted:
            n["corrupted"] += 1
            return CORRUPTED
        ext = self._unwrap(seq)
        i = ext & self._mask
        if self._r_seen[i] == ext:
            n["dropped_duplicate"] += 1
            return DUPLICATE
        if self._is_jump(ext):
            if not (self._has_cand and (seq & 0xFFFF) == self._cand):
                self._has_cand, self._cand = True, (seq + 1) & 0xFFFF
                n["dropped_resync"] += 1
                return RESYNC
            self._resync(arrival_ms)
            ext = seq
            i = ext & self._mask
        self._has_cand = False
        if not self._has_high or ext > self._highest:
            self._has_high, self._highest = True, ext
        if not repaired:
            self._observe_transit(arrival_ms - ts_ms, arrival_ms)
        self._r_seen[i] = ext
        if (self._has_cursor and ext < self._cursor
                or self._state == REBUFFERING and ts_ms <= self._covered + EPS):  # its slot went by as silence
            n["dropped_late"] += 1
            return LATE
        if self._level + size_bytes > self._capacity_ms * self._bpm and not self._make_room(ext, size_bytes, arrival_ms):
            n["dropped_overflow"] += 1
            return OVERFLOW
        self._store(i, ext, ts_ms, arrival_ms, size_bytes)
        return ACCEPTED

    def _is_jump(self, ext: int) -> bool:
        if self._has_cursor and self._cursor - ext > MAX_MISORDER:
            return True
        lo = hi = ext
        if self._has_cursor:
            lo = min(lo, self._cursor)
        if self._count:
            lo, hi = min(lo, self._low), max(hi, self._high)
        return hi - lo >= self._slots

    def _resync(self, t: float) -> None:
        """The sender restarted: flush the old stream and start buffering the new one."""
        self._advance(t)
        self._n["dropped_evicted"] += self._count
        self._n["drain_bytes"] += self._level
        self._w_drain += self._level
        self._r_present = [False] * self._slots
        self._r_seen = [_EMPTY] * self._slots
        keep = (self._capacity_ms, self._last_dur)
        self._reset_stream_state()
        self._capacity_ms, self._last_dur = keep
        self._n["resyncs"] += 1
        self._mark()

    def _observe_transit(self, transit: float, arrival: float) -> None:
        if self._has_transit:
            d = abs(transit - self._last_transit)
            self._jitter = self._jitter + (d - self._jitter) / 16.0
            self._mean_transit = self._mean_transit + (transit - self._mean_transit) / 16.0
            if arrival >= self._b_start + BASE_BLOCK_MS:
                if arrival >= self._b_start + BASE_BLOCKS * BASE_BLOCK_MS:
                    self._b_prev = [math.inf] * (BASE_BLOCKS - 1)     # a long silence: all of it is stale
                    self._b_start = arrival
                else:
                    while arrival >= self._b_start + BASE_BLOCK_MS:
                        self._b_prev = [self._b_cur] + self._b_prev[:-1]
                        self._b_cur = math.inf
                        self._b_start += BASE_BLOCK_MS
                self._b_cur = transit
            elif transit < self._b_cur:
                self._b_cur = transit
        else:
            self._has_transit = True
            self._mean_transit = transit
            self._b_start, self._b_cur = arrival, transit
        self._last_transit = transit
        base = self._b_cur
        for b in self._b_prev:
            if b < base:
                base = b
        self._base = base

    def _make_room(self, ext: int, size: int, t: float) -> bool:
        """Apply the overflow policy; True if the packet may now be stored."""
        n, c = self._n, self._cfg
        n["overflow_count"] += 1
        self._last_overflow = t
        policy = c["buffer_overflow_policy"]
        if policy == "grow" and self._capacity_ms < c["max_buffer_size"]:
            self._advance(t)
            self._set_capacity(min(c["max_buffer_size"], max(self._capacity_ms * 1.5, (self._level + size) / self._bpm)))
            n["grow_count"] += 1
            if self._level + size <= self._capacity_ms * self._bpm:
                return True
        elif policy == "drop_newest":
            return False
        while self._count and self._level + size > self._capacity_ms * self._bpm:
            if ext < self._low:
                return False            # the arriving packet is itself the oldest
            self._evict_low(t)
        return self._level + size <= self._capacity_ms * self._bpm

    def _store(self, i: int, ext: int, ts: float, arr: float, size: int) -> None:
        self._advance(arr)
        self._r_seq[i], self._r_ts[i], self._r_arr[i], self._r_size[i] = ext, ts, arr, size
        self._r_present[i] = True
        if self._count == 0:
            self._low = self._high = ext
        elif ext < self._low:
            self._low = ext
        elif ext > self._high:
            self._high = ext
        self._count += 1
        self._level += size
        self._n["fill_bytes"] += size
        self._w_fill += size
        self._mark()

    def _remove_low(self, t: float) -> int:
        """Take the lowest buffered packet out; returns its ring index."""
        self._advance(t)
        i = self._low & self._mask
        self._r_present[i] = False
        size = self._r_size[i]
        self._count -= 1
        self._level -= size
        self._n["drain_bytes"] += size
        self._w_drain += size
        if self._count:
            s = self._low + 1
            while not (self._r_present[s & self._mask] and self._r_seq[s & self._mask] == s):
                s += 1
            self._low = s
        self._mark()
        return i

    def _evict_low(self, t: float) -> None:
        """drop_oldest: evict the lowest packet; a running playout skips ahead past it."""
        e = self._low
        i = self._remove_low(t)
        self._n["dropped_evicted"] += 1
        if self._has_cursor:
            self._n["lost"] += e - self._cursor
            self._cursor = e + 1
            new_next = self._r_ts[i] + self._r_size[i] / self._bpm
            shift = new_next - self._next_ts
            self._next_ts = new_next
            self._offset -= shift
            self._anchor -= shift

    # ---- pop -------------------------------------------------------------------------------
    def _present(self, s: int) -> bool:
        i = s & self._mask
        return self._r_present[i] and self._r_seq[i] == s

    def _full(self) -> bool:
        return self._level + self._last_dur * self._bpm > self._capacity_ms * self._bpm

    def _can_start(self, now: float) -> bool:
        if self._count == 0:
            return False
        if self._full():
            return True                 # full: waiting longer would only overflow
        head_ts = self._r_ts[self._low & self._mask]
        return self._prefetched() and now + EPS >= head_ts + self._restart_offset()

    def _reference(self) -> float:
        """The transit the delay is counted from: the base (lowest recent) fixed, the mean adaptive."""
        return self._mean_transit if self._cfg["adaptive_buffering"] else self._base

    def _restart_offset(self) -> float:
        return self._reference() + self._target_delay()

    def _prefetched(self) -> bool:
        if self._full():
            return True
        prefetch = max(0.0, min(self._cfg["prefetch_ms"], self._capacity_ms - self._last_dur))
        return self._level / self._bpm + EPS >= prefetch

    def _start(self, offset: float) -> None:
        head = self._low
        if self._has_cursor and head > self._cursor:
            self._n["lost"] += head - self._cursor
        self._has_cursor = True
        self._cursor = head
        self._next_ts = self._r_ts[head & self._mask]
        self._offset = offset
        self._anchor = offset - self._cfg["jitter_buffer_depth"]
        self._anchor_base = self._base
        self._state = PLAYING
        self._pending = False
        self._held = False

    def _rebuffer(self, now: float) -> tuple[int, int, float] | None:
        """Ran dry: the slot clock runs on at the re-anchored offset; None once playout restarts."""
        self._offset = self._restart_offset()
        if self._count:
            head_ts = self._r_ts[self._low & self._mask]
            due = head_ts + self._offset <= now + EPS
            if self._full() or (due and self._prefetched()):
                # on its slot unless it waited for prefetch (held) or the buffer filled first
                self._start(self._offset if due and not self._held else now - head_ts)
                return None
            if due:                     # hold the head until prefetch is met: the delay grows by the wait
                if self._slot_time <= now + EPS:
                    self._held = True
                    return self._underflow(now, self._slot_time)
                return -1, WAIT, 0.0
        if now - self._offset > self._covered:
            self._covered = now - self._offset    # media time whose slot went by as silence: late if it comes
        if self._slot_time <= now + EPS:
            return self._underflow(now, self._slot_time)
        return -1, WAIT, 0.0

    def _adjust(self, now: float) -> None:
        """Move the playout offset toward its target at a packet boundary (see README)."""
        self._pending = False
        half = self._last_dur / 2.0
        if self._cfg["adaptive_buffering"]:
            desired = self._mean_transit + self._target_delay()
            band = half
            self._advance(now)
            self._grow_for_delay()
        else:
            if self._anchor_base - self._base > half:
                # the path got faster, or playout started on slow packets: follow the base down
                self._anchor -= self._anchor_base - self._base
                self._anchor_base = self._base
            desired = self._anchor + self._cfg["jitter_buffer_depth"]
            band = EPS
        diff = desired - self._offset
        if diff > band:
            self._offset = desired
        elif diff < -band:
            i = self._cursor & self._mask
            spurt = self._present(self._cursor) and self._r_ts[i] > self._next_ts + half
            self._offset = desired if spurt else max(desired, self._offset - self._last_dur / 4.0)

    def pop(self, now_ms: float) -> tuple[int, int, float]:
        """Next output item due at now_ms: (seq, PLAYED|LOST|UNDERFLOW|WAIT, wait_ms)."""
        now_ms = float(now_ms)
        if self._state == BUFFERING:
            if not self._can_start(now_ms):
                return -1, WAIT, 0.0
            self._start(now_ms - self._r_ts[self._low & self._mask])     # the head plays at once
        elif self._state == REBUFFERING:
            item = self._rebuffer(now_ms)
            if item is not None:
                return item
        if self._pending:
            self._adjust(now_ms)
        cur = self._cursor
        if self._present(cur):
            if self._r_ts[cur & self._mask] + self._offset <= now_ms + EPS:
                return self._play(now_ms)
            return -1, WAIT, 0.0
        slot = self._next_ts + self._offset
        if slot > now_ms + EPS:
            return -1, WAIT, 0.0
        if self._count:
            self._n["lost"] += 1
            self._cursor = cur + 1
            self._next_ts += self._last_dur
            self._pending = True
            return cur, LOST, 0.0
        self._n["underflow_events"] += 1
        self._state = REBUFFERING
        self._covered = now_ms - self._restart_offset()
        return self._underflow(now_ms, slot)

    def _underflow(self, now: float, slot: float) -> tuple[int, int, float]:
        self._advance(now)
        self._n["underflow_count"] += 1
        self._last_underflow = slot
        self._slot_time = slot + self._last_dur
        return -1, UNDERFLOW, 0.0

    def _play(self, now: float) -> tuple[int, int, float]:
        cur = self._cursor
        i = self._remove_low(now)
        size = self._r_size[i]
        dur = size / self._bpm
        wait = now - self._r_arr[i]
        n = self._n
        n["played"] += 1
        n["played_bytes"] += size
        self._wait_total += wait
        self._w_played += 1
        self._w_wait_sum += wait
        if wait > self._w_wait_max:
            self._w_wait_max = wait
        self._next_ts = self._r_ts[i] + dur
        self._last_dur = dur
        if self._capacity_ms < MIN_PACKETS * dur:   # longer packets than assumed: keep room for two
            self._set_capacity(self._capacity_ms)
        self._cursor = cur + 1
        self._pending = True
        self._maybe_shrink(now, dur)
        return cur, PLAYED, wait

    def _maybe_shrink(self, now: float, dur: float) -> None:
        if self._level * 2.0 < self._capacity_ms * self._bpm:
            self._quiet_ms += dur
        else:
            self._quiet_ms = 0.0
        if self._quiet_ms >= SHRINK_AFTER_MS:
            self._quiet_ms = 0.0
            floor = self._floor_ms()
            if self._capacity_ms > floor:
                self._advance(now)
                self._set_capacity(max(floor, self._capacity_ms * 0.75))
                self._n["shrink_count"] += 1

    # ---- batch calls ---------------------------------------------------------------------------
    def push_many(self, seq: np.ndarray, ts_ms: np.ndarray, arrival_ms: np.ndarray, size_bytes: np.ndarray,
                  corrupted: np.ndarray, repaired: np.ndarray | None = None) -> np.ndarray:
        """push() over arrays of one length (`repaired` None: none is); returns the statuses as int8."""
        n = len(seq)
        if not (len(ts_ms) == len(arrival_ms) == len(size_bytes) == len(corrupted) == n) or (
                repaired is not None and len(repaired) != n):
            raise ValueError("push_many: arrays differ in length")
        out = np.empty(n, dtype=np.int8)
        for k in range(n):
            out[k] = self.push(int(seq[k]), float(ts_ms[k]), float(arrival_ms[k]), int(size_bytes[k]),
                               bool(corrupted[k]), repaired is not None and bool(repaired[k]))
        return out

    def pop_due(self, now_ms: float, out_seq: np.ndarray, out_status: np.ndarray, out_wait: np.ndarray) -> int:
        """pop() until WAIT or the arrays are full; returns the number of items written."""
        k = 0
        while k < len(out_seq):
            s, st, w = self.pop(now_ms)
            if st == WAIT:
                break
            out_seq[k], out_status[k], out_wait[k] = s, st, w
            k += 1
        return k

    # ---- read-out ----------------------------------------------------------------------------
    @property
    def state(self) -> int:
        return self._state

    @property
    def capacity_ms(self) -> float:
        return self._capacity_ms

    @property
    def capacity_bytes(self) -> float:
        return self._capacity_ms * self._bpm

    @property
    def level_bytes(self) -> int:
        return self._level

    @property
    def level_ms(self) -> float:
        return self._level / self._bpm

    @property
    def level_percent(self) -> float:
        return self._pct()

    @property
    def packets(self) -> int:
        return self._count

    @property
    def evicted(self) -> int:
        """Packets taken out unplayed to make room or flushed on a resync (counters()' dropped_evicted)."""
        return self._n["dropped_evicted"]

    @property
    def playout_offset_ms(self) -> float:
        return self._offset

    @property
    def playout_delay_ms(self) -> float:
        return self._offset - self._reference() if self._state == PLAYING else 0.0

    @property
    def base_transit_ms(self) -> float:
        return self._base

    @property
    def target_delay_ms(self) -> float:
        return self._target_delay()

    @property
    def jitter_ms(self) -> float:
        return self._jitter

    @property
    def mean_transit_ms(self) -> float:
        return self._mean_transit

    def counters(self) -> dict[str, Any]:
        """Cumulative counters and current gauges (see ext/README.md)."""
        n = self._n
        out: dict[str, Any] = dict(n)
        out["dropped"] = (n["dropped_late"] + n["dropped_duplicate"] + n["dropped_evicted"]
                          + n["dropped_overflow"] + n["dropped_resync"])
        out.update(last_overflow_ms=self._last_overflow, last_underflow_ms=self._last_underflow,
                   wait_total_ms=self._wait_total, peak_percent=self._peak_pct, state=self._state,
                   capacity_ms=self._capacity_ms, capacity_bytes=self.capacity_bytes, level_bytes=self._level,
                   level_ms=self.level_ms, level_percent=self._pct(), packets=self._count,
                   playout_offset_ms=self._offset, playout_delay_ms=self.playout_delay_ms,
                   target_delay_ms=self._target_delay(), jitter_ms=self._jitter,
                   mean_transit_ms=self._mean_transit, base_transit_ms=self._base)
        return out

    def window(self, now_ms: float) -> dict[str, float]:
        """Level and wait statistics since reset_window(), the level integrated up to now_ms."""
        lvl, pct = float(self._level), self._pct()
        if not self._w_init:
            start = last = now_ms
            area = area2 = parea = 0.0
            lmin = lmax = lvl
            pmin = pmax = pct
        else:
            start, last = self._w_start, self._w_last
            area, area2, parea = self._w_area, self._w_area2, self._w_parea
            lmin, lmax, pmin, pmax = float(self._w_min), float(self._w_max), self._w_pmin, self._w_pmax
        if now_ms > last:
            dt = now_ms - last
            area += lvl * dt
            area2 += lvl * lvl * dt
            parea += pct * dt
            last = now_ms
        dur = last - start
        if dur > 0.0:
            avg, pavg = area / dur, parea / dur
            std = math.sqrt(max(0.0, area2 / dur - avg * avg))
        else:
            avg, pavg, std = lvl, pct, 0.0
        played = self._w_played
        return {"duration_ms": dur, "level_min_bytes": lmin, "level_max_bytes": lmax, "level_avg_bytes": avg,
                "level_std_bytes": std, "level_min_percent": pmin, "level_max_percent": pmax,
                "level_avg_percent": pavg, "fill_bytes": float(self._w_fill), "drain_bytes": float(self._w_drain),
                "played": float(played), "wait_avg_ms": self._w_wait_sum / played if played else math.nan,
                "wait_max_ms": self._w_wait_max if played else math.nan}

    def reset_window(self, now_ms: float) -> None:
        """Start a new statistics window at now_ms with the current level."""
        self._advance(now_ms)
        self._w_start = self._w_last = max(now_ms, self._w_last)
        self._w_area = self._w_area2 = self._w_parea = 0.0
        self._w_min = self._w_max = self._level
        self._w_pmin = self._w_pmax = self._pct()
        self._w_fill = self._w_drain = self._w_played = 0
        self._w_wait_sum = self._w_wait_max = 0.0
