"""The simulated upstream's ``POST /v1/messages`` (and ``/count_tokens``): the simulator's answers in
Anthropic's Messages API.

On the wire it behaves like ``api.anthropic.com``: ``x-api-key`` and ``anthropic-version``
headers, ``message`` objects, SSE with ``event:`` lines in Anthropic's order (``message_start``,
``ping``, ``content_block_start``/``_delta``/``_stop``, ``message_delta``, ``message_stop``), usage,
``tool_use`` blocks with ``input_json_delta``, and errors ``{"type": "error", "error": {type,
message}}`` (529 ``overloaded_error`` among them; a too-long prompt is Anthropic's "prompt is too
long"). The answer is planned by the simulator's chat side (same faults, same text) and translated
with ``router.anthropic_wire.downstream``, then given what only Anthropic has, in the shapes of the
``anthropic`` SDK's types:

- ``thinking: {type: enabled}``: a ``thinking`` block with its ``signature`` first (streamed as
  ``thinking_delta`` and ``signature_delta``), its tokens counted as output;
- ``stop_sequences``: the text ends before the first one it contains, with ``stop_reason:
  stop_sequence`` and the ``stop_sequence`` that matched;
- ``cache_control``: the prompt up to the last mark is written to the cache on first sight
  (``cache_creation_input_tokens``) and read from it after (``cache_read_input_tokens``); ``usage``
  carries ``service_tier``, and ``message_start`` the prompt's usage.

``error_event_after_chunks`` ends a 200 stream with an ``error`` event, as Anthropic does when it is
overloaded mid-answer.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
from contextlib import aclosing
from dataclasses import dataclass, replace
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
from router.simulator import (
    ChatCompletions,
    Exchange,
    RequestError,
    Simulator,
    fault_error,
    json_or_none,
)
from router.simulator_text import estimate_prompt_tokens, tokenize, topic_of


@dataclass(frozen=True)
class _Extras:
    """What an answer has beyond the chat side's: thinking, the stop sequence that ended it, the prompt cache."""

    thinking: tuple[str, ...] = ()
    stop_sequence: str | None = None
    cache_read: int = 0
    cache_write: int = 0

    @property
    def signature(self) -> str:
        return base64.b64encode(hashlib.sha256("".join(self.thinking).encode()).digest()).decode()


class AnthropicMessages(ChatCompletions):
    """``POST /v1/messages``: the chat side's exchange, checked and delivered in Anthropic's wire format."""

    def plan(self, request: Request, raw: bytes) -> Exchange:
        """Check the request the way Anthropic does (credentials, version header, body) and plan the answer."""
        sim = self.sim
        try:
            native: Any = parse_messages_request(raw)
            body, invalid = to_chat_request(native)[0], None
        except InvalidRequestError as exc:
            native, body, invalid = json_or_none(raw), None, exc
        sim.last_request = {"headers": dict(request.headers), "body": native}
        _check_headers(sim, request)
        if body is not None and body.get("stream"):
            body["stream_options"] = {"include_usage": True}  # Anthropic streams always carry usage
        try:
            exchange = sim.decide(body, invalid)
        except RequestError as exc:
            if exc.code == "context_length_exceeded":
                window = sim.profile.context_window
                raise RequestError(400, f"prompt is too long: {window + 1} tokens > {window} maximum") from exc
            raise
        extras = _Extras(thinking=_thinking(native, body))
        reply = exchange.replies[0]
        if reply.tool_call is None and native.get("stop_sequences"):
            pieces, matched = _cut_at_stop(reply.pieces, native["stop_sequences"])
            if matched is not None:
                exchange.replies = [replace(reply, pieces=pieces, finish_reason="stop")]
                extras = replace(extras, stop_sequence=matched)
        cached = _cached_prefix(native)
        if cached is not None:
            tokens = min(math.ceil(len(cached) / 4), exchange.prompt_tokens - 1)
            if cached in sim.prompt_cache:
                extras = replace(extras, cache_read=tokens)
            else:
                sim.prompt_cache.add(cached)
                extras = replace(extras, cache_write=tokens)
        exchange.native = extras
        return exchange

    async def run(self, exchange: Exchange, send: Send) -> bool:
        return await (self._send_sse(exchange, send) if exchange.sse else self._send_json(exchange, send))

    def refusal(self, error: RequestError) -> Response:
        """Anthropic's error shape; the type follows the status (529: ``overloaded_error``)."""
        body = error_body(error.status, error.message)
        return Response(orjson.dumps(body), error.status, error.headers, media_type="application/json")

    async def _send_json(self, exchange: Exchange, send: Send) -> bool:
        await exchange.generate()
        extras: _Extras = exchange.native
        if exchange.malformed:
            body = b'{"id": "msg_%s", "type": "message", "content": [{' % exchange.id.encode()
        else:
            message = to_message(exchange._completion())
            if extras.thinking:
                thinking = {"type": "thinking", "thinking": "".join(extras.thinking), "signature": extras.signature}
                message["content"] = [thinking, *message["content"]]
            if extras.stop_sequence is not None:
                message["stop_reason"], message["stop_sequence"] = "stop_sequence", extras.stop_sequence
            message["usage"] = _usage(exchange, extras)
            body = orjson.dumps({**message, "id": _message_id(exchange)})
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body, "more_body": False})
        return True

    async def _send_sse(self, exchange: Exchange, send: Send) -> bool:
        headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        extras: _Extras = exchange.native
        translator = EventTranslator(_message_id(exchange), exchange.profile.model)
        failure = self.sim.take("error_event_after_chunks")
        sent = 0
        async with aclosing(exchange._frames()) as frames:
            async for payload in frames:
                events = _opening(translator, exchange, extras) if sent == 0 else []
                events += _with_extras(
                    translator.finish() if payload == b"[DONE]" else translator.feed(orjson.loads(payload)),
                    exchange,
                    extras,
                )
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


