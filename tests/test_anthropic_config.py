"""``kind: anthropic`` in the config: its defaults, and the commented Claude flagship of config/router.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.servers import with_claude
from router.config import ANTHROPIC_BASE_URL, BackendConfig, ConfigError, load_config
from router.upstream import create_provider
from router.upstream.anthropic import AnthropicProvider

REPO = Path(__file__).resolve().parents[1]


def test_anthropic_backend_defaults() -> None:
    backend = BackendConfig(tier="flagship", kind="anthropic", model="claude-sonnet-4-5", api_key="k")  # type: ignore[arg-type]
    assert (backend.base_url, backend.anthropic_version, backend.default_max_tokens) == (
        ANTHROPIC_BASE_URL,
        "2023-06-01",
        4096,
    )
    assert isinstance(create_provider("claude", backend), AnthropicProvider)
    with pytest.raises(ValueError, match="base_url"):
        BackendConfig(tier="flagship", model="gpt-4.1")  # an OpenAI-compatible backend has no default URL


def test_the_commented_claude_flagship_in_router_yaml_is_valid(tmp_path: Path) -> None:
    """Uncommenting the Claude backend and its aliases, as the comments invite, gives a config that loads."""
    path = with_claude(REPO / "config" / "router.yaml", tmp_path)
    config = load_config(path, {"OPENAI_API_KEY": "sk-o", "ANTHROPIC_API_KEY": "sk-a"})
    claude = config.backends["claude"]
    assert (claude.kind, claude.tier, claude.base_url, claude.price.cache_write) == (
        "anthropic",
        "flagship",
        ANTHROPIC_BASE_URL,
        3.75,
    )
    assert config.tiers["flagship"] == ["flagship", "claude"]
    assert config.aliases["claude-sonnet-4-5"] == "flagship"
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        load_config(path, {"OPENAI_API_KEY": "sk-o"})


def test_the_policy_treats_a_claude_and_a_gpt_flagship_alike(tmp_path: Path) -> None:
    """One tier, two vendors: Claude fails over to GPT, and a latency objective moves the plan from Claude
    to GPT, as between two OpenAI-compatible backends (breakers act at dispatch: tests/e2e/test_anthropic.py)."""
    from router.classify import Features
    from router.policy import Planner
    from router.rules import Decision, Target
    from router.state import PolicyState

    path = tmp_path / "router.yaml"
    path.write_text(f"""\
backends:
  claude: {{tier: flagship, kind: anthropic, model: claude-sonnet-4-5, api_key: k, price: {{input: 3, output: 15}}}}
  gpt: {{tier: flagship, base_url: "http://gpt/v1", model: gpt-4.1, price: {{input: 2, output: 8}}}}
  mid: {{tier: mid, base_url: "http://mid/v1", model: m, self_hosted: true}}
classifier: {{vocabulary: {REPO / "config" / "tasks.yaml"}}}
policy:
  fallback: {{flagship: [mid]}}
  ledger: {{path: null}}
rules:
  - {{name: hard, when: {{task: [math]}}, tier: flagship, max_ttft_ms: 1000}}
  - {{name: default, tier: mid}}
""")
    config = load_config(path, {})
    features = Features(task="math", scores={}, complexity=0.5, input_tokens=100, has_tools=False, has_images=False,
                        pii=(), signals={})
    decision = Decision(rule="hard", target=Target(tier="flagship"), why="test")

    def chain(state: PolicyState) -> tuple[list[str], str | None]:
        plan = Planner(config).plan(decision, features, state.backends, max_output_tokens=0)
        return [c.backend for c in plan.candidates], plan.rerouted

    assert chain(PolicyState(config)) == (["claude", "gpt", "mid"], None)
    slow = PolicyState(config)
    slow.backends["claude"].load.observe(ttft=3.0, total=5.0)  # 3000 ms > max_ttft_ms 1000
    assert chain(slow) == (["gpt", "claude", "mid"], "latency")
