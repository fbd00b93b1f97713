"""Budgets shared between processes by escrow (see ``router.shared``): the process side.

``SharedBudgets`` sits beside this process's ``Budgets``: a request that ``Budgets`` admits must
also fit in this process's share of every window of every blocking (``reject``/``downgrade``)
limit it falls under. ``hold`` is the in-memory fast path; ``acquire`` trades with the store when a
share runs short. ``run`` hands unused shares back and moves settled spend into the store every
``interval`` seconds, and is how a store that was down is reconciled once it answers again;
``drop_shares`` forgets the shares of a store that lost them.

A held amount is charged to the window in which it was reserved. Not thread-safe: one event loop.
"""

from __future__ import annotations

import asyncio
import time
from typing import Literal

from router.budget import Budgets, Exceeded, Reservation
from router.shared import EscrowStore, Exchange, StateUnavailableError, WindowKey, worker_id

_SLACK = 1e-9  # USD, as in router.budget


class _Window:
    """This process's side of one budget window."""

    __slots__ = ("action", "expires_at", "held", "key", "limit", "moved", "name", "others", "period", "scope",
                 "settled", "share", "spent")

    def __init__(self, key: WindowKey, scope: str, name: str | None, limit: float, action: str, spent: float,
                 expires_at: float) -> None:
        self.key = key
        self.scope = scope
        self.name = name
        self.period = key[1]
        self.limit = limit
        self.action = action
        self.expires_at = expires_at
        self.share = 0.0  # what the store granted this process
        self.held = 0.0  # estimates of this process's requests in flight
        self.settled = 0.0  # actual costs settled here and not yet moved into the store's spend
        self.moved = 0.0  # what this process moved into the store's spend so far
        self.spent = spent  # the window's spend, as of the last exchange
        self.others = 0.0  # the other processes' shares, as of the last exchange

    @property
    def free(self) -> float:
        return self.share - self.held - self.settled

    def exceeded(self, estimate: float) -> Exceeded:
        return Exceeded(
            self.scope,  # type: ignore[arg-type]
            self.name,
            self.period,  # type: ignore[arg-type]
            self.limit,
            self.spent + self.settled,
            self.others + self.held,
            estimate,
            self.expires_at,
            self.action,  # type: ignore[arg-type]
        )


