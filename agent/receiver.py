"""The receiving side of one extension: arrivals -> sequence accounting + jitter buffer -> FEC -> NACKs -> decode -> concealment.

Each 20 ms tick takes the packets its PacketSource delivered (agent/source.py), accounts them
(RFC 3550 SequenceTracker), stores them in the JitterBuffer (payloads kept here, keyed by
16-bit sequence number), reconstructs a single missing member of an FEC group from its XOR
parity while the member's playout slot is still ahead, asks the source for retransmissions
of gaps while the retransmit knobs and the playout deadline allow, and plays out exactly 320
samples: decoded packets, concealment for lost slots (the last packet repeated with a fade,
silence after three), silence for underflows. Every output sample keeps the media sample
index it stands for, so the measurement can align the clean reference exactly.

Repairs (retransmissions and FEC reconstructions) are played like any packet but are not
arrivals of the media stream for timing, as with an RFC 4588 RTX stream: they are pushed
to the jitter buffer as `repaired` (no jitter, mean or base transit from them) and feed no
RFC 3550 jitter. Their transit holds a NACK round trip (a retransmission) or they have no
arrival of their own (a reconstruction), and letting them in ratchets the adaptive playout
delay up. A retransmission still counts as received in the sequence accounting (the
catalog's received_count and loss after repair); an FEC reconstruction counts in
`corrected`. What the meter reads is `figures()` and `take_window()`, never the buffer itself.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np

from agent.fec import xor_recover
from agent.source import SAMPLES_PER_MS, Arrival, PacketKind, PacketSource
from agent.stream_stats import ReceiveFigures, StreamStats, WindowCounters
from ext.jitter import ACCEPTED, LOST, PLAYED, WAIT, JitterBuffer
from ext.sequence import DUPLICATE

FRAME_SAMPLES = 320
FRAME_MS = 20.0             # one tick
_KEEP_MS = 6000.0          # payloads, FEC groups and NACK state older than this are forgotten
_CONCEAL_FADE = (0.7, 0.4, 0.15)  # gain of the 1st, 2nd, 3rd consecutive concealed slot; silence after
_FRAME_INDEX = np.arange(FRAME_SAMPLES, dtype=np.int64)  # media offsets within a frame


class Receiver:
    def __init__(self, source: PacketSource, knobs: Mapping[str, Any]) -> None:
        self.source = source
        self._format = source.payload_format
        self._bytes_per_ms = float(self._format.bytes_per_ms)
        self._origin_ms = float(source.capture_origin_ms)
        self.jb = JitterBuffer.from_knobs(knobs, bytes_per_ms=self._bytes_per_ms)
        self.seq = StreamStats()
        self._payloads: dict[int, tuple[bytes, int, float, float]] = {}  # seq16 -> (payload, ts samples, capture, arrival)
        self._seen_at: deque[tuple[float, int]] = deque()                  # (arrival, seq16) for eviction
        self._groups: dict[int, tuple[Arrival, float]] = {}                 # first seq16 -> (parity, arrival)
        self._recovered: set[int] = set()
        self._missing: dict[int, list[float]] = {}                          # ext seq -> [detected, requests, next_at]
        self._highest: int | None = None                                    # extended highest media seq
        self._fifo: deque[tuple[np.ndarray, int]] = deque()                 # (samples, first media index)
        self._fifo_len = 0
        self._cursor = 0                                                    # media index after the last output sample
        self._last_packet = np.zeros(FRAME_SAMPLES)
        self._concealed_run = 0
        self._evicted = 0           # the buffer's evicted count already entered in slot_history
        self.corrected = 0          # FEC reconstructions accepted by the buffer
        self.corrected_then_received = 0
        self.retransmit_requests = 0
        self.retransmits_received = 0   # intact retransmitted media packets that arrived (useful or not)
        self.skipped_samples = 0    # output audio skipped when the buffer shortened its delay
        self.concealed_slots = 0    # playout slots concealed since the start (lost, late or underflow)
        self.packet_ms = FRAME_MS   # audio carried by the last intact first-copy media packet received
        self.configure(knobs)
        self.window = WindowCounters()
        self.slot_history: deque[bool] = deque(maxlen=500)  # True = played, False = concealed or evicted (E-model)

    def configure(self, knobs: Mapping[str, Any]) -> None:
        self.jb.apply_knobs(knobs)
        self.retransmit_timeout = float(knobs["retransmit_timeout"])
        self.max_retransmits = int(knobs["max_retransmits"])

    def take_window(self, now_ms: float) -> WindowCounters:
        """What was received and played since the last call, with the buffer's level statistics up to `now_ms`."""
        w, self.window = self.window, WindowCounters()
        w.buffer = self.jb.window(now_ms)
        self.jb.reset_window(now_ms)
        return w

    def figures(self) -> ReceiveFigures:
        st = self.seq
        return ReceiveFigures(
            expected=int(st.expected), received=int(st.received_unique), lost_unique=int(st.lost_unique),
            duplicates=int(st.duplicates), out_of_order=int(st.out_of_order), corrected=self.corrected,
            corrected_then_received=self.corrected_then_received, jitter_ms=float(st.jitter_ms),
            packet_ms=self.packet_ms, bytes_per_ms=self._bytes_per_ms, buffer=self.jb.counters(),
            slots=tuple(self.slot_history))

    # -- one tick ---------------------------------------------------------------------------

    def tick(self, now: float) -> tuple[np.ndarray, np.ndarray]:
        """Receive what arrived by `now`, play 20 ms; returns (samples, media sample index per sample)."""
        for pkt in self.source.arrivals(now):
            self._receive(pkt, now)
        self._try_fec(now)
        self._request_retransmits(now)
        self._playout(now)
        self._note_evicted()
        self._forget(now)
        return self._take_frame()

    def _note_evicted(self) -> None:
        """Packets the buffer evicted unplayed (playout skipped past them) are audio the listener never
        hears: they enter the slot history as lost, as G.107's packet-loss probability counts buffer
        discards (late packets are there already: their slots were concealed)."""
        evicted = self.jb.evicted
        if evicted != self._evicted:
            self.slot_history.extend([False] * min(evicted - self._evicted, self.slot_history.maxlen or 0))
            self._evicted = evicted

    def _receive(self, pkt: Arrival, now: float) -> None:
        w = self.window
        size = pkt.wire_bytes
        w.wire_bytes += size
        w.max_wire = max(w.max_wire, size)
        w.min_wire = size if w.min_wire == 0 else min(w.min_wire, size)
        if pkt.kind == PacketKind.PARITY:
            w.parity_packets += 1
            if pkt.intact:
                self._groups[pkt.seq] = (pkt, pkt.arrival_ms)
            return
        w.media_packets += 1
        ts_ms = pkt.timestamp / SAMPLES_PER_MS
        if not pkt.intact:
            self.jb.push(pkt.seq, ts_ms, pkt.arrival_ms, len(pkt.payload), True)
            return
        if pkt.retransmission:
            self.retransmits_received += 1
        else:
            self.packet_ms = len(pkt.payload) / self._bytes_per_ms
        status = self.seq.update(pkt.seq, pkt.arrival_ms, ts_ms, pkt.retransmission)
        if pkt.sent_ms is not None:  # a source that only receives knows no send times
            w.transit_ms.append(pkt.arrival_ms - pkt.sent_ms)
        if status != DUPLICATE and pkt.seq in self._recovered:  # FEC was faster than this retransmission
            self._recovered.discard(pkt.seq)
            self.corrected_then_received += 1
        if status == DUPLICATE or pkt.seq in self._payloads:  # the buffer counts it as a duplicate
            self.jb.push(pkt.seq, ts_ms, pkt.arrival_ms, len(pkt.payload), False, pkt.retransmission)
            return
        w.payload_bytes += len(pkt.payload)
        self._store(pkt.seq, pkt.payload, pkt.timestamp, self._origin_ms + ts_ms, pkt.arrival_ms)
        self.jb.push(pkt.seq, ts_ms, pkt.arrival_ms, len(pkt.payload), False, pkt.retransmission)
        self._note_gap(pkt.seq, now)

    def _store(self, seq16: int, payload: bytes, ts: int, capture: float, arrival: float) -> None:
        self._payloads[seq16] = (payload, ts, capture, arrival)
        self._seen_at.append((arrival, seq16))

    # -- FEC and retransmission -----------------------------------------------------------

    def _try_fec(self, now: float) -> None:
        done = []
        for first, (parity, _) in self._groups.items():
            members = [(first + i) & 0xFFFF for i in range(parity.group_size)]
            missing = [s for s in members if s not in self._payloads]
            if len(missing) > 1:
                continue
            done.append(first)
            if not missing:
                continue
            lost = missing[0]
            payload = xor_recover(parity.payload, [self._payloads[s][0] for s in members if s != lost])
            samples = int(round(len(payload) * SAMPLES_PER_MS / self._bytes_per_ms))
            ts = parity.timestamp + members.index(lost) * samples
            ts_ms = ts / SAMPLES_PER_MS
            if self.jb.push(lost, ts_ms, now, len(payload), False, True) == ACCEPTED:
                self.corrected += 1
                self._recovered.add(lost)
                self._store(lost, payload, ts, self._origin_ms + ts_ms, now)
        for first in done:
            del self._groups[first]

    def _note_gap(self, seq16: int, now: float) -> None:
        """Unwrap against the highest seen and remember every sequence number skipped over."""
        if self._highest is None:
            self._highest = seq16
            return
        delta = (seq16 - self._highest) & 0xFFFF
        if delta == 0 or delta >= 0x8000:  # old or reordered packet: fills a gap, if any
            ext = self._highest - ((self._highest - seq16) & 0xFFFF)
            self._missing.pop(ext, None)
            return
        if delta > 1 and self.max_retransmits > 0 and delta < 200:
            for ext in range(self._highest + 1, self._highest + delta):
                self._missing[ext] = [now, 0.0, now]
        self._highest += delta

    def _request_retransmits(self, now: float) -> None:
        if not self._missing:
            return
        # A request is repeated after one round trip plus a tick. The round trip is estimated from the
        # stream's own mean transit (arrival - media time, less packetisation), which holds the sender's
        # pacing queue that a retransmission waits in too; the send-to-arrival transit alone would not,
        # and a backlogged sender would then be asked for every packet up to max_retransmits times.
        # A request whose answer cannot arrive before the slot plays, even over the fastest recent
        # transit both ways, is not sent: the retransmission would only be dropped late, and it takes
        # pacing capacity from the media behind it (a backlogged sender raises the base transit too).
        packet_ms = self.packet_ms
        rtt = 2 * max(0.0, self.jb.mean_transit_ms - packet_ms)
        fastest = 2 * max(0.0, self.jb.base_transit_ms - packet_ms)
        offset = self.jb.playout_offset_ms
        for ext, state in list(self._missing.items()):
            seq16 = ext & 0xFFFF
            due = (self._highest_ts_ms() - (self._highest - ext) * packet_ms) + offset  # playout time of that slot
            if (seq16 in self._payloads or now - state[0] > self.retransmit_timeout
                    or state[1] >= self.max_retransmits or now + fastest >= due):
                del self._missing[ext]
                continue
            if now >= state[2]:
                state[1] += 1
                state[2] = now + rtt + FRAME_MS
                self.retransmit_requests += 1
                self.source.request_retransmission(seq16, now)

    def _highest_ts_ms(self) -> float:
        entry = self._payloads.get((self._highest or 0) & 0xFFFF)
        return entry[1] / SAMPLES_PER_MS if entry else 0.0

    # -- playout ---------------------------------------------------------------------------

    def _playout(self, now: float) -> None:
        w = self.window
        while True:
            seq, status, wait = self.jb.pop(now)
            if status == WAIT:
                break
            out_at = now + self._fifo_len / SAMPLES_PER_MS  # when this slot's first sample leaves the output
            if status == PLAYED:
                entry = self._payloads.get(seq & 0xFFFF)
                if entry is not None:
                    payload, ts, capture, arrival = entry
                    samples = self._format.decode(payload)
                    self._push(samples, ts)
                    self._last_packet = samples
                    self._concealed_run = 0
                    w.played_base_ms.append(out_at - capture)
                    w.buffer_wait_ms.append(out_at - arrival)
                    w.played_payload_bytes += len(payload)
                    w.slots_played += 1
                    self.slot_history.append(True)
                    continue
            # LOST, UNDERFLOW (or a played slot whose payload we no longer hold): conceal one packet.
            w.slots_concealed += 1
            self.concealed_slots += 1
            self.slot_history.append(False)
            self._push(self._conceal(status == LOST), self._cursor_after_fifo())

    def _conceal(self, repeat: bool) -> np.ndarray:
        n = len(self._last_packet)
        run = self._concealed_run
        self._concealed_run += 1
        if not repeat or run >= len(_CONCEAL_FADE):
            return np.zeros(n)
        return self._last_packet * _CONCEAL_FADE[run]

    def _cursor_after_fifo(self) -> int:
        if self._fifo:
            samples, start = self._fifo[-1]
            return start + len(samples)
        return self._cursor

    def _push(self, samples: np.ndarray, media_start: int) -> None:
        """Queue one slot for output. The buffer schedules each slot at its own playout time, and this
        tick's frame is the only audio that may still be ahead of it: anything more is audio the
        buffer made early by shrinking its delay, so the oldest excess is skipped (latency follows
        the buffer's decision instead of piling up here)."""
        excess = self._fifo_len - max(0, FRAME_SAMPLES - len(samples))
        while excess > 0 and self._fifo:
            head, start = self._fifo[0]
            cut = min(excess, len(head))
            if cut == len(head):
                self._fifo.popleft()
            else:
                self._fifo[0] = (head[cut:], start + cut)
            self._fifo_len -= cut
            self.skipped_samples += cut
            excess -= cut
        self._fifo.append((samples, media_start))
        self._fifo_len += len(samples)

    def _take_frame(self) -> tuple[np.ndarray, np.ndarray]:
        fifo = self._fifo
        if fifo and len(fifo[0][0]) == FRAME_SAMPLES:  # the usual slot: one 20 ms packet is the whole frame
            samples, start = fifo.popleft()
            self._fifo_len -= FRAME_SAMPLES
            self._cursor = start + FRAME_SAMPLES
            # Decoded and concealed slots are fresh arrays nobody writes to (the chain copies its input).
            return samples, _FRAME_INDEX + start
        out = np.zeros(FRAME_SAMPLES)
        idx = np.empty(FRAME_SAMPLES, dtype=np.int64)
        filled = 0
        while filled < FRAME_SAMPLES and self._fifo:
            samples, start = self._fifo[0]
            take = min(FRAME_SAMPLES - filled, len(samples))
            out[filled:filled + take] = samples[:take]
            idx[filled:filled + take] = np.arange(start, start + take)
            filled += take
            self._cursor = start + take
            if take == len(samples):
                self._fifo.popleft()
            else:
                self._fifo[0] = (samples[take:], start + take)
            self._fifo_len -= take
        if filled < FRAME_SAMPLES:  # nothing due: silence standing for the media that should follow
            idx[filled:] = np.arange(self._cursor, self._cursor + FRAME_SAMPLES - filled)
            self._cursor += FRAME_SAMPLES - filled
        return out, idx

    def _forget(self, now: float) -> None:
        horizon = now - _KEEP_MS
        while self._seen_at and self._seen_at[0][0] < horizon:
            _, seq16 = self._seen_at.popleft()
            entry = self._payloads.get(seq16)
            if entry is not None and entry[3] < horizon:
                del self._payloads[seq16]
                self._recovered.discard(seq16)
        for first in [f for f, (_, t) in self._groups.items() if t < horizon]:
            del self._groups[first]
