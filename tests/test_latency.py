from __future__ import annotations

import pytest

from router.latency import BackendLoad


class Clock:
    def __init__(self, now: float = 50.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_nothing_observed_yet() -> None:
    load = BackendLoad(clock=Clock())
    assert load.ttft_ms is None and load.total_ms is None
    assert load.snapshot() == {"in_flight": 0, "ttft_ms": None, "total_ms": None}


def test_in_flight_counts_and_never_goes_negative() -> None:
    load = BackendLoad(clock=Clock())
    load.started()
    load.started()
    assert load.in_flight == 2
    load.finished()
    load.finished()
    load.finished()
    assert load.in_flight == 0
    load.started()
    assert load.in_flight == 1


def test_first_observation_is_the_average() -> None:
    load = BackendLoad(clock=Clock())
    load.observe(ttft=0.2, total=1.5)
    assert load.ttft_ms == pytest.approx(200.0)
    assert load.total_ms == pytest.approx(1500.0)


def test_observations_at_the_same_instant_count_equally() -> None:
    load = BackendLoad(clock=Clock())
    for total in (1.0, 2.0, 3.0, 6.0):
        load.observe(ttft=None, total=total)
    assert load.total_ms == pytest.approx(3000.0)
    assert load.ttft_ms is None


def test_old_observations_weigh_half_after_one_half_life() -> None:
    clock = Clock()
    load = BackendLoad(half_life_seconds=10.0, clock=clock)
    load.observe(ttft=0.1, total=1.0)
    clock.now += 10.0
    load.observe(ttft=0.4, total=4.0)
    # weights 0.5 and 1: (0.5*1 + 4) / 1.5
    assert load.total_ms == pytest.approx(3000.0)
    assert load.ttft_ms == pytest.approx(300.0)


def test_decay_follows_time_not_the_number_of_observations() -> None:
    clock = Clock()
    trickle = BackendLoad(half_life_seconds=10.0, clock=clock)
    burst = BackendLoad(half_life_seconds=10.0, clock=clock)
    for load in (trickle, burst):
        load.observe(ttft=None, total=1.0)
    clock.now += 10.0
    # The same new evidence, as one observation or as a burst of identical ones 1 ms apart.
    trickle.observe(ttft=None, total=3.0)
    for _ in range(10):
        burst.observe(ttft=None, total=3.0)
        clock.now += 0.001
    assert trickle.total_ms == pytest.approx((0.5 * 1 + 3) / 1.5 * 1000)
    assert burst.total_ms == pytest.approx((0.5 * 1 + 10 * 3) / 10.5 * 1000, rel=1e-3)


def test_a_slow_backend_that_recovers_is_soon_seen_as_fast() -> None:
    clock = Clock(0.0)
    load = BackendLoad(half_life_seconds=30.0, clock=clock)
    samples: list[tuple[float, float]] = []  # (time, ttft)
    for _ in range(100):
        load.observe(ttft=5.0, total=10.0)
        samples.append((clock.now, 5.0))
        clock.now += 0.1
    for _ in range(100):  # then 5 minutes (ten half-lives) of fast requests
        clock.now += 3.0
        load.observe(ttft=0.1, total=1.0)
        samples.append((clock.now, 0.1))
    # By definition: each sample weighs 2^(-age / half-life).
    weights = [(2 ** (-(clock.now - t) / 30.0), v) for t, v in samples]
    expected = sum(w * v for w, v in weights) / sum(w for w, _ in weights)
    assert load.ttft_ms == pytest.approx(expected * 1000)
    assert expected * 1000 < 150.0  # from 5000 ms


def test_averages_hold_between_observations() -> None:
    clock = Clock()
    load = BackendLoad(clock=clock)
    load.observe(ttft=0.3, total=0.9)
    clock.now += 3600.0
    assert load.snapshot() == {"in_flight": 0, "ttft_ms": 300.0, "total_ms": 900.0}


def test_ttft_without_fresh_samples_is_eventually_forgotten() -> None:
    clock = Clock()
    load = BackendLoad(half_life_seconds=1.0, clock=clock)
    load.observe(ttft=0.3, total=0.9)
    clock.now += 10.0
    load.observe(ttft=None, total=0.5)
    assert load.ttft_ms == pytest.approx(300.0)  # old, but still the best we know
    clock.now += 40.0
    load.observe(ttft=None, total=0.5)
    assert load.ttft_ms is None
    assert load.total_ms == pytest.approx(500.0)


def test_rejects_nonsense_half_life() -> None:
    with pytest.raises(ValueError):
        BackendLoad(half_life_seconds=0.0)
