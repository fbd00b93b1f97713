"""``llm-router calibrate``: the proposed threshold reproduces the target share on its own input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from router.cli import main
from router.evaluate.calibrate import _short_decimal
from router.ledger import Ledger, VerdictRow
from tests.evaluate.conftest import RULES, write_config
from tests.evaluate.test_replay import T0, row

N = 200


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    """200 requests: 20 maths (flagship by task), 180 questions with complexity spread over 0..1."""
    path = tmp_path / "ledger.sqlite3"
    led = Ledger(path)
    for i in range(N):
        if i % 10 == 0:
            led.record(row(i, "flagship", "escalate-hard-tasks", (100, 100), task="math", complexity=0.5))
        else:
            complexity = round((i * 37 % N) / N, 3)
            tier, rule = ("flagship", "escalate-complex") if complexity >= 0.75 else ("mid", "default-mid")
            led.record(row(i, tier, rule, (100, 100), task="qa", complexity=complexity))
    led.close()
    return path


def _json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main([*args, "--json"]) == 0, capsys.readouterr().err
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    return result


@pytest.mark.parametrize("target", [0.25, 0.4, 0.6, 0.15])
def test_proposal_hits_the_target_and_replays_to_it(
    target: float, ledger: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "router.yaml", RULES, ledger)
    result = _json(capsys, "calibrate", "--target-flagship-share", str(target), "--config", str(config))
    assert result["rule"] == "escalate-complex" and result["condition"] == "complexity_gte"
    assert result["requests"] == N
    assert result["current"]["value"] == 0.75
    proposed = result["proposed"]
    assert abs(proposed["flagship_share"] - target) <= 0.01

    # The proposed value, written into the config, gives that share when the same traffic is replayed.
    new = write_config(tmp_path / "new.yaml", RULES.replace("complexity_gte: 0.75", f"complexity_gte: {proposed['value']}"), ledger)
    summary = _json(capsys, "replay", "--config", str(new))
    assert summary["tiers"]["flagship"]["after"] / N == pytest.approx(proposed["flagship_share"])
    assert summary["cost_after_usd"] == pytest.approx(proposed["cost_usd"])


def test_text_output_and_unreachable_target(ledger: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "router.yaml", RULES, ledger)
    assert main(["calibrate", "--target-flagship-share", "0.05", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "calibrating rules.2 (escalate-complex): when.complexity_gte on 200 logged requests" in out
    assert "-    when.complexity_gte: 0.75\n+    when.complexity_gte: 1.0" in out  # maths alone is 10%
    assert "the closest share this threshold can reach" in out
    assert "projected mid acceptance: no shadow verdicts" in out
    assert main(["calibrate", "--target-flagship-share", "0.325", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "now:      complexity_gte 0.75 -> flagship share 32.5%" in out
    assert "YAML change: none (the current value is already the closest)" in out


def test_errors(ledger: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    no_threshold = write_config(tmp_path / "plain.yaml", RULES.replace("complexity_gte: 0.75", "task: [legal]"), ledger)
    assert main(["calibrate", "--target-flagship-share", "0.25", "--config", str(no_threshold)]) == 2
    assert "nothing to calibrate" in capsys.readouterr().err
    config = write_config(tmp_path / "router.yaml", RULES, ledger)
    assert main(["calibrate", "--target-flagship-share", "1.5", "--config", str(config)]) == 2
    assert "between 0 and 1" in capsys.readouterr().err
    assert main(["calibrate", "--target-flagship-share", "0.2", "--config", str(config), "--rule", "default-mid"]) == 2
    assert "rule 'default-mid' has 0 score thresholds" in capsys.readouterr().err


@pytest.mark.parametrize(("low", "high", "expected"), [(0.61, 0.625, 0.62), (0.6, 0.7, 0.7), (0.0, 0.005, 0.001), (0.1234, 0.1236, 0.1235)])
def test_short_decimal(low: float, high: float, expected: float) -> None:
    assert _short_decimal(low, high) == expected


def test_projected_mid_acceptance_from_shadow_verdicts(ledger: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Verdicts on requests 1..19 (all questions): acceptable below complexity 0.5, unacceptable above."""
    led = Ledger(ledger)
    expected: dict[float, list[bool]] = {}
    for i in range(1, 20):
        if i % 10 == 0:
            continue
        complexity = round((i * 37 % N) / N, 3)
        verdict = "acceptable" if complexity < 0.5 else "unacceptable"
        led.record_verdict(VerdictRow(ts=T0 + i, request_id=f"r{i}", rule="default-mid", task="qa", backend="mid",
                                      judge="flagship", verdict=verdict, cost_usd=0.001, simulated=True))
        expected[complexity] = [verdict == "acceptable"]
    led.record_verdict(VerdictRow(ts=T0, request_id="r0", rule="x", task="math", backend="mid", judge="flagship",
                                  verdict="error", cost_usd=0.0, simulated=True))  # errors are no verdict
    led.close()
    config = write_config(tmp_path / "router.yaml", RULES, ledger)
    result = _json(capsys, "calibrate", "--target-flagship-share", "0.4", "--config", str(config))
    threshold = result["proposed"]["value"]
    staying = [ok for c, (ok,) in expected.items() if c < threshold]
    assert result["proposed"]["verdicts"] == len(staying) > 0
    assert result["proposed"]["mid_acceptance"] == round(sum(staying) / len(staying), 4)
    assert main(["calibrate", "--target-flagship-share", "0.4", "--config", str(config)]) == 0
    assert f"({len(staying)} shadow verdicts on requests that would stay below the flagship)" in capsys.readouterr().out


def test_a_model_score_threshold_is_calibrated_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """escalation_gte (the learned model's score); requests recorded without a model score never match it."""
    path = tmp_path / "ledger.sqlite3"
    led = Ledger(path)
    for i in range(N):
        escalation = None if i % 20 == 0 else round((i * 37 % N) / N, 3)
        tier = "flagship" if escalation is not None and escalation >= 0.6 else "mid"
        led.record(row(i, tier, "escalate-uncertain" if tier == "flagship" else "default-mid", (100, 100),
                       task="qa", escalation=escalation))
    led.close()
    rules = RULES.replace("complexity_gte: 0.75", "escalation_gte: 0.6").replace("escalate-complex", "escalate-uncertain")
    config = write_config(tmp_path / "router.yaml", rules, path, model=True)
    result = _json(capsys, "calibrate", "--target-flagship-share", "0.3", "--config", str(config))
    assert (result["rule"], result["condition"], result["current"]["value"]) == ("escalate-uncertain", "escalation_gte", 0.6)
    assert abs(result["proposed"]["flagship_share"] - 0.3) <= 0.01


def test_the_default_threshold_is_one_that_decides_alone(ledger: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    rules = RULES.replace("when: {task: [reasoning, math, code]}", "when: {task: [reasoning, math, code], complexity_gte: 0.3}")
    config = write_config(tmp_path / "router.yaml", rules, ledger)
    assert _json(capsys, "calibrate", "--target-flagship-share", "0.3", "--config", str(config))["rule"] == "escalate-complex"
    picked = _json(capsys, "calibrate", "--target-flagship-share", "0.3", "--config", str(config), "--rule", "escalate-hard-tasks")
    assert (picked["rule"], picked["condition"], picked["current"]["value"]) == ("escalate-hard-tasks", "complexity_gte", 0.3)
