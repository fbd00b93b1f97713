"""The request's path, written once: classify -> rules -> policy -> upstream -> accounting.

A ``Pipeline`` is everything derived from one loaded config. It is immutable; a config reload
builds a new one and swaps it in, so a request always sees one consistent config. What must
outlive a reload (breakers, budgets, latency, the ledger) lives in ``PolicyState``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from router import ratelimit
from router.accounting import Accountant
from router.auth import ClientKey, KeyRing
from router.budget import Exceeded, Reservation
from router.classify import Classifier, Features
from router.classify_model import model_text
from router.config import AUTO_MODEL, FailureKind, GatewayConfig
from router.cost import completion_chars, cost_usd, reserved_output_tokens
from router.errors import (
    GatewayError,
    InvalidRequestError,
    ModelNotFoundError,
    RateLimitError,
    ServiceUnavailableError,
    UpstreamClientError,
    UpstreamError,
    UpstreamRateLimitError,
    UpstreamTimeoutError,
)
from router.evaluate.shadow import ShadowJudge
from router.metrics import Metrics
from router.policy import Candidate, Plan, Planner
from router.retry import backoff_delay, parse_retry_after
from router.rules import (
    REQUESTED_MODEL,
    CompiledRule,
    Decision,
    RequestContext,
    Target,
    compile_rules,
    match_rules,
)
from router.shared import StateUnavailableError
from router.state import PolicyState
from router.trace import Route, Trace
from router.upstream.base import CONTEXT_LENGTH_CODE, Batch, Chunk, Completion, Provider

log = logging.getLogger("router.pipeline")

T = TypeVar("T")


@dataclass(slots=True)
class Stream:
    """An upstream stream that has produced its first content: safe to start answering the client."""

    candidate: Candidate
    head: list[Chunk]
    head_done: bool
    rest: AsyncIterator[Batch]
    deadline: float
    idle: float

    async def batches(self) -> AsyncIterator[Batch]:
        """The head, then the rest as it arrives, each read bounded by the idle timeout and the total deadline."""
        yield self.head, self.head_done
        if self.head_done:
            return
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with asyncio.timeout_at(min(loop.time() + self.idle, self.deadline)):
                    batch = await anext(self.rest)
            except StopAsyncIteration:
                return
            except TimeoutError as exc:
                raise UpstreamTimeoutError(
                    f"Backend {self.candidate.backend!r} stalled mid-stream.", code="upstream_stream_stalled"
                ) from exc
            yield batch

    async def aclose(self) -> None:
        await self.rest.aclose()  # type: ignore[attr-defined]


class Pipeline:
    def __init__(
        self,
        config: GatewayConfig,
        providers: Mapping[str, Provider],
        keyring: KeyRing,
        state: PolicyState,
        metrics: Metrics,
        classifier: Classifier | None = None,
    ) -> None:
        """``classifier``: the config's, compiled already (a reload compiles it off the event loop)."""
        self.config = config
        self.keyring = keyring
        self.providers = providers
        self.state = state
        #: The backends' health and load as of this config: a request runs to its end on the pipeline
        #: it started on, even after a reload removed one of its backends.
        self.backends = state.backends
        self.metrics = metrics
        if classifier is None:
            classifier = Classifier(config.classifier.vocabulary, config.classifier.model)
        self.classifier = classifier
        self.rules: tuple[CompiledRule, ...] = compile_rules(config.rules)
        self.planner = Planner(config)
        tiers = config.tiers
        # A tier wins over a backend of the same name (a backend `mid` in tier `mid` is common).
        self._forced: dict[str, Target] = {name: Target(backend=name) for name in config.backends}
        self._forced.update({tier: Target(tier=tier) for tier in tiers})
        for alias, target in config.aliases.items():
            if target != AUTO_MODEL:
                self._forced[alias] = self._forced[target]
        self.model_names: tuple[str, ...] = tuple(dict.fromkeys((AUTO_MODEL, *tiers, *config.backends, *config.aliases)))
        shadow = config.policy.shadow
        self.shadow = ShadowJudge(shadow, config, providers, state, metrics) if shadow is not None else None
        self.accountant = Accountant(config, state, metrics, shadow=self.shadow)

    # -- classify -> rules -> policy -------------------------------------------------------------

    def route(
        self, body: dict[str, Any], client: ClientKey, headers: Mapping[str, str], *, sticky_tier: str | None = None
    ) -> Route:
        """Classify, match the rules and plan. With shared state (Redis) the conversation's sticky
        tier is looked up at admission (``_admit``), in the same round trip as the rate limits;
        ``sticky_tier`` is one already known (a stored Responses conversation's)."""
        model = body["model"]
        if model != AUTO_MODEL and model not in self.config.aliases and model not in self._forced:
            raise ModelNotFoundError(
                f"The model '{model}' does not exist. Available models: {', '.join(self.model_names)}.", param="model"
            )
        messages = body["messages"]
        features = self.classify(messages, body.get("tools") or body.get("functions"))
        ctx = RequestContext(model=model, tenant=client.tenant, api_key=client.name, headers=headers)
        decision = self.decide(features, ctx)
        sticky = sticky_tier
        if sticky is None and self.config.policy.stickiness.enabled and len(messages) >= 3 and self.state.store is None:
            sticky = self.state.sticky.tier_of(messages, client.tenant)
        return Route(features, decision, self._plan(body, features, decision, sticky), ctx)

    def _plan(self, body: dict[str, Any], features: Features, decision: Decision, sticky: str | None) -> Plan:
        return self.planner.plan(
            decision,
            features,
            self.backends,
            max_output_tokens=body.get("max_completion_tokens") or body.get("max_tokens") or 0,
            sticky_tier=sticky,
        )

    def decide(self, features: Features, ctx: RequestContext) -> Decision:
        """The rules' decision for a classified request (also how ``llm-router replay`` re-decides)."""
        forced = self._forced.get(ctx.model)
        if forced is not None:
            return Decision(rule=REQUESTED_MODEL, target=forced, why=f"client asked for model {ctx.model!r}")
        return match_rules(features, ctx, self.rules)

    def classify(self, messages: list[dict[str, Any]], tools: Any) -> Features:
        """The classifier's features of ``messages``; if the classifier fails, features that keep the
        request self-hosted (treated as holding personal data)."""
        try:
            return self.classifier.classify(messages, tools)
        except Exception:  # noqa: BLE001 - a detector failure must fail safe, not open
            log.exception("classifier failed; treating the request as sensitive")
            return _fail_safe_features(messages)

    def explain(
        self, route: Route, client: ClientKey, messages: list[Any], body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The ``/v1/router/decide`` answer: the route, why (the cues that fired and the n-grams that pushed
        the model most), and the state each planned backend is in. ``body`` bounds the cost estimate
        (``max_tokens``, ``n``); without it the estimate is that of an unbounded request."""
        plan = route.plan
        first = plan.candidates[0] if plan.candidates else None
        chain = []
        for c in plan.candidates:
            state = self.backends[c.backend]
            chain.append(
                {
                    "backend": c.backend,
                    "tier": c.tier,
                    "model": c.config.model,
                    "breaker": state.breaker.snapshot(),
                    "load": state.load.snapshot(),
                    "capacity": state.capacity.snapshot() if state.capacity else None,
                    "estimated_cost_usd": round(self._estimate(body or {}, route, c), 8),
                    "price_usd_per_mtok": self._price(c),
                }
            )
        notes = _effort_notes((body or {}).get("reasoning_effort"), plan.candidates)
        return {
            "tier": first.tier if first else None,
            "backend": first.backend if first else None,
            "model": first.config.model if first else None,
            "rule": route.decision.rule,
            "task": route.features.task,
            "reason": "; ".join((route.reason(), *notes)),
            "notes": notes,
            "features": route.features.as_dict(),
            "cues": list(route.features.evidence),
            "model_push": self._model_push(messages),
            "plan": {**plan.as_dict(), "chain": chain},
            "budgets": self.state.budgets.snapshot(tenant=client.tenant, key=client.name),
        }

    def _price(self, c: Candidate) -> dict[str, Any]:
        """The price a candidate is billed at now; for GPU-priced backends, how it was measured."""
        gpu = self.state.backends[c.backend].gpu_cost
        if gpu is not None:
            return {**gpu.snapshot(), "from": "gpu_hour" if gpu.usd_per_mtok is not None else "table"}
        return {"input": c.config.price.input, "output": c.config.price.output, "from": "table"}

    def _model_push(self, messages: list[Any]) -> list[dict[str, Any]]:
        """The words that moved the model's escalation most: positive towards the flagship."""
        model = self.classifier.model
        if model is None:
            return []
        return [{"feature": name, "escalation_logit": value} for name, value in model.explain(model_text(messages))]

    # -- upstream ----------------------------------------------------------------------------------

    def upstream_body(self, body: dict[str, Any], candidate: Candidate) -> dict[str, Any]:
        """The client's body with the upstream's model name, its output-token limit under the name the
        backend takes, without ``reasoning_effort`` where the backend takes none; on streams, ask for usage."""
        config = candidate.config
        out = {**body, "model": config.model}
        if not config.reasoning_effort and "reasoning_effort" in out:
            del out["reasoning_effort"]
        field = config.max_tokens_field
        if field is not None:
            other = "max_tokens" if field == "max_completion_tokens" else "max_completion_tokens"
            if other in out:
                limit = out.pop(other)
                if out.get(field) is None:
                    out[field] = limit
        if body.get("stream") and config.stream_usage:
            out["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        return out

    async def complete(self, trace: Trace, call: Callable[[Candidate], Awaitable[Completion]] | None = None) -> Completion:
        """The upstream's answer; ``call`` replaces the chat-completions call (e.g. a native Responses call)."""

        async def attempt(candidate: Candidate) -> Completion:
            timeout = candidate.config.timeouts.total
            try:
                async with asyncio.timeout(timeout):
                    if call is not None:
                        return await call(candidate)
                    return await self.providers[candidate.backend].complete(self.upstream_body(trace.body, candidate))
            except TimeoutError as exc:
                raise UpstreamTimeoutError(f"Backend {candidate.backend!r} did not answer within {timeout:g}s.") from exc

        completion = await self._dispatch(trace, attempt)
        trace.answer = completion.data
        trace.usage_reported = completion.data.get("usage")
        trace.output_chars = completion_chars(completion.data)
        return completion

    async def open_stream(self, trace: Trace, call: Callable[[Candidate], AsyncIterator[Batch]] | None = None) -> Stream:
        """Start the upstream stream and read up to its first content, so failures keep a status code.

        ``call`` replaces the chat-completions stream (e.g. a native Responses stream)."""

        async def attempt(candidate: Candidate) -> Stream:
            timeouts = candidate.config.timeouts
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeouts.total
            if call is not None:
                chunks = call(candidate)
            else:
                chunks = self.providers[candidate.backend].stream(self.upstream_body(trace.body, candidate))
            head: list[Chunk] = []
            done = False
            try:
                async with asyncio.timeout_at(min(loop.time() + timeouts.first_token, deadline)):
                    async for batch, done in chunks:
                        head += batch
                        if done or any(_has_content(chunk.data) for chunk in batch):
                            break
            except TimeoutError as exc:
                await chunks.aclose()  # type: ignore[attr-defined]
                raise UpstreamTimeoutError(
                    f"Backend {candidate.backend!r} sent no first token within {timeouts.first_token:g}s."
                ) from exc
            except BaseException:
                await chunks.aclose()  # type: ignore[attr-defined]
                raise
            return Stream(candidate, head, done, chunks, deadline, timeouts.idle)

        return await self._dispatch(trace, attempt)

    async def dispatch(self, trace: Trace, attempt: Callable[[Candidate], Awaitable[T]]) -> T:
        """The plan's attempts (retries, breakers, budgets) around a call of the caller's own (embeddings)."""
        return await self._dispatch(trace, attempt)

    async def _dispatch(self, trace: Trace, attempt: Callable[[Candidate], Awaitable[T]]) -> T:
        """Try the plan's candidates in order with retries, breakers and budgets; return the first success."""
        await self._admit(trace)
        plan = trace.route.plan
        if plan.refusal is not None:
            if trace.rate is not None:  # never sent: it takes nothing from the rate limits
                self.state.settle_rate(trace.rate, 0, refund=True)
                trace.rate = None
            raise self._refused(plan)
        retries = self.config.policy.retries
        fallback_on = set(self.config.policy.fallback_on)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + retries.deadline_seconds
        self.state.retry_budget.record_request()
        last_error: GatewayError | None = None
        previous: Candidate | None = None
        skipped: str | None = None
        #: Seconds until the first open breaker that turned this request away admits a probe again.
        cooling: float | None = None
        for candidate in (*plan.candidates, *plan.downgrades):
            if trace.attempts >= retries.max_attempts or loop.time() >= deadline:
                break
            if candidate in plan.downgrades and skipped != "budget":
                break  # the cheaper tier is only for requests the budget cannot afford elsewhere
            if previous is not None and last_error is not None and _failure_kind(last_error) == "context_length":
                if candidate.config.context_window <= previous.config.context_window:
                    continue  # only a larger window can help
            backend = self.backends[candidate.backend]
            if not backend.breaker.allow():
                skipped = skipped or "breaker_open"
                wait = backend.breaker.retry_in()
                cooling = wait if cooling is None else min(cooling, wait)
                if last_error is None:
                    last_error = ServiceUnavailableError(f"Backend {candidate.backend!r} is unavailable (circuit open).")
                    trace.attempted = candidate
                continue
            held = self._reserve(trace, candidate)
            if held is None:  # this process's share of a shared budget must grow first
                held = await self._acquire_shared(trace)
            if not held:
                skipped = skipped or "budget"
                continue
            assert trace.reservation is not None
            self.accountant.begin(trace, candidate, trace.reservation.amount)  # the write-ahead row
            if previous is not None or skipped is not None:
                reason = _failure_kind(last_error) if last_error is not None and previous is not None else skipped
                source = previous.backend if previous is not None else plan.candidates[0].backend
                trace.fallback = (source, candidate.backend, reason or "other")
                if skipped == "budget" and previous is None:
                    trace.downgraded = "budget"
            if trace.fallback is not None and trace.fallback[1] == candidate.backend:
                self.metrics.fallback(*trace.fallback)
            same_backend = 0
            trace.attempted = candidate
            while True:
                trace.attempts += 1
                backend.load.started()
                in_flight = self.metrics.in_flight(candidate.backend)
                in_flight.__enter__()  # left when the request finishes (streams: when the relay ends)
                started = time.perf_counter()
                try:
                    result = await attempt(candidate)
                except UpstreamError as exc:
                    trace.upstream_seconds += time.perf_counter() - started
                    backend.load.finished()
                    in_flight.__exit__(None, None, None)
                    kind = _failure_kind(exc)
                    _log_failed_attempt(trace, candidate, exc, kind)
                    if kind in ("client", "context_length"):
                        backend.breaker.record_success()  # the backend is healthy; the request is the problem
                    else:
                        backend.breaker.record_failure()
                    if kind not in fallback_on:
                        raise self._final(trace, exc) from None
                    last_error = exc
                    retry_here = (
                        exc.retryable
                        and kind != "context_length"
                        and same_backend < retries.same_backend_retries
                        and trace.attempts < retries.max_attempts
                        and self.state.retry_budget.try_spend()
                    )
                    if retry_here:
                        delay = backoff_delay(
                            same_backend,
                            base=retries.backoff_base_seconds,
                            cap=retries.backoff_cap_seconds,
                            retry_after=parse_retry_after(exc.headers.get("retry-after")),
                            remaining=deadline - loop.time(),
                        )
                        if delay is not None:
                            same_backend += 1
                            trace.retries += 1
                            self.metrics.retry(candidate.backend, kind)
                            await asyncio.sleep(delay)
                            continue
                    break
                except BaseException:
                    backend.load.finished()
                    in_flight.__exit__(None, None, None)
                    backend.breaker.release()
                    raise
                now = time.perf_counter()
                trace.upstream_seconds += now - started
                backend.breaker.record_success()
                trace.served = candidate
                trace.in_flight = in_flight
                if self.shadow is not None:
                    self.shadow.select(trace)
                trace.ttft = now - trace.started
                if plan.rerouted is not None and candidate == plan.candidates[0]:
                    trace.rerouted = plan.rerouted
                return result
            previous = candidate
            self._release(trace)
        if last_error is None:
            last_error = self._budget_error(trace) or ServiceUnavailableError("No backend could take the request.")
        elif cooling is not None and isinstance(last_error, ServiceUnavailableError):
            # Only open breakers turned it away: the SDK may retry, once the first of them half-opens.
            last_error.headers = {**last_error.headers, "retry-after": str(max(1, math.ceil(cooling)))}
        raise self._final(trace, last_error)

    def _refused(self, plan: Plan) -> GatewayError:
        """Nothing may serve the request: too long for every window the request may use, which no retry changes."""
        assert plan.refusal is not None
        if plan.pii_locked:
            error: GatewayError = ServiceUnavailableError(plan.refusal, code="no_allowed_backend")
            error.retryable = False
            return error
        largest = max(backend.context_window for backend in self.config.backends.values())
        return InvalidRequestError(
            f"{plan.refusal} The largest context window here is {largest} tokens, for the prompt and "
            "max_tokens together: shorten the messages or lower max_tokens.",
            param="messages",
            code=CONTEXT_LENGTH_CODE,
        )

    def _final(self, trace: Trace, error: GatewayError) -> GatewayError:
        """The error the client gets; once the gateway retried or failed over, it tells the SDK not to retry."""
        self._release(trace)
        if trace.attempts > 1 or trace.fallback is not None:
            error.retryable = False
        error.headers = {**error.headers, **trace.headers()}
        trace.status = error.status_code
        return error

    # -- budgets and accounting --------------------------------------------------------------------

    def _estimate(self, body: dict[str, Any], route: Route, candidate: Candidate) -> float:
        """The most this request can cost on ``candidate``, as far as its body bounds it (see ``reserved_output_tokens``)."""
        unbounded = self.config.policy.budgets.expected_output_tokens
        inputs = route.features.input_tokens
        output = reserved_output_tokens(body, inputs, candidate.config.context_window, unbounded)
        return cost_usd(self.state.price(candidate.backend, candidate.config), inputs, output)

    def _reserve(self, trace: Trace, candidate: Candidate) -> bool | None:
        """Hold the estimated cost of a call to ``candidate`` in every budget that applies; None when
        a shared budget must trade with its store first (``_acquire_shared``)."""
        self._release(trace)
        estimate = self._estimate(trace.body, trace.route, candidate)
        result = self.state.budgets.reserve(tenant=trace.client.tenant, key=trace.client.name, estimate_usd=estimate)
        if isinstance(result, Reservation):
            trace.reservation = result
            shared = self.state.shared_budgets
            return True if shared is None or shared.hold(result, self.state.budgets) else None
        return self._over_budget(trace, result)

    async def _acquire_shared(self, trace: Trace) -> bool:
        reservation = trace.reservation
        shared = self.state.shared_budgets
        assert reservation is not None and shared is not None
        try:
            exceeded = await shared.acquire(reservation, self.state.budgets)
        except StateUnavailableError:
            raise self._final(trace, ServiceUnavailableError(
                "The shared budget state is unavailable and this gateway refuses budgeted requests until it is back "
                "(state.on_failure: closed).", code="state_backend_unavailable")) from None
        if exceeded is None:
            return True
        self._release(trace)
        return self._over_budget(trace, exceeded)

    def _over_budget(self, trace: Trace, exceeded: Exceeded) -> bool:
        if exceeded.action == "reject" or not trace.route.plan.allow_downgrade:
            raise self._final(trace, _budget_exceeded(exceeded))
        trace.budget_exceeded = exceeded
        return False

    async def admit_count(self, client: ClientKey) -> dict[str, str]:
        """Take one request, and no tokens, from the caller's rate limits for a token count (``POST
        /v1/messages/count_tokens``): a count is a request, and an exact one calls the upstream's own
        rate-limited count endpoint. Returns the rate-limit headers; raises ``RateLimitError`` (429) when
        refused, as ``_admit`` does for generations."""
        if not self.state.rate_limits:
            return {}
        try:
            taken, _ = await self.state.admit(client.tenant, client.name, 0)
        except StateUnavailableError:
            raise _state_unavailable() from None
        if taken is None:
            return {}
        (buckets, *_), take = taken
        headers = ratelimit.headers(buckets, take)
        if not take.admitted:
            error = _rate_limited(buckets, take)
            error.headers = {**error.headers, **headers}
            raise error
        return headers

    async def _admit(self, trace: Trace) -> None:
        """Take this request from the rate limits that apply to its caller, or refuse it (429 with
        retry-after); with Redis, in the same round trip, follow the tier any replica escalated its
        conversation to (re-planning the route). The token reservation is that of the route's first
        candidate before stickiness: an estimate, settled against the usage either way."""
        route = trace.route
        messages = trace.body.get("messages") or ()
        sticky = (
            self.state.store is not None and self.config.policy.stickiness.enabled and len(messages) >= 3
            and route.plan.rerouted != "sticky" and self.planner.may_stick(route.decision)
        )
        if not self.state.rate_limits and not sticky:
            return
        first = route.plan.candidates[0] if route.plan.candidates else None
        tokens = route.features.input_tokens
        if first is not None:
            unbounded = self.config.policy.budgets.expected_output_tokens
            tokens += reserved_output_tokens(trace.body, tokens, first.config.context_window, unbounded)
        try:
            taken, tier = await self.state.admit(
                trace.client.tenant, trace.client.name, tokens, messages if sticky else None
            )
        except StateUnavailableError:
            raise self._final(trace, _state_unavailable()) from None
        if tier is not None:
            trace.route = replace(route, plan=self._plan(trace.body, route.features, route.decision, tier))
        if taken is None:
            return
        bucket_state, take = taken
        buckets = bucket_state[0]
        trace.rate_headers = ratelimit.headers(buckets, take)
        if not take.admitted:
            raise self._final(trace, _rate_limited(buckets, take))
        trace.rate = bucket_state

    def _budget_error(self, trace: Trace) -> GatewayError | None:
        return _budget_exceeded(trace.budget_exceeded) if trace.budget_exceeded is not None else None

    def _release(self, trace: Trace) -> None:
        if trace.reservation is not None:
            self.state.settle(trace.reservation, 0.0)
            trace.reservation = None


def _rate_limited(buckets: Sequence[ratelimit.Bucket], take: ratelimit.Take) -> RateLimitError:
    """The 429 for a request the caller's rate limits refuse (retryable, after ``retry-after``)."""
    error = RateLimitError(ratelimit.refused(buckets, take), code="rate_limit_exceeded")
    error.retryable = True
    return error


def _state_unavailable() -> ServiceUnavailableError:
    return ServiceUnavailableError(
        "The shared rate-limit state is unavailable and this gateway refuses rate-limited requests until it is "
        "back (state.on_failure: closed).", code="state_backend_unavailable")


def _effort_notes(effort: Any, candidates: tuple[Candidate, ...]) -> list[str]:
    """What ``upstream_body`` does with the request's reasoning effort on each planned backend that takes none."""
    if effort is None:
        return []
    return [
        f"reasoning effort {effort!r} ignored on backend {c.backend!r} (reasoning_effort: false)"
        for c in candidates
        if not c.config.reasoning_effort
    ]


def _fail_safe_features(messages: list[dict[str, Any]]) -> Features:
    """What a request is taken to be when the classifier failed: sensitive, so it stays self-hosted."""
    size = sum(len(str(m.get("content") or "")) for m in messages)
    return Features(
        task="chat", scores={}, complexity=0.0, input_tokens=size // 4 + 4 * len(messages),
        has_tools=False, has_images=False, pii=("unverified",), signals={"classifier_failed": 1.0},
    )


def _budget_exceeded(exceeded: Exceeded) -> RateLimitError:
    return RateLimitError(str(exceeded), code="budget_exceeded")


def _failure_kind(error: GatewayError) -> FailureKind | str:
    if isinstance(error, UpstreamClientError):
        return "context_length" if error.code == CONTEXT_LENGTH_CODE else "client"
    if isinstance(error, UpstreamTimeoutError):
        return "timeout"
    if isinstance(error, UpstreamRateLimitError):
        return "rate_limit"
    if isinstance(error, UpstreamError):
        if error.code == "upstream_unreachable":
            return "connect"
        if error.code == "upstream_malformed":
            return "malformed"
        if error.code == "upstream_auth_failed":
            return "auth"
        return "server_error"
    return "other"


def _log_failed_attempt(trace: Trace, candidate: Candidate, error: UpstreamError, kind: str) -> None:
    """One warning per failed upstream call: which backend and URL (no credentials), and what failed.

    ``error`` is the class of the exception the provider converted (``ClientConnectorError``...),
    with its errno where the OS gave one, so an operator can tell a wrong port from a wrong key.
    """
    cause = error.__cause__ or error
    log.warning(
        "upstream attempt failed",
        extra={"fields": {
            "request_id": trace.request_id,
            "backend": candidate.backend,
            "url": _public_url(candidate.config.base_url),
            "attempt": trace.attempts,
            "kind": kind,
            "error": type(cause).__name__,
            "errno": getattr(cause, "errno", None),
            "strerror": getattr(cause, "strerror", None),
            "upstream_status": error.upstream_status,
            "code": error.code,
        }},
    )


def _public_url(url: str) -> str:
    """``url`` without user info, query or fragment: the parts that may carry credentials."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


#: Native Responses and Anthropic stream events that carry content (or end the stream): the
#: openings before them (``response.created``, ``message_start``, ``content_block_start``, ``ping``) are held back.
_NATIVE_CONTENT = frozenset({
    "response.output_text.delta", "response.refusal.delta", "response.function_call_arguments.delta",
    "response.output_item.done", "response.completed", "response.incomplete",
    "content_block_delta", "content_block_stop", "message_delta", "message_stop",
})


def _has_content(chunk: dict[str, Any]) -> bool:
    """True once a chunk carries something beyond the role-only opening frame."""
    if chunk.get("usage"):
        return True
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("tool_calls") or delta.get("refusal") or choice.get("finish_reason"):
            return True
    return chunk.get("type") in _NATIVE_CONTENT  # a native Responses or Anthropic event
