"""Rate limits: GCRA budgets per client (all requests and writes), headers, recovery, bounded memory; a real app."""
from __future__ import annotations

import json
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from controller.app import create_app
from controller.clock import ManualClock
from controller.security.ratelimit import RateDecision, RateLimiter
from controller.settings import ControllerSettings
from tests.auth import bearer


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def spend(limiter: RateLimiter, client: str, count: int, write: bool = False) -> list[RateDecision]:
    return [limiter.check(client, write) for _ in range(count)]


# --- budgets ---------------------------------------------------------------------------------

def test_the_limit_trips_at_the_configured_count(clock):
    limiter = RateLimiter(5, 2, clock)
    decisions = spend(limiter, "alice", 6)
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining for d in decisions[:5]] == [4, 3, 2, 1, 0]
    assert all(d.limit == 5 for d in decisions)


def test_a_refusal_says_when_to_retry_and_the_client_recovers_then(clock):
    limiter = RateLimiter(6, 6, clock)  # one request every 10 s
    spend(limiter, "alice", 6)
    refused = limiter.check("alice", False)
    assert not refused.allowed and refused.retry_after_s == 10 and refused.remaining == 0
    headers = refused.headers()
    assert headers == {"RateLimit-Limit": "6", "RateLimit-Remaining": "0", "RateLimit-Reset": "60",
                       "Retry-After": "10"}
    clock.now += 9.5
    assert not limiter.check("alice", False).allowed  # a refused request spends nothing, so still 0.5 s to go
    clock.now += 0.5
    again = limiter.check("alice", False)
    assert again.allowed and again.remaining == 0
    assert not limiter.check("alice", False).allowed


def test_retry_after_is_at_least_one_second(clock):
    limiter = RateLimiter(1000, 100, clock)  # a step of 60 ms
    spend(limiter, "alice", 1000)
    refused = limiter.check("alice", False)
    assert not refused.allowed and refused.retry_after_s == 1 and refused.headers()["Retry-After"] == "1"


def test_budgets_refill_smoothly_so_there_is_no_window_edge_burst(clock):
    limiter = RateLimiter(60, 60, clock)  # one per second
    spend(limiter, "alice", 60)
    clock.now += 59.0  # a fixed window restarting here would hand out 60 at once
    assert sum(d.allowed for d in spend(limiter, "alice", 60)) == 59
    clock.now += 30.0
    assert sum(d.allowed for d in spend(limiter, "alice", 60)) == 30


def test_admitted_answers_carry_the_ratelimit_headers(clock):
    limiter = RateLimiter(1000, 100, clock)
    first = limiter.check("alice", False)
    assert first.headers() == {"RateLimit-Limit": "1000", "RateLimit-Remaining": "999", "RateLimit-Reset": "1"}
    clock.now += 10
    assert limiter.check("alice", False).headers()["RateLimit-Remaining"] == "999"  # refilled meanwhile


def test_headers_are_a_fresh_dict_each_time(clock):
    decision = RateLimiter(5, 5, clock).check("alice", False)
    decision.headers()["RateLimit-Limit"] = "changed"
    assert decision.headers()["RateLimit-Limit"] == "5"


def test_writes_have_their_own_smaller_budget(clock):
    limiter = RateLimiter(10, 2, clock)
    writes = spend(limiter, "alice", 3, write=True)
    assert [d.allowed for d in writes] == [True, True, False]
    assert writes[0].limit == 2 and writes[0].remaining == 1  # the budget closer to running out is reported
    assert writes[2].limit == 2 and writes[2].retry_after_s == 30
    reads = spend(limiter, "alice", 9)  # the two writes also spent two of the ten requests; the refusal none
    assert [d.allowed for d in reads] == [True] * 8 + [False]
    assert reads[-1].limit == 10


def test_a_write_needs_room_in_the_general_budget_too(clock):
    limiter = RateLimiter(3, 100, clock)
    spend(limiter, "alice", 3)
    refused = limiter.check("alice", True)
    assert not refused.allowed and refused.limit == 3


def test_clients_are_independent(clock):
    limiter = RateLimiter(2, 2, clock)
    spend(limiter, "alice", 2)
    assert not limiter.check("alice", False).allowed
    assert limiter.check("bob", False).allowed
    assert limiter.check("10.0.0.7", True).allowed


