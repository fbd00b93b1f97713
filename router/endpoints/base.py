"""What every endpoint on the gateway's request path shares: authenticate, read, prepare, serve.

``Endpoint`` is a raw ASGI endpoint (served directly by ``app.GatewayApp``): like chat completions, it
answers its own errors in OpenAI's shape and accounts a request refused before routing (bad key,
bad body, unknown model) as a request on no backend.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from router.api import (
    CLIENT_CLOSED,
    read_body,
    request_ids,
    send_bytes,
    send_error,
    serve_post,
    shutting_down_error,
    uncancel,
)
from router.auth import ClientKey
from router.errors import GatewayError, InvalidRequestError
from router.gateway import Gateway
from router.pipeline import Pipeline
from router.schemas import invalid_request
from router.trace import Route, Trace


def parse_body(raw: bytes, validator: TypeAdapter[Any], fields: str) -> dict[str, Any]:
    """Decode a JSON object body and check it with ``validator``; raise ``InvalidRequestError`` naming the
    bad field. ``fields`` names what the body must hold, for the message (e.g. "`model` and `input`")."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"We could not parse the JSON body of your request ({exc}).") from exc
    if not isinstance(data, dict):
        raise InvalidRequestError(f"The request body must be a JSON object with {fields}.")
    try:
        validator.validate_python(data, strict=True)
    except ValidationError as exc:
        raise invalid_request(exc) from exc
    return data


log = logging.getLogger("router.endpoints")


class Endpoint:
    #: The path accounted and logged for these requests (e.g. ``/v1/responses``).
    path = ""

    async def prepare(
        self, gateway: Gateway, raw: bytes, client: ClientKey, headers: Mapping[str, str]
    ) -> tuple[dict[str, Any], Route, Any]:
        """Parse ``raw`` and route it: the body for the trace, its route, and what ``serve`` needs besides."""
        raise NotImplementedError

    async def serve(
        self, pipeline: Pipeline, trace: Trace, context: Any, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Answer the routed request; ``trace`` must be finished (accounted) on every path."""
        raise NotImplementedError

    def authenticate(self, pipeline: Pipeline, headers: Mapping[str, str]) -> ClientKey:
        """The client the request's credentials name (``Authorization: Bearer``)."""
        return pipeline.keyring.authenticate(headers.get("authorization"))

    async def send_error(self, send: Send, error: GatewayError, request_id: str | None) -> None:
        """``error`` as this endpoint's wire format shapes errors (OpenAI's)."""
        await send_error(send, error, request_id)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request; an unexpected failure before the answer started is a logged 500."""
        await serve_post(scope, receive, send, self._handle, self.send_error)

    async def read(self, gateway: Gateway, headers: Mapping[str, str], receive: Receive) -> tuple[ClientKey, bytes]:
        """The authenticated client and the request's body (refused past ``max_body_bytes``)."""
        pipeline = gateway.pipeline
        client = self.authenticate(pipeline, headers)
        return client, await read_body(receive, headers.get("content-length"), pipeline.config.server.max_body_bytes)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        gateway, headers, (request_id, unique_id) = request_head(scope)
        pipeline = gateway.pipeline
        try:
            client, raw = await self.read(gateway, headers, receive)
            body, route, context = await self.prepare(gateway, raw, client, headers)
        except GatewayError as exc:
            pipeline.accountant.reject(request_id, exc.status_code, started, self.path)
            await self.send_error(send, exc, request_id)
            return
        except ClientDisconnect:
            pipeline.accountant.reject(request_id, CLIENT_CLOSED, started, self.path)
            return
        trace = Trace(
            request_id, unique_id, client, route, body, stream=bool(body.get("stream")), started=started, path=self.path
        )
        try:
            await self.serve(pipeline, trace, context, scope, receive, send)
        except GatewayError as exc:
            await self.send_error(send, exc, request_id)
        except asyncio.CancelledError:
            if trace.answered_at is not None:
                raise  # the answer is under way (a stream handles its own cancellation)
            # Before the answer starts, only the server cancels (at its drain deadline): say so.
            uncancel()
            await self.send_error(send, shutting_down_error(), request_id)


def request_head(scope: Scope) -> tuple[Gateway, dict[str, str], tuple[str, str]]:
    """The gateway serving the request, its headers by (lower-case) name, and its ids (``request_ids``)."""
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
    return scope["app"].state.gateway, headers, request_ids(headers.get("x-request-id"))


async def send_answer(pipeline: Pipeline, trace: Trace, body: bytes, send: Send) -> None:
    """A served request's whole JSON answer, with the routing and cost headers; then its accounting."""
    pipeline.accountant.price(trace)
    headers = trace.headers()
    headers["x-router-cost-usd"] = f"{trace.cost:.8f}"
    try:
        await send_bytes(send, 200, body, headers)
    finally:
        pipeline.accountant.finish(trace)
