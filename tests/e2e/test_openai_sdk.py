"""The official openai SDK against the gateway, with real simulated upstreams on loopback."""

from __future__ import annotations

import json
import logging
import socket
import time

import httpx
import openai
import pytest

from tests.e2e.conftest import CLIENT_KEY, OTHER_KEY, UPSTREAM_KEY, Stack

FAQ = [{"role": "user", "content": "How do I reset my online banking password?"}]
MATH = [{"role": "user", "content": "A train travels 120 km in 1.5 hours and then 80 km in 2 hours. What is its average speed for the whole trip? Show your steps."}]
PII = [{"role": "user", "content": "Prove that there are infinitely many primes. Email the proof to jane.doe@example.com"}]


def test_non_stream_faq_goes_to_mid(gateway: Stack) -> None:
    raw = gateway.client().chat.completions.with_raw_response.create(model="auto", messages=FAQ)
    completion = raw.parse()
    assert raw.headers["x-router-tier"] == "mid"
    assert raw.headers["x-router-backend"] == "mid"
    assert raw.headers["x-router-rule"] == "default-mid"
    assert raw.headers["x-router-task"] not in ("", None)
    assert len(raw.headers["x-request-id"]) >= 16
    assert completion.model == "sim-mid-7b"
    assert completion.choices[0].message.content
    assert completion.usage is not None and completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_non_stream_math_escalates_to_flagship(gateway: Stack) -> None:
    raw = gateway.client().chat.completions.with_raw_response.create(model="auto", messages=MATH)
    assert raw.headers["x-router-tier"] == "flagship"
    assert raw.headers["x-router-rule"] == "escalate-hard-tasks"
    assert raw.headers["x-router-task"] == "math"
    assert raw.parse().model == "sim-flagship"


def test_personal_data_stays_on_mid(gateway: Stack) -> None:
    raw = gateway.client().chat.completions.with_raw_response.create(model="auto", messages=PII)
    assert raw.headers["x-router-tier"] == "mid"
    assert raw.headers["x-router-rule"] == "pii-stays-self-hosted"


def test_tenant_rule_uses_the_clients_key(gateway: Stack) -> None:
    raw = gateway.client(OTHER_KEY).chat.completions.with_raw_response.create(model="auto", messages=FAQ)
    assert raw.headers["x-router-rule"] == "beta-tenant-flagship"
    assert raw.headers["x-router-tier"] == "flagship"


def test_stream_with_usage(gateway: Stack) -> None:
    with gateway.client().chat.completions.with_streaming_response.create(
        model="auto", messages=MATH, stream=True, stream_options={"include_usage": True}
    ) as response:
        assert response.headers["x-router-tier"] == "flagship"
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert [c for c in chunks if c.choices and c.choices[0].finish_reason][0].choices[0].finish_reason == "stop"


@pytest.mark.parametrize("upstream_still_streaming", [False, True])
def test_stream_reads_the_same_whether_or_not_the_upstream_had_finished(
    gateway: Stack, monkeypatch: pytest.MonkeyPatch, upstream_still_streaming: bool
) -> None:
    """A finished upstream stream is sent in one write; one still streaming is relayed batch by batch."""
    import router.api

    finished_sends: list[object] = []
    send_finished = router.api._send_finished_stream
    monkeypatch.setattr(router.api, "_send_finished_stream", lambda *a: finished_sends.append(a) or send_finished(*a))
    if upstream_still_streaming:
        with gateway.sim("mid") as sim:
            sim.post("/_sim/faults", json={"stall_after_chunks": 3, "stall_seconds": 0.05}).raise_for_status()
    body = {"model": "mid", "messages": FAQ, "stream": True, "stream_options": {"include_usage": True}}
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {CLIENT_KEY}"})
    assert bool(finished_sends) is not upstream_still_streaming
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["x-router-backend"] == "mid"
    events = [e for e in response.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]).strip()
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


def test_stream_without_usage_request_gets_no_usage_chunk(gateway: Stack) -> None:
    chunks = list(gateway.client().chat.completions.create(model="auto", messages=FAQ, stream=True))
    assert chunks and all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)
    # The gateway still asked the upstream for usage (for cost accounting) and stripped it.
    with gateway.sim("mid") as sim:
        assert sim.get("/_sim/stats").json()["last_request"]["body"]["stream_options"] == {"include_usage": True}


