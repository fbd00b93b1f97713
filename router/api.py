"""The HTTP edge: authenticate, read and parse, hand to the pipeline, answer in JSON or SSE."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import re
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from typing import Any

import anyio
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope, Send

from router.auth import ClientKey
from router.cost import chunk_chars, reported_tokens
from router.errors import (
    GatewayError,
    InvalidRequestError,
    MethodNotAllowedError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ServiceUnavailableError,
)
from router.gateway import Gateway
from router.ledger_pg import LedgerUnavailableError
from router.pipeline import Pipeline, Stream
from router.schemas import parse_chat_request
from router.trace import Trace
from router.upstream.base import Chunk
from router.upstream.sse import DONE_FRAME, frame, frames

router = APIRouter()
log = logging.getLogger("router.api")

#: Status recorded for requests whose client went away before the answer ended (nginx's convention).
CLIENT_CLOSED = 499

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# Request ids: a random per-process prefix and a counter, unique across workers and restarts,
# without a uuid4 (a getrandom syscall) per request.
_ID_PREFIX = os.urandom(6).hex()
_id_counter = itertools.count(1)
_JSON = b"application/json"

def request_ids(given: str | None) -> tuple[str, str]:
    """The request's id (the client's ``x-request-id`` when well-formed) and the ledger's unique id.

    The ledger's key must be unique even when clients reuse their ids.
    """
    generated = f"{_ID_PREFIX}{next(_id_counter):010x}"
    if given and _REQUEST_ID.match(given):
        return given, f"{given}#{generated}"
    return generated, generated


SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no")]


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json", headers=headers)


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def begin_request(request: Request) -> tuple[Pipeline, ClientKey, str]:
    """For the Starlette endpoints: the request id, the pipeline, and the authenticated client."""
    request_id, _ = request_ids(request.headers.get("x-request-id"))
    request.state.request_id = request_id  # for the error handlers
    pipeline = _gateway(request).pipeline
    return pipeline, pipeline.keyring.authenticate(request.headers.get("authorization")), request_id


async def read_body(receive: Receive, declared: str | None, limit: int) -> bytes:
    """The request body, refused (413) past ``limit`` bytes, declared or received."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"Request body is {declared} bytes; the limit is {limit} bytes.")
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnect()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False) and len(body) <= limit:
        return body  # the whole body in one message, as small requests come
    buffer = bytearray(body)
    while True:
        if len(buffer) > limit:
            raise PayloadTooLargeError(f"Request body exceeds the limit of {limit} bytes.")
        if not message.get("more_body", False):
            return bytes(buffer)
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        buffer += message.get("body", b"")


async def chat_completions(pipeline: Pipeline, scope: Scope, receive: Receive, send: Send) -> None:
    """``POST /v1/chat/completions`` on the raw ASGI interface: the hot path skips Starlette's
    request and response objects (about 30 us per request) and answers errors in OpenAI's shape."""
    started = time.perf_counter()
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
    request_id, unique_id = request_ids(headers.get("x-request-id"))
    try:
        client = pipeline.keyring.authenticate(headers.get("authorization"))
        limit = pipeline.config.server.max_body_bytes
        body = parse_chat_request(await read_body(receive, headers.get("content-length"), limit))
        route = pipeline.route(body, client, headers)
    except GatewayError as exc:  # refused before routing (401, 400, 413, 404): still a request, on no backend
        pipeline.accountant.reject(request_id, exc.status_code, started)
        await send_error(send, exc, request_id)
        return
    except ClientDisconnect:  # gone while sending the body: nobody to answer
        pipeline.accountant.reject(request_id, CLIENT_CLOSED, started)
        return
    trace = Trace(request_id, unique_id, client, route, body, stream=bool(body.get("stream")), started=started)
    try:
        if trace.stream:
            with finish_on_error(pipeline, trace):
                stream = await pipeline.open_stream(trace)
            trace.answered_at = time.perf_counter()
            want_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            if stream.head_done:
                await _send_finished_stream(pipeline, trace, stream, want_usage, send)
                return
            events = EventStreamResponse(
                _relay(pipeline, trace, stream, want_usage), SSE_HEADERS + asgi_headers(trace.headers()), on_disconnect=trace.client_left
            )
            await events(scope, receive, send)
            return
        with finish_on_error(pipeline, trace):
            completion = await pipeline.complete(trace)
    except GatewayError as exc:
        await send_error(send, exc, request_id)
        return
    except asyncio.CancelledError:
        if trace.answered_at is not None:
            raise  # the answer is under way (a stream handles its own cancellation)
        # Before the answer starts, only the server cancels (at its drain deadline): say so.
        uncancel()
        await send_error(send, shutting_down_error(), request_id)
        return
    trace.answered_at = time.perf_counter()
    pipeline.accountant.price(trace)
    answer_headers = trace.headers()
    answer_headers["x-router-cost-usd"] = f"{trace.cost:.8f}"
    try:
        await send_bytes(send, 200, completion.raw, answer_headers)
    finally:  # the rest of the accounting after the answer has gone
        pipeline.accountant.finish(trace)


