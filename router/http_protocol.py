"""uvicorn's httptools protocol, with the writes of one event-loop turn sent as one.

uvicorn writes a response's status line and headers as soon as the app sends
``http.response.start`` and the body as a second write, so every small JSON answer costs two
``send`` syscalls and reaches the client as two segments: two wake-ups of the client, and on this
machine about three times the server CPU of a single write. Here the writes made during one turn of
the event loop are joined and sent at its end (``loop.call_soon``), which is when they would have
left anyway: nothing is held back longer than the current turn, so streamed chunks still go out
one by one as they arrive. A response's last write goes out at once, without waiting for the turn
to end.

It also holds clients to the ``server`` limits of the gateway's config (read when a connection
opens, so a reload applies to new connections): a request head over ``max_header_bytes`` or with
more than ``max_headers`` fields gets 431, and a client that takes longer than
``header_timeout_seconds`` to send a head (counted from connecting, or from the head's first byte
on a kept-alive connection) or ``body_timeout_seconds`` to send the body after it gets 408; each
closes the connection. The timers only run while a request is incomplete after a read, so a request
that arrives whole costs none.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from router.config import ServerConfig

#: How long a connection refused with an error answer keeps reading (and dropping) before it closes.
_LINGER_SECONDS = 2.0
#: For ``uvicorn.run(http=...)``: an import string, so spawned workers can load it too.
PROTOCOL = "router.http_protocol:CoalescingHttpToolsProtocol"


class CoalescingTransport:
    """A transport whose ``write`` calls within one loop turn leave as one write."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self._pending is None:
            self._pending = [data]
            self._loop.call_soon(self.flush)
        else:
            self._pending.append(data)

    def flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def __getattr__(self, name: str) -> Any:  # the rest of the transport API, unchanged
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    _limits: ServerConfig
    #: Bytes of the request head read so far; -1 once the head is complete, until the body is.
    _head_bytes: int
    #: The running header or body timer, if any.
    _deadline: asyncio.TimerHandle | None
    #: Answered with an error and closing: whatever else arrives is dropped.
    _refused: bool

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = CoalescingTransport(transport, self.loop)  # type: ignore[assignment]
        self._limits = _server_config(self.app)
        self._head_bytes = 0
        self._refused = False
        self._deadline = self.loop.call_later(self._limits.header_timeout_seconds, self._timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering after an error answer: dropped unread
        if self._head_bytes >= 0:
            self._head_bytes += len(data)
        HttpToolsProtocol.data_received(self, data)  # not super(): this runs for every read
        head_bytes = self._head_bytes
        if not head_bytes:
            if self.scope is self.cycle.scope:
                return  # nearly always: the whole request came in this read, and nothing after it
            # A pipelined request began after the one that ended in this read; its bytes so far
            # went uncounted (at most this read), but its time starts now.
            head_bytes = self._head_bytes = 1
        if self._refused or self.transport.is_closing():
            return
        limits = self._limits
        if head_bytes > limits.max_header_bytes:
            self._refuse_head(f"Request headers exceed the limit of {limits.max_header_bytes} bytes.")
        elif self._deadline is None:  # a request is incomplete after this read: time it
            timeout = limits.header_timeout_seconds if head_bytes > 0 else limits.body_timeout_seconds
            self._deadline = self.loop.call_later(timeout, self._timed_out)

    def on_headers_complete(self) -> None:
        limits = self._limits
        if len(self.headers) > limits.max_headers:
            self._refuse_head(f"Request has more than {limits.max_headers} header fields.")
            return
        if self._head_bytes > limits.max_header_bytes and _head_size(self.url, self.headers) > limits.max_header_bytes:
            self._refuse_head(f"Request headers exceed the limit of {limits.max_header_bytes} bytes.")
            return
        self._head_bytes = -1
        if self._deadline is not None:
            self._cancel_deadline()
        HttpToolsProtocol.on_headers_complete(self)

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            HttpToolsProtocol.on_body(self, body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._head_bytes = 0
        if self._deadline is not None:
            self._cancel_deadline()
        HttpToolsProtocol.on_message_complete(self)

    def on_response_complete(self) -> None:
        # A finished response leaves at once: work the app does after its last send (accounting)
        # must not hold it back until the end of the turn.
        self.transport.flush()  # type: ignore[attr-defined]
        super().on_response_complete()

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _refuse_head(self, message: str) -> None:
        self._reject(431, "request_header_fields_too_large", message)

    def _timed_out(self) -> None:
        self._deadline = None
        limits, cycle = self._limits, self.cycle
        if self._head_bytes < 0:
            self._reject(408, "request_timeout",
                         f"The client did not send the request body within {limits.body_timeout_seconds:g} s.")
        elif cycle is not None and not cycle.response_complete:
            # A pipelined head behind an answer still on its way: its time starts when that ends.
            self._deadline = self.loop.call_later(limits.header_timeout_seconds, self._timed_out)
        else:
            self._reject(408, "request_timeout",
                         f"The client did not send the request headers within {limits.header_timeout_seconds:g} s.")

    def _reject(self, status: int, code: str, message: str) -> None:
        """Answer ``status`` with an OpenAI-shaped error and close; the app (if running) sees a disconnect.

        The answer is only written where it cannot mix with another: not after the app started to
        answer the request, nor ahead of an earlier pipelined request's answer (those just close).
        """
        self._refused = True
        self._cancel_deadline()
        cycle = self.cycle
        if cycle is None or cycle.response_complete or (self._head_bytes < 0 and not cycle.response_started):
            body = orjson.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}})
            head = [STATUS_LINE[status]]
            head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
            head.append(b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body))
            self.transport.write(b"".join(head) + body)
            self.transport.flush()  # type: ignore[attr-defined]
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # as uvicorn marks it when the connection is lost
            cycle.message_event.set()
        # Lingering close: what the client still sends is read and dropped for a moment, as closing a
        # socket with unread data would reset the connection and lose the answer on the way.
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(_LINGER_SECONDS, self.transport.close)


def _server_config(app: Any) -> ServerConfig:
    """The ``server`` settings of the gateway app being served, through uvicorn's wrappers; the
    defaults for any other app (the simulator)."""
    while app is not None:
        config = getattr(app, "server_config", None)
        if isinstance(config, ServerConfig):
            return config
        app = getattr(app, "app", None)
    return ServerConfig()


def _head_size(url: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    """The size of a request head as sent, near enough: request line and ``name: value`` lines."""
    return len(url) + 16 + sum(len(name) + len(value) + 4 for name, value in headers)
