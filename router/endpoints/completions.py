"""``POST /v1/completions`` (legacy): served as chat completions, stream and non-stream.

The prompt is one user message (``router.upstream.completions_wire``), so it is classified, routed
and accounted like any chat request; the answer comes back as ``text_completion`` objects.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from pydantic import ConfigDict, Field, TypeAdapter, with_config
from typing_extensions import Required, TypedDict

from router.auth import ClientKey
from router.endpoints.base import parse_body
from router.endpoints.translated import TranslatedEndpoint, UpstreamCalls
from router.errors import GatewayError, InvalidRequestError
from router.gateway import Gateway
from router.pipeline import Pipeline
from router.policy import Candidate
from router.schemas import StreamOptions
from router.trace import Trace
from router.upstream.completions_wire import chat_request, chat_to_completion, chunk_to_completion
from router.upstream.sse import DONE_FRAME, frame, frames


@with_config(ConfigDict(extra="allow"))
class CompletionsRequest(TypedDict, total=False):
    model: Required[str]
    prompt: Required[str | list[Any]]
    stream: bool | None
    stream_options: StreamOptions | None
    max_tokens: Annotated[int, Field(ge=1)] | None
    n: Annotated[int, Field(ge=1, le=128)] | None
    temperature: Annotated[float, Field(ge=0, le=2)] | None
    top_p: Annotated[float, Field(ge=0, le=1)] | None
    logprobs: Annotated[int, Field(ge=0, le=5)] | None


_VALIDATOR = TypeAdapter(CompletionsRequest)


def parse_completions_request(raw: bytes) -> dict[str, Any]:
    """Decode and check a legacy completions body; raise ``InvalidRequestError`` naming the bad field."""
    data = parse_body(raw, _VALIDATOR, "`model` and `prompt`")
    if data.get("stream_options") is not None and not data.get("stream"):
        raise InvalidRequestError(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.", param="stream_options"
        )
    return data


class CompletionsTranslation:
    usage = None
    sticky_tier: str | None = None

    def __init__(self, want_usage: bool) -> None:
        self.want_usage = want_usage

    def upstream_calls(self, pipeline: Pipeline, trace: Trace) -> UpstreamCalls:
        return None, None

    def answer(self, completion: dict[str, Any], candidate: Candidate) -> bytes:
        return orjson.dumps(chat_to_completion(completion))

    def opening(self, candidate: Candidate) -> bytes:
        return b""

    def events(self, chunks: list[dict[str, Any]]) -> bytes:
        payloads = []
        for chunk in chunks:
            if not self.want_usage and not chunk.get("choices"):
                continue  # the usage chunk the gateway asked for on its own behalf
            out = chunk_to_completion(chunk)
            if out is not None:
                if not self.want_usage:
                    out.pop("usage", None)
                payloads.append(orjson.dumps(out))
        return frames(payloads)

    def closing(self) -> bytes:
        return DONE_FRAME

    def failed(self, error: GatewayError) -> bytes:
        return frame(error.body_bytes())


class CompletionsEndpoint(TranslatedEndpoint):
    path = "/v1/completions"

    async def translate(
        self, gateway: Gateway, raw: bytes, client: ClientKey
    ) -> tuple[dict[str, Any], CompletionsTranslation]:
        body = parse_completions_request(raw)
        want_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return chat_request(body), CompletionsTranslation(want_usage)
