"""State shared between gateway processes: budget escrow, rate limits, conversation stickiness.

Two stores implement the same protocol: ``sqlite.SqliteStore`` shares budgets between the workers
of one machine through the SQLite ledger (``serve --workers N``), ``redis.RedisStore`` shares
budgets, rate limits and stickiness between replicas on many machines (``state.redis_url``).
A single process without Redis needs neither: its in-memory state is exact.

Budgets are shared by **escrow**, so the hot path stays in memory: each process holds a share of
every budget window it serves (``Exchange``), reserves requests against that share without any
I/O, and trades with the store only when its share runs short, and once a second to hand back what
it does not hold and to move settled spend into the window. The store keeps, per window,
``spent + sum(shares) <= limit``, so the processes together can overrun a limit only by what
their requests cost beyond their estimates.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from typing import Protocol

#: A budget window: (account label such as ``tenant:acme``, ``day`` or ``month``, window start as Unix time).
WindowKey = tuple[str, str, int]


class StateUnavailableError(Exception):
    """The shared store could not be reached or did not answer in time."""


@dataclass(frozen=True, slots=True)
class Exchange:
    """One process's trade with the store for one budget window, applied atomically with the others.

    ``settled`` moves from the process's share into the window's spend; the share then becomes at
    least ``floor`` (what the process's in-flight requests hold) and, when ``want`` > 0, grows to
    ``floor + want`` plus a ``fraction`` of what is left, if the window can afford ``want``.
    With ``want`` = 0 the share shrinks to ``floor``: the rest is handed back.
    """

    key: WindowKey
    limit: float
    #: Spend to start the window from if the store has never seen it (the ledger's total).
    seed: float
    settled: float
    floor: float
    want: float
    expires_at: float
    #: What this process moved into the window's spend before this trade. A store that can lose
    #: its state (a Redis restarted empty) keeps it per process and, when it finds less, restores
    #: the window's spend to at least the sum over processes: the seed alone is one replica's view.
    moved: float = 0.0


@dataclass(frozen=True, slots=True)
class Grant:
    """The store's answer for one window: this process's share, the window's spend, the others' shares."""

    share: float
    spent: float
    others: float


class EscrowStore(Protocol):
    async def exchange(self, worker: str, trades: list[Exchange], fraction: float) -> list[Grant]:
        """Apply ``trades`` atomically for ``worker``; raise ``StateUnavailableError`` if the store is unreachable."""
        ...

    async def aclose(self) -> None: ...


def worker_id() -> str:
    """This process's name in a shared store: unique across machines, processes and restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
