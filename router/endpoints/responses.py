"""``POST /v1/responses`` (and ``GET``/``DELETE /v1/responses/{id}``): the Responses API on chat backends.

The request is translated to chat completions (``router.upstream.responses_wire``), routed and
served exactly like a chat request, and the answer translated back: a ``response`` object, or the
typed event stream. With ``store`` (OpenAI's default: true) the response and its conversation are
kept in the ``ResponseStore``, so ``previous_response_id`` continues it; stored responses belong to
the client's tenant (else its key) and read as 404 for anyone else.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Protocol

import orjson
from fastapi import Request
from fastapi.responses import Response
from pydantic import ConfigDict, Field, TypeAdapter, with_config
from typing_extensions import Required, TypedDict

from router.api import begin_request
from router.auth import ClientKey
from router.config import StickinessConfig
from router.endpoints.base import parse_body
from router.endpoints.translated import TranslatedEndpoint, UpstreamCalls, native_calls
from router.errors import GatewayError, InvalidRequestError, NotFoundError
from router.gateway import Gateway
from router.pipeline import Pipeline
from router.policy import Candidate
from router.response_store import ResponseStore, Stored, new_response_base
from router.trace import Trace
from router.upstream.base import Batch, Completion
from router.upstream.responses_wire import (
    StreamTranslator,
    chat_request,
    chat_to_response,
    input_item_page,
    input_items,
    named_items,
    response_event_sse,
    response_shell,
    sse,
)


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
#: Item types whose ``id`` the gateway (or a backend that stored nothing) minted.
_MINTED_ID_TYPES = frozenset({"message", "function_call", "function_call_output"})


def parse_responses_request(raw: bytes) -> dict[str, Any]:
    """Decode and check a Responses body; raise ``InvalidRequestError`` naming the bad field."""
    data = parse_body(raw, _VALIDATOR, "`model` and `input`")
    for name in _UNSUPPORTED:
        if data.get(name):
            raise InvalidRequestError(f"'{name}' is not supported by this gateway.", param=name)
    return data


def owner_of(client: ClientKey) -> str:
    """Who a stored response belongs to: the key's tenant, else the key itself."""
    return f"tenant:{client.tenant}" if client.tenant else f"key:{client.name}"


class ResponsesTranslation:
    """One Responses request's answer side; stores the finished response when the request asked to.

    On a ``responses: native`` backend the request goes to the backend's own ``/responses`` with the
    whole conversation as input (the gateway keeps the state, so a follow-up may land on any backend)
    and the answer is relayed under the gateway's response id.
    """

    def __init__(
        self, store: ResponseStore | None, owner: str, body: dict[str, Any], previous: Stored | None,
        sticky_tier: str | None = None,
    ) -> None:
        self.store = store if body.get("store", True) else None
        self.owner = owner
        self.body = body
        #: The tier the conversation was answered on, for the planner (None: no stickiness applies).
        self.sticky_tier = sticky_tier
        self._tier: str | None = None  # the tier that answers this request
        base = new_response_base()
        self.shell = response_shell(f"resp_{base}", body, body["model"])
        history = previous.items if previous is not None else []
        self.items = history + named_items(input_items(body), base, len(history))
        self.translator = StreamTranslator(self.shell)
        self.usage: dict[str, int] | None = None
        self._native = False
        self._sequence = 0
        self._final: dict[str, Any] | None = None

    def _keep(self, response: dict[str, Any], encoded: bytes) -> None:
        """Store ``response`` (``encoded``: its JSON) when the request asked to."""
        if self.store is not None and response["status"] != "failed":
            self.store.put(self.owner, response["id"], encoded, self.items + response["output"], self._tier)

    # -- native backends --------------------------------------------------------------------------

    def upstream_calls(self, pipeline: Pipeline, trace: Trace) -> UpstreamCalls:
        def native(candidate: Candidate) -> NativeResponses:
            provider: NativeResponses = pipeline.providers[candidate.backend]  # type: ignore[assignment]
            return provider

        return native_calls(
            pipeline,
            trace,
            lambda candidate: candidate.config.responses == "native",
            lambda candidate: native(candidate).post("/responses", self._native_body(candidate)),
            lambda candidate: native(candidate).stream_responses(self._native_body(candidate)),
        )

    def _native_body(self, candidate: Candidate) -> dict[str, Any]:
        # Item ids the gateway minted mean nothing to the backend (it stores nothing): sent without them.
        items = [
            {k: v for k, v in item.items() if k != "id"} if item.get("type") in _MINTED_ID_TYPES else item
            for item in self.items
        ]
        body = {**self.body, "model": candidate.config.model, "input": items, "store": False}
        body.pop("previous_response_id", None)
        return body

    def _adopt(self, response: dict[str, Any]) -> dict[str, Any]:
        """A native backend's response under the gateway's id and conversation; notes its usage."""
        response = {
            **response,
            "id": self.shell["id"],
            "previous_response_id": self.body.get("previous_response_id"),
            "store": self.body.get("store", True),
        }
        usage = response.get("usage")
        if isinstance(usage, dict):
            self.usage = {
                "prompt_tokens": int(usage.get("input_tokens") or 0),
                "completion_tokens": int(usage.get("output_tokens") or 0),
            }
        return response

    # -- Translation ------------------------------------------------------------------------------

    def answer(self, completion: dict[str, Any], candidate: Candidate) -> bytes:
        self._tier = candidate.tier
        if completion.get("object") == "response":
            response = self._adopt(completion)
        else:
            response = chat_to_response(completion, self.shell)
        encoded = orjson.dumps(response)
        self._keep(response, encoded)
        return encoded

    def opening(self, candidate: Candidate) -> bytes:
        self._tier = candidate.tier
        self._native = candidate.config.responses == "native"
        if self._native:
            return b""  # the backend sends its own response.created
        self.shell["model"] = candidate.config.model
        return self.translator.start_sse()

    def events(self, chunks: list[dict[str, Any]]) -> bytes:
        if not self._native:
            return self.translator.feed_sse(chunks)
        for event in chunks:
            self._sequence = int(event.get("sequence_number") or self._sequence) + 1
            if isinstance(event.get("response"), dict):
                event["response"] = self._adopt(event["response"])
                if event["type"] in ("response.completed", "response.incomplete"):
                    self._final = event["response"]
        return sse(chunks)

    def closing(self) -> bytes:
        if self._native:
            if self._final is not None:
                self._keep(self._final, orjson.dumps(self._final))
            return b""
        *events, last = self.translator.close()  # the last carries the final response: encoded once
        encoded = orjson.dumps(last["response"])
        self._keep(last["response"], encoded)
        return sse(events) + response_event_sse(last, encoded)

    def failed(self, error: GatewayError) -> bytes:
        if self._native:
            self.translator.sequence = self._sequence
        return sse(self.translator.fail(error.code, error.message))