def test_raw_sse_frames_are_data_json_and_done(gateway: Stack) -> None:
    with gateway.sim("mid") as sim:
        sim.post("/_sim/faults", json={"extra_frames": True}).raise_for_status()
    body = {"model": "mid", "messages": FAQ, "stream": True}
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {CLIENT_KEY}"})
    events = [e for e in response.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    for event in events[:-1]:
        assert event.startswith("data: ") and "\n" not in event
        json.loads(event[6:])


def test_forced_tier_alias_and_backend(gateway: Stack) -> None:
    client = gateway.client()
    for model, tier, rule in (("flagship", "flagship", "requested-model"), ("gpt-4o", "flagship", "requested-model"),
                              ("mid", "mid", "requested-model"), ("gpt-4o-mini", "flagship", "escalate-hard-tasks")):
        raw = client.chat.completions.with_raw_response.create(model=model, messages=MATH)
        assert (raw.headers["x-router-tier"], raw.headers["x-router-rule"]) == (tier, rule), model


def test_models_list(gateway: Stack) -> None:
    ids = [m.id for m in gateway.client().models.list()]
    assert ids[:3] == ["auto", "mid", "flagship"]
    assert {"gpt-4o", "gpt-4o-mini"} <= set(ids)


def test_tool_calls_pass_through(gateway: Stack) -> None:
    tools = [{"type": "function", "function": {"name": "get_balance", "description": "Account balance",
              "parameters": {"type": "object", "properties": {"account": {"type": "string"}}, "required": ["account"]}}}]
    completion = gateway.client().chat.completions.create(model="auto", messages=FAQ, tools=tools, tool_choice="auto")  # type: ignore[arg-type]
    call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert completion.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_balance"
    assert "account" in json.loads(call.function.arguments)
    with gateway.sim("mid") as sim:
        forwarded = sim.get("/_sim/stats").json()["last_request"]["body"]
    assert forwarded["tools"] == tools and forwarded["tool_choice"] == "auto"
    assert forwarded["model"] == "sim-mid-7b"


def test_stream_tool_calls(gateway: Stack) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}]
    chunks = list(gateway.client().chat.completions.create(model="mid", messages=FAQ, tools=tools, stream=True))  # type: ignore[arg-type]
    args = "".join(c.choices[0].delta.tool_calls[0].function.arguments or "" for c in chunks if c.choices and c.choices[0].delta.tool_calls)  # type: ignore[index,union-attr]
    assert "q" in json.loads(args)


def test_fields_are_forwarded_untouched_and_client_key_is_not(gateway: Stack) -> None:
    extra = {"seed": 7, "temperature": 0.3, "stop": ["\n\n"], "user": "u-1", "n": 2, "max_completion_tokens": 12,
             "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}}}}
    completion = gateway.client().chat.completions.create(model="flagship", messages=FAQ, **extra)  # type: ignore[arg-type]
    assert len(completion.choices) == 2
    assert isinstance(json.loads(completion.choices[0].message.content or "")["x"], int)
    with gateway.sim("flagship") as sim:
        seen = sim.get("/_sim/stats").json()["last_request"]
    for key, value in extra.items():
        assert seen["body"][key] == value
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert CLIENT_KEY not in json.dumps(seen)


def test_request_id_is_echoed(gateway: Stack) -> None:
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="auto", messages=FAQ, extra_headers={"x-request-id": "trace-abc-123"}
    )
    assert raw.headers["x-request-id"] == "trace-abc-123"


def test_unknown_model_is_404(gateway: Stack) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        gateway.client().chat.completions.create(model="gpt-99", messages=FAQ)
    assert info.value.code == "model_not_found"
    assert info.value.body["param"] == "model"  # type: ignore[index]


@pytest.mark.parametrize("key", ["sk-wrong", ""])
def test_bad_or_missing_key_is_401(gateway: Stack, key: str) -> None:
    client = gateway.client(key or "placeholder")
    if not key:
        client = client.with_options(default_headers={"Authorization": ""})
    with pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(model="auto", messages=FAQ)
    assert info.value.response.headers["x-should-retry"] == "false"


def test_invalid_body_is_400_with_param(gateway: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        gateway.client().chat.completions.create(model="auto", messages=[{"role": "wizard", "content": "x"}])  # type: ignore[list-item,misc]
    assert info.value.param == "messages[0].role"  # type: ignore[attr-defined]
    response = httpx.post(f"{gateway.url}/v1/chat/completions", content=b"{nope", headers={"authorization": f"Bearer {CLIENT_KEY}"})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_oversized_body_is_413(gateway: Stack) -> None:
    huge = "x" * (9 * 1024 * 1024)
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json={"model": "auto", "messages": [{"role": "user", "content": huge}]},
                          headers={"authorization": f"Bearer {CLIENT_KEY}"}, timeout=30)
    assert response.status_code == 413
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(("method", "path", "status"), [("GET", "/v1/nothing", 404), ("GET", "/v1/chat/completions", 405)])
def test_unknown_paths_answer_in_openai_shape(gateway: Stack, method: str, path: str, status: int) -> None:
    response = httpx.request(method, f"{gateway.url}{path}")
    assert response.status_code == status
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_upstream_500_is_502_with_its_message(gateway: Stack) -> None:
    with gateway.sim("mid") as sim:
        sim.post("/_sim/faults", json={"status": 500, "message": "CUDA out of memory"}).raise_for_status()
    with pytest.raises(openai.InternalServerError) as info:
        gateway.client().chat.completions.create(model="mid", messages=FAQ)
    assert info.value.status_code == 502
    assert "CUDA out of memory" in info.value.message
    headers = info.value.response.headers
    assert headers["x-router-backend"] == "mid"
    # One retry on the same backend (no fallback is configured here), then the SDK is told not to retry.
    assert headers["x-router-attempts"] == "2"
    assert headers["x-should-retry"] == "false"


