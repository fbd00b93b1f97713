"""Planning: hard constraints first, then the target, stickiness, stress and fallback chains. Pure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from router.classify import Features
from router.config import GatewayConfig, load_config
from router.policy import Planner
from router.rules import Decision, Target
from router.state import PolicyState

REPO = Path(__file__).resolve().parents[1]

CONFIG = f"""\
backends:
  mid: {{tier: mid, base_url: "http://m/v1", model: m, context_window: 8000, self_hosted: true, max_concurrency: 2,
         price: {{input: 0.1, output: 0.2}}}}
  mid-b: {{tier: mid, base_url: "http://mb/v1", model: m, context_window: 32000, self_hosted: true}}
  flagship: {{tier: flagship, base_url: "http://f/v1", model: f, context_window: 200000, price: {{input: 2, output: 8}}}}
classifier: {{vocabulary: {REPO / "config" / "tasks.yaml"}}}
policy:
  fallback: {{mid: [flagship], flagship: [mid]}}
  ledger: {{path: null}}
rules:
  - {{name: hard, when: {{task: [math]}}, tier: flagship, max_ttft_ms: 1000}}
  - {{name: sticky-breaker, when: {{task: [chat]}}, tier: mid, break_stickiness: true}}
  - {{name: default, tier: mid}}
