"""``POST /v1/messages`` and ``POST /v1/messages/count_tokens``: Anthropic's Messages API at the edge.

A request is translated into a chat-completions body (``router.anthropic_wire.downstream``) and then
goes through the same pipeline as chat: classification, rules, policy, fallback, retries,
breakers, budgets, accounting. The answer is translated back into a ``message`` or Anthropic's
event stream; errors take Anthropic's shape ``{"type": "error", "error": {"type", "message"}}``
with the same statuses as the chat endpoint. Served on the raw ASGI interface, like chat.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping

import orjson
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope, Send

from router.anthropic_wire.downstream import (
    EventTranslator,
    error_body,
    parse_messages_request,
    passthrough_request,
    sse_event,
    to_chat_request,
    to_message,
)
from router.api import (
    _SSE_HEADERS,
    CLIENT_CLOSED,
    EventStreamResponse,
    _close_and_account,
    _finish_on_error,
    _raw,
    _read_body,
    _request_ids,
    send_bytes,
)
from router.auth import ClientKey
from router.cost import chunk_chars
from router.errors import GatewayError, MethodNotAllowedError
from router.pipeline import Pipeline, Stream
from router.trace import Trace
from router.upstream.anthropic import NATIVE_REQUEST

log = logging.getLogger("router.messages")

MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
#: Served by ``serve_anthropic``, outside Starlette's routing.
ANTHROPIC_PATHS = frozenset({MESSAGES_PATH, COUNT_TOKENS_PATH})


async def serve_anthropic(pipeline: Pipeline, scope: Scope, receive: Receive, send: Send) -> None:
    """Dispatch one of ``ANTHROPIC_PATHS``; every error, including an unexpected one, in Anthropic's shape."""
    path = scope["path"]
    if scope["method"] != "POST":
        error = MethodNotAllowedError(f"Method {scope['method']} is not allowed on {path}", headers={"allow": "POST"})
        await send_error(send, error, None)
        return
    started = False

    async def send_tracked(message: Message) -> None:
        nonlocal started
        started = True
        await send(message)

    handler = messages if path == MESSAGES_PATH else count_tokens
    try:
        await handler(pipeline, scope, receive, send_tracked)
    except Exception:
        log.exception("unhandled error on POST %s", path)
        if started:
            raise  # the answer is under way: the server closes the connection
        await send_error(send, GatewayError("The gateway hit an internal error; it has been logged."), None)


async def send_error(send: Send, error: GatewayError, request_id: str | None) -> None:
    """``error`` in Anthropic's shape, with its status and headers."""
    headers = error.response_headers()
    body = error_body(error.status_code, error.message)
    if request_id:
        headers["x-request-id"] = request_id
        body["request_id"] = request_id
    await send_bytes(send, error.status_code, orjson.dumps(body), headers)


def _authenticate(pipeline: Pipeline, headers: Mapping[str, str]) -> ClientKey:
    """Anthropic clients send ``x-api-key``; ``Authorization: Bearer`` works too (Claude Code's auth token)."""
    key = headers.get("x-api-key")
    return pipeline.keyring.authenticate(f"Bearer {key}" if key else headers.get("authorization"))


async def messages(pipeline: Pipeline, scope: Scope, receive: Receive, send: Send) -> None:
    started = time.perf_counter()
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
    request_id, unique_id = _request_ids(headers.get("x-request-id"))
    try:
        client = _authenticate(pipeline, headers)
        raw = await _read_body(receive, headers.get("content-length"), pipeline.config.server.max_body_bytes)
        native = parse_messages_request(raw)
        body = to_chat_request(native)
        route = pipeline.route(body, client, headers)
    except GatewayError as exc:  # refused before routing: still a request, on no backend
        pipeline.accountant.reject(request_id, exc.status_code, started, MESSAGES_PATH)
        await send_error(send, exc, request_id)
        return
    except ClientDisconnect:
        pipeline.accountant.reject(request_id, CLIENT_CLOSED, started, MESSAGES_PATH)
        return
    stream = bool(body.get("stream"))
    trace = Trace(request_id, unique_id, client, route, body, stream=stream, started=started, path=MESSAGES_PATH)
    passthrough = NATIVE_REQUEST.set(passthrough_request(native))
    try:
        await _answer(pipeline, trace, scope, receive, send)
    finally:
        NATIVE_REQUEST.reset(passthrough)


async def _answer(pipeline: Pipeline, trace: Trace, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve a routed request: a ``message``, or the event stream."""
    try:
        if trace.stream:
            with _finish_on_error(pipeline, trace):
                stream = await pipeline.open_stream(trace)
            trace.answered_at = time.perf_counter()
            events = EventStreamResponse(_relay(pipeline, trace, stream), _SSE_HEADERS + _raw(trace.headers()))
            await events(scope, receive, send)
            return
        with _finish_on_error(pipeline, trace):
            completion = await pipeline.complete(trace)
    except GatewayError as exc:
        await send_error(send, exc, trace.request_id)
        return
    trace.answered_at = time.perf_counter()
    pipeline.accountant.price(trace)
    answer_headers = trace.headers()
    answer_headers["x-router-cost-usd"] = f"{trace.cost:.8f}"
    try:
        await send_bytes(send, 200, orjson.dumps(to_message(completion.data)), answer_headers)
    finally:
        pipeline.accountant.finish(trace)


async def _relay(pipeline: Pipeline, trace: Trace, stream: Stream) -> AsyncIterator[bytes]:
    """Chat chunks as Anthropic events; a failure after the start ends the stream with an ``error`` event."""
    first = stream.head[0].data if stream.head else {}
    translator = EventTranslator(str(first.get("id") or trace.request_id), str(first.get("model") or ""))
    events = translator.start()
    try:
        async for batch, done in stream.batches():
            for chunk in batch:
                data = chunk.data
                if data.get("usage"):
                    trace.usage_reported = data["usage"]
                trace.output_chars += chunk_chars(data)
                events += translator.feed(data)
            if done:
                events += translator.finish()
            if events:
                yield b"".join(map(sse_event, events))
                events = []
    except GatewayError as exc:
        trace.status = exc.status_code
        pipeline.backends[stream.candidate.backend].breaker.record_failure()  # as of its config (a reload may drop it)
        log.warning(
            "request %s: stream from %s failed after it started: %s", trace.request_id, stream.candidate.backend, exc
        )
        yield b"".join(map(sse_event, [*events, error_body(exc.status_code, exc.message)]))
    except BaseException:
        trace.status = CLIENT_CLOSED
        raise
    finally:
        await _close_and_account(pipeline, trace, stream)


async def count_tokens(pipeline: Pipeline, scope: Scope, receive: Receive, send: Send) -> None:
    """The prompt's size as the classifier estimates it (the same estimate routing and budgets use)."""
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
    request_id, _ = _request_ids(headers.get("x-request-id"))
    try:
        client = _authenticate(pipeline, headers)
        raw = await _read_body(receive, headers.get("content-length"), pipeline.config.server.max_body_bytes)
        route = pipeline.route(to_chat_request(parse_messages_request(raw, generate=False)), client, headers)
    except GatewayError as exc:
        await send_error(send, exc, request_id)
        return
    except ClientDisconnect:
        return
    answer = orjson.dumps({"input_tokens": route.features.input_tokens})
    await send_bytes(send, 200, answer, {"x-request-id": request_id, "x-router-rule": route.decision.rule})
