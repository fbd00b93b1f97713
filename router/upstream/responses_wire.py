"""OpenAI Responses <-> chat completions, as pure functions: what lets every chat backend serve ``/v1/responses``.

Request side: ``chat_request`` turns a Responses body (``instructions``, ``input`` as a string or
items, function tools, ``text.format``, ...) plus the items of the conversation it continues into a
chat-completions body. Answer side: ``chat_to_response`` builds the ``response`` object from a
``chat.completion``, and ``StreamTranslator`` turns ``chat.completion.chunk`` deltas into the typed
Responses event sequence (``response.created`` ... ``response.completed``, or ``response.failed``)
with ``sequence_number``s. No I/O here: the endpoint (``router.endpoints.responses``) does that.

Only what a chat backend can do is accepted: function tools, text and image input, text output.
Hosted tools (web search, file search, ...) and file inputs are refused with a 400 naming the field.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from router.errors import InvalidRequestError

#: Responses fields that map one to one onto chat-completions fields.
_SAME_FIELDS = ("temperature", "top_p", "parallel_tool_calls", "user", "metadata", "top_logprobs")
#: Chat finish reasons that leave a response incomplete, and why.
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


# -- request -------------------------------------------------------------------------------------


def input_items(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's ``input`` as a list of items (a string is one user message)."""
    given = body.get("input")
    if given is None:
        return []
    if isinstance(given, str):
        return [{"type": "message", "role": "user", "content": given}]
    return list(given)


#: The id prefix of each item type the gateway names (``reasoning`` items come with theirs).
_ID_PREFIXES = {"message": "msg", "function_call": "fc", "function_call_output": "fco"}


def named_items(items: list[dict[str, Any]], base: str, start: int = 0) -> list[dict[str, Any]]:
    """``items`` each with an ``id``, as OpenAI names every item of a conversation: an item without one is
    named after its response (``base``: the response id without ``resp_``) and its position, from ``start``
    (``msg_{base}_in0``...: output items are ``msg_{base}_0``...)."""
    return [
        item if item.get("id") else {**item, "id": f"{_ID_PREFIXES.get(item.get('type', 'message'), 'item')}_{base}_in{i}"}
        for i, item in enumerate(items, start)
    ]


