"""Spend ledger: one SQLite row per request, written off the hot path.

``record`` only enqueues (under a short lock shared with ``close``, which may run on another
thread: a row is either queued before the stop mark or reported as not recorded, never silently
lost). One writer thread per ``Ledger`` owns the connection: it takes
everything queued so far and inserts it in one transaction, so under load rows are batched
and the event loop never waits on the disk. Reads (``spend``, ``totals``) are queued behind
the rows recorded before them and run on the same thread, so a read sees every row recorded
before it; they block the caller (from the event loop, use ``asyncio.to_thread``).

Write-ahead: ``begin`` queues a *pending* row (status 0, the reserved estimate as its cost) when
a request's upstream call starts; ``record`` writes the final row and deletes the pending one in
the same transaction. Should the process die in between (``kill -9``, OOM), the pending row is
still there: once older than ``stale_after`` (longer than any request may run) any process
sharing the file moves it into ``requests`` as it is, so the call is billed at its estimate.
What a crash can lose is bounded by the writer's batching: rows queued in the last
``_GATHER_SECONDS`` (plus one commit) before it; a request that started and ended in that window
leaves no row at all.

Several processes may share one file: WAL lets readers run beside the one writer and the busy
timeout makes a writer wait for another's transaction instead of failing. ``request_id`` is
the primary key and inserts are ``INSERT OR IGNORE``, so a request recorded twice is billed
once. ``close`` writes everything still queued before it returns.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import astuple, dataclass, fields
from itertools import chain
from operator import attrgetter
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from router import sqlite_rows, sqlite_wal

log = logging.getLogger("router.ledger")

_T = TypeVar("_T")

GroupBy = Literal["tenant", "key", "backend", "tier", "model", "status", "day", "month"]

_GROUP_SQL: dict[str, str] = {
    "tenant": "tenant",
    "key": "key",
    "backend": "backend",
    "tier": "tier",
    "model": "model",
    "status": "status",
    "day": "strftime('%Y-%m-%d', ts, 'unixepoch')",
    "month": "strftime('%Y-%m', ts, 'unixepoch')",
}

_DAY = 86400
_BUSY_TIMEOUT = 5.0  # seconds a writer waits for another connection's transaction
#: How long the writer waits after a first row for more to arrive (reads and flushes do not wait).
_GATHER_SECONDS = 0.2
_BATCH = 1000  # most rows per transaction
_WRITE_TRIES = 3
_READ_TIMEOUT = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    ts REAL NOT NULL,
    request_id TEXT PRIMARY KEY,
    tenant TEXT,
    key TEXT,
    backend TEXT NOT NULL,
    tier TEXT NOT NULL,
    model TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    estimated INTEGER NOT NULL,
    status INTEGER NOT NULL,
    latency_ms REAL NOT NULL,
    attempts INTEGER NOT NULL,
    fallback TEXT,
    decision TEXT
);
CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts);
-- Write-ahead rows of requests under way (status 0); see the module docstring.
CREATE TABLE IF NOT EXISTS pending AS SELECT * FROM requests WHERE 0;
CREATE UNIQUE INDEX IF NOT EXISTS pending_id ON pending (request_id);
CREATE INDEX IF NOT EXISTS pending_ts ON pending (ts);
-- Spend per UTC day and budget scope, kept by a trigger in the same transaction as the rows, so
-- budgets read a handful of rows instead of summing every request of the month.
CREATE TABLE IF NOT EXISTS daily_spend (
    day TEXT NOT NULL,
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    cost_usd REAL NOT NULL,
    PRIMARY KEY (day, scope, name)
);
-- Shadow judging: one verdict per judged request (router.evaluate.shadow); its cost is not request spend.
CREATE TABLE IF NOT EXISTS shadow_verdicts (
    ts REAL NOT NULL,
    request_id TEXT PRIMARY KEY,
    rule TEXT NOT NULL,
    task TEXT NOT NULL,
    backend TEXT NOT NULL,
    judge TEXT NOT NULL,
    verdict TEXT NOT NULL,
    cost_usd REAL NOT NULL,
    simulated INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS shadow_verdicts_ts ON shadow_verdicts (ts);
CREATE TRIGGER IF NOT EXISTS requests_daily_spend AFTER INSERT ON requests BEGIN
    INSERT INTO daily_spend VALUES (strftime('%Y-%m-%d', NEW.ts, 'unixepoch'), 'global', '', NEW.cost_usd)
        ON CONFLICT DO UPDATE SET cost_usd = cost_usd + excluded.cost_usd;
    INSERT INTO daily_spend SELECT strftime('%Y-%m-%d', NEW.ts, 'unixepoch'), 'tenant', NEW.tenant, NEW.cost_usd
        WHERE NEW.tenant IS NOT NULL ON CONFLICT DO UPDATE SET cost_usd = cost_usd + excluded.cost_usd;
    INSERT INTO daily_spend SELECT strftime('%Y-%m-%d', NEW.ts, 'unixepoch'), 'key', NEW.key, NEW.cost_usd
        WHERE NEW.key IS NOT NULL ON CONFLICT DO UPDATE SET cost_usd = cost_usd + excluded.cost_usd;
END;
"""


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """One client request. ``ts`` is Unix time (UTC) when it finished; ``estimated`` says the
    cost comes from the token estimate because the upstream reported no usage."""

    ts: float
    request_id: str
    tenant: str | None
    key: str | None
    backend: str
    tier: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    estimated: bool
    status: int
    latency_ms: float
    attempts: int
    fallback: str | None
    #: The request's decision inputs as JSON (``router.evaluate.inputs``), for offline replay; no prompt text.
    decision: str | None = None


