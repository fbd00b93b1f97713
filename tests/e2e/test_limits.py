"""The gateway's own limits, end to end: request heads, slow clients, and work per request."""

from __future__ import annotations

import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import orjson
import pytest
from starlette.types import Receive, Scope, Send

from router.app import create_app
from router.config import load_config
from tests.e2e.conftest import CLIENT_KEY, ENV, Stack, write_config
from tests.servers import serve


@pytest.fixture(scope="module")
def limited(upstreams: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A gateway whose ``server`` limits are small enough to reach in a test."""
    mid_url, flagship_url = upstreams
    path = tmp_path_factory.mktemp("limited") / "router.yaml"
    write_config(path, mid_url, flagship_url)
    server = "server: {max_headers: 30, max_header_bytes: 16384, header_timeout_seconds: 1, body_timeout_seconds: 1}\n"
    path.write_text(path.read_text() + server)
    app = create_app(load_config(path, ENV), path=path, environ=ENV, watch=False)
    with serve(app) as url:
        yield Stack(url, mid_url, flagship_url, path)


def test_too_many_or_too_large_headers_are_a_431_the_sdk_reads(limited: Stack) -> None:
    messages = [{"role": "user", "content": "hi"}]
    many = limited.client(default_headers={f"x-extra-{i}": "1" for i in range(40)})
    with pytest.raises(openai.APIStatusError) as info:
        many.chat.completions.create(model="auto", messages=messages)  # type: ignore[arg-type]
    assert info.value.status_code == 431
    assert info.value.code == "request_header_fields_too_large" and "30 header fields" in info.value.message
    large = limited.client(default_headers={"x-blob": "b" * 20000})
    with pytest.raises(openai.APIStatusError) as info:
        large.chat.completions.create(model="auto", messages=messages)  # type: ignore[arg-type]
    assert info.value.status_code == 431
    assert limited.client().chat.completions.create(model="auto", messages=messages).choices  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("sent", "phase"),
    [(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n", "headers"),
     (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer %s\r\ncontent-length: 500\r\n\r\n"
      b'{"model":' % CLIENT_KEY.encode(), "body")],
)
def test_a_client_stalling_in_its_head_or_body_is_answered_408_and_closed(limited: Stack, sent: bytes, phase: str) -> None:
    host, port = limited.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(sent)
        received = b""
        while chunk := sock.recv(65536):  # until the gateway closes the connection
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408")
    error = orjson.loads(body)["error"]
    assert error["code"] == "request_timeout" and f"request {phase} within 1 s" in error["message"]


def test_limits_default_to_the_documented_values(tmp_path: Path) -> None:
    path = tmp_path / "router.yaml"
    write_config(path, "http://127.0.0.1:1", "http://127.0.0.1:2")
    server = load_config(path, ENV).server
    assert (server.max_header_bytes, server.max_headers) == (64 * 1024, 100)
    assert (server.header_timeout_seconds, server.body_timeout_seconds) == (10.0, 60.0)


def big_prompt(numbers: bool) -> bytes:
    """A chat request of about 4 MiB: card-like numbers that all fail the Luhn check, or plain prose."""
    if numbers:
        text = " ".join(f"card 4000{i:011d}{(i * 7) % 10} ok" for i in range(4 * 1024 * 1024 // 26))
    else:
        text = "the quick brown fox jumps over the lazy dog " * (4 * 1024 * 1024 // 44)
    return orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": text}]})


def healthy_latencies_while(stack: Stack, body: bytes, rounds: int = 2, concurrent: int = 4) -> list[float]:
    """Latencies of small requests sent one after another while ``concurrent`` copies of ``body`` are handled."""
    client = stack.client()
    latencies: list[float] = []
    statuses: list[int] = []

    def big() -> None:
        with httpx.Client(timeout=120) as http:
            response = http.post(f"{stack.url}/v1/chat/completions", content=body,
                                 headers={"authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"})
            statuses.append(response.status_code)

    for _ in range(rounds):
        threads = [threading.Thread(target=big) for _ in range(concurrent)]
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            started = time.perf_counter()
            client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "What time do you open?"}])
            latencies.append(time.perf_counter() - started)
        for thread in threads:
            thread.join()
    assert len(statuses) == rounds * concurrent  # every one was answered (with whatever status)
    return latencies


def test_a_healthy_request_keeps_its_latency_while_prompts_full_of_number_like_strings_are_classified(gateway: Stack) -> None:
    """Prompts of card-like numbers cost the event loop about what prose of the same size costs.

    The mean is compared, not the median: most healthy requests are sent while the big bodies are
    still on their way and never wait, so the few that queue behind a classification carry the
    difference. Before the scan was bounded, each prompt of numbers held the loop for seconds (the
    mean healthy request waited some 25 times longer than behind prose).
    """
    prose = statistics.fmean(healthy_latencies_while(gateway, big_prompt(numbers=False)))
    numbers = statistics.fmean(healthy_latencies_while(gateway, big_prompt(numbers=True)))
    assert numbers < 5 * prose, (numbers, prose)


async def endless_upstream(scope: Scope, receive: Receive, send: Send) -> None:
    """An OpenAI-compatible upstream gone wrong: a JSON answer that never ends, or a stream whose
    second event is a line that never ends (each stops at 128 MB, or when the gateway hangs up)."""
    if scope["type"] != "http":
        return
    body, more = b"", True
    while more:
        message = await receive()
        body, more = body + message.get("body", b""), message.get("more_body", False)
    stream = bool(orjson.loads(body).get("stream"))
    content_type = b"text/event-stream" if stream else b"application/json"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", content_type)]})
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "sim-mid-7b",
             "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": None}]}
    first = b"data: " + orjson.dumps(chunk) + b'\n\ndata: {"choices": "' if stream else b'{"choices": ['
    await send({"type": "http.response.body", "body": first, "more_body": True})
    for _ in range(2000):
        await send({"type": "http.response.body", "body": b"x" * 65536, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


@pytest.fixture(scope="module")
def endless(upstreams: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A gateway whose mid backend is ``endless_upstream``, with small caps, and the flagship as its fallback."""
    _, flagship_url = upstreams
    with serve(endless_upstream) as mid_url:
        path = tmp_path_factory.mktemp("endless") / "router.yaml"
        write_config(path, mid_url, flagship_url, policy="  fallback: {mid: [flagship]}\n")
        caps = "    max_response_bytes: 1048576\n    max_event_bytes: 65536\n"
        path.write_text(path.read_text().replace("    model: sim-mid-7b\n", "    model: sim-mid-7b\n" + caps))
        app = create_app(load_config(path, ENV), path=path, environ=ENV, watch=False)
        with serve(app) as url:
            yield Stack(url, mid_url, flagship_url, path)


def test_an_endless_answer_is_cut_at_max_response_bytes_and_fails_over(endless: Stack) -> None:
    raw = endless.client().chat.completions.with_raw_response.create(
        model="mid", messages=[{"role": "user", "content": "hello"}])
    assert raw.headers["x-router-backend"] == "flagship"
    assert raw.headers["x-router-fallback"] == "mid->flagship; reason=malformed"
    assert raw.parse().choices[0].message.content


def test_a_stream_whose_line_never_ends_ends_with_an_error_event_after_the_first_token(endless: Stack) -> None:
    stream = endless.client().chat.completions.create(
        model="mid", messages=[{"role": "user", "content": "hello"}], stream=True)
    received: list[str] = []
    with pytest.raises(openai.APIError, match="max_event_bytes"):
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert received == ["Hi"]
