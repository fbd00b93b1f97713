"""Responses <-> chat completions at the wire: fixed examples in, exact payloads out.

Every event and response the translator produces is also validated against the openai SDK's own
types and fed through the SDK's stream accumulator, so a shape the SDK would reject fails here.
"""

from __future__ import annotations

from typing import Any

import pytest
from openai import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
import orjson
from openai.types.responses import Response, ResponseItem, ResponseStreamEvent
from pydantic import TypeAdapter

from router.errors import InvalidRequestError
from router.upstream.responses_wire import (
    StreamTranslator,
    chat_request,
    chat_to_response,
    input_item_page,
    named_items,
    response_event_sse,
    response_shell,
    sse,
)

EVENT = TypeAdapter(ResponseStreamEvent)
ITEM = TypeAdapter(ResponseItem)
WEATHER = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}


def shell(**body: Any) -> dict[str, Any]:
    return response_shell("resp_abc", {"model": "auto", **body}, "sim-mid", created_at=1700000000)


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, usage: dict[str, int] | None = None) -> dict:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "sim-mid",
        "choices": choices,
        **({"usage": usage} if usage else {}),
    }


def sdk_checked(events: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> ResponseStreamState[Any]:
    """Validate each event against the SDK's types and accumulate them as the SDK's stream does."""
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=tools or [], text_format=omit)  # type: ignore[arg-type]
    for event in events:
        state.handle_event(EVENT.validate_python(event))
    return state


# -- request ---------------------------------------------------------------------------------------


def test_string_input_with_instructions_and_options() -> None:
    body = {
        "model": "auto",
        "instructions": "Be brief.",
        "input": "Hi",
        "stream": True,
        "max_output_tokens": 50,
        "temperature": 0.2,
        "top_p": 0.9,
        "reasoning": {"effort": "low"},
        "metadata": {"k": "v"},
        "text": {"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": True}},
        "tools": [WEATHER],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "parallel_tool_calls": False,
        "store": True,
        "include": [],
        "truncation": "disabled",
    }
    assert chat_request(body, []) == {
        "model": "auto",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "stream": True,
        "temperature": 0.2,
        "top_p": 0.9,
        "parallel_tool_calls": False,
        "metadata": {"k": "v"},
        "max_tokens": 50,
        "reasoning_effort": "low",
        "tools": [
            {
                "type": "function",
                "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
        },
    }


def test_items_history_and_tool_loop_become_chat_messages() -> None:
    history = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "Let me check.", "annotations": []}],
        },
        {
            "type": "function_call",
            "id": "fc_1",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city":"Paris"}',
        },
        {
            "type": "function_call",
            "id": "fc_2",
            "call_id": "call_2",
            "name": "get_weather",
            "arguments": '{"city":"Lyon"}',
        },
    ]
    body = {
        "model": "auto",
        "input": [
            {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
            {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "20C"}]},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "And this?"},
                    {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"},
                ],
            },
        ],
    }
    assert chat_request(body, history)["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Lyon"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_2", "content": "20C"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "And this?"},
                {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
            ],
        },
    ]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input[0].content[0]"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
        ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
        ({"input": "hi", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
        ({"input": "hi", "tool_choice": {"type": "file_search"}}, "tool_choice"),
        ({"input": []}, "input"),
    ],
)
def test_what_a_chat_backend_cannot_take_is_refused_naming_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        chat_request({"model": "auto", **body}, [])
    assert refused.value.param == param


# -- non-stream answer -------------------------------------------------------------------------------


def test_a_completion_with_text_becomes_a_response() -> None:
    completion = {
        "id": "chatcmpl-1",
        "model": "sim-mid-7b",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": 9,
            "completion_tokens": 3,
            "total_tokens": 12,
            "prompt_tokens_details": {"cached_tokens": 4},
        },
    }
    response = chat_to_response(completion, shell())
    assert response["output"] == [
        {
            "id": "msg_abc",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Hello!", "annotations": [], "logprobs": []}],
        }
    ]
    assert (response["status"], response["model"], response["incomplete_details"]) == ("completed", "sim-mid-7b", None)
    assert response["usage"] == {
        "input_tokens": 9,
        "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
        "output_tokens": 3,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 12,
    }
    assert Response.model_validate(response).output_text == "Hello!"


