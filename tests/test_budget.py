from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from router.budget import BudgetLimit, Budgets, Exceeded, Reservation
from router.ledger import Ledger, LedgerRow


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def granted(result: Reservation | Exceeded) -> Reservation:
    assert isinstance(result, Reservation), str(result)
    return result


def refused(result: Reservation | Exceeded) -> Exceeded:
    assert isinstance(result, Exceeded), repr(result)
    return result


def test_concurrent_reservations_cannot_overrun_together() -> None:
    budgets = Budgets([BudgetLimit("global", daily_usd=1.0)], clock=Clock(at(2024, 5, 1, 12)))
    held = [granted(budgets.reserve(tenant=None, key=None, estimate_usd=0.1)) for _ in range(10)]
    exceeded = refused(budgets.reserve(tenant=None, key=None, estimate_usd=0.1))
    assert (exceeded.spent_usd, exceeded.reserved_usd, exceeded.remaining_usd) == pytest.approx((0.0, 1.0, 0.0))
    budgets.settle(held[0], 0.02)  # cheaper than estimated: the difference is free again
    granted(budgets.reserve(tenant=None, key=None, estimate_usd=0.08))
    refused(budgets.reserve(tenant=None, key=None, estimate_usd=0.01))


async def test_concurrent_requests_on_the_event_loop() -> None:
    budgets = Budgets([BudgetLimit("tenant", "acme", daily_usd=1.0, action="reject")], clock=Clock(at(2024, 5, 1, 12)))
    outcomes: list[bool] = []

    async def request() -> None:
        result = budgets.reserve(tenant="acme", key=None, estimate_usd=0.05)
        outcomes.append(isinstance(result, Reservation))
        await asyncio.sleep(0)  # the upstream call: every reservation is taken before any settles
        if isinstance(result, Reservation):
            budgets.settle(result, 0.05)

    await asyncio.gather(*(request() for _ in range(100)))
    assert outcomes.count(True) == 20
    assert budgets.remaining() == {"tenant:acme": 0.0}
    assert budgets.snapshot(tenant="acme", key=None)[0]["spent_usd"] == pytest.approx(1.0)


def test_settle_counts_exactly_once() -> None:
    budgets = Budgets([BudgetLimit("global", daily_usd=1.0)], clock=Clock(at(2024, 5, 1, 12)))
    first = granted(budgets.reserve(tenant=None, key=None, estimate_usd=0.4))
    second = granted(budgets.reserve(tenant=None, key=None, estimate_usd=0.4))
    budgets.settle(first, 0.3)
    budgets.settle(first, 0.3)  # e.g. a retried cleanup path
    assert first.settled
    assert budgets.remaining() == {"global": pytest.approx(1.0 - 0.3 - 0.4)}  # second's hold is intact
    budgets.settle(second, 0.0)  # nothing produced: nothing billed
    assert budgets.remaining() == {"global": pytest.approx(0.7)}


def test_actual_above_the_estimate_is_charged_and_then_blocks() -> None:
    budgets = Budgets([BudgetLimit("global", daily_usd=1.0)], clock=Clock(at(2024, 5, 1, 12)))
    budgets.settle(granted(budgets.reserve(tenant=None, key=None, estimate_usd=0.5)), 1.2)
    assert budgets.remaining() == {"global": 0.0}
    refused(budgets.reserve(tenant=None, key=None, estimate_usd=0.001))
    free = granted(budgets.reserve(tenant=None, key=None, estimate_usd=0.0))  # a self-hosted backend
    budgets.settle(free, 0.0)


def test_exact_fits_are_not_refused_by_float_rounding() -> None:
    budgets = Budgets([BudgetLimit("global", daily_usd=0.3)], clock=Clock(at(2024, 5, 1, 12)))
    for _ in range(3):
        granted(budgets.reserve(tenant=None, key=None, estimate_usd=0.1))  # 0.1+0.1+0.1 > 0.3 in floats


