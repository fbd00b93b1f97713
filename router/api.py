"""The HTTP edge: authenticate, read and parse, hand to the pipeline, answer in JSON or SSE."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from router.auth import ClientKey
from router.errors import GatewayError, PayloadTooLargeError
from router.gateway import Gateway
from router.pipeline import Pipeline, Stream
from router.schemas import parse_chat_request
from router.upstream.sse import DONE_FRAME, frame

router = APIRouter()

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json", headers=headers)


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def _begin(request: Request) -> tuple[Pipeline, ClientKey, str]:
    """Request id, the pipeline this request will use, and the authenticated client."""
    given = request.headers.get("x-request-id")
    request_id = given if given and _REQUEST_ID.match(given) else uuid.uuid4().hex
    request.state.request_id = request_id
    pipeline = _gateway(request).pipeline
    client = pipeline.keyring.authenticate(request.headers.get("authorization"))
    return pipeline, client, request_id


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"Request body is {declared} bytes; the limit is {limit} bytes.")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise PayloadTooLargeError(f"Request body exceeds the limit of {limit} bytes.")
    return bytes(body)


async def chat_completions(request: Request) -> Response:
    pipeline, client, request_id = _begin(request)
    body = parse_chat_request(await _read_body(request, pipeline.config.server.max_body_bytes))
    route = pipeline.route(body, client, request.headers)
    request.state.route_headers = route.headers(route.candidate)
    if body.get("stream"):
        stream = await pipeline.open_stream(route, body)
        headers = {**route.headers(stream.candidate), "x-request-id": request_id, **_SSE_HEADERS}
        want_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(_relay(stream, want_usage), media_type="text/event-stream", headers=headers)
    candidate, completion = await pipeline.complete(route, body)
    headers = {**route.headers(candidate), "x-request-id": request_id}
    return Response(completion.raw, media_type="application/json", headers=headers)


async def _relay(stream: Stream, want_usage: bool) -> AsyncIterator[bytes]:
    """Re-frame upstream chunks as ``data: <json>``; a failure ends the stream with an error event, no [DONE]."""
    try:
        async for chunk in stream.chunks():
            if not want_usage and not chunk.data.get("choices") and "usage" in chunk.data:
                continue  # the usage chunk the gateway asked for on its own behalf
            yield frame(chunk.raw)
        yield DONE_FRAME
    except GatewayError as exc:
        yield frame(exc.body_bytes())
    finally:
        # The client may be gone and this task cancelled: close the upstream regardless.
        with anyio.CancelScope(shield=True):
            await stream.aclose()


async def decide(request: Request) -> Response:
    pipeline, client, request_id = _begin(request)
    body = parse_chat_request(await _read_body(request, pipeline.config.server.max_body_bytes))
    started = time.perf_counter_ns()
    route = pipeline.route(body, client, request.headers)
    elapsed_us = (time.perf_counter_ns() - started) / 1000
    return _json({**route.as_dict(), "decision_us": round(elapsed_us, 1)}, headers={"x-request-id": request_id})


async def list_models(request: Request) -> Response:
    pipeline, _, request_id = _begin(request)
    created = int(request.app.state.started_at)
    data = [{"id": name, "object": "model", "created": created, "owned_by": "llm-router"} for name in pipeline.model_names]
    return _json({"object": "list", "data": data}, headers={"x-request-id": request_id})


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


# Plain Starlette routes: no dependency injection or body models on the hot path.
for path, endpoint, methods in (
    ("/v1/chat/completions", chat_completions, ["POST"]),
    ("/chat/completions", chat_completions, ["POST"]),
    ("/v1/router/decide", decide, ["POST"]),
    ("/v1/models", list_models, ["GET"]),
    ("/models", list_models, ["GET"]),
    ("/healthz", healthz, ["GET"]),
    ("/readyz", readyz, ["GET"]),
):
    router.add_route(path, endpoint, methods=methods, include_in_schema=False)
