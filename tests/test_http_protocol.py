"""The server protocol: writes of one event-loop turn leave as one, and nothing waits longer."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

from starlette.types import Receive, Scope, Send

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
