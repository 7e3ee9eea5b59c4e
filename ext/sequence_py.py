"""RTP sequence accounting, RFC 3550 A.1/A.3/A.8 (pure-Python twin of ext/_sequence.pyx)."""
from __future__ import annotations

from typing import Any

import numpy as np

VALID, OUT_OF_ORDER, DUPLICATE, PROBATION, BAD, RESTART = 0, 1, 2, 3, 4, 5

RTP_SEQ_MOD = 1 << 16
MAX_DROPOUT = 3000
MAX_MISORDER = 100
MIN_SEQUENTIAL = 2
SEEN_SLOTS = 4096           # how far back a duplicate is still recognised
_EMPTY = -(1 << 62)


class SequenceTracker:
    """Received/expected/lost, duplicates, reordering and interarrival jitter of one RTP source."""

    def __init__(self, min_sequential: int = MIN_SEQUENTIAL) -> None:
        if min_sequential < 1:
            raise ValueError(f"min_sequential: {min_sequential} must be >= 1")
        self._min_sequential = int(min_sequential)
        self._seen = [_EMPTY] * SEEN_SLOTS
        self._started = False
        self._valid = False
        self._probation = self._min_sequential
        self._max_seq = 0
        self._cycles = 0
        self._base_seq = 0
        self._bad_seq = RTP_SEQ_MOD + 1
        self._received = 0
        self._received_prior = 0
        self._expected_prior = 0
        self._dups_since_init = 0
        self._duplicates = 0
        self._out_of_order = 0
        self._bad = 0
        self._restarts = 0
        self._has_transit = False
        self._last_transit = 0.0
        self._jitter = 0.0

    def _init_seq(self, seq: int) -> None:
        """RFC 3550 A.1 init_seq: a new base; counters of the previous run are dropped."""
        self._valid = True
        self._base_seq = seq
        self._max_seq = seq
        self._bad_seq = RTP_SEQ_MOD + 1
        self._cycles = 0
        self._received = 0
        self._received_prior = 0
        self._expected_prior = 0
        self._dups_since_init = 0

    def update(self, seq: int, arrival_ms: float, ts_ms: float) -> int:
        """Account one packet; returns VALID, OUT_OF_ORDER, DUPLICATE, PROBATION, BAD or RESTART."""
        seq = int(seq) & 0xFFFF
        if not self._started:
            self._started = True
            self._max_seq = (seq - 1) & 0xFFFF
            self._probation = self._min_sequential
        udelta = (seq - self._max_seq) & 0xFFFF
        status = VALID
        if self._probation:
            if seq != (self._max_seq + 1) & 0xFFFF:
                self._probation = self._min_sequential - 1
                self._max_seq = seq
                return PROBATION
            self._probation -= 1
            self._max_seq = seq
            if self._probation:
                return PROBATION
            self._init_seq(seq)
            ext = seq
        elif udelta < MAX_DROPOUT:
            if seq < self._max_seq:
                self._cycles += RTP_SEQ_MOD
            self._max_seq = seq
            ext = self._cycles + seq
        elif udelta <= RTP_SEQ_MOD - MAX_MISORDER:
            if seq != self._bad_seq:
                self._bad_seq = (seq + 1) & 0xFFFF
                self._bad += 1
                return BAD
            # two sequential packets after a big jump: the source restarted
            self._init_seq(seq)
            self._restarts += 1
            self._seen = [_EMPTY] * SEEN_SLOTS
            self._has_transit = False
            ext = seq
            status = RESTART
        else:
            ext = self._cycles + self._max_seq - (RTP_SEQ_MOD - udelta)
            status = OUT_OF_ORDER
        self._received += 1
        i = ext & (SEEN_SLOTS - 1)
        if self._seen[i] == ext:
            self._duplicates += 1
            self._dups_since_init += 1
            return DUPLICATE
        self._seen[i] = ext
        if status == OUT_OF_ORDER:
            self._out_of_order += 1
        self._observe_transit(float(arrival_ms) - float(ts_ms))
        return status

    def _observe_transit(self, transit: float) -> None:
        if self._has_transit:
            d = abs(transit - self._last_transit)
            self._jitter = self._jitter + (d - self._jitter) / 16.0
        self._has_transit = True
        self._last_transit = transit

    def update_many(self, seq: np.ndarray, arrival_ms: np.ndarray, ts_ms: np.ndarray) -> np.ndarray:
        """update() over arrays of one length; returns the statuses as int8."""
        out = np.empty(len(seq), dtype=np.int8)
        for k in range(len(seq)):
            out[k] = self.update(int(seq[k]), float(arrival_ms[k]), float(ts_ms[k]))
        return out

    def interval(self) -> tuple[int, int, float]:
        """RFC 3550 A.3 since the previous call: (expected, lost, fraction lost clipped to [0, 1])."""
        expected = self.expected
        expected_interval = expected - self._expected_prior
        self._expected_prior = expected
        received_interval = self._received - self._received_prior
        self._received_prior = self._received
        lost_interval = expected_interval - received_interval
        fraction = lost_interval / expected_interval if expected_interval > 0 and lost_interval > 0 else 0.0
        return expected_interval, lost_interval, fraction

    @property
    def received(self) -> int:
        return self._received

    @property
    def received_unique(self) -> int:
        return self._received - self._dups_since_init

    @property
    def extended_max_seq(self) -> int:
        return self._cycles + self._max_seq

    @property
    def expected(self) -> int:
        return self._cycles + self._max_seq - self._base_seq + 1 if self._valid else 0

    @property
    def lost(self) -> int:
        return self.expected - self._received

    @property
    def lost_clipped(self) -> int:
        return max(0, self.lost)

    @property
    def lost_unique(self) -> int:
        return max(0, self.expected - self.received_unique)

    @property
    def duplicates(self) -> int:
        return self._duplicates

    @property
    def out_of_order(self) -> int:
        return self._out_of_order

    @property
    def bad(self) -> int:
        return self._bad

    @property
    def restarts(self) -> int:
        return self._restarts

    @property
    def cycles(self) -> int:
        return self._cycles

    @property
    def max_seq(self) -> int:
        return self._max_seq

    @property
    def base_seq(self) -> int:
        return self._base_seq

    @property
    def jitter_ms(self) -> float:
        return self._jitter

    @property
    def last_transit_ms(self) -> float:
        return self._last_transit

    @property
    def probation(self) -> int:
        return self._probation

    def counters(self) -> dict[str, Any]:
        names = ("received", "received_unique", "expected", "lost", "lost_clipped", "lost_unique", "duplicates",
                 "out_of_order", "bad", "restarts", "cycles", "max_seq", "extended_max_seq", "base_seq",
                 "jitter_ms", "last_transit_ms", "probation")
        return {name: getattr(self, name) for name in names}
