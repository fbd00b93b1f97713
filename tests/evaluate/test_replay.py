"""``llm-router replay``: a small hand-made ledger re-decided under changed rules, counted by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from router.classify import Features
from router.cli import main
from router.evaluate import inputs
from router.evaluate.replay import parse_time
from router.ledger import Ledger, LedgerRow
from router.rules import RequestContext
from tests.evaluate.conftest import RULES, write_config

T0 = 1_780_000_000.0


def features(**overrides: Any) -> Features:
    base: dict[str, Any] = dict(task="faq", scores={"faq": 2.0}, complexity=0.2, input_tokens=100, has_tools=False,
                                has_images=False, pii=(), signals={})
    return Features(**{**base, **overrides})


def row(i: int, tier: str, rule: str, tokens: tuple[int, int], *, model: str = "auto", record: bool = True,
        **feature_values: Any) -> LedgerRow:
    price = {"mid": (0.05, 0.20), "flagship": (2.0, 8.0)}[tier]
    decision = inputs.encode(features(**feature_values), RequestContext(model=model, tenant="acme", api_key="k"),
                             rule=rule, tier=tier, max_output_tokens=0, headers=frozenset())
    return LedgerRow(
        ts=T0 + i, request_id=f"r{i}", tenant="acme", key="k", backend=tier, tier=tier, model=tier,
        input_tokens=tokens[0], output_tokens=tokens[1], cost_usd=(tokens[0] * price[0] + tokens[1] * price[1]) / 1e6,
        estimated=False, status=200, latency_ms=1.0, attempts=1, fallback=None, decision=decision if record else None,
    )


ROWS = [
    row(1, "flagship", "escalate-hard-tasks", (100, 200), task="math", complexity=0.45),
    row(2, "flagship", "escalate-complex", (100, 100), task="qa", complexity=0.8),
    row(3, "mid", "default-mid", (1000, 500), task="qa", complexity=0.6),
    row(4, "mid", "pii-stays-self-hosted", (50, 50), task="faq", pii=("email",)),
    row(5, "mid", "default-mid", (10, 10), task="chat", complexity=0.1),
    row(6, "mid", "default-mid", (10, 10), task="chat", record=False),
    row(7, "flagship", "requested-model", (10, 10), task="faq", model="gpt-4o"),
]
# The new rules: maths is no longer a hard task, and the complexity threshold drops to 0.5.
NEW_RULES = RULES.replace("[reasoning, math, code]", "[reasoning, code]").replace("complexity_gte: 0.75", "complexity_gte: 0.5")


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.sqlite3"
    led = Ledger(path)
    for r in ROWS:
        led.record(r)
    led.close()
    return path


def _replay(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main(["replay", *args, "--json"]) == 0
    summary: dict[str, Any] = json.loads(capsys.readouterr().out)
    return summary


def test_counts_match_a_hand_count(ledger: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "new.yaml", NEW_RULES, ledger)
    summary = _replay(capsys, "--config", str(config))
    assert summary["requests"] == 6
    assert summary["skipped"] == {"recorded without decision inputs": 1}
    # before: flagship r1 r2 r7, mid r3 r4 r5; after: flagship r2 r3 r7, mid r1 r4 r5
    assert summary["tiers"] == {"flagship": {"before": 3, "after": 3}, "mid": {"before": 3, "after": 3}}
    assert summary["rules"] == {
        "escalate-hard-tasks": {"before": 1, "after": 0},
        "escalate-complex": {"before": 1, "after": 2},
        "default-mid": {"before": 2, "after": 2},
        "pii-stays-self-hosted": {"before": 1, "after": 1},
        "requested-model": {"before": 1, "after": 1},
    }
    assert sorted(summary["changed_tier"], key=lambda c: c["rule_before"]) == [
        {"rule_before": "default-mid", "rule_after": "escalate-complex", "tier_before": "mid", "tier_after": "flagship", "requests": 1},
        {"rule_before": "escalate-hard-tasks", "rule_after": "default-mid", "tier_before": "flagship", "tier_after": "mid", "requests": 1},
    ]
    before = sum(r.cost_usd for r in ROWS[:5] + ROWS[6:])
    # r1 moves to mid (100 in, 200 out), r3 to flagship (1000 in, 500 out); the others keep their real cost.
    after = before - ROWS[0].cost_usd + (100 * 0.05 + 200 * 0.20) / 1e6 - ROWS[2].cost_usd + (1000 * 2 + 500 * 8) / 1e6
    assert summary["cost_before_usd"] == pytest.approx(before, abs=1e-8)
    assert summary["cost_after_usd"] == pytest.approx(after, abs=1e-8)


def test_same_rules_change_nothing_and_the_period_filters(ledger: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "same.yaml", RULES, ledger)
    summary = _replay(capsys, "--config", str(config))
    assert summary["changed_tier"] == [] and summary["cost_after_usd"] == summary["cost_before_usd"]
    window = _replay(capsys, "--config", str(config), "--since", str(T0 + 2), "--until", str(T0 + 4))
    assert window["requests"] == 2 and window["since"] == T0 + 2 and window["until"] == T0 + 3


def test_text_summary(ledger: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "new.yaml", NEW_RULES, ledger)
    assert main(["replay", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "replayed 6 requests from 2026-" in out
    assert "left out: 1 (recorded without decision inputs)" in out
    assert "escalate-complex                      1  16.7%      2  33.3%" in out
    assert "requests changing tier: 2 (33.3%)" in out
    assert "  escalate-hard-tasks -> default-mid: 1 (flagship -> mid)" in out


def test_missing_ledger_and_bad_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "c.yaml", RULES, tmp_path / "none.sqlite3")
    assert main(["replay", "--config", str(config)]) == 2
    assert capsys.readouterr().err.startswith(f"llm-router replay: {tmp_path / 'none.sqlite3'}: no such ledger; give --ledger")
    assert main(["replay", "--config", str(config), "--ledger", str(tmp_path / "gone.sqlite3")]) == 2
    assert capsys.readouterr().err.strip() == f"llm-router replay: {tmp_path / 'gone.sqlite3'}: no such ledger"
    assert main(["replay", "--config", str(config), "--since", "yesterday"]) == 2
    assert "cannot read time 'yesterday'" in capsys.readouterr().err
    assert not (tmp_path / "none.sqlite3").exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1780000000", 1_780_000_000.0), ("2026-01-01", 1767225600.0), ("2026-01-01T01:00:00+01:00", 1767225600.0),
     ("24h", 1000.0 - 86400), ("30m", 1000.0 - 1800)],
)
def test_parse_time(text: str, expected: float) -> None:
    assert parse_time(text, now=1000.0) == expected
