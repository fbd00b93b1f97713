"""Convert between a ``chat.completion`` and its ``chat.completion.chunk`` stream.

Some servers answer a streaming request with one JSON document, or a non-streaming request
with SSE; the gateway converts rather than hand the client something it did not ask for.
"""

from __future__ import annotations

from typing import Any


def completion_to_chunks(completion: dict[str, Any]) -> list[dict[str, Any]]:
    """The chunks an OpenAI server would have streamed for ``completion`` (usage chunk last, if any)."""
    base = {
        "id": completion.get("id", "chatcmpl-gateway"),
        "object": "chat.completion.chunk",
        "created": completion.get("created", 0),
        "model": completion.get("model", ""),
    }
    if "system_fingerprint" in completion:
        base["system_fingerprint"] = completion["system_fingerprint"]
    chunks: list[dict[str, Any]] = []
    for choice in completion.get("choices") or []:
        index = choice.get("index", 0)
        message = choice.get("message") or {}
        delta: dict[str, Any] = {"role": message.get("role", "assistant"), "content": message.get("content")}
        if message.get("refusal") is not None:
            delta["refusal"] = message["refusal"]
        if message.get("tool_calls"):
            delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
        chunks.append({**base, "choices": [{"index": index, "delta": delta, "finish_reason": None}]})
        chunks.append(
            {
                **base,
                "choices": [
                    {
                        "index": index,
                        "delta": {},
                        "finish_reason": choice.get("finish_reason") or "stop",
                        "logprobs": choice.get("logprobs"),
                    }
                ],
            }
        )
    if completion.get("usage"):
        chunks.append({**base, "choices": [], "usage": completion["usage"]})
    return chunks


def chunks_to_completion(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge streamed deltas back into one ``chat.completion``."""
    first = chunks[0] if chunks else {}
    choices: dict[int, dict[str, Any]] = {}
    usage = None
    for chunk in chunks:
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            slot = choices.setdefault(
                choice.get("index", 0),
                {"message": {"role": "assistant", "content": None}, "finish_reason": None, "tool_calls": {}},
            )
            delta = choice.get("delta") or {}
            if delta.get("content"):
                slot["message"]["content"] = (slot["message"]["content"] or "") + delta["content"]
            if delta.get("refusal"):
                slot["message"]["refusal"] = slot["message"].get("refusal", "") + delta["refusal"]
            for call in delta.get("tool_calls") or []:
                merged = slot["tool_calls"].setdefault(
                    call.get("index", 0), {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
                )
                merged["id"] = call.get("id") or merged["id"]
                function = call.get("function") or {}
                merged["function"]["name"] += function.get("name") or ""
                merged["function"]["arguments"] += function.get("arguments") or ""
            if choice.get("finish_reason"):
                slot["finish_reason"] = choice["finish_reason"]
    out_choices = []
    for index in sorted(choices):
        slot = choices[index]
        if slot["tool_calls"]:
            slot["message"]["tool_calls"] = [slot["tool_calls"][i] for i in sorted(slot["tool_calls"])]
        out_choices.append(
            {"index": index, "message": slot["message"], "finish_reason": slot["finish_reason"] or "stop", "logprobs": None}
        )
    completion: dict[str, Any] = {
        "id": first.get("id", "chatcmpl-gateway"),
        "object": "chat.completion",
        "created": first.get("created", 0),
        "model": first.get("model", ""),
        "choices": out_choices,
    }
    if usage:
        completion["usage"] = usage
    return completion
