"""Stored Responses: what ``store: true`` keeps so ``previous_response_id`` follow-ups and tool loops work.

One SQLite row per stored response: the response object (for ``GET /v1/responses/{id}``) and the
conversation's items up to and including its output (for the follow-up, which appends its own
input). Rows belong to an owner (the client key's tenant, else the key's name): another owner's id
reads as missing. Rows expire after ``ttl_seconds``: expired rows read as missing and are deleted in a
sweep after every ``_SWEEP_EVERY`` writes (through an index on the expiry time: the sweep's cost does not grow
with the table).

Writes leave the event loop: ``put`` and ``delete`` queue the change for one writer thread (which
commits whatever is queued in one transaction) and keep it in ``_pending`` until it is written, so a
follow-up sent right after its answer finds the response (and a deleted one stays gone). Reads look
at ``_pending`` first, then run a primary-key lookup on the loop (tens of microseconds). Several workers may share one file (WAL; the
busy timeout makes a writer wait for another's transaction); another worker sees a response once
it is written, within about ``_GATHER_SECONDS`` of the answer: an id minted less than
``_VISIBLE_WITHIN`` seconds ago that is not found yet is looked up again until then (ids start with the
time they were minted, in milliseconds), so a follow-up sent at once through another worker finds it.

Each row also keeps the tier that answered, so a follow-up stays on the conversation's tier whichever
worker or replica serves it (``Stored.tier``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import operator
import queue
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from router import sqlite_rows, sqlite_wal
from router.shared import StateUnavailableError

if TYPE_CHECKING:
    from router.shared.redis import RedisStore

log = logging.getLogger("router.response_store")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires REAL NOT NULL,
    response BLOB NOT NULL,
    items BLOB NOT NULL,
    tier TEXT
);
CREATE INDEX IF NOT EXISTS responses_expires ON responses (expires);
"""
_SWEEP_EVERY = 1000
#: Rows per INSERT statement (six values each), within the oldest SQLite's limit of 999 parameters.
_ROWS_PER_INSERT = 166
#: ``_INSERTS[k]``: the statement writing k rows, for the sizes ``sqlite_rows.parts`` cuts batches into.
_INSERTS = {
    k: "INSERT OR REPLACE INTO responses (id, owner, expires, response, items, tier) VALUES "
    + ", ".join(("(?, ?, ?, ?, ?, ?)",) * k)
    for k in sqlite_rows.sizes(_ROWS_PER_INSERT)
}
_BUSY_TIMEOUT = 5.0
_GATHER_SECONDS = 0.2
#: How long after its id was minted a response may still be on its way to another worker's (or replica's) view.
_VISIBLE_WITHIN = 1.0
_LOOK_AGAIN_EVERY = 0.02
_memory_names = itertools.count()

#: A queued change: ``("put", row)``, ``("delete", (id, owner))`` or ``("flush", event)``; None stops the writer.
_Change = tuple[str, Any] | None
#: id, owner, expires, response JSON, items JSON, tier.
_Row = tuple[str, str, float, bytes, bytes, str | None]


class Stored(NamedTuple):
    """A stored response: the object as answered, its conversation's items, and the tier that answered."""

    response: dict[str, Any]
    items: list[dict[str, Any]]
    tier: str | None


def new_response_base() -> str:
    """32 hex digits for a new response id (``resp_<base>``): the time in milliseconds, then 80 random bits."""
    return f"{int(time.time() * 1000):012x}{secrets.token_hex(10)}"


def _minted_at(response_id: str) -> float | None:
    """When an id of ``new_response_base`` was minted (Unix seconds), or None for another id."""
    base = response_id.removeprefix("resp_")
    if len(base) != 32:
        return None
    try:
        return int(base[:12], 16) / 1000
    except ValueError:
        return None


