"""``kind: anthropic`` at the wire: Anthropic's documented examples (tests/fixtures/anthropic) against
the translation and against AnthropicProvider talking to a real aiohttp server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from anthropic.types import Message, RawMessageStreamEvent
from anthropic.types.message_create_params import MessageCreateParamsNonStreaming
from anthropic.types.shared import ErrorResponse
from pydantic import TypeAdapter

from router.anthropic_wire.upstream import ChunkTranslator, to_chat_completion, to_messages_request
from router.config import BackendConfig, PriceConfig
from router.cost import usage_cost, usage_from
from router.errors import UpstreamClientError, UpstreamError, UpstreamRateLimitError
from router.pipeline import _failure_kind
from router.upstream import create_provider
from router.upstream.base import Provider
from router.upstream.sse import SSEDecoder

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "anthropic"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"}},
            "required": ["location"],
        },
    },
}
QUESTION = {"role": "user", "content": "What is the weather like in San Francisco?"}
TOOL_CALL = {
    "id": "toolu_01A09q90qw90lq917835lq9",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"location": "San Francisco, CA"}'},
}


def fixture(name: str) -> Any:
    return orjson.loads((FIXTURES / name).read_bytes())


def events(name: str) -> list[dict[str, Any]]:
    return [orjson.loads(payload) for payload in SSEDecoder().feed((FIXTURES / name).read_bytes())]


# -- the fixtures are what the SDK's types say -----------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "basic_response.json",
        "tool_use_response.json",
        "cache_usage_response.json",
        "thinking_response.json",
        "citations_response.json",
    ],
)
def test_response_fixtures_are_sdk_messages(name: str) -> None:
    Message.model_validate(fixture(name))


@pytest.mark.parametrize(
    "name", ["basic_request.json", "tool_use_request.json", "tool_result_request.json", "image_request.json"]
)
def test_request_fixtures_are_sdk_create_params(name: str) -> None:
    TypeAdapter(MessageCreateParamsNonStreaming).validate_python(fixture(name))


@pytest.mark.parametrize("name", ["stream_text.sse", "stream_tool_use.sse", "stream_error.sse", "stream_thinking.sse"])
def test_stream_fixtures_are_sdk_events(name: str) -> None:
    adapter = TypeAdapter(RawMessageStreamEvent)
    for event in events(name):
        if event["type"] == "error":
            ErrorResponse.model_validate(event)
        elif event["type"] != "ping":
            adapter.validate_python(event)


@pytest.mark.parametrize(
    "name", ["error_529.json", "error_500.json", "error_429.json", "error_401.json", "error_400_prompt_too_long.json"]
)
def test_error_fixtures_are_sdk_error_responses(name: str) -> None:
    ErrorResponse.model_validate(fixture(name))


# -- requests: chat completions -> the documented Messages requests --------------------------------


@pytest.mark.parametrize(
    ("chat", "expected"),
    [
        (
            {
                "model": "claude-sonnet-4-5",
                "max_tokens": 1024,
                "messages": [{"role": "user", "content": "Hello, world"}],
            },
            "basic_request.json",
        ),
        (
            {
                "model": "claude-opus-4-1",
                "max_completion_tokens": 1024,
                "tools": [WEATHER_TOOL],
                "messages": [QUESTION],
            },
            "tool_use_request.json",
        ),
        (
            {
                "model": "claude-opus-4-1",
                "max_tokens": 1024,
                "tools": [WEATHER_TOOL],
                "messages": [
                    QUESTION,
                    {
                        "role": "assistant",
                        "content": "I'll check the current weather in San Francisco for you.",
                        "tool_calls": [TOOL_CALL],
                    },
                    {"role": "tool", "tool_call_id": "toolu_01A09q90qw90lq917835lq9", "content": "15 degrees"},
                ],
            },
            "tool_result_request.json",
        ),
        (
            {
                "model": "claude-sonnet-4-5",
                "max_tokens": 1024,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQSkZJRg=="}},
                            {
                                "type": "image_url",
                                "image_url": {
                                    "url": "https://upload.wikimedia.org/wikipedia/commons/a/a7/Camponotus_flavomarginatus_ant.jpg"
                                },
                            },
                            {"type": "text", "text": "Describe this image."},
                        ],
                    }
                ],
            },
            "image_request.json",
        ),
    ],
)
def test_chat_requests_become_the_documented_messages_requests(chat: dict[str, Any], expected: str) -> None:
    assert to_messages_request(chat, default_max_tokens=99) == fixture(expected)


def test_request_parameters_are_mapped() -> None:
    chat = {
        "model": "claude",
        "stream": True,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": "END",
        "user": "user-42",
        "seed": 7,
        "store": False,
        "metadata": {"app": "x"},
        "n": 1,
        "logprobs": False,
        "stream_options": {"include_usage": True},
        "tools": [WEATHER_TOOL],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
            {"role": "user", "content": "one"},
            {"role": "user", "content": "two"},
        ],
    }
    assert to_messages_request(chat, default_max_tokens=4096) == {
        "model": "claude",
        "max_tokens": 4096,
        "stream": True,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "user-42"},
        "system": "Be brief.\n\nUse metric units.",
        "tools": [fixture("tool_use_request.json")["tools"][0]],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "messages": [{"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]}],
    }


def test_json_schema_response_format_is_a_forced_tool() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    chat = {
        "model": "claude",
        "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "place", "schema": schema}},
    }
    out = to_messages_request(chat, default_max_tokens=10)
    assert out["tools"] == [
        {"name": "place", "description": "Answer with JSON that follows this schema.", "input_schema": schema}
    ]
    assert out["tool_choice"] == {"type": "tool", "name": "place"}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"temperature": 1.5}, "temperature"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"audio": {"voice": "alloy"}}, "audio"),
        ({"tools": [WEATHER_TOOL], "response_format": {"type": "json_object"}}, "response_format"),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
            "messages[0].content[0].type",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "not json"}}
                        ],
                    }
                ]
            },
            "messages[0].tool_calls[0].function.arguments",
        ),
    ],
)
def test_parameters_with_no_equivalent_are_refused_naming_the_field(extra: dict[str, Any], param: str) -> None:
    chat = {"model": "claude", "messages": [{"role": "user", "content": "x"}], **extra}
    with pytest.raises(UpstreamClientError) as caught:
        to_messages_request(chat, default_max_tokens=10)
    assert caught.value.param == param
    assert caught.value.status_code == 400


# -- answers: the documented responses and streams -> chat completions ------------------------------


def test_documented_message_becomes_a_chat_completion() -> None:
    completion = to_chat_completion(fixture("basic_response.json"), structured=False, created=1)
    assert completion["choices"] == [
        {
            "index": 0,
            "logprobs": None,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": "Hi! My name is Claude.", "refusal": None},
        }
    ]
    assert completion["usage"] == {
        "prompt_tokens": 2095,
        "completion_tokens": 503,
        "total_tokens": 2598,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    assert completion["model"] == "claude-sonnet-4-5-20250929"


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls")],
)
def test_stop_reasons_become_finish_reasons(stop_reason: str, finish_reason: str) -> None:
    message = {**fixture("citations_response.json"), "stop_reason": stop_reason}  # documented with stop_sequence
    choice = to_chat_completion(message, structured=False, created=1)["choices"][0]
    assert choice["finish_reason"] == finish_reason


def test_documented_tool_use_becomes_tool_calls() -> None:
    choice = to_chat_completion(fixture("tool_use_response.json"), structured=False, created=1)["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "I'll check the current weather in San Francisco for you."
    assert choice["message"]["tool_calls"] == [
        {
            "id": "toolu_01A09q90qw90lq917835lq9",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"location":"San Francisco, CA"}'},
        }
    ]


def test_structured_output_tool_becomes_content() -> None:
    choice = to_chat_completion(fixture("tool_use_response.json"), structured=True, created=1)["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"].endswith('{"location":"San Francisco, CA"}')
    assert "tool_calls" not in choice["message"]


def test_cache_tokens_are_reported_and_priced() -> None:
    usage = to_chat_completion(fixture("cache_usage_response.json"), structured=False, created=1)["usage"]
    assert usage["prompt_tokens"] == 21 + 188086
    assert usage["cache_creation_input_tokens"] == 188086
    parsed = usage_from(usage, input_estimate=0, output_chars=0)
    assert (parsed.cache_write_tokens, parsed.cache_read_tokens) == (188086, 0)
    price = PriceConfig(input=3.0, output=15.0, cache_read=0.3, cache_write=3.75)
    assert usage_cost(price, parsed) == pytest.approx((21 * 3.0 + 188086 * 3.75 + 393 * 15.0) / 1e6)
    read = usage_from(
        {"prompt_tokens": 1000, "completion_tokens": 0, "prompt_tokens_details": {"cached_tokens": 800}},
        input_estimate=0,
        output_chars=0,
    )
    assert usage_cost(price, read) == pytest.approx((200 * 3.0 + 800 * 0.3) / 1e6)


def translate(name: str, structured: bool = False) -> list[dict[str, Any]]:
    translator = ChunkTranslator(structured=structured, created=1)
    return [chunk for event in events(name) for chunk in translator.feed(event)]


def test_documented_text_stream_becomes_chunks() -> None:
    chunks = translate("stream_text.sse")
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas == [{"role": "assistant", "content": ""}, {"content": "Hello"}, {"content": "!"}, {}]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 25,
        "completion_tokens": 15,
        "total_tokens": 40,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    assert {c["id"] for c in chunks} == {"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY"}


def test_documented_tool_stream_becomes_tool_call_chunks() -> None:
    chunks = translate("stream_tool_use.sse")
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    calls = [call for c in chunks if c["choices"] for call in c["choices"][0]["delta"].get("tool_calls") or ()]
    assert text == "Okay, let's check the weather for San Francisco, CA:"
    assert calls[0] == {
        "index": 0,
        "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    arguments = "".join(call["function"]["arguments"] for call in calls)
    assert orjson.loads(arguments) == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"]["completion_tokens"] == 89


# -- AnthropicProvider on the wire --------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def anthropic_upstream() -> AsyncIterator[
    Callable[[Handler], Awaitable[tuple[list[web.Request], list[bytes], Provider]]]
]:
    servers: list[TestServer] = []
    providers: list[Provider] = []

    async def start(handler: Handler) -> tuple[list[web.Request], list[bytes], Provider]:
        seen: list[web.Request] = []
        bodies: list[bytes] = []

        async def handle(request: web.Request) -> web.StreamResponse:
            seen.append(request)
            bodies.append(await request.read())
            return await handler(request)

        app = web.Application()
        app.router.add_post("/v1/messages", handle)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        config = BackendConfig(
            tier="flagship",
            kind="anthropic",
            base_url=f"http://127.0.0.1:{server.port}",
            model="claude-sonnet-4-5",
            api_key="sk-ant-secret",
        )  # type: ignore[arg-type]
        provider = create_provider("claude", config)
        providers.append(provider)
        return seen, bodies, provider

    yield start
    for provider in providers:
        await provider.aclose()
    for server in servers:
        await server.close()


def answer(name: str, status: int = 200, **headers: str) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=(FIXTURES / name).read_bytes(), status=status, content_type="application/json", headers=headers
        )

    return handle


def stream(name: str, piece: int = 37, pause: float = 0.0) -> Handler:
    """The fixture's bytes in small writes, so events are split across reads (``pause``: apart in time too)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream; charset=utf-8"})
        await response.prepare(request)
        raw = (FIXTURES / name).read_bytes()
        for start in range(0, len(raw), piece):
            await response.write(raw[start : start + piece])
            await asyncio.sleep(pause)
        await response.write_eof()
        return response

    return handle


