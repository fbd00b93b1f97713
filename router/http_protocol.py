"""uvicorn's httptools protocol, with the writes of one event-loop turn sent as one.

uvicorn writes a response's status line and headers as soon as the app sends
``http.response.start`` and the body as a second write, so every small JSON answer costs two
``send`` syscalls and reaches the client as two segments: two wake-ups of the client, and on this
machine about three times the server CPU of a single write. Here the writes made during one turn of
the event loop are joined and sent at its end (``loop.call_soon``), which is when they would have
left anyway: nothing is held back longer than the current turn, so streamed chunks still go out
one by one as they arrive. A response's last write goes out at once, without waiting for the turn
to end.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

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
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = CoalescingTransport(transport, self.loop)  # type: ignore[assignment]

    def on_response_complete(self) -> None:
        # A finished response leaves at once: work the app does after its last send (accounting)
        # must not hold it back until the end of the turn.
        self.transport.flush()  # type: ignore[attr-defined]
        super().on_response_complete()