def chat_request(body: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
    """The chat-completions body for a Responses ``body`` continuing ``history`` (earlier items)."""
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    append_items(messages, history, "previous_response_id")
    append_items(messages, input_items(body), "input")
    if not messages:
        raise InvalidRequestError("Missing required parameter: 'input'.", param="input")
    chat: dict[str, Any] = {"model": body["model"], "messages": messages}
    if body.get("stream"):
        chat["stream"] = True
    for name in _SAME_FIELDS:
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    effort = (body.get("reasoning") or {}).get("effort")
    if effort is not None:
        chat["reasoning_effort"] = effort
    tools = [_chat_tool(tool, i) for i, tool in enumerate(body.get("tools") or ())]
    if tools:
        chat["tools"] = tools
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _chat_tool_choice(body["tool_choice"])
    text_format = (body.get("text") or {}).get("format")
    if text_format is not None:
        response_format = _chat_response_format(text_format)
        if response_format is not None:
            chat["response_format"] = response_format
    return chat


def append_items(messages: list[dict[str, Any]], items: list[dict[str, Any]], where: str) -> None:
    """Append Responses input (or earlier output) items to chat ``messages``.

    Consecutive ``function_call`` items join the assistant message before them, as a chat model
    emits text and tool calls in one message. Reasoning items are dropped: a chat backend cannot
    take them back.
    """
    for index, item in enumerate(items):
        param = f"{where}[{index}]"
        if not isinstance(item, dict):
            raise InvalidRequestError(f"Invalid value for '{param}': expected an object.", param=param)
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_chat_message(item, param))
        elif kind == "function_call":
            call = {
                "id": _required(item, "call_id", param),
                "type": "function",
                "function": {"name": _required(item, "name", param), "arguments": item.get("arguments") or ""},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            content = output if isinstance(output, str) else _joined_text(output, f"{param}.output")
            messages.append({"role": "tool", "tool_call_id": _required(item, "call_id", param), "content": content})
        elif kind != "reasoning":
            raise InvalidRequestError(
                f"Invalid value for '{param}.type': {kind!r} items are not supported by this gateway "
                "(supported: message, function_call, function_call_output, reasoning).",
                param=f"{param}.type",
            )


def _required(item: dict[str, Any], name: str, param: str) -> Any:
    value = item.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidRequestError(f"Missing required parameter: '{param}.{name}'.", param=f"{param}.{name}")
    return value


def _chat_message(item: dict[str, Any], param: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in ("user", "system", "developer", "assistant"):
        raise InvalidRequestError(
            f"Invalid value for '{param}.role': {role!r}; expected user, system, developer or assistant.",
            param=f"{param}.role",
        )
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise InvalidRequestError(f"Missing required parameter: '{param}.content'.", param=f"{param}.content")
    if role == "assistant":
        return {"role": role, "content": _joined_text(content, f"{param}.content")}
    return {"role": role, "content": [_chat_part(part, f"{param}.content[{i}]") for i, part in enumerate(content)]}


def _chat_part(part: Any, param: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text"):
        return {"type": "text", "text": part.get("text") or ""}
    if kind == "input_image" and part.get("image_url"):
        image = {"url": part["image_url"]}
        if part.get("detail"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    raise InvalidRequestError(
        f"Invalid value for '{param}': content parts of type {kind!r} are not supported by this gateway "
        "(supported: input_text, input_image with image_url).",
        param=param,
    )


def _joined_text(parts: Any, param: str) -> str:
    """The text of output or tool-output parts (``output_text``, ``input_text``, ``refusal``), joined."""
    if not isinstance(parts, list):
        raise InvalidRequestError(f"Invalid value for '{param}': expected a string or a list of parts.", param=param)
    texts = []
    for i, part in enumerate(parts):
        if not isinstance(part, dict) or part.get("type") not in ("output_text", "input_text", "refusal"):
            raise InvalidRequestError(f"Invalid value for '{param}[{i}]': expected a text part.", param=f"{param}[{i}]")
        texts.append(part.get("text") or part.get("refusal") or "")
    return "".join(texts)


def _chat_tool(tool: Any, index: int) -> dict[str, Any]:
    param = f"tools[{index}]"
    if not isinstance(tool, dict) or tool.get("type") != "function":
        kind = tool.get("type") if isinstance(tool, dict) else None
        raise InvalidRequestError(
            f"Invalid value for '{param}.type': {kind!r} tools are not supported by this gateway; only function tools.",
            param=f"{param}.type",
        )
    function = {"name": _required(tool, "name", param)}
    for key in ("description", "parameters", "strict"):
        if tool.get(key) is not None:
            function[key] = tool[key]
    return {"type": "function", "function": function}


def _chat_tool_choice(choice: Any) -> Any:
    if isinstance(choice, str):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and choice.get("name"):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise InvalidRequestError(
        "Invalid value for 'tool_choice': use 'auto', 'none', 'required' or {'type': 'function', 'name': ...}.",
        param="tool_choice",
    )


def _chat_response_format(text_format: Any) -> dict[str, Any] | None:
    kind = text_format.get("type") if isinstance(text_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = {key: text_format[key] for key in ("name", "schema", "strict", "description") if key in text_format}
        return {"type": "json_schema", "json_schema": schema}
    raise InvalidRequestError(
        "Invalid value for 'text.format.type': expected text, json_object or json_schema.", param="text.format.type"
    )


def input_item_page(
    items: list[dict[str, Any]], base: str, *, order: str, after: str | None, limit: int
) -> dict[str, Any]:
    """One page of ``GET /v1/responses/{id}/input_items`` in OpenAI's list shape: ``items`` (oldest first,
    each named by ``named_items``) in ``order``, the ``limit`` after the item ``after``."""
    ordered = [_listed(item) for item in named_items(items, base)]
    if order == "desc":
        ordered.reverse()
    start = 0
    if after is not None:
        start = next((i + 1 for i, item in enumerate(ordered) if item["id"] == after), -1)
        if start < 0:
            raise InvalidRequestError(f"No input item with id '{after}' in this response.", param="after")
    page = ordered[start : start + limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": start + limit < len(ordered),
    }


def _listed(item: dict[str, Any]) -> dict[str, Any]:
    """A stored input item as OpenAI lists it: typed, with its content as parts and a status."""
    kind = item.get("type", "message")
    if kind != "message":
        return {"status": "completed", **item}
    content = item.get("content")
    if isinstance(content, str):
        content = [text_part(content) if item.get("role") == "assistant" else {"type": "input_text", "text": content}]
    return {
        "id": item["id"],
        "type": "message",
        "role": item.get("role"),
        "content": content,
        "status": item.get("status") or "completed",
    }


# -- answer --------------------------------------------------------------------------------------


def response_shell(response_id: str, body: dict[str, Any], model: str, created_at: int | None = None) -> dict[str, Any]:
    """A ``response`` object without output: what every answer and event echoes of the request."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()) if created_at is None else created_at,
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "metadata": body.get("metadata") or {},
        "model": model,
        "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": (body.get("reasoning") or {}).get("effort"), "summary": None},
        "store": body.get("store", True),
        "temperature": body.get("temperature"),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p"),
        "truncation": body.get("truncation") or "disabled",
        "usage": None,
        "user": body.get("user"),
    }


def response_usage(usage: Any) -> dict[str, Any] | None:
    """A chat ``usage`` object in the Responses shape (None if the upstream sent none)."""
    if not isinstance(usage, dict):
        return None
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": int(usage.get("total_tokens") or prompt + completion),
    }


def finish(response: dict[str, Any], finish_reason: str | None, usage: Any) -> dict[str, Any]:
    """Set the final status, incomplete details and usage of ``response`` (in place, and return it)."""
    reason = _INCOMPLETE.get(finish_reason or "")
    response["status"] = "incomplete" if reason else "completed"
    response["incomplete_details"] = {"reason": reason} if reason else None
    response["usage"] = response_usage(usage)
    return response


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [text_part(text)] if status != "in_progress" else [],
    }


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def function_call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str = "completed"
) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def chat_to_response(completion: dict[str, Any], shell: dict[str, Any]) -> dict[str, Any]:
    """The finished ``response`` for a ``chat.completion`` (its first choice), built on ``shell``."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    finish_reason = choice.get("finish_reason")
    done = "incomplete" if finish_reason in _INCOMPLETE else "completed"
    base = shell["id"].removeprefix("resp_")
    output: list[dict[str, Any]] = []
    if message.get("content") or message.get("refusal") or not message.get("tool_calls"):
        item = message_item(f"msg_{base}", message.get("content") or "", done)
        if message.get("refusal"):
            item["content"] = [{"type": "refusal", "refusal": message["refusal"]}]
        output.append(item)
    for index, call in enumerate(message.get("tool_calls") or ()):
        function = call.get("function") or {}
        output.append(
            function_call_item(
                f"fc_{base}_{index}",
                call.get("id") or f"call_{base}_{index}",
                function.get("name") or "",
                function.get("arguments") or "",
                done,
            )
        )
    response = {**shell, "model": completion.get("model") or shell["model"], "output": output}
    return finish(response, finish_reason, completion.get("usage"))


#: ``sse`` of a ``response.output_text.delta`` event, as a template: its sequence number, where the text goes
#: (``_TEXT_PLACE``) and the delta JSON-encoded.
_TEXT_DELTA_SSE = (
    b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":%d,'
    b'%s,"delta":%s,"logprobs":[]}\n\n'
)
#: The open text part's place in a ``response.output_text.delta`` event (ids are ``[a-z0-9_]``).
_TEXT_PLACE = b'"item_id":"%s","output_index":%d,"content_index":%d'


def sse(events: list[dict[str, Any]]) -> bytes:
    """Responses events as server-sent events, each with its ``event:`` line, as OpenAI sends them."""
    return b"".join(b"event: %s\ndata: %s\n\n" % (e["type"].encode(), orjson.dumps(e)) for e in events)


def response_event_sse(event: dict[str, Any], response: bytes) -> bytes:
    """``sse([event])`` for an event carrying a ``response`` (``response.completed``...) already encoded."""
    kind = event["type"].encode()
    return b'event: %s\ndata: {"type":"%s","sequence_number":%d,"response":%s}\n\n' % (
        kind,
        kind,
        event["sequence_number"],
        response,
    )


class StreamTranslator:
    """``chat.completion.chunk`` dicts in, Responses stream events (dicts, numbered) out.

    ``start`` gives the opening events, ``feed`` the events for one chunk, ``close`` the closing
    ones (``response.completed`` or ``response.incomplete``), ``fail`` those of a stream that broke
    (``response.failed`` carrying what was produced so far). Only the first choice is translated.
    """

    def __init__(self, shell: dict[str, Any]) -> None:
        self.response = shell
        self._base = shell["id"].removeprefix("resp_")
        #: The next event's sequence number (a relay of a native stream moves it on before ``fail``).
        self.sequence = 0
        self._output: list[dict[str, Any]] = []
        #: The item being produced: its output index, or None.
        self._open: int | None = None
        #: Chat tool-call index -> output index of its function_call item.
        self._calls: dict[int, int] = {}
        self.finish_reason: str | None = None
        self.usage: Any = None
        #: While the open item's last part is output text: its place in a delta event (``_TEXT_PLACE``)...
        self._text_place: bytes | None = None
        #: ... and the deltas ``feed_sse`` framed that are not yet in its ``text`` (joined once, by ``_settle``).
        self._pieces: list[str] = []

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def _snapshot(self, status: str) -> dict[str, Any]:
        return {**self.response, "status": status, "output": list(self._output)}

    def start(self) -> list[dict[str, Any]]:
        snapshot = self._snapshot("in_progress")
        return [
            self._event("response.created", response=snapshot),
            self._event("response.in_progress", response=snapshot),
        ]

    def start_sse(self) -> bytes:
        """``sse(self.start())``, with the snapshot both events carry encoded once."""
        created, in_progress = self.start()
        snapshot = orjson.dumps(created["response"])
        return response_event_sse(created, snapshot) + response_event_sse(in_progress, snapshot)

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        self._settle()
        events: list[dict[str, Any]] = []
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0):
                continue
            delta = choice.get("delta")
            if delta:
                text = delta.get("content")
                if text:
                    self._text(text, events)
                if delta.get("refusal"):
                    self._text(delta["refusal"], events, "refusal")
                for call in delta.get("tool_calls") or ():
                    events += self._tool_call(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return events

    def feed_sse(self, chunks: list[dict[str, Any]]) -> bytes:
        """``sse`` of ``feed`` of each chunk. A text delta to the open text part (most chunks) is framed from
        a template, without building its event, and its text is kept as a piece to join once."""
        frames = []
        for chunk in chunks:
            place = self._text_place
            if place is not None:
                choices = chunk.get("choices")
                if choices and len(choices) == 1 and not chunk.get("usage"):
                    choice = choices[0]
                    delta = choice.get("delta")
                    if (
                        delta
                        and not choice.get("finish_reason")
                        and not choice.get("index")
                        and not delta.get("tool_calls")
                        and not delta.get("refusal")
                    ):
                        text = delta.get("content")
                        if text and isinstance(text, str):
                            self._pieces.append(text)
                            frames.append(_TEXT_DELTA_SSE % (self.sequence, place, orjson.dumps(text)))
                            self.sequence += 1
                            continue
            frames.append(sse(self.feed(chunk)))
        return b"".join(frames)

    def _settle(self) -> None:
        """Join the pieces ``feed_sse`` kept into the open text part."""
        if self._pieces:
            assert self._open is not None
            part = self._output[self._open]["content"][-1]
            part["text"] += "".join(self._pieces)
            self._pieces.clear()

    def _text(self, text: str, events: list[dict[str, Any]], kind: str = "output_text") -> None:
        """Append the events for a text (or refusal) delta, opening a message item and content part as needed."""
        index = self._open
        item = self._output[index] if index is not None else None
        if item is None or item["type"] != "message":
            events += self._close_open()
            index = self._open = len(self._output)
            item = message_item(f"msg_{self._base}_{index}", "", "in_progress")
            self._output.append(item)
            events.append(self._event("response.output_item.added", output_index=index, item=dict(item, content=[])))
        parts = item["content"]
        if not parts or parts[-1]["type"] != kind:
            part = text_part("") if kind == "output_text" else {"type": "refusal", "refusal": ""}
            parts.append(part)
            events.append(
                self._event(
                    "response.content_part.added",
                    item_id=item["id"],
                    output_index=index,
                    content_index=len(parts) - 1,
                    part=dict(part),
                )
            )
        part = parts[-1]
        sequence = self.sequence
        self.sequence = sequence + 1
        event = {
            "type": f"response.{kind}.delta",
            "sequence_number": sequence,
            "item_id": item["id"],
            "output_index": index,
            "content_index": len(parts) - 1,
            "delta": text,
        }
        if kind == "output_text":
            part["text"] += text
            event["logprobs"] = []
            self._text_place = _TEXT_PLACE % (item["id"].encode(), index, len(parts) - 1)
        else:
            part["refusal"] += text
            self._text_place = None
        events.append(event)

    def _tool_call(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        position = call.get("index", 0)
        function = call.get("function") or {}
        index = self._calls.get(position)
        if index is None:
            events += self._close_open()
            index = self._calls[position] = self._open = len(self._output)
            item = function_call_item(
                f"fc_{self._base}_{index}",
                call.get("id") or f"call_{self._base}_{index}",
                function.get("name") or "",
                "",
                "in_progress",
            )
            self._output.append(item)
            events.append(self._event("response.output_item.added", output_index=index, item=dict(item)))
        item = self._output[index]
        arguments = function.get("arguments") or ""
        if arguments:
            item["arguments"] += arguments
            events.append(
                self._event(
                    "response.function_call_arguments.delta", item_id=item["id"], output_index=index, delta=arguments
                )
            )
        return events

    def _close_open(self) -> list[dict[str, Any]]:
        """The ``.done`` events of the item being produced, if any."""
        self._settle()
        self._text_place = None
        index, self._open = self._open, None
        if index is None:
            return []
        item = self._output[index]
        item["status"] = "incomplete" if self.finish_reason in _INCOMPLETE else "completed"
        if item["type"] == "message":
            events = []
            for position, part in enumerate(item["content"]):
                fields = {"item_id": item["id"], "output_index": index, "content_index": position}
                if part["type"] == "output_text":
                    events.append(self._event("response.output_text.done", **fields, text=part["text"], logprobs=[]))
                else:
                    events.append(self._event("response.refusal.done", **fields, refusal=part["refusal"]))
                events.append(self._event("response.content_part.done", **fields, part=dict(part)))
            return [*events, self._event("response.output_item.done", output_index=index, item=_copy(item))]
        return [
            self._event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                name=item["name"],
                arguments=item["arguments"],
            ),
            self._event("response.output_item.done", output_index=index, item=_copy(item)),
        ]

    def close(self) -> list[dict[str, Any]]:
        """The closing events of a stream that ended normally; ``self.response`` is then the final response."""
        events = self._close_open()
        if not self._output:  # an empty answer is still one (empty) message, as a chat client would see it
            item = message_item(f"msg_{self._base}_0", "")
            self._output.append(item)
            events.append(
                self._event(
                    "response.output_item.added", output_index=0, item=dict(item, content=[], status="in_progress")
                )
            )
            events.append(self._event("response.output_item.done", output_index=0, item=_copy(item)))
        self.response = finish(self._snapshot("completed"), self.finish_reason, self.usage)
        kind = "response.incomplete" if self.response["status"] == "incomplete" else "response.completed"
        return [*events, self._event(kind, response=self.response)]

    def fail(self, code: str | None, message: str) -> list[dict[str, Any]]:
        """The closing event of a stream that broke after it started: ``response.failed``."""
        self._settle()
        self._text_place = None
        for item in self._output:
            if item["status"] == "in_progress":
                item["status"] = "incomplete"
        self._open = None
        self.response = self._snapshot("failed")
        self.response["usage"] = response_usage(self.usage)
        # The SDK knows a closed set of codes; the gateway's own code goes into the message.
        self.response["error"] = {"code": "server_error", "message": f"{message} ({code})" if code else message}
        return [self._event("response.failed", response=self.response)]


def _copy(item: dict[str, Any]) -> dict[str, Any]:
    copied = dict(item)
    if "content" in copied:
        copied["content"] = [dict(part) for part in copied["content"]]
    return copied
