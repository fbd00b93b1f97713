"""The gateway as an Anthropic client: chat-completions requests out, Messages API answers back.

``to_messages_request`` refuses (``UpstreamClientError``, 400, naming the field) what the Messages
API cannot express, and drops what OpenAI's own semantics make optional:

- dropped: ``stream_options`` (Anthropic always reports usage), ``store`` and ``metadata`` (OpenAI's
  stored completions), ``seed`` (best effort at OpenAI too), ``service_tier``, ``prompt_cache_key``,
  ``safety_identifier``, ``strict`` on tools, and ``n: 1``, ``logprobs: false``,
  ``frequency_penalty``/``presence_penalty: 0``, an empty ``logit_bias``;
- refused: ``n`` > 1, ``logprobs``/``top_logprobs``, non-zero penalties, ``logit_bias``,
  ``temperature`` above 1 (Anthropic's range is 0..1), ``response_format`` together with ``tools``,
  legacy ``functions``/``function_call``, audio, files, and any other parameter it does not know.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from router.anthropic_wire import FINISH_REASONS, openai_usage
from router.errors import UpstreamClientError

#: Dropped: OpenAI parameters whose absence OpenAI's own semantics allow.
_DROPPED = frozenset(
    {"stream_options", "store", "metadata", "seed", "service_tier", "prompt_cache_key", "safety_identifier"}
)
#: Dropped at these (neutral) values, refused at any other.
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "n": (1,),
    "logprobs": (False,),
    "top_logprobs": (0,),
    "frequency_penalty": (0,),
    "presence_penalty": (0,),
    "logit_bias": ({},),
}
_TOOL_CHOICES = {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}


def refuse(message: str, param: str) -> UpstreamClientError:
    return UpstreamClientError(message, upstream_status=400, param=param, code="unsupported_parameter")


def structured_output(body: dict[str, Any]) -> bool:
    """True when ``response_format`` asks for JSON: the answer comes back as a forced tool's input."""
    fmt = body.get("response_format")
    return isinstance(fmt, dict) and fmt.get("type") in ("json_schema", "json_object")


def to_messages_request(body: dict[str, Any], *, default_max_tokens: int) -> dict[str, Any]:
    """A chat-completions body as a Messages API body (``body["model"]`` is already the upstream's)."""
    system, messages = _messages(body["messages"])
    out: dict[str, Any] = {
        "model": body["model"],
        "max_tokens": body.get("max_completion_tokens") or body.get("max_tokens") or default_max_tokens,
        "messages": messages,
    }
    if system:
        out["system"] = system
    for key, value in body.items():
        if value is None or key in _DROPPED or key in _HANDLED:
            continue
        if key in _NEUTRAL:
            if value in _NEUTRAL[key]:
                continue
            raise refuse(f"'{key}' is not supported by Anthropic backends (only {_NEUTRAL[key][0]!r}).", key)
        if key in _SAME:
            out[key] = value
            continue
        mapper = _MAPPERS.get(key)
        if mapper is None:
            raise refuse(f"Unsupported parameter for Anthropic backends: '{key}'.", key)
        mapper(value, out)
    if body.get("response_format") is not None:
        _response_format(body["response_format"], out)
    if body.get("parallel_tool_calls") is False and out.get("tools"):
        out["tool_choice"] = {**out.get("tool_choice", {"type": "auto"}), "disable_parallel_tool_use": True}
    return out


def _temperature(value: float, out: dict[str, Any]) -> None:
    if value > 1:
        raise refuse(f"'temperature' must be between 0 and 1 for Anthropic backends, got {value}.", "temperature")
    out["temperature"] = value


def _stop(value: str | list[str], out: dict[str, Any]) -> None:
    out["stop_sequences"] = [value] if isinstance(value, str) else list(value)


def _user(value: str, out: dict[str, Any]) -> None:
    out["metadata"] = {"user_id": value}


