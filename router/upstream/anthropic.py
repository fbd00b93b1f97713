"""Anthropic's Messages API as an upstream (``kind: anthropic``): chat completions translated both ways,
and Messages API requests passed through as they are.

The translation itself is in ``router.anthropic_wire.upstream``; this module does the HTTP: the
``x-api-key`` and ``anthropic-version`` headers, ``POST {base_url}/v1/messages``, reading the SSE
events, and mapping Anthropic's errors (``overloaded_error`` 529 and ``api_error`` are server errors
that fall back and count in the breaker, ``rate_limit_error`` keeps its ``retry-after``,
``authentication_error`` is the backend's credential failing, a too-long prompt is a
context-length error), whether they come as a status or as an ``error`` event after a 200.

``complete``/``stream`` take and give chat completions; ``create_message``/``stream_message``/
``count_tokens`` take a Messages API body and give Anthropic's own answer (``POST /v1/messages``
served by an Anthropic backend), so nothing the chat shape cannot carry is lost either way.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import orjson

from router.anthropic_wire import ERROR_STATUS
from router.anthropic_wire.upstream import (
    ChunkTranslator,
    structured_output,
    to_chat_completion,
    to_messages_request,
)
from router.config import BackendConfig
from router.errors import UpstreamClientError, UpstreamError
from router.redact import redact
from router.upstream.base import (
    CONTEXT_LENGTH_CODE,
    Batch,
    Chunk,
    Completion,
    error_from_status,
    map_transport_errors,
)
from router.upstream.openai_compat import OpenAICompatProvider, decode_json

#: How Anthropic words a prompt that does not fit the model's window.
_CONTEXT_LENGTH_MARKERS = ("prompt is too long", "context limit", "context window", "context length")


class AnthropicProvider(OpenAICompatProvider):
    """Sends requests to ``{base_url}/v1/messages``; shares its parent's pooled session and health check."""

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

    # -- chat completions, translated ------------------------------------------------------------

    async def complete(self, body: dict[str, Any]) -> Completion:
        payload = orjson.dumps(to_messages_request(body, default_max_tokens=self.config.default_max_tokens))
        message = (await self._message(payload, self._headers)).data
        data = to_chat_completion(message, structured=structured_output(body), created=int(time.time()))
        return Completion(orjson.dumps(data), data)

    def stream(self, body: dict[str, Any]) -> AsyncIterator[Batch]:
        """The upstream's events as chat-completion chunks, in batches (see ``OpenAICompatProvider.stream``)."""
        payload = orjson.dumps(to_messages_request(body, default_max_tokens=self.config.default_max_tokens))
        translator = ChunkTranslator(structured=structured_output(body), created=int(time.time()))
        return self._messages_stream(payload, self._headers, translator)

    # -- Messages API, passed through --------------------------------------------------------------

    async def create_message(self, body: dict[str, Any], beta: str | None = None) -> Completion:
        """A Messages API ``body`` (its ``model`` already the backend's) sent as it is: Anthropic's ``message``.
        ``beta``: the client's ``anthropic-beta`` header, added to the backend's own."""
        return await self._message(orjson.dumps(body), self._with_beta(beta))

    def stream_message(self, body: dict[str, Any], beta: str | None = None) -> AsyncIterator[Batch]:
        """A streamed ``create_message``: Anthropic's events as they came, in batches, the batch with
        ``message_stop`` marked done; an ``error`` event raises (after the events that came before it)."""
        return self._messages_stream(orjson.dumps(body), self._with_beta(beta), None)

    async def count_tokens(self, body: dict[str, Any], beta: str | None = None) -> int:
        """``POST /v1/messages/count_tokens``: the backend's exact count of a Messages API prompt."""
        with map_transport_errors(self.name):
            status, headers, content = await self._post_bounded(
                f"{self._url}/count_tokens", orjson.dumps(body), self._with_beta(beta)
            )
        if status != 200:
            raise self._status_error(status, content, headers)
        tokens = decode_json(self.name, content).get("input_tokens")
        if type(tokens) is not int:
            raise UpstreamError(
                f"Backend {self.name!r} sent a count without `input_tokens`.", code="upstream_malformed"
            )
        return tokens

    def _with_beta(self, beta: str | None) -> Mapping[str, str]:
        if not beta:
            return self._headers
        own = self._headers.get("anthropic-beta")
        return {**self._headers, "anthropic-beta": f"{own},{beta}" if own else beta}

    # -- HTTP --------------------------------------------------------------------------------------

    async def _message(self, payload: bytes, headers: Mapping[str, str]) -> Completion:
        with map_transport_errors(self.name):
            status, answer_headers, content = await self._post_bounded(self._url, payload, headers)
        if status != 200:
            raise self._status_error(status, content, answer_headers)
        message = decode_json(self.name, content)
        if message.get("type") == "error":
            raise self._event_error(content, message)
        if not isinstance(message.get("content"), list):
            raise UpstreamError(f"Backend {self.name!r} sent a message without `content`.", code="upstream_malformed")
        return Completion(content, message)

    def _messages_stream(
        self, payload: bytes, headers: Mapping[str, str], translator: ChunkTranslator | None
    ) -> AsyncIterator[Batch]:
        """The events as chat chunks (``translator``), or as they came (None), in batches: the events that
        arrived together; the batch with ``message_stop`` is marked done."""
        return self._stream(
            self._url, payload, headers, lambda payloads: self._chunks(payloads, translator), "message_stop"
        )

    def _chunks(
        self, payloads: list[bytes], translator: ChunkTranslator | None
    ) -> tuple[list[Chunk], bool, UpstreamError | None]:
        """The chunks of the events that arrived together, whether ``message_stop`` was among them, and the
        error of an ``error`` event (returned, not raised, with the chunks that came before it)."""
        batch: list[Chunk] = []
        done = False
        for payload in payloads:
            try:
                event = orjson.loads(payload)
            except orjson.JSONDecodeError:
                event = None
            if type(event) is not dict:  # malformed, or JSON that is not an object: decode_json says which
                try:
                    event = decode_json(self.name, payload)
                except UpstreamError as exc:
                    return batch, done, exc
            kind = event.get("type")
            if kind == "error":
                return batch, done, self._event_error(payload, event)
            if translator is None:  # passed through; a payload that spanned several data: lines goes on one
                batch.append(Chunk(orjson.dumps(event) if b"\n" in payload else payload, event))
            else:
                for raw, data in translator.feed_encoded(event):
                    batch.append(Chunk(raw, data))
            done = done or kind == "message_stop"
        return batch, done, None

    def _event_error(self, payload: bytes, event: dict[str, Any]) -> UpstreamError:
        """An ``error`` event after a 200 (or an error body sent with one): the error it carries."""
        error = event.get("error")
        status = ERROR_STATUS.get(str(error.get("type")), 500) if isinstance(error, dict) else 500
        return anthropic_error(self.name, status, payload, {}, mid_stream=True, secrets=self._secrets)

    def _status_error(self, status: int, content: bytes, headers: Mapping[str, str]) -> UpstreamError:
        return anthropic_error(self.name, status, content, headers, secrets=self._secrets)


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
