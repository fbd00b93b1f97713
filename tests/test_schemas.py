from __future__ import annotations

import orjson
import pytest

from router.errors import InvalidRequestError
from router.schemas import parse_chat_request

MESSAGES = [{"role": "user", "content": "hi"}]


def body(**fields: object) -> bytes:
    return orjson.dumps({"model": "auto", "messages": MESSAGES, **fields})


def test_valid_request_keeps_every_field() -> None:
    extra = {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}], "seed": 3, "logprobs": True,
             "metadata": {"a": "b"}, "user": "u", "stop": ["x"], "n": 2, "temperature": 1, "unknown_future_field": [1]}
    assert parse_chat_request(body(**extra)) == {"model": "auto", "messages": MESSAGES, **extra}


def test_content_parts_and_tool_messages_are_accepted() -> None:
    messages = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": [{"type": "text", "text": "t"}, {"type": "image_url", "image_url": {"url": "data:x"}}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "1", "content": "result"},
    ]
    assert parse_chat_request(orjson.dumps({"model": "auto", "messages": messages}))["messages"] == messages


@pytest.mark.parametrize(
    ("raw", "param", "fragment"),
    [
        (b"{", None, "could not parse the JSON body"),
        (b"[1]", None, "must be a JSON object"),
        (orjson.dumps({"messages": MESSAGES}), "model", "Missing required parameter: 'model'"),
        (orjson.dumps({"model": "auto"}), "messages", "Missing required parameter: 'messages'"),
        (body(messages=[]), "messages", "at least one message"),
        (body(messages=[{"role": "robot", "content": "x"}]), "messages[0].role", "Input should be"),
        (body(messages=[{"role": "user", "content": 5}]), "messages[0].content", "Invalid value"),
        (body(messages=[{"role": "user", "content": [{"text": "x"}]}]), "messages[0].content[0].type", "Missing"),
        (body(messages=[{"role": "user"}]), "messages[0].content", "Missing required parameter"),
        (body(messages=[{"role": "system", "content": None}, *MESSAGES]), "messages[0].content", "needs content"),
        (body(messages=[*MESSAGES, {"role": "tool", "content": "r"}]), "messages[1].tool_call_id", "Missing"),
        (body(max_tokens=0), "max_tokens", "greater than or equal to 1"),
        (body(max_tokens=True), "max_tokens", "Invalid value"),
        (body(temperature="hot"), "temperature", "valid number"),
        (body(temperature=3), "temperature", "less than or equal to 2"),
        (body(stream="yes"), "stream", "valid boolean"),
        (body(stream_options={"include_usage": True}), "stream_options", "only allowed when 'stream'"),
        (body(tools=[{"type": "function", "function": {}}]), "tools[0].function.name", "Missing"),
        (body(response_format={"type": "xml"}), "response_format.type", "Input should be"),
        (orjson.dumps({"model": 4, "messages": MESSAGES}), "model", "valid string"),
    ],
)
def test_invalid_requests_name_the_field(raw: bytes, param: str | None, fragment: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_chat_request(raw)
    error = info.value
    assert error.status_code == 400
    assert error.param == param
    assert fragment in error.message
    assert error.body()["error"]["type"] == "invalid_request_error"


def test_null_fields_openai_accepts_are_accepted() -> None:
    """What ``message.model_dump()`` of an SDK answer holds, replayed as history by agent code."""
    replayed = {"role": "assistant", "content": "4", "refusal": None, "annotations": None, "audio": None,
                "function_call": None, "tool_calls": None, "name": None}
    messages = [{"role": "user", "content": "2+2?"}, replayed, {"role": "user", "content": "and 3+3?"}]
    nulls = {"stream": None, "stream_options": None, "max_tokens": None, "max_completion_tokens": None, "n": None,
             "temperature": None, "top_p": None, "tools": None, "tool_choice": None, "response_format": None,
             "stop": None, "seed": None, "user": None, "logprobs": None, "top_logprobs": None}
    request = {"model": "auto", "messages": messages, **nulls}
    assert parse_chat_request(orjson.dumps(request)) == request
    stream = {"model": "auto", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": None}}
    assert parse_chat_request(orjson.dumps(stream)) == stream


def test_tool_message_with_null_tool_call_id_is_refused() -> None:
    messages = [{"role": "tool", "content": "r", "tool_call_id": None}]
    with pytest.raises(InvalidRequestError) as caught:
        parse_chat_request(orjson.dumps({"model": "auto", "messages": messages}))
    assert caught.value.param == "messages[0].tool_call_id"


@pytest.mark.parametrize("depth", [255, 600, 1023])
def test_json_nested_deeper_than_the_encoder_goes_is_400(depth: int) -> None:
    raw = b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "extra": ' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(InvalidRequestError) as caught:
        parse_chat_request(raw)
    assert caught.value.status_code == 400
    assert "254 levels" in caught.value.message


def test_json_nested_as_deep_as_the_encoder_goes_is_accepted() -> None:
    raw = b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "extra": ' + b"[" * 252 + b"]" * 252 + b"}"
    assert orjson.loads(orjson.dumps(parse_chat_request(raw))) == orjson.loads(raw)