def _tools(tools: list[dict[str, Any]], out: dict[str, Any]) -> None:
    converted = []
    for i, tool in enumerate(tools):
        function = tool.get("function")
        if tool.get("type") != "function" or not isinstance(function, dict):
            raise refuse("Anthropic backends take only tools of type 'function'.", f"tools[{i}].type")
        entry = {
            "name": function["name"],
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if function.get("description"):
            entry["description"] = function["description"]
        converted.append(entry)
    out["tools"] = converted


def _tool_choice(choice: str | dict[str, Any], out: dict[str, Any]) -> None:
    if isinstance(choice, str):
        if choice not in _TOOL_CHOICES:
            raise refuse(f"Invalid 'tool_choice': {choice!r}.", "tool_choice")
        out["tool_choice"] = dict(_TOOL_CHOICES[choice])
        return
    name = (choice.get("function") or {}).get("name")
    if choice.get("type") != "function" or not name:
        raise refuse("'tool_choice' must be auto, required, none or a function by name.", "tool_choice")
    out["tool_choice"] = {"type": "tool", "name": name}


def _response_format(fmt: dict[str, Any], out: dict[str, Any]) -> None:
    """JSON output through a forced tool whose input schema is the requested one."""
    kind = fmt.get("type")
    if kind == "text":
        return
    if out.get("tools"):
        raise refuse(
            "'response_format' together with 'tools' is not supported by Anthropic backends.", "response_format"
        )
    if kind == "json_schema":
        spec = fmt.get("json_schema") or {}
        name, schema = spec.get("name") or "json_output", spec.get("schema") or {"type": "object"}
        description = spec.get("description") or "Answer with JSON that follows this schema."
    else:
        name, schema, description = "json_output", {"type": "object"}, "Answer with a JSON object."
    out["tools"] = [{"name": name, "description": description, "input_schema": schema}]
    out["tool_choice"] = {"type": "tool", "name": name}


_MAPPERS: dict[str, Callable[[Any, dict[str, Any]], None]] = {
    "temperature": _temperature,
    "stop": _stop,
    "user": _user,
    "tools": _tools,
    "tool_choice": _tool_choice,
}
#: Same name, same meaning (``top_k`` is vLLM's extension of chat completions and Anthropic's own).
_SAME = frozenset({"stream", "top_p", "top_k"})
#: Read by ``to_messages_request`` itself, not by a mapper.
_HANDLED = frozenset(
    {"model", "messages", "max_tokens", "max_completion_tokens", "response_format", "parallel_tool_calls"}
)


def _messages(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """System and developer text, and the turns as content blocks with same-role turns merged."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        role = message["role"]
        where = f"messages[{i}]"
        blocks: str | list[dict[str, Any]]
        if role in ("system", "developer"):
            system.append(_text(message.get("content"), f"{where}.content"))
            continue
        if role == "user":
            blocks = _user_blocks(message.get("content"), where)
        elif role == "assistant":
            blocks = _assistant_blocks(message, where)
        elif role == "tool":
            content = _text(message.get("content"), f"{where}.content")
            blocks = [{"type": "tool_result", "tool_use_id": message["tool_call_id"], "content": content}]
            role = "user"
        else:
            raise refuse(
                f"Messages with role '{role}' are not supported by Anthropic backends; use tools.", f"{where}.role"
            )
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] = [*_as_blocks(turns[-1]["content"]), *_as_blocks(blocks)]
        else:
            turns.append({"role": role, "content": blocks})
    return "\n\n".join(system), turns


def _as_blocks(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for j, part in enumerate(content or ()):
        if part.get("type") not in ("text", "refusal"):
            raise refuse(f"Only text is supported in {where} for Anthropic backends.", f"{where}[{j}].type")
        parts.append(part.get("text") or part.get("refusal") or "")
    return "".join(parts)


def _user_blocks(content: Any, where: str) -> str | list[dict[str, Any]]:
    """A user turn's content: a string stays a string (as Anthropic's own examples send it)."""
    if isinstance(content, str):
        return content
    blocks = []
    for j, part in enumerate(content or ()):
        kind = part.get("type")
        if kind == "text":
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif kind == "image_url":
            blocks.append(_image(part.get("image_url") or {}, f"{where}.content[{j}]"))
        else:
            raise refuse(
                f"Content of type '{kind}' is not supported by Anthropic backends.", f"{where}.content[{j}].type"
            )
    return blocks


def _image(image: dict[str, Any], where: str) -> dict[str, Any]:
    url = image.get("url") or ""
    if url.startswith("data:"):
        header, _, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if encoding != "base64" or not data:
            raise refuse("Image data URIs must be base64-encoded.", f"{where}.image_url.url")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _assistant_blocks(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    text = _text(message.get("content"), f"{where}.content")
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    for j, call in enumerate(message.get("tool_calls") or ()):
        function = call.get("function") or {}
        try:
            arguments = orjson.loads(function.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            arguments = None
        if not isinstance(arguments, dict):
            raise refuse("Tool call arguments must be a JSON object.", f"{where}.tool_calls[{j}].function.arguments")
        blocks.append({"type": "tool_use", "id": call.get("id"), "name": function.get("name"), "input": arguments})
    return blocks


# -- answers -------------------------------------------------------------------------------------


def to_chat_completion(message: dict[str, Any], *, structured: bool, created: int) -> dict[str, Any]:
    """A Messages API ``message`` as a ``chat.completion``."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            if structured:
                texts.append(arguments)
            else:
                calls.append(
                    {"id": block["id"], "type": "function", "function": {"name": block["name"], "arguments": arguments}}
                )
    finish = FINISH_REASONS.get(message.get("stop_reason") or "end_turn", "stop")
    if structured and finish == "tool_calls":
        finish = "stop"
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None, "refusal": None}
    if calls:
        reply["tool_calls"] = calls
    return {
        "id": message.get("id", "msg-gateway"),
        "object": "chat.completion",
        "created": created,
        "model": message.get("model", ""),
        "choices": [{"index": 0, "message": reply, "logprobs": None, "finish_reason": finish}],
        "usage": openai_usage(message.get("usage") or {}),
    }