CHAT = {"model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": [{"role": "user", "content": "Hello, world"}]}


async def test_provider_sends_the_documented_request_with_its_own_key(anthropic_upstream: Any) -> None:
    seen, bodies, provider = await anthropic_upstream(answer("basic_response.json"))
    completion = await provider.complete(CHAT)
    assert completion.data["choices"][0]["message"]["content"] == "Hi! My name is Claude."
    assert orjson.loads(completion.raw) == completion.data
    headers = seen[0].headers
    assert (headers["x-api-key"], headers["anthropic-version"]) == ("sk-ant-secret", "2023-06-01")
    assert "authorization" not in {name.lower() for name in headers}
    assert orjson.loads(bodies[0]) == fixture("basic_request.json")


async def test_provider_streams_the_documented_tool_call(anthropic_upstream: Any) -> None:
    _, bodies, provider = await anthropic_upstream(stream("stream_tool_use.sse"))
    batches = [batch async for batch in provider.stream({**CHAT, "stream": True, "tools": [WEATHER_TOOL]})]
    assert [done for _, done in batches] == [False] * (len(batches) - 1) + [True]
    chunks = [{**chunk.data, "created": 1} for batch, _ in batches for chunk in batch]
    assert chunks == translate("stream_tool_use.sse")  # the same translation, event by event as they arrive
    assert chunks[-1]["usage"]["prompt_tokens"] == 472
    assert orjson.loads(bodies[0])["stream"] is True