async def send_bytes(send: Send, status: int, body: bytes, headers: dict[str, str], content_type: bytes = _JSON) -> None:
    """A whole response in two ASGI messages."""
    raw = [(b"content-type", content_type), (b"content-length", b"%d" % len(body)), *asgi_headers(headers)]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def asgi_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    """Headers as ASGI wants them."""
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]


async def send_error(send: Send, error: GatewayError, request_id: str | None) -> None:
    """``error`` in OpenAI's shape, with its status and headers."""
    headers = error.response_headers()
    if request_id:
        headers["x-request-id"] = request_id
    await send_bytes(send, error.status_code, error.body_bytes(), headers)


#: Sends an error answer: ``send_error`` or an endpoint's own wire shape (Anthropic's).
ErrorSender = Callable[[Send, GatewayError, "str | None"], Awaitable[None]]


async def serve_post(
    scope: Scope, receive: Receive, send: Send, handle: Callable[[Scope, Receive, Send], Awaitable[None]],
    on_error: ErrorSender = send_error,
) -> None:
    """Serve a raw ASGI POST with ``handle``: another method is a 405, and an unexpected failure before
    the answer started is a logged 500 (after it started, the server closes the connection)."""
    if scope["method"] != "POST":
        error = MethodNotAllowedError(f"Method {scope['method']} is not allowed on {scope['path']}", headers={"allow": "POST"})
        await on_error(send, error, None)
        return
    started = False

    async def send_tracked(message: Message) -> None:
        nonlocal started
        started = True
        await send(message)

    try:
        await handle(scope, receive, send_tracked)
    except Exception:
        log.exception("unhandled error on POST %s", scope["path"])
        if started:
            raise
        await on_error(send, GatewayError("The gateway hit an internal error; it has been logged."), None)


@contextlib.contextmanager
def finish_on_error(pipeline: Pipeline, trace: Trace) -> Iterator[None]:
    """Account for a request that failed (or whose client left) before the answer started."""
    try:
        yield
    except GatewayError as exc:
        trace.status = exc.status_code
        pipeline.accountant.finish(trace)
        raise
    except asyncio.CancelledError:
        trace.status = shutting_down_error().status_code
        pipeline.accountant.finish(trace)
        raise
    except BaseException:
        trace.status = CLIENT_CLOSED
        pipeline.accountant.finish(trace)
        raise


def shutting_down_error() -> GatewayError:
    return ServiceUnavailableError(
        "The gateway is shutting down and stopped this request at its drain deadline; send it again.",
        code="gateway_shutting_down",
    )


