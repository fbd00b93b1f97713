"""Spending limits in USD, globally, per tenant and per API key, per UTC day and month.

A request reserves its estimated cost in every scope that applies to it before it is sent and
settles its actual cost, once, when it ends. A reservation counts what other in-flight requests
hold, so concurrent requests cannot overrun a limit together; only the gap between estimate and
actual can (estimate output with ``max_tokens`` for a hard bound). A request estimated at $0
(a self-hosted backend) is never refused.

Each limit carries the action for a request that would exceed it: ``reject`` (429) and
``downgrade`` (send it to a cheaper tier) make ``reserve`` return ``Exceeded``; ``allow``
serves it and lists the limit in ``Reservation.over``, to be recorded only. When several
limits are exceeded, ``reject`` wins over ``downgrade``.

Spent amounts start again at 00:00 UTC and on the 1st of the month. An amount held by an
in-flight request belongs to no period: it is charged to the period in which it settles.
Not thread-safe by design: the gateway drives it from one event loop.
"""

from __future__ import annotations

import calendar
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

BudgetAction = Literal["downgrade", "reject", "allow"]
BudgetScope = Literal["global", "tenant", "key"]
Period = Literal["day", "month"]
#: A spend total's scope as the ledger groups it: ("global", None), ("tenant", name), ("key", name).
ScopeKey = tuple[str, str | None]

_DAY = 86400
_SLACK = 1e-9  # USD; float sums of exact fits must not be refused


@dataclass(frozen=True, slots=True)
class BudgetLimit:
    """A limit on one scope. A ``tenant`` or ``key`` limit without a name applies to each
    tenant (key) that has no limit of its own, separately."""

    scope: BudgetScope
    name: str | None = None
    daily_usd: float | None = None
    monthly_usd: float | None = None
    action: BudgetAction = "downgrade"

    def __post_init__(self) -> None:
        if self.scope == "global" and self.name is not None:
            raise ValueError("a global budget has no name")
        if self.daily_usd is None and self.monthly_usd is None:
            raise ValueError(f"budget {_label(self.scope, self.name)}: give daily_usd, monthly_usd or both")
        for amount in (self.daily_usd, self.monthly_usd):
            if amount is not None and not (amount >= 0 and math.isfinite(amount)):
                raise ValueError(f"budget {_label(self.scope, self.name)}: amounts must be finite and >= 0")