def test_upstream_401_is_502_not_401(gateway: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    with gateway.sim("flagship") as sim:
        sim.post("/_sim/faults", json={"status": 401, "message": "Incorrect API key provided: sk-ups****", "times": 1}).raise_for_status()
    with pytest.raises(openai.InternalServerError) as info:
        gateway.client().chat.completions.create(model="flagship", messages=FAQ)
    assert info.value.status_code == 502
    assert info.value.code == "upstream_auth_failed"
    assert "sk-ups" not in info.value.message
    assert info.value.response.headers["x-should-retry"] == "false"


def test_upstream_context_length_error_is_relayed_as_400(gateway: Stack) -> None:
    with gateway.sim("mid") as sim:
        sim.post("/_sim/faults", json={"context_length_error": True, "times": 1}).raise_for_status()
    with pytest.raises(openai.BadRequestError) as info:
        gateway.client().chat.completions.create(model="mid", messages=FAQ)
    assert info.value.code == "context_length_exceeded"


def test_failure_mid_stream_makes_the_sdk_raise(gateway: Stack) -> None:
    with gateway.sim("mid") as sim:
        sim.post("/_sim/faults", json={"drop_after_chunks": 3, "times": 1}).raise_for_status()
    stream = gateway.client().chat.completions.create(model="mid", messages=FAQ, stream=True, max_tokens=40)
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            received.append(chunk)
    assert received, "the first chunks reached the client before the upstream failed"
    assert "closed the connection" in info.value.message


def test_failure_before_first_token_keeps_a_status_code(gateway: Stack) -> None:
    with gateway.sim("mid") as sim:
        sim.post("/_sim/faults", json={"status": 503, "message": "overloaded"}).raise_for_status()
    with pytest.raises(openai.InternalServerError) as info:
        list(gateway.client().chat.completions.create(model="mid", messages=FAQ, stream=True))
    assert info.value.status_code == 502 and "overloaded" in info.value.message


def test_plain_json_answer_to_a_stream_is_converted(gateway: Stack) -> None:
    with gateway.sim("mid") as sim:
        sim.post("/_sim/faults", json={"plain_json_for_stream": True, "times": 1}).raise_for_status()
    chunks = list(gateway.client().chat.completions.create(model="mid", messages=FAQ, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()


def test_sse_answer_to_a_non_stream_request_is_converted(gateway: Stack) -> None:
    with gateway.sim("mid") as sim:
        sim.post("/_sim/faults", json={"sse_for_nonstream": True, "times": 1}).raise_for_status()
    completion = gateway.client().chat.completions.create(model="mid", messages=FAQ)
    assert completion.object == "chat.completion" and completion.choices[0].message.content


def test_malformed_upstream_json_is_502(gateway: Stack) -> None:
    with gateway.sim("mid") as sim:
        sim.post("/_sim/faults", json={"malformed": True}).raise_for_status()
    with pytest.raises(openai.InternalServerError) as info:
        gateway.client().chat.completions.create(model="mid", messages=FAQ)
    assert info.value.code == "upstream_malformed"


def test_decide_is_a_dry_run(gateway: Stack) -> None:
    with gateway.sim("flagship") as sim:
        before = sim.get("/_sim/stats").json()["requests"]
    response = httpx.post(f"{gateway.url}/v1/router/decide", json={"model": "auto", "messages": MATH},
                          headers={"authorization": f"Bearer {CLIENT_KEY}"})
    decision = response.json()
    assert response.status_code == 200
    assert (decision["tier"], decision["backend"], decision["rule"], decision["task"]) == ("flagship", "flagship", "escalate-hard-tasks", "math")
    assert decision["features"]["input_tokens"] > 0 and "complexity" in decision["features"]
    assert "escalate-hard-tasks" in decision["reason"]
    with gateway.sim("flagship") as sim:
        assert sim.get("/_sim/stats").json()["requests"] == before


def test_health_and_readiness(gateway: Stack) -> None:
    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{gateway.url}/readyz").json()
    assert ready["status"] == "ready" and set(ready["backends"]) == {"mid", "flagship"}


def test_client_leaving_during_the_upload_is_a_499_not_an_error(gateway: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="router.access")
    host, port = gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        head = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {CLIENT_KEY}\r\n"
                "content-type: application/json\r\ncontent-length: 5000\r\nx-request-id: upload-gone\r\n\r\n")
        sock.sendall(head.encode() + b'{"model": "auto", "messages": [')
    deadline = time.monotonic() + 5
    while not [r for r in caplog.records if r.name == "router.access"] and time.monotonic() < deadline:
        time.sleep(0.02)
    access = [r for r in caplog.records if r.name == "router.access"]
    assert [(r.fields["request_id"], r.fields["status"]) for r in access] == [("upload-gone", 499)]  # type: ignore[attr-defined]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
