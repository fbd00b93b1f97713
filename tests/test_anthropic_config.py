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
