"""OpenAICompatProvider against a real aiohttp server on loopback: wire handling and error mapping."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from router.config import BackendConfig
from router.errors import UpstreamClientError, UpstreamError, UpstreamRateLimitError, UpstreamTimeoutError
from router.upstream import create_provider
from router.upstream.base import Batch, Provider
from tests.servers import free_port

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def completion(text: str = "Hello") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "up-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }


def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    return orjson.dumps({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "up-model",
                         "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def sse(*parts: bytes) -> bytes:
    return b"".join(b"data: " + p + b"\n\n" for p in parts)


class Upstream:
    """A loopback server answering every request with ``handler``; records requests and connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.connections: set[int] = set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((dict(request.headers), await request.read()))
        self.connections.add(id(request.transport))
        return await self.handler(request)


@pytest.fixture
async def upstream() -> AsyncIterator[Callable[..., Awaitable[tuple[Upstream, Provider]]]]:
    servers: list[TestServer] = []
    providers: list[Provider] = []

    async def start(handler: Handler, url_host: str = "127.0.0.1", **backend: Any) -> tuple[Upstream, Provider]:
        up = Upstream(handler)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", up.handle)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        config = BackendConfig(tier="mid", base_url=f"http://{url_host}:{server.port}/v1", model="up-model", **backend)
        provider = create_provider("mid", config)
        providers.append(provider)
        return up, provider

    yield start
    for provider in providers:
        await provider.aclose()
    for server in servers:
        await server.close()


def json_handler(data: Any, status: int = 200, **headers: str) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return web.Response(body=orjson.dumps(data), status=status, content_type="application/json", headers=headers)
    return handle


def stream_handler(*parts: bytes, drop_after: int | None = None) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for i, part in enumerate(parts):
            if drop_after is not None and i == drop_after:
                assert request.transport is not None
                request.transport.close()  # the upstream dies mid-stream
                return response
            await response.write(part)
        await response.write_eof()
        return response
    return handle


async def collect(it: AsyncIterator[Batch]) -> list[dict[str, Any]]:
    batches = [batch async for batch in it]
    assert [done for _, done in batches] == [False] * (len(batches) - 1) + [True]  # [DONE] comes last, once
    return [c.data for chunks, _ in batches for c in chunks]


async def test_complete_passes_json_through_with_backend_key(upstream: Any) -> None:
    up, provider = await upstream(json_handler(completion()), api_key="sk-upstream")
    result = await provider.complete(BODY)
    assert result.data["choices"][0]["message"]["content"] == "Hello"
    assert orjson.loads(result.raw) == completion()
    headers, body = up.requests[0]
    assert headers["Authorization"] == "Bearer sk-upstream"
    assert orjson.loads(body) == BODY


async def test_cookies_an_upstream_sets_are_never_sent_back(upstream: Any) -> None:
    # By a host name: cookie jars ignore cookies from IP addresses.
    up, provider = await upstream(json_handler(completion(), **{"Set-Cookie": "__cf_bm=client-a; Path=/"}), url_host="localhost")
    await provider.complete(BODY)
    await provider.complete(BODY)
    assert [headers.get("Cookie") for headers, _ in up.requests] == [None, None]


async def test_backend_without_key_sends_no_authorization(upstream: Any) -> None:
    up, provider = await upstream(json_handler(completion()))
    await provider.complete(BODY)
    assert "Authorization" not in up.requests[0][0]


async def test_complete_converts_an_sse_answer_into_a_completion(upstream: Any) -> None:
    body = sse(chunk({"role": "assistant"}), chunk({"content": "Hel"}), chunk({"content": "lo"}), chunk({}, "stop"), b"[DONE]")

    async def handle(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, content_type="text/event-stream")

    _, provider = await upstream(handle)
    result = await provider.complete(BODY)
    assert result.data["object"] == "chat.completion"
    assert result.data["choices"][0]["message"]["content"] == "Hello"
    assert result.data["choices"][0]["finish_reason"] == "stop"


async def test_stream_reframes_comments_events_and_crlf_and_reuses_the_connection(upstream: Any) -> None:
    raw = (b": keep-alive\r\n\r\nevent: ping\r\n\r\ndata: " + chunk({"role": "assistant", "content": ""}) + b"\r\n\r\n"
           b"data: " + chunk({"content": "Hi"}) + b"\r\n\r\ndata: [DONE]\r\n\r\n")
    up, provider = await upstream(stream_handler(raw[:17], raw[17:40], raw[40:]))
    for _ in range(3):
        chunks = await collect(provider.stream({**BODY, "stream": True}))
        assert [c["choices"][0]["delta"] for c in chunks] == [{"role": "assistant", "content": ""}, {"content": "Hi"}]
    assert len(up.connections) == 1  # read to the end, so the keep-alive connection went back to the pool