class ResponseStore:
    #: With a fleet's Redis (``state.redis_url``): every stored response is also written there, and an id
    #: this process does not hold is looked up there, so any replica can serve a follow-up.
    shared: RedisStore | None = None

    def __init__(self, path: str | None, ttl_seconds: float, clock: Callable[[], float] = time.time) -> None:
        """``path`` None keeps the responses in this process's memory (lost on restart, not shared by workers).

        The database opens on first use: a gateway that never serves ``/v1/responses`` creates no file.
        """
        self.ttl_seconds = ttl_seconds
        self._path = Path(path).absolute() if path else None
        self._uri = self._path.as_uri() if self._path else f"file:responses-{next(_memory_names)}?mode=memory&cache=shared"
        self._clock = clock
        self._reader: sqlite3.Connection | None = None
        #: id -> the row being written, or None for a delete being written.
        self._pending: dict[str, _Row | None] = {}
        self._lock = threading.Lock()
        self._changes: queue.SimpleQueue[_Change] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._shared_writes: set[asyncio.Task[None]] = set()

    def _connect(self) -> sqlite3.Connection:
        if self._path is not None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self._uri, uri=True, timeout=_BUSY_TIMEOUT, check_same_thread=False, isolation_level=None)
        # A row (a response and its conversation) is a few KB: with 16 KB pages it rarely spills onto
        # overflow pages, and writing one costs about a quarter less. Only a new file takes it.
        db.execute("PRAGMA page_size=16384")
        if self._path is not None:
            sqlite_wal.set_wal(db, _BUSY_TIMEOUT)
        db.executescript(_SCHEMA)
        if "tier" not in {column[1] for column in db.execute("PRAGMA table_info(responses)")}:
            try:  # a file from before the column; another worker may be adding it at the same moment
                db.execute("ALTER TABLE responses ADD COLUMN tier TEXT")
            except sqlite3.OperationalError as exc:
                if "duplicate column" not in str(exc):
                    raise
        return db

    @property
    def _db(self) -> sqlite3.Connection:
        if self._reader is None:
            self._reader = self._connect()  # before the writer: an in-memory database lives while one is open
            self._writer = threading.Thread(
                target=self._write, args=(self._connect(),), name="response-store", daemon=True
            )
            self._writer.start()
        return self._reader

    def put(
        self, owner: str, response_id: str, response: bytes, items: list[dict[str, Any]], tier: str | None = None
    ) -> None:
        """Keep a response (its JSON, as answered: encoded once), the conversation ``items`` it ends
        (input so far plus its output) and the ``tier`` that answered it."""
        self._db  # noqa: B018 - opens the database and starts the writer on first use
        encoded = orjson.dumps(items)
        row = (response_id, owner, self._clock() + self.ttl_seconds, response, encoded, tier)
        with self._lock:
            self._pending[response_id] = row
        self._changes.put(("put", row))
        if self.shared is not None:
            value = b'{"owner":%s,"tier":%s,"response":%s,"items":%s}' % (
                orjson.dumps(owner), orjson.dumps(tier), response, encoded)
            task = asyncio.get_running_loop().create_task(self._share(self.shared, response_id, value.decode()))
            self._shared_writes.add(task)
            task.add_done_callback(self._shared_writes.discard)

    async def _share(self, shared: RedisStore, response_id: str, value: str) -> None:
        with contextlib.suppress(StateUnavailableError):  # this replica still has it
            await shared.response_set(response_id, value, self.ttl_seconds)

    async def find(self, owner: str, response_id: str) -> Stored | None:
        """The stored response, or None (unknown, expired, deleted, another owner's).

        With a fleet's store, what it says wins (a response deleted through another replica stays
        deleted); this process's store answers when it does not know the id (its copy may still be on
        the way) or cannot be reached. An id minted moments ago that is not found is looked up again
        for up to ``_VISIBLE_WITHIN`` seconds after it was minted: another worker may still be writing it.
        """
        found, known = await self._find(owner, response_id)
        minted = _minted_at(response_id)
        if found is not None or known or minted is None or self._path is None and self.shared is None:
            return found
        deadline = min(minted + _VISIBLE_WITHIN, time.time() + _VISIBLE_WITHIN)
        while found is None and not known and time.time() < deadline:
            await asyncio.sleep(_LOOK_AGAIN_EVERY)
            found, known = await self._find(owner, response_id)
        return found

    async def _find(self, owner: str, response_id: str) -> tuple[Stored | None, bool]:
        """The stored response or None, and whether the id is known (another owner's, or deleted)."""
        if self.shared is not None:
            try:
                value = await self.shared.response_get(response_id)
            except StateUnavailableError:
                value = None
            if value is not None:
                stored = orjson.loads(value)
                if stored.get("owner") != owner or stored.get("deleted"):
                    return None, True
                return Stored(stored["response"], stored["items"], stored.get("tier")), True
        if self._pending.get(response_id, ()) is None:
            return None, True  # deleted here, not yet written
        row = self._row(owner, response_id)
        if row is None:
            return None, False
        return Stored(orjson.loads(row[3]), orjson.loads(row[4]), row[5]), True

    async def remove(self, owner: str, response_id: str) -> bool:
        """Forget a response of ``owner``, here and (as a tombstone until it would have expired) in the
        fleet's store; False if there was none."""
        if await self.find(owner, response_id) is None:
            return False
        if self._row(owner, response_id) is not None:
            self.delete(owner, response_id)
        if self.shared is not None:
            tombstone = orjson.dumps({"owner": owner, "deleted": True}).decode()
            with contextlib.suppress(StateUnavailableError):
                await self.shared.response_set(response_id, tombstone, self.ttl_seconds)
        return True

    def _row(self, owner: str, response_id: str) -> tuple[Any, ...] | None:
        if response_id in self._pending:
            row: tuple[Any, ...] | None = self._pending[response_id]
        else:
            row = self._db.execute(
                "SELECT id, owner, expires, response, items, tier FROM responses WHERE id = ? AND owner = ?",
                (response_id, owner),
            ).fetchone()
        if row is None or row[1] != owner or row[2] < self._clock():
            return None
        return row

    def response(self, owner: str, response_id: str) -> dict[str, Any] | None:
        """The stored response object, or None (unknown, expired, or another owner's)."""
        row = self._row(owner, response_id)
        return None if row is None else orjson.loads(row[3])  # type: ignore[no-any-return]

    def items(self, owner: str, response_id: str) -> list[dict[str, Any]] | None:
        """The conversation items a follow-up of ``response_id`` continues, or None."""
        row = self._row(owner, response_id)
        return None if row is None else orjson.loads(row[4])  # type: ignore[no-any-return]

    def delete(self, owner: str, response_id: str) -> bool:
        """Forget a response of ``owner``; False if there was none."""
        if self._row(owner, response_id) is None:
            return False
        with self._lock:
            self._pending[response_id] = None
        self._changes.put(("delete", (response_id, owner)))
        return True

    def _write(self, db: sqlite3.Connection) -> None:
        """The writer thread: everything queued so far in one transaction, until ``close``."""
        writes = 0
        while True:
            changes = [self._changes.get()]
            if changes[0] is not None and changes[0][0] != "flush":
                # Let changes gather: one transaction (and one wake-up of this thread) per interval,
                # instead of a wake-up that competes with the event loop for every answer.
                time.sleep(_GATHER_SECONDS)
            while not self._changes.empty() and changes[-1] is not None:
                changes.append(self._changes.get())
            stop = changes[-1] is None
            written = [change for change in changes if change is not None and change[0] != "flush"]
            try:
                with db:
                    db.execute("BEGIN")
                    # Runs of puts and of deletes, in order. Puts go many rows to a statement: sqlite3 lets go of
                    # the GIL for every statement it steps, and each time the event loop has to hand it back
                    # (one statement per row cost a busy loop about a seventh of its throughput).
                    for kind, run in itertools.groupby(written, key=operator.itemgetter(0)):
                        rows = [args for _, args in run]
                        if kind == "delete":
                            db.executemany("DELETE FROM responses WHERE id = ? AND owner = ?", rows)
                            continue
                        for start, size in sqlite_rows.parts(len(rows), _ROWS_PER_INSERT):
                            db.execute(_INSERTS[size], list(itertools.chain(*rows[start : start + size])))
                        writes += len(rows)
                        if writes >= _SWEEP_EVERY:
                            writes = 0
                            db.execute("DELETE FROM responses WHERE expires < ?", (self._clock(),))
            except sqlite3.Error:
                log.exception("could not write %d stored-response changes", len(changes))
            with self._lock:  # written changes leave _pending, unless a newer one replaced them meanwhile
                for kind, args in written:
                    key, row = args[0], args if kind == "put" else None
                    if key in self._pending and self._pending[key] is row:
                        del self._pending[key]
            for change in changes:
                if change is not None and change[0] == "flush":
                    change[1].set()
            if stop:
                db.close()
                return

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued so far is written; False on timeout."""
        if self._writer is None:
            return True
        done = threading.Event()
        self._changes.put(("flush", done))
        return done.wait(timeout)

    def close(self) -> None:
        """Write what is queued, then close."""
        if self._writer is not None:
            self._changes.put(None)
            self._writer.join()
            self._writer = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
