"""Prometheus metrics: every definition, and the small API the request path records through.

No other module imports ``prometheus_client``. One ``Metrics`` per app, on its own
``CollectorRegistry``, so tests can build many apps in one process.

Recording (all calls are cheap, a few microseconds; label children are resolved once and cached):

    metrics = Metrics(backends=..., tiers=..., tenants=..., tasks=..., rules=..., keys=..., version=config.digest)
    metrics.classified(task)                              # once per classified request
    with metrics.in_flight(backend): ...                  # around each upstream attempt (streams: until relayed)
    metrics.retry(backend, reason)                        # reason: one of REASONS
    metrics.fallback(src, dst, reason)
    metrics.breaker_state(backend, "open")                # closed | half_open | open
    metrics.budget("tenant", "acme", "day", remaining_usd=..., limit_usd=...)  # scope global (name None) | tenant | key
    metrics.request_finished(tier=..., backend=..., ...)  # once per request, success or error
    metrics.endpoint_answered(path, status, duration_s)   # once per request that generates nothing (a token count)
    metrics.config_reload(ok)                             # each reload attempt; after a success, configure(...)
    body, content_type = metrics.render()                 # GET /metrics (publishes this process's pending values first)
    metrics.publish()                                     # multi-worker: every second (Gateway runs it)
    metrics.close()                                       # worker shutdown (publishes, then drops live gauges)

``request_finished`` and ``classified`` (a dozen counter and histogram updates per request) add to
plain dicts; ``publish`` hands the sums to prometheus_client in one update per series. In
multi-worker mode each of those updates is a write to a shared file under a lock (about 2 us,
30 us per request unbatched); batched, a request costs about 8 us, the in-flight gauge's two
live writes included. Other workers' values reach a
scrape within a second; a worker that is killed loses at most its last second.

Labels come from closed sets given up front (config names) or fixed here (status class, reasons,
breaker states, budget scopes and periods). A value outside its set is exported as ``other``; a
missing one (``None`` or ``""``, e.g. no backend was chosen because the request failed auth) as
``none``. Clients' strings (request ids, prompts, raw model names) never become label values.

Exported series (``llm_router_`` prefix):

    requests_total{tier,backend,rule,task,status_class,stream}    counter
    endpoint_requests_total{endpoint,status_class}                 counter: chat, responses, completions, embeddings, messages, count_tokens
    endpoint_duration_seconds{endpoint}                            histogram, 10 ms .. 300 s
    request_duration_seconds{backend}                              histogram, 10 ms .. 300 s (generation: embeddings apart)
    time_to_first_token_seconds{backend}                           histogram (streams)
    gateway_overhead_seconds                                       histogram, 50 us .. 1 s
    tokens_total{backend,type=input|output}                        counter
    cost_usd_total{backend,tenant}                                 counter
    cost_saved_usd_total{backend,tenant}                           counter: flagship price of the same tokens - actual cost
    classifier_decisions_total{task}                               counter
    fallbacks_total{from_backend,to_backend,reason}                counter
    retries_total{backend,reason}                                  counter
    circuit_breaker_state{backend}                                 gauge: 0 closed, 1 half_open, 2 open
    in_flight_requests{backend}                                    gauge
    budget_remaining_usd{scope,name,period}, budget_limit_usd{...} gauges; scope global|tenant|key, period day|month
    config_reloads_total{result=success|failure}                   counter
    config_last_reload_successful                                  gauge 1/0
    config_info{version}                                           gauge, 1 for the serving version
    price_usd_per_mtok{backend,type=input|output}                 gauge: effective for GPU-hour pricing, set at scrape
    shadow_verdicts_total{rule,task,verdict}                       counter: acceptable | unacceptable | error
    shadow_cost_usd_total                                          counter: the shadow judge's spend
    shadow_skipped_total{reason}                                   counter: budget | breaker_open | stress | busy
    shadow_min_acceptance                                          gauge: policy.shadow.min_acceptance
    state_backend_up                                               gauge: 1 while Redis answers (fleet mode)
    ledger_buffered_rows, ledger_dropped_rows_total                gauge, counter: the PostgreSQL ledger's backlog

Multi-worker (``llm-router serve --workers N``): uvicorn spawns N fresh processes, each with its
own ``Metrics``. ``prepare_multiprocess_dir(N)``, called by the CLI before ``uvicorn.run``, points
``PROMETHEUS_MULTIPROC_DIR`` at an empty directory; workers inherit it, so prometheus_client
(imported after the spawn) keeps every value in per-process files there and ``render`` merges
them: counters and histograms are summed, in-flight is summed over live workers, breaker state
and config version take the worst/any live worker, budgets the most recent write. A worker
should call ``Metrics.close()`` when it shuts down so its live gauges stop counting; a worker
that is killed instead leaves its last in-flight value behind until the gateway restarts.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from router.breaker import BreakerState
from router.config import FailureKind

# ``*_created`` series would double the series count and no dashboard or alert reads them.
disable_created_metrics()

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: The classic text format every Prometheus 2.x and 3.x server parses (our names need no UTF-8 escaping).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
OTHER = "other"
NONE = "none"

#: Why a fallback or retry happened: an upstream failure kind, or a policy refusal. Others fold into ``other``.
REASONS: tuple[str, ...] = (*get_args(FailureKind), "breaker_open", "budget", "capacity", "latency", "other")
#: The reasons a fallback happens for (an upstream failure, or the dispatcher skipping an open breaker or an
#: unaffordable backend): exported at 0 for every known route.
FALLBACK_REASONS: tuple[str, ...] = (*get_args(FailureKind), "breaker_open", "budget")
BREAKER_VALUES: dict[BreakerState, int] = {"closed": 0, "half_open": 1, "open": 2}
_PERIODS = {"day": "day", "month": "month"}
SHADOW_VERDICTS = frozenset({"acceptable", "unacceptable", "error"})
#: Why a request sampled for shadow judging was not judged.
SHADOW_SKIPS = frozenset({"budget", "breaker_open", "stress", "busy"})

#: Request latency and TTFT: LLM calls take from tens of milliseconds (cached, tiny) to minutes (long generations).
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
#: Time spent in the gateway itself, upstream excluded: microseconds to milliseconds when healthy.
OVERHEAD_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
#: Each histogram's upper bounds as prometheus_client keeps them (``+Inf`` last).
LATENCY_BOUNDS = (*LATENCY_BUCKETS, float("inf"))
OVERHEAD_BOUNDS = (*OVERHEAD_BUCKETS, float("inf"))

_STATUS_CLASSES = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}
_STREAM = {True: "true", False: "false"}
#: Request path -> ``endpoint`` label (a closed set; other paths fold into ``other``).
ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/responses": "responses", "/v1/completions": "completions",
             "/v1/embeddings": "embeddings", "/v1/messages": "messages", "/v1/messages/count_tokens": "count_tokens"}


def prepare_multiprocess_dir(workers: int) -> Path | None:
    """For ``workers > 1``: make ``PROMETHEUS_MULTIPROC_DIR`` an empty directory and return it.

    Call before the workers start. An operator-given directory is emptied of old ``*.db`` files
    (stale values would be counted again); otherwise a temporary one is created and removed when
    this (parent) process exits.
    """
    if workers <= 1:
        return None
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        return path
    path = Path(tempfile.mkdtemp(prefix="llm-router-metrics-"))
    atexit.register(shutil.rmtree, path, True)
    os.environ[MULTIPROC_ENV] = str(path)
    return path


@dataclass(frozen=True, slots=True)
class _Backend:
    """One backend's pre-resolved children."""

    label: str
    duration: Any
    ttft: Any
    input_tokens: Any
    output_tokens: Any