class SharedBudgets:
    def __init__(
        self,
        store: EscrowStore,
        *,
        on_failure: Literal["open", "closed"] = "open",
        fraction: float = 0.25,
        worker: str | None = None,
    ) -> None:
        self.store = store
        self.on_failure = on_failure
        self.fraction = fraction
        self.worker = worker or worker_id()
        self._windows: dict[WindowKey, _Window] = {}
        self._plans: dict[tuple[object, int, int], tuple[_Window, ...]] = {}
        self._lock = asyncio.Lock()
        self._budgets: Budgets | None = None

    def hold(self, reservation: Reservation, budgets: Budgets) -> bool:
        """Hold ``reservation`` in this process's shares without I/O; False when ``acquire`` must trade first."""
        windows = self._windows_for(reservation, budgets)
        if not windows:
            return True
        if self._lock.locked():
            return False  # a trade is changing the shares: wait for it
        estimate = reservation.amount
        for window in windows:
            if window.free < estimate - _SLACK:
                return False
        for window in windows:
            window.held += estimate
        reservation.shared = windows
        return True

    async def acquire(self, reservation: Reservation, budgets: Budgets) -> Exceeded | None:
        """Grow this process's shares until they cover ``reservation`` and hold it; the limit it
        would exceed if they cannot. Raises ``StateUnavailableError`` when the store is down and
        ``on_failure`` is ``closed``; with ``open`` the request is held locally."""
        async with self._lock:
            windows = self._windows_for(reservation, budgets)
            estimate = reservation.amount
            short = [w for w in windows if w.free < estimate - _SLACK]
            if short:
                try:
                    await self._trade(short, want=estimate)  # a store that is down fails at once
                except StateUnavailableError:
                    if self.on_failure == "closed":
                        raise
                    short = []  # open: this process's own accounts decided; the spend is reconciled later
                for window in short:
                    if window.free < estimate - _SLACK:
                        return window.exceeded(estimate)
            for window in windows:
                window.held += estimate
            reservation.shared = windows
            return None

    def settle(self, reservation: Reservation, actual_usd: float) -> None:
        """Release the hold and note the actual cost, to be moved into the store's spend by ``run``."""
        windows = reservation.shared
        if not windows:
            return
        reservation.shared = None
        amount = reservation.amount
        for window in windows:
            held = window.held - amount
            window.held = held if held > 0.0 else 0.0
            window.settled += actual_usd

    def drop_shares(self) -> None:
        """Forget the shares the store granted (a Redis that went away): the next request of each
        window trades first, and the trade registers what is held and settled with the store."""
        for window in self._windows.values():
            window.share = 0.0

    async def run(self, interval: float = 1.0) -> None:
        """Every ``interval``: move settled spend into the store, hand back unused shares, forget past windows."""
        while True:
            await asyncio.sleep(interval)
            await self.sync()

    async def sync(self) -> None:
        async with self._lock:
            windows = list(self._windows.values())
            if not windows:
                return
            try:
                await self._trade(windows, want=0.0)
            except StateUnavailableError:
                return  # the store logs its outage; what was settled meanwhile moves in once it is back
            now = time.time()
            for key, window in list(self._windows.items()):
                if window.expires_at < now and window.held <= 0.0 and window.settled <= 0.0 and window.share <= 0.0:
                    del self._windows[key]
                    self._plans.clear()

    async def aclose(self) -> None:
        """Hand everything back and move what was settled into the store (whose owner closes it)."""
        await self.sync()

    async def _trade(self, windows: list[_Window], want: float) -> None:
        trades = [Exchange(w.key, w.limit, self._seed(w), w.settled, w.held, want, w.expires_at, w.moved) for w in windows]
        grants = await self.store.exchange(self.worker, trades, self.fraction)
        for window, trade, grant in zip(windows, trades, grants, strict=True):
            window.settled -= trade.settled  # what settled during the trade stays for the next one
            window.moved += trade.settled
            window.share = grant.share
            window.spent = grant.spent
            window.others = grant.others

    def _seed(self, window: _Window) -> float:
        """What the window starts from if the store does not have it (first use, or a Redis that
        restarted empty): this process's current view of the period's spend (the ledger plus what it
        settled since), less what this trade moves in, which the store adds."""
        budgets = self._budgets
        if budgets is None or int(budgets.period_start(window.period)) != window.key[2]:  # type: ignore[arg-type]
            return window.spent
        view = budgets.spent((window.scope, window.name), window.period)  # type: ignore[arg-type]
        return max(window.spent, view - window.settled)

    def _windows_for(self, reservation: Reservation, budgets: Budgets) -> tuple[_Window, ...]:
        if budgets is not self._budgets:  # a reload replaced them: limits may have changed
            self._budgets = budgets
            self._plans.clear()
        accounts = reservation.accounts
        day, month = int(budgets.period_start("day")), int(budgets.period_start("month"))
        plan = self._plans.get((accounts, day, month))
        if plan is not None:
            return plan
        windows: list[_Window] = []
        for account in accounts:
            limit = account.limit
            if limit.action == "allow":
                continue
            for period, cap, start in (("day", limit.daily_usd, day), ("month", limit.monthly_usd, month)):
                if cap is None:
                    continue
                key = (account.label, period, start)
                window = self._windows.get(key)
                if window is None:
                    seed = budgets.spent((account.scope, account.name), period)  # type: ignore[arg-type]
                    end = budgets.period_end(period)  # type: ignore[arg-type]
                    window = self._windows[key] = _Window(key, account.scope, account.name, cap, limit.action, seed, end)
                window.limit = cap
                window.action = limit.action
                windows.append(window)
        if len(self._plans) > 10_000:  # callers come and go (default per-tenant limits)
            self._plans.clear()
        plan = self._plans[accounts, day, month] = tuple(windows)
        return plan

