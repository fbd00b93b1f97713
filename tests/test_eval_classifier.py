"""The shipped config routes the dev set (../shared/data/routing-dev.jsonl) to the right tier."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "routing-dev.jsonl"


@pytest.mark.skipif(not DATA.exists(), reason=f"dev set not found at {DATA}")
def test_dev_set_tier_accuracy_is_at_least_085() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "eval_classifier.py"), "--repeat", "1"],
        capture_output=True, text=True, check=True, cwd=REPO,
    )
    overall = next(line for line in done.stdout.splitlines() if line.startswith("overall"))
    rows, tier_accuracy, task_accuracy = overall.split()[1:4]
    assert int(rows) == 239
    assert float(tier_accuracy) >= 0.85
    assert float(task_accuracy) >= 0.85
