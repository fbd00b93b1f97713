"""Budget escrow in the SQLite ledger file: the workers of one machine (``serve --workers N``) share budgets.

Each ``exchange`` is one ``BEGIN IMMEDIATE`` transaction on a connection of its own (the ledger's
writer thread keeps its own), run off the event loop. A worker that stopped trading for
``STALE_SECONDS`` (killed, or gone without handing back) loses its shares to the others: what it
held for requests in flight is released, and what it had settled but not yet moved (at most one
second of its spend) is missing from the budget, though not from the ledger.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from pathlib import Path

from router import sqlite_wal
from router.shared import Exchange, Grant, StateUnavailableError

log = logging.getLogger("router.shared")

#: Seconds after its last trade at which a worker counts as gone (it trades every second while it holds shares).
STALE_SECONDS = 15.0
_BUSY_TIMEOUT = 5.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS budget_windows (
    account TEXT NOT NULL, period TEXT NOT NULL, start INTEGER NOT NULL,
    spent REAL NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (account, period, start)
);
CREATE TABLE IF NOT EXISTS budget_shares (
    account TEXT NOT NULL, period TEXT NOT NULL, start INTEGER NOT NULL, worker TEXT NOT NULL,
    amount REAL NOT NULL,
    PRIMARY KEY (account, period, start, worker)
);
CREATE TABLE IF NOT EXISTS budget_workers (worker TEXT PRIMARY KEY, seen REAL NOT NULL);
"""


class SqliteStore:
    up = True

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # the connection moves between executor threads; one user at a time

    async def exchange(self, worker: str, trades: list[Exchange], fraction: float) -> list[Grant]:
        try:
            return await asyncio.to_thread(self._exchange, worker, trades, fraction)
        except sqlite3.Error as exc:
            log.error("budget store %s: %s", self.path, exc)
            raise StateUnavailableError(f"budget store {self.path}: {exc}") from exc

    async def aclose(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite_wal.connect(self.path, timeout=_BUSY_TIMEOUT, check_same_thread=False)
            conn.executescript(_SCHEMA)
            self._conn = conn
        return self._conn

    def _exchange(self, worker: str, trades: list[Exchange], fraction: float) -> list[Grant]:
        with self._lock:
            conn = self._connection()
            now = time.time()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("INSERT INTO budget_workers VALUES (?, ?) ON CONFLICT DO UPDATE SET seen = excluded.seen",
                             (worker, now))
                stale = [w for (w,) in conn.execute("SELECT worker FROM budget_workers WHERE seen < ?", (now - STALE_SECONDS,))]
                for gone in stale:
                    conn.execute("DELETE FROM budget_shares WHERE worker = ?", (gone,))
                    conn.execute("DELETE FROM budget_workers WHERE worker = ?", (gone,))
                conn.execute("DELETE FROM budget_windows WHERE expires_at < ?", (now - 86400,))
                grants = [_apply(conn, worker, trade, fraction) for trade in trades]
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return grants


def _apply(conn: sqlite3.Connection, worker: str, t: Exchange, fraction: float) -> Grant:
    account, period, start = t.key
    window = (account, period, start)
    conn.execute("INSERT OR IGNORE INTO budget_windows VALUES (?, ?, ?, ?, ?)", (*window, t.seed, t.expires_at))
    if t.settled:
        conn.execute("UPDATE budget_windows SET spent = spent + ? WHERE account = ? AND period = ? AND start = ?",
                     (t.settled, *window))
    (spent,) = conn.execute("SELECT spent FROM budget_windows WHERE account = ? AND period = ? AND start = ?", window).fetchone()
    row = conn.execute("SELECT amount FROM budget_shares WHERE account = ? AND period = ? AND start = ? AND worker = ?",
                       (*window, worker)).fetchone()
    mine = max(0.0, (row[0] if row else 0.0) - t.settled)
    (others,) = conn.execute("SELECT COALESCE(SUM(amount), 0) FROM budget_shares WHERE account = ? AND period = ? "
                             "AND start = ? AND worker != ?", (*window, worker)).fetchone()
    share = grant(t, spent, others, mine, fraction)
    conn.execute("INSERT INTO budget_shares VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET amount = excluded.amount",
                 (*window, worker, share))
    return Grant(share, spent, others)


def grant(t: Exchange, spent: float, others: float, mine: float, fraction: float) -> float:
    """The share a process gets (the rule the Redis script repeats): at least its holds; with ``want``,
    ``floor + want`` and a ``fraction`` of the rest when the window can afford it, else what it had."""
    if t.want <= 0:
        return t.floor
    available = t.limit - spent - others + 1e-9  # USD; float sums of exact fits must not be refused
    if available >= t.floor + t.want:
        return t.floor + t.want + (available - t.floor - t.want) * fraction
    return max(t.floor, mine)
