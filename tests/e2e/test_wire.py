"""Wire defects seen from outside (issue #17, items 8-14): a scripted upstream on loopback sends what
real servers and proxies sometimes send, and the official SDK must still get a well-formed answer."""

from __future__ import annotations

import json
import sqlite3
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import orjson
import pytest
from starlette.types import Receive, Scope, Send

from router.app import create_app
from router.config import load_config
from tests.e2e.conftest import ADMIN_KEY, CLIENT_KEY, ENV, REPO, UPSTREAM_KEY, Stack
from tests.servers import serve

HELLO = [{"role": "user", "content": "How do I reset my online banking password?"}]
HEADERS = {"authorization": f"Bearer {CLIENT_KEY}"}


@dataclass
class Answer:
    status: int = 200
    content_type: str = "text/event-stream"
    parts: list[bytes] = field(default_factory=list)


def chunk(delta: dict[str, object], finish: str | None = None, **extra: object) -> bytes:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return orjson.dumps({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [choice], **extra})


def sse(*payloads: bytes) -> list[bytes]:
    return [b"data: " + p + b"\n\n" for p in payloads] + [b"data: [DONE]\n\n"]


USAGE = {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}
COMPLETION = {"id": "c1", "object": "chat.completion", "created": 1, "model": "m", "usage": USAGE,
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there"}, "finish_reason": "stop"}]}


class ScriptedUpstream:
    """An OpenAI-compatible upstream answering each request with the next scripted ``Answer``
    (a well-formed stream or completion once the script is used up)."""

    def __init__(self) -> None:
        self.script: deque[Answer] = deque()
        self.requests = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.requests += 1
        request = orjson.loads(body)
        if self.script:
            answer = self.script.popleft()
        elif request.get("stream"):
            answer = Answer(parts=sse(chunk({"role": "assistant", "content": ""}, usage=None),
                                      chunk({"content": "Hello"}, usage=None), chunk({}, "stop", usage=None),
                                      orjson.dumps({"id": "c1", "object": "chat.completion.chunk", "created": 1,
                                                    "model": "m", "choices": [], "usage": USAGE})))
        else:
            answer = Answer(content_type="application/json", parts=[orjson.dumps(COMPLETION)])
        await send({"type": "http.response.start", "status": answer.status,
                    "headers": [(b"content-type", answer.content_type.encode())]})
        for part in answer.parts:
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


CONFIG = """\
auth: {{keys_env: TEST_CLIENT_KEYS}}
backends:
  mid:
    tier: mid
    base_url: {mid}/v1
    model: scripted-mid
    api_key: ${{FLAGSHIP_KEY}}
    context_window: 4096
    timeouts: {{connect: 2, first_token: 5, idle: 5, total: 30}}
  flagship:
    tier: flagship
    base_url: {flagship}/v1
    model: scripted-flagship
    context_window: 8192
    timeouts: {{connect: 2, first_token: 5, idle: 5, total: 30}}
classifier: {{vocabulary: {vocabulary}}}
policy:
  ledger: {{path: ''}}
  fallback: {{mid: [flagship]}}
  retries: {{same_backend_retries: 0}}
  breaker: {{consecutive_failures: 2, cooldown_seconds: 30}}
rules:
  - {{name: default-mid, tier: mid}}
"""


@dataclass
class Wire:
    url: str
    mid: ScriptedUpstream
    flagship: ScriptedUpstream

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=CLIENT_KEY, max_retries=0)

    def events(self, body: dict[str, object]) -> list[str]:
        response = httpx.post(f"{self.url}/v1/chat/completions", json=body, headers=HEADERS)
        assert response.status_code == 200, response.text
        return [e for e in response.text.split("\n\n") if e]


@pytest.fixture
def wire(tmp_path: Path) -> Iterator[Wire]:
    mid, flagship = ScriptedUpstream(), ScriptedUpstream()
    with serve(mid) as mid_url, serve(flagship) as flagship_url:
        path = tmp_path / "router.yaml"
        path.write_text(CONFIG.format(mid=mid_url, flagship=flagship_url, vocabulary=REPO / "config" / "tasks.yaml"))
        with serve(create_app(load_config(path, ENV), environ=ENV)) as url:
            yield Wire(url, mid, flagship)


