"""The contract between the pipeline and upstream providers, and upstream error mapping.

Providers only speak to their upstream: they never retry, fall back or record metrics.
Every failure leaves a provider as an ``UpstreamError`` (see ``router.errors``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import orjson

from router.config import BackendConfig
from router.errors import (
    UpstreamClientError,
    UpstreamError,
    UpstreamRateLimitError,
    UpstreamTimeoutError,
)
from router.redact import redact

#: Upstream statuses that mean the request itself is wrong: relayed to the client as they are.
CLIENT_ERROR_STATUSES = frozenset({400, 413, 422})

CONTEXT_LENGTH_CODE = "context_length_exceeded"


@dataclass(frozen=True, slots=True)
class Completion:
    """A non-streaming answer: the JSON the upstream sent (``raw``) and its decoded form."""

    raw: bytes
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Chunk:
    """One streamed ``chat.completion.chunk``: the payload to relay and its decoded form."""

    raw: bytes
    data: dict[str, Any]


#: The chunks that arrived together, and whether the upstream's ``[DONE]`` came with them.
Batch = tuple[list[Chunk], bool]


class Provider(Protocol):
    name: str
    config: BackendConfig

    async def complete(self, body: dict[str, Any]) -> Completion: ...

    def stream(self, body: dict[str, Any]) -> AsyncIterator[Batch]: ...

    async def healthy(self, path: str, timeout: float) -> bool: ...

    async def aclose(self) -> None: ...


@contextmanager
def map_transport_errors(backend: str) -> Iterator[None]:
    """Turn aiohttp's exceptions into gateway errors, once, at the boundary."""
    try:
        yield
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise UpstreamTimeoutError(f"Backend {backend!r} timed out ({type(exc).__name__}).") from exc
    except aiohttp.ClientConnectorError as exc:
        raise UpstreamError(f"Could not connect to backend {backend!r}.", code="upstream_unreachable") from exc
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError) as exc:
        raise UpstreamError(
            f"Backend {backend!r} closed the connection unexpectedly.", code="upstream_disconnected"
        ) from exc
    except aiohttp.ClientError as exc:
        raise UpstreamError(f"Request to backend {backend!r} failed ({type(exc).__name__}).") from exc


def error_from_status(
    backend: str, status: int, body: bytes, headers: Mapping[str, str], *, secrets: Sequence[str] = ()
) -> UpstreamError:
    """Map an upstream error answer to the error the client sees.

    401/403 mean the gateway's own credential is wrong: the client gets a 502 and never the
    upstream's text (it may echo part of the key). 400/413/422 are the request's own fault and
    keep the upstream's status and message. Quota errors are not worth retrying. Every relayed
    message is scrubbed of ``secrets`` (the backend's key and headers) and of credential-shaped text.
    """
    detail = _error_detail(body)
    raw = str(detail.get("message") or body[:300].decode("utf-8", "replace").strip() or f"HTTP {status}")
    message = redact(raw, secrets)
    raw_code = detail.get("code")
    code = str(raw_code) if raw_code is not None else None
    if status in (401, 403):
        return UpstreamError(
            f"Backend {backend!r} rejected the gateway's credentials (HTTP {status}); check its api_key.",
            upstream_status=status,
            code="upstream_auth_failed",
            retryable=False,
        )
    if status in CLIENT_ERROR_STATUSES:
        lowered = message.lower()
        if code == CONTEXT_LENGTH_CODE or "context length" in lowered or "context window" in lowered:
            code = CONTEXT_LENGTH_CODE
        param = detail.get("param")
        return UpstreamClientError(
            message, upstream_status=status, param=str(param) if param is not None else None, code=code
        )
    if status == 429:
        retry_after = {"retry-after": headers["retry-after"]} if "retry-after" in headers else {}
        return UpstreamRateLimitError(
            f"Backend {backend!r} is rate limited: {message}",
            upstream_status=status,
            code=code,
            headers=retry_after,
            retryable=code != "insufficient_quota",
        )
    if status in (408, 504):
        return UpstreamTimeoutError(f"Backend {backend!r} timed out: {message}", upstream_status=status)
    return UpstreamError(
        f"Backend {backend!r} failed (HTTP {status}): {message}",
        upstream_status=status,
        code=code,
        retryable=status >= 500,
    )


def error_in_answer(backend: str, error: Any, *, secrets: Sequence[str] = (), mid_stream: bool = False) -> UpstreamError:
    """An ``{"error": ...}`` the upstream sent with status 200 (as an SSE event or as the JSON answer):
    an upstream failure, so it falls back like a 5xx would."""
    detail = error if isinstance(error, dict) else {"message": str(error)}
    message = redact(str(detail.get("message") or "unknown error"), secrets)
    code = detail.get("code")
    where = "failed mid-stream" if mid_stream else "answered with an error"
    return UpstreamError(
        f"Backend {backend!r} {where}: {message}",
        code=str(code) if code is not None else ("upstream_stream_error" if mid_stream else "upstream_error"),
    )


def _error_detail(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            return error
        if isinstance(error, str):
            return {"message": error}
    return {}
