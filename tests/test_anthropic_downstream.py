"""The gateway as an Anthropic server (router.anthropic_wire.downstream), on Anthropic's documented examples:
requests in, messages and event streams out, and both directions composed give the original back."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from pydantic import TypeAdapter

from router.anthropic_wire.downstream import (
    EventTranslator,
    error_body,
    parse_messages_request,
    to_chat_request,
    to_message,
)
from router.anthropic_wire.upstream import to_chat_completion, to_messages_request
from router.config import BackendConfig
from router.endpoints.messages import MessagesTranslation
from router.errors import InvalidRequestError
from router.policy import Candidate
from router.upstream.sse import SSEDecoder
from tests.upstream.test_anthropic import FIXTURES, events, fixture, translate

REQUESTS = ["basic_request.json", "tool_use_request.json", "tool_result_request.json", "image_request.json"]


def test_tool_result_request_becomes_chat_messages() -> None:
    chat, anthropic_only = to_chat_request(parse_messages_request((FIXTURES / "tool_result_request.json").read_bytes()))
    assert anthropic_only == ()
    assert chat["messages"][1:] == [
        {
            "role": "assistant",
            "content": "I'll check the current weather in San Francisco for you.",
            "tool_calls": [
                {
                    "id": "toolu_01A09q90qw90lq917835lq9",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location":"San Francisco, CA"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_01A09q90qw90lq917835lq9", "content": "15 degrees"},
    ]
    assert chat["tools"][0]["function"]["parameters"]["required"] == ["location"]


@pytest.mark.parametrize("name", REQUESTS)
def test_documented_requests_survive_the_round_trip_through_chat(name: str) -> None:
    """In through /v1/messages, out to a kind: anthropic backend by translation: the same request."""
    request = fixture(name)
    assert to_messages_request(to_chat_request(request)[0], default_max_tokens=1) == request


@pytest.mark.parametrize("name", ["basic_response.json", "tool_use_response.json", "cache_usage_response.json"])
def test_documented_messages_survive_the_round_trip_through_chat(name: str) -> None:
    message = fixture(name)
    back = to_message(to_chat_completion(message, structured=False, created=1))
    Message.model_validate(back)
    assert (back["id"], back["content"], back["stop_reason"]) == (
        message["id"],
        message["content"],
        message["stop_reason"],
    )
    usage = {key: message["usage"].get(key, 0) for key in back["usage"]}
    assert back["usage"] == usage


@pytest.mark.parametrize("name", ["stream_text.sse", "stream_tool_use.sse"])
def test_documented_streams_survive_the_round_trip_through_chat(name: str) -> None:
    """Anthropic events -> chat chunks -> Anthropic events: same order of event types, same text and input."""
    original = [event for event in events(name) if event["type"] != "ping"]
    chunks = translate(name)
    translator = EventTranslator(chunks[0]["id"], chunks[0]["model"])
    produced = [*translator.start(), *(e for c in chunks for e in translator.feed(c)), *translator.finish()]
    adapter = TypeAdapter(RawMessageStreamEvent)
    for event in produced:
        if event["type"] != "ping":
            adapter.validate_python(event)
    back = [event for event in produced if event["type"] != "ping"]
    assert [e["type"] for e in back] == [e["type"] for e in original if not _empty_json_delta(e)]
    assert _text(back) == _text(original) and _json(back) == _json(original)
    assert back[-2]["delta"]["stop_reason"] == original[-2]["delta"]["stop_reason"]
    assert back[-2]["usage"]["output_tokens"] == original[-2]["usage"]["output_tokens"]
    assert back[-2]["usage"]["input_tokens"] == original[0]["message"]["usage"]["input_tokens"]


def _empty_json_delta(event: dict[str, Any]) -> bool:
    return event.get("delta", {}).get("partial_json") == ""


def _text(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")


def _json(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"].get("partial_json", "") for e in events if e["type"] == "content_block_delta")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b'{"model": "auto", "messages": [{"role": "user", "content": "x"}]}', "max_tokens"),
        (b'{"model": "auto", "max_tokens": 5, "messages": [], "extra_field": 1}', "extra_field"),
        (b'{"model": "auto", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}', "messages[0].role"),
        (
            b'{"model": "auto", "max_tokens": 5, "temperature": 1.5, "messages": [{"role": "user", "content": "x"}]}',
            "temperature",
        ),
    ],
)
def test_bad_requests_name_the_field(body: bytes, param: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_messages_request(body)
    assert caught.value.param == param


def test_what_chat_cannot_carry_is_left_out_and_named() -> None:
    """Only Anthropic backends may then serve the request (router.endpoints.messages narrows its plan)."""
    document = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}
    screenshot = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}}
    searched = {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "q"}}
    body = {
        "model": "auto",
        "max_tokens": 5,
        "tools": [
            {"type": "web_search_20250305", "name": "web_search"},
            {"name": "get_weather", "input_schema": {"type": "object"}},
        ],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Read this"}, document]},
            {"role": "assistant", "content": [searched, {"type": "text", "text": "Found it."}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [screenshot]}]},
        ],
    }
    chat, anthropic_only = to_chat_request(body)
    assert anthropic_only == (
        "messages.0.content.1",
        "messages.1.content.0",
        "messages.2.content.0.content.0",
        "tools.0",
    )
    assert chat["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Read this"}]},
        {"role": "assistant", "content": "Found it."},
        {"role": "tool", "tool_call_id": "t", "content": ""},
    ]
    assert [tool["function"]["name"] for tool in chat["tools"]] == ["get_weather"]


def test_thinking_is_left_out_of_the_chat_translation() -> None:
    """For OpenAI-compatible backends only: Anthropic backends are sent the request itself."""
    thinking = {"type": "thinking", "thinking": "hmm", "signature": "s"}
    body = {
        "model": "auto",
        "max_tokens": 5,
        "top_k": 3,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": [thinking, {"type": "redacted_thinking", "data": "d"}, {"type": "text", "text": "y"}]},
        ],
    }
    assert to_chat_request(body) == ({
        "model": "auto",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
    }, ())


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
    ],
)
def test_error_shape(status: int, kind: str) -> None:
    assert error_body(status, "m") == {"type": "error", "error": {"type": kind, "message": "m"}}


def test_a_passed_through_stream_is_relayed_as_it_came_and_its_usage_followed() -> None:
    """Anthropic's own events go back framed as Anthropic frames them; usage is the prompt's from message_start
    (cache parts included) and, until message_delta ends it, the output estimated from the text so far."""
    documented = events("stream_thinking.sse")
    translation = MessagesTranslation({"model": "auto"}, None)
    candidate = Candidate("claude", "flagship", BackendConfig(tier="flagship", kind="anthropic", model="c"))  # type: ignore[arg-type]
    assert translation.opening(candidate) == b""
    start = {**documented[0], "message": {**documented[0]["message"], "usage": {
        "input_tokens": 10, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 0, "output_tokens": 1}}}
    framed = translation.events([start, *documented[1:4]])
    assert SSEDecoder().feed(framed) == [orjson.dumps(event) for event in [start, *documented[1:4]]]
    assert framed.startswith(b"event: message_start\ndata: ")
    thought = len(documented[2]["delta"]["thinking"] + documented[3]["delta"]["thinking"])
    assert translation.usage == {
        "prompt_tokens": 110,
        "completion_tokens": -(-thought // 4),  # estimated: the stream may still break here
        "total_tokens": 110 + -(-thought // 4),
        "prompt_tokens_details": {"cached_tokens": 100},
    }
    translation.events(documented[4:])
    assert translation.usage is not None and translation.usage["completion_tokens"] == 96  # message_delta's
    assert translation.closing() == b""  # the backend's own message_stop has gone already
