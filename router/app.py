"""``create_app``: the ASGI application, its lifespan, and OpenAI-shaped errors on every path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from router.api import HOT_PATHS, chat_completions, router, serve_post
from router.config import GatewayConfig, ServerConfig
from router.endpoints.routes import DIRECT_ENDPOINTS, ENDPOINTS
from router.endpoints.routes import router as endpoints_router
from router.errors import GatewayError
from router.gateway import Gateway

log = logging.getLogger("router.app")

_STATUS_TYPES = {404: "not_found_error", 405: "invalid_request_error", 401: "invalid_request_error"}


def create_app(
    config: GatewayConfig,
    *,
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    watch: bool = True,
) -> FastAPI:
    """Build the gateway app. ``path`` enables hot reload of that file."""
    gateway = Gateway(config, path=path, environ=environ)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not gateway.pipeline.keyring.enabled:
            log.warning("client authentication is OFF: no API keys configured (set ROUTER_API_KEYS or auth.keys)")
        gateway.start()
        watcher = asyncio.create_task(gateway.watch()) if watch and path is not None else None
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await gateway.aclose()

    app = GatewayApp(title="llm-router", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.gateway = gateway
    app.state.started_at = time.time()
    app.include_router(router)
    app.include_router(endpoints_router)
    app.add_exception_handler(GatewayError, _gateway_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected_error)
    return app


class GatewayApp(FastAPI):
    """FastAPI, with a direct path for chat completions.

    Every request pays for FastAPI's and Starlette's middleware and routing (about 80 us of CPU per
    request on the benchmark machine); the endpoints that carry the traffic (chat completions, and
    responses, completions, embeddings and Anthropic's ``/v1/messages`` in ``router.endpoints``) skip
    them, on the raw ASGI interface, and answer their errors as the registered handlers would. Everything else goes through FastAPI.
    """

    @property
    def server_config(self) -> ServerConfig:
        """The serving config's ``server`` limits, which the HTTP protocol applies to each new connection."""
        config: ServerConfig = self.state.gateway.config.server
        return config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in HOT_PATHS:
            endpoint = DIRECT_ENDPOINTS.get(scope["path"]) if scope["type"] == "http" else None
            if endpoint is not None:  # responses, legacy completions, embeddings, messages: also raw
                scope["app"] = self
                await endpoint(scope, receive, send)
                return
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        await serve_post(scope, receive, send, self._chat_completions)

    def _chat_completions(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        return chat_completions(self.state.gateway.pipeline, scope, receive, send)


def _error_response(request: Request, error: GatewayError) -> Response:
    headers = error.response_headers()
    request_id = getattr(request.state, "request_id", None)
    if request_id:
        headers["x-request-id"] = request_id
    return Response(error.body_bytes(), status_code=error.status_code, media_type="application/json", headers=headers)


async def _gateway_error(request: Request, exc: GatewayError) -> Response:
    return _error_response(request, exc)


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    if exc.status_code == 404:
        message = f"Unknown path: {request.method} {request.url.path}. This gateway serves: {', '.join(ENDPOINTS)}."
    elif exc.status_code == 405:
        message = f"Method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    kind = _STATUS_TYPES.get(exc.status_code, "invalid_request_error")
    body: dict[str, Any] = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    if request.url.path.startswith("/v1/messages/"):  # an Anthropic client's path: Anthropic's error shape
        body = {"type": "error", "error": {"type": kind, "message": message}}
    headers = {**(exc.headers or {}), "x-should-retry": "false"}
    return Response(orjson.dumps(body), status_code=exc.status_code, media_type="application/json", headers=headers)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    error = GatewayError("The gateway hit an internal error; it has been logged.")
    return _error_response(request, error)
