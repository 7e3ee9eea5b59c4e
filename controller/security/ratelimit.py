"""Per-client request budgets (INTERFACE STUB: helper replaces the body, keeps the signatures)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int            # requests per window for the budget that decided
    remaining: int        # requests left in that budget after this one
    reset_s: float        # seconds until that budget is whole again
    retry_after_s: int    # when refused: whole seconds to wait (>= 1)

    def headers(self) -> dict[str, str]:
        """RateLimit-* (IETF httpapi draft) and, when refused, Retry-After."""
        return {}


class RateLimiter:
    def __init__(self, per_minute: int, writes_per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute, self.writes_per_minute, self.clock = per_minute, writes_per_minute, clock

    def check(self, client: str, write: bool) -> RateDecision:
        """Spend one request (and one write when `write`) of `client`'s budgets, or refuse."""
        return RateDecision(True, self.per_minute, self.per_minute, 60.0, 0)
