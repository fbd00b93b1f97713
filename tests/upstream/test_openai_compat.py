"""OpenAICompatProvider against httpx.MockTransport: wire handling and error mapping."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest

from router.config import BackendConfig
from router.errors import (
    UpstreamClientError,
    UpstreamError,
    UpstreamRateLimitError,
    UpstreamTimeoutError,
)
from router.upstream import create_provider
from router.upstream.base import Chunk

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def completion(text: str = "Hello") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "up-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }


def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    data = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "up-model",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return orjson.dumps(data)


class Body(httpx.AsyncByteStream):
    """A streamed response body that records whether the client closed it."""

    def __init__(self, parts: list[bytes], fail_after: int | None = None) -> None:
        self.parts = parts
        self.fail_after = fail_after
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i, part in enumerate(self.parts):
            if self.fail_after is not None and i == self.fail_after:
                raise httpx.RemoteProtocolError("peer closed connection")
            yield part

    async def aclose(self) -> None:
        self.closed = True


def provider(handler: Callable[[httpx.Request], httpx.Response], **overrides: Any):  # type: ignore[no-untyped-def]
    config = BackendConfig(tier="mid", base_url="http://up.test/v1", model="up-model", api_key="sk-upstream", **overrides)
    return create_provider("mid", config, httpx.MockTransport(handler))


async def collect(it: AsyncIterator[Chunk]) -> list[dict[str, Any]]:
    return [c.data async for c in it]


async def test_complete_passes_json_through_with_backend_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=completion())

    result = await provider(handler).complete(BODY)
    assert result.data["choices"][0]["message"]["content"] == "Hello"
    assert orjson.loads(result.raw) == completion()
    assert str(seen[0].url) == "http://up.test/v1/chat/completions"
    assert seen[0].headers["authorization"] == "Bearer sk-upstream"
    assert orjson.loads(seen[0].content) == BODY


async def test_complete_converts_sse_answer_into_a_completion() -> None:
    sse = b"".join(b"data: " + c + b"\n\n" for c in (chunk({"role": "assistant"}), chunk({"content": "Hel"}),
                                                      chunk({"content": "lo"}), chunk({}, "stop"))) + b"data: [DONE]\n\n"
    result = await provider(lambda r: httpx.Response(200, content=sse, headers={"content-type": "text/event-stream"})).complete(BODY)
    assert result.data["object"] == "chat.completion"
    assert result.data["choices"][0]["message"]["content"] == "Hello"
    assert result.data["choices"][0]["finish_reason"] == "stop"


async def test_stream_reframes_comments_events_and_crlf() -> None:
    raw = (b": keep-alive\r\n\r\nevent: ping\r\n\r\ndata: " + chunk({"role": "assistant", "content": ""}) + b"\r\n\r\n"
           b"data: " + chunk({"content": "Hi"}) + b"\r\n\r\ndata: [DONE]\r\n\r\n")
    body = Body([raw[:17], raw[17:40], raw[40:]])
    p = provider(lambda r: httpx.Response(200, stream=body, headers={"content-type": "text/event-stream"}))
    chunks = await collect(p.stream({**BODY, "stream": True}))
    assert [c["choices"][0]["delta"] for c in chunks] == [{"role": "assistant", "content": ""}, {"content": "Hi"}]
    assert body.closed


async def test_stream_answered_with_plain_json_is_converted_to_chunks() -> None:
    p = provider(lambda r: httpx.Response(200, json=completion("Whole answer")))
    chunks = await collect(p.stream({**BODY, "stream": True}))
    assert chunks[0]["object"] == "chat.completion.chunk"
    assert chunks[0]["choices"][0]["delta"]["content"] == "Whole answer"
    assert chunks[1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 4


async def test_stream_dropped_mid_way_raises_and_closes() -> None:
    body = Body([b"data: " + chunk({"content": "a"}) + b"\n\n", b"data: " + chunk({"content": "b"}) + b"\n\n"], fail_after=1)
    p = provider(lambda r: httpx.Response(200, stream=body, headers={"content-type": "text/event-stream"}))
    got: list[dict[str, Any]] = []
    with pytest.raises(UpstreamError) as info:
        async for c in p.stream(BODY):
            got.append(c.data)
    assert len(got) == 1
    assert info.value.code == "upstream_disconnected"
    assert body.closed


async def test_stream_without_done_is_an_error() -> None:
    body = Body([b"data: " + chunk({"content": "a"}) + b"\n\n"])
    p = provider(lambda r: httpx.Response(200, stream=body, headers={"content-type": "text/event-stream"}))
    with pytest.raises(UpstreamError, match="without \\[DONE\\]"):
        await collect(p.stream(BODY))


@pytest.mark.parametrize("payload", [b"data: {not json\n\n", b'data: {"error": {"message": "boom", "code": "x"}}\n\n'])
async def test_stream_malformed_or_error_frame_raises(payload: bytes) -> None:
    body = Body([payload])
    p = provider(lambda r: httpx.Response(200, stream=body, headers={"content-type": "text/event-stream"}))
    with pytest.raises(UpstreamError):
        await collect(p.stream(BODY))
    assert body.closed


async def test_malformed_json_completion_is_upstream_error() -> None:
    p = provider(lambda r: httpx.Response(200, content=b"{oops", headers={"content-type": "application/json"}))
    with pytest.raises(UpstreamError) as info:
        await p.complete(BODY)
    assert info.value.status_code == 502 and info.value.code == "upstream_malformed"


def error_response(status: int, message: str, code: str | None = None, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"message": message, "type": "x", "param": None, "code": code}}, headers=headers)


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
async def test_error_status_mapping(status: int, code: str | None, expected_cls: type, expected_status: int, retryable: bool) -> None:
    p = provider(lambda r: error_response(status, "Incorrect API key provided: sk-up***ream", code, **{"retry-after": "7"}))
    for call in (lambda: p.complete(BODY), lambda: collect(p.stream({**BODY, "stream": True}))):
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


async def test_connect_error_and_timeout_are_mapped() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow")

    with pytest.raises(UpstreamError) as refused:
        await provider(refuse).complete(BODY)
    assert refused.value.code == "upstream_unreachable" and refused.value.status_code == 502
    with pytest.raises(UpstreamTimeoutError):
        await provider(slow).complete(BODY)


async def test_backend_without_key_sends_no_authorization() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=completion())

    config = BackendConfig(tier="mid", base_url="http://up.test/v1/", model="m")
    await create_provider("mid", config, httpx.MockTransport(handler)).complete(BODY)
    assert "authorization" not in seen[0].headers
    assert str(seen[0].url) == "http://up.test/v1/chat/completions"
