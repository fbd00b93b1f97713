"""Rate-limit leases (router.shared.leases): what a replica may admit without asking Redis. Pure, no I/O."""

from __future__ import annotations

import pytest

from router.ratelimit import Bucket, Take
from router.shared.leases import Leases

REQUESTS = Bucket("tenant:acme:requests", "tenant:acme", "requests", 6000)
TOKENS = Bucket("tenant:acme:tokens", "tenant:acme", "tokens", 1_000_000)


@pytest.mark.parametrize(
    ("buckets", "costs", "sizes"),
    [
        ((REQUESTS, TOKENS), (1.0, 500.0), [60.0, 10_000.0]),  # 1% of each minute
        ((REQUESTS, TOKENS), (1.0, 20_000.0), [0.0, 0.0]),  # would not cover one more such request: none
        ((Bucket("k:requests", "k", "requests", 60),), (1.0,), [0.0]),  # 0.6 of a request: none
        ((), (), []),
    ],
)
def test_a_lease_is_asked_only_where_it_covers_another_request(
    buckets: tuple[Bucket, ...], costs: tuple[float, ...], sizes: list[float]
) -> None:
    assert Leases(0.01).sizes(buckets, costs) == sizes


def test_requests_are_admitted_from_the_leases_all_buckets_or_none() -> None:
    leases = Leases(0.01)
    assert leases.take((REQUESTS, TOKENS), (1.0, 500.0)) is None  # nothing held yet
    granted = leases.grant((REQUESTS, TOKENS), [60.0, 10_000.0], Take(True, 0.0, ((5000.0, 10.0), (900_000.0, 6.0))))
    assert granted.remaining == ((5060.0, 10.0), (910_000.0, 6.0))  # what this replica holds counts as remaining
    for _ in range(20):
        take = leases.take((REQUESTS, TOKENS), (1.0, 500.0))
        assert take is not None and take.admitted
    assert take.remaining == ((5040.0, 10.0), (900_000.0, 6.0))
    assert leases.take((REQUESTS, TOKENS), (1.0, 500.0)) is None  # the tokens' lease is used up...
    assert leases.take((REQUESTS,), (1.0,)) is not None  # ...while the requests' lease still admits alone
    assert sorted(leases.give_back(), key=lambda item: item[0].key) == [(REQUESTS, -39.0)]
    assert leases.give_back() == []  # given back once, then held no more
    assert leases.take((REQUESTS,), (1.0,)) is None