@dataclass(frozen=True, slots=True)
class Exceeded:
    """A limit the request would go past: enough to explain a 429 or a downgrade."""

    scope: BudgetScope
    name: str | None
    period: Period
    limit_usd: float
    spent_usd: float
    reserved_usd: float
    estimate_usd: float
    resets_at: float
    action: BudgetAction

    @property
    def label(self) -> str:
        return _label(self.scope, self.name)

    @property
    def remaining_usd(self) -> float:
        return max(0.0, self.limit_usd - self.spent_usd - self.reserved_usd)

    def __str__(self) -> str:
        who = {"global": "the gateway", "tenant": f"tenant '{self.name}'", "key": f"API key '{self.name}'"}[self.scope]
        resets = datetime.fromtimestamp(self.resets_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
        return (
            f"{'Daily' if self.period == 'day' else 'Monthly'} budget of {who} exceeded: the limit is "
            f"${self.limit_usd:.2f}, ${self.spent_usd + self.reserved_usd:.2f} is spent or reserved, "
            f"${self.remaining_usd:.2f} remains and this request needs about ${self.estimate_usd:.4f}. "
            f"It resets at {resets}."
        )


class _Account:
    """Spend of one concrete scope: settled per period, and held by in-flight requests."""

    __slots__ = ("day", "held", "label", "limit", "month", "name", "scope", "spent_day", "spent_month")

    def __init__(self, scope: BudgetScope, name: str | None, limit: BudgetLimit, day: int, month: int) -> None:
        self.scope = scope
        self.name = name
        self.label = _label(scope, name)
        self.limit = limit
        self.day = day
        self.month = month
        self.spent_day = 0.0
        self.spent_month = 0.0
        self.held = 0.0

    def roll(self, day: int, month: int) -> None:
        if day > self.day:
            self.day = day
            self.spent_day = 0.0
        if month > self.month:
            self.month = month
            self.spent_month = 0.0


class Reservation:
    """Amounts held for one request in each scope that applies to it. Settle it exactly once."""

    __slots__ = ("_accounts", "amount", "over", "settled", "shared")

    def __init__(self, accounts: tuple[_Account, ...], amount: float, over: tuple[Exceeded, ...]) -> None:
        self._accounts = accounts
        self.amount = amount
        #: ``allow`` limits this request went past: serve it, but say so in logs and headers.
        self.over = over
        self.settled = False
        #: What a shared budget store holds for this request besides this process's accounts (or None).
        self.shared: Any = None

    @property
    def accounts(self) -> tuple[_Account, ...]:
        """The accounts this reservation holds in (their ``scope``, ``name``, ``label`` and ``limit``)."""
        return self._accounts

    def __repr__(self) -> str:
        scopes = ",".join(a.label for a in self._accounts)
        return f"Reservation(${self.amount:.4f} in [{scopes}]{', settled' if self.settled else ''})"


class Budgets:
    def __init__(self, limits: Sequence[BudgetLimit], *, clock: Callable[[], float] = time.time) -> None:
        self.limits = tuple(limits)
        self._clock = clock
        self._global: _Account | None = None
        self._accounts: dict[ScopeKey, _Account] = {}
        self._defaults: dict[str, BudgetLimit] = {}
        self._callers: dict[tuple[str | None, str | None], tuple[_Account, ...]] = {}  # (tenant, key) -> its accounts
        self._day = -1
        self._month = -1
        self._day_end = 0.0
        self._month_start = 0.0
        self._month_end = 0.0
        self._tick()
        seen: set[ScopeKey] = set()
        for limit in limits:
            scope = (limit.scope, limit.name)
            if scope in seen:
                raise ValueError(f"budget {_label(*scope)} is given twice")
            seen.add(scope)
            if limit.scope == "global":
                self._global = self._account(scope, limit)
            elif limit.name is None:
                self._defaults[limit.scope] = limit
            else:
                self._account(scope, limit)

    def period_start(self, period: Period) -> float:
        """Unix time the current UTC day or month began: where to sum the ledger from for ``load``."""
        self._tick()
        return float(self._day * _DAY) if period == "day" else self._month_start

    def period_end(self, period: Period) -> float:
        """Unix time the current UTC day or month ends (when its spend starts again from zero)."""
        self._tick()
        return self._day_end if period == "day" else self._month_end

    def spent(self, scope: ScopeKey, period: Period) -> float:
        """What this process knows was spent in the current period (ledger totals plus its own settlements)."""
        account = self._accounts.get(scope)
        if account is None:
            return 0.0
        self._tick()
        return account.spent_day if period == "day" else account.spent_month

    def carry_over(self, old: Budgets) -> None:
        """Take over the spend and holds of ``old`` (the budgets of the previous config) for scopes still limited.

        The accounts themselves move over, so requests in flight across a config reload settle here.
        """
        self._tick()
        for scope, account in old._accounts.items():
            current = self._accounts.get(scope)
            if current is not None:
                limit = current.limit
            elif scope[1] is not None and scope[0] in self._defaults:
                limit = self._defaults[scope[0]]
            else:
                continue
            account.limit = limit
            account.roll(self._day, self._month)
            self._accounts[scope] = account
            if scope[0] == "global":
                self._global = account
        self._callers.clear()

    def load(self, spent_today: Mapping[ScopeKey, float], spent_month: Mapping[ScopeKey, float]) -> None:
        """Set spent amounts from ledger totals (``Ledger.totals``); holds are kept.

        At start-up this restores spend across a restart. Called again periodically (after
        ``Ledger.flush``), it also brings in what other worker processes sharing the ledger spent.
        """
        self._tick()
        for scope in {*spent_today, *spent_month}:
            limit = self._defaults.get(scope[0]) if scope[1] is not None else None
            if scope not in self._accounts and limit is not None:
                self._account(scope, limit)
        for scope, account in self._accounts.items():
            account.spent_day = spent_today.get(scope, 0.0)
            account.spent_month = spent_month.get(scope, 0.0)

    def reserve(self, *, tenant: str | None, key: str | None, estimate_usd: float) -> Reservation | Exceeded:
        """Hold ``estimate_usd`` in every applicable scope, or say which limit it would exceed."""
        self._tick()
        accounts = self._callers.get((tenant, key))
        if accounts is None:
            accounts = self._callers[tenant, key] = self._applicable(tenant, key)
        over: tuple[Exceeded, ...] = ()
        if estimate_usd > 0:
            breaches: list[tuple[_Account, Period, float, float]] = []
            for account in accounts:
                limit = account.limit
                committed = account.held + estimate_usd - _SLACK
                cap = limit.daily_usd
                if cap is not None and account.spent_day + committed > cap:
                    breaches.append((account, "day", cap, account.spent_day))
                cap = limit.monthly_usd
                if cap is not None and account.spent_month + committed > cap:
                    breaches.append((account, "month", cap, account.spent_month))
            if breaches:
                exceeded = [self._exceeded(*breach, estimate_usd) for breach in breaches]
                blocking = [e for e in exceeded if e.action == "reject"] or [e for e in exceeded if e.action == "downgrade"]
                if blocking:
                    return blocking[0]
                over = tuple(exceeded)
            for account in accounts:
                account.held += estimate_usd
        return Reservation(accounts, estimate_usd, over)

    def settle(self, reservation: Reservation, actual_usd: float) -> None:
        """Replace the hold with the actual cost (0 for a request that produced no tokens). Once only."""
        if reservation.settled:
            return
        reservation.settled = True
        self._tick()
        amount = reservation.amount
        for account in reservation._accounts:
            held = account.held - amount
            account.held = held if held > 0.0 else 0.0
            account.spent_day += actual_usd
            account.spent_month += actual_usd

    def remaining(self) -> dict[str, float]:
        """Per scope label (``global``, ``tenant:acme``, ``key:ci``), the USD still available in its tightest period."""
        self._tick()
        out: dict[str, float] = {}
        for account in self._accounts.values():
            out[account.label] = min(
                max(0.0, cap - spent - account.held)
                for cap, spent in (
                    (account.limit.daily_usd, account.spent_day),
                    (account.limit.monthly_usd, account.spent_month),
                )
                if cap is not None
            )
        return out

    def snapshot(self, *, tenant: str | None, key: str | None) -> list[dict[str, Any]]:
        """Every limit that applies to this caller, with its spend: for ``/v1/router/decide``."""
        return self._describe(self._applicable(tenant, key))

    def snapshot_all(self) -> list[dict[str, Any]]:
        """Every account's limits and spend (for metrics)."""
        return self._describe(tuple(self._accounts.values()))

    def _describe(self, accounts: tuple[_Account, ...]) -> list[dict[str, Any]]:
        self._tick()
        out: list[dict[str, Any]] = []
        for account in accounts:
            limit = account.limit
            for period, cap, spent, resets_at in (
                ("day", limit.daily_usd, account.spent_day, self._day_end),
                ("month", limit.monthly_usd, account.spent_month, self._month_end),
            ):
                if cap is not None:
                    out.append(
                        {
                            "scope": account.label,
                            "period": period,
                            "limit_usd": cap,
                            "spent_usd": round(spent, 6),
                            "reserved_usd": round(account.held, 6),
                            "remaining_usd": round(max(0.0, cap - spent - account.held), 6),
                            "resets_at": resets_at,
                            "action": limit.action,
                        }
                    )
        return out

    def _applicable(self, tenant: str | None, key: str | None) -> tuple[_Account, ...]:
        accounts = [] if self._global is None else [self._global]
        for scope, name in (("tenant", tenant), ("key", key)):
            if name is None:
                continue
            account = self._accounts.get((scope, name))
            if account is None:
                default = self._defaults.get(scope)
                if default is None:
                    continue
                account = self._account((scope, name), default)
            accounts.append(account)
        return tuple(accounts)

    def _exceeded(self, account: _Account, period: Period, cap: float, spent: float, estimate_usd: float) -> Exceeded:
        resets_at = self._day_end if period == "day" else self._month_end
        return Exceeded(
            account.scope, account.name, period, cap, spent, account.held, estimate_usd, resets_at, account.limit.action
        )

    def _account(self, scope: ScopeKey, limit: BudgetLimit) -> _Account:
        account = self._accounts[scope] = _Account(limit.scope, scope[1], limit, self._day, self._month)
        self._callers.clear()
        return account

    def _tick(self) -> None:
        """Follow the clock into a new UTC day (and month), starting every account's new period; never back."""
        now = self._clock()
        if now < self._day_end:
            return
        day = int(now // _DAY)
        self._day = day
        self._day_end = float((day + 1) * _DAY)
        t = time.gmtime(day * _DAY)
        self._month = t.tm_year * 12 + t.tm_mon - 1
        self._month_start = float(calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0)))
        year, month = divmod(self._month + 1, 12)
        self._month_end = float(calendar.timegm((year, month + 1, 1, 0, 0, 0)))
        for account in self._accounts.values():
            account.roll(self._day, self._month)


def _label(scope: str, name: str | None) -> str:
    if name is None:
        return scope if scope == "global" else f"{scope}:*"
    return f"{scope}:{name}"
