from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from router.retry import RetryBudget, backoff_delay, parse_retry_after


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [(0, 0.25), (1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 8.0), (30, 8.0), (5000, 8.0)],
)
def test_full_jitter_ceiling_doubles_up_to_the_cap(attempt: int, ceiling: float) -> None:
    assert backoff_delay(attempt, rand=lambda: 0.0) == 0.0
    assert backoff_delay(attempt, rand=lambda: 0.5) == pytest.approx(ceiling / 2)
    assert backoff_delay(attempt, rand=lambda: 0.999999) == pytest.approx(ceiling, rel=1e-5)


def test_real_random_delays_stay_in_bounds_and_spread() -> None:
    rng = random.Random(7)
    delays = [d for _ in range(2000) if (d := backoff_delay(3, base=0.1, cap=5.0, rand=rng.random)) is not None]
    assert len(delays) == 2000
    assert all(0.0 <= d < 0.8 for d in delays)
    assert min(delays) < 0.05 and max(delays) > 0.75  # full jitter: the whole range is used


def test_retry_after_replaces_the_jitter() -> None:
    assert backoff_delay(0, retry_after=3.0, rand=lambda: 0.0) == 3.0
    assert backoff_delay(0, retry_after=8.0) == 8.0  # exactly the cap is still waited for
    assert backoff_delay(0, retry_after=0.0) == 0.0


def test_retry_after_beyond_the_cap_means_fall_back() -> None:
    assert backoff_delay(0, retry_after=8.01) is None
    assert backoff_delay(2, cap=30.0, retry_after=20.0) == 20.0


def test_a_delay_that_would_use_up_the_deadline_means_fall_back() -> None:
    assert backoff_delay(4, rand=lambda: 0.5, remaining=2.5) == 2.0
    assert backoff_delay(4, rand=lambda: 0.5, remaining=2.0) is None
    assert backoff_delay(0, retry_after=1.0, remaining=0.5) is None
    assert backoff_delay(0, retry_after=1.0, remaining=1.5) == 1.0


def test_negative_attempt_is_a_bug() -> None:
    with pytest.raises(ValueError):
        backoff_delay(-1)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        ("120", 120.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        (None, None),
        ("", None),
        ("-5", None),
        ("soon", None),
        ("inf", None),
        ("nan", None),
        ("1e3", None),
        ("Wed, 32 Oct 2015 07:28:00 GMT", None),
    ],
)
def test_parse_seconds_and_garbage(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=0.0) == expected


def test_parse_http_date() -> None:
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC).timestamp()
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=now) == 30.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 -0000", now=now) == 30.0
    assert parse_retry_after("Wed, 21 Oct 2015 09:28:30 +0200", now=now) == 30.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now=now) == 0.0  # already past


def test_parse_http_date_defaults_to_the_wall_clock() -> None:
    soon = format_datetime(datetime.fromtimestamp(datetime.now(UTC).timestamp() + 3600, UTC), usegmt=True)
    assert 3590 < parse_retry_after(soon) <= 3600  # type: ignore[operator]


def test_budget_floor_allows_a_burst_when_idle_then_denies() -> None:
    budget = RetryBudget(ratio=0.2, min_per_second=1.0, window_seconds=10.0, clock=Clock())
    granted = sum(budget.try_spend() for _ in range(50))
    assert granted == 10  # min_per_second * window_seconds
    assert not budget.try_spend()


def test_budget_denies_retries_beyond_the_ratio() -> None:
    budget = RetryBudget(ratio=0.2, min_per_second=0.0, window_seconds=10.0, clock=Clock())
    for _ in range(100):
        budget.record_request()
    granted = sum(budget.try_spend() for _ in range(100))
    assert granted == 20
    for _ in range(10):
        budget.record_request()
    assert sum(budget.try_spend() for _ in range(100)) == 2


def test_budget_steady_state_retry_rate_is_ratio_of_traffic_plus_floor() -> None:
    # 50 requests/s, every one wanting a retry (a full outage), for 60 s in 10 ms steps.
    clock = Clock()
    budget = RetryBudget(ratio=0.2, min_per_second=1.0, window_seconds=10.0, clock=clock)
    granted_last_30s = 0
    for step in range(6000):
        clock.now += 0.01
        if step % 2 == 0:
            budget.record_request()
            granted = budget.try_spend()
            if step >= 3000:
                granted_last_30s += granted
    assert granted_last_30s == pytest.approx((0.2 * 50 + 1.0) * 30, rel=0.03)


def test_budget_recovers_as_retries_decay() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.0, min_per_second=1.0, window_seconds=10.0, clock=clock)
    while budget.try_spend():
        pass
    assert not budget.try_spend()
    clock.now += 1.0  # 10 * e^(-0.1) = 9.05 retries still count: no room yet
    assert not budget.try_spend()
    clock.now += 0.1  # 10 * e^(-0.11) = 8.96: room for one
    assert budget.try_spend()
    assert not budget.try_spend()
    clock.now += 60.0
    assert sum(budget.try_spend() for _ in range(20)) == 9  # 0.02 of the old retries still counts


def test_budget_snapshot() -> None:
    budget = RetryBudget(ratio=0.5, min_per_second=0.0, clock=Clock())
    for _ in range(10):
        budget.record_request()
    assert budget.try_spend()
    assert budget.snapshot() == {"recent_requests": 10.0, "recent_retries": 1.0, "retries_available": 4}


@pytest.mark.parametrize("kwargs", [{"ratio": -0.1}, {"min_per_second": -1.0}, {"window_seconds": 0.0}])
def test_budget_rejects_nonsense_settings(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        RetryBudget(**kwargs)