async def count_tokens(sim: Simulator, request: Request) -> Response:
    """``POST /v1/messages/count_tokens``: the prompt's tokens as the simulator bills them (the ``status``
    fault applies here too)."""
    raw = await request.body()
    sim.last_request = {"headers": dict(request.headers), "body": json_or_none(raw)}
    try:
        _check_headers(sim, request)
        if (failure := sim.take("status")) is not None:
            raise fault_error(failure)
        try:
            body = to_chat_request(parse_messages_request(raw, generate=False))[0]
        except InvalidRequestError as exc:
            raise RequestError(400, exc.message) from exc
    except RequestError as exc:
        return Response(orjson.dumps(error_body(exc.status, exc.message)), exc.status, media_type="application/json")
    return Response(orjson.dumps({"input_tokens": estimate_prompt_tokens(body)}), media_type="application/json")


def _check_headers(sim: Simulator, request: Request) -> None:
    key = sim.profile.api_key
    if key is not None and request.headers.get("x-api-key") != key:
        raise RequestError(401, "invalid x-api-key")
    if "anthropic-version" not in request.headers:
        raise RequestError(400, "anthropic-version: header is required")


def _thinking(native: dict[str, Any], body: dict[str, Any]) -> tuple[str, ...]:
    if (native.get("thinking") or {}).get("type") != "enabled":
        return ()
    return tuple(tokenize(f"The user asks about {topic_of(body['messages'])}. A short, plain answer serves best."))


def _cut_at_stop(pieces: tuple[str, ...], stops: list[str]) -> tuple[tuple[str, ...], str | None]:
    """The pieces before the first stop sequence the text contains (it is not part of the output), and it."""
    text = ""
    for i, piece in enumerate(pieces):
        text += piece
        found = [(text.find(stop), stop) for stop in stops if stop and stop in text]
        if found:
            position, stop = min(found)
            kept = text[len(text) - len(piece) : position] if position > len(text) - len(piece) else ""
            return (*pieces[:i], *([kept] if kept else [])), stop
    return pieces, None


def _cached_prefix(native: dict[str, Any]) -> str | None:
    """The prompt up to its last ``cache_control`` mark (tools, then system, then messages), or None."""
    parts: list[Any] = [*(native.get("tools") or ())]
    system = native.get("system")
    parts += system if isinstance(system, list) else ([{"type": "text", "text": system}] if system else [])
    for turn in native["messages"]:
        parts += turn["content"] if isinstance(turn["content"], list) else [{"text": turn["content"]}]
    marked = [i for i, part in enumerate(parts) if isinstance(part, dict) and part.get("cache_control")]
    return orjson.dumps(parts[: marked[-1] + 1]).decode() if marked else None


def _usage(exchange: Exchange, extras: _Extras, *, output: bool = True, tier: bool = True) -> dict[str, Any]:
    """Anthropic's ``usage``: ``output`` False for ``message_start`` (one token so far), ``tier`` False for
    ``message_delta`` (its usage has no ``service_tier``)."""
    cached = extras.cache_read + extras.cache_write
    generated = sum(len(reply.pieces) for reply in exchange.replies) + len(extras.thinking)
    usage: dict[str, Any] = {
        "input_tokens": exchange.prompt_tokens - cached,
        "cache_creation_input_tokens": extras.cache_write,
        "cache_read_input_tokens": extras.cache_read,
        "output_tokens": generated if output else 1,
    }
    if tier:
        usage["service_tier"] = "standard"
    return usage


def _opening(translator: EventTranslator, exchange: Exchange, extras: _Extras) -> list[dict[str, Any]]:
    """``message_start`` with the prompt's usage, ``ping``, and the thinking block if there is one."""
    start, ping = translator.start()
    start["message"]["usage"] = _usage(exchange, extras, output=False)
    events = [start, ping]
    if extras.thinking:
        block = {"type": "thinking", "thinking": "", "signature": ""}
        events.append({"type": "content_block_start", "index": 0, "content_block": block})
        events += [
            {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": piece}}
            for piece in extras.thinking
        ]
        signature = {"type": "signature_delta", "signature": extras.signature}
        events.append({"type": "content_block_delta", "index": 0, "delta": signature})
        events.append({"type": "content_block_stop", "index": 0})
    return events


def _with_extras(events: list[dict[str, Any]], exchange: Exchange, extras: _Extras) -> list[dict[str, Any]]:
    """The translator's events after the thinking block (their indices shifted), ending as ``extras`` say."""
    for event in events:
        if extras.thinking and "index" in event:
            event["index"] += 1
        if event["type"] == "message_delta":
            if extras.stop_sequence is not None:
                event["delta"] = {"stop_reason": "stop_sequence", "stop_sequence": extras.stop_sequence}
            event["usage"] = _usage(exchange, extras, tier=False)
    return events


def _message_id(exchange: Exchange) -> str:
    return f"msg_{exchange.id.removeprefix('chatcmpl-')}"


async def _write(send: Send, data: bytes, *, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": more})
