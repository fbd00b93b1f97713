"""Rows written many to a statement, in few distinct statements.

SQLite writers here insert a batch with multi-row ``INSERT`` statements: sqlite3 releases the GIL for
every statement it steps, so one row per statement makes the writer thread wait for the GIL once per
row while the event loop is busy. But sqlite3 also keeps up to 128 prepared statements per connection,
and a statement of k rows is a different statement for every k: a writer whose batches had every
length from 1 to 166 rows held 128 of them, about 60 MiB. ``parts`` cuts a batch into full statements
and then powers of two, so a writer prepares at most ``log2(most) + 2`` distinct statements.
"""

from __future__ import annotations

from collections.abc import Iterator


def parts(count: int, most: int) -> Iterator[tuple[int, int]]:
    """``(start, size)`` of consecutive parts covering ``count`` rows: parts of ``most`` rows, then of
    decreasing powers of two (100 rows at most 64: 64, 32, 4)."""
    start = 0
    while count - start >= most:
        yield start, most
        start += most
    size = 1 << max(most.bit_length() - 1, 0)
    while start < count:
        while size > count - start:
            size >>= 1
        yield start, size
        start += size


def sizes(most: int) -> list[int]:
    """Every size ``parts`` yields for parts of at most ``most`` rows."""
    return sorted({most, *(1 << k for k in range(most.bit_length()) if 1 << k < most)})
