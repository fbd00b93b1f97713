"""The gateway as an Anthropic server: Messages API requests in, chat completions back out as messages.

``parse_messages_request`` checks a ``POST /v1/messages`` body the way Anthropic does (errors name
the field), ``to_chat_request`` turns it into the chat-completions body the pipeline routes and
every backend kind accepts, and ``to_message`` / ``EventTranslator`` turn the answer back.

Anthropic backends are sent the request itself (``router.endpoints.messages``); this translation
routes it, and is what the others are sent. Dropped on the way, as hints with no chat-completions
equivalent: ``cache_control`` on any block, ``top_k``, ``service_tier``, ``is_error`` on tool results,
``thinking`` (and the thinking blocks of the history), ``context_management`` (a beta). Left out and
named (``to_chat_request``'s second result), so that only Anthropic backends serve the request:
server tools (``web_search`` and other typed tools), ``document`` and other blocks chat has no place
for, images inside tool results or from the Files API. Unknown top-level fields are refused with a
400 naming the field, as Anthropic refuses them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Required

import orjson
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict

from router.anthropic_wire import ERROR_STATUS, STOP_REASONS, anthropic_usage
from router.errors import InvalidRequestError
from router.schemas import invalid_request

_OPEN = ConfigDict(extra="allow")
#: Error ``type`` for a status; statuses Anthropic has no type for fall back by class.
ERROR_TYPES = {status: kind for kind, status in ERROR_STATUS.items()} | {502: "api_error", 503: "overloaded_error"}


@with_config(_OPEN)
class Block(TypedDict):
    type: Required[str]


@with_config(_OPEN)
class Turn(TypedDict):
    role: Required[Literal["user", "assistant"]]
    content: Required[str | list[Block]]


@with_config(ConfigDict(extra="forbid"))
class CountTokensRequest(TypedDict, total=False):
    model: Required[str]
    messages: Required[list[Turn]]
    system: str | list[Block]
    tools: list[dict[str, Any]]
    tool_choice: dict[str, Any]
    thinking: dict[str, Any]
    context_management: dict[str, Any]


@with_config(ConfigDict(extra="forbid"))
class MessagesRequest(CountTokensRequest, total=False):
    max_tokens: Required[Annotated[int, Field(ge=1)]]
    stream: bool
    temperature: Annotated[float, Field(ge=0, le=1)]
    top_p: Annotated[float, Field(ge=0, le=1)]
    top_k: Annotated[int, Field(ge=0)]
    stop_sequences: list[str]
    metadata: dict[str, Any]
    service_tier: str


_VALIDATORS: dict[bool, TypeAdapter[Any]] = {True: TypeAdapter(MessagesRequest), False: TypeAdapter(CountTokensRequest)}
_TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}


def parse_messages_request(raw: bytes, *, generate: bool = True) -> dict[str, Any]:
    """Decode and check a ``/v1/messages`` body (``generate=False``: a ``count_tokens`` body)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"The request body is not valid JSON ({exc}).") from exc
    if not isinstance(data, dict):
        raise InvalidRequestError("The request body must be a JSON object with `model` and `messages`.")
    try:
        _VALIDATORS[generate].validate_python(data, strict=True)
    except ValidationError as exc:
        raise invalid_request(exc) from exc
    if not data["messages"]:
        raise InvalidRequestError("messages: at least one message is required.", param="messages")
    if isinstance(data.get("system"), list):
        for j, block in enumerate(data["system"]):
            _check_block(block, f"system.{j}")
    for i, turn in enumerate(data["messages"]):
        if isinstance(turn["content"], list):
            for j, block in enumerate(turn["content"]):
                _check_block(block, f"messages.{i}.content.{j}")
    return data


#: The fields each content block the gateway translates must have, as Anthropic requires them.
_BLOCK_FIELDS: dict[str, tuple[tuple[str, type], ...]] = {
    "text": (("text", str),),
    "image": (("source", dict),),
    "tool_use": (("id", str), ("name", str), ("input", dict)),
    "tool_result": (("tool_use_id", str),),
}
_TYPE_NAMES: dict[type, str] = {str: "a valid string", dict: "a valid dictionary"}


def _check_block(block: dict[str, Any], where: str) -> None:
    for name, kind in _BLOCK_FIELDS.get(block["type"], ()):
        value = block.get(name)
        if not isinstance(value, kind):
            problem = "Field required" if value is None else f"Input should be {_TYPE_NAMES[kind]}"
            raise InvalidRequestError(f"{where}.{name}: {problem}", param=f"{where}.{name}")


_THINKING = frozenset({"thinking", "redacted_thinking"})


