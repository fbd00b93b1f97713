"""Accounting for finished requests: cost, budget settlement, stickiness, metrics, access log, ledger.

Called exactly once per request (``Trace.finished`` guards it), whether it succeeded, failed, or
its client went away, so spend is never lost and never double-counted.
"""

from __future__ import annotations

import time

from router.accesslog import AccessLog
from router.auth import ClientKey
from router.config import GatewayConfig
from router.cost import Usage, usage_cost, usage_from
from router.evaluate import inputs
from router.evaluate.shadow import ShadowJudge
from router.ledger import PENDING_STATUS, LedgerRow
from router.metrics import Metrics
from router.policy import Candidate
from router.rules import EMBEDDINGS_TASK
from router.state import PolicyState
from router.trace import Trace


class Accountant:
    def __init__(self, config: GatewayConfig, state: PolicyState, metrics: Metrics, *,
                 shadow: ShadowJudge | None = None) -> None:
        self.config = config
        self.shadow = shadow
        self.state = state
        self.metrics = metrics
        self.access_log = AccessLog(include_prompts=config.server.log_prompts)
        ranks = config.tier_rank
        self._ranks = ranks
        self._lowest_rank = min(ranks.values())
        top = max(ranks, key=ranks.__getitem__)
        self._reference_price = config.backends[config.tiers[top][0]].price
        self._record_decisions = config.policy.ledger.record_decisions
        self._rule_headers = inputs.rule_headers(config.rules)

    def begin(self, trace: Trace, candidate: Candidate, estimate_usd: float) -> None:
        """Write-ahead: from the start of its upstream call on ``candidate``, the ledger holds a row
        billing the request at ``estimate_usd`` until ``finish`` replaces it (kept if the process dies)."""
        ledger = self.state.ledger
        if ledger is None:
            return
        ledger.begin(
            LedgerRow(
                ts=time.time(), request_id=trace.unique_id, tenant=trace.client.tenant, key=trace.client.name,
                backend=candidate.backend, tier=candidate.tier, model=candidate.config.model,
                input_tokens=trace.route.features.input_tokens, output_tokens=0, cost_usd=estimate_usd, estimated=True,
                status=PENDING_STATUS, latency_ms=0.0, attempts=trace.attempts, fallback=None,
            )
        )

    def price(self, trace: Trace) -> None:
        """Set the served request's usage and cost (for the answer's cost header, before ``finish``)."""
        candidate = trace.served
        if candidate is None or trace.usage is not None:
            return
        produced = trace.output_chars > 0 or trace.usage_reported is not None
        trace.usage = usage_from(
            trace.usage_reported, input_estimate=trace.route.features.input_tokens, output_chars=trace.output_chars
        )
        price = self.state.price(candidate.backend, candidate.config)
        trace.cost = usage_cost(price, trace.usage) if produced else 0.0

    def finish(self, trace: Trace) -> None:
        """Account for the request exactly once: cost, budget settlement, ledger, stickiness."""
        if trace.finished:
            return
        trace.finished = True
        now = time.perf_counter()
        candidate = trace.served
        if candidate is not None:
            self.price(trace)
            backend = self.state.backends.get(candidate.backend)
            if backend is not None:
                backend.load.finished()
                if trace.route.features.task != EMBEDDINGS_TASK:  # max_ttft_ms and decide read generation's latency
                    backend.load.observe(ttft=trace.ttft, total=now - trace.started)
                if backend.gpu_cost is not None and backend.gpu_cost.source == "gateway" and trace.usage is not None:
                    backend.gpu_cost.throughput.count(trace.usage.input_tokens + trace.usage.output_tokens)
            if trace.in_flight is not None:
                trace.in_flight.__exit__(None, None, None)
            if trace.status < 400 and self._ranks.get(candidate.tier, 0) > self._lowest_rank:
                stickiness = self.config.policy.stickiness
                if stickiness.enabled and "messages" in trace.body:
                    self.state.remember_sticky(trace.body["messages"], trace.client.tenant, candidate.tier, stickiness.ttl_seconds)
        if trace.reservation is not None:
            self.state.settle(trace.reservation, trace.cost)
            trace.reservation = None
        if trace.rate is not None:
            usage = trace.usage
            self.state.settle_rate(trace.rate, usage.input_tokens + usage.output_tokens if usage else 0)
            trace.rate = None
        self._record_metrics(trace, now)
        usage = trace.usage
        self.access_log.request(
            request_id=trace.request_id, method="POST", path=trace.path, status=trace.status,
            latency_s=now - trace.started, stream=trace.stream,
            tier=candidate.tier if candidate else None, backend=candidate.backend if candidate else None,
            rule=trace.route.decision.rule, task=trace.route.features.task, tenant=trace.client.tenant,
            key=trace.client.name, ttft_s=trace.ttft if trace.stream else None,
            input_tokens=usage.input_tokens if usage else 0, output_tokens=usage.output_tokens if usage else 0,
            cost_usd=trace.cost, attempts=trace.attempts,
            fallback="{}->{}:{}".format(*trace.fallback) if trace.fallback else None,
            messages=trace.body.get("messages"),
        )
        if self.state.ledger is not None and candidate is None and trace.attempts:
            self.state.ledger.discard(trace.unique_id)  # no upstream answered: nothing to bill
        if self.state.ledger is not None and candidate is not None:
            usage = trace.usage or Usage(0, 0, True)
            self.state.ledger.record(
                LedgerRow(
                    ts=time.time(),
                    request_id=trace.unique_id,
                    tenant=trace.client.tenant,
                    key=trace.client.name,
                    backend=candidate.backend,
                    tier=candidate.tier,
                    model=candidate.config.model,
                    input_tokens=usage.input_tokens,
                    output_tokens=usage.output_tokens,
                    cost_usd=trace.cost,
                    estimated=usage.estimated,
                    status=trace.status,
                    latency_ms=(time.perf_counter() - trace.started) * 1000,
                    attempts=trace.attempts,
                    fallback=f"{trace.fallback[0]}->{trace.fallback[1]}" if trace.fallback else None,
                    decision=self._decision(trace) if self._record_decisions else None,
                )
            )
        if self.shadow is not None:
            self.shadow.consider(trace)

    def _decision(self, trace: Trace) -> str | None:
        route = trace.route
        if route.context is None:
            return None
        body = trace.body
        return inputs.encode(
            route.features, route.context, rule=route.decision.rule,
            tier=route.plan.candidates[0].tier if route.plan.candidates else None,
            max_output_tokens=body.get("max_completion_tokens") or body.get("max_tokens") or 0,
            headers=self._rule_headers,
        )

    def reject(self, request_id: str, status: int, started: float, path: str = "/v1/chat/completions") -> None:
        """Account for a request refused before it could be routed (auth, parsing, unknown model)."""
        duration = time.perf_counter() - started
        self.metrics.request_finished(
            tier=None, backend=None, rule=None, task=None, status=status, stream=False, tenant=None,
            duration_s=duration, ttft_s=None, overhead_s=duration, input_tokens=0, output_tokens=0,
            cost_usd=0.0, saved_usd=0.0, path=path,
        )
        self.access_log.request(request_id=request_id, method="POST", path=path, status=status, latency_s=duration)

    def counted(
        self, request_id: str, path: str, status: int, started: float, *, client: ClientKey | None = None,
        rule: str | None = None, backend: str | None = None, input_tokens: int = 0,
    ) -> None:
        """Account for a token count (answered or refused): its endpoint's metrics and an access-log line;
        no spend, ledger row or generation metrics, as nothing was generated."""
        duration = time.perf_counter() - started
        self.metrics.endpoint_answered(path, status, duration)
        self.access_log.request(
            request_id=request_id, method="POST", path=path, status=status, latency_s=duration, rule=rule,
            backend=backend, tenant=client.tenant if client else None, key=client.name if client else None,
            input_tokens=input_tokens,
        )

    def _record_metrics(self, trace: Trace, now: float) -> None:
        candidate = trace.served
        usage = trace.usage
        answered = trace.answered_at or now
        if trace.route.features.task != EMBEDDINGS_TASK:  # the classifier's decisions, not the embeddings' scan
            self.metrics.classified(trace.route.features.task)
        self.metrics.request_finished(
            tier=candidate.tier if candidate else None,
            backend=candidate.backend if candidate else None,
            rule=trace.route.decision.rule,
            task=trace.route.features.task,
            status=trace.status,
            stream=trace.stream,
            tenant=trace.client.tenant,
            duration_s=now - trace.started,
            ttft_s=trace.ttft if trace.stream else None,
            overhead_s=max(0.0, answered - trace.started - trace.upstream_seconds),
            input_tokens=usage.input_tokens if usage else 0,
            output_tokens=usage.output_tokens if usage else 0,
            cost_usd=trace.cost,
            saved_usd=self.saved_usd(trace),
            path=trace.path,
        )

    def saved_usd(self, trace: Trace) -> float:
        """What the same tokens would have cost on the most expensive tier, minus what they cost."""
        if trace.usage is None:
            return 0.0
        reference = usage_cost(self._reference_price, trace.usage)
        return max(0.0, reference - trace.cost)
