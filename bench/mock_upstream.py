"""A fast OpenAI-compatible mock upstream: an asyncio Protocol speaking just enough HTTP/1.1.

It must never be the bottleneck of a gateway benchmark, so it skips every framework: requests are
parsed with one regex (``Content-Length`` bodies only, keep-alive, in order), and each distinct
response is rendered once and cached as bytes. Served paths:

- ``POST .../chat/completions``: a completion of ``chunks`` tokens; with ``"stream": true`` an SSE
  stream in chunked transfer-encoding: ``chunks`` content chunks, a usage chunk when
  ``stream_options.include_usage`` is set, then ``data: [DONE]``.
- ``POST /v1/messages``: the same answer in Anthropic's Messages API (a ``message``, or its event
  stream: ``message_start``, a text block of ``chunks`` deltas, ``message_delta``, ``message_stop``).
- ``GET .../models``: the two benchmark model names.
- ``GET /health``: 200; ``GET /_mock/stats``: ``{"requests": <chat completions served>}``.

``--ttft`` delays the first token (the headers of a stream go out at once, as vLLM does) and
``--chunk-delay`` separates the following ones; a non-stream response waits for the whole generation.
Run ``python -m bench.mock_upstream --port 0``: it prints ``{"port": N}`` once it is listening.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from typing import cast

import orjson

from bench import eventloop

MODELS = ("mock-mid", "mock-flagship")
_CREATED = 1_700_000_000
_PROMPT_TOKENS = 256
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[^\r]*chunked", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection:[ \t]*close", re.IGNORECASE)


@dataclass(frozen=True)
class MockConfig:
    chunks: int = 20
    ttft: float = 0.0
    chunk_delay: float = 0.0

    @property
    def delayed(self) -> bool:
        return self.ttft > 0 or self.chunk_delay > 0


@dataclass(frozen=True)
class Rendered:
    """One response as bytes: ``head`` then ``frames`` (the SSE events of a stream, or the JSON body)."""

    head: bytes
    frames: tuple[bytes, ...]
    whole: bytes


class MockUpstream(asyncio.Protocol):
    """One client connection; shared state (the config and a request counter) lives in ``stats``."""

    def __init__(self, config: MockConfig, stats: dict[str, int]) -> None:
        self._config = config
        self._stats = stats
        self._buf = bytearray()
        self._busy = False
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buf += data
        self._drain()

    def _drain(self) -> None:
        """Answer every complete request in the buffer, in order; stop while a delayed one is in flight."""
        buf = self._buf
        while not self._busy and self._transport is not None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end])
            if _CHUNKED.search(head):
                self._reply(_error(411, "chunked request bodies are not supported"), keep_alive=False)
                return
            match = _CONTENT_LENGTH.search(head)
            total = end + 4 + (int(match.group(1)) if match else 0)
            if len(buf) < total:
                return
            body = bytes(buf[end + 4 : total])
            del buf[:total]
            self._handle(head, body)

    def _handle(self, head: bytes, body: bytes) -> None:
        line = head[: head.find(b"\r\n")] if b"\r\n" in head else head
        method, _, rest = line.partition(b" ")
        target, _, version = rest.partition(b" ")
        keep_alive = version == b"HTTP/1.1" and _CLOSE.search(head) is None
        path = target.partition(b"?")[0]
        if method == b"POST" and path.endswith(b"/chat/completions"):
            self._chat(body, keep_alive)
        elif method == b"POST" and path == b"/v1/messages":
            self._chat(body, keep_alive, anthropic=True)
        elif method == b"GET" and path.endswith(b"/models"):
            self._reply(_models(), keep_alive)
        elif method == b"GET" and path == b"/health":
            self._reply(_json(200, b"{}"), keep_alive)
        elif method == b"GET" and path == b"/_mock/stats":
            self._reply(_json(200, orjson.dumps(self._stats)), keep_alive)
        else:
            self._reply(_error(404, f"no route {method.decode()} {path.decode(errors='replace')}"), keep_alive)

    def _chat(self, body: bytes, keep_alive: bool, anthropic: bool = False) -> None:
        try:
            req = orjson.loads(body)
            model = str(req.get("model") or "mock")
            stream = bool(req.get("stream"))
            usage = stream and bool((req.get("stream_options") or {}).get("include_usage"))
        except (orjson.JSONDecodeError, AttributeError):
            self._reply(_error(400, "body must be a JSON object"), keep_alive)
            return
        self._stats["requests"] += 1
        rendered = (render_messages if anthropic else render)(model, stream, usage, self._config.chunks)
        if not self._config.delayed:
            self._reply(rendered.whole, keep_alive)
            return
        self._busy = True
        asyncio.get_running_loop().create_task(self._slow(rendered, stream, keep_alive))

    async def _slow(self, rendered: Rendered, stream: bool, keep_alive: bool) -> None:
        config = self._config
        if not stream:
            await asyncio.sleep(config.ttft + config.chunk_delay * max(config.chunks - 1, 0))
            self._reply(rendered.whole, keep_alive)
        else:
            self._write(rendered.head)
            await asyncio.sleep(config.ttft)
            for i, frame in enumerate(rendered.frames):
                if 0 < i < config.chunks and config.chunk_delay > 0:
                    await asyncio.sleep(config.chunk_delay)
                if not self._write(frame):
                    return
            if not keep_alive and self._transport is not None:
                self._transport.close()
        self._busy = False
        self._drain()

    def _write(self, data: bytes) -> bool:
        if self._transport is None or self._transport.is_closing():
            return False
        self._transport.write(data)
        return True

    def _reply(self, response: bytes, keep_alive: bool) -> None:
        if self._write(response) and not keep_alive:
            assert self._transport is not None
            self._transport.close()


@lru_cache(maxsize=64)
def render(model: str, stream: bool, usage: bool, chunks: int) -> Rendered:
    """The response for one (model, stream, usage) shape; cached, so serving it costs one write."""
    tokens = [f"tok{i} " for i in range(chunks)]
    usage_body = {"prompt_tokens": _PROMPT_TOKENS, "completion_tokens": chunks, "total_tokens": _PROMPT_TOKENS + chunks}
    if not stream:
        completion = {
            "id": "chatcmpl-mock",
            "object": "chat.completion",
            "created": _CREATED,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(tokens)},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": usage_body,
        }
        whole = _json(200, orjson.dumps(completion))
        split = whole.index(b"\r\n\r\n") + 4
        return Rendered(head=whole[:split], frames=(whole[split:],), whole=whole)
    events: list[dict[str, object]] = []
    for i, token in enumerate(tokens):
        delta: dict[str, str] = {"role": "assistant", "content": token} if i == 0 else {"content": token}
        finish = "stop" if i == chunks - 1 else None
        events.append(_chunk(model, [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]))
    if usage:
        events.append({**_chunk(model, []), "usage": usage_body})
    payloads = [b"data: " + orjson.dumps(event) + b"\n\n" for event in events] + [b"data: [DONE]\n\n"]
    return _event_stream(payloads)


def _event_stream(payloads: list[bytes]) -> Rendered:
    """An SSE response in chunked transfer-encoding, one chunk per payload."""
    frames = [b"%x\r\n%s\r\n" % (len(p), p) for p in payloads]
    frames[-1] += b"0\r\n\r\n"
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
        b"transfer-encoding: chunked\r\n\r\n"
    )
    return Rendered(head=head, frames=tuple(frames), whole=head + b"".join(frames))


@lru_cache(maxsize=64)
def render_messages(model: str, stream: bool, usage: bool, chunks: int) -> Rendered:
    """``render``'s answer in Anthropic's Messages API (which always reports usage)."""
    tokens = [f"tok{i} " for i in range(chunks)]
    message = {"id": "msg_mock", "type": "message", "role": "assistant", "model": model, "content": [],
               "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": _PROMPT_TOKENS, "output_tokens": 1}}
    if not stream:
        done = {**message, "content": [{"type": "text", "text": "".join(tokens)}], "stop_reason": "end_turn",
                "usage": {"input_tokens": _PROMPT_TOKENS, "output_tokens": chunks}}
        whole = _json(200, orjson.dumps(done))
        split = whole.index(b"\r\n\r\n") + 4
        return Rendered(head=whole[:split], frames=(whole[split:],), whole=whole)
    events: list[dict[str, object]] = [
        {"type": "message_start", "message": message},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ]
    events += [{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}} for t in tokens]
    events += [
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": chunks}},
        {"type": "message_stop"},
    ]
    payloads = [b"event: %s\ndata: %s\n\n" % (str(e["type"]).encode(), orjson.dumps(e)) for e in events]
    # As many frames as ``render``'s stream, so a delayed mock paces both alike: the opening events go together.
    return _event_stream([b"".join(payloads[:3]), *payloads[3:-3], b"".join(payloads[-3:])])


def _chunk(model: str, choices: list[dict[str, object]]) -> dict[str, object]:
    return {
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": _CREATED,
        "model": model,
        "choices": choices,
    }


def _json(status: int, body: bytes) -> bytes:
    reason = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 411: b"Length Required"}[status]
    return b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
        status,
        reason,
        len(body),
        body,
    )


def _error(status: int, message: str) -> bytes:
    return _json(
        status,
        orjson.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}),
    )


@lru_cache(maxsize=1)
def _models() -> bytes:
    data = [{"id": m, "object": "model", "created": _CREATED, "owned_by": "bench"} for m in MODELS]
    return _json(200, orjson.dumps({"object": "list", "data": data}))


async def serve(host: str, port: int, config: MockConfig) -> asyncio.Server:
    """Start listening; the caller owns the returned server."""
    stats = {"requests": 0}
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: MockUpstream(config, stats), host, port, backlog=1024)


async def _main(args: argparse.Namespace) -> None:
    config = MockConfig(chunks=args.chunks, ttft=args.ttft, chunk_delay=args.chunk_delay)
    server = await serve(args.host, args.port, config)
    port = server.sockets[0].getsockname()[1]
    sys.stdout.write(orjson.dumps({"port": port}).decode() + "\n")
    sys.stdout.flush()
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.mock_upstream", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed as JSON)")
    parser.add_argument("--chunks", type=int, default=20, help="content tokens per completion")
    parser.add_argument("--ttft", type=float, default=0.0, help="seconds before the first token")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between tokens")
    args = parser.parse_args(argv)
    eventloop.run(_main(args))


if __name__ == "__main__":
    main()
