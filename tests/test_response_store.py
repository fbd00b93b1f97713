"""The stored-Responses table: owner isolation, TTL, delete, persistence across opens, several workers."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import orjson
import pytest

from router.response_store import ResponseStore, Stored, new_response_base

RESPONSE = {"id": "resp_1", "object": "response", "output": [{"type": "message", "content": []}]}
ENCODED = orjson.dumps(RESPONSE)
ITEMS = [{"type": "message", "role": "user", "content": "hi"}, *RESPONSE["output"]]


def test_a_response_is_only_found_by_its_owner_until_it_expires() -> None:
    now = [1000.0]
    store = ResponseStore(None, ttl_seconds=60, clock=lambda: now[0])
    store.put("tenant:acme", "resp_1", ENCODED, ITEMS)
    assert store.response("tenant:acme", "resp_1") == RESPONSE
    assert store.items("tenant:acme", "resp_1") == ITEMS
    assert store.response("tenant:beta", "resp_1") is None
    assert not store.delete("tenant:beta", "resp_1")
    assert store.flush()  # written to the database: the same answers from there
    assert store.items("tenant:acme", "resp_1") == ITEMS and store.response("tenant:beta", "resp_1") is None
    now[0] += 61
    assert store.items("tenant:acme", "resp_1") is None
    store.close()


def test_delete_and_persistence(tmp_path: Path) -> None:
    path = str(tmp_path / "new dir" / "responses?.sqlite3")  # created on first use; any file name
    first = ResponseStore(path, ttl_seconds=60)
    first.put("key:ci", "resp_1", ENCODED, ITEMS)
    first.put("key:ci", "resp_2", orjson.dumps({**RESPONSE, "id": "resp_2"}), ITEMS)
    first.close()
    second = ResponseStore(path, ttl_seconds=60)
    assert second.response("key:ci", "resp_1") == RESPONSE
    assert second.delete("key:ci", "resp_1") and not second.delete("key:ci", "resp_1")
    assert second.response("key:ci", "resp_1") is None and second.response("key:ci", "resp_2") is not None
    assert second.flush()
    assert second.response("key:ci", "resp_1") is None and second.response("key:ci", "resp_2") is not None
    second.close()


def test_nothing_is_created_until_first_use(tmp_path: Path) -> None:
    path = tmp_path / "responses.sqlite3"
    store = ResponseStore(str(path), ttl_seconds=60)
    store.close()
    assert not path.exists()


def test_a_large_batch_with_deletes_between_puts_is_written_in_order(tmp_path: Path) -> None:
    path = str(tmp_path / "responses.sqlite3")
    store = ResponseStore(path, ttl_seconds=60)
    ids = [f"resp_{i}" for i in range(450)]  # more rows than one INSERT statement takes
    for response_id in ids:
        store.put("key:ci", response_id, orjson.dumps({**RESPONSE, "id": response_id}), ITEMS)
    assert store.delete("key:ci", "resp_7")
    store.put("key:ci", "resp_8", orjson.dumps({**RESPONSE, "id": "resp_8", "output": []}), ITEMS)
    store.close()
    again = ResponseStore(path, ttl_seconds=60)  # reads what was written
    assert again.response("key:ci", "resp_7") is None
    assert again.response("key:ci", "resp_8") == {**RESPONSE, "id": "resp_8", "output": []}
    assert all(again.items("key:ci", response_id) == ITEMS for response_id in ids if response_id != "resp_7")
    again.close()


def test_a_worker_finds_a_response_another_worker_is_still_writing(tmp_path: Path) -> None:
    """Two workers on one file: the writer commits within 0.2 s, and a fresh id not found yet is
    looked up again until then, so an immediate follow-up through the other worker is no 404."""
    path = str(tmp_path / "responses.sqlite3")
    first, second = ResponseStore(path, ttl_seconds=60), ResponseStore(path, ttl_seconds=60)
    response_id = f"resp_{new_response_base()}"

    async def put_then_find_elsewhere() -> Stored | None:
        first.put("key:ci", response_id, ENCODED, ITEMS, "flagship")
        return await second.find("key:ci", response_id)

    found = asyncio.run(put_then_find_elsewhere())
    assert found == Stored(RESPONSE, ITEMS, "flagship")
    assert asyncio.run(second.find("key:other", response_id)) is None  # still another owner's
    first.close()
    second.close()


def test_an_unknown_id_that_is_not_fresh_is_not_waited_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ResponseStore(str(tmp_path / "responses.sqlite3"), ttl_seconds=60)

    async def no_sleep(seconds: float) -> None:
        raise AssertionError("waited for an id that cannot be on its way")

    monkeypatch.setattr(asyncio, "sleep", no_sleep)
    an_hour_ago = f"{int((time.time() - 3600) * 1000):012x}{'0' * 20}"
    assert asyncio.run(store.find("key:ci", f"resp_{an_hour_ago}")) is None
    assert asyncio.run(store.find("key:ci", "resp_not-one-of-ours")) is None
    store.close()


def test_a_file_from_before_the_tier_column_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "responses.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE responses (id TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL, "
                   "response BLOB NOT NULL, items BLOB NOT NULL)")
        db.execute("INSERT INTO responses VALUES (?, ?, ?, ?, ?)",
                   ("resp_old", "key:ci", time.time() + 60, ENCODED, orjson.dumps(ITEMS)))
    db.close()
    store = ResponseStore(str(path), ttl_seconds=60)
    assert asyncio.run(store.find("key:ci", "resp_old")) == Stored(RESPONSE, ITEMS, None)
    store.put("key:ci", "resp_new", ENCODED, ITEMS, "mid")
    store.close()
    again = ResponseStore(str(path), ttl_seconds=60)
    assert asyncio.run(again.find("key:ci", "resp_new")) == Stored(RESPONSE, ITEMS, "mid")
    again.close()
