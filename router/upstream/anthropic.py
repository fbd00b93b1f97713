"""Anthropic's Messages API as an upstream (``kind: anthropic``): chat completions translated both ways.

The translation itself is in ``router.anthropic_wire.upstream``; this module does the HTTP: the
``x-api-key`` and ``anthropic-version`` headers, ``POST {base_url}/v1/messages``, reading the SSE
events, and mapping Anthropic's errors (``overloaded_error`` 529 and ``api_error`` are server errors
that fall back and count in the breaker, ``rate_limit_error`` keeps its ``retry-after``,
``authentication_error`` is the backend's credential failing, a too-long prompt is a
context-length error), whether they come as a status or as an ``error`` event after a 200.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextvars import ContextVar
from typing import Any

import orjson

from router.anthropic_wire import ERROR_STATUS
from router.anthropic_wire.upstream import ChunkTranslator, structured_output, to_chat_completion, to_messages_request
from router.config import BackendConfig
from router.errors import UpstreamClientError, UpstreamError
from router.redact import redact
from router.upstream.base import CONTEXT_LENGTH_CODE, Batch, Chunk, Completion, error_from_status, map_transport_errors
from router.upstream.openai_compat import _MAX_ERROR_BODY, OpenAICompatProvider, _drain
from router.upstream.sse import SSEDecoder

#: The request as a Messages API body, while ``POST /v1/messages`` serves it: an Anthropic backend
#: sends that on (with its own model name) instead of translating the chat body back, so what the
#: chat shape cannot carry (``cache_control``, ``top_k``, system blocks) reaches it. Set and reset
#: by ``router.messages``; the pipeline's call into the provider runs in the request's own context.
NATIVE_REQUEST: ContextVar[dict[str, Any] | None] = ContextVar("native_anthropic_request", default=None)

#: How Anthropic words a prompt that does not fit the model's window.
_CONTEXT_LENGTH_MARKERS = ("prompt is too long", "context limit", "context window", "context length")


class AnthropicProvider(OpenAICompatProvider):
    """Sends chat completions to ``{base_url}/v1/messages``; shares its parent's pooled session and health check."""

    def __init__(self, name: str, config: BackendConfig) -> None:
        super().__init__(name, config)
        self._url = f"{config.base_url}/v1/messages"
        headers = {
            "content-type": "application/json",
            "accept-encoding": "identity",
            "anthropic-version": config.anthropic_version,
            **config.headers,
        }
        if config.api_key is not None:
            headers["x-api-key"] = config.api_key.get_secret_value()
        self._headers = headers

    def _request(self, body: dict[str, Any]) -> bytes:
        native = NATIVE_REQUEST.get()
        if native is not None:
            return orjson.dumps({**native, "model": body["model"], "stream": bool(body.get("stream"))})
        return orjson.dumps(to_messages_request(body, default_max_tokens=self.config.default_max_tokens))

    async def complete(self, body: dict[str, Any]) -> Completion:
        payload = self._request({**body, "stream": False})
        with map_transport_errors(self.name):
            status, headers, content = await self._post_bounded(self._url, payload)
        if status != 200:
            raise anthropic_error(self.name, status, content, headers, secrets=self._secrets)
        try:
            message = orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(f"Backend {self.name!r} sent malformed JSON.", code="upstream_malformed") from exc
        if not isinstance(message, dict) or not isinstance(message.get("content"), list):
            raise UpstreamError(f"Backend {self.name!r} sent a message without `content`.", code="upstream_malformed")
        data = to_chat_completion(message, structured=structured_output(body), created=int(time.time()))
        return Completion(orjson.dumps(data), data)

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[Batch]:
        """The upstream's events as chat-completion chunks, in batches (see ``OpenAICompatProvider.stream``)."""
        payload = self._request(body)
        with map_transport_errors(self.name):
            response = await self.session.post(self._url, data=payload, headers=self._headers)
        reusable = False
        try:
            if response.status != 200:
                with map_transport_errors(self.name):
                    content = await response.content.read(_MAX_ERROR_BODY)
                raise anthropic_error(self.name, response.status, content, response.headers, secrets=self._secrets)
            translator = ChunkTranslator(structured=structured_output(body), created=int(time.time()))
            decoder = SSEDecoder(self.config.max_event_bytes)
            reader = response.content
            while True:
                with map_transport_errors(self.name):
                    raw = await reader.readany()
                batch, failure = self._translate(translator, self._events(decoder, raw))
                if failure is not None:
                    if batch:  # what came before the error event is the client's, as if it came in its own read
                        yield batch, False
                    raise failure
                if translator.done:
                    reusable = await _drain(reader)
                    yield batch, True
                    return
                if batch:
                    yield batch, False
                if not raw:
                    raise UpstreamError(
                        f"Backend {self.name!r} ended the stream without message_stop.", code="upstream_disconnected"
                    )
        finally:
            if reusable:
                response.release()
            else:
                response.close()

    def _translate(
        self, translator: ChunkTranslator, payloads: list[bytes]
    ) -> tuple[list[Chunk], UpstreamError | None]:
        """The chunks of the events that arrived together, up to an ``error`` event (returned, not raised)."""
        batch: list[Chunk] = []
        for payload in payloads:
            try:
                event = self._event(payload)
            except UpstreamError as exc:
                return batch, exc
            batch += [Chunk(orjson.dumps(data), data) for data in translator.feed(event)]
        return batch, None

    def _event(self, payload: bytes) -> dict[str, Any]:
        """One decoded event; an ``error`` event raises the error it carries."""
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(f"Backend {self.name!r} sent a malformed event.", code="upstream_malformed") from exc
        if not isinstance(event, dict):
            raise UpstreamError(
                f"Backend {self.name!r} sent an event that is not an object.", code="upstream_malformed"
            )
        if event.get("type") == "error":
            error = event.get("error") or {}
            status = ERROR_STATUS.get(str(error.get("type")), 500)
            raise anthropic_error(self.name, status, payload, {}, mid_stream=True, secrets=self._secrets)
        return event


def anthropic_error(
    backend: str, status: int, body: bytes, headers: Any, *, mid_stream: bool = False, secrets: Sequence[str] = ()
) -> UpstreamError:
    """An Anthropic error answer (or ``error`` event) as the gateway's error; the type is kept as ``code``.
    Its message is scrubbed of ``secrets`` and credential-shaped text, as ``error_from_status`` does."""
    error = error_from_status(backend, status, body, headers, secrets=secrets)
    detail = _error(body)
    kind = detail.get("type")
    if isinstance(error, UpstreamClientError):
        message = str(detail.get("message") or "").lower()
        error.code = CONTEXT_LENGTH_CODE if any(m in message for m in _CONTEXT_LENGTH_MARKERS) else kind
    elif kind and error.code in (None, error.default_code):
        error.code = str(kind)
    if mid_stream:
        error.message = f"Backend {backend!r} failed mid-stream: {redact(str(detail.get('message') or kind or 'unknown error'), secrets)}"
        error.args = (error.message,)
    return error


def _error(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, dict) else {}
