"""The simulated upstream's ``POST /v1/messages``: the simulator's answers in Anthropic's Messages API.

On the wire it behaves like ``api.anthropic.com``: ``x-api-key`` and ``anthropic-version``
headers, ``message`` objects, SSE with ``event:`` lines in Anthropic's order (``message_start``,
``ping``, ``content_block_start``/``_delta``/``_stop``, ``message_delta``, ``message_stop``), usage,
``tool_use`` blocks with ``input_json_delta``, and errors ``{"type": "error", "error": {type,
message}}`` (529 ``overloaded_error`` among them; a too-long prompt is Anthropic's "prompt is too
long"). The answer is planned by the simulator's chat side (same faults, same text) and translated
with ``router.anthropic_wire.downstream``. ``error_event_after_chunks`` ends a 200 stream with an
``error`` event, as Anthropic does when it is overloaded mid-answer.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Send

from router.anthropic_wire.downstream import (
    EventTranslator,
    error_body,
    parse_messages_request,
    sse_event,
    to_chat_request,
    to_message,
)
from router.errors import InvalidRequestError
from router.simulator import _ChatCompletions, _Exchange, _json_or_none, _RequestError


class AnthropicMessages(_ChatCompletions):
    """``POST /v1/messages``: the chat side's exchange, checked and delivered in Anthropic's wire format."""

    def plan(self, request: Request, raw: bytes) -> _Exchange:
        """Check the request the way Anthropic does (credentials, version header, body) and plan the answer."""
        sim = self.sim
        try:
            native: Any = parse_messages_request(raw)
            body, invalid = to_chat_request(native), None
        except InvalidRequestError as exc:
            native, body, invalid = _json_or_none(raw), None, exc
        sim.last_request = {"headers": dict(request.headers), "body": native}
        key = sim.profile.api_key
        if key is not None and request.headers.get("x-api-key") != key:
            raise _RequestError(401, "invalid x-api-key")
        if "anthropic-version" not in request.headers:
            raise _RequestError(400, "anthropic-version: header is required")
        if body is not None and body.get("stream"):
            body["stream_options"] = {"include_usage": True}  # Anthropic streams always carry usage
        try:
            return sim.decide(body, invalid)
        except _RequestError as exc:
            if exc.code == "context_length_exceeded":
                window = sim.profile.context_window
                raise _RequestError(400, f"prompt is too long: {window + 1} tokens > {window} maximum") from exc
            raise

    async def run(self, exchange: _Exchange, send: Send) -> bool:
        return await (self._send_sse(exchange, send) if exchange.sse else self._send_json(exchange, send))

    def refusal(self, error: _RequestError) -> Response:
        """Anthropic's error shape; the type follows the status (529: ``overloaded_error``)."""
        body = error_body(error.status, error.message)
        return Response(orjson.dumps(body), error.status, error.headers, media_type="application/json")

    async def _send_json(self, exchange: _Exchange, send: Send) -> bool:
        await exchange.generate()
        if exchange.malformed:
            body = b'{"id": "msg_%s", "type": "message", "content": [{' % exchange.id.encode()
        else:
            message = to_message(exchange._completion())
            body = orjson.dumps({**message, "id": _message_id(exchange)})
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body, "more_body": False})
        return True

    async def _send_sse(self, exchange: _Exchange, send: Send) -> bool:
        headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        translator = EventTranslator(_message_id(exchange), exchange.profile.model)
        failure = self.sim.take("error_event_after_chunks")
        sent = 0
        async with aclosing(exchange._frames()) as frames:
            async for payload in frames:
                events = translator.start() if sent == 0 else []
                events += translator.finish() if payload == b"[DONE]" else translator.feed(orjson.loads(payload))
                for event in events:
                    if exchange.drop is not None and sent == exchange.drop.drop_after_chunks:
                        return False
                    if exchange.stall is not None and sent == exchange.stall.stall_after_chunks:
                        await asyncio.sleep(exchange.stall.stall_seconds)
                    if failure is not None and sent == failure.error_event_after_chunks:
                        error = error_body(529, failure.message or "Overloaded")
                        error["error"]["type"] = failure.type or "overloaded_error"
                        await _write(send, sse_event(error), more=False)
                        return False
                    if exchange.malformed and sent == 0:
                        await _write(send, b'event: message_start\ndata: {"type": "message_start", "message": {\n\n')
                    await _write(send, sse_event(event))
                    sent += 1
        await _write(send, b"", more=False)
        return True


def _message_id(exchange: _Exchange) -> str:
    return f"msg_{exchange.id.removeprefix('chatcmpl-')}"


async def _write(send: Send, data: bytes, *, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": more})