"""


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> GatewayConfig:
    path = tmp_path_factory.mktemp("plan") / "router.yaml"
    path.write_text(CONFIG)
    return load_config(path, {})


def features(**overrides: Any) -> Features:
    base: dict[str, Any] = dict(task="faq", scores={}, complexity=0.1, input_tokens=100, has_tools=False,
                                has_images=False, pii=(), signals={})
    return Features(**{**base, **overrides})


def plan_for(config: GatewayConfig, state: PolicyState, target: Target, rule: str = "default",
             max_output: int = 0, sticky: str | None = None, **feature_overrides: Any):  # type: ignore[no-untyped-def]
    decision = Decision(rule=rule, target=target, why="test")
    return Planner(config).plan(decision, features(**feature_overrides), state.backends, max_output_tokens=max_output,
                                sticky_tier=sticky)


def chain(plan: Any) -> list[str]:
    return [c.backend for c in plan.candidates]


def test_tier_then_its_fallback_chain(config: GatewayConfig) -> None:
    state = PolicyState(config)
    assert chain(plan_for(config, state, Target(tier="mid"))) == ["mid", "mid-b", "flagship"]
    assert chain(plan_for(config, state, Target(tier="flagship"), rule="hard")) == ["flagship", "mid", "mid-b"]
    assert chain(plan_for(config, state, Target(backend="mid-b"))) == ["mid-b", "flagship"]


def test_context_window_skips_backends_before_any_call(config: GatewayConfig) -> None:
    state = PolicyState(config)
    plan = plan_for(config, state, Target(tier="mid"), input_tokens=9000)
    assert chain(plan) == ["mid-b", "flagship"]
    plan = plan_for(config, state, Target(tier="mid"), input_tokens=30000, max_output=4000)
    assert chain(plan) == ["flagship"]
    assert "more than mid, mid-b can hold" in plan.notes[0]


def test_personal_data_only_sees_self_hosted_backends(config: GatewayConfig) -> None:
    state = PolicyState(config)
    plan = plan_for(config, state, Target(tier="flagship"), rule="hard", pii=("email",))
    assert chain(plan) == ["mid", "mid-b"] and plan.pii_locked
    assert plan.downgrades == ()
    assert "personal data" in plan.notes[0]
    refused = plan_for(config, state, Target(tier="mid"), pii=("card",), input_tokens=50000)
    assert refused.candidates == () and refused.refusal is not None and "personal data (card)" in refused.refusal


def test_sticky_conversation_escalates_but_a_rule_can_break_it(config: GatewayConfig) -> None:
    state = PolicyState(config)
    plan = plan_for(config, state, Target(tier="mid"), sticky="flagship")
    assert chain(plan)[0] == "flagship" and plan.rerouted == "sticky"
    assert chain(plan_for(config, state, Target(tier="flagship"), rule="hard", sticky="mid"))[0] == "flagship"  # never drops
    assert chain(plan_for(config, state, Target(tier="mid"), rule="sticky-breaker", sticky="flagship"))[0] == "mid"


def test_saturated_backend_spills_to_the_next_calm_one(config: GatewayConfig) -> None:
    state = PolicyState(config)
    for _ in range(2):
        state.backends["mid"].load.started()  # max_concurrency reached
    plan = plan_for(config, state, Target(tier="mid"))
    assert chain(plan) == ["mid-b", "mid", "flagship"] and plan.rerouted == "capacity"


def test_slow_flagship_against_the_rules_latency_objective(config: GatewayConfig) -> None:
    state = PolicyState(config)
    state.backends["flagship"].load.observe(ttft=3.0, total=5.0)  # 3000 ms > max_ttft_ms 1000
    plan = plan_for(config, state, Target(tier="flagship"), rule="hard")
    assert chain(plan)[0] == "mid" and plan.rerouted == "latency"


def test_budget_downgrade_candidates_are_the_cheapest_tier(config: GatewayConfig) -> None:
    state = PolicyState(config)
    plan = plan_for(config, state, Target(backend="flagship"))
    assert chain(plan) == ["flagship", "mid", "mid-b"]
    assert plan.downgrades == ()  # already in the chain
    no_chain = plan_for(config, state, Target(backend="mid-b"))
    assert [c.backend for c in no_chain.downgrades] == ["mid"]
    assert "Plan(mid-b -> flagship)" == repr(no_chain)


def test_a_planner_reused_across_requests_plans_as_a_fresh_one(config: GatewayConfig) -> None:
    """Remembered cases must not leak: sizes, personal data, stickiness and stress still decide each plan."""
    state = PolicyState(config)
    planner = Planner(config)
    cases: list[tuple[Target, str, str | None, dict[str, Any]]] = [
        (Target(tier="mid"), "default", None, {}),
        (Target(tier="mid"), "default", None, {"input_tokens": 9000}),
        (Target(tier="mid"), "default", None, {"input_tokens": 30000}),
        (Target(tier="mid"), "default", None, {"input_tokens": 31000}),
        (Target(tier="mid"), "default", "flagship", {}),
        (Target(tier="flagship"), "hard", None, {"pii": ("email",)}),
        (Target(tier="mid"), "default", None, {"pii": ("card",), "input_tokens": 50000}),
        (Target(backend="mid-b"), "default", None, {}),
    ]
    for stressed in (False, True, False):
        if stressed:
            for _ in range(2):
                state.backends["mid"].load.started()
        else:
            while state.backends["mid"].load.in_flight:
                state.backends["mid"].load.finished()
        for target, rule, sticky, overrides in cases * 2:
            decision = Decision(rule=rule, target=target, why="test")
            fresh = Planner(config).plan(decision, features(**overrides), state.backends, max_output_tokens=0, sticky_tier=sticky)
            reused = planner.plan(decision, features(**overrides), state.backends, max_output_tokens=0, sticky_tier=sticky)
            assert reused == fresh


def test_may_stick_says_where_a_sticky_tier_could_move_the_plan(config: GatewayConfig) -> None:
    """What a follow-up asks the fleet's Redis about: only decisions a sticky tier could change."""
    planner = Planner(config)
    assert planner.may_stick(Decision(rule="default", target=Target(tier="mid"), why="test"))
    assert not planner.may_stick(Decision(rule="hard", target=Target(tier="flagship"), why="test"))  # the top tier
    assert not planner.may_stick(Decision(rule="sticky-breaker", target=Target(tier="mid"), why="test"))
    assert not planner.may_stick(Decision(rule="requested-model", target=Target(backend="mid"), why="test"))
    assert planner.may_stick(Decision(rule="default", target=Target(backend="mid-b"), why="test"))
