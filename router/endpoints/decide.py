"""``POST /v1/router/decide``: where a request would go and why, without calling an upstream.

It takes the body of either routed endpoint: a chat-completions request, or a Responses request (a body
with ``input`` and no ``messages``), which is translated as ``/v1/responses`` translates it (with the
conversation its ``previous_response_id`` continues) and then routed. The answer is
``Pipeline.explain``'s, plus which endpoint the body was read as and how long the decision took.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from router.api import begin_request, read_body
from router.endpoints.responses import (
    owner_of,
    parse_responses_request,
    previous_of,
    sticky_tier_of,
)
from router.gateway import Gateway
from router.schemas import parse_chat_request
from router.upstream.responses_wire import chat_request

CHAT = "/v1/chat/completions"
RESPONSES = "/v1/responses"


def endpoint_of(raw: bytes) -> str:
    """The endpoint a decide body is written for: a Responses body has ``input`` and no ``messages``."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return CHAT  # its parser names the error
    return RESPONSES if isinstance(data, dict) and "input" in data and "messages" not in data else CHAT


async def decide(request: Request) -> Response:
    pipeline, client, request_id = begin_request(request)
    gateway: Gateway = request.app.state.gateway
    raw = await read_body(request.receive, request.headers.get("content-length"), pipeline.config.server.max_body_bytes)
    endpoint = endpoint_of(raw)
    body: dict[str, Any]
    sticky = None
    if endpoint == RESPONSES:
        given = parse_responses_request(raw)
        previous = await previous_of(gateway.responses, given, owner_of(client))
        body = chat_request(given, previous.items if previous is not None else [])
        sticky = sticky_tier_of(previous, pipeline.config.policy.stickiness)
    else:
        body = parse_chat_request(raw)
    started = time.perf_counter_ns()
    route = pipeline.route(body, client, request.headers, sticky_tier=sticky)
    elapsed_us = (time.perf_counter_ns() - started) / 1000
    explained = pipeline.explain(route, client, body["messages"], body)
    answer = {**explained, "endpoint": endpoint, "decision_us": round(elapsed_us, 1)}
    return Response(orjson.dumps(answer), media_type="application/json", headers={"x-request-id": request_id})
