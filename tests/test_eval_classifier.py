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


def test_missing_dev_set_is_one_clear_line_not_a_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "routing-dev.jsonl"
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "eval_classifier.py"), "--data", str(missing)],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"eval_classifier.py: no labelled data at {missing}; pass --data PATH "
        "(JSON lines with messages, expected_tier, task and source)"
    ]
