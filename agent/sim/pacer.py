"""The simulated sender's pacer: a token bucket over everything it sends, with a bounded queue.

The bucket holds `burst_size` packets and refills at `pacing_rate` times the sender's
outgoing packet rate: media packets, FEC parity (one per `fec_group` media packets) and
retransmissions (those handed to the pacer in the last second). Pacing at a multiple of
what is really sent is what keeps a pacer's queue short: paced against the media rate
alone, FEC at 50 % outran a 1.25x pacer and its queue grew for as long as the setting held,
and took minutes to drain after it was gone. Packets leave in order; a packet that would
wait longer than `max_queue_ms` is dropped and counted, as a real pacer with a bounded queue
does when it is asked for more than its rate (pacing_rate below 1).
"""
from __future__ import annotations

from collections import deque

MAX_QUEUE_MS = 200.0      # the longest a packet may wait in the pacer: about 200 ms of audio
RTX_WINDOW_MS = 1000.0    # retransmissions counted into the outgoing rate: the last second's


class Pacer:
    def __init__(self, max_queue_ms: float = MAX_QUEUE_MS) -> None:
        self.max_queue_ms = max_queue_ms
        self.pacing_rate = 1.0
        self.burst_size = 1
        self._media_per_ms = 1.0 / 20.0     # media + parity packets per ms, from the send knobs
        self._tokens = 0.0
        self._token_at = 0.0
        self._departures: deque[float] = deque()  # send times of the packets accepted and not yet gone
        self._rtx_at: deque[float] = deque()      # when recent retransmissions were handed over
        self._configured = False
        self.drops = 0

    def configure(self, pacing_rate: float, burst_size: int, packet_ms: float, fec_group: int) -> None:
        """Take the pacing knobs and the packet rate they multiply (fec_group 0: no FEC)."""
        self.pacing_rate = float(pacing_rate)
        self.burst_size = int(burst_size)
        self._media_per_ms = (1.0 + (1.0 / fec_group if fec_group else 0.0)) / packet_ms
        if not self._configured:  # a fresh sender starts with a full bucket
            self._tokens, self._configured = float(self.burst_size), True

    def rate_per_ms(self) -> float:
        """Packets per ms the pacer lets out once its bucket is empty."""
        return self.pacing_rate * (self._media_per_ms + len(self._rtx_at) / RTX_WINDOW_MS)

    def schedule(self, ready_ms: float, retransmission: bool = False) -> float | None:
        """When a packet ready at `ready_ms` leaves, or None when it would wait too long (dropped)."""
        if retransmission:
            self._rtx_at.append(ready_ms)
        self._expire(ready_ms)
        t, tokens = self._departure(ready_ms)
        if t - ready_ms > self.max_queue_ms:
            self.drops += 1
            return None
        self._tokens, self._token_at = tokens - 1.0, t
        self._departures.append(t)
        return t

    def _departure(self, ready_ms: float) -> tuple[float, float]:
        """(send time, tokens in the bucket at that time) of a packet ready at `ready_ms`, committing nothing."""
        rate = self.rate_per_ms()
        t = max(ready_ms, self._token_at)
        tokens = min(float(self.burst_size), self._tokens + (t - self._token_at) * rate)
        if tokens < 1.0:
            t += (1.0 - tokens) / rate
            tokens = 1.0
        return t, tokens

    def _expire(self, now_ms: float) -> None:
        while self._departures and self._departures[0] <= now_ms:
            self._departures.popleft()
        while self._rtx_at and self._rtx_at[0] <= now_ms - RTX_WINDOW_MS:
            self._rtx_at.popleft()

    def queue_packets(self, now_ms: float) -> int:
        """Packets accepted and still waiting to leave at `now_ms`."""
        self._expire(now_ms)
        return len(self._departures)

    def queue_ms(self, now_ms: float) -> float:
        """How long until the packets waiting at `now_ms` have all left (never above max_queue_ms)."""
        self._expire(now_ms)  # times only move forward: what has left by now has left for every later call too
        return self._departures[-1] - now_ms if self._departures else 0.0
