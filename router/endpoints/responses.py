"""``POST /v1/responses`` (and ``GET``/``DELETE /v1/responses/{id}``): the Responses API on chat backends.

The request is translated to chat completions (``router.upstream.responses_wire``), routed and
served exactly like a chat request, and the answer translated back: a ``response`` object, or the
typed event stream. With ``store`` (OpenAI's default: true) the response and its conversation are
kept in the ``ResponseStore``, so ``previous_response_id`` continues it; stored responses belong to
the client's tenant (else its key) and read as 404 for anyone else.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any

import orjson
from fastapi import Request
from fastapi.responses import Response
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, with_config
from typing_extensions import Required, TypedDict

from router.api import _begin
from router.auth import ClientKey
from router.endpoints.translated import TranslatedEndpoint
from router.errors import GatewayError, InvalidRequestError, NotFoundError
from router.gateway import Gateway
from router.response_store import ResponseStore
from router.schemas import _invalid
from router.upstream.responses_wire import StreamTranslator, chat_request, chat_to_response, input_items, response_shell


@with_config(ConfigDict(extra="allow"))
class ResponsesRequest(TypedDict, total=False):
    model: Required[str]
    input: str | list[dict[str, Any]] | None
    instructions: str | None
    stream: bool | None
    store: bool | None
    previous_response_id: str | None
    max_output_tokens: Annotated[int, Field(ge=1)] | None
    temperature: Annotated[float, Field(ge=0, le=2)] | None
    top_p: Annotated[float, Field(ge=0, le=1)] | None
    tools: list[dict[str, Any]] | None
    tool_choice: str | dict[str, Any] | None
    text: dict[str, Any] | None
    reasoning: dict[str, Any] | None
    metadata: dict[str, str] | None
    parallel_tool_calls: bool | None


_VALIDATOR = TypeAdapter(ResponsesRequest)
#: Request fields whose feature the gateway does not have; refused rather than silently ignored.
_UNSUPPORTED = ("conversation", "background", "prompt")


def parse_responses_request(raw: bytes) -> dict[str, Any]:
    """Decode and check a Responses body; raise ``InvalidRequestError`` naming the bad field."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"We could not parse the JSON body of your request ({exc}).") from exc
    if not isinstance(data, dict):
        raise InvalidRequestError("The request body must be a JSON object with `model` and `input`.")
    try:
        _VALIDATOR.validate_python(data, strict=True)
    except ValidationError as exc:
        raise _invalid(exc) from exc
    for name in _UNSUPPORTED:
        if data.get(name):
            raise InvalidRequestError(f"'{name}' is not supported by this gateway.", param=name)
    return data


def owner_of(client: ClientKey) -> str:
    """Who a stored response belongs to: the key's tenant, else the key itself."""
    return f"tenant:{client.tenant}" if client.tenant else f"key:{client.name}"


class ResponsesTranslation:
    """One Responses request's answer side; stores the finished response when the request asked to."""

    def __init__(self, store: ResponseStore | None, owner: str, body: dict[str, Any], history: list[dict[str, Any]]) -> None:
        self.store = store if body.get("store", True) else None
        self.owner = owner
        self.shell = response_shell(f"resp_{secrets.token_hex(16)}", body, body["model"])
        self.items = history + input_items(body)
        self.translator = StreamTranslator(self.shell)

    def _keep(self, response: dict[str, Any]) -> None:
        if self.store is not None and response["status"] != "failed":
            self.store.put(self.owner, response, self.items + response["output"])

    def answer(self, completion: dict[str, Any]) -> bytes:
        response = chat_to_response(completion, self.shell)
        self._keep(response)
        return orjson.dumps(response)

    def opening(self, model: str) -> bytes:
        self.shell["model"] = model
        return _sse(self.translator.start())

    def events(self, chunks: list[dict[str, Any]]) -> bytes:
        feed = self.translator.feed
        return _sse([event for chunk in chunks for event in feed(chunk)])

    def closing(self) -> bytes:
        events = self.translator.close()
        self._keep(self.translator.response)
        return _sse(events)

    def failed(self, error: GatewayError) -> bytes:
        return _sse(self.translator.fail(error.code, error.message))


def _sse(events: list[dict[str, Any]]) -> bytes:
    """Responses events as SSE: each with its ``event:`` line, as OpenAI sends them."""
    return b"".join(b"event: %s\ndata: %s\n\n" % (e["type"].encode(), orjson.dumps(e)) for e in events)


class ResponsesEndpoint(TranslatedEndpoint):
    path = "/v1/responses"

    def translate(self, gateway: Gateway, raw: bytes, client: ClientKey) -> tuple[dict[str, Any], ResponsesTranslation]:
        body = parse_responses_request(raw)
        owner = owner_of(client)
        history: list[dict[str, Any]] = []
        previous = body.get("previous_response_id")
        if previous:
            found = gateway.responses.items(owner, previous)
            if found is None:
                raise NotFoundError(
                    f"Previous response with id '{previous}' not found.", param="previous_response_id",
                    code="previous_response_not_found",
                )
            history = found
        return chat_request(body, history), ResponsesTranslation(gateway.responses, owner, body, history)


async def retrieve_response(request: Request) -> Response:
    """``GET /v1/responses/{id}``: a stored response of this client's tenant."""
    found = _gateway_and_owner(request)
    response = found[0].responses.response(found[1], request.path_params["response_id"])
    if response is None:
        raise _not_found(request.path_params["response_id"])
    return Response(orjson.dumps(response), media_type="application/json", headers={"x-request-id": found[2]})


async def delete_response(request: Request) -> Response:
    """``DELETE /v1/responses/{id}``."""
    gateway, owner, request_id = _gateway_and_owner(request)
    response_id = request.path_params["response_id"]
    if not gateway.responses.delete(owner, response_id):
        raise _not_found(response_id)
    body = {"id": response_id, "object": "response.deleted", "deleted": True}
    return Response(orjson.dumps(body), media_type="application/json", headers={"x-request-id": request_id})


def _gateway_and_owner(request: Request) -> tuple[Gateway, str, str]:
    _, client, request_id = _begin(request)
    return request.app.state.gateway, owner_of(client), request_id


def _not_found(response_id: str) -> NotFoundError:
    return NotFoundError(f"Response with id '{response_id}' not found.", param="response_id", code="response_not_found")
