"""Upstream providers, chosen by the backend's ``kind``."""

from __future__ import annotations

from router.config import BackendConfig, ProviderKind
from router.upstream.anthropic import AnthropicProvider
from router.upstream.base import Provider
from router.upstream.openai_compat import OpenAICompatProvider

PROVIDER_KINDS: dict[ProviderKind, type[OpenAICompatProvider]] = {
    "openai": OpenAICompatProvider,
    "anthropic": AnthropicProvider,
}


def create_provider(name: str, config: BackendConfig) -> Provider:
    """A provider for ``config.kind``, with its own pooled keep-alive HTTP session."""
    return PROVIDER_KINDS[config.kind](name, config)
