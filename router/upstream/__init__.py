"""Upstream providers, chosen by the backend's ``kind``."""

from __future__ import annotations

import httpx

from router.config import BackendConfig, ProviderKind
from router.upstream.base import Provider
from router.upstream.openai_compat import OpenAICompatProvider

PROVIDER_KINDS: dict[ProviderKind, type[OpenAICompatProvider]] = {"openai": OpenAICompatProvider}


def create_provider(name: str, config: BackendConfig, transport: httpx.AsyncBaseTransport | None = None) -> Provider:
    """A provider with its own pooled, keep-alive HTTP client."""
    timeouts = config.timeouts
    client = httpx.AsyncClient(
        transport=transport,
        # Reads are bounded by the pipeline (first token, idle, total), not per socket read.
        timeout=httpx.Timeout(connect=timeouts.connect, read=None, write=timeouts.connect, pool=timeouts.connect),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=512, keepalive_expiry=60.0),
        follow_redirects=False,
    )
    return PROVIDER_KINDS[config.kind](name, config, client)
