"""``llm-router test``: the shipped cases pass on the shipped configs, and a changed rule fails them."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.cli import main
from tests.evaluate.conftest import CONFIG, EditConfig


@pytest.mark.parametrize("config", ["router.yaml", "demo.yaml"])
def test_shipped_cases_pass_on_the_shipped_configs(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["test", "--config", str(CONFIG / config)]) == 0
    out = capsys.readouterr().out
    cases = out.splitlines()[1]
    assert set(cases) == {"."} and len(cases) >= 30
    assert f"== {len(cases)} passed" in out


def test_shipped_cases_cover_every_shipped_rule() -> None:
    import yaml

    rules = {rule["name"] for rule in yaml.safe_load((CONFIG / "router.yaml").read_text())["rules"]}
    cases = yaml.safe_load((CONFIG / "routing-tests.yaml").read_text())["cases"]
    expected_rules = {case["expect"].get("rule") for case in cases}
    assert rules | {"requested-model"} <= expected_rules
    assert any(case.get("tenant") for case in cases) and any(case.get("headers") for case in cases)
    assert any(case.get("model", "auto") not in ("auto", "mid", "flagship") for case in cases)  # aliases


def test_a_changed_rule_fails_a_case_with_a_diff(edited_config: EditConfig, capsys: pytest.CaptureFixture[str]) -> None:
    config = edited_config("task: [math, code, legal]", "task: [code, legal]")
    assert main(["test", "--config", str(config), str(CONFIG / "routing-tests.yaml")]) == 1
    out = capsys.readouterr().out
    assert "FAILED math-word-problem\n  rule     expected 'escalate-hard-tasks', got 'escalate-learned'\n" in out
    assert "because  rule 'escalate-learned': escalation >= 0.55; task=math" in out
    assert " failed, " in out.splitlines()[-1]


def test_tenant_key_and_header_rules(edited_config: EditConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = edited_config("rules:\n", """rules:
  - name: acme-canary
    when: {tenant: acme, headers: {X-Canary: "1"}}
    backend: flagship
  - name: ci-key-to-mid
    when: {api_key: ci}
    tier: mid
""").read_text().replace("  keys: []", "  keys: [{name: ci, key_env: CI_KEY, tenant: acme}]")
    (tmp_path / "router.yaml").write_text(config)
    cases = tmp_path / "cases.yaml"
    cases.write_text("""cases:
  - {name: canary, tenant: acme, headers: {x-canary: "1"}, prompt: hi, expect: {backend: flagship, rule: acme-canary}}
  - {name: header-names-are-case-insensitive, tenant: acme, headers: {X-CANARY: "1"}, prompt: hi, expect: {rule: acme-canary}}
  - {name: no-header, tenant: acme, prompt: hi, expect: {tier: mid, rule: default-mid}}
  - {name: other-tenant, tenant: beta, headers: {x-canary: "1"}, prompt: hi, expect: {rule: default-mid}}
  - {name: key-tenant-from-config, key: ci, headers: {x-canary: "1"}, prompt: hi, expect: {rule: acme-canary}}
  - {name: key-rule, key: ci, prompt: Prove that 2 is prime, expect: {tier: mid, rule: ci-key-to-mid}}
""")
    assert main(["test", str(cases), "--config", str(tmp_path / "router.yaml")]) == 0, capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("cases: [", "line 1, column 9: invalid YAML"),
        ("cases: []", "cases: List should have at least 1 item"),
        ("cases:\n  - {name: a, expect: {tier: mid}}", "cases.0: give exactly one of `prompt` or `messages`"),
        ("cases:\n  - {name: a, prompt: hi, expect: {}}", "cases.0.expect: expect at least one of"),
        ("cases:\n  - {name: a, prompt: hi, expect: {tier: mid}, tenat: x}", "cases.0.tenat: Extra inputs are not permitted"),
    ],
)
def test_bad_cases_file_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    path = tmp_path / "cases.yaml"
    if content is not None:
        path.write_text(content)
    assert main(["test", str(path), "--config", str(CONFIG / "router.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"llm-router test: {path}: ") and message in err and "\n" not in err
