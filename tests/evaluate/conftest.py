"""Copies of the shipped configs in a temporary directory, for tests that edit them."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config"

EditConfig = Callable[[str, str], Path]


@pytest.fixture
def edited_config(tmp_path: Path) -> EditConfig:
    """``edited_config(old, new)``: config/router.yaml with ``old`` replaced by ``new`` (which must occur)."""

    def edit(old: str, new: str) -> Path:
        text = (CONFIG / "router.yaml").read_text(encoding="utf-8")
        assert old in text, f"{old!r} not in config/router.yaml"
        shutil.copy(CONFIG / "tasks.yaml", tmp_path / "tasks.yaml")
        path = tmp_path / "router.yaml"
        path.write_text(text.replace(old, new), encoding="utf-8")
        return path

    return edit
