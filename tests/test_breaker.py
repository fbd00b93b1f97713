from __future__ import annotations

import pytest

from router.breaker import BreakerState, CircuitBreaker


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(clock: Clock, changes: list[tuple[BreakerState, BreakerState]] | None = None, **kwargs: float) -> CircuitBreaker:
    options: dict = {"consecutive_failures": 3, "window_seconds": 10.0, "min_requests": 10, "cooldown_seconds": 5.0, **kwargs}
    return CircuitBreaker(clock=clock, on_change=None if changes is None else lambda a, b: changes.append((a, b)), **options)


def fail(breaker: CircuitBreaker, n: int) -> None:
    for _ in range(n):
        assert breaker.allow()
        breaker.record_failure()


def succeed(breaker: CircuitBreaker, n: int) -> None:
    for _ in range(n):
        assert breaker.allow()
        breaker.record_success()


def test_starts_closed_and_admits_everything() -> None:
    breaker = make(Clock())
    assert breaker.state == "closed"
    assert all(breaker.allow() for _ in range(100))


def test_opens_on_consecutive_failures_and_refuses_until_the_cooldown() -> None:
    clock, changes = Clock(), list[tuple[BreakerState, BreakerState]]()
    breaker = make(clock, changes)
    fail(breaker, 2)
    assert breaker.state == "closed"
    fail(breaker, 1)
    assert breaker.state == "open"
    assert changes == [("closed", "open")]
    assert not breaker.allow()
    clock.now += 4.999
    assert not breaker.allow()
    assert breaker.snapshot()["half_open_in_seconds"] == pytest.approx(0.001)


def test_a_success_resets_the_consecutive_count() -> None:
    breaker = make(Clock(), min_requests=1000)
    for _ in range(10):
        fail(breaker, 2)
        succeed(breaker, 1)
    assert breaker.state == "closed"
    assert breaker.snapshot()["consecutive_failures"] == 0


def test_opens_on_the_windowed_failure_rate() -> None:
    # Failures never come 3 in a row, but 50% of the last 10 requests failed.
    clock = Clock()
    breaker = make(clock, failure_rate=0.5)
    for _ in range(4):
        fail(breaker, 1)
        succeed(breaker, 1)
    fail(breaker, 1)
    assert breaker.state == "closed"  # 5 of 9: below min_requests
    succeed(breaker, 1)
    assert breaker.state == "closed"  # successes never open it
    fail(breaker, 1)  # 6 of 11
    assert breaker.state == "open"


def test_rate_below_the_threshold_stays_closed() -> None:
    breaker = make(Clock(), failure_rate=0.5)
    for _ in range(50):
        fail(breaker, 1)
        succeed(breaker, 2)
    assert breaker.state == "closed"
    snap = breaker.snapshot()
    assert (snap["window_requests"], snap["window_failures"]) == (150, 50)


def test_old_requests_leave_the_window() -> None:
    clock = Clock()
    breaker = make(clock, failure_rate=0.5)
    for _ in range(4):  # 4 failures among 8 requests...
        fail(breaker, 1)
        succeed(breaker, 1)
    clock.now += 10.0  # ...all older than the window
    assert breaker.snapshot()["window_requests"] == 0
    fail(breaker, 1)
    succeed(breaker, 1)
    fail(breaker, 1)  # 6 of 11 if the old ones still counted
    assert breaker.state == "closed"
    assert breaker.snapshot()["window_requests"] == 3


def test_window_slides_bucket_by_bucket() -> None:
    clock = Clock(0.0)
    breaker = make(clock)  # 10 buckets of 1 s

    def window() -> tuple[int, int]:
        snap = breaker.snapshot()
        return snap["window_requests"], snap["window_failures"]

    fail(breaker, 2)
    succeed(breaker, 1)
    clock.now = 5.5
    succeed(breaker, 1)
    fail(breaker, 1)
    clock.now = 9.9
    assert window() == (5, 3)
    clock.now = 10.0  # the bucket of t=0 falls out
    assert window() == (2, 1)
    clock.now = 15.5
    assert window() == (0, 0)


def test_half_open_admits_only_the_configured_probes() -> None:
    clock, changes = Clock(), list[tuple[BreakerState, BreakerState]]()
    breaker = make(clock, changes, half_open_probes=2)
    fail(breaker, 3)
    clock.now += 5.0
    assert breaker.state == "half_open"
    assert breaker.allow()
    assert breaker.allow()
    assert not breaker.allow()
    assert breaker.snapshot()["probes_in_flight"] == 2
    breaker.release()  # a probe whose client went away gives its slot back
    assert breaker.allow()
    assert not breaker.allow()
    assert changes == [("closed", "open"), ("open", "half_open")]


def test_allow_moves_open_to_half_open_without_reading_state() -> None:
    clock = Clock()
    breaker = make(clock)
    fail(breaker, 3)
    clock.now += 5.0
    assert breaker.allow()
    assert not breaker.allow()
    assert breaker.state == "half_open"


def test_probe_success_closes_with_a_clean_slate() -> None:
    clock, changes = Clock(), list[tuple[BreakerState, BreakerState]]()
    breaker = make(clock, changes)
    fail(breaker, 3)
    clock.now += 5.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed"
    assert changes[-1] == ("half_open", "closed")
    snap = breaker.snapshot()
    assert (snap["consecutive_failures"], snap["window_requests"], snap["window_failures"]) == (0, 0, 0)
    fail(breaker, 2)
    assert breaker.state == "closed"  # the failures that opened it no longer count


def test_probe_failure_reopens_with_a_new_cooldown() -> None:
    clock, changes = Clock(), list[tuple[BreakerState, BreakerState]]()
    breaker = make(clock, changes)
    fail(breaker, 3)
    clock.now += 7.0  # well past the first cool-down
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open"
    assert not breaker.allow()
    clock.now += 4.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.allow()
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "open"), ("open", "half_open")]


def test_results_that_arrive_while_open_are_ignored() -> None:
    clock = Clock()
    breaker = make(clock)
    admitted = [breaker.allow() for _ in range(3)]
    assert all(admitted)
    fail(breaker, 3)
    breaker.record_success()  # stragglers admitted before it opened
    breaker.record_failure()
    assert breaker.state == "open"
    assert breaker.snapshot()["half_open_in_seconds"] == pytest.approx(5.0)  # cool-down not extended


def test_release_outside_half_open_changes_nothing() -> None:
    breaker = make(Clock())
    breaker.release()
    fail(breaker, 2)
    breaker.release()
    assert breaker.snapshot()["consecutive_failures"] == 2
    assert breaker.state == "closed"


def test_zero_cooldown_goes_straight_to_half_open() -> None:
    breaker = make(Clock(), cooldown_seconds=0.0)
    fail(breaker, 3)
    assert breaker.state == "half_open"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"consecutive_failures": 0},
        {"half_open_probes": 0},
        {"min_requests": 0},
        {"failure_rate": 0.0},
        {"failure_rate": 1.5},
        {"window_seconds": 0.0},
        {"cooldown_seconds": -1.0},
    ],
)
def test_rejects_nonsense_settings(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(**kwargs)


def test_snapshot_and_repr() -> None:
    clock = Clock()
    breaker = make(clock)
    fail(breaker, 1)
    succeed(breaker, 1)
    fail(breaker, 1)
    assert breaker.snapshot() == {
        "state": "closed",
        "consecutive_failures": 1,
        "window_requests": 3,
        "window_failures": 2,
        "half_open_in_seconds": 0.0,
        "probes_in_flight": 0,
    }
    assert repr(breaker) == "CircuitBreaker(closed, consecutive_failures=1)"
