"""Legacy completions (``POST /v1/completions``) <-> chat completions, as pure functions.

The prompt becomes one user message, so every chat backend serves the legacy endpoint (most hosted
flagships no longer serve ``/completions`` themselves) and the prompt is classified and routed like
a chat request. Sampling fields carry over; what has no chat equivalent (``echo``, ``suffix``,
``best_of`` above 1, token-id prompts, several prompts) is refused with a 400 naming the field.
"""

from __future__ import annotations

from typing import Any

from router.errors import InvalidRequestError

_SAME_FIELDS = (
    "max_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "user",
    "stream",
    "stream_options",
)


def chat_request(body: dict[str, Any]) -> dict[str, Any]:
    """The chat-completions body for a legacy completions ``body``."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise InvalidRequestError(
            "Invalid value for 'prompt': this gateway takes one prompt as a string (not several, not token ids).",
            param="prompt",
        )
    if body.get("echo"):
        raise InvalidRequestError("'echo' is not supported by this gateway.", param="echo")
    if body.get("suffix"):
        raise InvalidRequestError("'suffix' is not supported by this gateway.", param="suffix")
    if (body.get("best_of") or 1) > 1:
        raise InvalidRequestError("'best_of' above 1 is not supported by this gateway.", param="best_of")
    chat: dict[str, Any] = {"model": body["model"], "messages": [{"role": "user", "content": prompt}]}
    for name in _SAME_FIELDS:
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("logprobs"):
        chat["logprobs"] = True
        chat["top_logprobs"] = body["logprobs"]
    return chat


def _choice(choice: dict[str, Any], text: str) -> dict[str, Any]:
    return {
        "index": choice.get("index", 0),
        "text": text,
        "logprobs": None,
        "finish_reason": choice.get("finish_reason"),
    }


def chat_to_completion(completion: dict[str, Any]) -> dict[str, Any]:
    """The ``text_completion`` for a ``chat.completion``."""
    choices = [_choice(c, (c.get("message") or {}).get("content") or "") for c in completion.get("choices") or ()]
    return _text_completion(completion, choices)


def chunk_to_completion(chunk: dict[str, Any]) -> dict[str, Any] | None:
    """The ``text_completion`` stream chunk for a ``chat.completion.chunk``; None for the role-only opening."""
    choices = [
        _choice(c, (c.get("delta") or {}).get("content") or "")
        for c in chunk.get("choices") or ()
        if (c.get("delta") or {}).get("content") or c.get("finish_reason")
    ]
    if not choices and not chunk.get("usage"):
        return None
    return _text_completion(chunk, choices)


def _text_completion(chat: dict[str, Any], choices: list[dict[str, Any]]) -> dict[str, Any]:
    """A ``text_completion`` (or its stream chunk) with ``chat``'s id, time, model and usage."""
    out = {
        "id": _id(chat),
        "object": "text_completion",
        "created": chat.get("created", 0),
        "model": chat.get("model", ""),
        "choices": choices,
    }
    if chat.get("usage"):
        out["usage"] = chat["usage"]
    return out


def _id(chat: dict[str, Any]) -> str:
    return "cmpl-" + str(chat.get("id", "gateway")).removeprefix("chatcmpl-")