@dataclass(frozen=True, slots=True)
class VerdictRow:
    """A shadow judge's verdict on one request (``acceptable``, ``unacceptable`` or ``error``)."""

    ts: float
    request_id: str
    rule: str
    task: str
    backend: str
    judge: str
    verdict: str
    cost_usd: float
    #: The judge was the demo's simulator, not a model.
    simulated: bool


_VERDICT_COLUMNS = tuple(f.name for f in fields(VerdictRow))
_INSERT_VERDICT = (
    f"INSERT OR IGNORE INTO shadow_verdicts ({', '.join(_VERDICT_COLUMNS)}) VALUES ({', '.join('?' * len(_VERDICT_COLUMNS))})"
)
COLUMNS = tuple(f.name for f in fields(LedgerRow))
row_values = attrgetter(*COLUMNS)
_ESTIMATED = COLUMNS.index("estimated")
#: Rows per INSERT statement (the most whose parameters stay under SQLite's oldest limit of 999).
#: sqlite3 releases the GIL around each statement step: with one row per step (executemany), a
#: writer thread competing with a busy event loop waits for the GIL once per row.
_ROWS_PER_INSERT = 999 // len(COLUMNS)
_ROW = f"({', '.join('?' * len(COLUMNS))})"
#: ``_INSERTS[k]``: the statement inserting k rows, for the sizes ``sqlite_rows.parts`` cuts batches into.
_INSERTS = {
    k: f"INSERT OR IGNORE INTO requests ({', '.join(COLUMNS)}) VALUES {', '.join([_ROW] * k)}"
    for k in sqlite_rows.sizes(_ROWS_PER_INSERT)
}
_PENDING_INSERT = f"INSERT OR REPLACE INTO pending ({', '.join(COLUMNS)}) VALUES {_ROW}"
_PENDING_DELETE = "DELETE FROM pending WHERE request_id = ?"
_RECOVER = (
    f"INSERT OR IGNORE INTO requests ({', '.join(COLUMNS)}) SELECT {', '.join(COLUMNS)} FROM pending WHERE ts < ?",
    "DELETE FROM pending WHERE ts < ?",
)
#: Status of a write-ahead row: the request had not finished (or its process died first).
PENDING_STATUS = 0
#: How often the writer looks for write-ahead rows left by a process that died.
_RECOVER_EVERY = 30.0


class Begun:
    """A write-ahead row in the queue."""

    __slots__ = ("row",)

    def __init__(self, row: LedgerRow) -> None:
        self.row = row


class Ended:
    """A request that ended without a row to record: its write-ahead row goes."""

    __slots__ = ("request_id",)

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id


class SpendLedger(Protocol):
    """What the gateway needs of a spend ledger: ``Ledger`` (SQLite) and ``ledger_pg.PostgresLedger`` provide it.

    ``record`` never waits on storage; ``flush`` waits until what was recorded is stored (False on
    timeout); ``close`` stores what is left; the reads may block (call them off the event loop).
    """

    stats: dict[str, int]

    def record(self, row: LedgerRow) -> None: ...

    def begin(self, row: LedgerRow) -> None: ...

    def discard(self, request_id: str) -> None: ...

    def flush(self, timeout: float | None = None) -> bool: ...

    def close(self, timeout: float | None = None) -> None: ...

    def spend(self, *, since: float | None = None, group_by: Sequence[GroupBy] = ...) -> list[dict[str, Any]]: ...

    def totals(self, since: float) -> dict[tuple[str, str | None], float]: ...


