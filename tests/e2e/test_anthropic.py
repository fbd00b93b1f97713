"""Anthropic both ways, end to end on loopback: the official ``anthropic`` SDK against ``/v1/messages``,
and the official ``openai`` SDK through a ``kind: anthropic`` backend (the simulator speaking
Anthropic's Messages API), with failover between an Anthropic and an OpenAI-compatible flagship."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from router.accesslog import ACCESS_LOGGER
from router.app import create_app
from router.config import load_config
from router.gateway import Gateway
from router.simulator import SimProfile, create_simulator_app
from tests.servers import serve

REPO = Path(__file__).resolve().parents[2]
CLIENT_KEY = "sk-client-acme"
ANTHROPIC_KEY = "sk-ant-upstream"
GPT_KEY = "sk-gpt-upstream"
TIGHT_KEY = "sk-client-tight"
ENV = {"TEST_CLIENT_KEYS": f"{CLIENT_KEY}:acme,{TIGHT_KEY}:tight", "ANTHROPIC_KEY": ANTHROPIC_KEY, "GPT_KEY": GPT_KEY}

CONFIG = """\
auth: {{keys_env: TEST_CLIENT_KEYS}}
backends:
  mid: {{tier: mid, base_url: {mid}/v1, model: sim-mid-7b, self_hosted: true, price: {{input: 0.1, output: 0.2}},
        timeouts: {{connect: 2, first_token: 5, idle: 5, total: 30}}}}
  claude:
    tier: flagship
    kind: anthropic
    base_url: {claude}
    model: claude-sim
    api_key: ${{ANTHROPIC_KEY}}
    default_max_tokens: 64
    price: {{input: 3, output: 15, cache_read: 0.3, cache_write: 3.75}}
    timeouts: {{connect: 2, first_token: 5, idle: 5, total: 30}}
  gpt:
    tier: flagship
    base_url: {gpt}/v1
    model: sim-gpt
    api_key: ${{GPT_KEY}}
    price: {{input: 2, output: 8}}
    timeouts: {{connect: 2, first_token: 5, idle: 5, total: 30}}
aliases: {{claude-sonnet-4-5: flagship, claude-haiku-4-5: auto}}
classifier: {{vocabulary: {vocabulary}}}
policy:
  ledger: {{path: {ledger}}}
  budgets: {{limits: [{{scope: tenant, name: tight, daily_usd: 0.000001, action: reject}}]}}
  fallback: {{mid: [flagship]}}
  retries: {{max_attempts: 3, same_backend_retries: 1, backoff_base_seconds: 0.01, backoff_cap_seconds: 2, deadline_seconds: 20}}
  breaker: {{consecutive_failures: 3, min_requests: 1000, cooldown_seconds: 30}}
rules:
  - {{name: pii-stays-self-hosted, when: {{pii: true}}, tier: mid}}
  - {{name: escalate-hard-tasks, when: {{task: [reasoning, math, code, legal, policy]}}, tier: flagship}}
  - {{name: default-mid, tier: mid}}
