"""router.shared.redis.RedisStore against a real redis-server: a request's admission script, budget escrow."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis as redis_client

from router.budget import BudgetLimit, Budgets, Reservation
from router.config import StateConfig
from router.ratelimit import Bucket
from router.shared import Exchange
from router.shared.escrow import SharedBudgets
from router.shared.redis import _ADMIT, RedisStore, _sha1
from tests.e2e.processes import RedisServer, redis_server

REQUESTS = Bucket("tenant:acme:requests", "tenant:acme", "requests", 600)
TOKENS = Bucket("tenant:acme:tokens", "tenant:acme", "tokens", 60_000)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path) as running:
        yield running


@pytest.fixture
async def store(server: RedisServer) -> AsyncIterator[RedisStore]:
    store = RedisStore(StateConfig(redis_url=server.url))
    yield store
    await store.aclose()


def backlog(server: RedisServer, bucket: Bucket) -> float:
    """Seconds of ``bucket`` in use, by Redis' clock."""
    with redis_client.Redis(port=server.port) as client:
        seconds, micros = client.time()
        return float(client.get(f"llm-router:rate:{bucket.key}") or 0) - (seconds + micros / 1e6)


async def test_a_lease_is_taken_with_the_request_and_given_back_as_a_settlement(
    store: RedisStore, server: RedisServer
) -> None:
    admitted = await store.admit([REQUESTS, TOKENS], [1.0, 100.0], [0.0, 0.0], [6.0, 600.0])
    assert admitted.take.admitted and admitted.leased
    assert backlog(server, REQUESTS) == pytest.approx(0.7, abs=0.05)  # (1 + 6) requests at 0.1 s each
    assert backlog(server, TOKENS) == pytest.approx(0.7, abs=0.05)  # (100 + 600) tokens at 1 ms each
    await store.admit([REQUESTS, TOKENS], [0.0, 0.0], [-6.0, -600.0], [0.0, 0.0])
    assert backlog(server, REQUESTS) == pytest.approx(0.1, abs=0.05)


async def test_no_lease_past_half_a_bucket_and_none_beyond_its_burst(store: RedisStore, server: RedisServer) -> None:
    first = await store.admit([REQUESTS], [290.0], [0.0], [6.0])  # 29 s + 0.6 s: still at most half
    assert first.leased
    second = await store.admit([REQUESTS], [1.0], [0.0], [6.0])  # would pass 30 s: admitted, not lent
    assert second.take.admitted and not second.leased
    assert backlog(server, REQUESTS) == pytest.approx(29.7, abs=0.1)
    refused = await store.admit([REQUESTS], [400.0], [0.0], [6.0])  # beyond the minute's burst
    assert not refused.take.admitted and not refused.leased
    assert backlog(server, REQUESTS) == pytest.approx(29.7, abs=0.1)  # nothing taken


async def test_the_sticky_tier_comes_back_in_the_same_call(store: RedisStore) -> None:
    digest = b"\x01" * 16
    assert (await store.admit([REQUESTS], [1.0], [0.0], [0.0], digest)).sticky_tier is None
    await store.sticky_set(digest, "flagship", 60)
    assert (await store.admit([REQUESTS], [1.0], [0.0], [0.0], digest)).sticky_tier == "flagship"
    assert (await store.admit([], [], [], [], digest)).sticky_tier == "flagship"  # no rate limit applies


async def test_a_redis_that_forgot_the_script_is_sent_it_again(store: RedisStore, server: RedisServer) -> None:
    await store.admit([REQUESTS], [1.0], [0.0], [0.0])
    with redis_client.Redis(port=server.port) as client:
        client.script_flush()
        assert client.script_exists(_sha1(_ADMIT)) == [False]
        assert (await store.admit([REQUESTS], [1.0], [0.0], [0.0])).take.admitted  # NOSCRIPT, then EVAL
        assert client.script_exists(_sha1(_ADMIT)) == [True]  # loaded again: the next calls go by digest
    assert store.up


WINDOW = ("tenant:acme", "day", 1_800_000_000)


def trade(*, seed: float, settled: float, moved: float, want: float = 0.0) -> list[Exchange]:
    return [Exchange(WINDOW, limit=1.0, seed=seed, settled=settled, floor=0.0, want=want, expires_at=1_800_086_400,
                     moved=moved)]