def test_daily_rollover_at_utc_midnight_keeps_the_month() -> None:
    clock = Clock(at(2024, 5, 1, 23, 59, 59))
    budgets = Budgets([BudgetLimit("global", daily_usd=1.0, monthly_usd=1.5)], clock=clock)
    budgets.settle(granted(budgets.reserve(tenant=None, key=None, estimate_usd=1.0)), 1.0)
    exceeded = refused(budgets.reserve(tenant=None, key=None, estimate_usd=0.1))
    assert (exceeded.period, exceeded.resets_at) == ("day", at(2024, 5, 2))
    clock.now = at(2024, 5, 2)
    budgets.settle(granted(budgets.reserve(tenant=None, key=None, estimate_usd=0.5)), 0.5)
    exceeded = refused(budgets.reserve(tenant=None, key=None, estimate_usd=0.1))
    assert (exceeded.period, exceeded.spent_usd, exceeded.resets_at) == ("month", 1.5, at(2024, 6, 1))


@pytest.mark.parametrize(
    ("last_day", "first_of_next"),
    [((2024, 2, 29), (2024, 3, 1)), ((2024, 12, 31), (2025, 1, 1)), ((2023, 4, 30), (2023, 5, 1))],
)
def test_monthly_rollover(last_day: tuple[int, int, int], first_of_next: tuple[int, int, int]) -> None:
    clock = Clock(at(*last_day, 18))
    budgets = Budgets([BudgetLimit("global", monthly_usd=10.0)], clock=clock)
    assert budgets.period_start("month") == at(*last_day[:2], 1)
    budgets.settle(granted(budgets.reserve(tenant=None, key=None, estimate_usd=9.0)), 9.0)
    assert refused(budgets.reserve(tenant=None, key=None, estimate_usd=2.0)).resets_at == at(*first_of_next)
    clock.now = at(*first_of_next) - 0.001
    refused(budgets.reserve(tenant=None, key=None, estimate_usd=2.0))
    clock.now = at(*first_of_next)
    granted(budgets.reserve(tenant=None, key=None, estimate_usd=2.0))
    assert budgets.period_start("month") == at(*first_of_next)
    assert budgets.period_start("day") == at(*first_of_next)


def test_a_request_in_flight_across_midnight_is_charged_to_the_new_day() -> None:
    clock = Clock(at(2024, 5, 1, 23, 59, 50))
    budgets = Budgets([BudgetLimit("global", daily_usd=1.0)], clock=clock)
    late = granted(budgets.reserve(tenant=None, key=None, estimate_usd=0.6))
    clock.now = at(2024, 5, 2, 0, 0, 5)
    refused(budgets.reserve(tenant=None, key=None, estimate_usd=0.6))  # its hold still counts after the rollover
    budgets.settle(late, 0.5)
    assert budgets.remaining() == {"global": pytest.approx(0.5)}


def test_clock_stepping_back_does_not_reset_spend() -> None:
    clock = Clock(at(2024, 5, 2, 0, 0, 1))
    budgets = Budgets([BudgetLimit("global", daily_usd=1.0)], clock=clock)
    budgets.settle(granted(budgets.reserve(tenant=None, key=None, estimate_usd=1.0)), 1.0)
    clock.now = at(2024, 5, 1, 23, 59, 59)  # NTP correction
    refused(budgets.reserve(tenant=None, key=None, estimate_usd=0.1))
    clock.now = at(2024, 5, 2, 0, 0, 2)
    refused(budgets.reserve(tenant=None, key=None, estimate_usd=0.1))


def test_tenant_key_and_global_scopes() -> None:
    budgets = Budgets(
        [
            BudgetLimit("global", daily_usd=10.0),
            BudgetLimit("tenant", "acme", daily_usd=2.0),
            BudgetLimit("key", "ci", daily_usd=1.0),
        ],
        clock=Clock(at(2024, 5, 1, 12)),
    )
    budgets.settle(granted(budgets.reserve(tenant="acme", key="ci", estimate_usd=1.0)), 1.0)
    assert refused(budgets.reserve(tenant="acme", key="ci", estimate_usd=0.5)).label == "key:ci"
    budgets.settle(granted(budgets.reserve(tenant="acme", key="dev", estimate_usd=0.5)), 0.5)  # same tenant, other key
    assert refused(budgets.reserve(tenant="acme", key="dev", estimate_usd=0.6)).label == "tenant:acme"
    budgets.settle(granted(budgets.reserve(tenant="beta", key="ci2", estimate_usd=8.0)), 8.0)  # no tenant limit
    assert refused(budgets.reserve(tenant="beta", key=None, estimate_usd=0.6)).label == "global"
    assert budgets.remaining() == {"global": 0.5, "tenant:acme": 0.5, "key:ci": 0.0}


