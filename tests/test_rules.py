"""Rule compilation and matching: pure, table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from router.classify import Features
from router.config import RuleConfig
from router.rules import RequestContext, compile_rules, match_rules


def features(**overrides: Any) -> Features:
    base: dict[str, Any] = dict(task="faq", scores={"faq": 2.0}, complexity=0.2, input_tokens=100, has_tools=False,
                                has_images=False, pii=(), signals={})
    return Features(**{**base, **overrides})


RULES = compile_rules(
    [
        RuleConfig.model_validate(r)
        for r in [
            {"name": "pii", "when": {"pii": True}, "tier": "mid"},
            {"name": "vip", "when": {"tenant": ["vip"], "task_not": "chat"}, "tier": "flagship"},
            {"name": "canary", "when": {"headers": {"X-Canary": ["1", "yes"]}}, "backend": "flagship-b"},
            {"name": "ci-key", "when": {"api_key": "ci"}, "tier": "mid"},
            {"name": "long", "when": {"input_tokens_gt": 30000}, "tier": "flagship"},
            {"name": "hard", "when": {"task": ["math", "code"], "complexity_gte": 0.3}, "tier": "flagship"},
            {"name": "hard-anything", "when": {"complexity_gte": 0.8}, "tier": "flagship"},
            {"name": "tools-small", "when": {"tools": True, "input_tokens_lte": 2000, "complexity_lt": 0.5}, "tier": "mid"},
            {"name": "images", "when": {"images": True}, "tier": "flagship"},
            {"name": "legacy", "when": {"model": "gpt-4o-mini"}, "tier": "mid"},
            {"name": "default", "tier": "mid"},
        ]
    ]
)


@pytest.mark.parametrize(
    ("feature_overrides", "ctx", "rule"),
    [
        ({}, {}, "default"),
        ({"pii": ("email",), "task": "math", "complexity": 0.9}, {}, "pii"),
        ({}, {"tenant": "vip"}, "vip"),
        ({"task": "chat"}, {"tenant": "vip"}, "default"),
        ({}, {"headers": {"x-canary": "yes"}}, "canary"),
        ({}, {"headers": {"x-canary": "no"}}, "default"),
        ({}, {"api_key": "ci"}, "ci-key"),
        ({"input_tokens": 30001}, {}, "long"),
        ({"input_tokens": 30000}, {}, "default"),
        ({"task": "math", "complexity": 0.3}, {}, "hard"),
        ({"task": "math", "complexity": 0.29}, {}, "default"),
        ({"complexity": 0.85}, {}, "hard-anything"),
        ({"has_tools": True}, {}, "tools-small"),
        ({"has_tools": True, "input_tokens": 2001}, {}, "default"),
        ({"has_images": True}, {}, "images"),
        ({}, {"model": "gpt-4o-mini"}, "legacy"),
    ],
)
def test_first_matching_rule_wins(feature_overrides: dict[str, Any], ctx: dict[str, Any], rule: str) -> None:
    context = RequestContext(model=ctx.get("model", "auto"), tenant=ctx.get("tenant"), api_key=ctx.get("api_key"),
                             headers=ctx.get("headers", {}))
    decision = match_rules(features(**feature_overrides), context, RULES)
    assert decision.rule == rule


def test_decision_explains_itself() -> None:
    decision = match_rules(features(task="math", complexity=0.5), RequestContext(model="auto"), RULES)
    assert str(decision.target) == "tier flagship"
    assert decision.why == "rule 'hard': task in ['code', 'math'] and complexity >= 0.3"
    assert repr(decision) == "Decision(rule='hard', target=tier flagship, why=\"rule 'hard': task in ['code', 'math'] and complexity >= 0.3\")"
    default = match_rules(features(), RequestContext(model="auto"), RULES)
    assert default.why == "rule 'default': always (default rule)"
    assert str(default.target) == "tier mid"
    canary = match_rules(features(), RequestContext(model="auto", headers={"x-canary": "1"}), RULES)
    assert str(canary.target) == "backend flagship-b"