def test_a_completion_with_tool_calls_cut_by_length() -> None:
    call = {"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": '{"ci'}}
    completion = {
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": "length",
                "message": {"role": "assistant", "content": None, "tool_calls": [call]},
            }
        ],
    }
    response = chat_to_response(completion, shell(tools=[WEATHER]))
    assert response["output"] == [
        {
            "id": "fc_abc_0",
            "type": "function_call",
            "status": "incomplete",
            "call_id": "call_9",
            "name": "get_weather",
            "arguments": '{"ci',
        }
    ]
    assert response["status"] == "incomplete" and response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["usage"] is None
    Response.model_validate(response)


# -- streams ----------------------------------------------------------------------------------------

USAGE = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}


def test_a_text_stream_becomes_the_typed_event_sequence() -> None:
    translator = StreamTranslator(shell())
    events = translator.start()
    for c in (
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo"}),
        chunk({}, "stop"),
        chunk(usage=USAGE),
    ):
        events += translator.feed(c)
    events += translator.close()
    assert [(e["type"], e["sequence_number"]) for e in events] == [
        ("response.created", 0),
        ("response.in_progress", 1),
        ("response.output_item.added", 2),
        ("response.content_part.added", 3),
        ("response.output_text.delta", 4),
        ("response.output_text.delta", 5),
        ("response.output_text.done", 6),
        ("response.content_part.done", 7),
        ("response.output_item.done", 8),
        ("response.completed", 9),
    ]
    assert events[2] == {
        "type": "response.output_item.added",
        "sequence_number": 2,
        "output_index": 0,
        "item": {"id": "msg_abc_0", "type": "message", "status": "in_progress", "role": "assistant", "content": []},
    }
    assert events[5] == {
        "type": "response.output_text.delta",
        "sequence_number": 5,
        "item_id": "msg_abc_0",
        "output_index": 0,
        "content_index": 0,
        "delta": "lo",
        "logprobs": [],
    }
    assert events[6]["text"] == "Hello"
    final = events[-1]["response"]
    assert final["status"] == "completed" and final["usage"]["total_tokens"] == 7
    assert final["output"][0]["content"][0]["text"] == "Hello"
    state = sdk_checked(events)
    assert state._completed_response is not None and state._completed_response.output_text == "Hello"


def test_a_stream_that_ends_with_a_tool_call() -> None:
    translator = StreamTranslator(shell(tools=[WEATHER]))
    events = translator.start()
    head = {"index": 0, "id": "call_7", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    for c in (
        chunk({"role": "assistant", "content": "Checking."}),
        chunk({"tool_calls": [head]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]}),
        chunk({}, "tool_calls"),
        chunk(usage=USAGE),
    ):
        events += translator.feed(c)
    events += translator.close()
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[11] == {
        "type": "response.function_call_arguments.done",
        "sequence_number": 11,
        "item_id": "fc_abc_1",
        "output_index": 1,
        "name": "get_weather",
        "arguments": '{"city":"Oslo"}',
    }
    assert events[-1]["response"]["output"][1] == {
        "id": "fc_abc_1",
        "type": "function_call",
        "status": "completed",
        "call_id": "call_7",
        "name": "get_weather",
        "arguments": '{"city":"Oslo"}',
    }
    state = sdk_checked(events, tools=[WEATHER])
    assert state._completed_response is not None
    assert [item.type for item in state._completed_response.output] == ["message", "function_call"]


def test_a_stream_that_fails_mid_way_ends_with_response_failed() -> None:
    translator = StreamTranslator(shell())
    events = translator.start()
    events += translator.feed(chunk({"role": "assistant", "content": "Partial"}))
    events += translator.fail("upstream_disconnected", "Backend 'mid' closed the connection unexpectedly.")
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.failed",
    ]
    failed = events[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"] == {
        "code": "server_error",
        "message": "Backend 'mid' closed the connection unexpectedly. (upstream_disconnected)",
    }
    assert failed["output"][0]["status"] == "incomplete" and failed["output"][0]["content"][0]["text"] == "Partial"
    sdk_checked(events)


def test_an_empty_answer_is_one_empty_message() -> None:
    translator = StreamTranslator(shell())
    events = (
        translator.start() + translator.feed(chunk({"role": "assistant", "content": ""}, "stop")) + translator.close()
    )
    assert [e["type"] for e in events][-3:] == [
        "response.output_item.added",
        "response.output_item.done",
        "response.completed",
    ]
    sdk_checked(events)