class NativeResponses(Protocol):
    """A provider that also speaks the Responses API (``responses: native`` backends)."""

    async def post(self, path: str, body: dict[str, Any]) -> Completion: ...

    def stream_responses(self, body: dict[str, Any]) -> AsyncIterator[Batch]: ...


class ResponsesEndpoint(TranslatedEndpoint):
    path = "/v1/responses"

    async def translate(
        self, gateway: Gateway, raw: bytes, client: ClientKey
    ) -> tuple[dict[str, Any], ResponsesTranslation]:
        body = parse_responses_request(raw)
        owner = owner_of(client)
        previous = await previous_of(gateway.responses, body, owner)
        sticky = sticky_tier_of(previous, gateway.config.policy.stickiness)
        return (
            chat_request(body, previous.items if previous is not None else []),
            ResponsesTranslation(gateway.responses, owner, body, previous, sticky),
        )


async def previous_of(store: ResponseStore, body: dict[str, Any], owner: str) -> Stored | None:
    """The stored response a Responses ``body`` continues (``previous_response_id``), else None;
    a response ``owner`` cannot see is a 404."""
    previous = body.get("previous_response_id")
    if not previous:
        return None
    found = await store.find(owner, previous)
    if found is None:
        raise NotFoundError(
            f"Previous response with id '{previous}' not found.",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    return found


def sticky_tier_of(previous: Stored | None, stickiness: StickinessConfig) -> str | None:
    """The tier a follow-up of ``previous`` stays on: the one that answered it, while stickiness lasts
    (the planner keeps it only when it ranks above what the rules decide)."""
    if previous is None or previous.tier is None or not stickiness.enabled:
        return None
    created = previous.response.get("created_at")
    if not isinstance(created, (int, float)) or created + stickiness.ttl_seconds < time.time():
        return None
    return previous.tier


async def retrieve_response(request: Request) -> Response:
    """``GET /v1/responses/{id}``: a stored response of this client's tenant."""
    gateway, owner, request_id = _gateway_and_owner(request)
    found = await gateway.responses.find(owner, request.path_params["response_id"])
    if found is None:
        raise _not_found(request.path_params["response_id"])
    return Response(orjson.dumps(found.response), media_type="application/json", headers={"x-request-id": request_id})


async def delete_response(request: Request) -> Response:
    """``DELETE /v1/responses/{id}``."""
    gateway, owner, request_id = _gateway_and_owner(request)
    response_id = request.path_params["response_id"]
    if not await gateway.responses.remove(owner, response_id):
        raise _not_found(response_id)
    body = {"id": response_id, "object": "response.deleted", "deleted": True}
    return Response(orjson.dumps(body), media_type="application/json", headers={"x-request-id": request_id})


async def list_input_items(request: Request) -> Response:
    """``GET /v1/responses/{id}/input_items``: what a stored response was given (the conversation it
    continues, then its own input), a page at a time in OpenAI's list shape (``limit``, ``order``, ``after``)."""
    gateway, owner, request_id = _gateway_and_owner(request)
    query = request.query_params
    limit = _limit(query.get("limit"))
    order = query.get("order") or "desc"
    if order not in ("asc", "desc"):
        raise InvalidRequestError(f"Invalid value for 'order': {order!r}; expected asc or desc.", param="order")
    response_id = request.path_params["response_id"]
    found = await gateway.responses.find(owner, response_id)
    if found is None:
        raise _not_found(response_id)
    response, items, _ = found
    given = items[: len(items) - len(response["output"])]  # the stored conversation ends with the output
    page = input_item_page(
        given, response_id.removeprefix("resp_"), order=order, after=query.get("after"), limit=limit
    )
    return Response(orjson.dumps(page), media_type="application/json", headers={"x-request-id": request_id})


def _limit(given: str | None) -> int:
    """The ``limit`` query parameter: 1 to 100, 20 by default (OpenAI's)."""
    if given is None:
        return 20
    if not given.isdigit() or not 1 <= int(given) <= 100:
        raise InvalidRequestError(f"Invalid value for 'limit': {given!r}; expected 1 to 100.", param="limit")
    return int(given)


def _gateway_and_owner(request: Request) -> tuple[Gateway, str, str]:
    _, client, request_id = begin_request(request)
    return request.app.state.gateway, owner_of(client), request_id


def _not_found(response_id: str) -> NotFoundError:
    return NotFoundError(f"Response with id '{response_id}' not found.", param="response_id", code="response_not_found")
