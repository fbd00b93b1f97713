"""What the policy engine remembers between requests: per-backend health, load and capacity,
the retry budget, spend budgets, conversation stickiness and the spend ledger.

It outlives config reloads: a reload keeps the breaker, latency and budget state of backends and
scopes that still exist, so reloading a config never resets an open breaker or a spent budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from router.breaker import BreakerState, CircuitBreaker
from router.budget import BudgetLimit, Budgets, Reservation
from router.capacity import CapacityGauge
from router.config import BackendConfig, BreakerConfig, GatewayConfig, PriceConfig
from router.evaluate.shadow import ShadowState, day_start
from router.gpu_cost import GpuCost, Source
from router.latency import BackendLoad
from router.ledger import Ledger, SpendLedger
from router.ledger_pg import LedgerUnavailableError, PostgresLedger
from router.retry import RetryBudget
from router.ratelimit import Bucket, LocalBuckets, RateLimits, Take, costs
from router.shared import StateUnavailableError
from router.shared.escrow import SharedBudgets
from router.shared.leases import Leases
from router.shared.redis import RedisStore
from router.shared.sqlite import SqliteStore
from router.sticky import StickyStore, conversation_digest

log = logging.getLogger("router.state")

BreakerListener = Callable[[str, BreakerState], None]
#: Seconds a budget re-read waits for this process's rows to be written (a PostgreSQL outage must not stall it).
_FLUSH_TIMEOUT = 5.0


@dataclass
class BackendState:
    breaker: CircuitBreaker
    breaker_config: BreakerConfig
    load: BackendLoad
    capacity: CapacityGauge | None = None
    #: Set when the backend is priced per GPU-hour.
    gpu_cost: GpuCost | None = None

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
    def __init__(
        self,
        config: GatewayConfig,
        *,
        on_breaker: BreakerListener | None = None,
        on_state: Callable[[bool], None] | None = None,
        workers: int = 1,
    ) -> None:
        self._on_breaker = on_breaker
        self.backends: dict[str, BackendState] = {}
        retries = config.policy.retries
        self._retry_settings = (retries.budget_ratio, retries.budget_min_per_second)
        self.retry_budget = RetryBudget(ratio=retries.budget_ratio, min_per_second=retries.budget_min_per_second)
        self._limits = _limits(config)
        self.budgets = Budgets(self._limits)
        sticky = config.policy.stickiness
        self.sticky = StickyStore(ttl_seconds=sticky.ttl_seconds, max_conversations=sticky.max_conversations)
        ledger = config.policy.ledger
        path = ledger.path
        # A write-ahead row older than the longest a request may run was left by a process that died.
        longest = config.policy.retries.deadline_seconds + max((b.timeouts.total for b in config.backends.values()), default=0)
        self.ledger: SpendLedger | None = None
        if ledger.url:
            self.ledger = PostgresLedger(ledger.url, buffer_rows=ledger.buffer_rows, stale_after=2 * longest)
        elif path:
            self.ledger = Ledger(path, stale_after=2 * longest)
        self.shadow = ShadowState()
        if self.ledger is not None:
            self._load_spend()
        self._state_config = config.state
        self._ledger_config = config.policy.ledger
        self.on_failure = config.state.on_failure
        #: Redis, when ``state.redis_url`` is set: budgets, rate limits and stickiness shared across replicas.
        self.store: RedisStore | None = None
        #: Budgets shared with other processes (None: this process only): through Redis, or with
        #: ``serve --workers N`` through the ledger file.
        self.shared_budgets: SharedBudgets | None = None
        self._escrow_store: SqliteStore | None = None
        if config.state.redis_url:
            self.store = RedisStore(config.state, on_change=on_state)
            self.shared_budgets = SharedBudgets(self.store, on_failure=self.on_failure)
            self.store.listen(self._on_store_change)
        elif workers > 1 and isinstance(self.ledger, Ledger) and path != ":memory:":
            self._escrow_store = SqliteStore(self.ledger.path)
            self.shared_budgets = SharedBudgets(self._escrow_store, on_failure=self.on_failure)
        self.rate_limits = RateLimits(config.policy.rate_limits)
        self.local_buckets = LocalBuckets()
        #: What this replica took from the Redis buckets ahead of its requests.
        self.leases = Leases(config.state.rate_limit_lease)
        self._background: set[asyncio.Task[None]] = set()
        #: Token settlements (actual - estimate) not yet carried to Redis, per bucket key.
        self._unsettled: dict[str, float] = {}
        self._unsettled_buckets: dict[str, Bucket] = {}
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
            state.gpu_cost = _gpu_cost(backend, state)
            backends[name] = state
        self.backends = backends
        limits = _limits(config)
        if limits != self._limits:
            self._limits = limits
            budgets = Budgets(limits)
            budgets.carry_over(self.budgets)  # spend and in-flight holds move over with the accounts
            self.budgets = budgets
        if config.state != self._state_config or config.policy.ledger != self._ledger_config:
            log.warning("`state` and `policy.ledger` changes take effect at the next restart")
        if tuple(config.policy.rate_limits) != self.rate_limits.limits:
            self.rate_limits = RateLimits(config.policy.rate_limits)
        retries = config.policy.retries
        if (retries.budget_ratio, retries.budget_min_per_second) != self._retry_settings:
            self._retry_settings = (retries.budget_ratio, retries.budget_min_per_second)
            self.retry_budget = RetryBudget(ratio=retries.budget_ratio, min_per_second=retries.budget_min_per_second)

    def settle(self, reservation: Reservation, actual_usd: float) -> None:
        """Settle a request's budget reservation here and in the shared store's escrow."""
        self.budgets.settle(reservation, actual_usd)
        if reservation.shared is not None and self.shared_budgets is not None:
            self.shared_budgets.settle(reservation, actual_usd)

    async def admit(
        self, tenant: str | None, key: str | None, tokens: int, conversation: Sequence[Any] | None = None
    ) -> tuple[tuple[Any, Take] | None, str | None]:
        """Take one request and ``tokens`` from every rate limit that applies (None: none applies), and
        look up the tier ``conversation`` (a request's messages, given only with Redis) was escalated to.

        With Redis (and up) both in one round trip, or none when the rate limits' leases cover the
        request (``router.shared.leases``); else (``on_failure: open``) from this process's buckets
        and stickiness. Raises ``StateUnavailableError`` when Redis is down, ``on_failure`` is
        ``closed`` and a rate limit applies.
        """
        buckets = self.rate_limits.buckets(tenant, key)
        amounts = costs(buckets, tokens)
        store = self.store
        if store is not None and (buckets or conversation is not None):
            if conversation is None and store.up and (leased := self.leases.take(buckets, amounts)) is not None:
                return ((buckets, tokens, store), leased), None  # no round trip (none while Redis is down)
            digest = None if conversation is None else conversation_digest(conversation[:-2], tenant)
            pending = self._unsettled
            deltas = [pending.pop(b.key, 0.0) for b in buckets]
            sizes = self.leases.sizes(buckets, amounts)
            try:
                answer = await store.admit(buckets, amounts, deltas, sizes, digest)
            except StateUnavailableError:
                for bucket, delta in zip(buckets, deltas, strict=True):  # for when Redis is back
                    if delta:
                        pending[bucket.key] = pending.get(bucket.key, 0.0) + delta
                if buckets and self.on_failure == "closed":
                    raise
            else:
                take = self.leases.grant(buckets, sizes, answer.take) if answer.leased else answer.take
                return ((buckets, tokens, store), take) if buckets else None, answer.sticky_tier
        tier = None if conversation is None else self.sticky.tier_of(conversation, tenant)
        if not buckets:
            return None, tier
        return ((buckets, tokens, self.local_buckets), self.local_buckets.take_now(buckets, amounts)), tier

    def settle_rate(self, taken: Any, actual_tokens: int, *, refund: bool = False) -> None:
        """Give back (or take more of) the token buckets: the actual tokens against the estimate;
        ``refund``: the request was never sent, so its request is given back too.

        Locally at once; for Redis, carried by the caller's next take (or ``flush_rates``).
        """
        buckets, estimate, where = taken
        tokens = float(actual_tokens - estimate)
        deltas = [(-1.0 if refund else 0.0) if b.kind == "requests" else tokens for b in buckets]
        moved = [(b, d) for b, d in zip(buckets, deltas, strict=True) if d]
        if not moved:
            return
        if where is self.local_buckets:
            self.local_buckets.adjust_now([b for b, _ in moved], [d for _, d in moved])
            return
        for bucket, delta in moved:
            self._carry(bucket, delta)

    def _carry(self, bucket: Bucket, delta: float) -> None:
        """Keep ``delta`` for ``bucket`` to be applied in Redis by the next take or flush."""
        self._unsettled[bucket.key] = self._unsettled.get(bucket.key, 0.0) + delta
        self._unsettled_buckets[bucket.key] = bucket

    async def flush_rates(self, interval: float = 1.0) -> None:
        """Every ``interval``, give back what is left of the leases and move settlements no request
        carried yet into Redis."""
        assert self.store is not None
        while True:
            await asyncio.sleep(interval)
            for bucket, delta in self.leases.give_back():
                self._carry(bucket, delta)
            pending = {k: d for k, d in self._unsettled.items() if d}
            if not pending:
                continue
            buckets = [self._unsettled_buckets[k] for k in pending]
            for key in pending:
                self._unsettled.pop(key, None)
            nothing = [0.0] * len(buckets)
            try:
                await self.store.admit(buckets, nothing, list(pending.values()), nothing)
            except StateUnavailableError:  # kept for when Redis is back
                for key, delta in pending.items():
                    self._unsettled[key] = self._unsettled.get(key, 0.0) + delta

    def remember_sticky(self, messages: list[Any], tenant: str | None, tier: str, ttl_seconds: float) -> None:
        self.sticky.remember(messages, tenant, tier)
        if self.store is not None:
            self._spawn(self._remember_shared(self.store, conversation_digest(messages, tenant), tier, ttl_seconds))

    async def _remember_shared(self, store: RedisStore, digest: bytes, tier: str, ttl_seconds: float) -> None:
        with contextlib.suppress(StateUnavailableError):
            await store.sticky_set(digest, tier, ttl_seconds)

    def _on_store_change(self, up: bool) -> None:
        """Redis answers again: trade at once, so that a Redis that restarted empty learns this
        replica's shares and spend now rather than at the next second's trade."""
        if up and self.shared_budgets is not None:
            self._spawn(self.shared_budgets.sync())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def price(self, backend: str, config: BackendConfig) -> PriceConfig:
        """What ``backend`` costs now: its effective price when priced per GPU-hour, else its price table."""
        state = self.backends.get(backend)
        return state.gpu_cost.price() if state is not None and state.gpu_cost is not None else config.price

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
        try:
            budgets.load(self.ledger.totals(budgets.period_start("day")), self.ledger.totals(budgets.period_start("month")))
        except LedgerUnavailableError as exc:  # re-read every few seconds by sync_budgets
            log.error("budgets start without the ledger's spend: %s", exc)
        shadow_spend = getattr(self.ledger, "shadow_spend", None)  # the SQLite ledger keeps verdicts
        if shadow_spend is not None:
            now = time.time()
            self.shadow.load(shadow_spend(day_start(now)), now)

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

            try:
                spent_today, spent_month = await asyncio.to_thread(_read_totals, ledger, day, month)
            except LedgerUnavailableError:
                continue  # the PostgreSQL ledger is down: keep what is known, try again next time
            budgets.load(spent_today, spent_month)

    def start_pollers(self, session: aiohttp.ClientSession) -> None:
        """(Re)start capacity scrapers for the backends that have one configured."""
        wanted = {name: s.capacity for name, s in self.backends.items() if s.capacity is not None}
        for name, task in list(self._pollers.items()):
            if name not in ("__ledger__", "__escrow__", "__rates__", "__watch__") and (name not in wanted or task.get_name() != str(id(wanted[name]))):
                task.cancel()
                del self._pollers[name]
        for name, gauge in wanted.items():
            if name not in self._pollers:
                self._pollers[name] = asyncio.create_task(gauge.poll(session), name=str(id(gauge)))
        if self.ledger is not None and "__ledger__" not in self._pollers:
            self._pollers["__ledger__"] = asyncio.create_task(self.sync_budgets(), name="__ledger__")
        if self.shared_budgets is not None and "__escrow__" not in self._pollers:
            self._pollers["__escrow__"] = asyncio.create_task(self.shared_budgets.run(), name="__escrow__")
        if self.store is not None and self.shared_budgets is not None and "__watch__" not in self._pollers:
            shared = self.shared_budgets
            watch = self.store.watch(shared.drop_shares, lambda: self._spawn(shared.sync()))
            self._pollers["__watch__"] = asyncio.create_task(watch, name="__watch__")
        if self.store is not None and "__rates__" not in self._pollers:
            self._pollers["__rates__"] = asyncio.create_task(self.flush_rates(), name="__rates__")

    async def aclose(self) -> None:
        await self.shadow.aclose()
        for task in self._pollers.values():
            task.cancel()
        for task in self._pollers.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.shared_budgets is not None:
            await self.shared_budgets.aclose()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        for store in (self.store, self._escrow_store):
            if store is not None:
                await store.aclose()
        if self.ledger is not None:
            await asyncio.to_thread(self.ledger.close)


def _gpu_cost(backend: BackendConfig, state: BackendState) -> GpuCost | None:
    """The backend's GPU pricing (kept across reloads while its price and source stay the same)."""
    if backend.price.gpu_hour_usd is None:
        return None
    source: Source = "vllm" if state.capacity is not None else "gateway"
    old = state.gpu_cost
    cost = old if old is not None and old.config == backend.price and old.source == source else GpuCost(backend.price, source)
    if state.capacity is not None:
        state.capacity.throughput = cost.throughput
    return cost


def _read_totals(ledger: SpendLedger, day: float, month: float) -> tuple[dict[tuple[str, str | None], float], ...]:
    """Spend since the day's and the month's start, after this process's queued rows are written."""
    ledger.flush(_FLUSH_TIMEOUT)
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
