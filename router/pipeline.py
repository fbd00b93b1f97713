"""The request's path, written once: classify -> rules -> policy -> upstream.

A ``Pipeline`` is everything derived from one loaded config. It is immutable; a config reload
builds a new one and swaps it in, so a request always sees one consistent config.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from router.auth import ClientKey, KeyRing
from router.classify import Classifier, Features
from router.config import AUTO_MODEL, GatewayConfig
from router.errors import GatewayError, ModelNotFoundError, UpstreamTimeoutError
from router.policy import Candidate, Plan, make_plan
from router.rules import CompiledRule, Decision, RequestContext, Target, compile_rules, match_rules
from router.upstream.base import Chunk, Completion, Provider


@dataclass(frozen=True, slots=True)
class Route:
    """Why a request goes where it goes: the classification, the rule's decision and the plan."""

    features: Features
    decision: Decision
    plan: Plan

    @property
    def candidate(self) -> Candidate:
        return self.plan.primary

    def headers(self, candidate: Candidate) -> dict[str, str]:
        return {
            "x-router-tier": candidate.tier,
            "x-router-backend": candidate.backend,
            "x-router-rule": self.decision.rule,
            "x-router-task": self.features.task,
        }

    def reason(self) -> str:
        text = f"{self.decision.why}; {self.features.reason()}"
        return f"{text}; {'; '.join(self.plan.notes)}" if self.plan.notes else text

    def as_dict(self) -> dict[str, Any]:
        candidate = self.plan.primary
        return {
            "tier": candidate.tier,
            "backend": candidate.backend,
            "model": candidate.config.model,
            "rule": self.decision.rule,
            "task": self.features.task,
            "reason": self.reason(),
            "features": self.features.as_dict(),
            "plan": self.plan.as_dict(),
        }


@dataclass(slots=True)
class Stream:
    """An upstream stream that has produced its first content: safe to start answering the client."""

    candidate: Candidate
    head: list[Chunk]
    rest: AsyncIterator[Chunk]
    deadline: float
    idle: float

    async def chunks(self) -> AsyncIterator[Chunk]:
        """The head, then the rest, each read bounded by the idle timeout and the total deadline."""
        for chunk in self.head:
            yield chunk
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with asyncio.timeout_at(min(loop.time() + self.idle, self.deadline)):
                    chunk = await anext(self.rest)
            except StopAsyncIteration:
                return
            except TimeoutError as exc:
                raise UpstreamTimeoutError(
                    f"Backend {self.candidate.backend!r} stalled mid-stream.", code="upstream_stream_stalled"
                ) from exc
            yield chunk

    async def aclose(self) -> None:
        await self.rest.aclose()  # type: ignore[attr-defined]


class Pipeline:
    def __init__(self, config: GatewayConfig, providers: Mapping[str, Provider], keyring: KeyRing) -> None:
        self.config = config
        self.keyring = keyring
        self.providers = providers
        self.classifier = Classifier(config.classifier.vocabulary)
        self.rules: tuple[CompiledRule, ...] = compile_rules(config.rules)
        tiers = config.tiers
        self._forced: dict[str, Target] = {tier: Target(tier=tier) for tier in tiers}
        self._forced.update({name: Target(backend=name) for name in config.backends})
        for alias, target in config.aliases.items():
            if target != AUTO_MODEL:
                self._forced[alias] = self._forced[target]
        self.model_names: tuple[str, ...] = (AUTO_MODEL, *tiers, *config.backends, *config.aliases)

    def route(self, body: dict[str, Any], client: ClientKey, headers: Mapping[str, str]) -> Route:
        model = body["model"]
        if model != AUTO_MODEL and model not in self.config.aliases and model not in self._forced:
            raise ModelNotFoundError(
                f"The model '{model}' does not exist. Available models: {', '.join(self.model_names)}.", param="model"
            )
        features = self.classifier.classify(body["messages"], body.get("tools") or body.get("functions"))
        forced = self._forced.get(model)
        if forced is not None:
            decision = Decision(rule="requested-model", target=forced, why=f"client asked for model {model!r}")
        else:
            ctx = RequestContext(model=model, tenant=client.tenant, api_key=client.name, headers=headers)
            decision = match_rules(features, ctx, self.rules)
        max_output = body.get("max_completion_tokens") or body.get("max_tokens") or 0
        return Route(features, decision, make_plan(decision, features, self.config, max_output))

    def upstream_body(self, body: dict[str, Any], candidate: Candidate) -> dict[str, Any]:
        """The client's body with the upstream's model name; on streams, ask for usage."""
        out = {**body, "model": candidate.config.model}
        if body.get("stream") and candidate.config.stream_usage:
            out["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        return out

    async def complete(self, route: Route, body: dict[str, Any]) -> tuple[Candidate, Completion]:
        candidate = route.candidate
        provider = self.providers[candidate.backend]
        try:
            async with asyncio.timeout(candidate.config.timeouts.total):
                return candidate, await provider.complete(self.upstream_body(body, candidate))
        except TimeoutError as exc:
            raise UpstreamTimeoutError(f"Backend {candidate.backend!r} did not answer in time.") from exc

    async def open_stream(self, route: Route, body: dict[str, Any]) -> Stream:
        """Start the upstream stream and read up to its first content, so failures keep a status code."""
        candidate = route.candidate
        timeouts = candidate.config.timeouts
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeouts.total
        chunks = self.providers[candidate.backend].stream(self.upstream_body(body, candidate))
        head: list[Chunk] = []
        try:
            async with asyncio.timeout_at(min(loop.time() + timeouts.first_token, deadline)):
                async for chunk in chunks:
                    head.append(chunk)
                    if _has_content(chunk.data):
                        break
        except TimeoutError as exc:
            await chunks.aclose()  # type: ignore[attr-defined]
            raise UpstreamTimeoutError(
                f"Backend {candidate.backend!r} sent no first token within {timeouts.first_token:g}s."
            ) from exc
        except GatewayError:
            await chunks.aclose()  # type: ignore[attr-defined]
            raise
        return Stream(candidate, head, chunks, deadline, timeouts.idle)


def _has_content(chunk: dict[str, Any]) -> bool:
    """True once a chunk carries something beyond the role-only opening frame."""
    if chunk.get("usage"):
        return True
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("tool_calls") or delta.get("refusal") or choice.get("finish_reason"):
            return True
    return False
