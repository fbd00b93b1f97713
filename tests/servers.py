"""Run an ASGI app as a real uvicorn server on loopback, in a background thread.

Real sockets matter for streaming and disconnect tests: ``httpx.ASGITransport`` buffers whole
bodies and never reports a client going away.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.types import ASGIApp

from router.cli import SERVER_OPTIONS


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (``serve`` itself binds port 0 instead)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serve(app: ASGIApp, *, port: int = 0, timeout: float = 10.0) -> Iterator[str]:
    """Serve ``app`` until the block ends and yield its base URL, e.g. ``http://127.0.0.1:54321``.

    Returns once the socket is listening. On exit it asks uvicorn to shut down gracefully (lifespan
    shutdown runs), and forces it after ``timeout`` seconds if a response is still in progress.
    """
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        loop="asyncio",
        **SERVER_OPTIONS,  # the gateway's own protocol (coalesced writes) and no WebSocket stack
        lifespan="on",
        log_level="warning",
        log_config=None,  # leave logging to pytest, which captures records from every thread
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{id(app):x}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(timeout)
            raise RuntimeError(f"uvicorn did not start on 127.0.0.1:{port}")
        time.sleep(0.01)
    bound: int = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout)
