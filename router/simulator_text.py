"""What the simulated upstream says: plausible text, JSON and tool calls, decided before any I/O.

Everything here is pure and deterministic: the same request (messages, seed, choice index) gives
the same reply, so tests can compare answers and a demo looks the same on every run. A reply is a
list of word-ish *pieces*; joined they form the content (or a tool call's JSON arguments), and
each piece counts as one completion token and travels in one stream chunk.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import string
import uuid
from dataclasses import dataclass
from random import Random
from typing import Any, Literal

import orjson

from router.evaluate.shadow import JUDGE_MARKER

FinishReason = Literal["stop", "length", "tool_calls"]


@dataclass(frozen=True)
class ToolCallHead:
    """The part of a tool call sent before its arguments: id and function name."""

    id: str
    name: str


@dataclass(frozen=True)
class Reply:
    """One choice. If ``tool_call`` is set, ``pieces`` are its JSON arguments, else the content."""

    pieces: tuple[str, ...]
    finish_reason: FinishReason
    tool_call: ToolCallHead | None = None


def compose_replies(body: dict[str, Any], *, tier: str, model: str, default_length: int) -> list[Reply]:
    """The ``n`` choices for a validated chat-completions body.

    Plain text is ``default_length`` pieces long; JSON and tool arguments are as long as the
    document. ``max_completion_tokens`` (or ``max_tokens``) below that cuts the reply and makes
    the finish reason ``"length"``, as a real model would (cut JSON is then invalid, as it is there).
    """
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if _is_judge_request(body["messages"]):
        return [Reply(tuple(tokenize(_simulated_verdict(body["messages"]))), "stop")]
    topic = topic_of(body["messages"])
    prompt_key = orjson.dumps(body["messages"], option=orjson.OPT_SORT_KEYS).decode()
    tool = _tool_to_call(body)
    replies = []
    for index in range(body.get("n") or 1):
        rng = Random(f"{body.get('seed')}|{index}|{model}|{prompt_key}")
        head: ToolCallHead | None = None
        if tool is not None:
            head = ToolCallHead(id="call_" + "".join(rng.choices(_ID_ALPHABET, k=24)), name=tool["name"])
            args = sample_json(tool.get("parameters") or {"type": "object"}, topic=topic, rng=rng)
            pieces = tokenize(orjson.dumps(args).decode())
        elif (fmt := body.get("response_format") or {}).get("type") in ("json_object", "json_schema"):
            schema = (fmt.get("json_schema") or {}).get("schema")
            document = (
                sample_json(schema, topic=topic, rng=rng)
                if schema
                else {"tier": tier, "model": model, "topic": topic, "answer": _sentences(tier, model, topic, rng)[0]}
            )
            pieces = tokenize(json.dumps(document, ensure_ascii=False))
        else:
            pieces = _text_pieces(tier, model, topic, rng, default_length)
        natural: FinishReason = "tool_calls" if head else "stop"
        if limit is not None and limit < len(pieces):
            replies.append(Reply(tuple(pieces[:limit]), "length", head))
        else:
            replies.append(Reply(tuple(pieces), natural, head))
    return replies


def _is_judge_request(messages: list[dict[str, Any]]) -> bool:
    first = messages[0] if messages else {}
    return first.get("role") == "system" and _text_of(first.get("content")).startswith(JUDGE_MARKER)


def _simulated_verdict(messages: list[dict[str, Any]]) -> str:
    """A shadow judge's reply, decided by a hash of what it is shown: about one answer in ten is unacceptable.

    Marked ``"simulated": true`` so the gateway records these verdicts as simulated.
    """
    digest = hashlib.sha256(orjson.dumps(messages[1:], option=orjson.OPT_SORT_KEYS)).digest()
    verdict = "unacceptable" if digest[0] % 10 == 0 else "acceptable"
    reason = "simulated judge: a deterministic verdict from a hash of the conversation and the answer"
    return orjson.dumps({"verdict": verdict, "reason": reason, "simulated": True}).decode()


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """OpenAI-like prompt size: ~4 characters per token, 4 tokens per message, 3 to prime the reply."""
    chars = 0
    images = 0
    for message in body["messages"]:
        chars += len(_text_of(message.get("content")))
        images += sum(1 for part in _parts(message.get("content")) if part.get("type") == "image_url")
        if message.get("tool_calls"):
            chars += len(orjson.dumps(message["tool_calls"]))
    if body.get("tools"):
        chars += len(orjson.dumps(body["tools"]))
    return math.ceil(chars / 4) + 4 * len(body["messages"]) + 3 + 85 * images


def topic_of(messages: list[dict[str, Any]]) -> str:
    """A short phrase naming what the last user message is about (``"your request"`` if none).

    The longest clause of the message once leading filler ("what is the", "please explain") is gone.
    """
    text = next((_text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    best: list[str] = []
    for clause in _CLAUSE.split(text[:2000]):
        words = [word.rstrip(".'/-") for word in _WORD.findall(clause)]
        while words and words[0].lower() in _FILLER:
            words.pop(0)
        best = words if len(words) > len(best) else best
    return " ".join(best[:6]) or "your request"


def tokenize(text: str) -> list[str]:
    """Split into word-ish pieces whose concatenation is exactly ``text``."""
    return _PIECE.findall(text)


def sample_json(schema: dict[str, Any], *, topic: str, rng: Random) -> Any:
    """A plausible value that validates against ``schema`` (the common JSON-Schema subset)."""
    return _sample(schema, schema, "value", topic, rng, depth=0)


def _parts(content: Any) -> list[dict[str, Any]]:
    return [p for p in content if isinstance(p, dict)] if isinstance(content, list) else []


def _text_of(content: Any) -> str:
    """A message's text: the string itself, or its ``text`` parts joined."""
    if isinstance(content, str):
        return content
    return " ".join(p["text"] for p in _parts(content) if isinstance(p.get("text"), str))


