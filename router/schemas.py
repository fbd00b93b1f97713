"""The OpenAI chat-completions request as the gateway accepts it.

The gateway forwards the client's JSON untouched except for ``model`` (and stream usage), so it
validates only what it relies on or what the upstream would reject anyway, and keeps the parsed
dict for forwarding instead of building a model of the whole request.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, with_config
from typing_extensions import Required, TypedDict

from router.errors import InvalidRequestError

_OPEN = ConfigDict(extra="allow")

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


@with_config(_OPEN)
class ContentPart(TypedDict):
    type: Required[str]


@with_config(_OPEN)
class Message(TypedDict, total=False):
    role: Required[Role]
    content: str | list[ContentPart] | None
    name: str | None
    # ``message.model_dump()`` of an SDK answer, replayed as history by agent code, sets these to null.
    tool_calls: list[dict[str, Any]] | None
    tool_call_id: str | None


@with_config(_OPEN)
class FunctionDef(TypedDict, total=False):
    name: Required[str]
    description: str
    parameters: dict[str, Any]


@with_config(_OPEN)
class Tool(TypedDict, total=False):
    type: Required[str]
    function: FunctionDef


@with_config(_OPEN)
class StreamOptions(TypedDict, total=False):
    include_usage: bool | None


@with_config(_OPEN)
class ResponseFormat(TypedDict, total=False):
    type: Required[Literal["text", "json_object", "json_schema"]]


@with_config(_OPEN)
class ChatRequest(TypedDict, total=False):
    model: Required[str]
    messages: Required[list[Message]]
    stream: bool | None
    stream_options: StreamOptions | None
    max_tokens: Annotated[int, Field(ge=1)] | None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None
    n: Annotated[int, Field(ge=1, le=128)] | None
    temperature: Annotated[float, Field(ge=0, le=2)] | None
    top_p: Annotated[float, Field(ge=0, le=1)] | None
    tools: list[Tool] | None
    tool_choice: str | dict[str, Any] | None
    response_format: ResponseFormat | None


_VALIDATOR = TypeAdapter(ChatRequest)
#: The deepest JSON nesting a request may have: what orjson can encode when forwarding it.
MAX_DEPTH = 254
#: Roles whose messages must carry content, as OpenAI checks (an assistant's may be null beside tool calls).
_CONTENT_REQUIRED = frozenset({"system", "developer", "user", "tool"})


def parse_chat_request(body: bytes) -> dict[str, Any]:
    """Decode and check a chat-completions body; raise ``InvalidRequestError`` naming the bad field."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(
            f"We could not parse the JSON body of your request ({exc}). "
            "The API expects a JSON object with `model` and `messages`."
        ) from exc
    if not isinstance(data, dict):
        raise InvalidRequestError("The request body must be a JSON object with `model` and `messages`.")
    if body.count(b"{") + body.count(b"[") > MAX_DEPTH:  # only a body this rich can nest this deep
        _check_depth(data)
    try:
        _VALIDATOR.validate_python(data, strict=True)
    except ValidationError as exc:
        raise invalid_request(exc) from exc
    if not data["messages"]:
        raise InvalidRequestError("'messages' must contain at least one message.", param="messages")
    for index, message in enumerate(data["messages"]):
        role = message["role"]
        if role in _CONTENT_REQUIRED and message.get("content") is None:
            raise InvalidRequestError(
                f"Missing required parameter: 'messages[{index}].content' (a {role} message needs content).",
                param=f"messages[{index}].content",
            )
        if role == "tool" and message.get("tool_call_id") is None:
            raise InvalidRequestError(
                f"Missing required parameter: 'messages[{index}].tool_call_id'.", param=f"messages[{index}].tool_call_id"
            )
    if data.get("stream_options") is not None and not data.get("stream"):
        raise InvalidRequestError(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.", param="stream_options"
        )
    return data


def _check_depth(data: dict[str, Any]) -> None:
    """Refuse what could be decoded but not encoded again for the upstream (orjson nests 1024 levels
    deep when decoding, 254 when encoding)."""
    try:
        orjson.dumps(data)
    except orjson.JSONEncodeError as exc:
        raise InvalidRequestError(f"The request body nests JSON more than {MAX_DEPTH} levels deep.") from exc


def invalid_request(exc: ValidationError) -> InvalidRequestError:
    # In a union every branch reports; the one that got deepest says what was meant.
    error = max(exc.errors(include_url=False), key=lambda e: len(e["loc"]))
    param = _param(error["loc"])
    if error["type"] == "missing":
        return InvalidRequestError(f"Missing required parameter: '{param}'.", param=param)
    return InvalidRequestError(f"Invalid value for '{param}': {error['msg']}.", param=param)


def _param(loc: tuple[int | str, ...]) -> str:
    """``("messages", 0, "role")`` -> ``messages[0].role``, skipping pydantic's union-branch labels."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _UNION_LABELS or "[" in part:
            continue
        else:
            out += f".{part}" if out else part
    return out


_UNION_LABELS = {"str", "list", "none", "int", "float", "bool", "dict", "function-after"}