async def test_a_window_lost_with_redis_is_restored_to_what_every_replica_moved_into_it(
    store: RedisStore, server: RedisServer
) -> None:
    # Two replicas, each with a ledger of its own, moved 0.30 and 0.20 into the window.
    await store.exchange("a", trade(seed=0.0, settled=0.30, moved=0.0), 0.25)
    (before,) = await store.exchange("b", trade(seed=0.0, settled=0.20, moved=0.0), 0.25)
    assert before.spent == pytest.approx(0.50)
    with redis_client.Redis(port=server.port) as client:
        client.flushall()  # a Redis that restarted empty
    # Replica a trades first: its seed (its own ledger, 0.30) alone would lose b's 0.20.
    (first,) = await store.exchange("a", trade(seed=0.30, settled=0.01, moved=0.30), 0.25)
    assert first.spent == pytest.approx(0.31)
    (second,) = await store.exchange("b", trade(seed=0.20, settled=0.0, moved=0.20), 0.25)
    assert second.spent == pytest.approx(0.51)
    # From then on spend adds up once: nothing counted twice.
    (third,) = await store.exchange("a", trade(seed=0.30, settled=0.02, moved=0.31, want=0.1), 0.25)
    assert third.spent == pytest.approx(0.53)
    assert third.share == pytest.approx(0.1 + (1.0 - 0.53 - 0.1) * 0.25)


async def test_a_window_seeded_from_a_shared_ledger_is_not_counted_twice(store: RedisStore, server: RedisServer) -> None:
    await store.exchange("a", trade(seed=0.0, settled=0.30, moved=0.0), 0.25)
    await store.exchange("b", trade(seed=0.0, settled=0.20, moved=0.0), 0.25)
    with redis_client.Redis(port=server.port) as client:
        client.flushall()
    # With one ledger for all (PostgreSQL) the seed already holds both replicas' spend.
    await store.exchange("a", trade(seed=0.50, settled=0.0, moved=0.30), 0.25)
    (restored,) = await store.exchange("b", trade(seed=0.50, settled=0.0, moved=0.20), 0.25)
    assert restored.spent == pytest.approx(0.50)


async def test_a_restart_is_noticed_at_once_and_the_shares_it_lost_are_not_spent(server: RedisServer) -> None:
    limit = BudgetLimit(scope="tenant", name="acme", daily_usd=1.0, action="reject")
    stores = [RedisStore(StateConfig(redis_url=server.url)) for _ in range(2)]
    budgets = [Budgets([limit]), Budgets([limit])]
    shared = [SharedBudgets(store, worker=name) for store, name in zip(stores, "ab", strict=True)]
    syncs: list[asyncio.Task[None]] = []
    watchers = [
        asyncio.create_task(store.watch(s.drop_shares, lambda s=s: syncs.append(asyncio.create_task(s.sync()))))
        for store, s in zip(stores, shared, strict=True)
    ]

    async def reserve(i: int, amount: float) -> bool:
        reservation = budgets[i].reserve(tenant="acme", key=None, estimate_usd=amount)
        if not isinstance(reservation, Reservation):  # this replica's own view refuses first
            return False
        if shared[i].hold(reservation, budgets[i]) or await shared[i].acquire(reservation, budgets[i]) is None:
            shared[i].settle(reservation, amount)
            budgets[i].settle(reservation, amount)
            return True
        budgets[i].settle(reservation, 0.0)
        return False

    try:
        await asyncio.sleep(0.1)  # both watchers blocked on Redis
        assert await reserve(1, 0.05) and await reserve(0, 0.05)  # each holds a share; b's is the larger
        (b_window,) = shared[1]._windows.values()
        assert b_window.free > 0.2
        server.stop()
        server.start()  # empty, and faster than any trade: neither replica has called it since
        for _ in range(40):  # each replica drops its old share and moves what it settled into the new Redis
            if all(w.share == 0.0 and w.settled == 0.0 and w.moved > 0.0 for s in shared for w in s._windows.values()):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the replicas did not notice the restart")
        served = 0.1
        for i in (0, 1):  # a spends what the new Redis grants it; then b, whose old share Redis never knew
            while await reserve(i, 0.05):
                served += 0.05
        assert served <= 1.0 + 1e-9
        assert served >= 0.8 - 1e-9  # and the budget is still usable
    finally:
        for task in (*watchers, *syncs):
            task.cancel()
        for store in stores:
            await store.aclose()
