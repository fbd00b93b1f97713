"""Spend ledger in PostgreSQL (``policy.ledger.url: postgresql://...``): one ledger for a fleet of replicas.

The same rows and the same reads as ``router.ledger.Ledger`` (SQLite), behind the same interface:
``record`` (never waits), ``flush``, ``close``, ``spend``, ``totals``. One writer thread owns a
connection and inserts what was recorded every ``_GATHER_SECONDS`` in one transaction
(``ON CONFLICT DO NOTHING``: a row recorded twice is billed once). PostgreSQL down: rows stay in a
bounded buffer (``buffer_rows``; beyond it the oldest are dropped and counted) and the writer
retries every second; ``buffered`` is exported as ``llm_router_ledger_buffered_rows`` and ``dropped`` as
``llm_router_ledger_dropped_rows_total``.
Write-ahead, as in the SQLite ledger: ``begin`` queues a pending row (status 0, the estimate as
its cost) when an upstream call starts, and the final row replaces it in one transaction. A replica
killed with ``kill -9`` loses what was buffered, the last ``_GATHER_SECONDS`` when PostgreSQL is up;
the pending rows it had written are billed at their estimate by any replica once older than
``stale_after``. The schema is created, or migrated, at start under an advisory lock, so
replicas starting together do it once.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from router.ledger import (
    COLUMNS,
    Begun,
    Ended,
    GroupBy,
    LedgerRow,
    add_scope_totals,
    row_values,
    spend_entries,
    spend_sql,
)

log = logging.getLogger("router.ledger")

_GATHER_SECONDS = 0.2
_RETRY_SECONDS = 1.0
_LOCK_ID = 0x6C6C6D72  # pg_advisory_xact_lock key of schema migrations ("llmr")

#: Schema versions, applied in order; each runs once per database.
_MIGRATIONS = (
    """
    CREATE TABLE IF NOT EXISTS requests (
        ts DOUBLE PRECISION NOT NULL,
        request_id TEXT PRIMARY KEY,
        tenant TEXT,
        key TEXT,
        backend TEXT NOT NULL,
        tier TEXT NOT NULL,
        model TEXT NOT NULL,
        input_tokens BIGINT NOT NULL,
        output_tokens BIGINT NOT NULL,
        cost_usd DOUBLE PRECISION NOT NULL,
        estimated BOOLEAN NOT NULL,
        status INTEGER NOT NULL,
        latency_ms DOUBLE PRECISION NOT NULL,
        attempts INTEGER NOT NULL,
        fallback TEXT
    );
    CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts);
    """,
    # Write-ahead rows of upstream calls in progress (see ``begin``).
    "CREATE TABLE IF NOT EXISTS pending (LIKE requests INCLUDING ALL)",
    # Each request's decision inputs (JSON, no prompt text) for ``llm-router replay`` and ``calibrate``.
    "ALTER TABLE requests ADD COLUMN IF NOT EXISTS decision TEXT; ALTER TABLE pending ADD COLUMN IF NOT EXISTS decision TEXT",
)

_DAY_SQL = "to_char(to_timestamp(ts) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
_GROUP_SQL: dict[str, str] = {
    "tenant": "tenant", "key": "key", "backend": "backend", "tier": "tier", "model": "model", "status": "status",
    "day": _DAY_SQL, "month": "to_char(to_timestamp(ts) AT TIME ZONE 'UTC', 'YYYY-MM')",
}
_INSERT = f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))}) ON CONFLICT DO NOTHING"
_INSERT_PENDING = _INSERT.replace("INTO requests", "INTO pending", 1)
_CLEAR_PENDING = "DELETE FROM pending WHERE request_id = ANY(%s)"
#: Write-ahead rows older than the cutoff belong to calls no process can still be making: bill them.
_RECOVER = "WITH stale AS (DELETE FROM pending WHERE ts < %s RETURNING *) INSERT INTO requests SELECT * FROM stale ON CONFLICT DO NOTHING"
_RECOVER_EVERY = 30.0


class LedgerUnavailableError(RuntimeError):
    """PostgreSQL could not answer a read (the writer buffers and retries on its own)."""


class PostgresLedger:
    def __init__(self, url: str, *, buffer_rows: int = 100_000, stale_after: float = 3600.0) -> None:
        try:
            import psycopg
        except ImportError as exc:  # pragma: no cover - the extra is missing
            raise RuntimeError("a postgresql:// ledger needs psycopg: pip install 'llm-router[fleet]'") from exc
        self._psycopg = psycopg
        self.url = url
        self.path = "postgresql"  # never the URL: it may hold a password
        self.stats = {"written": 0, "duplicates": 0, "dropped": 0, "commits": 0}
        self._buffer: collections.deque[LedgerRow | Begun | Ended] = collections.deque()
        self._limit = buffer_rows
        #: A write-ahead row older than this belongs to a request that can no longer be running.
        self.stale_after = stale_after
        self._recovered_at = float("-inf")
        self._cond = threading.Condition()
        self._closed = False
        self._recorded = 0  # rows recorded since start
        self._done = 0  # rows committed or dropped since start
        self._conn: Any = None
        self._up = True
        self._migrated = False
        try:
            self._migrate()
        except psycopg.OperationalError as exc:  # PostgreSQL down at start: serve, and migrate once it is back
            log.error("ledger: PostgreSQL unreachable at start (%s); rows will be buffered", type(exc).__name__)
        self._thread = threading.Thread(target=self._run, name="llm-router-ledger-pg", daemon=True)
        self._thread.start()

    @property
    def buffered(self) -> int:
        """Rows recorded and not yet committed."""
        return len(self._buffer)

    def record(self, row: LedgerRow) -> None:
        if not self._put(row):
            log.error("ledger is closed; spend not recorded: %r", row)

    def _put(self, item: LedgerRow | Begun | Ended) -> bool:
        with self._cond:
            if self._closed:
                return False
            self._buffer.append(item)
            self._recorded += 1
            self._trim()
            return True

    def begin(self, row: LedgerRow) -> None:
        """Queue the write-ahead row of a request whose upstream call starts: ``record`` replaces it;
        left by a process that died, it is billed as it is once older than ``stale_after``."""
        self._put(Begun(row))

    def discard(self, request_id: str) -> None:
        """The request ended with nothing to bill: drop its write-ahead row."""
        self._put(Ended(request_id))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every row recorded so far is committed; False on timeout (e.g. PostgreSQL is down)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._recorded
            self._cond.notify_all()
            while self._done < target:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left if left is not None else 1.0)
        return True

    def close(self, timeout: float | None = 10.0) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._conn is not None and not self._thread.is_alive():
            self._conn.close()
            self._conn = None
        if self._buffer:
            log.error("ledger: %d rows could not be written to PostgreSQL before shutdown", len(self._buffer))

    def spend(self, *, since: float | None = None, group_by: Sequence[GroupBy] = ("tenant", "backend", "day")) -> list[dict[str, Any]]:
        """Requests, tokens and USD per group (``day``/``month`` in UTC), ordered by the groups."""
        sql = spend_sql(_GROUP_SQL, group_by, "%s")
        return spend_entries(group_by, self._query(sql, (float("-inf") if since is None else since,)))

    def totals(self, since: float) -> dict[tuple[str, str | None], float]:
        """USD spent since ``since`` per budget scope: ``("global", None)``, ``("tenant", name)``, ``("key", name)``."""
        out: dict[tuple[str, str | None], float] = {("global", None): 0.0}
        sql = "SELECT tenant, key, SUM(cost_usd) FROM requests WHERE ts >= %s GROUP BY tenant, key"
        add_scope_totals(out, self._query(sql, (since,)))
        return out

    # -- internals --------------------------------------------------------------------------------

    def _query(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            if not self._migrated:
                self._migrate()
            with self._psycopg.connect(self.url, connect_timeout=5) as conn:
                return list(conn.execute(sql, args))
        except self._psycopg.OperationalError as exc:
            raise LedgerUnavailableError(f"the PostgreSQL ledger is unreachable ({type(exc).__name__})") from exc

    def _migrate(self) -> None:
        with self._psycopg.connect(self.url, connect_timeout=5) as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
            conn.execute("CREATE TABLE IF NOT EXISTS ledger_schema (version INTEGER NOT NULL)")
            row = conn.execute("SELECT max(version) FROM ledger_schema").fetchone()
            current = row[0] or 0 if row else 0
            for version, sql in enumerate(_MIGRATIONS, start=1):
                if version > current:
                    conn.execute(sql)
                    conn.execute("INSERT INTO ledger_schema VALUES (%s)", (version,))
        self._migrated = True

    @property
    def dropped(self) -> int:
        """Rows dropped since start because the buffer was full while PostgreSQL was down."""
        return self.stats["dropped"]

    def _trim(self) -> None:
        """Drop the oldest rows beyond the buffer's bound (counted in ``stats["dropped"]``, logged). Under the lock."""
        over = len(self._buffer) - self._limit
        if over <= 0:
            return
        for _ in range(over):
            self._buffer.popleft()
        self._done += over
        self.stats["dropped"] += over
        log.error("ledger: buffer full (%d rows) while PostgreSQL is unreachable; %d oldest rows dropped, "
                  "their spend is not recorded (%d dropped since start)", self._limit, over, self.stats["dropped"])

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._closed:
                    self._cond.wait(_GATHER_SECONDS)
                batch = list(self._buffer)
                self._buffer.clear()
                closing = self._closed
            written = not batch or self._write(batch)  # (stale write-ahead rows are billed with a batch)
            with self._cond:
                if written:
                    self._done += len(batch)
                    self._cond.notify_all()
                else:  # back in front of what was recorded meanwhile, oldest dropped first if over the bound
                    self._buffer.extendleft(reversed(batch))
                    self._trim()
            if closing and (written or not batch):
                return
            if not written:
                if closing:
                    return
                time.sleep(_RETRY_SECONDS)

    def _write(self, items: list[LedgerRow | Begun | Ended]) -> bool:
        """Write a batch in one transaction, in order: write-ahead rows, final rows, then clear the
        write-ahead rows of requests that ended; now and then bill stale write-ahead rows."""
        psycopg = self._psycopg
        rows = [item for item in items if isinstance(item, LedgerRow)]
        begun = [item.row for item in items if isinstance(item, Begun)]
        ended = [item.request_id for item in items if isinstance(item, Ended)] + [row.request_id for row in rows]
        recover = time.monotonic() - self._recovered_at > _RECOVER_EVERY
        try:
            if not self._migrated:
                self._migrate()
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self.url, connect_timeout=5)
            with self._conn.transaction(), self._conn.cursor() as cursor:
                if begun:
                    cursor.executemany(_INSERT_PENDING, [row_values(row) for row in begun])
                inserted = 0
                if rows:
                    cursor.executemany(_INSERT, [row_values(row) for row in rows])
                    inserted = cursor.rowcount
                if ended:
                    cursor.execute(_CLEAR_PENDING, (ended,))
                if recover:
                    cursor.execute(_RECOVER, (time.time() - self.stale_after,))
        except psycopg.Error as exc:
            if self._up:
                self._up = False
                log.error("ledger: PostgreSQL unreachable (%s); %d rows buffered, retrying every second",
                          type(exc).__name__, len(self._buffer))
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            return False
        if recover:
            self._recovered_at = time.monotonic()
        if not self._up:
            self._up = True
            log.warning("ledger: PostgreSQL reachable again; buffered rows written")
        self.stats["written"] += max(inserted, 0)
        self.stats["commits"] += 1
        return True