def test_a_nameless_limit_applies_to_each_tenant_separately() -> None:
    budgets = Budgets(
        [BudgetLimit("tenant", daily_usd=1.0), BudgetLimit("tenant", "big", daily_usd=100.0)],
        clock=Clock(at(2024, 5, 1, 12)),
    )
    budgets.settle(granted(budgets.reserve(tenant="a", key=None, estimate_usd=1.0)), 1.0)
    refused(budgets.reserve(tenant="a", key=None, estimate_usd=0.1))
    granted(budgets.reserve(tenant="b", key=None, estimate_usd=1.0))
    granted(budgets.reserve(tenant="big", key=None, estimate_usd=50.0))  # its own limit replaces the default
    granted(budgets.reserve(tenant=None, key="anything", estimate_usd=500.0))  # no tenant: no tenant limit
    assert budgets.remaining() == {"tenant:big": 50.0, "tenant:a": 0.0, "tenant:b": 0.0}


def test_reject_wins_over_downgrade_and_allow_only_records() -> None:
    clock = Clock(at(2024, 5, 1, 12))
    budgets = Budgets(
        [
            BudgetLimit("global", daily_usd=1.0, action="allow"),
            BudgetLimit("tenant", "acme", daily_usd=1.0, action="downgrade"),
            BudgetLimit("key", "ci", monthly_usd=1.0, action="reject"),
        ],
        clock=clock,
    )
    budgets.settle(granted(budgets.reserve(tenant="acme", key="ci", estimate_usd=0.9)), 0.9)
    exceeded = refused(budgets.reserve(tenant="acme", key="ci", estimate_usd=0.2))
    assert (exceeded.label, exceeded.period, exceeded.action) == ("key:ci", "month", "reject")
    exceeded = refused(budgets.reserve(tenant="acme", key="other", estimate_usd=0.2))
    assert (exceeded.label, exceeded.action) == ("tenant:acme", "downgrade")
    served = granted(budgets.reserve(tenant="beta", key=None, estimate_usd=0.2))
    assert [(e.label, e.action) for e in served.over] == [("global", "allow")]
    budgets.settle(served, 0.2)
    assert budgets.snapshot(tenant="beta", key=None)[0]["spent_usd"] == pytest.approx(1.1)


def test_exceeded_explains_itself() -> None:
    budgets = Budgets([BudgetLimit("tenant", "acme", daily_usd=5.0, action="reject")], clock=Clock(at(2024, 5, 1, 12)))
    budgets.settle(granted(budgets.reserve(tenant="acme", key=None, estimate_usd=4.0)), 4.0)
    granted(budgets.reserve(tenant="acme", key=None, estimate_usd=0.5))
    exceeded = refused(budgets.reserve(tenant="acme", key=None, estimate_usd=0.75))
    assert (exceeded.scope, exceeded.name, exceeded.label) == ("tenant", "acme", "tenant:acme")
    assert str(exceeded) == (
        "Daily budget of tenant 'acme' exceeded: the limit is $5.00, $4.50 is spent or reserved, "
        "$0.50 remains and this request needs about $0.7500. It resets at 2024-05-02 00:00 UTC."
    )
    budgets = Budgets([BudgetLimit("global", monthly_usd=1.0)], clock=Clock(at(2024, 5, 1, 12)))
    message = str(refused(budgets.reserve(tenant=None, key=None, estimate_usd=2.0)))
    assert message.startswith("Monthly budget of the gateway exceeded: the limit is $1.00, $0.00 is spent or reserved")


def test_load_restores_spend_and_keeps_holds() -> None:
    clock = Clock(at(2024, 5, 10, 12))
    budgets = Budgets(
        [
            BudgetLimit("global", daily_usd=100.0, monthly_usd=1000.0),
            BudgetLimit("tenant", "acme", daily_usd=10.0),
            BudgetLimit("key", daily_usd=5.0, monthly_usd=20.0),
        ],
        clock=clock,
    )
    hold = granted(budgets.reserve(tenant="acme", key=None, estimate_usd=1.0))
    budgets.load(
        {("global", None): 30.0, ("tenant", "acme"): 8.0, ("tenant", "unlimited"): 3.0, ("key", "ci"): 4.0},
        {("global", None): 400.0, ("tenant", "acme"): 50.0, ("key", "ci"): 4.0, ("key", "old"): 19.5},
    )
    assert budgets.remaining() == {"global": 69.0, "tenant:acme": 1.0, "key:ci": 1.0, "key:old": 0.5}
    refused(budgets.reserve(tenant="acme", key=None, estimate_usd=1.5))
    budgets.settle(hold, 1.0)
    assert budgets.remaining()["tenant:acme"] == 1.0