def _tool_to_call(body: dict[str, Any]) -> dict[str, Any] | None:
    """The function to call, or None to answer in text (also after a tool result, unless forced)."""
    functions: list[dict[str, Any]] = [
        t["function"] for t in body.get("tools") or [] if isinstance(t.get("function"), dict)
    ]
    choice = body.get("tool_choice")
    if not functions or choice == "none":
        return None
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return next((f for f in functions if f["name"] == choice["function"].get("name")), functions[0])
    if body["messages"][-1].get("role") == "tool" and choice != "required":
        return None
    return functions[0]


def _text_pieces(tier: str, model: str, topic: str, rng: Random, length: int) -> list[str]:
    length = max(length, 1)
    pieces: list[str] = []
    for sentence in itertools.cycle(_sentences(tier, model, topic, rng)):
        if len(pieces) >= length:
            break
        pieces += tokenize((" " if pieces else "") + sentence)
    pieces = pieces[:length]
    if length >= 3 and not pieces[-1].endswith("."):  # end the cut sentence, keeping the exact length
        pieces[-1] = "."
        if not pieces[-2][-1].isalnum():
            pieces[-2] = " etc"
    return pieces


def _sentences(tier: str, model: str, topic: str, rng: Random) -> list[str]:
    body = list(_BODY)
    rng.shuffle(body)
    return [s.format(tier=tier, model=model, topic=topic) for s in [_INTRO, *body]]