def uncancel() -> None:
    """Carry on in a task the server cancelled, to answer its client before the process exits."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


class EventStreamResponse:
    """An SSE response whose body stops, and whose upstream is closed, as soon as the client leaves.

    Starlette's StreamingResponse does the same with an anyio task group per response; one plain
    task that watches for ``http.disconnect`` and cancels the sender is enough, and cheaper.
    """

    def __init__(
        self,
        body: AsyncGenerator[bytes, None],
        raw_headers: list[tuple[bytes, bytes]],
        *,
        on_disconnect: Callable[[], None] | None = None,
    ) -> None:
        self.body_iterator = body
        self.raw_headers = raw_headers  # no content-length: the body is streamed
        #: Called before the sender is cancelled because the client left, so the body can tell that
        #: cancellation from the server's own (its drain deadline at shutdown).
        self.on_disconnect = on_disconnect

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sender = asyncio.current_task()
        assert sender is not None
        gone = False

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            if self.on_disconnect is not None:
                self.on_disconnect()
            sender.cancel()

        watcher = asyncio.create_task(watch())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not gone:
                raise
            sender.uncancel()  # the client left: nothing more to send, the relay has closed the upstream
        finally:
            watcher.cancel()
            # Closed now, not whenever it is collected: the body's own cleanup closes the upstream and
            # accounts for the request (also when a cancellation landed on a send, not in the body).
            await self.body_iterator.aclose()


async def _send_finished_stream(pipeline: Pipeline, trace: Trace, stream: Stream, want_usage: bool, send: Send) -> None:
    """A stream whose upstream had already finished when it opened (a short answer from a fast
    upstream): the whole event stream in one write, with no upstream left to watch or cancel."""
    try:
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + asgi_headers(trace.headers())})
        await send({"type": "http.response.body", "body": _events(trace, stream.head, True, want_usage)})
    finally:
        await close_and_account(pipeline, trace, stream)


def _events(trace: Trace, batch: list[Chunk], done: bool, want_usage: bool) -> bytes:
    """A batch of upstream chunks as ``data: <json>`` events (and ``[DONE]`` after the last);
    their usage and text are noted on ``trace``."""
    # The text's length only matters to estimate output tokens: not when the stream ends with its usage.
    count_chars = not (done and batch and reported_tokens(batch[-1].data.get("usage")))
    if trace.shadow_chunks is not None:
        trace.shadow_chunks += batch
    payloads = []
    for chunk in batch:
        data = chunk.data
        raw = chunk.raw
        if "usage" in data:
            if data["usage"]:
                trace.usage_reported = data["usage"]
            if not want_usage:
                # The gateway asked for usage on its own behalf: the client gets neither the usage
                # chunk (OpenAI's has no choices, LiteLLM's an empty delta) nor "usage": null on every chunk.
                if not _carries_choice(data):
                    continue
                raw = _without_usage(raw, data)
        if count_chars:
            trace.output_chars += chunk_chars(data)
        payloads.append(raw)
    return frames(payloads) + DONE_FRAME if done else frames(payloads)


def _carries_choice(chunk: dict[str, Any]) -> bool:
    """True if a chunk has something for the client besides usage: a delta or a finish reason."""
    return any(choice.get("delta") or choice.get("finish_reason") for choice in chunk.get("choices") or ())


_NULL_USAGE_TAIL = b',"usage":null}'


def _without_usage(raw: bytes, data: dict[str, Any]) -> bytes:
    """``raw`` without its top-level ``usage``; compact JSON ending in it (OpenAI's, vLLM's) is cut, not re-encoded."""
    if raw.endswith(_NULL_USAGE_TAIL):
        return raw[: -len(_NULL_USAGE_TAIL)] + b"}"
    return orjson.dumps({key: value for key, value in data.items() if key != "usage"})


def stream_failure(pipeline: Pipeline, trace: Trace, stream: Stream, exc: BaseException) -> GatewayError:
    """The error event that ends a stream which failed after it started, recorded on the trace (and an
    upstream's failure on its breaker). A client that left, or anything unexpected, re-raises as the
    client's close."""
    if isinstance(exc, GatewayError):
        trace.status = exc.status_code
        pipeline.backends[stream.candidate.backend].breaker.record_failure()
        log.warning("request %s: stream from %s failed after it started: %s", trace.request_id, stream.candidate.backend, exc)
        return exc
    if isinstance(exc, asyncio.CancelledError) and not trace.client_gone:
        # The server cancelled the stream at its drain deadline: the client gets an error event
        # (the SDK raises) instead of a cut connection, and the request is accounted after it.
        uncancel()
        error = shutting_down_error()
        trace.status = error.status_code
        return error
    trace.status = CLIENT_CLOSED
    raise exc


async def _relay(pipeline: Pipeline, trace: Trace, stream: Stream, want_usage: bool) -> AsyncGenerator[bytes, None]:
    """Re-frame upstream chunks as ``data: <json>``; a failure ends the stream with an error event, no [DONE]."""
    try:
        async for batch, done in stream.batches():
            events = _events(trace, batch, done, want_usage)
            if events:
                yield events
    except BaseException as exc:
        yield frame(stream_failure(pipeline, trace, stream, exc).body_bytes())
    finally:
        await close_and_account(pipeline, trace, stream)


async def close_and_account(pipeline: Pipeline, trace: Trace, stream: Stream) -> None:
    """Close the upstream, then account, even when the client is gone and this task is cancelled.

    No cancel scope is needed: closing runs the provider's cleanup, which releases or closes the
    connection without waiting, so a cancellation has no await to land on; and accounting is in
    ``finally`` regardless.
    """
    try:
        await stream.aclose()
    finally:
        pipeline.accountant.finish(trace)


async def spend(request: Request) -> Response:
    pipeline, client, request_id = begin_request(request)
    if pipeline.keyring.enabled and not client.admin:
        raise PermissionDeniedError("Spend reports need an admin API key.")
    ledger = pipeline.state.ledger
    if ledger is None:
        raise InvalidRequestError("The spend ledger is disabled (policy.ledger.path is empty).", code="ledger_disabled")
    since = _since(request.query_params.get("since"))
    try:
        rows = await anyio.to_thread.run_sync(lambda: ledger.spend(since=since))
    except LedgerUnavailableError as exc:
        raise ServiceUnavailableError(str(exc), code="ledger_unavailable") from exc
    total = sum(row["cost_usd"] for row in rows)
    return _json({"object": "list", "data": rows, "total_usd": round(total, 8)}, headers={"x-request-id": request_id})


def _since(value: str | None) -> float | None:
    """The ``since`` query parameter: a Unix time."""
    if not value:
        return None
    try:
        since = float(value)
    except ValueError:
        since = math.nan
    if not math.isfinite(since):
        raise InvalidRequestError(f"Invalid value for 'since': {value!r} is not a Unix time in seconds.", param="since")
    return since


async def metrics(request: Request) -> Response:
    gateway = _gateway(request)
    for budget in gateway.state.budgets.snapshot_all():
        scope, _, name = budget["scope"].partition(":")
        gateway.metrics.budget(scope, name or None, budget["period"], remaining_usd=budget["remaining_usd"],
                               limit_usd=budget["limit_usd"])
    ledger = gateway.state.ledger
    buffered = getattr(ledger, "buffered", None)  # the PostgreSQL ledger's backlog, and what overflowed it
    if buffered is not None:
        gateway.metrics.ledger_buffered(buffered)
        gateway.metrics.ledger_dropped(getattr(ledger, "dropped", 0))
    for name, backend in gateway.config.backends.items():
        price = gateway.state.price(name, backend)
        gateway.metrics.price(name, input_usd_per_mtok=price.input, output_usd_per_mtok=price.output)
    body, content_type = gateway.metrics.render()
    return Response(body, media_type=content_type)


async def healthz(request: Request) -> Response:
    return _json({"status": "ok"})


async def readyz(request: Request) -> Response:
    gateway = _gateway(request)
    config = gateway.config
    return _json(
        {
            "status": "ready",
            "config_version": config.digest,
            "backends": {name: {"tier": b.tier, "model": b.model} for name, b in config.backends.items()},
            "last_reload_error": gateway.last_reload_error,
        }
    )


#: Chat completions paths; ``app.GatewayApp`` serves them with ``chat_completions``, outside Starlette's routing.
HOT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})

# Plain Starlette routes: no dependency injection or body models.
for path, endpoint, methods in (
    ("/v1/router/spend", spend, ["GET"]),
    ("/metrics", metrics, ["GET"]),
    ("/healthz", healthz, ["GET"]),
    ("/readyz", readyz, ["GET"]),
):
    router.add_route(path, endpoint, methods=methods, include_in_schema=False)