def test_budgets_loaded_from_the_ledger_after_a_restart() -> None:
    clock = Clock(at(2024, 5, 10, 12))
    ledger = Ledger(":memory:")
    history = [
        (at(2024, 5, 10, 1), "acme", 2.0),
        (at(2024, 5, 9, 23), "acme", 3.0),
        (at(2024, 4, 30, 23), "acme", 50.0),
        (at(2024, 5, 10, 2), "beta", 1.0),
    ]
    for i, (ts, tenant, cost) in enumerate(history):
        ledger.record(
            LedgerRow(ts, f"r{i}", tenant, None, "flagship", "flagship", "gpt-x", 10, 10, cost, False, 200, 1.0, 1, None)
        )
    budgets = Budgets([BudgetLimit("tenant", daily_usd=4.0, monthly_usd=6.0)], clock=clock)
    budgets.load(ledger.totals(budgets.period_start("day")), ledger.totals(budgets.period_start("month")))
    ledger.close()
    assert budgets.remaining() == {"tenant:acme": 1.0, "tenant:beta": 3.0}
    assert budgets.snapshot(tenant="acme", key=None) == [
        {"scope": "tenant:acme", "period": "day", "limit_usd": 4.0, "spent_usd": 2.0, "reserved_usd": 0.0,
         "remaining_usd": 2.0, "resets_at": at(2024, 5, 11), "action": "downgrade"},
        {"scope": "tenant:acme", "period": "month", "limit_usd": 6.0, "spent_usd": 5.0, "reserved_usd": 0.0,
         "remaining_usd": 1.0, "resets_at": at(2024, 6, 1), "action": "downgrade"},
    ]  # fmt: skip


def test_carry_over_keeps_spend_and_in_flight_holds_across_a_reload() -> None:
    clock = Clock(at(2024, 5, 1, 12))
    old = Budgets(
        [
            BudgetLimit("global", daily_usd=10.0),
            BudgetLimit("tenant", "acme", daily_usd=2.0),
            BudgetLimit("key", "gone", daily_usd=1.0),
        ],
        clock=clock,
    )
    old.settle(granted(old.reserve(tenant="acme", key="gone", estimate_usd=1.0)), 1.0)
    in_flight = granted(old.reserve(tenant="acme", key=None, estimate_usd=0.5))
    new = Budgets(
        [BudgetLimit("global", daily_usd=20.0), BudgetLimit("tenant", "acme", daily_usd=3.0, action="reject")], clock=clock
    )
    new.carry_over(old)
    assert new.remaining() == {"global": 18.5, "tenant:acme": 1.5}  # the new limits, the old spend and hold
    assert refused(new.reserve(tenant="acme", key=None, estimate_usd=1.6)).action == "reject"
    new.settle(in_flight, 0.25)  # reserved before the reload, settled after it
    assert new.remaining() == {"global": 18.75, "tenant:acme": 1.75}


def test_no_limits_means_everything_is_granted() -> None:
    budgets = Budgets([], clock=Clock(at(2024, 5, 1)))
    reservation = granted(budgets.reserve(tenant="acme", key="ci", estimate_usd=1e6))
    budgets.settle(reservation, 1e6)
    assert budgets.remaining() == {}
    assert budgets.snapshot(tenant="acme", key="ci") == []
    assert repr(reservation) == "Reservation($1000000.0000 in [], settled)"


@pytest.mark.parametrize(
    ("limit", "message"),
    [
        (dict(scope="global", name="x", daily_usd=1.0), "global budget has no name"),
        (dict(scope="tenant", name="acme"), "tenant:acme: give daily_usd, monthly_usd or both"),
        (dict(scope="key", daily_usd=-1.0), "key:\\*: amounts must be finite and >= 0"),
        (dict(scope="global", monthly_usd=float("nan")), "finite"),
    ],
)
def test_invalid_limits(limit: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BudgetLimit(**limit)


def test_duplicate_limits() -> None:
    with pytest.raises(ValueError, match="budget tenant:acme is given twice"):
        Budgets([BudgetLimit("tenant", "acme", daily_usd=1.0), BudgetLimit("tenant", "acme", monthly_usd=9.0)])
