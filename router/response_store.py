"""Stored Responses: what ``store: true`` keeps so ``previous_response_id`` follow-ups and tool loops work.

One SQLite row per stored response: the response object (for ``GET /v1/responses/{id}``) and the
conversation's items up to and including its output (for the follow-up, which appends its own
input). Rows belong to an owner (the client key's tenant, else the key's name): another owner's id
reads as missing. Rows expire after ``ttl_seconds``; expired rows are deleted as they are met and
in a sweep every ``_SWEEP_EVERY`` writes.

Calls run on the event loop: a primary-key read or an insert in WAL mode with ``synchronous=NORMAL``
(no fsync per commit) takes tens of microseconds, less than a hop to a thread, and a follow-up sent
right after its answer must see the row. Several workers may share one file (the busy timeout makes
a writer wait for another's transaction).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

import orjson

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires REAL NOT NULL,
    response BLOB NOT NULL,
    items BLOB NOT NULL
)
"""
_SWEEP_EVERY = 1000
_BUSY_TIMEOUT = 5.0


class ResponseStore:
    def __init__(self, path: str | None, ttl_seconds: float, clock: Callable[[], float] = time.time) -> None:
        """``path`` None keeps the responses in this process's memory (lost on restart, not shared by workers).

        The database opens on first use: a gateway that never serves ``/v1/responses`` creates no file.
        """
        self.ttl_seconds = ttl_seconds
        self._path = path
        self._clock = clock
        self._connection: sqlite3.Connection | None = None
        self._writes = 0

    @property
    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            db = sqlite3.connect(self._path or ":memory:", timeout=_BUSY_TIMEOUT, check_same_thread=False,
                                 isolation_level=None)
            if self._path:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
            self._connection = db
        return self._connection

    def put(self, owner: str, response: dict[str, Any], items: list[dict[str, Any]]) -> None:
        """Keep ``response`` and the conversation ``items`` it ends (input so far plus its output)."""
        self._db.execute(
            "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?)",
            (response["id"], owner, self._clock() + self.ttl_seconds, orjson.dumps(response), orjson.dumps(items)),
        )
        self._writes += 1
        if self._writes % _SWEEP_EVERY == 0:
            self._db.execute("DELETE FROM responses WHERE expires < ?", (self._clock(),))

    def _row(self, owner: str, response_id: str, column: str) -> Any:
        row = self._db.execute(
            f"SELECT {column}, expires FROM responses WHERE id = ? AND owner = ?", (response_id, owner)
        ).fetchone()
        if row is None:
            return None
        if row[1] < self._clock():
            self._db.execute("DELETE FROM responses WHERE id = ?", (response_id,))
            return None
        return orjson.loads(row[0])

    def response(self, owner: str, response_id: str) -> dict[str, Any] | None:
        """The stored response object, or None (unknown, expired, or another owner's)."""
        found: dict[str, Any] | None = self._row(owner, response_id, "response")
        return found

    def items(self, owner: str, response_id: str) -> list[dict[str, Any]] | None:
        """The conversation items a follow-up of ``response_id`` continues, or None."""
        found: list[dict[str, Any]] | None = self._row(owner, response_id, "items")
        return found

    def delete(self, owner: str, response_id: str) -> bool:
        cursor = self._db.execute("DELETE FROM responses WHERE id = ? AND owner = ?", (response_id, owner))
        return cursor.rowcount > 0

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