def _sample(schema: Any, root: dict[str, Any], name: str, topic: str, rng: Random, depth: int) -> Any:
    schema = _resolve(schema, root)
    if depth > 8:
        return None
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return rng.choice(schema["enum"])
    for key in ("anyOf", "oneOf"):
        options = [o for o in schema.get(key) or [] if _resolve(o, root).get("type") != "null"]
        if options and (depth < 4 or len(options) == len(schema[key])):  # deep optionals stop recursion
            return _sample(options[0], root, name, topic, rng, depth + 1)
        if schema.get(key):
            return None
    if schema.get("allOf"):
        merged: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
        for part in map(lambda p: _resolve(p, root), schema["allOf"]):
            merged["properties"].update(part.get("properties", {}))
            merged["required"] += part.get("required", list(part.get("properties", {})))
        return _sample(merged, root, name, topic, rng, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        properties: dict[str, Any] = schema.get("properties") or {}
        required: list[str] = schema.get("required", list(properties))
        keys = [k for k in properties if k in required] + [k for k in required if k not in properties]
        return {key: _sample(properties.get(key, {}), root, key, topic, rng, depth + 1) for key in keys}
    if kind == "array" and isinstance(schema.get("prefixItems"), list):
        return [_sample(item, root, name, topic, rng, depth + 1) for item in schema["prefixItems"]]
    if kind == "array":
        count = min(max(schema.get("minItems", 0), 2), schema.get("maxItems", 2))
        item_name = name[:-1] if name.endswith("s") else name
        return [_sample(schema.get("items", {}), root, item_name, topic, rng, depth + 1) for _ in range(count)]
    if kind in ("integer", "number"):
        return _sample_number(schema, integer=kind == "integer", rng=rng)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return _sample_string(schema, name, topic, rng)


def _resolve(schema: Any, root: dict[str, Any]) -> dict[str, Any]:
    """Follow local ``$ref`` pointers (``#/$defs/X``); anything unresolvable becomes ``{}`` (any value)."""
    for _ in range(8):
        ref = schema.get("$ref") if isinstance(schema, dict) else None
        if not (isinstance(ref, str) and ref.startswith("#")):
            break
        schema = root
        for key in filter(None, ref[1:].split("/")):
            key = key.replace("~1", "/").replace("~0", "~")
            schema = schema.get(key, {}) if isinstance(schema, dict) else {}
    return schema if isinstance(schema, dict) else {}


def _sample_number(schema: dict[str, Any], *, integer: bool, rng: Random) -> int | float:
    step = 1 if integer else 0.01
    low = _bound(schema, "minimum", "exclusiveMinimum", step, default=0)
    high = max(low, _bound(schema, "maximum", "exclusiveMaximum", -step, default=low + 100))
    if integer:
        return rng.randint(math.ceil(low), max(math.ceil(low), math.floor(high)))
    return min(max(round(rng.uniform(low, high), 2), low), high)


def _bound(schema: dict[str, Any], inclusive: str, exclusive: str, step: float, *, default: float) -> float:
    for key, shift in ((inclusive, 0.0), (exclusive, step)):
        value = schema.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value + shift
    return default


def _sample_string(schema: dict[str, Any], name: str, topic: str, rng: Random) -> str:
    fmt = schema.get("format")
    if fmt in _FORMATS:
        value = _FORMATS[fmt]
    elif fmt == "uuid":
        value = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    else:
        key = name.lower()
        template = next((v for k, v in _NAMED_STRINGS.items() if k in key), None)
        value = template.format(topic=topic) if template else f"{name} for {topic}"
    low, high = schema.get("minLength", 0), schema.get("maxLength")
    value = value.ljust(low, "x")
    return value[:high] if high is not None else value


_ID_ALPHABET = string.ascii_letters + string.digits
_PIECE = re.compile(r"\s*(?:\w+|[^\w\s]+)|\s+$")
_WORD = re.compile(r"\w[\w'+#./-]*")
_CLAUSE = re.compile(r"[.?!,;:\n]+(?:\s|$)")
_FILLER = frozenset(
    "a an the what whats what's how why who when where which is are was were do does did can could would "
    "should will please explain describe tell me us about give write summarize summarise show list hi "
    "hello hey there thanks ok okay i you to of for briefly quickly find search look up get".split()
)
_INTRO = "This is the {tier} tier ({model}) answering about {topic}."
_BODY = (
    "The short version: {topic} gets easier once you split it into small parts.",
    "Start with the simplest case of {topic} and check that it behaves as you expect.",
    "Then look at the edge cases, because that is where {topic} usually surprises people.",
    "A common mistake is to optimise {topic} before measuring where the time actually goes.",
    "Write down what you assume about {topic}, so that you can test each assumption.",
    "If a result looks wrong, compare it with a known good example before changing anything.",
    "Notes taken along the way make the next question about {topic} quicker to answer.",
    "In short, treat {topic} as a series of small, verifiable steps rather than one big leap.",
)
_FORMATS = {
    "date": "2024-05-17",
    "date-time": "2024-05-17T09:30:00Z",
    "time": "09:30:00",
    "email": "ada@example.com",
    "uri": "https://example.com/docs",
    "url": "https://example.com/docs",
    "hostname": "example.com",
    "ipv4": "192.0.2.10",
}
_NAMED_STRINGS = {
    "email": "ada@example.com",
    "url": "https://example.com/docs",
    "location": "Paris, France",
    "city": "Paris",
    "country": "France",
    "language": "en",
    "currency": "EUR",
    "date": "2024-05-17",
    "name": "Ada Lovelace",
    "title": "Notes on {topic}",
    "query": "{topic}",
    "topic": "{topic}",
    "summary": "A short summary of {topic}.",
    "description": "A short description of {topic}.",
}
