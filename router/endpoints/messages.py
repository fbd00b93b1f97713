"""``POST /v1/messages`` and ``POST /v1/messages/count_tokens``: Anthropic's Messages API at the edge.

A request is translated into a chat-completions body (``router.anthropic_wire.downstream``) and
routed like chat: classification, rules, policy, fallback, retries, breakers, budgets, accounting.
A ``kind: anthropic`` backend is sent the client's own request (its model name replaced) and its
answer, or its event stream, goes back as it came, so nothing the chat shape cannot carry is lost
(``thinking`` blocks, ``stop_sequence``, citations, cache usage, ``container``, ``service_tier``).
Any other backend gets the chat translation, and its answer is translated back into a ``message`` or
Anthropic's events. A plan may mix both (Claude failing over to an OpenAI-compatible flagship).
Errors take Anthropic's shape ``{"type": "error", "error": {"type", "message"}}`` with the
statuses of the chat endpoint.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import orjson
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from router.anthropic_wire import openai_usage
from router.anthropic_wire.downstream import (
    EventTranslator,
    error_body,
    parse_messages_request,
    sse_event,
    sse_events,
    to_chat_request,
    to_message,
)
from router.api import CLIENT_CLOSED, send_bytes
from router.auth import ClientKey
from router.cost import CHARS_PER_TOKEN
from router.endpoints.base import request_head
from router.endpoints.translated import TranslatedEndpoint, UpstreamCalls, native_calls
from router.errors import (
    GatewayError,
    InvalidRequestError,
    UpstreamClientError,
    UpstreamError,
)
from router.gateway import Gateway
from router.pipeline import Pipeline
from router.policy import Candidate
from router.rules import REQUESTED_MODEL
from router.trace import Route, Trace
from router.upstream.anthropic import AnthropicProvider

log = logging.getLogger("router.endpoints")


class AnthropicEdge:
    """What both Anthropic endpoints share: ``x-api-key`` auth and Anthropic's error shape."""

    def authenticate(self, pipeline: Pipeline, headers: Mapping[str, str]) -> ClientKey:
        """Anthropic clients send ``x-api-key``; ``Authorization: Bearer`` works too (Claude Code's auth token)."""
        key = headers.get("x-api-key")
        return pipeline.keyring.authenticate(f"Bearer {key}" if key else headers.get("authorization"))

    async def send_error(self, send: Send, error: GatewayError, request_id: str | None) -> None:
        """``error`` in Anthropic's shape, with its status and headers."""
        headers = error.response_headers()
        body = error_body(error.status_code, error.message)
        if request_id:
            headers["x-request-id"] = request_id
            body["request_id"] = request_id
        await send_bytes(send, error.status_code, orjson.dumps(body), headers)


def _provider(pipeline: Pipeline, candidate: Candidate) -> AnthropicProvider:
    provider = pipeline.providers[candidate.backend]
    assert isinstance(provider, AnthropicProvider)
    return provider


def _is_anthropic(candidate: Candidate) -> bool:
    return candidate.config.kind == "anthropic"