class _Job:
    """A read (or a flush) run on the writer thread, after every row queued before it."""

    __slots__ = ("future", "run")

    def __init__(self, run: Callable[[sqlite3.Connection], Any]) -> None:
        self.run = run
        self.future: Future[Any] = Future()


_STOP = object()


class Ledger:
    def __init__(self, path: Path | str, *, stale_after: float = 3600.0) -> None:
        self.path = str(path)
        #: A write-ahead row older than this belongs to a request that can no longer be running.
        self.stale_after = stale_after
        self._recovered_at = float("-inf")
        #: Requests whose write-ahead row this ledger wrote and has not cleared yet (writer thread only).
        self._ahead: set[str] = set()
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        #: Rows inserted, rows ignored as already recorded, rows given up on, transactions committed.
        self.stats = {"written": 0, "duplicates": 0, "dropped": 0, "commits": 0}
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()  # nothing is queued after _STOP, even when close() runs on another thread
        ready: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="llm-router-ledger", daemon=True)
        self._thread.start()
        ready.result()  # raises if the database cannot be opened

    def record(self, row: LedgerRow) -> None:
        """Queue a row for writing; never waits for the disk."""
        if not self._put(row):
            log.error("ledger is closed; spend not recorded: %r", row)

    def begin(self, row: LedgerRow) -> None:
        """Queue the write-ahead row of a request whose upstream call starts (see the module docstring)."""
        self._put(Begun(row))

    def discard(self, request_id: str) -> None:
        """The request ended with nothing to bill (no upstream answered): drop its write-ahead row."""
        self._put(Ended(request_id))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every row recorded so far is committed (or given up on); False on timeout."""
        job = _Job(lambda conn: None)
        if not self._put(job):
            return True  # closed: close() writes everything
        try:
            job.future.result(timeout)
        except TimeoutError:
            return False
        return True

    def close(self, timeout: float | None = None) -> None:
        """Write everything queued, then close the database. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("ledger writer still busy after %ss; queued rows may be lost", timeout)

    def spend(
        self, *, since: float | None = None, group_by: Sequence[GroupBy] = ("tenant", "backend", "day")
    ) -> list[dict[str, Any]]:
        """Requests, tokens and USD per group (``day``/``month`` in UTC), ordered by the groups."""
        sql = spend_sql(_GROUP_SQL, group_by, "?")
        args = (float("-inf") if since is None else since,)
        return self._read(lambda conn: spend_entries(group_by, conn.execute(sql, args)))

    def totals(self, since: float) -> dict[tuple[str, str | None], float]:
        """USD spent since ``since`` per budget scope: ``("global", None)``, ``("tenant", name)``, ``("key", name)``."""

        # Whole days come from the daily summary; only a partial first day reads the requests themselves.
        next_day = since - since % _DAY + (_DAY if since % _DAY else 0)

        def query(conn: sqlite3.Connection) -> dict[tuple[str, str | None], float]:
            out: dict[tuple[str, str | None], float] = {("global", None): 0.0}
            if since < next_day:
                sql = "SELECT tenant, key, SUM(cost_usd) FROM requests WHERE ts >= ? AND ts < ? GROUP BY tenant, key"
                add_scope_totals(out, conn.execute(sql, (since, next_day)))
            sql = (
                "SELECT scope, name, SUM(cost_usd) FROM daily_spend "
                "WHERE day >= strftime('%Y-%m-%d', ?, 'unixepoch') GROUP BY scope, name"
            )
            for scope, name, cost in conn.execute(sql, (next_day,)):
                scope_key = (scope, name or None)
                out[scope_key] = out.get(scope_key, 0.0) + cost
            return out

        return self._read(query)

    def rows(self, *, since: float | None = None, until: float | None = None) -> list[LedgerRow]:
        """The requests recorded in ``[since, until)``, oldest first."""
        sql = f"SELECT {', '.join(COLUMNS)} FROM requests WHERE ts >= ? AND ts < ? ORDER BY ts"
        args = (float("-inf") if since is None else since, float("inf") if until is None else until)

        def query(conn: sqlite3.Connection) -> list[LedgerRow]:
            return [LedgerRow(**{**dict(zip(COLUMNS, row, strict=True)), "estimated": bool(row[_ESTIMATED])})
                    for row in conn.execute(sql, args)]

        return self._read(query)

    def record_verdict(self, verdict: VerdictRow) -> None:
        """Queue a shadow verdict for writing; never waits for the disk."""
        values = astuple(verdict)

        def insert(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(_INSERT_VERDICT, values)
            except sqlite3.Error as exc:  # nobody waits for this job: say so here
                log.error("ledger: shadow verdict not recorded: %s: %r", exc, verdict)

        if not self._put(_Job(insert)):
            log.error("ledger is closed; shadow verdict not recorded: %r", verdict)

    def verdicts(self, *, since: float | None = None, until: float | None = None) -> list[VerdictRow]:
        """The shadow verdicts recorded in ``[since, until)``, oldest first."""
        sql = f"SELECT {', '.join(_VERDICT_COLUMNS)} FROM shadow_verdicts WHERE ts >= ? AND ts < ? ORDER BY ts"
        args = (float("-inf") if since is None else since, float("inf") if until is None else until)

        def query(conn: sqlite3.Connection) -> list[VerdictRow]:
            return [VerdictRow(*row[:-1], simulated=bool(row[-1])) for row in conn.execute(sql, args)]

        return self._read(query)

    def shadow_spend(self, since: float) -> float:
        """USD the shadow judge spent since ``since``."""
        sql = "SELECT COALESCE(SUM(cost_usd), 0) FROM shadow_verdicts WHERE ts >= ?"
        return self._read(lambda conn: float(conn.execute(sql, (since,)).fetchone()[0]))

    def _read(self, run: Callable[[sqlite3.Connection], _T]) -> _T:
        job = _Job(run)
        if not self._put(job):
            raise RuntimeError("the ledger is closed")
        result: _T = job.future.result(_READ_TIMEOUT)
        return result

    def _put(self, item: LedgerRow | Begun | Ended | _Job) -> bool:
        with self._lock:
            if self._closed:
                return False
            self._queue.put(item)
            return True

    # -- writer thread ---------------------------------------------------------------------

    def _run(self, ready: Future[None]) -> None:
        try:
            conn = _connect(self.path)
        except BaseException as exc:
            ready.set_exception(exc)
            return
        ready.set_result(None)
        try:
            stopping = False
            while not stopping:
                items = [self._queue.get()]
                if isinstance(items[0], LedgerRow | Begun | Ended) and self._queue.qsize() < _BATCH:
                    # Let rows gather: one transaction (and one wake-up of this thread) per interval
                    # instead of per request keeps the writer off the event loop's back. With a full
                    # batch already waiting, write at once: sleeping then would cap the writer at
                    # _BATCH items per interval, and a busy gateway's backlog would grow in memory.
                    time.sleep(_GATHER_SECONDS)
                while len(items) < _BATCH:
                    try:
                        items.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                stopping = self._handle(conn, items)
        finally:
            conn.close()

    def _handle(self, conn: sqlite3.Connection, items: list[Any]) -> bool:
        """Write the rows among ``items`` and run the jobs, in queue order; True at the stop mark (always last)."""
        if time.monotonic() - self._recovered_at >= _RECOVER_EVERY:
            self._recover(conn)
        rows: list[LedgerRow] = []
        begun: list[LedgerRow] = []
        ended: set[str] = set()
        for item in items:
            if isinstance(item, LedgerRow):
                rows.append(item)
                continue
            if isinstance(item, Begun):
                begun.append(item.row)
                continue
            if isinstance(item, Ended):
                ended.add(item.request_id)
                continue
            self._write(conn, rows, begun, ended)
            rows, begun, ended = [], [], set()
            if item is _STOP:
                return True
            try:
                item.future.set_result(item.run(conn))
            except Exception as exc:
                item.future.set_exception(exc)
        self._write(conn, rows, begun, ended)
        return False

    def _recover(self, conn: sqlite3.Connection) -> None:
        """Bill the write-ahead rows of requests that can no longer be running (their process died)."""
        self._recovered_at = time.monotonic()
        cutoff = time.time() - self.stale_after
        try:
            conn.execute("BEGIN IMMEDIATE")
            moved = conn.execute(_RECOVER[0], (cutoff,)).rowcount
            conn.execute(_RECOVER[1], (cutoff,))
            conn.execute("COMMIT")
        except sqlite3.Error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            log.exception("ledger: could not bill the write-ahead rows of lost requests; will try again")
            return
        if moved:
            log.warning("ledger: billed %d requests at their estimate: their process ended before they did", moved)

    def _write(self, conn: sqlite3.Connection, rows: list[LedgerRow], begun: list[LedgerRow], ended: set[str]) -> None:
        if not rows and not begun and not ended:
            return
        finished = {row.request_id for row in rows} | ended
        # A request that began and finished within one batch needs no write-ahead row.
        ahead = [row for row in begun if row.request_id not in finished]
        statements = [
            (_INSERTS[size], list(chain.from_iterable(map(row_values, rows[start : start + size]))))
            for start, size in sqlite_rows.parts(len(rows), _ROWS_PER_INSERT)
        ]
        cleared = [(request_id,) for request_id in finished & self._ahead]
        for attempt in range(_WRITE_TRIES):
            try:
                conn.execute("BEGIN IMMEDIATE")
                inserted = sum(conn.execute(sql, values).rowcount for sql, values in statements)
                if ahead:
                    conn.executemany(_PENDING_INSERT, map(row_values, ahead))
                if cleared:
                    conn.executemany(_PENDING_DELETE, cleared)
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        log.exception("ledger: rollback failed")
                if attempt + 1 < _WRITE_TRIES:
                    time.sleep(0.1 * 2**attempt)
                    continue
                self.stats["dropped"] += len(rows)
                log.error("ledger: giving up on %d rows after %d tries: %s; first row: %r", len(rows), _WRITE_TRIES, exc, (rows or ahead)[:1])
                return
            self._ahead.difference_update(finished)
            self._ahead.update(row.request_id for row in ahead)
            self.stats["written"] += inserted
            self.stats["duplicates"] += len(rows) - inserted
            self.stats["commits"] += 1
            return


def spend_sql(group_sql: Mapping[str, str], group_by: Sequence[str], placeholder: str) -> str:
    """The spend report's query, for a ledger whose group expressions are ``group_sql``."""
    unknown = [g for g in group_by if g not in group_sql]
    if unknown:
        raise ValueError(f"cannot group spend by {unknown}; choose from {sorted(group_sql)}")
    exprs = [group_sql[g] for g in group_by]
    select = ", ".join([*exprs, "COUNT(*)", "SUM(input_tokens)", "SUM(output_tokens)", "SUM(cost_usd)"])
    sql = f"SELECT {select} FROM requests WHERE ts >= {placeholder}"
    if exprs:
        sql += f" GROUP BY {', '.join(exprs)} ORDER BY {', '.join(exprs)}"
    return sql


def spend_entries(group_by: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    """The spend report's rows as dicts: the groups, then requests, tokens and cost (empty groups left out)."""
    out = []
    for row in rows:
        requests, input_tokens, output_tokens, cost = row[len(group_by) :]
        if not requests:
            continue
        entry = dict(zip(group_by, row, strict=False))
        entry.update(requests=requests, input_tokens=int(input_tokens), output_tokens=int(output_tokens), cost_usd=cost)
        out.append(entry)
    return out


def add_scope_totals(out: dict[tuple[str, str | None], float], rows: Iterable[Sequence[Any]]) -> None:
    """Add (tenant, key, cost) rows into budget-scope totals: global, per tenant, per key."""
    for tenant, key, cost in rows:
        out["global", None] += cost
        if tenant is not None:
            out["tenant", tenant] = out.get(("tenant", tenant), 0.0) + cost
        if key is not None:
            out["key", key] = out.get(("key", key), 0.0) + cost


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite_wal.connect(path, timeout=_BUSY_TIMEOUT)
    try:
        conn.executescript(_SCHEMA)
        _add_columns(conn)
        _backfill_daily_spend(conn)
    except BaseException:
        conn.close()
        raise
    return conn


#: Columns added after the first release: a ledger written before them gets them on open.
_ADDED_COLUMNS = {"decision": "TEXT"}


def _add_columns(conn: sqlite3.Connection) -> None:
    """Give a ledger written by an older version the columns added since (its ``pending`` table was
    copied from its ``requests`` table, so it lacks them too)."""
    for table in ("requests", "pending"):
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        for name, kind in _ADDED_COLUMNS.items():
            if name not in have:
                try:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
                except sqlite3.OperationalError as exc:
                    if "duplicate column" not in str(exc):  # else another process added it first
                        raise


def _backfill_daily_spend(conn: sqlite3.Connection) -> None:
    """Fill ``daily_spend`` from the rows of a ledger written before the summary existed.

    Checked and filled in one write transaction: worker processes open the same file together.
    """
    if conn.execute("SELECT 1 FROM daily_spend LIMIT 1").fetchone():
        return
    day = "strftime('%Y-%m-%d', ts, 'unixepoch')"
    conn.execute("BEGIN IMMEDIATE")
    try:
        if not conn.execute("SELECT 1 FROM daily_spend LIMIT 1").fetchone():
            conn.execute(f"INSERT INTO daily_spend SELECT {day}, 'global', '', SUM(cost_usd) FROM requests GROUP BY 1")
            for scope in ("tenant", "key"):
                conn.execute(
                    f"INSERT INTO daily_spend SELECT {day}, '{scope}', {scope}, SUM(cost_usd) FROM requests "
                    f"WHERE {scope} IS NOT NULL GROUP BY 1, 3"
                )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
