"""Run a benchmark process's main coroutine on uvloop when it is importable (it is with uvicorn[standard])."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine
from typing import Any


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` to completion; SIGTERM and Ctrl-C end it quietly (the runner stops servers with SIGTERM)."""
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):
        runner(main)
