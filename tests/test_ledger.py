from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import astuple, fields, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

import router.ledger
from router.ledger import PENDING_STATUS, Ledger, LedgerRow

DAY1 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC).timestamp()
DAY2 = datetime(2024, 5, 2, 0, 30, tzinfo=UTC).timestamp()
JUNE = datetime(2024, 6, 3, 8, 0, tzinfo=UTC).timestamp()
REPO = Path(__file__).resolve().parents[1]


def row(request_id: str, *, ts: float = DAY1, tenant: str | None = "acme", key: str | None = "ci", backend: str = "flagship",
        cost: float = 0.01, status: int = 200) -> LedgerRow:  # fmt: skip
    return LedgerRow(
        ts=ts,
        request_id=request_id,
        tenant=tenant,
        key=key,
        backend=backend,
        tier="flagship" if backend == "flagship" else "mid",
        model="gpt-x" if backend == "flagship" else "qwen-7b",
        input_tokens=100,
        output_tokens=20,
        cost_usd=cost,
        estimated=False,
        status=status,
        latency_ms=123.4,
        attempts=1,
        fallback=None,
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "ledger.db"  # the parent directory does not exist yet


@pytest.fixture
def ledger(db: Path) -> Iterator[Ledger]:
    ledger = Ledger(db)
    yield ledger
    ledger.close()


def count_rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        (n,) = conn.execute("SELECT COUNT(*) FROM requests").fetchone()
    conn.close()
    return n


def test_row_round_trips_with_every_field(ledger: Ledger, db: Path) -> None:
    original = LedgerRow(DAY1, "req-1", None, None, "mid", "mid", "qwen-7b", 7, 3, 0.0, True, 502, 9.5, 3, "flagship")
    ledger.record(original)
    assert ledger.flush(5)
    conn = sqlite3.connect(db)
    stored = conn.execute("SELECT * FROM requests").fetchone()
    conn.close()
    assert stored == (*astuple(original)[:10], 1, *astuple(original)[11:])


def test_reads_see_rows_recorded_before_them_without_a_flush(ledger: Ledger) -> None:
    ledger.record(row("a", cost=0.25))
    assert ledger.totals(0.0)[("global", None)] == 0.25


def test_spend_groups_by_tenant_backend_and_utc_day(ledger: Ledger) -> None:
    ledger.record(row("a", cost=0.5))
    ledger.record(row("b", cost=0.25))
    ledger.record(row("c", backend="mid", cost=0.0))
    ledger.record(row("d", ts=DAY2, cost=1.0))
    ledger.record(row("e", tenant="beta", cost=2.0))
    rows = ledger.spend()
    assert [(r["tenant"], r["backend"], r["day"], r["requests"], r["cost_usd"]) for r in rows] == [
        ("acme", "flagship", "2024-05-01", 2, 0.75),
        ("acme", "flagship", "2024-05-02", 1, 1.0),
        ("acme", "mid", "2024-05-01", 1, 0.0),
        ("beta", "flagship", "2024-05-01", 1, 2.0),
    ]
    assert rows[0] == {
        "tenant": "acme",
        "backend": "flagship",
        "day": "2024-05-01",
        "requests": 2,
        "input_tokens": 200,
        "output_tokens": 40,
        "cost_usd": 0.75,
    }


def test_spend_since_and_other_groupings(ledger: Ledger) -> None:
    ledger.record(row("a", cost=0.5))
    ledger.record(row("b", ts=DAY2, cost=1.0, status=429))
    ledger.record(row("c", ts=JUNE, cost=2.0, key="batch"))
    assert [(r["month"], r["cost_usd"]) for r in ledger.spend(group_by=("month",))] == [("2024-05", 1.5), ("2024-06", 2.0)]
    assert [(r["key"], r["requests"]) for r in ledger.spend(since=DAY2, group_by=("key",))] == [("batch", 1), ("ci", 1)]
    assert [(r["status"], r["requests"]) for r in ledger.spend(group_by=("status",))] == [(200, 2), (429, 1)]
    assert ledger.spend(group_by=()) == [{"requests": 3, "input_tokens": 300, "output_tokens": 60, "cost_usd": 3.5}]
    assert ledger.spend(since=JUNE + 1, group_by=()) == []


def test_spend_refuses_unknown_groupings(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="cannot group spend by \\['cost_usd; DROP TABLE requests'\\]"):
        ledger.spend(group_by=("cost_usd; DROP TABLE requests",))  # type: ignore[arg-type]


def test_totals_by_budget_scope(ledger: Ledger) -> None:
    ledger.record(row("a", cost=1.0))
    ledger.record(row("b", cost=2.0, key="batch"))
    ledger.record(row("c", cost=4.0, tenant="beta", key=None))
    ledger.record(row("d", cost=8.0, tenant=None, key=None))
    ledger.record(row("e", ts=DAY1 - 3600, cost=100.0))
    assert ledger.totals(DAY1 - 1) == {
        ("global", None): 15.0,
        ("tenant", "acme"): 3.0,
        ("tenant", "beta"): 4.0,
        ("key", "ci"): 1.0,
        ("key", "batch"): 2.0,
    }
    assert ledger.totals(JUNE) == {("global", None): 0.0}


def test_a_request_recorded_twice_is_billed_once(ledger: Ledger) -> None:
    ledger.record(row("same", cost=1.0))
    ledger.record(row("same", cost=1.0))
    assert ledger.flush(5)
    assert ledger.totals(0.0)[("global", None)] == 1.0
    assert ledger.stats["written"] == 1
    assert ledger.stats["duplicates"] == 1


def test_a_batch_spanning_several_insert_statements_bills_each_request_once(ledger: Ledger, db: Path) -> None:
    """Rows are inserted many per statement: duplicates inside one statement and across two are both ignored."""
    ids = [f"r{i}" for i in range(150)] + ["r0", "r70", "r149", "r149"]
    for request_id in ids:
        ledger.record(row(request_id, cost=0.5, tenant="acme" if request_id != "r70" else "beta"))
    assert ledger.flush(5)
    assert ledger.stats["written"] == 150
    assert ledger.stats["duplicates"] == 4
    assert count_rows(db) == 150
    totals = ledger.totals(0.0)
    assert totals[("global", None)] == 75.0
    assert totals[("tenant", "acme")] == 74.5 and totals[("tenant", "beta")] == 0.5
    assert ledger.spend(group_by=("tenant",)) == [
        {"tenant": "acme", "requests": 149, "input_tokens": 14900, "output_tokens": 2980, "cost_usd": 74.5},
        {"tenant": "beta", "requests": 1, "input_tokens": 100, "output_tokens": 20, "cost_usd": 0.5},
    ]


def test_a_backlog_is_written_without_waiting_between_batches(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer waits for rows to gather only while less than a batch is queued: at one batch per
    interval it could write 5,000 items a second (2,500 requests, each with its write-ahead row), less
    than a busy two-worker gateway sends, and the backlog grew in memory."""
    waits: list[float] = []
    monkeypatch.setattr(router.ledger.time, "sleep", waits.append)
    gate = threading.Event()
    ledger = Ledger(db)
    ledger._queue.put(router.ledger._Job(lambda conn: gate.wait(10)))  # hold the writer while 5,000 requests queue
    for i in range(5000):
        ledger.begin(row(f"r{i}"))
        ledger.record(row(f"r{i}"))
    gate.set()
    assert ledger.flush(30)
    ledger.close()
    assert count_rows(db) == 5000
    assert len(waits) <= 1, waits  # ten batches of 1,000 items, none waited for


def test_spend_survives_a_restart(db: Path) -> None:
    first = Ledger(db)
    first.record(row("a", cost=1.5))
    first.close()
    second = Ledger(db)
    second.record(row("b", cost=0.5))
    assert second.totals(0.0)[("tenant", "acme")] == 2.0
    second.close()


def test_close_drains_the_queue(db: Path) -> None:
    ledger = Ledger(db)
    for i in range(5000):
        ledger.record(row(f"r{i}"))
    ledger.close()  # no flush
    assert count_rows(db) == 5000
    assert ledger.stats["written"] == 5000


def test_close_is_idempotent_and_later_rows_are_logged_not_raised(db: Path, caplog: pytest.LogCaptureFixture) -> None:
    ledger = Ledger(db)
    ledger.close()
    ledger.close()
    with caplog.at_level(logging.ERROR, logger="router.ledger"):
        ledger.record(row("late", cost=3.0))
    assert "spend not recorded" in caplog.text and "late" in caplog.text
    assert ledger.flush(1)
    with pytest.raises(RuntimeError, match="closed"):
        ledger.totals(0.0)


def test_close_on_another_thread_while_rows_keep_coming(db: Path, caplog: pytest.LogCaptureFixture) -> None:
    # The gateway closes the ledger with asyncio.to_thread while the event loop may still record:
    # every row is either written or reported as not recorded, never silently lost.
    ledger = Ledger(db)
    closer = threading.Thread(target=ledger.close)
    with caplog.at_level(logging.ERROR, logger="router.ledger"):
        for i in range(3000):
            ledger.record(row(f"r{i}"))
            if i == 1000:
                closer.start()
        closer.join()
    refused = caplog.text.count("spend not recorded")
    assert count_rows(db) + refused == 3000
    assert count_rows(db) >= 1001


def test_rows_queued_while_the_writer_waits_go_in_one_transaction(ledger: Ledger, db: Path) -> None:
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # hold the write lock: the writer waits in its busy handler
    for i in range(500):
        ledger.record(row(f"r{i}"))
    blocker.execute("COMMIT")
    blocker.close()
    assert ledger.flush(10)
    assert ledger.stats["written"] == 500
    assert 1 <= ledger.stats["commits"] <= 2  # the rows taken before the lock, then all the rest


def test_two_ledgers_share_one_file(db: Path) -> None:
    a, b = Ledger(db), Ledger(db)
    for i in range(1000):
        a.record(row(f"a{i}", cost=0.001))
        b.record(row(f"b{i}", cost=0.002, tenant="beta"))
    assert a.flush(10) and b.flush(10)
    assert a.totals(0.0) == b.totals(0.0)
    totals = a.totals(0.0)
    assert totals[("tenant", "acme")] == pytest.approx(1.0)
    assert totals[("tenant", "beta")] == pytest.approx(2.0)
    a.close()
    b.close()
    assert count_rows(db) == 2000


def test_two_processes_share_one_file(db: Path) -> None:
    script = """
import sys
import threading
from router.ledger import Ledger
from tests.test_ledger import row
ledger = Ledger(sys.argv[1])
for i in range(2000):
    ledger.record(row(f"{sys.argv[2]}-{i}", cost=0.001))
ledger.close()
"""
    Ledger(db).close()  # create the schema first, as a gateway would at start-up
    procs = [subprocess.Popen([sys.executable, "-c", script, str(db), name], cwd=REPO) for name in ("p1", "p2")]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    assert count_rows(db) == 4000


def test_in_memory_ledger(caplog: pytest.LogCaptureFixture) -> None:
    ledger = Ledger(":memory:")
    ledger.record(row("a", cost=0.75))
    assert ledger.spend(group_by=("tenant",)) == [
        {"tenant": "acme", "requests": 1, "input_tokens": 100, "output_tokens": 20, "cost_usd": 0.75}
    ]
    ledger.close()


def test_unopenable_database_fails_at_construction(tmp_path: Path) -> None:
    with pytest.raises(sqlite3.OperationalError):
        Ledger(tmp_path)  # a directory


def test_writes_that_keep_failing_are_dropped_loudly_and_the_writer_carries_on(
    db: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(router.ledger, "_BUSY_TIMEOUT", 0.01)
    ledger = Ledger(db)
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    with caplog.at_level(logging.ERROR, logger="router.ledger"):
        ledger.record(row("lost"))
        assert ledger.flush(10)
    blocker.execute("COMMIT")
    blocker.close()
    assert ledger.stats["dropped"] == 1
    assert "giving up on 1 rows" in caplog.text and "lost" in caplog.text
    ledger.record(row("kept"))
    assert ledger.totals(0.0)[("global", None)] == pytest.approx(0.01)
    ledger.close()


def test_totals_come_from_the_daily_summary_which_is_backfilled_for_old_ledgers(tmp_path: Path) -> None:
    path = tmp_path / "spend.sqlite3"
    first = Ledger(path)
    for i in range(50):
        first.record(row(f"r{i}", ts=DAY1 + i, cost=0.5, tenant="acme" if i % 2 else None, key="ci"))
    first.close()
    expected = {("global", None): 25.0, ("tenant", "acme"): 12.5, ("key", "ci"): 25.0}
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT COUNT(*) FROM daily_spend").fetchone()[0] == 3  # one row per day and scope
    conn.execute("DELETE FROM daily_spend")  # as a ledger written before the summary existed
    conn.commit()
    conn.close()
    reopened = Ledger(path)
    try:
        assert reopened.totals(DAY1 - DAY1 % 86400) == pytest.approx(expected)
    finally:
        reopened.close()


def pending_rows(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        found = conn.execute("SELECT request_id, status, cost_usd FROM pending ORDER BY request_id").fetchall()
    conn.close()
    return found


def started(request_id: str, *, ago: float = 0.0, estimate: float = 0.05) -> LedgerRow:
    return replace(row(request_id, ts=time.time() - ago, cost=estimate, status=PENDING_STATUS), output_tokens=0, estimated=True)


def test_write_ahead_row_is_replaced_by_the_final_row(ledger: Ledger, db: Path) -> None:
    ledger.begin(started("a"))
    assert ledger.flush(5)
    assert pending_rows(db) == [("a", 0, 0.05)]
    assert ledger.spend(group_by=()) == []  # under way: not spend yet (the budget holds a reservation)
    ledger.record(row("a", cost=0.02))
    assert ledger.flush(5)
    assert pending_rows(db) == []
    assert ledger.spend(group_by=())[0]["cost_usd"] == pytest.approx(0.02)


def test_a_request_begun_and_finished_in_one_batch_writes_no_write_ahead_row(db: Path) -> None:
    ledger = Ledger(db)
    ledger.begin(started("a"))
    ledger.record(row("a"))
    ledger.close()
    assert pending_rows(db) == [] and count_rows(db) == 1


def test_write_ahead_rows_of_a_process_that_died_are_billed_at_their_estimate_once_stale(db: Path) -> None:
    """Item 16: kill -9 left upstream calls in flight that were never billed."""
    dead = Ledger(db)
    dead.begin(started("in-flight", ago=10, estimate=0.05))
    dead.close()  # as far as the file goes, the same as a process killed after its last commit
    young = Ledger(db, stale_after=3600)  # a request may still be running elsewhere: left alone
    assert young.spend(group_by=()) == []
    young.close()
    assert pending_rows(db) == [("in-flight", 0, 0.05)]
    later = Ledger(db, stale_after=5)
    assert later.spend(group_by=("status",)) == [{"status": 0, "requests": 1, "input_tokens": 100, "output_tokens": 0, "cost_usd": 0.05}]
    assert later.totals(DAY1)[("tenant", "acme")] == pytest.approx(0.05)
    later.close()
    assert pending_rows(db) == []


def test_a_request_that_ended_with_nothing_to_bill_leaves_no_write_ahead_row(ledger: Ledger, db: Path) -> None:
    ledger.begin(started("failed"))
    assert ledger.flush(5)
    ledger.discard("failed")
    assert ledger.flush(5)
    assert pending_rows(db) == [] and count_rows(db) == 0


def test_a_ledger_from_before_the_decision_column_gets_it_in_both_tables(db: Path) -> None:
    """An older ledger: ``requests`` and its ``pending`` copy without ``decision``."""
    columns = [f.name for f in fields(LedgerRow) if f.name != "decision"]
    db.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(db) as conn:
        conn.execute(f"CREATE TABLE requests ({', '.join(columns)}, PRIMARY KEY (request_id))")
        conn.execute("CREATE TABLE pending AS SELECT * FROM requests WHERE 0")
    conn.close()
    ledger = Ledger(db)
    try:
        ledger.begin(started("a"))
        ledger.record(replace(row("b"), decision='{"v": 1}'))
        assert ledger.flush(5)
        assert pending_rows(db) == [("a", 0, 0.05)]
        assert [r.decision for r in ledger.rows()] == ['{"v": 1}']
    finally:
        ledger.close()


def test_workers_opening_a_new_file_at_once_all_open(tmp_path: Path) -> None:
    # Switching a file to WAL does not wait in SQLite's busy handler: a competing switch failed at once
    # with "database is locked", and a worker of `serve --workers N` died at start.
    failures: list[BaseException] = []
    for attempt in range(100):
        path = tmp_path / f"{attempt}.sqlite3"
        start = threading.Barrier(6)

        def open_ledger(path: Path = path, start: threading.Barrier = start) -> None:
            start.wait()
            try:
                Ledger(path).close()
            except BaseException as exc:  # noqa: BLE001 - every failure is reported below
                failures.append(exc)

        threads = [threading.Thread(target=open_ledger) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []
