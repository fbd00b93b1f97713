"""Open a SQLite file in WAL mode that several processes open at once (``serve --workers N``).

Switching a file to WAL takes an exclusive lock, and SQLite reports a competing switch as
``database is locked`` at once instead of waiting in its busy handler: the switch is retried here
until the connection's busy timeout.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

_RETRY_SECONDS = 0.01


def set_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """Put ``conn``'s file in WAL mode (``synchronous = NORMAL``: durable across process crashes, fast commits)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(_RETRY_SECONDS)
    conn.execute("PRAGMA synchronous = NORMAL")


def connect(path: str, *, timeout: float, **kwargs: Any) -> sqlite3.Connection:
    """``sqlite3.connect`` in autocommit mode, then ``set_wal``; the connection is closed if that fails."""
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, **kwargs)
    try:
        set_wal(conn, timeout)
    except BaseException:
        conn.close()
        raise
    return conn