async def test_stream_answered_with_plain_json_is_converted_to_chunks(upstream: Any) -> None:
    _, provider = await upstream(json_handler(completion("Whole answer")))
    chunks = await collect(provider.stream({**BODY, "stream": True}))
    assert chunks[0]["object"] == "chat.completion.chunk"
    assert chunks[0]["choices"][0]["delta"]["content"] == "Whole answer"
    assert chunks[1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 4


async def test_stream_dropped_mid_way_raises_after_the_first_chunks(upstream: Any) -> None:
    _, provider = await upstream(stream_handler(sse(chunk({"content": "a"})), sse(chunk({"content": "b"})), drop_after=1))
    got: list[dict[str, Any]] = []
    with pytest.raises(UpstreamError) as info:
        async for chunks, _ in provider.stream(BODY):
            got += [c.data for c in chunks]
    assert len(got) == 1
    assert info.value.code == "upstream_disconnected"


async def test_stream_without_done_is_an_error(upstream: Any) -> None:
    _, provider = await upstream(stream_handler(sse(chunk({"content": "a"}))))
    with pytest.raises(UpstreamError, match="without \\[DONE\\]"):
        await collect(provider.stream(BODY))


@pytest.mark.parametrize("payload", [b"data: {not json\n\n", b'data: {"error": {"message": "boom", "code": "x"}}\n\n'])
async def test_stream_malformed_or_error_frame_raises(upstream: Any, payload: bytes) -> None:
    _, provider = await upstream(stream_handler(payload))
    with pytest.raises(UpstreamError):
        await collect(provider.stream(BODY))


async def test_malformed_json_completion_is_an_upstream_error(upstream: Any) -> None:
    async def handle(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"{oops", content_type="application/json")

    _, provider = await upstream(handle)
    with pytest.raises(UpstreamError) as info:
        await provider.complete(BODY)
    assert info.value.status_code == 502 and info.value.code == "upstream_malformed"


@pytest.mark.parametrize(
    ("status", "code", "expected_cls", "expected_status", "retryable"),
    [
        (401, None, UpstreamError, 502, False),
        (403, None, UpstreamError, 502, False),
        (400, "context_length_exceeded", UpstreamClientError, 400, False),
        (422, None, UpstreamClientError, 422, False),
        (404, "model_not_found", UpstreamError, 502, False),
        (429, "rate_limit_exceeded", UpstreamRateLimitError, 429, True),
        (429, "insufficient_quota", UpstreamRateLimitError, 429, False),
        (500, None, UpstreamError, 502, True),
        (503, None, UpstreamError, 502, True),
        (504, None, UpstreamTimeoutError, 504, True),
    ],
)
async def test_error_status_mapping(upstream: Any, status: int, code: str | None, expected_cls: type,
                                    expected_status: int, retryable: bool) -> None:
    body = {"error": {"message": "Incorrect API key provided: sk-up***ream", "type": "x", "param": None, "code": code}}
    _, provider = await upstream(json_handler(body, status, **{"Retry-After": "7"}))
    for call in (lambda: provider.complete(BODY), lambda: collect(provider.stream({**BODY, "stream": True}))):
        with pytest.raises(expected_cls) as info:
            await call()
        error = info.value
        assert type(error) is expected_cls
        assert error.status_code == expected_status
        assert error.retryable is retryable
        assert error.upstream_status == status
        if status in (401, 403):
            assert "sk-up" not in error.message  # the upstream's text may echo the gateway's key
        if status == 429:
            assert error.response_headers()["retry-after"] == "7"


async def test_connection_refused_is_mapped() -> None:
    provider = create_provider("mid", BackendConfig(tier="mid", base_url=f"http://127.0.0.1:{free_port()}/v1", model="m"))
    try:
        with pytest.raises(UpstreamError) as refused:
            await provider.complete(BODY)
        assert refused.value.code == "upstream_unreachable" and refused.value.status_code == 502
        assert not await provider.healthy("/models", 1.0)
    finally:
        await provider.aclose()


async def test_health_check(upstream: Any) -> None:
    _, provider = await upstream(json_handler({"object": "list", "data": []}))
    assert await provider.healthy("/models", 1.0)
    _, failing = await upstream(json_handler({"error": "down"}, 503))
    assert not await failing.healthy("/models", 1.0)


def endless_handler(content_type: str, first: bytes, filler: bytes, sent: list[int]) -> Handler:
    """Sends ``first``, then ``filler`` until the gateway hangs up (chunked: no Content-Length)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": content_type})
        await response.prepare(request)
        await response.write(first)
        try:
            for _ in range(2000):  # at most 128 MB: far past every cap under test
                await response.write(filler)
                sent.append(len(filler))
        except (ConnectionError, RuntimeError):
            pass  # the gateway closed the connection: what these tests expect
        return response

    return handle


FILLER = b" " * 65536


async def test_an_endless_json_answer_is_cut_at_max_response_bytes_and_fails_over(upstream: Any) -> None:
    sent: list[int] = []
    _, provider = await upstream(endless_handler("application/json", b'{"choices": [', FILLER, sent),
                                 max_response_bytes=1024 * 1024)
    for call in (lambda: provider.complete(BODY), lambda: collect(provider.stream({**BODY, "stream": True}))):
        sent.clear()
        with pytest.raises(UpstreamError) as info:
            await call()
        assert info.value.code == "upstream_malformed" and info.value.retryable  # "malformed" fails over
        assert "max_response_bytes (1048576 bytes)" in info.value.message
        assert sum(sent) < 64 * 1024 * 1024  # the upstream was hung up on, not read to its end


async def test_a_declared_length_over_the_cap_is_refused_and_one_at_the_cap_is_read(upstream: Any) -> None:
    body = orjson.dumps(completion("x" * 1000))
    _, provider = await upstream(json_handler(completion("x" * 1000)), max_response_bytes=len(body))
    assert (await provider.complete(BODY)).raw == body
    _, small = await upstream(json_handler(completion("x" * 1000)), max_response_bytes=len(body) - 1)
    with pytest.raises(UpstreamError, match="max_response_bytes"):
        await small.complete(BODY)


async def test_a_stream_with_a_line_that_never_ends_is_an_error_after_the_first_chunks(upstream: Any) -> None:
    sent: list[int] = []
    first = sse(chunk({"role": "assistant", "content": "Hi"})) + b'data: {"choices": "'
    _, provider = await upstream(endless_handler("text/event-stream", first, FILLER, sent), max_event_bytes=1024 * 1024)
    got: list[dict[str, Any]] = []
    with pytest.raises(UpstreamError) as info:
        async for chunks, _ in provider.stream({**BODY, "stream": True}):
            got += [c.data for c in chunks]
    assert [c["choices"][0]["delta"]["content"] for c in got] == ["Hi"]
    assert info.value.code == "upstream_malformed" and "max_event_bytes (1048576 bytes)" in info.value.message
    assert sum(sent) < 64 * 1024 * 1024


async def test_a_stream_that_ends_inside_an_oversized_event_is_an_upstream_error(upstream: Any) -> None:
    _, provider = await upstream(stream_handler(sse(chunk({"content": "a"})) + b'data: {"x": "' + b"y" * 4096),
                                 max_event_bytes=1024)
    with pytest.raises(UpstreamError) as info:
        await collect(provider.stream({**BODY, "stream": True}))
    assert info.value.code == "upstream_malformed"


async def test_an_anthropic_backend_has_the_same_caps(upstream: Any) -> None:
    sent: list[int] = []
    _, provider = await upstream(endless_handler("application/json", b'{"content": [', FILLER, sent),
                                 kind="anthropic", max_response_bytes=1024 * 1024)
    with pytest.raises(UpstreamError, match=r"max_response_bytes \(1048576 bytes\)") as info:
        await provider.complete(BODY)
    assert info.value.code == "upstream_malformed"
    _, streaming = await upstream(endless_handler("text/event-stream", b'event: message_start\ndata: {"type": "', FILLER, sent),
                                  kind="anthropic", max_event_bytes=1024 * 1024)
    with pytest.raises(UpstreamError, match=r"max_event_bytes \(1048576 bytes\)") as info:
        await collect(streaming.stream({**BODY, "stream": True}))
    assert info.value.code == "upstream_malformed"
    assert sum(sent) < 64 * 1024 * 1024
