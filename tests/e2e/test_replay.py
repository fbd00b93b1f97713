"""Replay of a ledger a real gateway wrote: decision inputs are recorded without prompt text, and
``llm-router replay`` re-decides them under new rules."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from router.app import create_app
from router.cli import main
from router.config import load_config
from tests.e2e.conftest import CLIENT_KEY, DEFAULT_RULES, ENV, OTHER_KEY, Stack, write_config
from tests.servers import serve

PROMPTS = {
    "faq": "How do I reset my online banking password?",
    "math": "Solve for x: 3x + 7 = 22. Show each step of the algebra.",
    "pii": "Update the billing email on my account to jane.doe@example.com please",
}
CANARY_RULES = DEFAULT_RULES.replace(
    "  - name: default-mid\n",
    '  - name: canary\n    when: {headers: {x-canary: "1"}}\n    tier: flagship\n'
    "  - name: escalate-complex\n    when: {complexity_gte: 0.9}\n    tier: flagship\n"
    "  - name: default-mid\n",
)


def test_replay_a_ledger_the_gateway_wrote(upstreams: tuple[str, str], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    mid_url, flagship_url = upstreams
    config = tmp_path / "router.yaml"
    write_config(config, mid_url, flagship_url, rules=CANARY_RULES)
    app = create_app(load_config(config, ENV), path=config, environ=ENV, watch=False)
    with serve(app) as url:
        stack = Stack(url, mid_url, flagship_url, config)
        acme, beta = stack.client(CLIENT_KEY), stack.client(OTHER_KEY)
        for client, prompt, headers in [
            (acme, "faq", {}), (acme, "faq", {"x-canary": "1"}), (acme, "math", {}), (acme, "pii", {}),
            (beta, "faq", {}), (beta, "math", {}), (beta, "pii", {}),
        ]:
            client.chat.completions.create(model="auto", messages=[{"role": "user", "content": PROMPTS[prompt]}],
                                           extra_headers=headers)
        acme.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": PROMPTS["faq"]}])
    ledger = tmp_path / "spend.sqlite3"  # the server's shutdown wrote every row

    with sqlite3.connect(ledger) as db:
        records = [json.loads(text) for (text,) in db.execute("SELECT decision FROM requests ORDER BY ts")]
    assert len(records) == 8
    text = json.dumps(records)
    assert all(p not in text for p in PROMPTS.values()) and "jane.doe" not in text  # no prompt text
    assert "authorization" not in text and CLIENT_KEY not in text  # only the headers rules look at
    assert [r["headers"] for r in records[:2]] == [{}, {"x-canary": "1"}]
    assert [r["rule"] for r in records] == [
        "default-mid", "canary", "escalate-hard-tasks", "pii-stays-self-hosted",
        "beta-tenant-flagship", "beta-tenant-flagship", "pii-stays-self-hosted", "requested-model",
    ]
    assert records[3]["features"]["pii"] == ["email"] and records[2]["features"]["task"] == "math"

    # New rules: no beta rule and no canary; beta's faq goes to mid, its math stays flagship by task.
    new = tmp_path / "new.yaml"
    write_config(new, mid_url, flagship_url)
    new.write_text(new.read_text().replace("  - name: beta-tenant-flagship\n    when: {tenant: beta}\n    tier: flagship\n", ""))
    assert main(["replay", "--config", str(new), "--ledger", str(ledger), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["requests"] == 8 and summary["skipped"] == {}
    assert summary["tiers"] == {"flagship": {"before": 5, "after": 3}, "mid": {"before": 3, "after": 5}}
    assert sorted((c["rule_before"], c["rule_after"], c["requests"]) for c in summary["changed_tier"]) == [
        ("beta-tenant-flagship", "default-mid", 1), ("canary", "default-mid", 1),
    ]
    assert summary["cost_after_usd"] < summary["cost_before_usd"]

    # Calibration on the same ledger: the escalate-complex threshold, lowered to 0, sends everything up.
    assert main(["calibrate", "--config", str(config), "--ledger", str(ledger), "--target-flagship-share", "1", "--json"]) == 0
    proposal = json.loads(capsys.readouterr().out)
    assert proposal["rule"] == "escalate-complex" and proposal["requests"] == 8
    assert proposal["current"]["flagship_share"] == 5 / 8
    # pii requests stay on mid whatever the threshold: 6 of 8 is the most this rule can reach
    assert proposal["proposed"]["flagship_share"] == 6 / 8