def to_chat_request(body: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """A checked Messages API body as a chat-completions body, and the fields (dotted paths) that body
    leaves out because only Anthropic backends take them: server tools, and content blocks chat has no
    place for (documents, search results, server tool results in the history, images in tool results,
    images from the Files API)."""
    dropped: list[str] = []
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        messages.append({"role": "system", "content": _text(system, "system", dropped)})
    for i, turn in enumerate(body["messages"]):
        messages.extend(_turn(turn, f"messages.{i}", dropped))
    out: dict[str, Any] = {"model": body["model"], "messages": messages}
    for key in ("max_tokens", "stream", "temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("stop_sequences"):
        out["stop"] = body["stop_sequences"]
    user = (body.get("metadata") or {}).get("user_id")
    if user:
        out["user"] = user
    tools = []
    for i, tool in enumerate(body.get("tools") or ()):
        if tool.get("type", "custom") == "custom":
            tools.append(_tool(tool, f"tools.{i}"))
        else:  # a server tool (web_search, code_execution, ...)
            dropped.append(f"tools.{i}")
    if tools:
        out["tools"] = tools
        choice = body.get("tool_choice")
        if choice:
            out["tool_choice"] = _tool_choice(choice)
            if choice.get("disable_parallel_tool_use"):
                out["parallel_tool_calls"] = False
    return out, tuple(dropped)


def _text(content: str | list[dict[str, Any]], where: str, dropped: list[str]) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for i, block in enumerate(content):
        if block["type"] == "text":
            parts.append(block.get("text", ""))
        else:
            dropped.append(f"{where}.{i}")
    return "".join(parts)


def _turn(turn: dict[str, Any], where: str, dropped: list[str]) -> list[dict[str, Any]]:
    """One Anthropic turn as chat messages: a user turn's tool results become tool messages first."""
    content = turn["content"]
    role = turn["role"]
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if role == "assistant":
        return [_assistant(content, where, dropped)]
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        kind = block["type"]
        if kind == "tool_result":
            result = block.get("content")
            text = "" if result is None else _text(result, f"{where}.content.{i}.content", dropped)
            out.append({"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text})
        elif kind == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif kind == "image" and (url := _image_url(block.get("source") or {})) is not None:
            parts.append({"type": "image_url", "image_url": {"url": url}})
        else:
            dropped.append(f"{where}.content.{i}")
    if parts:
        out.append({"role": "user", "content": parts})
    return out


def _assistant(content: list[dict[str, Any]], where: str, dropped: list[str]) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        kind = block["type"]
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": arguments},
                }
            )
        elif kind not in _THINKING:  # server tool use and results (web search, ...)
            dropped.append(f"{where}.content.{i}")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _image_url(source: dict[str, Any]) -> str | None:
    """An image's URL as chat takes it (a data URI for base64), or None for a source chat has no form of."""
    if source.get("type") == "base64":
        return f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    if source.get("type") == "url":
        return str(source.get("url", ""))
    return None


def _tool(tool: dict[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(tool.get("name"), str) or not isinstance(tool.get("input_schema"), dict):
        raise InvalidRequestError(f"{where}: a tool needs a `name` and an `input_schema`.", param=where)
    function: dict[str, Any] = {"name": tool["name"], "parameters": tool["input_schema"]}
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _tool_choice(choice: dict[str, Any]) -> str | dict[str, Any]:
    kind = choice.get("type")
    if kind == "tool":
        return {"type": "function", "function": {"name": choice.get("name")}}
    if kind not in _TOOL_CHOICES:
        raise InvalidRequestError(f"tool_choice.type: unknown value {kind!r}.", param="tool_choice.type")
    return _TOOL_CHOICES[kind]


# -- answers -------------------------------------------------------------------------------------


def message_id(completion_id: str) -> str:
    return completion_id if completion_id.startswith("msg_") else f"msg_{completion_id}"


def to_message(completion: dict[str, Any]) -> dict[str, Any]:
    """A ``chat.completion`` as a Messages API ``message`` (its first choice; Anthropic has no ``n``)."""
    choice = (completion.get("choices") or [{}])[0]
    reply = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if reply.get("content"):
        content.append({"type": "text", "text": reply["content"]})
    for call in reply.get("tool_calls") or ():
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": _arguments(function.get("arguments")),
            }
        )
    stop = (
        "tool_use" if reply.get("tool_calls") else STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn")
    )
    return {
        "id": message_id(str(completion.get("id", "gateway"))),
        "type": "message",
        "role": "assistant",
        "model": completion.get("model", ""),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": anthropic_usage(completion.get("usage")),
    }


def _arguments(arguments: str | None) -> dict[str, Any]:
    """Tool-call arguments as ``input``; text that is not a JSON object is kept under ``arguments``."""
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {"arguments": arguments}
    return value if isinstance(value, dict) else {"arguments": value}


class EventTranslator:
    """``chat.completion.chunk`` dicts -> Anthropic stream events, in Anthropic's order.

    ``start`` gives ``message_start`` (with ``input_tokens``, the prompt's estimate: an OpenAI-compatible
    backend reports usage only at the end) and a ``ping``; ``feed`` opens, fills and closes content
    blocks (text, ``tool_use`` with ``input_json_delta``); ``finish`` closes the last block and gives
    ``message_delta`` (stop reason and the reported usage, input tokens included) and ``message_stop``.
    """

    __slots__ = ("_block", "_id", "_index", "_input_tokens", "_model", "_stop", "_tool", "_usage")

    def __init__(self, completion_id: str, model: str, input_tokens: int = 0) -> None:
        self._id = message_id(completion_id)
        self._model = model
        self._input_tokens = input_tokens
        self._index = -1  # the open content block's index
        self._block: str | None = None  # its type
        self._tool: int | None = None  # the OpenAI index of the tool call it holds
        self._stop = "end_turn"
        self._usage: dict[str, Any] | None = None

    def start(self) -> list[dict[str, Any]]:
        message: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self._input_tokens, "output_tokens": 0},
        }
        return [{"type": "message_start", "message": message}, {"type": "ping"}]

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                if self._block != "text":
                    events += self._open({"type": "text", "text": ""})
                events.append(self._delta({"type": "text_delta", "text": delta["content"]}))
            for call in delta.get("tool_calls") or ():
                index = call.get("index", 0)
                function = call.get("function") or {}
                if self._block != "tool_use" or index != self._tool:
                    events += self._open(
                        {"type": "tool_use", "id": call.get("id"), "name": function.get("name"), "input": {}}
                    )
                    self._tool = index
                if function.get("arguments"):
                    events.append(self._delta({"type": "input_json_delta", "partial_json": function["arguments"]}))
            if choice.get("finish_reason"):
                self._stop = STOP_REASONS.get(choice["finish_reason"], "end_turn")
        return events

    def feed_sse(self, chunk: dict[str, Any]) -> bytes:
        """``sse_events(self.feed(chunk))``; a text delta to the open text block (most chunks) is framed directly."""
        choices = chunk.get("choices")
        if self._block == "text" and choices and len(choices) == 1 and not chunk.get("usage"):
            choice = choices[0]
            delta = choice.get("delta")
            text = delta.get("content") if delta else None
            if text and not choice.get("index") and not choice.get("finish_reason") and not delta.get("tool_calls"):
                return _TEXT_DELTA_SSE % (self._index, orjson.dumps(text))
        return sse_events(self.feed(chunk))

    def finish(self) -> list[dict[str, Any]]:
        events = self._close()
        usage = anthropic_usage(self._usage)
        if self._tool is not None:
            self._stop = "tool_use"
        events.append(
            {"type": "message_delta", "delta": {"stop_reason": self._stop, "stop_sequence": None}, "usage": usage}
        )
        events.append({"type": "message_stop"})
        return events

    def _open(self, block: dict[str, Any]) -> list[dict[str, Any]]:
        events = self._close()
        self._index += 1
        self._block = block["type"]
        events.append({"type": "content_block_start", "index": self._index, "content_block": block})
        return events

    def _close(self) -> list[dict[str, Any]]:
        if self._block is None:
            return []
        self._block = None
        return [{"type": "content_block_stop", "index": self._index}]

    def _delta(self, delta: dict[str, Any]) -> dict[str, Any]:
        return {"type": "content_block_delta", "index": self._index, "delta": delta}


def sse_event(event: dict[str, Any]) -> bytes:
    """One event framed as Anthropic frames it: ``event: <type>`` then ``data: <json>``."""
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def sse_events(events: list[dict[str, Any]]) -> bytes:
    """Several events framed as ``sse_event`` frames each, in one buffer."""
    return b"".join(map(sse_event, events))


_TEXT_DELTA_SSE = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
    b'"delta":{"type":"text_delta","text":%s}}\n\n'
)


def error_body(status: int, message: str, kind: str | None = None) -> dict[str, Any]:
    """Anthropic's error shape: ``{"type": "error", "error": {"type", "message"}}``, of type ``kind`` where
    that is one of Anthropic's (an Anthropic backend's own), else the type of ``status``."""
    if kind not in ERROR_STATUS:
        kind = ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}