@dataclass(frozen=True, slots=True)
class _LabelSets:
    """Config name -> exported label value, for each closed set (misses fold to ``other``)."""

    tiers: dict[str | None, str]
    backends: dict[str | None, str]
    tenants: dict[str | None, str]
    tasks: dict[str | None, str]
    rules: dict[str | None, str]
    #: Budget scope -> its names (the tenants, the client keys' names, or the one global budget).
    budget_names: dict[str, dict[str | None, str]]


def _known(names: Iterable[str]) -> dict[str | None, str]:
    known: dict[str | None, str] = {name: name for name in names}
    known[None] = known[""] = NONE
    return known


class Metrics:
    def __init__(
        self,
        *,
        backends: Iterable[str],
        tiers: Iterable[str],
        tenants: Iterable[str],
        tasks: Iterable[str],
        rules: Iterable[str],
        version: str,
        keys: Iterable[str] = (),
        routes: Iterable[tuple[str, str]] = (),
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV) or None
        r = self.registry
        self._requests = Counter(
            "llm_router_requests_total", "Requests answered, by routing outcome and HTTP status class.",
            ["tier", "backend", "rule", "task", "status_class", "stream"], registry=r,
        )
        self._endpoint_requests = Counter(
            "llm_router_endpoint_requests_total", "Requests answered, by API endpoint and HTTP status class.",
            ["endpoint", "status_class"], registry=r,
        )
        self._endpoint_duration = Histogram(
            "llm_router_endpoint_duration_seconds", "Time from request received to last byte sent, by API endpoint.",
            ["endpoint"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self._duration = Histogram(
            "llm_router_request_duration_seconds", "Time from request received to last byte sent (generation "
            "requests: embeddings are in endpoint_duration_seconds only).",
            ["backend"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self._ttft = Histogram(
            "llm_router_time_to_first_token_seconds", "Streams: time from request received to the first content chunk.",
            ["backend"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self._overhead = Histogram(
            "llm_router_gateway_overhead_seconds", "Time spent in the gateway itself, upstream waits excluded.",
            buckets=OVERHEAD_BUCKETS, registry=r,
        )
        self._tokens = Counter("llm_router_tokens_total", "Tokens reported by upstreams.", ["backend", "type"], registry=r)
        self._cost = Counter("llm_router_cost_usd_total", "Cost of answered requests in USD, from the price table.",
                             ["backend", "tenant"], registry=r)
        self._saved = Counter(
            "llm_router_cost_saved_usd_total",
            "USD saved versus sending the same tokens to the flagship tier (never negative).",
            ["backend", "tenant"], registry=r,
        )
        self._classified = Counter("llm_router_classifier_decisions_total", "Requests classified, by task.", ["task"],
                                   registry=r)
        self._fallbacks = Counter("llm_router_fallbacks_total", "Moves from a failed or refused backend to the next.",
                                  ["from_backend", "to_backend", "reason"], registry=r)
        self._retries = Counter("llm_router_retries_total", "Repeated attempts on the same backend.", ["backend", "reason"],
                                registry=r)
        self._breaker = Gauge("llm_router_circuit_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open.",
                              ["backend"], multiprocess_mode="livemax", registry=r)
        self._in_flight = Gauge("llm_router_in_flight_requests", "Upstream requests in progress.", ["backend"],
                                multiprocess_mode="livesum", registry=r)
        self._budget_remaining = Gauge("llm_router_budget_remaining_usd", "Budget left in the current period, USD.",
                                       ["scope", "name", "period"], multiprocess_mode="mostrecent", registry=r)
        self._budget_limit = Gauge("llm_router_budget_limit_usd", "Budget of the current period, USD.",
                                   ["scope", "name", "period"], multiprocess_mode="mostrecent", registry=r)
        self._state_up = Gauge("llm_router_state_backend_up", "1 while the shared state (Redis) answers, 0 while it does "
                               "not; absent without Redis.", multiprocess_mode="livemin", registry=r)
        self._ledger_buffered = Gauge("llm_router_ledger_buffered_rows", "Spend rows recorded and not yet written to "
                                      "the PostgreSQL ledger.", multiprocess_mode="livesum", registry=r)
        self._ledger_dropped = Counter("llm_router_ledger_dropped_rows_total", "Spend rows dropped because the "
                                       "PostgreSQL ledger's buffer was full while the database was down.", registry=r)
        self._ledger_dropped_seen = 0
        self._reloads = Counter("llm_router_config_reloads_total", "Config reload attempts, by result.", ["result"],
                                registry=r)
        self._reload_ok = Gauge("llm_router_config_last_reload_successful", "1 if the last config reload succeeded.",
                                multiprocess_mode="livemin", registry=r)
        self._config_info = Gauge("llm_router_config_info", "The serving config's version (content hash); value 1.",
                                  ["version"], multiprocess_mode="livemax", registry=r)
        self._price = Gauge("llm_router_price_usd_per_mtok",
                            "USD per million tokens a backend is billed at now (effective for GPU-hour pricing).",
                            ["backend", "type"], multiprocess_mode="mostrecent", registry=r)
        self._shadow_verdicts = Counter(
            "llm_router_shadow_verdicts_total", "Shadow judge verdicts on answers from lower tiers.",
            ["rule", "task", "verdict"], registry=r,
        )
        self._shadow_cost = Counter("llm_router_shadow_cost_usd_total", "USD spent on shadow judging.", registry=r)
        self._shadow_skipped = Counter("llm_router_shadow_skipped_total", "Requests sampled for judging but not judged.",
                                       ["reason"], registry=r)
        self._shadow_objective = Gauge("llm_router_shadow_min_acceptance",
                                       "policy.shadow.min_acceptance: the share of acceptable verdicts a rule should keep.",
                                       multiprocess_mode="livemax", registry=r)

        #: Pending until ``publish``: counter child -> amount; histogram child -> [count per bucket..., sum].
        self._counts: defaultdict[Any, float] = defaultdict(float)
        self._observed: dict[Any, list[float]] = {}
        self._reload_children = {ok: self._reloads.labels("success" if ok else "failure") for ok in (True, False)}
        self._request_children: dict[tuple[str, ...], Any] = {}
        self._money_children: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._children: dict[tuple[int | str, ...], Any] = {}
        self._version: str | None = None
        self._reload_ok.set(1)
        self.configure(
            backends=backends, tiers=tiers, tenants=tenants, tasks=tasks, rules=rules, version=version, keys=keys, routes=routes
        )

    def configure(
        self,
        *,
        backends: Iterable[str],
        tiers: Iterable[str],
        tenants: Iterable[str],
        tasks: Iterable[str],
        rules: Iterable[str],
        version: str,
        keys: Iterable[str] = (),
        routes: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Adopt a (re)loaded config's label sets and version. Series of removed names keep their totals.

        ``tenants`` should cover the client keys' tenants and the tenant budgets' names; ``keys``
        the client keys' names (for key budgets); ``rules`` every rule name the pipeline reports,
        including synthetic ones such as ``requested-model``; ``routes`` the (from, to) backend
        pairs a fallback can take. The known series of the event counters (fallbacks, retries,
        classifier decisions) are exported at 0 from the start, so rates and alerts over them
        have data before the first event (Prometheus' "avoid missing metrics").
        """
        tenant_labels = _known(tenants)
        labels = _LabelSets(
            tiers=_known(tiers),
            backends=_known(backends),
            tenants=tenant_labels,
            tasks=_known(tasks),
            rules=_known(rules),
            budget_names={"global": {None: "global", "": "global"}, "tenant": tenant_labels, "key": _known(keys)},
        )
        known_backends: dict[str | None, _Backend] = {}
        for name in labels.backends.values():
            if name != NONE:
                known_backends[name] = self._backend_children(name)
                self._child(self._in_flight, name)  # export 0 rather than nothing before the first request
                self._child(self._breaker, name)
                for kind in get_args(FailureKind):
                    self._child(self._retries, name, kind)
        self._labels, self._backends = labels, known_backends
        for src, dst in routes:
            for reason in FALLBACK_REASONS:
                self._child(self._fallbacks, labels.backends.get(src, OTHER), labels.backends.get(dst, OTHER), reason)
        for task in labels.tasks.values():
            if task != NONE:
                self._child(self._classified, task)
        if version != self._version:
            if self._version is not None:
                self._config_info.labels(self._version).set(0)
                if self.multiprocess_dir is None:
                    self._config_info.remove(self._version)
            self._config_info.labels(version).set(1)
            self._version = version

    def _backend_children(self, label: str) -> _Backend:
        return _Backend(
            label=label,
            duration=self._duration.labels(label),
            ttft=self._ttft.labels(label),
            input_tokens=self._tokens.labels(label, "input"),
            output_tokens=self._tokens.labels(label, "output"),
        )

    def _backend(self, name: str | None) -> _Backend:
        series = self._backends.get(name)
        if series is None:
            label = OTHER if name else NONE
            series = self._backends.get(label)
            if series is None:
                series = self._backends[label] = self._backend_children(label)
        return series

    def _child(self, metric: Counter | Gauge | Histogram, *labels: str) -> Any:
        """``metric.labels(*labels)``, cached; ``labels`` are already folded, so the cache is bounded."""
        key: tuple[int | str, ...] = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def request_finished(
        self,
        *,
        tier: str | None,
        backend: str | None,
        rule: str | None,
        task: str | None,
        status: int,
        stream: bool,
        tenant: str | None,
        duration_s: float,
        ttft_s: float | None,
        overhead_s: float,
        input_tokens: int,
        output_tokens: int,
        cost_usd: float,
        saved_usd: float,
        path: str = "/v1/chat/completions",
    ) -> None:
        """Record one finished request (any status) to ``path``. ``saved_usd`` below zero counts as nothing saved."""
        labels = self._labels
        b = self._backend(backend)
        key = (
            labels.tiers.get(tier, OTHER),
            b.label,
            labels.rules.get(rule, OTHER),
            labels.tasks.get(task, OTHER),
            _STATUS_CLASSES.get(status // 100, OTHER),
            _STREAM[bool(stream)],
        )
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self._requests.labels(*key)
        counts = self._counts
        counts[child] += 1.0
        endpoint = ENDPOINTS.get(path, OTHER)
        counts[self._child(self._endpoint_requests, endpoint, key[4])] += 1.0
        self._observe(self._child(self._endpoint_duration, endpoint), LATENCY_BOUNDS, duration_s)
        if endpoint != "embeddings":  # a backend's latency is its answers'
            self._observe(b.duration, LATENCY_BOUNDS, duration_s)
        if ttft_s is not None:
            self._observe(b.ttft, LATENCY_BOUNDS, ttft_s)
        self._observe(self._overhead, OVERHEAD_BOUNDS, overhead_s)
        if input_tokens:
            counts[b.input_tokens] += input_tokens
        if output_tokens:
            counts[b.output_tokens] += output_tokens
        if cost_usd > 0 or saved_usd > 0:
            money_key = (b.label, labels.tenants.get(tenant, OTHER))
            money = self._money_children.get(money_key)
            if money is None:
                money = self._money_children[money_key] = (self._cost.labels(*money_key), self._saved.labels(*money_key))
            if cost_usd > 0:
                counts[money[0]] += cost_usd
            if saved_usd > 0:
                counts[money[1]] += saved_usd

    def endpoint_answered(self, path: str, status: int, duration_s: float) -> None:
        """Record a request that generates nothing (``POST /v1/messages/count_tokens``): its endpoint's count
        and duration only, so requests, tokens and the gateway's overhead stay those of generations."""
        endpoint = ENDPOINTS.get(path, OTHER)
        self._counts[self._child(self._endpoint_requests, endpoint, _STATUS_CLASSES.get(status // 100, OTHER))] += 1.0
        self._observe(self._child(self._endpoint_duration, endpoint), LATENCY_BOUNDS, duration_s)

    def _observe(self, histogram: Any, bounds: tuple[float, ...], value: float) -> None:
        pending = self._observed.get(histogram)
        if pending is None:
            pending = self._observed[histogram] = [0.0] * (len(bounds) + 1)
        pending[bisect_left(bounds, value)] += 1  # the first bucket whose upper bound is >= value
        pending[-1] += value

    def publish(self) -> None:
        """Hand what ``request_finished`` and ``classified`` recorded to prometheus_client: one update per series.

        Histograms are updated through their children's bucket and sum values (prometheus_client's
        ``observe`` takes one observation at a time); a test compares the result with ``observe``'s.
        """
        counts, self._counts = self._counts, defaultdict(float)
        for child, amount in counts.items():
            child.inc(amount)
        observed, self._observed = self._observed, {}
        for histogram, pending in observed.items():
            buckets = histogram._buckets
            for i, n in enumerate(pending[:-1]):
                if n:
                    buckets[i].inc(n)
            histogram._sum.inc(pending[-1])

    def classified(self, task: str) -> None:
        self._counts[self._child(self._classified, self._labels.tasks.get(task, OTHER))] += 1.0

    def fallback(self, src: str, dst: str, reason: str) -> None:
        """The plan moved from backend ``src`` to ``dst``; ``reason`` is one of ``REASONS``."""
        self._child(self._fallbacks, self._backend(src).label, self._backend(dst).label, _reason(reason)).inc()

    def retry(self, backend: str, reason: str) -> None:
        """Another attempt on the same ``backend``; ``reason`` is one of ``REASONS``."""
        self._child(self._retries, self._backend(backend).label, _reason(reason)).inc()

    def breaker_state(self, backend: str, state: BreakerState) -> None:
        """Fits ``PolicyState(on_breaker=...)``: called on every breaker transition."""
        self._child(self._breaker, self._backend(backend).label).set(BREAKER_VALUES[state])

    def in_flight(self, backend: str) -> AbstractContextManager[None]:
        """Context manager counting one upstream request in progress on ``backend``."""
        return self._child(self._in_flight, self._backend(backend).label).track_inprogress()  # type: ignore[no-any-return]

    def budget(self, scope: str, name: str | None, period: str, *, remaining_usd: float, limit_usd: float) -> None:
        """One budget limit's state: ``scope`` global|tenant|key, ``name`` the tenant or key name, ``period`` day|month."""
        names = self._labels.budget_names.get(scope)
        labels = (scope, names.get(name, OTHER), _PERIODS.get(period, OTHER)) if names else (OTHER, OTHER, OTHER)
        self._child(self._budget_remaining, *labels).set(remaining_usd)
        self._child(self._budget_limit, *labels).set(limit_usd)

    def state_backend(self, up: bool) -> None:
        """Fits ``PolicyState(on_state=...)``: the shared state store went up or down."""
        self._state_up.set(1 if up else 0)

    def ledger_buffered(self, rows: int) -> None:
        self._ledger_buffered.set(rows)

    def ledger_dropped(self, total: int) -> None:
        """The ledger's count of dropped rows since start (the counter takes what is new since the last call)."""
        if total > self._ledger_dropped_seen:
            self._ledger_dropped.inc(total - self._ledger_dropped_seen)
            self._ledger_dropped_seen = total

    def price(self, backend: str, *, input_usd_per_mtok: float, output_usd_per_mtok: float) -> None:
        label = self._backend(backend).label
        self._child(self._price, label, "input").set(input_usd_per_mtok)
        self._child(self._price, label, "output").set(output_usd_per_mtok)

    def shadow_verdict(self, rule: str, task: str, verdict: str, cost_usd: float) -> None:
        """A shadow judge's ``verdict`` (one of ``SHADOW_VERDICTS``) on a request routed by ``rule``."""
        labels = self._labels
        verdict = verdict if verdict in SHADOW_VERDICTS else OTHER
        self._child(self._shadow_verdicts, labels.rules.get(rule, OTHER), labels.tasks.get(task, OTHER), verdict).inc()
        if cost_usd > 0:
            self._shadow_cost.inc(cost_usd)

    def shadow_skipped(self, reason: str) -> None:
        """A sampled request not judged; ``reason`` is one of ``SHADOW_SKIPS``."""
        self._child(self._shadow_skipped, reason if reason in SHADOW_SKIPS else OTHER).inc()

    def shadow_objective(self, min_acceptance: float) -> None:
        self._shadow_objective.set(min_acceptance)

    def config_reload(self, ok: bool) -> None:
        """A reload attempt; on success also call ``configure`` with the new config."""
        self._reload_children[ok].inc()
        self._reload_ok.set(1 if ok else 0)

    def render(self) -> tuple[bytes, str]:
        """The exposition body and its content type; in multi-worker mode, every worker's values merged."""
        self.publish()
        if self.multiprocess_dir is None:
            return generate_latest(self.registry), CONTENT_TYPE
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=self.multiprocess_dir)
        return generate_latest(merged), CONTENT_TYPE

    def close(self) -> None:
        """Call at worker shutdown: publish, then (multi-worker mode) drop this process's live gauges."""
        self.publish()
        if self.multiprocess_dir is not None:
            mark_process_dead(os.getpid(), self.multiprocess_dir)


def _reason(reason: str) -> str:
    return reason if reason in _REASON_SET else OTHER


_REASON_SET = frozenset(REASONS)