class ChunkTranslator:
    """Anthropic stream events -> ``chat.completion.chunk`` dicts, one event at a time.

    ``message_start`` gives the role chunk, text and ``input_json_delta`` deltas give content and
    tool-call chunks, ``message_delta`` the finish chunk, ``message_stop`` the usage chunk.
    ``ping``, thinking and signature deltas give nothing; ``error`` events are the
    provider's to raise before they get here.
    """

    __slots__ = ("_base", "_structured", "_text_head", "_tools", "_usage")

    def __init__(self, *, structured: bool, created: int) -> None:
        self._structured = structured
        self._base: dict[str, Any] = {
            "id": "msg-gateway",
            "object": "chat.completion.chunk",
            "created": created,
            "model": "",
        }
        self._text_head = _text_head(self._base)
        self._tools: dict[int, int] = {}  # content block index -> tool call index
        self._usage: dict[str, Any] = {}

    def feed_encoded(self, event: dict[str, Any]) -> list[tuple[bytes, dict[str, Any]]]:
        """``feed``, each chunk with its JSON; a text delta (most events) is encoded from a template."""
        if event.get("type") == "content_block_delta":
            delta = event.get("delta")
            if delta and delta.get("type") == "text_delta":
                text = delta.get("text")
                if not text:
                    return []
                choice = {"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None}
                return [(self._text_head + orjson.dumps(text) + _TEXT_TAIL, {**self._base, "choices": [choice]})]
        return [(orjson.dumps(data), data) for data in self.feed(event)]

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        if kind == "content_block_delta":
            return self._delta(event)
        if kind == "content_block_start":
            return self._block(event)
        if kind == "message_start":
            message = event.get("message") or {}
            self._base = {**self._base, "id": message.get("id", "msg-gateway"), "model": message.get("model", "")}
            self._text_head = _text_head(self._base)
            self._usage = dict(message.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "message_delta":
            self._usage.update((k, v) for k, v in (event.get("usage") or {}).items() if v is not None)
            finish = FINISH_REASONS.get((event.get("delta") or {}).get("stop_reason") or "end_turn", "stop")
            return [self._chunk({}, "stop" if self._structured and finish == "tool_calls" else finish)]
        if kind == "message_stop":
            return [{**self._base, "choices": [], "usage": openai_usage(self._usage)}]
        return []

    def _block(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        block = event.get("content_block") or {}
        kind = block.get("type")
        if kind == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        if kind != "tool_use" or self._structured:
            return []
        index = self._tools[event.get("index", 0)] = len(self._tools)
        call = {
            "index": index,
            "id": block.get("id"),
            "type": "function",
            "function": {"name": block.get("name"), "arguments": ""},
        }
        return [self._chunk({"tool_calls": [call]})]

    def _delta(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        delta = event.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta":
            return [self._chunk({"content": delta.get("text", "")})] if delta.get("text") else []
        if kind != "input_json_delta" or not delta.get("partial_json"):
            return []
        if self._structured:
            return [self._chunk({"content": delta["partial_json"]})]
        index = self._tools.get(event.get("index", 0), 0)
        return [self._chunk({"tool_calls": [{"index": index, "function": {"arguments": delta["partial_json"]}}]})]

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**self._base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


#: A text chunk's JSON around its (encoded) text: ``_text_head(base)``, the text, ``_TEXT_TAIL``.
_TEXT_TAIL = b'},"logprobs":null,"finish_reason":null}]}'


def _text_head(base: dict[str, Any]) -> bytes:
    return orjson.dumps(base)[:-1] + b',"choices":[{"index":0,"delta":{"content":'
