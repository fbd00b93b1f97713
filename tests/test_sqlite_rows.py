"""router.sqlite_rows: batches cut into few distinct multi-row statements."""

from __future__ import annotations

from router.sqlite_rows import parts, sizes


def test_parts_cover_every_row_once_in_order() -> None:
    for count in range(700):
        cut = list(parts(count, 166))
        assert [start for start, _ in cut] == [sum(size for _, size in cut[:i]) for i in range(len(cut))]
        assert sum(size for _, size in cut) == count


def test_every_batch_length_uses_the_same_few_statements() -> None:
    used = {size for count in range(2000) for _, size in parts(count, 166)}
    assert used == set(sizes(166)) == {1, 2, 4, 8, 16, 32, 64, 128, 166}  # 9 statements, not 166
    assert [size for _, size in parts(100, 166)] == [64, 32, 4]
    assert [size for _, size in parts(500, 166)] == [166, 166, 166, 2]