"""

FAQ = [{"role": "user", "content": "How do I reset my online banking password?"}]
MATH = [{"role": "user", "content": "Solve for x: 3x + 7 = 22. Show each step of the algebra."}]
WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather in a given location",
    "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
}


@dataclass
class Stack:
    url: str
    upstreams: dict[str, str]
    gateway: Gateway
    clients: list[anthropic.Anthropic | openai.OpenAI] = field(default_factory=list)

    def anthropic(self, key: str | None = CLIENT_KEY, **kwargs: Any) -> anthropic.Anthropic:
        client = anthropic.Anthropic(base_url=self.url, api_key=key, max_retries=0, **kwargs)
        self.clients.append(client)  # closed after the test: their pooled sockets must not leak
        return client

    def openai(self) -> openai.OpenAI:
        client = openai.OpenAI(base_url=f"{self.url}/v1", api_key=CLIENT_KEY, max_retries=0)
        self.clients.append(client)
        return client

    def fault(self, which: str, **spec: Any) -> None:
        httpx.post(f"{self.upstreams[which]}/_sim/faults", json=spec, timeout=5).raise_for_status()

    def stats(self, which: str) -> dict[str, Any]:
        stats: dict[str, Any] = httpx.get(f"{self.upstreams[which]}/_sim/stats", timeout=5).json()
        return stats


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, str]]:
    def sim(name: str, model: str, key: str | None) -> Any:
        return create_simulator_app(SimProfile(name=name, model=model, ttft=0.0, token_interval=0.0, api_key=key))

    with (
        serve(sim("mid", "sim-mid-7b", None)) as mid,
        serve(sim("flagship", "claude-sim", ANTHROPIC_KEY)) as claude,
        serve(sim("flagship", "sim-gpt", GPT_KEY)) as gpt,
    ):
        yield {"mid": mid, "claude": claude, "gpt": gpt}


@pytest.fixture
def stack(upstreams: dict[str, str], tmp_path: Path) -> Iterator[Stack]:
    """A fresh gateway per test (breakers and the ledger are its own); simulator faults cleared after."""
    path = tmp_path / "router.yaml"
    ledger = tmp_path / "spend.sqlite3"
    path.write_text(CONFIG.format(**upstreams, vocabulary=REPO / "config" / "tasks.yaml", ledger=ledger))
    app = create_app(load_config(path, ENV), environ=ENV, watch=False)
    with serve(app) as url:
        stack = Stack(url, upstreams, app.state.gateway)
        yield stack
        for client in stack.clients:
            client.close()
    for upstream in upstreams.values():
        httpx.delete(f"{upstream}/_sim/faults", timeout=5).raise_for_status()


# -- inbound: the anthropic SDK against /v1/messages ---------------------------------------------------


def test_messages_are_classified_and_routed_like_chat(stack: Stack) -> None:
    client = stack.anthropic()
    raw = client.messages.with_raw_response.create(model="claude-haiku-4-5", max_tokens=64, messages=FAQ)  # type: ignore[arg-type]
    message = raw.parse()
    assert (raw.headers["x-router-tier"], raw.headers["x-router-backend"], raw.headers["x-router-rule"]) == (
        "mid",
        "mid",
        "default-mid",
    )
    assert message.type == "message" and message.role == "assistant" and message.stop_reason == "end_turn"
    assert message.content[0].type == "text" and "mid tier" in message.content[0].text
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert float(raw.headers["x-router-cost-usd"]) > 0

    raw = client.messages.with_raw_response.create(model="auto", max_tokens=64, messages=MATH)  # type: ignore[arg-type]
    assert (raw.headers["x-router-backend"], raw.headers["x-router-rule"]) == ("claude", "escalate-hard-tasks")
    assert "claude-sim" in raw.parse().content[0].text  # type: ignore[union-attr]
    seen = stack.stats("claude")["last_request"]
    assert seen["headers"]["x-api-key"] == ANTHROPIC_KEY and "anthropic-version" in seen["headers"]
    assert CLIENT_KEY not in orjson.dumps(seen).decode()
    assert seen["body"]["model"] == "claude-sim"


def test_claude_model_names_and_bearer_auth(stack: Stack) -> None:
    client = stack.anthropic(key=None, auth_token=CLIENT_KEY)
    raw = client.messages.with_raw_response.create(model="claude-sonnet-4-5", max_tokens=32, messages=FAQ)  # type: ignore[arg-type]
    assert (raw.headers["x-router-tier"], raw.headers["x-router-rule"]) == ("flagship", "requested-model")


@pytest.mark.parametrize("model", ["mid", "claude"])
def test_stream_events_in_anthropic_order(stack: Stack, model: str) -> None:
    client = stack.anthropic()
    events = list(client.messages.create(model=model, max_tokens=20, messages=FAQ, stream=True))  # type: ignore[arg-type]
    kinds = [event.type for event in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert events[0].message.usage.input_tokens > 0  # type: ignore[union-attr]  # an estimate until message_delta
    body = kinds[1:-2]
    assert body[0] == "content_block_start" and body[-1] == "content_block_stop"
    assert set(body[1:-1]) == {"content_block_delta"}
    with client.messages.stream(model=model, max_tokens=20, messages=FAQ) as stream:  # type: ignore[arg-type]
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].text == text  # type: ignore[union-attr]
    assert final.stop_reason == "max_tokens"
    assert final.usage.output_tokens == 20 and final.usage.input_tokens > 0


@pytest.mark.parametrize("model", ["mid", "claude"])
def test_tool_use_round_trip(stack: Stack, model: str) -> None:
    client = stack.anthropic()
    question = [{"role": "user", "content": "What is the weather like in Paris?"}]
    first = client.messages.create(model=model, max_tokens=200, tools=[WEATHER], messages=question)  # type: ignore[arg-type, list-item]
    assert first.stop_reason == "tool_use"
    call = next(block for block in first.content if block.type == "tool_use")
    assert call.name == "get_weather" and isinstance(call.input, dict) and isinstance(call.input["location"], str)
    history = [
        *question,
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "15 degrees"}]},
    ]
    second = client.messages.create(model=model, max_tokens=64, tools=[WEATHER], messages=history)  # type: ignore[arg-type, list-item]
    assert second.stop_reason == "end_turn" and second.content[0].type == "text"
    if model == "claude":  # passed on to the Anthropic backend as a tool_result block
        sent = stack.stats("claude")["last_request"]["body"]["messages"][-1]["content"]
        assert sent == [{"type": "tool_result", "tool_use_id": call.id, "content": "15 degrees"}]
    with client.messages.stream(model=model, max_tokens=200, tools=[WEATHER], messages=question) as stream:  # type: ignore[arg-type, list-item]
        streamed = stream.get_final_message()
    assert streamed.stop_reason == "tool_use"
    assert next(block for block in streamed.content if block.type == "tool_use").input["location"]  # type: ignore[union-attr]


def test_count_tokens(stack: Stack) -> None:
    client = stack.anthropic()
    short = client.messages.count_tokens(model="auto", messages=FAQ)  # type: ignore[arg-type]
    long = client.messages.count_tokens(model="claude-sonnet-4-5", system="You are terse. " * 50, messages=FAQ)  # type: ignore[arg-type]
    assert 0 < short.input_tokens < long.input_tokens


def test_typed_errors_in_anthropic_shape(stack: Stack) -> None:
    client = stack.anthropic()
    with pytest.raises(anthropic.NotFoundError) as not_found:
        client.messages.create(model="claude-3-opus-unknown", max_tokens=10, messages=FAQ)  # type: ignore[arg-type]
    assert not_found.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    assert not_found.value.body["type"] == "error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model="auto", max_tokens=10, messages=FAQ, extra_body={"temperature": 3})  # type: ignore[arg-type]
    assert bad.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "temperature" in bad.value.message
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model="auto", max_tokens=10, messages=[])
    with pytest.raises(anthropic.BadRequestError) as no_text:  # a block without its field, as Anthropic refuses it
        client.messages.create(model="auto", max_tokens=10, messages=[{"role": "user", "content": [{"type": "text"}]}])  # type: ignore[typeddict-item]
    assert no_text.value.body["error"]["message"] == "messages.0.content.0.text: Field required"  # type: ignore[index]
    with pytest.raises(anthropic.AuthenticationError) as denied:
        stack.anthropic(key="sk-wrong").messages.create(model="auto", max_tokens=10, messages=FAQ)  # type: ignore[arg-type]
    assert denied.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    response = httpx.get(f"{stack.url}/v1/messages", headers={"x-api-key": CLIENT_KEY})
    assert response.status_code == 405 and response.json()["type"] == "error"
    unknown = httpx.post(f"{stack.url}/v1/messages/batches", headers={"x-api-key": CLIENT_KEY}, json={})
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "not_found_error"
    assert unknown.json()["type"] == "error" and "/v1/messages/count_tokens" in unknown.json()["error"]["message"]


def test_messages_stream_error_after_start_is_an_error_event(stack: Stack) -> None:
    stack.fault("claude", error_event_after_chunks=6)
    client = stack.anthropic()
    received = []
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        client.messages.create(model="claude", max_tokens=50, messages=FAQ, stream=True) as events,
    ):  # type: ignore[arg-type]
        for event in events:
            received.append(event.type)
    assert "content_block_delta" in received and "message_stop" not in received
    assert caught.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]  # the backend's own


def test_messages_are_accounted_in_the_ledger_metrics_and_budgets(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    stack.anthropic().messages.create(model="claude", max_tokens=16, messages=FAQ)  # type: ignore[arg-type]
    with stack.anthropic().messages.stream(model="mid", max_tokens=16, messages=FAQ) as stream:  # type: ignore[arg-type]
        stream.until_done()
    ledger = stack.gateway.state.ledger
    assert ledger is not None and ledger.flush(5)
    rows = {row["backend"]: row for row in ledger.spend(group_by=("backend",))}
    assert (rows["claude"]["requests"], rows["mid"]["requests"]) == (1, 1)
    assert rows["claude"]["cost_usd"] > rows["mid"]["cost_usd"] > 0
    with pytest.raises(anthropic.RateLimitError) as caught:
        stack.anthropic(key=TIGHT_KEY).messages.create(model="claude", max_tokens=16, messages=FAQ)  # type: ignore[arg-type]
    assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert "budget" in caught.value.message
    logged = [r.fields for r in caplog.records if r.name == ACCESS_LOGGER]  # type: ignore[attr-defined]
    assert [(f["path"], f["backend"], f["status"]) for f in logged] == [
        ("/v1/messages", "claude", 200),
        ("/v1/messages", "mid", 200),
        ("/v1/messages", None, 429),
    ]
    metrics = httpx.get(f"{stack.url}/metrics").text
    assert any(
        line.startswith("llm_router_requests_total{") and 'backend="claude"' in line for line in metrics.splitlines()
    )
    assert any(
        line.startswith("llm_router_cost_usd_total{") and 'backend="claude"' in line for line in metrics.splitlines()
    )


# -- outbound: the openai SDK through a kind: anthropic backend ---------------------------------------


def test_openai_sdk_through_an_anthropic_backend(stack: Stack) -> None:
    client = stack.openai()
    raw = client.chat.completions.with_raw_response.create(
        model="claude",
        max_tokens=16,
        messages=[{"role": "system", "content": "Be brief."}, *FAQ],  # type: ignore[list-item]
    )
    completion = raw.parse()
    assert raw.headers["x-router-backend"] == "claude"
    assert completion.choices[0].finish_reason == "length" and "claude-sim" in (
        completion.choices[0].message.content or ""
    )
    assert completion.usage is not None and completion.usage.completion_tokens == 16
    expected = (completion.usage.prompt_tokens * 3 + 16 * 15) / 1e6
    assert float(raw.headers["x-router-cost-usd"]) == pytest.approx(expected)
    sent = stack.stats("claude")["last_request"]["body"]
    assert sent["system"] == "Be brief." and sent["max_tokens"] == 16

    chunks = list(
        client.chat.completions.create(
            model="claude", stream=True, stream_options={"include_usage": True}, messages=FAQ
        )
    )  # type: ignore[arg-type]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert stack.stats("claude")["last_request"]["body"]["max_tokens"] == 64  # the backend's default_max_tokens


def test_responses_api_through_an_anthropic_backend(stack: Stack) -> None:
    """/v1/responses is translated to chat completions and then to the Messages API, stream and not,
    and a stored response continues through previous_response_id."""
    client = stack.openai()
    raw = client.responses.with_raw_response.create(model="claude", instructions="Be brief.", input=FAQ[0]["content"],
                                                    max_output_tokens=16)
    response = raw.parse()
    assert raw.headers["x-router-backend"] == "claude"
    assert response.status == "incomplete" and "claude-sim" in response.output_text
    assert response.usage is not None and response.usage.output_tokens == 16
    sent = stack.stats("claude")["last_request"]["body"]
    assert sent["system"] == "Be brief." and sent["max_tokens"] == 16
    with client.responses.stream(model="claude", input="And on Sunday?", previous_response_id=response.id) as events:
        kinds = [event.type for event in events]
        final = events.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert final.output_text and final.usage is not None and final.usage.input_tokens > 0
    history = stack.stats("claude")["last_request"]["body"]["messages"]
    assert [turn["role"] for turn in history] == ["user", "assistant", "user"]


def test_openai_sdk_tools_and_json_schema_through_an_anthropic_backend(stack: Stack) -> None:
    client = stack.openai()
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER["input_schema"]}}
    completion = client.chat.completions.create(
        model="claude", tools=[tool], messages=[{"role": "user", "content": "Weather in Paris?"}]
    )  # type: ignore[list-item]
    call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert completion.choices[0].finish_reason == "tool_calls"
    assert isinstance(orjson.loads(call.function.arguments)["location"], str)  # type: ignore[union-attr]
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "forecast", "schema": schema}}
    for stream in (False, True):
        if stream:
            chunks = client.chat.completions.create(model="claude", response_format=fmt, stream=True, messages=FAQ)  # type: ignore[arg-type, call-overload]
            content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        else:
            content = (
                client.chat.completions.create(model="claude", response_format=fmt, messages=FAQ)
                .choices[0]
                .message.content
            )  # type: ignore[arg-type, call-overload]
        document = orjson.loads(content)
        assert isinstance(document["city"], str) and isinstance(document["days"], int)


def test_anthropic_overloaded_fails_over_to_the_openai_flagship(stack: Stack) -> None:
    stack.fault("claude", status=529)
    raw = stack.openai().chat.completions.with_raw_response.create(model="flagship", messages=MATH)  # type: ignore[arg-type]
    assert raw.headers["x-router-backend"] == "gpt"
    assert raw.headers["x-router-fallback"] == "claude->gpt; reason=server_error"
    assert raw.headers["x-router-attempts"] == "3"  # a retry on claude, then gpt
    # Anthropic SDK clients fail over the same way; after 3 failures the breaker skips claude.
    for reason in ("server_error", "breaker_open"):
        raw = stack.anthropic().messages.with_raw_response.create(model="flagship", max_tokens=16, messages=MATH)  # type: ignore[arg-type]
        assert raw.headers["x-router-backend"] == "gpt"
        assert raw.headers["x-router-fallback"] == f"claude->gpt; reason={reason}"


def test_error_event_before_the_first_token_fails_over(stack: Stack) -> None:
    stack.fault("claude", error_event_after_chunks=1, times=2)  # after message_start, before any text
    raw = stack.openai().chat.completions.with_raw_response.create(model="flagship", stream=True, messages=MATH)  # type: ignore[arg-type]
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert raw.headers["x-router-backend"] == "gpt" and "sim-gpt" in text
    assert raw.headers["x-router-fallback"] == "claude->gpt; reason=server_error"


def test_error_event_after_content_ends_the_openai_stream_with_an_error(stack: Stack) -> None:
    stack.fault("claude", error_event_after_chunks=8)
    received = []
    with (
        pytest.raises(openai.APIError, match="Overloaded"),
        stack.openai().chat.completions.create(model="claude", stream=True, messages=FAQ) as chunks,
    ):  # type: ignore[arg-type]
        for chunk in chunks:
            received.append(chunk.choices[0].delta.content if chunk.choices else None)
    assert any(received)


def test_anthropic_rate_limit_honours_retry_after(stack: Stack) -> None:
    stack.fault("claude", status=429, retry_after=0.05, times=1)
    raw = stack.openai().chat.completions.with_raw_response.create(model="claude", messages=FAQ)  # type: ignore[arg-type]
    assert (raw.headers["x-router-backend"], raw.headers["x-router-attempts"]) == ("claude", "2")


def test_anthropic_context_length_moves_to_a_larger_window_or_relays(stack: Stack) -> None:
    stack.fault("claude", context_length_error=True)
    with pytest.raises(openai.BadRequestError) as caught:
        stack.openai().chat.completions.create(model="claude", messages=FAQ)  # type: ignore[arg-type]
    assert caught.value.code == "context_length_exceeded"
    assert "prompt is too long" in caught.value.message


def test_anthropic_refusal_of_unsupported_parameters_names_the_field(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        stack.openai().chat.completions.create(model="claude", n=2, messages=FAQ)  # type: ignore[arg-type]
    assert caught.value.param == "n"
    assert stack.openai().chat.completions.create(model="claude", seed=3, messages=FAQ).choices[0].message.content  # type: ignore[arg-type]


SUPPORT = [{"type": "text", "text": "You are a support agent. " * 20, "cache_control": {"type": "ephemeral"}}]
THINKING = {"type": "enabled", "budget_tokens": 1024}


def test_anthropic_backends_get_the_request_itself_and_answer_as_they_do(stack: Stack) -> None:
    """Pass-through: the client's body (model replaced) goes to an Anthropic backend, and its message comes back
    whole: thinking with its signature, stop_sequence, cache usage and service_tier, priced with the cache prices."""
    client = stack.anthropic()
    plain = client.messages.create(model="claude", max_tokens=32, messages=FAQ)  # type: ignore[arg-type]
    text = plain.content[0].text  # type: ignore[union-attr]
    stop = text.split()[4]
    extra = {"top_k": 5, "context_management": {"edits": []}}
    request = {"max_tokens": 32, "system": SUPPORT, "messages": FAQ, "thinking": THINKING, "stop_sequences": [stop]}
    headers = {"anthropic-beta": "context-management-2025-06-27"}
    raw = client.messages.with_raw_response.create(model="claude", **request, extra_body=extra, extra_headers=headers)  # type: ignore[arg-type]
    message = raw.parse()
    assert raw.headers["x-router-backend"] == "claude"
    thinking, answer = message.content
    assert thinking.type == "thinking" and thinking.thinking and thinking.signature
    assert answer.type == "text" and answer.text == text[: text.index(stop)]
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", stop)
    usage = message.usage
    assert usage.cache_creation_input_tokens and usage.cache_creation_input_tokens > 0
    assert usage.cache_read_input_tokens == 0 and usage.service_tier == "standard"
    cost = (usage.input_tokens * 3 + usage.cache_creation_input_tokens * 3.75 + usage.output_tokens * 15) / 1e6
    assert float(raw.headers["x-router-cost-usd"]) == pytest.approx(cost)

    seen = stack.stats("claude")["last_request"]
    assert seen["body"] == {**request, **extra, "model": "claude-sim"}
    assert seen["headers"]["anthropic-beta"] == "context-management-2025-06-27"
    assert seen["headers"]["x-api-key"] == ANTHROPIC_KEY and CLIENT_KEY not in orjson.dumps(seen).decode()

    again = client.messages.create(model="claude", **request)  # type: ignore[arg-type]
    assert again.usage.cache_read_input_tokens == usage.cache_creation_input_tokens
    assert again.usage.cache_creation_input_tokens == 0


def test_anthropic_backends_stream_their_own_events(stack: Stack) -> None:
    client = stack.anthropic()
    request = {"max_tokens": 32, "system": SUPPORT, "messages": FAQ, "thinking": THINKING}
    whole = client.messages.create(model="claude", **request)  # type: ignore[arg-type]
    with client.messages.stream(model="claude", **request) as stream:  # type: ignore[arg-type]
        kinds = [(event.type, getattr(getattr(event, "delta", None), "type", None)) for event in stream]
        final = stream.get_final_message()
    assert ("content_block_delta", "thinking_delta") in kinds and ("content_block_delta", "signature_delta") in kinds
    assert [block.model_dump() for block in final.content] == [block.model_dump() for block in whole.content]
    assert final.usage.output_tokens == whole.usage.output_tokens
    assert final.usage.cache_read_input_tokens == whole.usage.cache_read_input_tokens > 0
    ledger = stack.gateway.state.ledger
    assert ledger is not None and ledger.flush(5)
    streamed = [row for row in ledger.spend(group_by=("backend",)) if row["backend"] == "claude"][0]
    usage = final.usage
    cost = (usage.input_tokens * 3 + usage.cache_read_input_tokens * 0.3 + usage.output_tokens * 15) / 1e6  # type: ignore[operator]
    assert streamed["requests"] == 2 and streamed["cost_usd"] == pytest.approx(2 * cost)


def test_openai_compatible_backends_get_the_translation(stack: Stack) -> None:
    """What the chat shape cannot carry is dropped for them: no thinking comes back, the stop reason is theirs."""
    extra = {"top_k": 5, "context_management": {"edits": []}}
    message = stack.anthropic().messages.create(
        model="mid", max_tokens=32, system=SUPPORT, messages=FAQ, thinking=THINKING, extra_body=extra  # type: ignore[arg-type]
    )
    assert [block.type for block in message.content] == ["text"] and message.stop_reason == "max_tokens"
    chat = stack.stats("mid")["last_request"]["body"]
    assert chat["messages"][0] == {"role": "system", "content": "You are a support agent. " * 20}
    assert not {"top_k", "thinking", "system", "context_management"} & set(chat)


def test_passed_through_stream_fails_over_before_its_first_token(stack: Stack) -> None:
    """An error event after message_start (held back) fails over to the OpenAI flagship, translated."""
    stack.fault("claude", error_event_after_chunks=2, times=2)
    raw = stack.anthropic().messages.with_raw_response.create(
        model="flagship", max_tokens=16, messages=MATH, thinking=THINKING, stream=True  # type: ignore[arg-type]
    )
    events = list(raw.parse())
    assert raw.headers["x-router-backend"] == "gpt"
    assert raw.headers["x-router-fallback"] == "claude->gpt; reason=server_error"
    assert [event.type for event in events].count("message_start") == 1
    assert "sim-gpt" in "".join(e.delta.text for e in events if e.type == "content_block_delta")  # type: ignore[union-attr]


def test_what_only_anthropic_backends_take_goes_to_them(stack: Stack) -> None:
    """Server tools and blocks chat cannot carry (a screenshot in a tool result, as Claude Code sends) narrow
    the plan to Anthropic backends; a request whose plan has none, or that names a model whose backend is
    not Anthropic's, is a 400 naming the field."""
    screenshot = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    messages = [
        *FAQ,
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [screenshot]}]},
    ]
    tools = [WEATHER, {"type": "web_search_20250305", "name": "web_search", "max_uses": 2}]
    client = stack.anthropic()
    raw = client.messages.with_raw_response.create(model="auto", max_tokens=16, tools=tools, messages=messages)  # type: ignore[arg-type]
    assert (raw.headers["x-router-rule"], raw.headers["x-router-backend"]) == ("default-mid", "claude")
    assert raw.headers["x-router-rerouted"] == "anthropic"
    sent = stack.stats("claude")["last_request"]["body"]
    assert sent["tools"] == tools and sent["messages"][-1]["content"][0]["content"] == [screenshot]
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(model="gpt", max_tokens=16, tools=tools, messages=messages)  # type: ignore[arg-type]
    assert refused.value.body["error"]["message"].startswith("messages.2.content.0.content.0: only Anthropic")  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as named:  # a cheap model asked for by name is not moved up
        client.messages.create(model="mid", max_tokens=16, tools=tools, messages=messages)  # type: ignore[arg-type]
    assert "the model asked for is served by backend 'mid'" in named.value.body["error"]["message"]  # type: ignore[index]
    counted = client.messages.with_raw_response.count_tokens(model="auto", tools=tools, messages=messages)  # type: ignore[arg-type]
    assert (counted.headers["x-router-count"], counted.headers["x-router-backend"]) == ("exact", "claude")


