"""Endpoints served by translating to chat completions: the request goes through the chat pipeline
(classification, rules, policy, fallback before the first token, budgets, cost, metrics, ledger,
access log, ``x-router-*`` headers) and only the wire format differs.

A ``TranslatedEndpoint`` asks its subclass for the chat body and a ``Translation`` (one request's
answer side), routes the chat body like chat, then answers in JSON or SSE.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol

from starlette.types import Receive, Scope, Send

from router.api import (
    SSE_HEADERS,
    EventStreamResponse,
    asgi_headers,
    close_and_account,
    finish_on_error,
    stream_failure,
)
from router.auth import ClientKey
from router.cost import chunk_chars, reported_tokens
from router.endpoints.base import Endpoint, send_answer
from router.errors import GatewayError
from router.gateway import Gateway
from router.pipeline import Pipeline, Stream
from router.policy import Candidate
from router.trace import Route, Trace
from router.upstream.base import Batch, Chunk, Completion

#: A non-stream and a stream call to use instead of chat completions (either may be None).
UpstreamCalls = tuple[
    Callable[[Candidate], Awaitable[Completion]] | None, Callable[[Candidate], AsyncIterator[Batch]] | None
]


def native_calls(
    pipeline: Pipeline,
    trace: Trace,
    is_native: Callable[[Candidate], bool],
    complete: Callable[[Candidate], Awaitable[Completion]],
    stream: Callable[[Candidate], AsyncIterator[Batch]],
) -> UpstreamCalls:
    """Calls that send the request in its own format (``complete``, ``stream``) to the candidates
    ``is_native`` picks and as chat completions to the others; ``(None, None)`` when the plan has none."""
    plan = trace.route.plan
    if not any(map(is_native, (*plan.candidates, *plan.downgrades))):
        return None, None

    async def either_complete(candidate: Candidate) -> Completion:
        if is_native(candidate):
            return await complete(candidate)
        return await pipeline.providers[candidate.backend].complete(pipeline.upstream_body(trace.body, candidate))

    def either_stream(candidate: Candidate) -> AsyncIterator[Batch]:
        if is_native(candidate):
            return stream(candidate)
        return pipeline.providers[candidate.backend].stream(pipeline.upstream_body(trace.body, candidate))

    return either_complete, either_stream


class Translation(Protocol):
    """One request's answer side, in its endpoint's wire format (bytes ready to send)."""

    #: Usage in the chat shape, when the upstream reported it in another shape (a native call).
    usage: Any
    #: The tier the conversation this request continues was answered on (stored with it), if any.
    sticky_tier: str | None

    def upstream_calls(self, pipeline: Pipeline, trace: Trace) -> UpstreamCalls:
        """Calls replacing chat completions on some backends (a native endpoint), or ``(None, None)``."""

    def answer(self, completion: dict[str, Any], candidate: Candidate) -> bytes:
        """The whole JSON answer for ``candidate``'s answer (a ``chat.completion`` unless a call replaced it)."""

    def opening(self, candidate: Candidate) -> bytes:
        """SSE sent before the first chunk's events; ``candidate`` is the backend that serves the stream."""

    def events(self, chunks: list[dict[str, Any]]) -> bytes:
        """SSE for a batch of ``chat.completion.chunk`` dicts (or the replacing call's events)."""

    def closing(self) -> bytes:
        """SSE that ends a stream that finished."""

    def failed(self, error: GatewayError) -> bytes:
        """SSE that ends a stream that broke after it started."""


class TranslatedEndpoint(Endpoint):
    async def translate(self, gateway: Gateway, raw: bytes, client: ClientKey) -> tuple[dict[str, Any], Translation]:
        """Parse ``raw``: the chat-completions body to route and send, and the answer's translation."""
        raise NotImplementedError

    async def prepare(
        self, gateway: Gateway, raw: bytes, client: ClientKey, headers: Mapping[str, str]
    ) -> tuple[dict[str, Any], Route, Translation]:
        body, translation = await self.translate(gateway, raw, client)
        pipeline = gateway.pipeline
        return body, pipeline.route(body, client, headers, sticky_tier=translation.sticky_tier), translation

    async def serve(
        self, pipeline: Pipeline, trace: Trace, translation: Translation, scope: Scope, receive: Receive, send: Send
    ) -> None:
        complete_call, stream_call = translation.upstream_calls(pipeline, trace)
        if trace.stream:
            with finish_on_error(pipeline, trace):
                stream = await pipeline.open_stream(trace, stream_call)
            trace.answered_at = time.perf_counter()
            headers = SSE_HEADERS + asgi_headers(trace.headers())
            if stream.head_done:  # the whole answer is here: one write, no upstream left to watch
                await _send_finished_stream(pipeline, trace, stream, translation, headers, send)
                return
            relay = _relay(pipeline, trace, stream, translation)
            await EventStreamResponse(relay, headers, on_disconnect=trace.client_left)(scope, receive, send)
            return
        with finish_on_error(pipeline, trace):
            completion = await pipeline.complete(trace, complete_call)
        trace.answered_at = time.perf_counter()
        try:
            assert trace.served is not None  # complete() returns only once a backend answered
            answer = translation.answer(completion.data, trace.served)
            trace.usage_reported = translation.usage or trace.usage_reported
        except BaseException:
            pipeline.accountant.finish(trace)
            raise
        await send_answer(pipeline, trace, answer, send)


def _events(trace: Trace, batch: list[Chunk], translation: Translation) -> bytes:
    """A batch of upstream chunks in the endpoint's format; their usage and text are noted on ``trace``."""
    # The text's length only matters to estimate output tokens: not when the batch ends with its usage.
    count_chars = not (batch and reported_tokens(batch[-1].data.get("usage")))
    chunks = []
    for chunk in batch:
        data = chunk.data
        if data.get("usage"):
            trace.usage_reported = data["usage"]
        if count_chars:
            trace.output_chars += chunk_chars(data)
        chunks.append(data)
    events = translation.events(chunks)
    trace.usage_reported = translation.usage or trace.usage_reported
    return events


async def _send_finished_stream(
    pipeline: Pipeline,
    trace: Trace,
    stream: Stream,
    translation: Translation,
    headers: list[tuple[bytes, bytes]],
    send: Send,
) -> None:
    try:
        body = translation.opening(stream.candidate) + _events(trace, stream.head, translation) + translation.closing()
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    finally:
        await close_and_account(pipeline, trace, stream)


async def _relay(
    pipeline: Pipeline, trace: Trace, stream: Stream, translation: Translation
) -> AsyncGenerator[bytes, None]:
    """The stream in the endpoint's format; a failure after the start ends it with the format's failure event."""
    try:
        opening = translation.opening(stream.candidate)
        if opening:
            yield opening
        async for batch, _ in stream.batches():
            events = _events(trace, batch, translation)
            if events:
                yield events
        closing = translation.closing()
        if closing:  # nothing when the backend sent its own end (a native stream)
            yield closing
    except BaseException as exc:
        yield translation.failed(stream_failure(pipeline, trace, stream, exc))
    finally:
        await close_and_account(pipeline, trace, stream)