def test_a_refusal_streams_as_its_own_content_part() -> None:
    translator = StreamTranslator(shell())
    events = translator.start()
    for c in (
        chunk({"role": "assistant", "content": "", "refusal": None}),
        chunk({"refusal": "I can't "}),
        chunk({"refusal": "help with that."}),
        chunk({}, "stop"),
        chunk(usage=USAGE),
    ):
        events += translator.feed(c)
    events += translator.close()
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.refusal.delta",
        "response.refusal.delta",
        "response.refusal.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[6]["refusal"] == "I can't help with that."
    assert events[-1]["response"]["output"][0]["content"] == [{"type": "refusal", "refusal": "I can't help with that."}]
    sdk_checked(events)


@pytest.mark.parametrize("tools", [False, True])
def test_feed_sse_frames_exactly_what_feed_gives(tools: bool) -> None:
    head = {"index": 0, "id": "call_7", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    chunks = [
        chunk({"role": "assistant", "content": "Hel"}),
        chunk({"content": 'lo "there"\n'}),
        chunk({"content": "!"}),
    ]
    if tools:
        chunks += [
            chunk({"tool_calls": [head]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
        ]
    chunks += [
        chunk({"content": "After."}),
        chunk({"refusal": "No."}),
        chunk({"content": "Text again."}, "stop"),
        chunk(usage=USAGE),
    ]
    framed, listed = StreamTranslator(shell()), StreamTranslator(shell())
    assert framed.start_sse() == sse(listed.start())
    # In batches, as they arrive: a batch may end inside a text part, and the next one continue it.
    assert framed.feed_sse(chunks[:2]) + framed.feed_sse(chunks[2:]) == sse([e for c in chunks for e in listed.feed(c)])
    *closing, last = framed.close()
    assert closing + [last] == listed.close()
    assert response_event_sse(last, orjson.dumps(last["response"])) == sse([last])


# -- input items -------------------------------------------------------------------------------------

CONVERSATION = [
    {"type": "message", "role": "user", "content": "Weather in Oslo?", "id": "msg_first_in0"},
    {"id": "fc_first_0", "type": "function_call", "status": "completed", "call_id": "call_1", "name": "w",
     "arguments": "{}"},
    {"type": "function_call_output", "call_id": "call_1", "output": "{}"},
    {"role": "developer", "content": [{"type": "input_text", "text": "Answer in French."}]},
]


def test_items_without_an_id_are_named_after_their_response_and_position() -> None:
    named = named_items(CONVERSATION, "abc", 5)
    assert [item["id"] for item in named] == ["msg_first_in0", "fc_first_0", "fco_abc_in7", "msg_abc_in8"]
    assert named[0] is CONVERSATION[0] and "id" not in CONVERSATION[2]  # the given items are not changed


@pytest.mark.parametrize(
    ("order", "after", "limit", "ids", "has_more"),
    [
        ("desc", None, 20, ["msg_abc_in3", "fco_abc_in2", "fc_first_0", "msg_first_in0"], False),
        ("asc", None, 2, ["msg_first_in0", "fc_first_0"], True),
        ("asc", "fc_first_0", 2, ["fco_abc_in2", "msg_abc_in3"], False),
        ("desc", "fco_abc_in2", 1, ["fc_first_0"], True),
        ("desc", "msg_first_in0", 5, [], False),
    ],
)
def test_input_item_pages(order: str, after: str | None, limit: int, ids: list[str], has_more: bool) -> None:
    page = input_item_page(CONVERSATION, "abc", order=order, after=after, limit=limit)
    assert [item["id"] for item in page["data"]] == ids
    assert page["object"] == "list" and page["has_more"] is has_more
    assert (page["first_id"], page["last_id"]) == ((ids[0], ids[-1]) if ids else (None, None))
    for item in page["data"]:
        ITEM.validate_python(item)  # the SDK's own item types


def test_listed_input_items_are_typed() -> None:
    page = input_item_page(CONVERSATION, "abc", order="asc", after=None, limit=20)
    first, call, output, developer = page["data"]
    assert first == {"id": "msg_first_in0", "type": "message", "role": "user", "status": "completed",
                     "content": [{"type": "input_text", "text": "Weather in Oslo?"}]}
    assert call == CONVERSATION[1]
    assert output == {**CONVERSATION[2], "id": "fco_abc_in2", "status": "completed"}
    assert developer["content"] == CONVERSATION[3]["content"]


def test_an_unknown_after_is_a_bad_request() -> None:
    with pytest.raises(InvalidRequestError) as error:
        input_item_page(CONVERSATION, "abc", order="desc", after="msg_nope", limit=20)
    assert error.value.param == "after"