def test_count_tokens_is_exact_on_anthropic_backends(stack: Stack) -> None:
    client = stack.anthropic()
    system = "You are terse. " * 50
    exact = client.messages.with_raw_response.count_tokens(model="claude", system=system, messages=FAQ)  # type: ignore[arg-type]
    assert (exact.headers["x-router-count"], exact.headers["x-router-backend"]) == ("exact", "claude")
    seen = stack.stats("claude")["last_request"]
    assert seen["body"] == {"model": "claude-sim", "system": system, "messages": FAQ}
    assert seen["headers"]["x-api-key"] == ANTHROPIC_KEY
    estimate = client.messages.with_raw_response.count_tokens(model="mid", system=system, messages=FAQ)  # type: ignore[arg-type]
    assert estimate.headers["x-router-count"] == "estimate"
    billed = client.messages.create(model="claude", max_tokens=8, system=system, messages=FAQ).usage  # type: ignore[arg-type]
    assert exact.parse().input_tokens == billed.input_tokens  # what the backend bills, as it counts
    stack.fault("claude", status=529)  # the backend failing: the estimate, not an error
    fallback = client.messages.with_raw_response.count_tokens(model="claude", system=system, messages=FAQ)  # type: ignore[arg-type]
    assert fallback.headers["x-router-count"] == "estimate"
    assert fallback.parse().input_tokens == estimate.parse().input_tokens


