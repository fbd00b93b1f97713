"""Anthropic's Messages API <-> OpenAI chat completions, as pure functions on decoded JSON.

``upstream``: the gateway as an Anthropic client (a ``kind: anthropic`` backend): chat requests
out, messages and stream events back into chat completions and chunks.
``downstream``: the gateway as an Anthropic server (``POST /v1/messages``): Anthropic requests in
as chat requests, chat completions and chunks out as messages and stream events.

Shapes follow the official ``anthropic`` SDK's types (``anthropic/types``); the fixtures under
``tests/fixtures/anthropic`` are Anthropic's documented examples.
"""

from __future__ import annotations

from typing import Any

#: Anthropic ``stop_reason`` -> OpenAI ``finish_reason``.
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

#: OpenAI ``finish_reason`` -> Anthropic ``stop_reason``.
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

#: Anthropic error ``type`` -> the HTTP status Anthropic answers it with (also for ``error`` events after a 200).
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def openai_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """Anthropic ``usage`` -> OpenAI ``usage``.

    Anthropic's ``input_tokens`` leaves out the cached prompt tokens; OpenAI's ``prompt_tokens``
    counts them, with the cache reads in ``prompt_tokens_details.cached_tokens``. Cache writes have
    no OpenAI field: they travel in ``cache_creation_input_tokens`` (as LiteLLM does) and are priced
    at the backend's ``price.cache_write``.
    """
    read = usage.get("cache_read_input_tokens") or 0
    written = usage.get("cache_creation_input_tokens") or 0
    prompt = (usage.get("input_tokens") or 0) + read + written
    output = usage.get("output_tokens") or 0
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": {"cached_tokens": read},
    }
    if written:
        out["cache_creation_input_tokens"] = written
    return out


def anthropic_usage(usage: dict[str, Any] | None) -> dict[str, int]:
    """OpenAI ``usage`` -> Anthropic ``usage`` (the inverse of ``openai_usage``)."""
    usage = usage or {}
    details = usage.get("prompt_tokens_details") or {}
    read = details.get("cached_tokens") or 0
    written = usage.get("cache_creation_input_tokens") or 0
    return {
        "input_tokens": max(0, (usage.get("prompt_tokens") or 0) - read - written),
        "output_tokens": usage.get("completion_tokens") or 0,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
    }