def test_limits_below_one_are_refused():
    with pytest.raises(ValueError):
        RateLimiter(0, 10)


# --- memory ----------------------------------------------------------------------------------

def test_idle_clients_are_forgotten_once_their_budget_is_full(clock):
    limiter = RateLimiter(60, 10, clock, sweep_s=10)
    limiter.check("alice", False)
    spend(limiter, "bob", 30, write=True)
    assert len(limiter) == 2
    clock.now += 11  # alice's budget is whole again (1 s), bob's not (60 s for his writes)
    limiter.check("carol", False)  # the sweep is due and runs on this check
    assert len(limiter) == 2 and limiter.sweep() == 0
    clock.now += 60
    assert limiter.sweep() == 2 and len(limiter) == 0


def test_forgetting_a_full_budget_changes_nothing_for_the_client(clock):
    limiter = RateLimiter(4, 4, clock)
    spend(limiter, "alice", 4)
    clock.now += 60
    limiter.sweep()
    assert [d.allowed for d in spend(limiter, "alice", 5)] == [True] * 4 + [False]


def test_a_flood_of_new_addresses_cannot_grow_memory_or_free_a_heavy_spender(clock):
    limiter = RateLimiter(10, 10, clock, max_clients=100)
    spend(limiter, "heavy", 10)
    for n in range(5000):
        limiter.check(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}", False)
        assert len(limiter) <= 100
    assert not limiter.check("heavy", False).allowed


# --- a real app ------------------------------------------------------------------------------

def make_app(tmp_path, clock, **overrides):
    settings = ControllerSettings(http_host="127.0.0.1", link_endpoint="tcp://127.0.0.1:*", data_dir=str(tmp_path),
                                  stations=2, tick_ms=50, insecure=True, **overrides)
    return create_app(settings, registry=CollectorRegistry(), clock=clock)


async def test_app_answers_429_with_headers_then_recovers(tmp_path):
    clock = ManualClock(wall=time.time())  # tokens are minted with the real time
    app = make_app(tmp_path, clock, rate_limit_per_minute=3, write_rate_limit_per_minute=2)
    async with TestClient(TestServer(app), headers=bearer(tmp_path, "operator", subject="ops-1")) as client:
        answers = [await client.get("/api/v1/catalog") for _ in range(3)]
        assert [r.status for r in answers] == [200, 200, 200]
        assert [r.headers["RateLimit-Remaining"] for r in answers] == ["2", "1", "0"]
        assert answers[0].headers["RateLimit-Limit"] == "3" and "Retry-After" not in answers[0].headers
        refused = await client.get("/api/v1/catalog")
        assert refused.status == 429
        assert refused.headers["Retry-After"] == "20" and refused.headers["RateLimit-Remaining"] == "0"
        assert (await refused.json())["error"]["code"] == "rate_limited"
        other = await client.get("/api/v1/catalog", headers=bearer(tmp_path, "viewer", subject="someone-else"))
        assert other.status == 200  # the limit is per token subject
        clock.advance(20)
        assert (await client.get("/api/v1/catalog")).status == 200
        assert (await client.get("/api/v1/catalog")).status == 429
    lines = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    limited = [line for line in lines if line["event"] == "rate_limited"]
    assert len(limited) == 1 and limited[0]["who"] == "ops-1" and limited[0]["outcome"] == "refused"
    summary = [line for line in lines if line["event"] == "rate_limited.summary"]
    assert summary and summary[0]["count"] == 1  # the second refusal, within the same minute, counted


async def test_app_write_budget_trips_before_the_general_one(tmp_path):
    clock = ManualClock(wall=time.time())
    app = make_app(tmp_path, clock, rate_limit_per_minute=100, write_rate_limit_per_minute=2)
    async with TestClient(TestServer(app), headers=bearer(tmp_path, "operator")) as client:
        url = "/api/v1/config/knobs/Station-1/3333"
        statuses = [(await client.post(url, json={"agc_enabled": True})).status for _ in range(3)]
        assert statuses == [200, 200, 429]
        refused = await client.post(url, json={"agc_enabled": True})
        assert "write rate limit of 2" in (await refused.json())["error"]["message"]
        assert (await client.get(url)).status == 200
