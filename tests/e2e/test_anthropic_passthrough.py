"""``/v1/messages`` to a ``kind: anthropic`` backend at the wire: the backend replays Anthropic's documented
answers (tests/fixtures/anthropic) and the official ``anthropic`` SDK, through the gateway, gets them whole:
thinking and redacted thinking, citations, stop_sequence, cache usage, service_tier."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from router.app import create_app
from router.config import load_config
from router.upstream.sse import SSEDecoder
from tests.servers import serve

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "anthropic"
CONFIG = """\
backends:
  mid: {{tier: mid, base_url: http://127.0.0.1:9/v1, model: unused-mid, self_hosted: true}}
  claude: {{tier: flagship, kind: anthropic, base_url: {claude}, model: claude-sonnet-4-5, api_key: sk-ant-x,
           price: {{input: 3, output: 15, cache_read: 0.3, cache_write: 3.75}}}}
classifier: {{vocabulary: {vocabulary}}}
rules:
  - {{name: default-mid, tier: mid}}
"""
ASK = {"max_tokens": 1024, "messages": [{"role": "user", "content": "What color is the grass and sky?"}]}


class Replay:
    """An Anthropic upstream answering every request with one fixture (JSON, or SSE for a stream)."""

    def __init__(self) -> None:
        self.answer = "basic_response.json"
        self.events = "stream_text.sse"
        self.seen: list[dict[str, Any]] = []

    async def messages(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        self.seen.append(body)
        if body.get("stream"):
            return Response((FIXTURES / self.events).read_bytes(), media_type="text/event-stream")
        return Response((FIXTURES / self.answer).read_bytes(), media_type="application/json")


@pytest.fixture(scope="module")
def replay() -> Iterator[tuple[Replay, str]]:
    upstream = Replay()
    with serve(Starlette(routes=[Route("/v1/messages", upstream.messages, methods=["POST"])])) as url:
        yield upstream, url


@pytest.fixture
def client(replay: tuple[Replay, str], tmp_path: Path) -> Iterator[anthropic.Anthropic]:
    path = tmp_path / "router.yaml"
    path.write_text(CONFIG.format(claude=replay[1], vocabulary=REPO / "config" / "tasks.yaml"))
    with serve(create_app(load_config(path, {}), environ={}, watch=False)) as url:
        with anthropic.Anthropic(base_url=url, api_key="none", max_retries=0) as sdk:
            yield sdk


@pytest.mark.parametrize("name", ["thinking_response.json", "citations_response.json", "cache_usage_response.json"])
def test_documented_messages_come_back_whole(
    client: anthropic.Anthropic, replay: tuple[Replay, str], name: str
) -> None:
    upstream, _ = replay
    upstream.answer = name
    raw = client.messages.with_raw_response.create(model="claude", **ASK)  # type: ignore[arg-type]
    assert orjson.loads(raw.http_response.content) == orjson.loads((FIXTURES / name).read_bytes())
    assert raw.headers["x-router-backend"] == "claude"
    usage = orjson.loads((FIXTURES / name).read_bytes())["usage"]
    cost = (
        usage["input_tokens"] * 3
        + usage["cache_creation_input_tokens"] * 3.75
        + usage["cache_read_input_tokens"] * 0.3
        + usage["output_tokens"] * 15
    ) / 1e6
    assert float(raw.headers["x-router-cost-usd"]) == pytest.approx(cost)
    assert upstream.seen[-1] == {**ASK, "model": "claude-sonnet-4-5"}


@pytest.mark.parametrize("name", ["stream_thinking.sse", "stream_tool_use.sse"])
def test_documented_streams_come_back_event_by_event(
    client: anthropic.Anthropic, replay: tuple[Replay, str], name: str
) -> None:
    upstream, _ = replay
    upstream.events = name
    with client.messages.with_streaming_response.create(model="claude", stream=True, **ASK) as response:  # type: ignore[arg-type]
        text = b"".join(response.iter_bytes())
    documented = [orjson.loads(data) for data in SSEDecoder().feed((FIXTURES / name).read_bytes())]
    assert [orjson.loads(data) for data in SSEDecoder().feed(text)] == documented
    kinds = [line.removeprefix(b"event: ").decode() for line in text.splitlines() if line.startswith(b"event: ")]
    assert kinds == [event["type"] for event in documented]  # each under its own event: line, as Anthropic frames it
