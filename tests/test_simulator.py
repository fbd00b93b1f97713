"""The simulated upstream, served by real uvicorn and driven by the official openai SDK (raw httpx for wire bytes)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import date
from random import Random
from typing import Annotated, Any, Literal
from uuid import UUID

import httpx
import openai
import pytest
from pydantic import BaseModel, Field, TypeAdapter

from router.simulator import SimProfile, create_simulator_app
from router.simulator_text import sample_json, tokenize
from tests.servers import serve

FAST = SimProfile(name="mid", model="sim-mid", ttft=0, token_interval=0, max_tokens_default=24)
ASK: Any = [{"role": "user", "content": "What is the capital of France?"}]
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["location", "unit", "days"],
        },
    },
}
SEARCH: Any = {
    "type": "function",
    "function": {
        "name": "search",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    },
}


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serve(create_simulator_app(FAST)) as url:
        yield url


@pytest.fixture(autouse=True)
def _no_faults(base_url: str) -> None:
    httpx.delete(f"{base_url}/_sim/faults").raise_for_status()


@pytest.fixture
def client(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key="client-secret", max_retries=0) as sdk:
        yield sdk


def arm(base_url: str, **fault: Any) -> None:
    httpx.post(f"{base_url}/_sim/faults", json=fault).raise_for_status()


def stats(base_url: str) -> dict[str, Any]:
    data: dict[str, Any] = httpx.get(f"{base_url}/_sim/stats").json()
    return data


def wait_for(predicate: Any, what: str) -> None:
    """Poll a server-side condition (the server notices a disconnect asynchronously)."""
    deadline = time.monotonic() + 10
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def test_non_stream_completion_is_a_full_chat_completion(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="sim-mid", messages=ASK)

    assert reply.id.startswith("chatcmpl-")
    assert reply.object == "chat.completion"
    assert reply.model == "sim-mid"
    assert reply.system_fingerprint and reply.created > 0
    [choice] = reply.choices
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content is not None
    assert "mid tier (sim-mid)" in choice.message.content and "capital of France" in choice.message.content
    assert choice.message.content.endswith(".")
    usage = reply.usage
    assert usage is not None
    assert usage.completion_tokens == FAST.max_tokens_default
    assert usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details is not None and usage.completion_tokens_details.reasoning_tokens == 0


def test_stream_with_include_usage_matches_the_non_stream_answer(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model="sim-mid", messages=ASK, seed=3)
    chunks = list(
        client.chat.completions.create(
            model="sim-mid", messages=ASK, seed=3, stream=True, stream_options={"include_usage": True}
        )
    )

    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == ""
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    *body, finish, usage_chunk = chunks
    pieces = [c.choices[0].delta.content or "" for c in body[1:]]
    assert "".join(pieces) == whole.choices[0].message.content
    assert finish.choices[0].finish_reason == "stop" and finish.choices[0].delta.content is None
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens == len(pieces) == FAST.max_tokens_default
    assert whole.usage is not None and usage_chunk.usage.prompt_tokens == whole.usage.prompt_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_without_include_usage_sends_no_usage(base_url: str) -> None:
    body = {"model": "sim-mid", "messages": ASK, "stream": True, "max_tokens": 3}
    raw = httpx.post(f"{base_url}/v1/chat/completions", json=body)

    assert raw.headers["content-type"].startswith("text/event-stream")
    frames = raw.text.split("\n\n")
    assert frames[-2:] == ["data: [DONE]", ""]
    chunks = [json.loads(f.removeprefix("data: ")) for f in frames[:-2]]
    assert [c["choices"][0].get("finish_reason") for c in chunks] == [None, None, None, None, "length"]
    assert all("usage" not in c for c in chunks)


def test_tool_call_is_parsed_by_the_sdk_with_json_arguments(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="sim-mid", messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER]
    )

    [choice] = reply.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    assert set(args) == {"location", "unit", "days"}
    assert isinstance(args["location"], str) and args["unit"] in ("celsius", "fahrenheit")
    assert isinstance(args["days"], int) and 1 <= args["days"] <= 7


def test_streamed_tool_call_deltas_rebuild_the_same_call(client: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": "Find docs about SSE"}]
    choice: Any = {"type": "function", "function": {"name": "search"}}
    whole = client.chat.completions.create(
        model="sim-mid", messages=messages, tools=[WEATHER, SEARCH], tool_choice=choice
    )
    stream = client.chat.completions.create(
        model="sim-mid", messages=messages, tools=[WEATHER, SEARCH], tool_choice=choice, stream=True
    )

    deltas: list[Any] = [c.choices[0] for c in stream]
    head = deltas[0].delta.tool_calls[0]
    assert (head.index, head.type, head.function.name, head.function.arguments) == (0, "function", "search", "")
    arguments = "".join(d.delta.tool_calls[0].function.arguments for d in deltas[1:-1])
    assert all(d.delta.tool_calls[0].index == 0 and d.delta.tool_calls[0].id is None for d in deltas[1:-1])
    assert deltas[-1].finish_reason == "tool_calls"
    expected: Any = (whole.choices[0].message.tool_calls or [])[0]
    assert (head.id, arguments) == (expected.id, expected.function.arguments)
    assert json.loads(arguments) == {"query": "docs about SSE"}


def test_after_a_tool_result_the_model_answers_in_text(client: openai.OpenAI) -> None:
    messages: Any = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"},
    ]
    reply = client.chat.completions.create(model="sim-mid", messages=messages, tools=[WEATHER])

    assert reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.tool_calls is None and reply.choices[0].message.content


class Step(BaseModel):
    title: str
    minutes: int


class Recipe(BaseModel):
    name: str
    servings: int
    vegetarian: bool
    difficulty: Literal["easy", "hard"]
    steps: list[Step]
    rating: float | None


def test_json_schema_answer_parses_into_the_callers_model(client: openai.OpenAI) -> None:
    reply = client.chat.completions.parse(model="sim-mid", messages=ASK, response_format=Recipe)

    recipe = reply.choices[0].message.parsed
    assert isinstance(recipe, Recipe)
    assert recipe.steps and all(isinstance(step, Step) for step in recipe.steps)


def test_json_object_answer_is_valid_json(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="sim-mid", messages=ASK, response_format={"type": "json_object"})

    document = json.loads(reply.choices[0].message.content or "")
    assert document["model"] == "sim-mid" and document["topic"] == "capital of France"


def test_n_choices_differ_and_usage_adds_them_up(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="sim-mid", messages=ASK, n=2)

    assert [c.index for c in reply.choices] == [0, 1]
    assert reply.choices[0].message.content != reply.choices[1].message.content
    assert reply.usage is not None and reply.usage.completion_tokens == 2 * FAST.max_tokens_default


def test_n_choices_stream_with_their_own_index(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="sim-mid", messages=ASK, n=2, stream=True, max_tokens=4))

    for index in (0, 1):
        mine = [c.choices[0] for c in chunks if c.choices[0].index == index]
        assert len(mine) == 1 + 4 + 1
        assert mine[0].delta.role == "assistant" and mine[-1].finish_reason == "length"


@pytest.mark.parametrize("limit", ["max_tokens", "max_completion_tokens"])
def test_token_limit_cuts_the_answer_with_finish_reason_length(client: openai.OpenAI, limit: str) -> None:
    reply = client.chat.completions.create(model="sim-mid", messages=ASK, extra_body={limit: 5})

    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 5
    assert reply.choices[0].message.content == "This is the mid tier"


def test_seed_makes_the_answer_repeatable(client: openai.OpenAI) -> None:
    def answer(seed: int) -> str:
        reply = client.chat.completions.create(model="sim-mid", messages=ASK, seed=seed, max_tokens=40)
        return reply.choices[0].message.content or ""

    assert answer(1) == answer(1)
    assert len({answer(seed) for seed in range(6)}) > 1


def test_prompt_over_the_context_window_is_a_context_length_error() -> None:
    small = SimProfile(ttft=0, token_interval=0, context_window=50)
    with (
        serve(create_simulator_app(small)) as url,
        openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as sdk,
    ):
        sdk.chat.completions.create(model="sim-mid", messages=ASK)
        with pytest.raises(openai.BadRequestError) as caught:
            sdk.chat.completions.create(model="sim-mid", messages=[{"role": "user", "content": "word " * 200}])

    assert caught.value.code == "context_length_exceeded"
    assert caught.value.param == "messages" and caught.value.type == "invalid_request_error"
    assert "maximum context length is 50 tokens" in caught.value.message


def test_context_length_fault(client: openai.OpenAI, base_url: str) -> None:
    arm(base_url, context_length_error=True, times=1)

    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="sim-mid", messages=ASK)
    assert caught.value.code == "context_length_exceeded"
    assert client.chat.completions.create(model="sim-mid", messages=ASK).choices


@pytest.mark.parametrize(
    ("fault", "error", "code", "message"),
    [
        ({"status": 503}, openai.InternalServerError, None, "overloaded"),
        ({"status": 500, "message": "boom", "code": "bug"}, openai.InternalServerError, "bug", "boom"),
        ({"status": 429, "retry_after": 2}, openai.RateLimitError, "rate_limit_exceeded", "Rate limit"),
    ],
)
def test_status_fault_raises_the_typed_sdk_error_for_times_requests(
    client: openai.OpenAI,
    base_url: str,
    fault: dict[str, Any],
    error: type[openai.APIStatusError],
    code: str | None,
    message: str,
) -> None:
    arm(base_url, **fault, times=2)

    for _ in range(2):
        with pytest.raises(error) as caught:
            client.chat.completions.create(model="sim-mid", messages=ASK)
        assert caught.value.status_code == fault["status"] and caught.value.code == code
        assert message in caught.value.message
    assert caught.value.response.headers.get("retry-after") == ("2" if "retry_after" in fault else None)
    assert client.chat.completions.create(model="sim-mid", messages=ASK).choices


def test_api_key_is_enforced_in_openai_shape() -> None:
    locked = SimProfile(ttft=0, token_interval=0, api_key="sk-upstream")
    with serve(create_simulator_app(locked)) as url:
        with openai.OpenAI(base_url=f"{url}/v1", api_key="sk-wrong", max_retries=0) as wrong:
            with pytest.raises(openai.AuthenticationError) as caught:
                wrong.chat.completions.create(model="sim-mid", messages=ASK)
            with pytest.raises(openai.AuthenticationError):
                wrong.models.list()
        with openai.OpenAI(base_url=f"{url}/v1", api_key="sk-upstream", max_retries=0) as right:
            assert right.chat.completions.create(model="sim-mid", messages=ASK).choices
            assert [m.id for m in right.models.list()] == ["sim-mid"]
        missing = httpx.post(f"{url}/v1/chat/completions", json={"model": "sim-mid", "messages": ASK})

    assert caught.value.code == "invalid_api_key"
    assert missing.status_code == 401 and "didn't provide an API key" in missing.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "sim-mid"}, "messages"),
        ({"messages": ASK}, "model"),
        ({"model": "sim-mid", "messages": []}, "messages"),
        ({"model": "sim-mid", "messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"model": "sim-mid", "messages": ASK, "max_tokens": 0}, "max_tokens"),
        ({"model": "sim-mid", "messages": ASK, "stream_options": {"include_usage": True}}, "stream_options"),
    ],
)
def test_invalid_requests_get_openai_400s_naming_the_param(base_url: str, body: dict[str, Any], param: str) -> None:
    response = httpx.post(f"{base_url}/v1/chat/completions", json=body)

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert param.split("[")[0] in error["message"]
    assert stats(base_url)["last_request"]["body"] == body


def test_body_that_is_not_json_is_a_400(base_url: str) -> None:
    response = httpx.post(
        f"{base_url}/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"}
    )

    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"


def test_drop_after_chunks_makes_the_sdk_raise(client: openai.OpenAI, base_url: str) -> None:
    arm(base_url, drop_after_chunks=3)
    before = stats(base_url)

    received = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in client.chat.completions.create(model="sim-mid", messages=ASK, stream=True):
            received.append(chunk)
    assert len(received) == 3
    after = stats(base_url)
    assert after["completed"] == before["completed"] and after["cancelled"] == before["cancelled"]


def test_client_closing_the_stream_counts_as_cancelled_and_frees_the_slot() -> None:
    with (
        serve(create_simulator_app(FAST)) as url,
        openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as sdk,
    ):
        arm(url, stall_after_chunks=2, stall_seconds=60)
        stream = sdk.chat.completions.create(model="sim-mid", messages=ASK, stream=True)
        assert [next(stream).choices[0].delta.content for _ in range(2)] == ["", "This"]
        assert 'vllm:num_requests_running{model_name="sim-mid"} 1.0' in httpx.get(f"{url}/metrics").text
        stream.close()

        wait_for(lambda: stats(url)["cancelled"] == 1, "the server to notice the disconnect")
        assert stats(url) | {"last_request": None} == {
            "requests": 1,
            "completed": 0,
            "cancelled": 1,
            "in_flight": 0,
            "last_request": None,
        }


def test_extra_frames_are_comments_pings_and_crlf(base_url: str) -> None:
    arm(base_url, extra_frames=True)
    body = {"model": "sim-mid", "messages": ASK, "stream": True, "max_tokens": 2}
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body) as response:
        raw = response.read()

    assert raw.startswith(b": keep-alive\r\n\r\ndata: {")
    first_frame_end = raw.index(b"\r\n\r\n", len(b": keep-alive\r\n\r\n")) + 4
    assert raw[first_frame_end:].startswith(b"event: ping\r\n\r\ndata: {")
    assert raw.endswith(b"\r\n\r\ndata: [DONE]\r\n\r\n")
    assert b"\n\n" not in raw and raw.count(b"\r\n\r\n") == raw.count(b"\r\n") / 2
    frames = [f for f in raw.split(b"\r\n\r\n") if f.startswith(b"data: {")]
    assert "".join(json.loads(f[6:])["choices"][0]["delta"].get("content") or "" for f in frames) == "This is"


def test_malformed_fault_breaks_json_in_both_modes(client: openai.OpenAI, base_url: str) -> None:
    arm(base_url, malformed=True, times=2)

    with pytest.raises(json.JSONDecodeError):
        client.chat.completions.create(model="sim-mid", messages=ASK)
    with pytest.raises(json.JSONDecodeError):
        list(client.chat.completions.create(model="sim-mid", messages=ASK, stream=True))


def test_plain_json_for_stream_and_sse_for_nonstream(base_url: str) -> None:
    arm(base_url, plain_json_for_stream=True, sse_for_nonstream=True, times=1)
    url = f"{base_url}/v1/chat/completions"

    streamed = httpx.post(url, json={"model": "sim-mid", "messages": ASK, "stream": True})
    assert streamed.headers["content-type"] == "application/json"
    assert streamed.json()["object"] == "chat.completion" and streamed.json()["usage"]["completion_tokens"] > 0
    plain = httpx.post(url, json={"model": "sim-mid", "messages": ASK})
    assert plain.headers["content-type"].startswith("text/event-stream")
    assert plain.text.startswith("data: {") and plain.text.endswith("data: [DONE]\n\n")
    assert httpx.post(url, json={"model": "sim-mid", "messages": ASK}).json()["object"] == "chat.completion"


def test_stream_faults_are_not_used_up_by_non_stream_requests(client: openai.OpenAI, base_url: str) -> None:
    arm(base_url, drop_after_chunks=1, times=1)

    assert client.chat.completions.create(model="sim-mid", messages=ASK).choices
    with pytest.raises(openai.APIConnectionError):
        list(client.chat.completions.create(model="sim-mid", messages=ASK, stream=True))
    assert len(list(client.chat.completions.create(model="sim-mid", messages=ASK, stream=True))) > 3


def test_delay_first_token_trips_a_client_timeout(base_url: str) -> None:
    arm(base_url, delay_first_token=5, times=1)
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0, timeout=0.3) as impatient:
        with pytest.raises(openai.APITimeoutError):
            impatient.chat.completions.create(model="sim-mid", messages=ASK)
        assert impatient.chat.completions.create(model="sim-mid", messages=ASK).choices


def test_omit_usage(client: openai.OpenAI, base_url: str) -> None:
    arm(base_url, omit_usage=True)

    assert client.chat.completions.create(model="sim-mid", messages=ASK).usage is None
    chunks = list(
        client.chat.completions.create(
            model="sim-mid", messages=ASK, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].choices and all(c.usage is None for c in chunks)


def test_stats_record_the_headers_the_upstream_received(client: openai.OpenAI, base_url: str) -> None:
    client.chat.completions.create(model="sim-mid", messages=ASK, extra_headers={"x-trace": "t1"})

    last = stats(base_url)["last_request"]
    assert last["headers"]["authorization"] == "Bearer client-secret"
    assert last["headers"]["x-trace"] == "t1"
    assert last["body"] == {"model": "sim-mid", "messages": ASK}


def test_vllm_gauges_follow_the_state_endpoint(base_url: str) -> None:
    httpx.post(f"{base_url}/_sim/state", json={"waiting": 12, "cache_usage": 0.95}).raise_for_status()
    try:
        text = httpx.get(f"{base_url}/metrics").text
    finally:
        httpx.post(f"{base_url}/_sim/state", json={"waiting": 0, "cache_usage": 0}).raise_for_status()

    assert '# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{model_name="sim-mid"} 12.0\n' in text
    assert 'vllm:gpu_cache_usage_perc{model_name="sim-mid"} 0.95\n' in text
    assert 'vllm:num_requests_running{model_name="sim-mid"} 0.0\n' in text


@pytest.mark.parametrize("body", [{"stauts": 503}, {"times": 2}, {"status": 200}, {"waiting": -1}])
def test_control_endpoints_reject_bad_input(base_url: str, body: dict[str, Any]) -> None:
    path = "state" if "waiting" in body else "faults"
    response = httpx.post(f"{base_url}/_sim/{path}", json=body)

    assert response.status_code == 400 and response.json()["error"]["message"]


def test_unknown_url_is_an_openai_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.post("/assistants", cast_to=object, body={})
    assert caught.value.message.endswith("Invalid URL (POST /v1/assistants)")


@pytest.mark.parametrize("text", ["", "Hello, world!", 'x = {"a": [1, 2]}\n', "  two  spaces  "])
def test_tokenize_round_trips(text: str) -> None:
    assert "".join(tokenize(text)) == text


class Contact(BaseModel):
    id: UUID
    born: date
    tags: Annotated[list[str], Field(min_length=3, max_length=4)]
    score: Annotated[float, Field(gt=0, lt=1)]
    rank: Annotated[int, Field(ge=10, le=12)]
    friend: Contact | None
    odd: str = Field(alias="{odd}")


@pytest.mark.parametrize("schema_of", [Recipe, Contact, dict[str, int], list[Step], tuple[int, str]])
def test_sampled_json_validates_against_pydantic_schemas(schema_of: Any) -> None:
    adapter: TypeAdapter[Any] = TypeAdapter(schema_of)
    for seed in range(5):
        adapter.validate_json(json.dumps(sample_json(adapter.json_schema(), topic="tests", rng=Random(seed))))
