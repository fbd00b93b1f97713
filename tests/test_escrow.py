"""Budget escrow between processes (router.shared): two workers' ``SharedBudgets`` over one real SQLite store."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.budget import BudgetLimit, Budgets, Exceeded, Reservation
from router.shared import StateUnavailableError
from router.shared import sqlite as sqlite_store
from router.shared.escrow import SharedBudgets
from router.shared.sqlite import SqliteStore

LIMIT = BudgetLimit(scope="tenant", name="acme", daily_usd=1.0, action="reject")


class Worker:
    """One process: its own ``Budgets`` and its side of the escrow."""

    def __init__(self, path: Path, name: str, on_failure: str = "open") -> None:
        self.budgets = Budgets([LIMIT])
        self.shared = SharedBudgets(SqliteStore(path), worker=name, on_failure=on_failure)  # type: ignore[arg-type]

    async def reserve(self, amount: float) -> Reservation | Exceeded:
        reservation = self.budgets.reserve(tenant="acme", key=None, estimate_usd=amount)
        if not isinstance(reservation, Reservation):  # this process's own view refuses first
            return reservation
        if self.shared.hold(reservation, self.budgets):
            return reservation
        exceeded = await self.shared.acquire(reservation, self.budgets)
        if exceeded is not None:
            self.budgets.settle(reservation, 0.0)
            return exceeded
        return reservation

    def settle(self, reservation: Reservation, actual: float) -> None:
        self.budgets.settle(reservation, actual)
        self.shared.settle(reservation, actual)


async def test_two_workers_together_never_hold_more_than_the_limit(tmp_path: Path) -> None:
    a, b = Worker(tmp_path / "l.sqlite3", "a"), Worker(tmp_path / "l.sqlite3", "b")

    async def hammer() -> int:
        held = 0
        for _ in range(30):  # alternating, as a load balancer would send them
            for worker in (a, b):
                held += isinstance(await worker.reserve(0.1), Reservation)
        return held

    first = await hammer()
    # Each alone would have taken 10. Near the limit a spare part of one worker's share (less than a
    # request) may be stranded until its once-a-second hand-back:
    assert 9 <= first <= 10
    for worker in (a, b):
        await worker.shared.sync()
    assert first + await hammer() == 10
    refused = await a.reserve(0.1)
    assert isinstance(refused, Exceeded) and refused.action == "reject" and refused.limit_usd == 1.0


async def test_shares_are_handed_back_and_settled_spend_counts(tmp_path: Path) -> None:
    a, b = Worker(tmp_path / "l.sqlite3", "a"), Worker(tmp_path / "l.sqlite3", "b")
    first = await a.reserve(0.2)
    assert isinstance(first, Reservation)
    a.settle(first, 0.5)  # cost more than estimated: the gap is the only possible overrun
    await a.shared.sync()  # moves the $0.50 into the window and hands a's spare share back
    taken = []
    while isinstance(result := await b.reserve(0.1), Reservation):
        taken.append(result)
    assert len(taken) == 5  # $1.00 - $0.50 spent


async def test_a_worker_that_stopped_trading_loses_its_share(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = Worker(tmp_path / "l.sqlite3", "a"), Worker(tmp_path / "l.sqlite3", "b")
    assert isinstance(await a.reserve(0.5), Reservation)  # a is killed with this hold and its spare share
    monkeypatch.setattr(sqlite_store, "STALE_SECONDS", -1.0)  # as if a had been silent long enough
    assert isinstance(await b.reserve(0.9), Reservation)


async def test_an_unreachable_store_refuses_in_closed_mode_and_serves_locally_in_open_mode(tmp_path: Path) -> None:
    broken = tmp_path / "a-directory"
    broken.mkdir()  # SQLite cannot open a directory: every trade fails
    closed = Worker(broken, "c", on_failure="closed")
    with pytest.raises(StateUnavailableError):
        await closed.reserve(0.1)
    opened = Worker(broken, "o", on_failure="open")
    served = [await opened.reserve(0.3) for _ in range(4)]
    assert [isinstance(r, Reservation) for r in served] == [True, True, True, False]  # this process's own limit


async def test_a_reloaded_limit_applies_to_the_shares(tmp_path: Path) -> None:
    a = Worker(tmp_path / "l.sqlite3", "a")
    assert isinstance(await a.reserve(0.5), Reservation)
    raised = Budgets([BudgetLimit(scope="tenant", name="acme", daily_usd=3.0, action="reject")])
    raised.carry_over(a.budgets)  # what a config reload does
    a.budgets = raised
    assert isinstance(await a.reserve(2.0), Reservation)  # fits only under the new limit
