"""Per-client request budgets: GCRA (a continuously refilling bucket) for all requests and for writes.

Each client has two budgets per minute: every request spends one of `per_minute`, and a
write also spends one of `writes_per_minute`; a request is admitted only when every budget
it spends has room, and a refused request spends nothing. GCRA keeps one number per budget,
the theoretical arrival time (TAT): each request pushes it `60 / limit` seconds ahead, and a
request is refused when that would put it more than a minute ahead of now. A full budget
therefore allows `limit` requests at once and then one every `60 / limit` seconds: there is
no window edge at which a client could spend two windows' worth back to back.

Memory: a client whose TATs are in the past has a full budget again, which is exactly what a
client never seen before gets, so its entry is dropped (swept once per `sweep_s`). When a
flood of distinct clients (addresses) fills `max_clients` within one sweep period, the
entries with the most budget left are dropped first: at worst that hands a nearly-full
budget back to someone who had one, never a fresh budget to the heavy spender.
"""
from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable
from typing import NamedTuple

WINDOW_S = 60.0
_EPS = 1e-6  # float slack: 1000 steps of 0.06 s must add up to exactly one full window, not a hair over
_HEADER_CACHE_SIZE = 4096  # distinct (limit, remaining, reset, retry) states; far more than ever occur


class RateDecision(NamedTuple):
    """What one check decided; a tuple because one is built per request on the hot path."""
    allowed: bool
    limit: int            # requests per minute of the budget that decided
    remaining: int        # requests left in that budget after this one
    reset_s: int          # whole seconds until that budget is whole again
    retry_after_s: int    # when refused: whole seconds to wait (>= 1); 0 when allowed

    def headers(self) -> dict[str, str]:
        """RateLimit-Limit/-Remaining/-Reset (IETF httpapi draft) and, when refused, Retry-After.

        The answer is cached per state (a fresh copy each time, so callers may change it):
        formatting four numbers costs more than the whole check.
        """
        cached = _HEADERS.get(self)
        if cached is None:
            if len(_HEADERS) >= _HEADER_CACHE_SIZE:
                _HEADERS.clear()
            cached = _HEADERS[self] = _format(self)
        return cached.copy()


def _format(decision: RateDecision) -> dict[str, str]:
    headers = {"RateLimit-Limit": str(decision.limit), "RateLimit-Remaining": str(decision.remaining),
               "RateLimit-Reset": str(decision.reset_s)}
    if not decision.allowed:
        headers["Retry-After"] = str(decision.retry_after_s)
    return headers


_HEADERS: dict[RateDecision, dict[str, str]] = {}


class RateLimiter:
    def __init__(self, per_minute: int, writes_per_minute: int, clock: Callable[[], float] = time.monotonic,
                 max_clients: int = 100_000, sweep_s: float = WINDOW_S) -> None:
        if per_minute < 1 or writes_per_minute < 1:
            raise ValueError("rate limits must be at least 1 request per minute")
        self.per_minute, self.writes_per_minute, self.clock = per_minute, writes_per_minute, clock
        self.max_clients, self.sweep_s = max_clients, sweep_s
        self._step = WINDOW_S / per_minute          # seconds of budget one request costs
        self._write_step = WINDOW_S / writes_per_minute
        self._clients: dict[str, list[float]] = {}  # client -> [TAT of all requests, TAT of writes]
        self._next_sweep = clock() + sweep_s

    def __len__(self) -> int:
        """Clients currently remembered (those whose budgets are not full)."""
        return len(self._clients)

    def check(self, client: str, write: bool) -> RateDecision:
        """Spend one request (and one write when `write`) of `client`'s budgets, or refuse."""
        now = self.clock()
        if now >= self._next_sweep:
            self.sweep(now)
        tats = self._clients.get(client)
        if tats is None:
            if len(self._clients) >= self.max_clients:
                self._evict(now)
            tats = self._clients[client] = [now, now]
        tat = tats[0] if tats[0] > now else now
        new_tat = tat + self._step
        if new_tat - now > WINDOW_S + _EPS:
            return self._refused(self.per_minute, tat, now, self._step)
        if not write:
            tats[0] = new_tat
            return RateDecision(True, self.per_minute, int((now + WINDOW_S - new_tat) / self._step + _EPS),
                                math.ceil(new_tat - now - _EPS), 0)
        wtat = tats[1] if tats[1] > now else now
        new_wtat = wtat + self._write_step
        if new_wtat - now > WINDOW_S + _EPS:
            return self._refused(self.writes_per_minute, wtat, now, self._write_step)
        tats[0], tats[1] = new_tat, new_wtat
        left = int((now + WINDOW_S - new_tat) / self._step + _EPS)
        write_left = int((now + WINDOW_S - new_wtat) / self._write_step + _EPS)
        if write_left <= left:  # report the budget closer to running out, as the draft asks
            return RateDecision(True, self.writes_per_minute, write_left, math.ceil(new_wtat - now - _EPS), 0)
        return RateDecision(True, self.per_minute, left, math.ceil(new_tat - now - _EPS), 0)

    @staticmethod
    def _refused(limit: int, tat: float, now: float, step: float) -> RateDecision:
        # Admitted again once one step of budget has refilled: when tat + step is a window ahead.
        retry = max(1, math.ceil(tat + step - WINDOW_S - now - _EPS))
        return RateDecision(False, limit, 0, math.ceil(tat - now - _EPS), retry)

    def sweep(self, now: float | None = None) -> int:
        """Forget clients whose budgets are full again; the number forgotten."""
        now = self.clock() if now is None else now
        idle = [client for client, (tat, wtat) in self._clients.items() if tat <= now and wtat <= now]
        for client in idle:
            del self._clients[client]
        self._next_sweep = now + self.sweep_s
        return len(idle)

    def _evict(self, now: float) -> None:
        """Make room under `max_clients`: the idle first, then a tenth, those with the most budget left."""
        if self.sweep(now) and len(self._clients) < self.max_clients:
            return
        count = max(1, len(self._clients) // 10)
        for client in heapq.nsmallest(count, self._clients, key=lambda c: max(self._clients[c])):
            del self._clients[client]
