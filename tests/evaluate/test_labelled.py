"""``llm-router eval`` on a labelled data set: counts, cost projection, exit codes and error lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from router.cli import main
from tests.evaluate.conftest import CONFIG, REPO, write_config

DEV_SET = REPO / "data" / "routing" / "public-dev.jsonl"

ROWS = [
    # source a: both right (tier and task)
    {"id": "a1", "source": "a", "messages": [{"role": "user", "content": "Prove that the square root of 2 is irrational."}],
     "expected_tier": "flagship", "task": "math"},
    {"id": "a2", "source": "a", "messages": [{"role": "user", "content": "What is the capital of Australia?"}],
     "expected_tier": "mid", "task": "qa"},
    # source b: a greeting labelled flagship (misrouted), a poem labelled with the wrong task
    {"id": "b1", "source": "b", "messages": [{"role": "user", "content": "hi there!"}], "expected_tier": "flagship"},
    {"id": "b2", "source": "b", "messages": [{"role": "user", "content": "Write a short poem about autumn leaves."}],
     "expected_tier": "mid", "task": "translate"},
]


def _write(tmp_path: Path, rows: list[dict[str, object]]) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _config(tmp_path: Path) -> str:
    """The cue classifier and fixed rules: these counts must not move when the shipped model is retrained."""
    return str(write_config(tmp_path / "router.yaml"))


def _report(data: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, object]:
    assert main(["eval", str(data), "--config", _config(data.parent), "--json", *extra]) == 0
    report: dict[str, object] = json.loads(capsys.readouterr().out)
    return report


def test_counts_per_source_tier_and_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = _report(_write(tmp_path, ROWS), capsys)
    assert report["rows"] == 4
    assert report["tier_accuracy"] == 0.75
    assert report["task_accuracy"] == pytest.approx(2 / 3, abs=1e-4)  # b1 has no task label
    assert report["per_source"] == {
        "a": {"rows": 2, "tier_accuracy": 1.0, "task_accuracy": 1.0},
        "b": {"rows": 2, "tier_accuracy": 0.5, "task_accuracy": 0.0},
    }
    assert report["per_tier"] == {
        "flagship": {"rows": 2, "tier_accuracy": 0.5, "task_accuracy": 1.0},
        "mid": {"rows": 2, "tier_accuracy": 1.0, "task_accuracy": 0.5},
    }
    assert report["per_rule"]["default-mid"]["rows"] == 3  # type: ignore[index]
    assert report["per_rule"]["escalate-hard-tasks"] == {"rows": 1, "tier_accuracy": 1.0, "task_accuracy": 1.0}  # type: ignore[index]
    assert report["confusion"]["matrix"] == {"mid": {"mid": 2, "flagship": 0}, "flagship": {"mid": 1, "flagship": 1}}  # type: ignore[index]
    assert report["flagship_share"] == 0.25
    assert [m["id"] for m in report["misrouted"]] == ["b1", "b2"]  # type: ignore[union-attr]


def test_cost_projection_against_all_flagship(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # With a huge max_tokens the output dominates, so the ratio is the output prices' (0.20 vs 8.00 per Mtok).
    rows = [{**row, "max_tokens": 20_000} for row in ROWS if row["expected_tier"] == "mid"]
    report = _report(_write(tmp_path, rows), capsys)
    assert report["flagship_share"] == 0.0
    assert report["all_flagship_cost_per_1000_usd"] == pytest.approx(1000 * 0.02 * 8.0, rel=1e-3)
    assert report["cost_per_1000_usd"] == pytest.approx(1000 * 0.02 * 0.20, rel=1e-3)

    flagship_only = _report(_write(tmp_path, [ROWS[0]]), capsys)
    assert flagship_only["cost_per_1000_usd"] == flagship_only["all_flagship_cost_per_1000_usd"] > 0


def test_text_report_and_min_accuracy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _write(tmp_path, ROWS)
    assert main(["eval", str(data), "--config", _config(tmp_path), "-v", "--min-accuracy", "0.75"]) == 0
    out = capsys.readouterr().out
    assert "overall                4     0.750     0.667" in out
    assert "flagship share: 25.0%" in out
    assert "MISROUTED b1: expected flagship/None, got mid/chat by rule 'default-mid'" in out
    assert main(["eval", str(data), "--config", _config(tmp_path), "--min-accuracy", "0.8"]) == 1
    assert "tier accuracy 0.750 is below --min-accuracy 0.8" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ('{"messages": [\n', ":1: invalid JSON: Expecting value"),
        ('{"messages": [{"role": "user", "content": "hi"}], "expected_tier": "mid"}\n[1]\n', ":2: each line must be a JSON object"),
        ('{"messages": [], "expected_tier": "mid"}\n', ":1: `messages` must be a non-empty list"),
        ('{"messages": [{"role": "user", "content": "hi"}], "expected_tier": "gold"}\n',
         ":1: `expected_tier` must be one of ['flagship', 'mid'], got 'gold'"),
        ("\n\n", "no rows"),
        ('{"messages": [{"role": "user"}], "expected_tier": "mid"}\n', "row 1: the gateway would refuse it"),
    ],
)
def test_bad_data_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    path = tmp_path / "data.jsonl"
    if content is not None:
        path.write_text(content)
    assert main(["eval", str(path), "--config", str(CONFIG / "router.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("llm-router eval: ") and message in err and "\n" not in err


def test_bad_config_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "router.yaml"
    config.write_text("backends: {}\n")
    assert main(["eval", str(_write(tmp_path, ROWS)), "--config", str(config)]) == 2
    assert "llm-router eval: " in capsys.readouterr().err


def test_dev_set_accuracy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(DEV_SET), "--config", str(CONFIG / "router.yaml"), "--json", "--min-accuracy", "0.85"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == 239
    assert report["task_accuracy"] >= 0.85