def test_replayed_sdk_message_with_null_tool_calls_is_accepted(wire: Wire) -> None:
    """Item 8: agent code appends ``message.model_dump()`` (``tool_calls: None`` and more) to its history."""
    client = wire.client()
    first = client.chat.completions.create(model="mid", messages=HELLO)
    history = [*HELLO, first.choices[0].message.model_dump(), {"role": "user", "content": "Thanks. And my PIN?"}]
    assert history[1]["tool_calls"] is None
    second = client.chat.completions.create(model="mid", messages=history)
    assert second.choices[0].message.content == "Hello there"


def test_multi_line_data_event_is_relayed_as_one_line_of_json(wire: Wire) -> None:
    """Item 9: per the SSE spec, ``data:`` lines of one event are joined with newlines."""
    spread = b'{"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",\ndata: "choices": [{"index": 0,\ndata: "delta": {"content": "Hel\\nlo"}, "finish_reason": null}]}'
    wire.mid.script.append(Answer(parts=sse(chunk({"role": "assistant", "content": ""}), spread, chunk({}, "stop"))))
    events = wire.events({"model": "mid", "messages": HELLO, "stream": True})
    assert events[-1] == "data: [DONE]"
    for event in events:
        assert event.startswith("data: ") and "\n" not in event
    wire.mid.script.append(Answer(parts=sse(chunk({"role": "assistant", "content": ""}), spread, chunk({}, "stop"))))
    chunks = list(wire.client().chat.completions.create(model="mid", messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hel\nlo"


def test_usage_the_client_did_not_ask_for_is_stripped(wire: Wire) -> None:
    """Item 10: no ``"usage": null`` on every chunk and no usage chunk, LiteLLM's style included."""
    litellm_usage = orjson.dumps({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                                  "choices": [{"index": 0, "delta": {}}], "usage": USAGE})
    parts = sse(chunk({"role": "assistant", "content": ""}, usage=None), chunk({"content": "Hi"}, usage=None),
                chunk({}, "stop", usage=None), litellm_usage)
    wire.mid.script.append(Answer(parts=parts))
    events = wire.events({"model": "mid", "messages": HELLO, "stream": True})
    payloads = [json.loads(e[6:]) for e in events[:-1]]
    assert [p["choices"][0]["delta"] for p in payloads] == [{"role": "assistant", "content": ""}, {"content": "Hi"}, {}]
    assert all("usage" not in p for p in payloads)
    # Asked for: relayed as the upstream sent it.
    wire.mid.script.append(Answer(parts=parts))
    events = wire.events({"model": "mid", "messages": HELLO, "stream": True, "stream_options": {"include_usage": True}})
    payloads = [json.loads(e[6:]) for e in events[:-1]]
    assert [p["usage"] for p in payloads] == [None, None, None, USAGE]


def test_stream_answered_with_a_json_error_falls_back(wire: Wire) -> None:
    """Item 11: ``200 application/json {"error": ...}`` to a stream request is an upstream failure."""
    error = orjson.dumps({"error": {"message": "model overloaded", "type": "server_error", "code": None}})
    wire.mid.script.append(Answer(content_type="application/json", parts=[error]))
    with wire.client().chat.completions.with_streaming_response.create(model="auto", messages=HELLO, stream=True) as response:
        assert response.headers["x-router-backend"] == "flagship"
        assert response.headers["x-router-fallback"] == "mid->flagship; reason=server_error"
        chunks = list(response.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello"
    # When every backend does it, the client gets the upstream's error, not a 200 with only [DONE].
    wire.mid.script.append(Answer(content_type="application/json", parts=[error]))
    wire.flagship.script.append(Answer(content_type="application/json", parts=[error]))
    with pytest.raises(openai.APIStatusError) as caught:
        list(wire.client().chat.completions.create(model="mid", messages=HELLO, stream=True))
    assert caught.value.status_code == 502
    assert "model overloaded" in caught.value.message


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_error_echoing_credentials_is_scrubbed(wire: Wire, stream: bool) -> None:
    """Item 12: a 5xx that echoes the request's headers must not hand the gateway's key to the client."""
    echo = f"upstream proxy error; request headers: {{'Authorization': 'Bearer {UPSTREAM_KEY}', 'x-api-key': 'k-9f8e7d6c'}}"
    wire.mid.script.append(Answer(500, "application/json", [orjson.dumps({"error": {"message": echo, "type": "server_error"}})]))
    wire.flagship.script.append(Answer(503, "text/plain", [f"no healthy upstream for key {UPSTREAM_KEY}".encode()]))
    with pytest.raises(openai.APIStatusError) as caught:
        list(wire.client().chat.completions.create(model="mid", messages=HELLO, stream=stream))
    text = caught.value.response.text
    assert caught.value.status_code == 502
    assert UPSTREAM_KEY not in text and "k-9f8e7d6c" not in text
    assert "[redacted]" in text


@pytest.mark.parametrize(("since", "status"), [("abc", 400), ("nan", 400), ("1e999", 400), ("0", 200), ("", 200)])
def test_spend_since_must_be_a_unix_time(gateway: Stack, since: str, status: int) -> None:
    """Item 13: ``?since=abc`` was a 500."""
    response = httpx.get(f"{gateway.url}/v1/router/spend", params={"since": since}, headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert response.status_code == status
    if status == 400:
        assert response.json()["error"]["param"] == "since"


def test_deeply_nested_json_is_400_not_500(wire: Wire) -> None:
    """Item 13: orjson reads 1024 levels but writes 254: the upstream body could not be encoded."""
    raw = b'{"model": "mid", "messages": [{"role": "user", "content": "hi"}], "extra": ' + b"[" * 600 + b"]" * 600 + b"}"
    response = httpx.post(f"{wire.url}/v1/chat/completions", content=raw, headers={**HEADERS, "content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert wire.mid.requests == 0


@pytest.mark.parametrize("fields", [{"max_tokens": 9000}, {"messages": [{"role": "user", "content": "word " * 40000}]}])
def test_request_larger_than_every_context_window_is_400(wire: Wire, fields: dict[str, object]) -> None:
    """Item 13: a 503 with x-should-retry: true made the SDK retry what can never succeed."""
    with pytest.raises(openai.BadRequestError) as caught:
        wire.client().chat.completions.create(**{"model": "auto", "messages": HELLO, **fields})  # type: ignore[call-overload]
    assert caught.value.code == "context_length_exceeded"
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert "8192" in caught.value.message


def test_error_after_failover_names_the_backend_that_produced_it(wire: Wire) -> None:
    """Item 14: the headers name the backend that produced the error, not the first one tried."""
    wire.mid.script.append(Answer(500, "application/json", [b'{"error": {"message": "mid is down"}}']))
    wire.flagship.script.append(Answer(500, "application/json", [b'{"error": {"message": "flagship is down"}}']))
    with pytest.raises(openai.InternalServerError) as caught:
        wire.client().chat.completions.create(model="mid", messages=HELLO)
    assert "flagship is down" in caught.value.message
    headers = caught.value.response.headers
    assert headers["x-router-backend"] == "flagship"
    assert headers["x-router-fallback"] == "mid->flagship; reason=server_error"


def test_breaker_open_503_says_when_to_retry(wire: Wire) -> None:
    """Item 14: retry-after is the breaker's remaining cool-down (30 s here), consistent with x-should-retry."""
    for _ in range(2):  # two failures each open both breakers
        wire.mid.script.append(Answer(500, "application/json", [b'{"error": {"message": "down"}}']))
        wire.flagship.script.append(Answer(500, "application/json", [b'{"error": {"message": "down"}}']))
        with pytest.raises(openai.InternalServerError):
            wire.client().chat.completions.create(model="mid", messages=HELLO)
    with pytest.raises(openai.APIStatusError) as caught:
        wire.client().chat.completions.create(model="mid", messages=HELLO)
    assert caught.value.status_code == 503
    headers = caught.value.response.headers
    assert 25 <= int(headers["retry-after"]) <= 30
    assert headers["x-should-retry"] == "true"
    assert headers["x-router-backend"] == "mid"
    assert wire.mid.requests == 2 and wire.flagship.requests == 2


def test_a_failed_request_leaves_no_write_ahead_row_to_bill_later(gateway: Stack) -> None:
    """Item 16's write-ahead row is cleared when no upstream answered (nothing is billed, now or later)."""
    with gateway.sim("mid") as sim:
        sim.post("/_sim/faults", json={"status": 500, "message": "down"}).raise_for_status()
    with pytest.raises(openai.InternalServerError):
        gateway.client().chat.completions.create(model="mid", messages=HELLO)
    # A spend read runs after every row queued before it: the ledger has settled.
    assert httpx.get(f"{gateway.url}/v1/router/spend", headers={"authorization": f"Bearer {ADMIN_KEY}"}).status_code == 200
    with sqlite3.connect(gateway.config_path.parent / "spend.sqlite3") as conn:
        assert conn.execute("SELECT COUNT(*) FROM pending").fetchone() == (0,)
    conn.close()
