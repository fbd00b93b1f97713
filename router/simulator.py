"""A simulated OpenAI-compatible upstream: `llm-router demo` runs two of these, the tests use them as real servers.

On the wire it behaves like the OpenAI API and vLLM's OpenAI server (``chat.completion`` and
``chat.completion.chunk`` objects, SSE with ``data: [DONE]``, usage, tool-call deltas, error bodies
``{"error": {message, type, param, code}}``), with latency shaped by ``SimProfile``. What it says
comes from ``router.simulator_text``.

Endpoints:
    POST /v1/chat/completions   JSON or SSE; honours n, max_(completion_)tokens, seed, tools,
                                response_format, stream_options.include_usage
    POST /v1/embeddings         deterministic unit vectors (the same text gives the same vector), float or
                                base64, ``dimensions``, usage
    POST /v1/responses          the Responses API (a ``responses: native`` backend): its chat answer, translated
                                with the gateway's own ``responses_wire``; JSON or typed SSE events
    POST /v1/messages           the same answers in Anthropic's Messages API (``router.simulator_anthropic``)
    POST /v1/messages/count_tokens  Anthropic's token count of a Messages API prompt
    GET  /v1/models             OpenAI list with ``profile.model``
    GET  /metrics               vLLM gauges: num_requests_running / _waiting, gpu_cache_usage_perc; counters
                                prompt_tokens_total, generation_tokens_total
    POST /_sim/faults           arm faults (see ``FaultSpec``); DELETE /_sim/faults disarms all
    GET  /_sim/stats            request counters and the last request's headers and body
    POST /_sim/state            set the vLLM ``waiting`` and ``cache_usage`` gauges

Faults only affect chat completions, and an armed fault with ``times`` is used up only by the
requests it applies to: the SSE faults (stall, drop, extra_frames) by SSE answers,
``plain_json_for_stream`` by stream requests, ``sse_for_nonstream`` by non-stream requests.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import struct
import time
import uuid
from collections.abc import AsyncGenerator, Coroutine
from contextlib import aclosing
from dataclasses import dataclass, field
from functools import partial
from random import Random
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, Field, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from router.errors import InvalidRequestError
from router.schemas import parse_chat_request
from router.simulator_text import Reply, compose_replies, estimate_prompt_tokens
from router.upstream.responses_wire import (
    StreamTranslator,
    chat_request,
    chat_to_response,
    response_shell,
    sse,
)


@dataclass
class SimProfile:
    """How one simulated upstream looks and how fast it is."""

    name: str = "mid"
    model: str = "sim-mid"
    ttft: float = 0.15
    token_interval: float = 0.02
    context_window: int = 32768
    api_key: str | None = None
    max_tokens_default: int = 64


class FaultSpec(BaseModel, extra="forbid"):
    """Body of ``POST /_sim/faults``: every field that is set arms one fault, all with the same ``times``.

    ``status`` answers with that status and an OpenAI error body (``message``/``type``/``code``/
    ``param`` override the defaults for the status, ``retry_after`` adds a ``retry-after`` header).
    ``delay_first_token`` adds seconds before the first token. After N ``data:`` frames (the role
    chunk is frame 1), ``stall_after_chunks`` pauses ``stall_seconds`` and then carries on, and
    ``drop_after_chunks`` closes the connection (no ``[DONE]``). ``malformed`` sends a truncated
    JSON body, or an extra first SSE frame that is not JSON. ``extra_frames`` adds a ``: keep-alive``
    comment, an ``event: ping`` frame without data and CRLF line endings. ``times`` omitted means
    until ``DELETE /_sim/faults``; arming a fault kind again replaces it, other kinds stay armed.
    """

    status: Annotated[int, Field(ge=400, le=599)] | None = None
    message: str | None = None
    type: str | None = None
    code: str | None = None
    param: str | None = None
    retry_after: Annotated[float, Field(ge=0)] | None = None
    delay_first_token: Annotated[float, Field(ge=0)] | None = None
    stall_after_chunks: Annotated[int, Field(ge=0)] | None = None
    stall_seconds: Annotated[float, Field(ge=0)] = 30.0
    drop_after_chunks: Annotated[int, Field(ge=0)] | None = None
    malformed: bool = False
    context_length_error: bool = False
    plain_json_for_stream: bool = False
    sse_for_nonstream: bool = False
    extra_frames: bool = False
    omit_usage: bool = False
    #: Anthropic streams only: after N events, an ``error`` event (``type`` or overloaded_error) ends the stream.
    error_event_after_chunks: Annotated[int, Field(ge=0)] | None = None
    times: Annotated[int, Field(ge=1)] | None = None

    def kinds(self) -> list[str]:
        """The faults this spec arms, each named after its trigger field."""
        valued = ("status", "delay_first_token", "stall_after_chunks", "drop_after_chunks", "error_event_after_chunks")
        return [k for k in valued if getattr(self, k) is not None] + [k for k, v in self if v is True]


class _StateUpdate(BaseModel, extra="forbid"):
    waiting: Annotated[int, Field(ge=0)] | None = None
    cache_usage: Annotated[float, Field(ge=0, le=1)] | None = None


@dataclass(eq=False)
class RequestError(Exception):
    """An OpenAI-shaped refusal: raised while planning an answer, sent as ``{"error": {...}}``."""

    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> Response:
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return Response(orjson.dumps({"error": error}), self.status, self.headers, media_type="application/json")


@dataclass
class _Armed:
    spec: FaultSpec
    remaining: int | None


@dataclass
class Simulator:
    """All mutable state of one simulated upstream; lives as long as its app."""

    profile: SimProfile
    faults: dict[str, _Armed] = field(default_factory=dict)
    requests: int = 0
    completed: int = 0
    cancelled: int = 0
    in_flight: int = 0
    last_request: dict[str, Any] | None = None
    waiting: int = 0
    cache_usage: float = 0.0
    #: Tokens of the answers sent to the end, as vLLM counts them (its ``*_tokens_total`` counters).
    prompt_tokens: int = 0
    generation_tokens: int = 0
    #: Anthropic's prompt cache: the prompt prefixes (up to a ``cache_control`` mark) written so far.
    prompt_cache: set[str] = field(default_factory=set)

    def take(self, kind: str) -> FaultSpec | None:
        """The armed fault of this kind, counting one use; None if not armed."""
        armed = self.faults.get(kind)
        if armed is None:
            return None
        if armed.remaining is not None:
            armed.remaining -= 1
            if armed.remaining == 0:
                del self.faults[kind]
        return armed.spec

    async def models(self, request: Request) -> Response:
        try:
            self.authenticate(request)
        except RequestError as exc:
            return exc.response()
        card = {
            "id": self.profile.model,
            "object": "model",
            "created": 1700000000,
            "owned_by": "llm-router-sim",
            "max_model_len": self.profile.context_window,
        }
        return _json({"object": "list", "data": [card]})

    async def embeddings(self, request: Request) -> Response:
        """``POST /v1/embeddings`` as OpenAI answers it; the ``status`` fault applies here too."""
        try:
            self.authenticate(request)
            body = json_or_none(await request.body())
            self.requests += 1
            if (failure := self.take("status")) is not None:
                raise fault_error(failure)
            inputs = _embedding_inputs(body)
        except RequestError as exc:
            return exc.response()
        dimensions = body.get("dimensions") or _EMBEDDING_DIMENSIONS
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, given in enumerate(inputs):
            vector = embedding_vector(f"{body['model']}|{given}", dimensions)
            encoded: Any = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode() if as_base64 else vector
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(len(given) if isinstance(given, list) else max(1, math.ceil(len(given) / 4)) for given in inputs)
        self.completed += 1
        return _json({"object": "list", "data": data, "model": body["model"],
                      "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def metrics(self, request: Request) -> Response:
        label = '{model_name="%s"}' % self.profile.model
        gauges = (
            ("num_requests_running", "Number of requests currently running on GPU.", self.in_flight),
            ("num_requests_waiting", "Number of requests waiting to be processed.", self.waiting),
            ("gpu_cache_usage_perc", "GPU KV-cache usage. 1 means 100 percent usage.", self.cache_usage),
        )
        counters = (
            ("prompt_tokens_total", "Number of prefill tokens processed.", self.prompt_tokens),
            ("generation_tokens_total", "Number of generation tokens processed.", self.generation_tokens),
        )
        text = "".join(
            f"# HELP vllm:{name} {doc}\n# TYPE vllm:{name} {kind}\nvllm:{name}{label} {float(value)}\n"
            for kind, series in (("gauge", gauges), ("counter", counters))
            for name, doc, value in series
        )
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def arm_faults(self, request: Request) -> Response:
        try:
            spec = FaultSpec.model_validate_json(await request.body())
        except ValidationError as exc:
            return RequestError(400, _describe(exc)).response()
        if not spec.kinds():
            return RequestError(400, "No fault given; see FaultSpec for the fields.").response()
        for kind in spec.kinds():
            self.faults[kind] = _Armed(spec, spec.times)
        return self.describe_faults()

    async def disarm_faults(self, request: Request) -> Response:
        self.faults.clear()
        return self.describe_faults()

    def describe_faults(self) -> Response:
        return _json({"faults": {kind: {"remaining": a.remaining} for kind, a in self.faults.items()}})

    async def stats(self, request: Request) -> Response:
        """``completed``: answers sent to the end (errors are not answers); ``cancelled``: the client left first."""
        return _json(
            {
                "requests": self.requests,
                "completed": self.completed,
                "cancelled": self.cancelled,
                "in_flight": self.in_flight,
                "last_request": self.last_request,
            }
        )

    async def set_state(self, request: Request) -> Response:
        try:
            update = _StateUpdate.model_validate_json(await request.body())
        except ValidationError as exc:
            return RequestError(400, _describe(exc)).response()
        self.waiting = self.waiting if update.waiting is None else update.waiting
        self.cache_usage = self.cache_usage if update.cache_usage is None else update.cache_usage
        return _json({"waiting": self.waiting, "cache_usage": self.cache_usage})

    def authenticate(self, request: Request) -> None:
        key = self.profile.api_key
        if key is None:
            return
        given = request.headers.get("authorization", "")
        if not given.startswith("Bearer ") or not given[7:].strip():
            raise RequestError(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        if given[7:].strip() != key:
            raise RequestError(
                401,
                "Incorrect API key provided. You can find your API key in your account settings.",
                code="invalid_api_key",
            )

    def plan(self, request: Request, raw: bytes) -> Exchange:
        """Record the request, check it the way the OpenAI API does and decide the whole answer.

        Raises ``RequestError`` for every refusal, in OpenAI's order: credentials, then the body.
        """
        try:
            body, invalid = parse_chat_request(raw), None
        except InvalidRequestError as exc:
            body, invalid = json_or_none(raw), exc
        self.last_request = {"headers": dict(request.headers), "body": body}
        self.authenticate(request)
        return self.decide(body, invalid)

    def decide(self, body: Any, invalid: InvalidRequestError | None) -> Exchange:
        """The answer to an authenticated chat-completions ``body`` (``invalid``: why it cannot be parsed)."""
        if (failure := self.take("status")) is not None:
            raise fault_error(failure)
        if invalid is not None:
            raise RequestError(400, invalid.message, param=invalid.param, code=invalid.code) from invalid
        prompt_tokens = estimate_prompt_tokens(body)
        if self.take("context_length_error") is not None or prompt_tokens > self.profile.context_window:
            window = self.profile.context_window
            raise RequestError(
                400,
                f"This model's maximum context length is {window} tokens. However, your "
                f"messages resulted in {max(prompt_tokens, window + 1)} tokens. Please reduce the "
                "length of the messages.",
                param="messages",
                code="context_length_exceeded",
            )
        stream = bool(body.get("stream"))
        sse = self.take("plain_json_for_stream") is None if stream else self.take("sse_for_nonstream") is not None
        include_usage = stream and bool((body.get("stream_options") or {}).get("include_usage"))
        delay = self.take("delay_first_token")
        profile = self.profile
        return Exchange(
            profile=profile,
            replies=compose_replies(
                body, tier=profile.name, model=profile.model, default_length=profile.max_tokens_default
            ),
            prompt_tokens=prompt_tokens,
            sse=sse,
            usage=self.take("omit_usage") is None and (include_usage or not sse),
            delay=(delay.delay_first_token or 0.0) if delay else 0.0,
            malformed=self.take("malformed") is not None,
            stall=self.take("stall_after_chunks") if sse else None,
            drop=self.take("drop_after_chunks") if sse else None,
            extra_frames=sse and self.take("extra_frames") is not None,
        )


class ChatCompletions:
    """``POST /v1/chat/completions`` as a raw ASGI app, so it can watch for the client leaving.

    ``plan``, ``run`` and ``refusal`` are the wire format's; ``router.simulator_anthropic`` overrides them.
    """

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def plan(self, request: Request, raw: bytes) -> Exchange:
        return self.sim.plan(request, raw)

    async def run(self, exchange: Exchange, send: Send) -> bool:
        return await exchange.run(send)

    def refusal(self, error: RequestError) -> Response:
        return error.response()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sim = self.sim
        request = Request(scope, receive)
        raw = await request.body()
        sim.requests += 1
        sim.in_flight += 1
        try:
            try:
                exchange = self.plan(request, raw)
            except RequestError as exc:
                await self.refusal(exc)(scope, receive, send)
                return
            finished = await _until_disconnect(self.run(exchange, send), receive)
            if finished is None:
                sim.cancelled += 1
            elif finished:
                sim.completed += 1
                sim.prompt_tokens += exchange.prompt_tokens
                sim.generation_tokens += sum(len(reply.pieces) for reply in exchange.replies)
        finally:
            sim.in_flight -= 1


class _Responses(ChatCompletions):
    """``POST /v1/responses`` (a ``responses: native`` backend): the chat side's exchange, delivered as a
    ``response`` object or its typed events (through the gateway's own ``responses_wire``)."""

    def plan(self, request: Request, raw: bytes) -> Exchange:
        sim = self.sim
        native = json_or_none(raw)
        sim.last_request = {"headers": dict(request.headers), "body": native}
        sim.authenticate(request)
        try:
            if not isinstance(native, dict) or not isinstance(native.get("model"), str):
                raise InvalidRequestError("Missing required parameter: 'model'.", param="model")
            body, invalid = chat_request({**native, "stream": bool(native.get("stream"))}, []), None
            if body.get("stream"):
                body["stream_options"] = {"include_usage": True}  # Responses streams always end with usage
        except InvalidRequestError as exc:
            body, invalid = None, exc
        exchange = sim.decide(body, invalid)
        exchange.native = native
        return exchange

    async def run(self, exchange: Exchange, send: Send) -> bool:
        shell = response_shell(f"resp_{exchange.id[9:]}", exchange.native, exchange.profile.model)
        if not exchange.sse:
            await exchange.generate()
            body = orjson.dumps(chat_to_response(exchange._completion(), shell))
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return True
        headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        translator = StreamTranslator(shell)
        opening = translator.start()
        async with aclosing(exchange._frames()) as frames:
            async for payload in frames:
                events = translator.close() if payload == b"[DONE]" else translator.feed(orjson.loads(payload))
                body, opening = sse(opening + events), []
                await send({"type": "http.response.body", "body": body, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return True


@dataclass
class Exchange:
    """One decided answer and how to deliver it (timing, framing and faults)."""

    profile: SimProfile
    replies: list[Reply]
    prompt_tokens: int
    sse: bool
    usage: bool
    delay: float
    malformed: bool
    stall: FaultSpec | None
    drop: FaultSpec | None
    extra_frames: bool
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    #: The request in its own wire format, when that is not chat completions (Responses).
    native: Any = None

    def __post_init__(self) -> None:
        fingerprint = "fp_" + hashlib.sha256(self.profile.model.encode()).hexdigest()[:10]
        self._head: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.profile.model,
            "system_fingerprint": fingerprint,
        }

    async def run(self, send: Send) -> bool:
        """Send the answer; False if a fault cut the connection on purpose."""
        return await (self._send_sse(send) if self.sse else self._send_json(send))

    async def generate(self) -> None:
        """Take as long as generating the whole answer would."""
        steps = max(len(r.pieces) for r in self.replies)
        await asyncio.sleep(self.profile.ttft + self.delay + self.profile.token_interval * (steps - 1))

    async def _send_json(self, send: Send) -> bool:
        await self.generate()
        if self.malformed:
            body = b'{"id": "%s", "object": "chat.completion", "choices": [{"index": 0, "message": {' % self.id.encode()
        else:
            body = orjson.dumps(self._completion())
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers + self._request_id()})
        await send({"type": "http.response.body", "body": body, "more_body": False})
        return True

    async def _send_sse(self, send: Send) -> bool:
        eol = b"\r\n" if self.extra_frames else b"\n"
        headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers + self._request_id()})

        async def write(frame: bytes) -> None:
            await send({"type": "http.response.body", "body": frame + eol + eol, "more_body": True})

        if self.extra_frames:
            await write(b": keep-alive")
        async with aclosing(self._frames()) as frames:
            sent = 0
            async for payload in frames:
                if self.drop is not None and sent == self.drop.drop_after_chunks:
                    return False
                if self.stall is not None and sent == self.stall.stall_after_chunks:
                    await asyncio.sleep(self.stall.stall_seconds)
                if self.malformed and sent == 0:
                    await write(
                        b'data: {"id": "%s", "object": "chat.completion.chunk", "choices": [{' % self.id.encode()
                    )
                await write(b"data: " + payload)
                sent += 1
                if self.extra_frames and sent == 1:
                    await write(b"event: ping")
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return True

    async def _frames(self) -> AsyncGenerator[bytes, None]:
        """The SSE payloads, paced like a model: role chunks after TTFT, then one piece per interval."""
        await asyncio.sleep(self.profile.ttft + self.delay)
        for index, reply in enumerate(self.replies):
            if reply.tool_call is None:
                first: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None}
            else:
                call = {
                    "index": 0,
                    "id": reply.tool_call.id,
                    "type": "function",
                    "function": {"name": reply.tool_call.name, "arguments": ""},
                }
                first = {"role": "assistant", "content": None, "tool_calls": [call], "refusal": None}
            yield self._chunk(index, first)
        for step in range(max(len(r.pieces) for r in self.replies)):
            if step and self.profile.token_interval:  # no interval: the whole answer in one go, like a fast server
                await asyncio.sleep(self.profile.token_interval)
            for index, reply in enumerate(self.replies):
                if step >= len(reply.pieces):
                    continue
                piece = reply.pieces[step]
                delta = (
                    {"content": piece}
                    if reply.tool_call is None
                    else {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
                )
                yield self._chunk(index, delta)
                if step == len(reply.pieces) - 1:
                    yield self._chunk(index, {}, reply.finish_reason)
        if self.usage:
            yield orjson.dumps({**self._head, "choices": [], "usage": self._usage()})
        yield b"[DONE]"

    def _chunk(self, index: int, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        chunk = {**self._head, "choices": [choice]}
        return orjson.dumps({**chunk, "usage": None} if self.usage else chunk)

    def _completion(self) -> dict[str, Any]:
        choices = []
        for index, reply in enumerate(self.replies):
            text = "".join(reply.pieces)
            message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None, "annotations": []}
            if reply.tool_call is not None:
                function = {"name": reply.tool_call.name, "arguments": text}
                message["content"] = None
                message["tool_calls"] = [{"id": reply.tool_call.id, "type": "function", "function": function}]
            choices.append({"index": index, "message": message, "logprobs": None, "finish_reason": reply.finish_reason})
        completion = {**self._head, "object": "chat.completion", "choices": choices}
        return {**completion, "usage": self._usage()} if self.usage else completion

    def _usage(self) -> dict[str, Any]:
        completion_tokens = sum(len(r.pieces) for r in self.replies)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": self.prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def _request_id(self) -> list[tuple[bytes, bytes]]:
        return [(b"x-request-id", f"req_{self.id[9:]}".encode())]


def create_simulator_app(profile: SimProfile) -> Starlette:
    """A fresh simulated upstream; state (faults, counters) belongs to the returned app."""
    from router.simulator_anthropic import AnthropicMessages, count_tokens

    sim = Simulator(profile)
    return Starlette(
        routes=[
            Route("/v1/chat/completions", ChatCompletions(sim), methods=["POST"]),
            Route("/v1/embeddings", sim.embeddings, methods=["POST"]),
            Route("/v1/responses", _Responses(sim), methods=["POST"]),
            Route("/v1/messages", AnthropicMessages(sim), methods=["POST"]),
            Route("/v1/messages/count_tokens", partial(count_tokens, sim), methods=["POST"]),
            Route("/v1/models", sim.models, methods=["GET"]),
            Route("/metrics", sim.metrics, methods=["GET"]),
            Route("/_sim/faults", sim.arm_faults, methods=["POST"]),
            Route("/_sim/faults", sim.disarm_faults, methods=["DELETE"]),
            Route("/_sim/stats", sim.stats, methods=["GET"]),
            Route("/_sim/state", sim.set_state, methods=["POST"]),
        ],
        exception_handlers={HTTPException: _http_error},
    )


async def _until_disconnect(work: Coroutine[Any, Any, bool], receive: Receive) -> bool | None:
    """Run ``work`` (which writes the response) while watching the client.

    Returns its result, or None if the client disconnected first and ``work`` was cancelled:
    that is how a stall or a slow generation notices that the caller gave up.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
        await asyncio.wait((task, watcher))
    return None if task.cancelled() else task.result()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


_FAULT_DEFAULTS: dict[int, tuple[str, str, str | None]] = {
    400: ("Invalid request (simulated fault).", "invalid_request_error", None),
    401: ("Incorrect API key provided (simulated fault).", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to use this model (simulated fault).", "invalid_request_error", None),
    404: ("The model does not exist (simulated fault).", "invalid_request_error", "model_not_found"),
    429: ("Rate limit reached for requests (simulated fault).", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request. Sorry about that!", "server_error", None),
}
_OVERLOADED = ("The engine is currently overloaded, please try again later.", "server_error", None)


def fault_error(spec: FaultSpec) -> RequestError:
    status = spec.status or 500
    message, type_, code = _FAULT_DEFAULTS.get(status, _OVERLOADED if status >= 500 else _FAULT_DEFAULTS[400])
    headers = {} if spec.retry_after is None else {"retry-after": f"{spec.retry_after:g}"}
    return RequestError(
        status,
        spec.message or message,
        type=spec.type or type_,
        param=spec.param,
        code=spec.code or code,
        headers=headers,
    )


_EMBEDDING_DIMENSIONS = 256


def embedding_vector(text: str, dimensions: int) -> list[float]:
    """A unit vector determined by ``text``: equal texts embed equally, different ones almost orthogonally."""
    rng = Random(hashlib.sha256(text.encode()).digest())
    vector = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


def _embedding_inputs(body: Any) -> list[Any]:
    """The inputs of an embeddings body (strings or token-id lists), refused in OpenAI's words when malformed."""
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        raise RequestError(400, "you must provide a model parameter", param="model")
    given = body.get("input")
    if isinstance(given, str) or (isinstance(given, list) and given and all(isinstance(i, int) for i in given)):
        given = [given]
    valid = isinstance(given, list) and given and all(
        (isinstance(i, str) and i) or (isinstance(i, list) and i and all(isinstance(t, int) for t in i)) for i in given
    )
    if not valid:
        raise RequestError(400, "'input' must be a non-empty string, array of strings or array of token arrays.",
                            param="input")
    dimensions = body.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or not 1 <= dimensions <= 4096):
        raise RequestError(400, "'dimensions' must be an integer between 1 and 4096.", param="dimensions")
    return list(given)  # type: ignore[arg-type]


def _describe(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors(include_url=False))


def json_or_none(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def _json(data: Any) -> Response:
    return Response(orjson.dumps(data), media_type="application/json")


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown URL / wrong method, worded like OpenAI's ``Invalid URL (POST /v1/foo)``."""
    assert isinstance(exc, HTTPException)
    message = f"Invalid URL ({request.method} {request.url.path})" if exc.status_code == 404 else exc.detail
    return RequestError(exc.status_code, message, headers=dict(exc.headers or {})).response()
