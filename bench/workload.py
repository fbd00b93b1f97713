"""The request every benchmark sends: a typical ~1 KB FAQ-style chat completion (or the same as an
Anthropic Messages API request, for ``/v1/messages``, or a Responses request, for ``/v1/responses``)."""

from __future__ import annotations

import orjson

PROMPT = (
    "Hi! I run a small online shop that sells handmade ceramic mugs and I have a few questions about "
    "your subscription plans before I upgrade. Right now we are on the Starter plan, which includes "
    "up to 500 orders per month, one storefront and email support. Our orders have been growing by "
    "about 20% every month since spring, and during the holiday season we expect roughly 1,200 "
    "orders per month. I would like to know which plan you recommend for that volume, whether the "
    "price changes if we only exceed the limit for two or three months a year, and whether we can "
    "switch back to Starter in January without losing our order history, saved customer addresses "
    "or discount codes. We also ship to Canada and the United Kingdom, so please tell me if the "
    "higher plans include multi-currency checkout and automatic tax calculation for those countries. "
    "Finally, is there a discount for paying yearly instead of monthly, and how do refunds work if "
    "we downgrade in the middle of a billing period? Thanks a lot for your help!"
)


def chat_body(model: str, *, stream: bool, max_tokens: int = 20) -> bytes:
    """The JSON body of the benchmark request; streams ask for a usage chunk, as SDK clients often do."""
    body: dict[str, object] = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)


def messages_body(model: str, *, stream: bool, max_tokens: int = 20) -> bytes:
    """``chat_body`` as a Messages API request (whose streams always carry usage)."""
    body: dict[str, object] = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
    }
    if stream:
        body["stream"] = True
    return orjson.dumps(body)


def responses_body(model: str, *, stream: bool, max_tokens: int = 20) -> bytes:
    """``chat_body`` as a Responses API request (for a ``/v1/responses`` URL)."""
    body: dict[str, object] = {"model": model, "input": PROMPT, "max_output_tokens": max_tokens}
    if stream:
        body["stream"] = True
    return orjson.dumps(body)
