"""What the policy engine remembers between requests: per-backend health, load and capacity,
the retry budget, spend budgets, conversation stickiness and the spend ledger.

It outlives config reloads: a reload keeps the breaker, latency and budget state of backends and
scopes that still exist, so reloading a config never resets an open breaker or a spent budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from router.breaker import BreakerState, CircuitBreaker
from router.budget import BudgetLimit, Budgets
from router.capacity import CapacityGauge
from router.config import BackendConfig, BreakerConfig, GatewayConfig
from router.latency import BackendLoad
from router.ledger import Ledger
from router.retry import RetryBudget
from router.sticky import StickyStore

log = logging.getLogger("router.state")

BreakerListener = Callable[[str, BreakerState], None]


@dataclass
class BackendState:
    breaker: CircuitBreaker
    breaker_config: BreakerConfig
    load: BackendLoad
    capacity: CapacityGauge | None = None

    def stress(self, config: BackendConfig, max_ttft_ms: float | None) -> str | None:
        """Why this backend should not take more traffic right now, or None."""
        if self.capacity is not None and self.capacity.saturated:
            return "capacity"
        if config.max_concurrency is not None and self.load.in_flight >= config.max_concurrency:
            return "capacity"
        if max_ttft_ms is not None and (self.load.ttft_ms or 0.0) > max_ttft_ms:
            return "latency"
        return None


class PolicyState:
    def __init__(self, config: GatewayConfig, *, on_breaker: BreakerListener | None = None) -> None:
        self._on_breaker = on_breaker
        self.backends: dict[str, BackendState] = {}
        retries = config.policy.retries
        self._retry_settings = (retries.budget_ratio, retries.budget_min_per_second)
        self.retry_budget = RetryBudget(ratio=retries.budget_ratio, min_per_second=retries.budget_min_per_second)
        self._limits = _limits(config)
        self.budgets = Budgets(self._limits)
        sticky = config.policy.stickiness
        self.sticky = StickyStore(ttl_seconds=sticky.ttl_seconds, max_conversations=sticky.max_conversations)
        path = config.policy.ledger.path
        # A write-ahead row older than the longest a request may run was left by a process that died.
        longest = config.policy.retries.deadline_seconds + max((b.timeouts.total for b in config.backends.values()), default=0)
        self.ledger = Ledger(path, stale_after=2 * longest) if path else None
        if self.ledger is not None:
            self._load_spend()
        self._pollers: dict[str, asyncio.Task[None]] = {}
        self.reconfigure(config)

    def reconfigure(self, config: GatewayConfig) -> None:
        """Adopt a new config, keeping the state of everything that still exists unchanged."""
        backends: dict[str, BackendState] = {}
        for name, backend in config.backends.items():
            breaker_config = backend.breaker or config.policy.breaker
            old = self.backends.get(name)
            if old is not None and old.breaker_config == breaker_config:
                state = old
            else:
                state = BackendState(self._breaker(name, breaker_config), breaker_config, old.load if old else BackendLoad())
            capacity = backend.capacity
            if capacity is not None and capacity.metrics_url:
                if state.capacity is None or state.capacity.config != capacity:
                    state.capacity = CapacityGauge(name, capacity)
            else:
                state.capacity = None
            backends[name] = state
        self.backends = backends
        limits = _limits(config)
        if limits != self._limits:
            self._limits = limits
            budgets = Budgets(limits)
            budgets.carry_over(self.budgets)  # spend and in-flight holds move over with the accounts
            self.budgets = budgets
        retries = config.policy.retries
        if (retries.budget_ratio, retries.budget_min_per_second) != self._retry_settings:
            self._retry_settings = (retries.budget_ratio, retries.budget_min_per_second)
            self.retry_budget = RetryBudget(ratio=retries.budget_ratio, min_per_second=retries.budget_min_per_second)

    def _breaker(self, name: str, c: BreakerConfig) -> CircuitBreaker:
        listener = self._on_breaker

        def changed(old: BreakerState, new: BreakerState) -> None:
            log.warning("circuit breaker %s: %s -> %s", name, old, new)
            if listener is not None:
                listener(name, new)

        return CircuitBreaker(
            consecutive_failures=c.consecutive_failures,
            window_seconds=c.window_seconds,
            failure_rate=c.failure_rate,
            min_requests=c.min_requests,
            cooldown_seconds=c.cooldown_seconds,
            half_open_probes=c.half_open_probes,
            on_change=changed,
        )

    def _load_spend(self) -> None:
        """Budgets start from what the ledger says was spent this day and month (spend survives restarts)."""
        assert self.ledger is not None
        budgets = self.budgets
        budgets.load(self.ledger.totals(budgets.period_start("day")), self.ledger.totals(budgets.period_start("month")))

    async def sync_budgets(self, interval: float = 5.0) -> None:
        """Re-read spend from the shared ledger now and then, so worker processes see each other's spend."""
        ledger = self.ledger
        if ledger is None:
            return
        while True:
            await asyncio.sleep(interval)
            if not self._limits:
                continue
            budgets = self.budgets
            day, month = budgets.period_start("day"), budgets.period_start("month")

            spent_today, spent_month = await asyncio.to_thread(_read_totals, ledger, day, month)
            budgets.load(spent_today, spent_month)

    def start_pollers(self, session: aiohttp.ClientSession) -> None:
        """(Re)start capacity scrapers for the backends that have one configured."""
        wanted = {name: s.capacity for name, s in self.backends.items() if s.capacity is not None}
        for name, task in list(self._pollers.items()):
            if name != "__ledger__" and (name not in wanted or task.get_name() != str(id(wanted[name]))):
                task.cancel()
                del self._pollers[name]
        for name, gauge in wanted.items():
            if name not in self._pollers:
                self._pollers[name] = asyncio.create_task(gauge.poll(session), name=str(id(gauge)))
        if self.ledger is not None and "__ledger__" not in self._pollers:
            self._pollers["__ledger__"] = asyncio.create_task(self.sync_budgets(), name="__ledger__")

    async def aclose(self) -> None:
        for task in self._pollers.values():
            task.cancel()
        for task in self._pollers.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.ledger is not None:
            await asyncio.to_thread(self.ledger.close)


def _read_totals(ledger: Ledger, day: float, month: float) -> tuple[dict[tuple[str, str | None], float], ...]:
    """Spend since the day's and the month's start, after this process's queued rows are written."""
    ledger.flush()
    return ledger.totals(day), ledger.totals(month)


def _limits(config: GatewayConfig) -> tuple[BudgetLimit, ...]:
    budgets = config.policy.budgets
    return tuple(
        BudgetLimit(
            scope=limit.scope,
            name=limit.name,
            daily_usd=limit.daily_usd,
            monthly_usd=limit.monthly_usd,
            action=limit.action or budgets.action,
        )
        for limit in budgets.limits
    )