async def test_error_event_after_a_200_raises_a_server_error(anthropic_upstream: Any) -> None:
    _, _, provider = await anthropic_upstream(stream("stream_error.sse", piece=64, pause=0.01))
    received: list[dict[str, Any]] = []
    with pytest.raises(UpstreamError) as caught:
        async for batch, _ in provider.stream({**CHAT, "stream": True}):
            received += [chunk.data for chunk in batch]
    assert "Hello" in [(c["choices"] or [{}])[0].get("delta", {}).get("content") for c in received]
    assert not isinstance(caught.value, UpstreamClientError)
    assert caught.value.code == "overloaded_error"
    assert caught.value.retryable
    assert "Overloaded" in caught.value.message
    assert _failure_kind(caught.value) == "server_error"


@pytest.mark.parametrize(
    ("name", "status", "kind", "code", "error_type"),
    [
        ("error_529.json", 529, "server_error", "overloaded_error", UpstreamError),
        ("error_500.json", 500, "server_error", "api_error", UpstreamError),
        ("error_429.json", 429, "rate_limit", "rate_limit_error", UpstreamRateLimitError),
        ("error_401.json", 401, "auth", "upstream_auth_failed", UpstreamError),
        ("error_400_prompt_too_long.json", 400, "context_length", "context_length_exceeded", UpstreamClientError),
    ],
)
async def test_documented_errors_are_mapped(
    anthropic_upstream: Any, name: str, status: int, kind: str, code: str, error_type: type[UpstreamError]
) -> None:
    _, _, provider = await anthropic_upstream(answer(name, status=status, **{"retry-after": "2"}))
    for call in (provider.complete(CHAT), anext(provider.stream({**CHAT, "stream": True}))):
        with pytest.raises(UpstreamError) as caught:
            await call
        assert type(caught.value) is error_type
        assert (_failure_kind(caught.value), caught.value.code) == (kind, code)
        assert "sk-ant-secret" not in caught.value.message
    if status == 429:
        assert caught.value.headers == {"retry-after": "2"}


