"""The server protocol: writes of one event-loop turn leave as one, and nothing waits longer."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from router.config import ServerConfig
from router.http_protocol import CoalescingTransport
from tests.servers import serve


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 7


async def test_writes_in_one_turn_leave_as_one_write_at_its_end() -> None:
    raw = RecordingTransport()
    transport = CoalescingTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(b"")
    transport.write(b"{}")
    assert raw.writes == []
    await asyncio.sleep(0)
    assert raw.writes == [b"HTTP/1.1 200 OK\r\n\r\n{}"]
    transport.write(b"next turn")
    await asyncio.sleep(0)
    assert raw.writes[1:] == [b"next turn"]


async def test_close_sends_what_is_pending_first_and_a_closed_transport_gets_nothing() -> None:
    raw = RecordingTransport()
    transport = CoalescingTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"last words")
    transport.close()
    assert raw.writes == [b"last words"] and raw.closed
    transport.write(b"too late")
    await asyncio.sleep(0)
    assert raw.writes == [b"last words"]
    assert transport.get_write_buffer_size() == 7  # the rest of the API is the transport's


def test_a_streamed_chunk_is_not_held_back_until_the_next() -> None:
    """Over a real server: the client reads the first chunk while the app still waits to send the second."""
    first_seen = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"first;", "more_body": True})
        released = await asyncio.to_thread(first_seen.wait, 5)
        await send({"type": "http.response.body", "body": b"second" if released else b"timeout"})

    with serve(app) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            received = b""
            while b"first;" not in received:
                received += sock.recv(4096)
            first_seen.set()
            while not received.endswith(b"0\r\n\r\n"):
                received += sock.recv(4096)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"second" in body and b"timeout" not in body


def test_pipelined_requests_get_their_answers_in_order() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = scope["path"].encode()
        headers: list[Any] = [(b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    with serve(app) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(b"".join(b"GET /%d HTTP/1.1\r\nhost: x\r\n\r\n" % i for i in range(3)))
            received = b""
            while received.count(b"HTTP/1.1 200") < 3 or not received.endswith(b"/2"):
                received += sock.recv(4096)
    assert [part.rsplit(b"\r\n\r\n", 1)[-1][:2] for part in received.split(b"HTTP/1.1 200")[1:]] == [b"/0", b"/1", b"/2"]


def test_a_finished_response_leaves_before_the_app_returns() -> None:
    """Work after the last send (accounting) does not hold the answer back until the turn ends."""
    answer_seen = threading.Event()
    seen_while_app_ran: list[bool] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})
        seen_while_app_ran.append(answer_seen.wait(2))  # blocks the event loop, as busy work would

    with serve(app) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            received = b""
            while not received.endswith(b"\r\n\r\nok"):
                received += sock.recv(4096)
            answer_seen.set()
            sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")  # served after the first app returned
            while received.count(b"\r\n\r\nok") < 2:
                received += sock.recv(4096)
    assert seen_while_app_ran[0] is True


class LimitedApp:
    """An app with the ``server`` settings the protocol reads from the gateway's app; echoes the body."""

    def __init__(self, delay: float = 0.0, **limits: Any) -> None:
        self.server_config = ServerConfig(**limits)
        self.disconnects = 0
        self.delay = delay

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnects += 1
                return
            body, more = body + message.get("body", b""), message.get("more_body", False)
        await asyncio.sleep(self.delay)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})


def exchange(url: str, *parts: bytes, pause: float = 0.0) -> bytes:
    """Send ``parts`` (``pause`` seconds apart) and read until the server closes the connection."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        for part in parts:
            sock.sendall(part)
            time.sleep(pause)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def error_of(received: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = received.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    return int(head.split()[1]), orjson.loads(body)["error"]


def test_a_head_over_max_header_bytes_is_refused_with_431_before_it_ends() -> None:
    app = LimitedApp(max_header_bytes=8192)
    with serve(app) as url:
        # 1 MB of one header, never finished: refused once past the limit, not buffered to the end.
        received = exchange(url, b"GET / HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 1_000_000)
    status, error = error_of(received)
    assert status == 431 and error["type"] == "invalid_request_error"
    assert error["code"] == "request_header_fields_too_large" and "8192 bytes" in error["message"]


def test_more_headers_than_max_headers_are_refused_with_431() -> None:
    app = LimitedApp(max_headers=20)
    with serve(app) as url:
        def request(fields: int) -> bytes:  # ``fields`` header fields in all
            extra = b"".join(b"x-h%d: v\r\n" % i for i in range(fields - 2))
            return b"POST / HTTP/1.1\r\nconnection: close\r\ncontent-length: 2\r\n" + extra + b"\r\nhi"

        ok = exchange(url, request(20))
        refused = exchange(url, request(21))
    assert ok.startswith(b"HTTP/1.1 200") and ok.endswith(b"\r\n\r\nhi")
    status, error = error_of(refused)
    assert status == 431 and error["message"] == "Request has more than 20 header fields."


def test_a_head_within_the_limit_is_served_though_its_body_came_in_the_same_read() -> None:
    app = LimitedApp(max_header_bytes=4096)
    body = b"b" * 200_000
    request = b"POST / HTTP/1.1\r\nconnection: close\r\ncontent-length: %d\r\nx-pad: %s\r\n\r\n" % (len(body), b"p" * 3900)
    with serve(app) as url:
        received = exchange(url, request + body)
    assert received.startswith(b"HTTP/1.1 200") and received.endswith(body)


def test_a_client_that_never_finishes_its_head_or_sends_nothing_is_answered_408_and_closed() -> None:
    app = LimitedApp(header_timeout_seconds=0.3)
    with serve(app) as url:
        partial = exchange(url, b"POST / HTTP/1.1\r\nhost: x\r\ncontent-")
        silent = exchange(url)
    status, error = error_of(partial)
    assert status == 408 and error["code"] == "request_timeout" and "headers" in error["message"]
    assert error_of(silent)[0] == 408


def test_a_client_that_sends_its_head_but_not_its_body_is_answered_408_and_closed() -> None:
    app = LimitedApp(body_timeout_seconds=0.3)
    with serve(app) as url:
        received = exchange(url, b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n", b"only part")
    status, error = error_of(received)
    assert status == 408 and "body" in error["message"]
    assert app.disconnects == 1  # the app waiting for the body was told the client is gone


def test_a_slow_client_within_the_timeouts_is_served_on_a_kept_alive_connection() -> None:
    app = LimitedApp(header_timeout_seconds=1.0, body_timeout_seconds=1.0)
    request = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n\r\nslow"
    with serve(app) as url:
        # Each request trickles in over about 0.5 s, both on one connection (1.5 s in all): the
        # timers run per request, so the connection's age does not count against the second one.
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            for part in [request[:10], request[10:30], request[30:]] * 2:
                sock.sendall(part)
                time.sleep(0.25)
            received = b""
            while received.count(b"slow") < 2:
                received += sock.recv(65536)
    assert received.count(b"HTTP/1.1 200") == 2


def test_a_pipelined_head_that_stalls_behind_a_slow_answer_gets_its_408_after_that_answer() -> None:
    app = LimitedApp(delay=1.0, header_timeout_seconds=0.3)
    with serve(app) as url:
        received = exchange(url, b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n\r\nslow" + b"POST / HTTP/1.1\r\nho")
    first, _, second = received.partition(b"slow")
    assert first.startswith(b"HTTP/1.1 200") and second.startswith(b"HTTP/1.1 408")
