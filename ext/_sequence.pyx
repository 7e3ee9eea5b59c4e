# cython: language_level=3
"""RTP sequence accounting, RFC 3550 A.1/A.3/A.8 (Cython build of ext/sequence_py.py, same behaviour)."""
import numpy as np
cimport numpy as cnp
from libc.math cimport fabs
from libc.stdint cimport int64_t, int8_t

cnp.import_array()

VALID, OUT_OF_ORDER, DUPLICATE, PROBATION, BAD, RESTART = 0, 1, 2, 3, 4, 5
RTP_SEQ_MOD = 1 << 16
MAX_DROPOUT = 3000
MAX_MISORDER = 100
MIN_SEQUENTIAL = 2
SEEN_SLOTS = 4096

cdef enum:
    S_VALID = 0
    S_OUT_OF_ORDER = 1
    S_DUPLICATE = 2
    S_PROBATION = 3
    S_BAD = 4
    S_RESTART = 5
    C_MOD = 65536
    C_MAX_DROPOUT = 3000
    C_MAX_MISORDER = 100
    C_SLOTS = 4096

cdef int64_t EMPTY = -(<int64_t>1 << 62)


cdef class SequenceTracker:
    """Received/expected/lost, duplicates, reordering and interarrival jitter of one RTP source."""
    cdef int64_t _seen[C_SLOTS]
    cdef int64_t _min_sequential, _probation, _max_seq, _cycles, _base_seq, _bad_seq
    cdef int64_t _received, _received_prior, _expected_prior, _dups_since_init
    cdef int64_t _duplicates, _out_of_order, _bad, _restarts
    cdef bint _started, _valid, _has_transit
    cdef double _last_transit, _jitter

    def __init__(self, int min_sequential=2):
        if min_sequential < 1:
            raise ValueError(f"min_sequential: {min_sequential} must be >= 1")
        self._min_sequential = min_sequential
        self._clear_seen()
        self._started = False
        self._valid = False
        self._probation = min_sequential
        self._max_seq = 0
        self._cycles = 0
        self._base_seq = 0
        self._bad_seq = C_MOD + 1
        self._received = self._received_prior = self._expected_prior = self._dups_since_init = 0
        self._duplicates = self._out_of_order = self._bad = self._restarts = 0
        self._has_transit = False
        self._last_transit = 0.0
        self._jitter = 0.0

    cdef void _clear_seen(self) noexcept:
        cdef int k
        for k in range(C_SLOTS):
            self._seen[k] = EMPTY

    cdef void _init_seq(self, int64_t seq) noexcept:
        self._valid = True
        self._base_seq = seq
        self._max_seq = seq
        self._bad_seq = C_MOD + 1
        self._cycles = 0
        self._received = 0
        self._received_prior = 0
        self._expected_prior = 0
        self._dups_since_init = 0

    cdef int _update(self, int64_t seq, double arrival_ms, double ts_ms) noexcept:
        cdef int64_t udelta, ext, i
        cdef int status = S_VALID
        cdef double transit, d
        seq = seq & 0xFFFF
        if not self._started:
            self._started = True
            self._max_seq = (seq - 1) & 0xFFFF
            self._probation = self._min_sequential
        udelta = (seq - self._max_seq) & 0xFFFF
        if self._probation:
            if seq != ((self._max_seq + 1) & 0xFFFF):
                self._probation = self._min_sequential - 1
                self._max_seq = seq
                return S_PROBATION
            self._probation -= 1
            self._max_seq = seq
            if self._probation:
                return S_PROBATION
            self._init_seq(seq)
            ext = seq
        elif udelta < C_MAX_DROPOUT:
            if seq < self._max_seq:
                self._cycles += C_MOD
            self._max_seq = seq
            ext = self._cycles + seq
        elif udelta <= C_MOD - C_MAX_MISORDER:
            if seq != self._bad_seq:
                self._bad_seq = (seq + 1) & 0xFFFF
                self._bad += 1
                return S_BAD
            self._init_seq(seq)     # two sequential packets after a big jump: the source restarted
            self._restarts += 1
            self._clear_seen()
            self._has_transit = False
            ext = seq
            status = S_RESTART
        else:
            ext = self._cycles + self._max_seq - (C_MOD - udelta)
            status = S_OUT_OF_ORDER
        self._received += 1
        i = ext & (C_SLOTS - 1)
        if self._seen[i] == ext:
            self._duplicates += 1
            self._dups_since_init += 1
            return S_DUPLICATE
        self._seen[i] = ext
        if status == S_OUT_OF_ORDER:
            self._out_of_order += 1
        transit = arrival_ms - ts_ms
        if self._has_transit:
            d = fabs(transit - self._last_transit)
            self._jitter = self._jitter + (d - self._jitter) / 16.0
        self._has_transit = True
        self._last_transit = transit
        return status

    def update(self, int64_t seq, double arrival_ms, double ts_ms) -> int:
        """Account one packet; returns VALID, OUT_OF_ORDER, DUPLICATE, PROBATION, BAD or RESTART."""
        return self._update(seq, arrival_ms, ts_ms)

    def update_many(self, seq, arrival_ms, ts_ms):
        """update() over arrays of one length; returns the statuses as int8."""
        cdef const int64_t[:] s = np.ascontiguousarray(seq, dtype=np.int64)
        cdef const double[:] a = np.ascontiguousarray(arrival_ms, dtype=np.float64)
        cdef const double[:] t = np.ascontiguousarray(ts_ms, dtype=np.float64)
        cdef Py_ssize_t n = s.shape[0], k
        if a.shape[0] != n or t.shape[0] != n:
            raise ValueError("update_many: arrays differ in length")
        out = np.empty(n, dtype=np.int8)
        cdef int8_t[:] o = out
        for k in range(n):
            o[k] = <int8_t>self._update(s[k], a[k], t[k])
        return out

    def interval(self):
        """RFC 3550 A.3 since the previous call: (expected, lost, fraction lost clipped to [0, 1])."""
        cdef int64_t expected = self.expected
        cdef int64_t expected_interval = expected - self._expected_prior
        self._expected_prior = expected
        cdef int64_t received_interval = self._received - self._received_prior
        self._received_prior = self._received
        cdef int64_t lost_interval = expected_interval - received_interval
        cdef double fraction = 0.0
        if expected_interval > 0 and lost_interval > 0:
            fraction = <double>lost_interval / <double>expected_interval
        return expected_interval, lost_interval, fraction

    @property
    def received(self):
        return self._received

    @property
    def received_unique(self):
        return self._received - self._dups_since_init

    @property
    def extended_max_seq(self):
        return self._cycles + self._max_seq

    @property
    def expected(self):
        return self._cycles + self._max_seq - self._base_seq + 1 if self._valid else 0

    @property
    def lost(self):
        return self.expected - self._received

    @property
    def lost_clipped(self):
        return max(0, self.lost)

    @property
    def lost_unique(self):
        return max(0, self.expected - self.received_unique)

    @property
    def duplicates(self):
        return self._duplicates

    @property
    def out_of_order(self):
        return self._out_of_order

    @property
    def bad(self):
        return self._bad

    @property
    def restarts(self):
        return self._restarts

    @property
    def cycles(self):
        return self._cycles

    @property
    def max_seq(self):
        return self._max_seq

    @property
    def base_seq(self):
        return self._base_seq

    @property
    def jitter_ms(self):
        return self._jitter

    @property
    def last_transit_ms(self):
        return self._last_transit

    @property
    def probation(self):
        return self._probation

    def counters(self):
        names = ("received", "received_unique", "expected", "lost", "lost_clipped", "lost_unique", "duplicates",
                 "out_of_order", "bad", "restarts", "cycles", "max_seq", "extended_max_seq", "base_seq",
                 "jitter_ms", "last_transit_ms", "probation")
        return {name: getattr(self, name) for name in names}
