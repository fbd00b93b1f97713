"""What a request costs, from the upstream's usage or, where it reported none, an estimate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from router.config import PriceConfig

#: Characters per token when the output has to be estimated from its text.
CHARS_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int
    output_tokens: int
    #: True when the upstream reported no usage and the tokens were estimated.
    estimated: bool
    #: Of ``input_tokens``: read from, and written to, the upstream's prompt cache.
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


def reported_tokens(reported: Any) -> tuple[int, int] | None:
    """(prompt, completion) tokens of an OpenAI ``usage`` object, or None if it lacks either."""
    if isinstance(reported, dict):
        prompt, completion = reported.get("prompt_tokens"), reported.get("completion_tokens")
        if isinstance(prompt, int) and isinstance(completion, int):
            return prompt, completion
    return None


def usage_from(reported: Any, *, input_estimate: int, output_chars: int) -> Usage:
    """Tokens from an OpenAI ``usage`` object, or estimated from the prompt and the text produced."""
    tokens = reported_tokens(reported)
    if tokens is not None:
        details = reported.get("prompt_tokens_details")
        read = details.get("cached_tokens") if type(details) is dict else None
        written = reported.get("cache_creation_input_tokens")
        return Usage(
            *tokens,
            estimated=False,
            cache_read_tokens=read if type(read) is int else 0,
            cache_write_tokens=written if type(written) is int else 0,
        )
    return Usage(input_estimate, -(-output_chars // CHARS_PER_TOKEN), estimated=True)


def reserved_output_tokens(body: dict[str, Any], input_tokens: int, context_window: int, unbounded: int) -> int:
    """Output tokens to reserve for a request: its bound (or, unbounded, ``unbounded`` capped by the
    room left in the context window) per choice, times the choices it asks for (``n``).

    Reasoning and tool-call tokens count inside the bound, as OpenAI bills them as completion tokens.
    """
    bound = body.get("max_completion_tokens") or body.get("max_tokens")
    if not isinstance(bound, int) or bound <= 0:
        bound = max(0, min(unbounded, context_window - input_tokens))
    n = body.get("n")
    return bound * n if isinstance(n, int) and n > 1 else bound


def cost_usd(price: PriceConfig, input_tokens: int, output_tokens: int) -> float:
    return (input_tokens * price.input + output_tokens * price.output) / 1_000_000


def usage_cost(price: PriceConfig, usage: Usage) -> float:
    """``usage``'s cost, cached prompt tokens at the cache prices where the backend has them."""
    read, written = usage.cache_read_tokens, usage.cache_write_tokens
    if not read and not written:
        return cost_usd(price, usage.input_tokens, usage.output_tokens)
    read_price = price.input if price.cache_read is None else price.cache_read
    write_price = price.input if price.cache_write is None else price.cache_write
    uncached = max(0, usage.input_tokens - read - written)
    prompt = uncached * price.input + read * read_price + written * write_price
    return (prompt + usage.output_tokens * price.output) / 1_000_000


def completion_chars(completion: dict[str, Any]) -> int:
    """Characters of generated text and tool arguments in a ``chat.completion``."""
    total = 0
    for choice in completion.get("choices") or ():
        total += _message_chars(choice.get("message") or {})
    return total


def chunk_chars(chunk: dict[str, Any]) -> int:
    total = 0
    for choice in chunk.get("choices") or ():
        total += _message_chars(choice.get("delta") or {})
    return total


def _message_chars(message: dict[str, Any]) -> int:
    total = len(message.get("content") or "")
    for call in message.get("tool_calls") or ():
        total += len((call.get("function") or {}).get("arguments") or "")
    return total