# -- Messages API requests passed through (POST /v1/messages served by an Anthropic backend) ---------------


@pytest.mark.parametrize("name", ["thinking_response.json", "citations_response.json"])
async def test_a_messages_request_is_sent_and_answered_as_it_is(anthropic_upstream: Any, name: str) -> None:
    seen, bodies, provider = await anthropic_upstream(answer(name))
    request = {**fixture("basic_request.json"), "thinking": {"type": "enabled", "budget_tokens": 2048}, "top_k": 5}
    completion = await provider.create_message(request, "interleaved-thinking-2025-05-14")  # type: ignore[attr-defined]
    assert completion.raw == (FIXTURES / name).read_bytes() and completion.data == fixture(name)
    assert orjson.loads(bodies[0]) == request
    headers = seen[0].headers
    assert (headers["x-api-key"], headers["anthropic-version"]) == ("sk-ant-secret", "2023-06-01")
    assert headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"


async def test_a_messages_stream_is_relayed_event_by_event(anthropic_upstream: Any) -> None:
    _, bodies, provider = await anthropic_upstream(stream("stream_thinking.sse"))
    request = {**fixture("basic_request.json"), "stream": True}
    batches = [batch async for batch in provider.stream_message(request)]  # type: ignore[attr-defined]
    assert [done for _, done in batches] == [False] * (len(batches) - 1) + [True]
    assert [chunk.data for batch, _ in batches for chunk in batch] == events("stream_thinking.sse")
    relayed = [chunk.raw for batch, _ in batches for chunk in batch]
    assert relayed == SSEDecoder().feed((FIXTURES / "stream_thinking.sse").read_bytes())  # the bytes as they came
    assert orjson.loads(bodies[0]) == request


async def test_a_passed_through_stream_raises_its_error_event(anthropic_upstream: Any) -> None:
    _, _, provider = await anthropic_upstream(stream("stream_error.sse", piece=64, pause=0.01))
    received: list[str] = []
    with pytest.raises(UpstreamError) as caught:
        async for batch, _ in provider.stream_message({**CHAT, "stream": True}):  # type: ignore[attr-defined]
            received += [chunk.data["type"] for chunk in batch]
    assert "content_block_delta" in received and "error" not in received
    assert (caught.value.code, _failure_kind(caught.value)) == ("overloaded_error", "server_error")


async def test_the_backends_own_beta_header_is_kept(anthropic_upstream: Any) -> None:
    seen, _, provider = await anthropic_upstream(answer("basic_response.json"))
    config = provider.config.model_copy(update={"headers": {"anthropic-beta": "prompt-caching-2024-07-31"}})
    own = create_provider("claude", config)
    try:
        await own.create_message(fixture("basic_request.json"), "files-api-2025-04-14")  # type: ignore[attr-defined]
        await own.create_message(fixture("basic_request.json"))  # type: ignore[attr-defined]
    finally:
        await own.aclose()
    assert [request.headers["anthropic-beta"] for request in seen] == [
        "prompt-caching-2024-07-31,files-api-2025-04-14",
        "prompt-caching-2024-07-31",
    ]