def test_count_tokens_is_logged_and_counted_apart_from_generations(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    client = stack.anthropic()
    exact = client.messages.count_tokens(model="claude", messages=FAQ)  # type: ignore[arg-type]
    estimate = client.messages.count_tokens(model="mid", messages=FAQ)  # type: ignore[arg-type]
    with pytest.raises(anthropic.AuthenticationError):
        stack.anthropic(key="sk-wrong").messages.count_tokens(model="mid", messages=FAQ)  # type: ignore[arg-type]
    logged = [r.fields for r in caplog.records if r.name == ACCESS_LOGGER]  # type: ignore[attr-defined]
    assert [(f["path"], f["status"], f["backend"], f["tenant"], f["input_tokens"]) for f in logged] == [
        ("/v1/messages/count_tokens", 200, "claude", "acme", exact.input_tokens),
        ("/v1/messages/count_tokens", 200, None, "acme", estimate.input_tokens),
        ("/v1/messages/count_tokens", 401, None, None, 0),
    ]
    assert all(f["cost_usd"] == 0 and f["output_tokens"] == 0 for f in logged)
    assert "sk-wrong" not in caplog.text and CLIENT_KEY not in caplog.text and ANTHROPIC_KEY not in caplog.text
    metrics = httpx.get(f"{stack.url}/metrics").text.splitlines()
    assert 'llm_router_endpoint_requests_total{endpoint="count_tokens",status_class="2xx"} 2.0' in metrics
    assert 'llm_router_endpoint_requests_total{endpoint="count_tokens",status_class="4xx"} 1.0' in metrics
    assert 'llm_router_endpoint_duration_seconds_count{endpoint="count_tokens"} 3.0' in metrics
    # not generations: no requests, tokens or spend recorded for them
    assert not [line for line in metrics if line.startswith(("llm_router_requests_total{", "llm_router_tokens_total{"))
                and not line.endswith(" 0.0")]


def test_count_tokens_takes_a_request_from_the_callers_rate_limit(
    upstreams: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A count is a request (an exact one calls the upstream's own rate-limited count endpoint): it takes
    one from the caller's requests-per-minute bucket and no tokens, and is refused in Anthropic's shape."""
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    path = tmp_path / "router.yaml"
    config = CONFIG.format(**upstreams, vocabulary=REPO / "config" / "tasks.yaml", ledger=tmp_path / "spend.sqlite3")
    path.write_text(config.replace("policy:\n", "policy:\n  rate_limits: [{scope: tenant, name: acme, rpm: 3, tpm: 100000}]\n"))
    app = create_app(load_config(path, ENV), environ=ENV, watch=False)
    with serve(app) as url, anthropic.Anthropic(base_url=url, api_key=CLIENT_KEY, max_retries=0) as client:
        counts = [client.messages.with_raw_response.count_tokens(model=model, messages=FAQ)  # type: ignore[arg-type]
                  for model in ("claude", "mid")]
        assert [c.headers["x-ratelimit-remaining-requests"] for c in counts] == ["2", "1"]
        assert [c.headers["x-ratelimit-remaining-tokens"] for c in counts] == ["100000"] * 2  # none taken
        client.messages.count_tokens(model="mid", messages=FAQ)  # type: ignore[arg-type]
        with pytest.raises(anthropic.RateLimitError) as refused:
            client.messages.count_tokens(model="mid", messages=FAQ)  # type: ignore[arg-type]
        assert refused.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
        assert int(refused.value.response.headers["retry-after"]) >= 1
        with pytest.raises(anthropic.RateLimitError) as generation:  # the generations' bucket: the same one
            client.messages.create(model="mid", max_tokens=16, messages=FAQ)  # type: ignore[arg-type]
        assert "requests per min" in generation.value.message
    logged = [r.fields for r in caplog.records if r.name == ACCESS_LOGGER]  # type: ignore[attr-defined]
    assert [(f["path"], f["status"]) for f in logged] == [("/v1/messages/count_tokens", 200)] * 3 + [
        ("/v1/messages/count_tokens", 429), ("/v1/messages", 429)]


def test_a_claude_code_shaped_request(stack: Stack) -> None:
    """What Claude Code sends: ?beta=true, anthropic-beta, Bearer auth token, system blocks and tools with
    cache_control, metadata.user_id, a streamed answer; routed by the aliases to the rules' choice."""
    body = {
        "model": "claude-haiku-4-5",
        "max_tokens": 32000,
        "stream": True,
        "metadata": {"user_id": "user_abc_account_def_session_ghi"},
        "system": [
            {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
            {"type": "text", "text": "Help the user with software tasks.", "cache_control": {"type": "ephemeral"}},
        ],
        "tools": [{**WEATHER, "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": FAQ[0]["content"], "cache_control": {"type": "ephemeral"}}],
            }
        ],
    }
    headers = {
        "authorization": f"Bearer {CLIENT_KEY}",
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14",
    }
    url = f"{stack.url}/v1/messages?beta=true"
    # 32000 output tokens fit no backend's window here (8192): refused before any call, in Anthropic's
    # shape, as a 400 no retry can fix (#17 item 13).
    refused = httpx.post(url, json=body, headers=headers, timeout=10)
    assert refused.status_code == 400 and refused.json()["error"]["type"] == "invalid_request_error"
    assert refused.headers["x-should-retry"] == "false"
    assert "32" in refused.json()["error"]["message"]  # the size that did not fit
    response = httpx.post(url, json={**body, "max_tokens": 4096}, headers=headers, timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-router-tier"] == "mid"
    kinds = [line.removeprefix("event: ") for line in response.text.splitlines() if line.startswith("event: ")]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    sent = stack.stats("mid")["last_request"]["body"]
    assert sent["user"] == "user_abc_account_def_session_ghi" and sent["messages"][0]["role"] == "system"


def test_anthropic_credential_failure_fails_over_without_leaking(stack: Stack) -> None:
    stack.fault("claude", status=401)  # Anthropic's authentication_error
    raw = stack.openai().chat.completions.with_raw_response.create(model="flagship", messages=MATH)  # type: ignore[arg-type]
    assert (raw.headers["x-router-backend"], raw.headers["x-router-fallback"]) == ("gpt", "claude->gpt; reason=auth")
    with pytest.raises(openai.APIStatusError) as caught:
        stack.openai().chat.completions.create(model="claude", messages=MATH)  # type: ignore[arg-type]
    assert caught.value.status_code == 502 and caught.value.code == "upstream_auth_failed"
    assert ANTHROPIC_KEY not in caught.value.message