class MessagesTranslation:
    """One Messages request's answer side: Anthropic's own answer passed through, or a chat answer translated."""

    def __init__(self, native: dict[str, Any], beta: str | None) -> None:
        self.native = native
        #: The client's ``anthropic-beta`` header, for the Anthropic backends it is passed to.
        self.beta = beta
        #: Usage in the chat shape, from a passed-through answer.
        self.usage: dict[str, Any] | None = None
        self.sticky_tier: str | None = None
        #: The prompt's estimated tokens, for a translated stream's ``message_start``.
        self.input_tokens = 0
        self._passthrough = False
        self._translator: EventTranslator | None = None
        self._reported: dict[str, Any] = {}
        self._ended = False  # message_delta came: the usage is final
        self._chars = 0  # text produced so far, for the usage of a stream that breaks before it ends

    def upstream_calls(self, pipeline: Pipeline, trace: Trace) -> UpstreamCalls:
        return native_calls(
            pipeline,
            trace,
            _is_anthropic,
            lambda candidate: _provider(pipeline, candidate).create_message(self._body(candidate), self.beta),
            lambda candidate: _provider(pipeline, candidate).stream_message(self._body(candidate), self.beta),
        )

    def _body(self, candidate: Candidate) -> dict[str, Any]:
        return {**self.native, "model": candidate.config.model}

    def answer(self, completion: dict[str, Any], candidate: Candidate) -> bytes:
        if completion.get("type") == "message":  # an Anthropic backend's own
            self.usage = openai_usage(completion.get("usage") or {})
            return orjson.dumps(completion)
        return orjson.dumps(to_message(completion))

    def opening(self, candidate: Candidate) -> bytes:
        self._passthrough = _is_anthropic(candidate)
        return b""  # message_start comes with the first batch: the backend's own, or built from its first chunk

    def events(self, chunks: list[dict[str, Any]]) -> bytes:
        if self._passthrough:
            self._note_usage(chunks)
            return sse_events(chunks)
        translator = self._translator
        opening = b""
        if translator is None:
            first = chunks[0] if chunks else {}
            translator = EventTranslator(str(first.get("id") or "gateway"), str(first.get("model") or ""), self.input_tokens)
            self._translator = translator
            opening = sse_events(translator.start())
        return opening + b"".join(map(translator.feed_sse, chunks))

    def _note_usage(self, events: list[dict[str, Any]]) -> None:
        """Follow a passed-through stream's usage: ``message_start`` has the prompt's, ``message_delta`` the
        final counts; until then the output is estimated from the text so far."""
        reported = self._reported
        for event in events:
            kind = event.get("type")
            if kind == "content_block_delta":
                delta = event.get("delta") or {}
                self._chars += len(delta.get("text") or delta.get("partial_json") or delta.get("thinking") or "")
            elif kind == "message_start":
                reported.update((event.get("message") or {}).get("usage") or {})
            elif kind == "message_delta":
                reported.update((k, v) for k, v in (event.get("usage") or {}).items() if v is not None)
                self._ended = True
        if reported:
            usage = openai_usage(reported)
            if not self._ended:
                estimate = -(-self._chars // CHARS_PER_TOKEN)
                if estimate > usage["completion_tokens"]:
                    usage["total_tokens"] += estimate - usage["completion_tokens"]
                    usage["completion_tokens"] = estimate
            self.usage = usage

    def closing(self) -> bytes:
        if self._passthrough or self._translator is None:
            return b""  # the backend sent its own message_stop
        return sse_events(self._translator.finish())

    def failed(self, error: GatewayError) -> bytes:
        """The ``error`` event; an Anthropic backend's own error type (``overloaded_error``...) is kept."""
        return sse_event(error_body(error.status_code, error.message, error.code))


class MessagesEndpoint(AnthropicEdge, TranslatedEndpoint):
    path = "/v1/messages"

    async def prepare(
        self, gateway: Gateway, raw: bytes, client: ClientKey, headers: Mapping[str, str]
    ) -> tuple[dict[str, Any], Route, MessagesTranslation]:
        native = parse_messages_request(raw)
        body, anthropic_only = to_chat_request(native)
        pipeline = gateway.pipeline
        route = pipeline.route(body, client, headers)
        if anthropic_only:
            route = _anthropic_route(route, anthropic_only)
        translation = MessagesTranslation(native, headers.get("anthropic-beta"))
        translation.input_tokens = route.features.input_tokens
        return body, route, translation


def _anthropic_route(route: Route, fields: tuple[str, ...]) -> Route:
    """The route for a request holding ``fields`` only Anthropic backends take: its plan without the others
    (``x-router-rerouted: anthropic`` when that moves its first backend); a 400 naming the first if none is
    left, or if the client named a model (a tier, backend or alias) whose first backend is not Anthropic's."""
    plan = route.plan
    candidates = tuple(filter(_is_anthropic, plan.candidates))
    named = route.decision.rule == REQUESTED_MODEL and bool(plan.candidates) and not _is_anthropic(plan.candidates[0])
    if (not candidates or named) and plan.refusal is None:
        why = (f"the model asked for is served by backend {plan.candidates[0].backend!r}" if named
               else f"none may serve this request (planned: {plan!r})")
        raise InvalidRequestError(
            f"{fields[0]}: only Anthropic backends take this (server tools and content blocks chat completions "
            f"cannot carry), and {why}.",
            param=fields[0],
        )
    moved = bool(candidates) and candidates[0] != plan.candidates[0]
    narrowed = replace(
        plan,
        candidates=candidates,
        downgrades=tuple(filter(_is_anthropic, plan.downgrades)),
        rerouted="anthropic" if moved else plan.rerouted,
    )
    return replace(route, plan=narrowed)


class CountTokensEndpoint(AnthropicEdge, TranslatedEndpoint):
    """``POST /v1/messages/count_tokens``: where the request would go to an Anthropic backend first, that
    backend's exact count; otherwise (or when that backend cannot answer) the classifier's estimate, the
    one routing and budgets use. Not a generation: no budget or ledger row and no tokens taken, but one
    request from the caller's rate limits (``Pipeline.admit_count``); an access-log line and the
    ``count_tokens`` endpoint's metrics (``Accountant.counted``)."""

    path = "/v1/messages/count_tokens"

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        gateway, headers, (request_id, _) = request_head(scope)
        pipeline = gateway.pipeline
        client: ClientKey | None = None
        try:
            client, raw = await self.read(gateway, headers, receive)
            native = parse_messages_request(raw, generate=False)
            body, anthropic_only = to_chat_request(native)
            rate_headers = await pipeline.admit_count(client)
            route = pipeline.route(body, client, headers)
            if anthropic_only:
                route = _anthropic_route(route, anthropic_only)
            answer = {"x-request-id": request_id, "x-router-rule": route.decision.rule, **rate_headers}
            tokens = await _exact_count(pipeline, route, native, headers.get("anthropic-beta"), request_id)
            backend = None
            if tokens is None:
                tokens = route.features.input_tokens
                answer["x-router-count"] = "estimate"
            else:
                backend = route.plan.candidates[0].backend
                answer["x-router-count"] = "exact"
                answer["x-router-backend"] = backend
        except GatewayError as exc:
            pipeline.accountant.counted(request_id, self.path, exc.status_code, started, client=client)
            await self.send_error(send, exc, request_id)
            return
        except ClientDisconnect:
            pipeline.accountant.counted(request_id, self.path, CLIENT_CLOSED, started, client=client)
            return
        await send_bytes(send, 200, orjson.dumps({"input_tokens": tokens}), answer)
        pipeline.accountant.counted(request_id, self.path, 200, started, client=client, rule=route.decision.rule,
                                    backend=backend, input_tokens=tokens)


async def _exact_count(
    pipeline: Pipeline, route: Route, native: dict[str, Any], beta: str | None, request_id: str
) -> int | None:
    """The planned first backend's own count if it is an Anthropic backend that can answer; None otherwise.
    The request's own faults (400s) are the client's; a failing backend (or one whose breaker is not
    closed: a count is no probe) gives the estimate instead."""
    plan = route.plan
    if plan.refusal is not None or not plan.candidates or not _is_anthropic(plan.candidates[0]):
        return None
    candidate = plan.candidates[0]
    if pipeline.backends[candidate.backend].breaker.state != "closed":
        return None
    try:
        async with asyncio.timeout(candidate.config.timeouts.total):
            return await _provider(pipeline, candidate).count_tokens({**native, "model": candidate.config.model}, beta)
    except UpstreamClientError:
        raise
    except (UpstreamError, TimeoutError) as exc:
        log.warning("request %s: count_tokens on %s failed, estimating instead: %s", request_id, candidate.backend, exc)
        return None
