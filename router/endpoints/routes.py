"""The routes of the endpoints besides chat completions, and the list an unknown path's 404 names."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.types import ASGIApp

from router.api import begin_request
from router.endpoints.completions import CompletionsEndpoint
from router.endpoints.decide import decide
from router.endpoints.embeddings import EmbeddingsEndpoint
from router.endpoints.messages import CountTokensEndpoint, MessagesEndpoint
from router.endpoints.responses import (
    ResponsesEndpoint,
    delete_response,
    list_input_items,
    retrieve_response,
)
from router.errors import ModelNotFoundError
from router.pipeline import Pipeline

#: What the gateway serves, as an unknown path's 404 lists it.
ENDPOINTS = (
    "POST /v1/chat/completions",
    "POST /v1/responses",
    "GET /v1/responses/{id}",
    "GET /v1/responses/{id}/input_items",
    "DELETE /v1/responses/{id}",
    "POST /v1/completions",
    "POST /v1/embeddings",
    "POST /v1/messages",
    "POST /v1/messages/count_tokens",
    "GET /v1/models",
    "GET /v1/models/{id}",
    "POST /v1/router/decide",
    "GET /v1/router/spend",
    "GET /metrics",
    "GET /healthz",
    "GET /readyz",
)

router = APIRouter()
_embeddings = EmbeddingsEndpoint()


def model_names(pipeline: Pipeline) -> list[str]:
    """Every name ``model`` may take: the routable ones (``auto``, tiers, backends, aliases), then the
    embeddings backends' model names."""
    return list(dict.fromkeys((*pipeline.model_names, *_embeddings.targets(pipeline.config).names)))


def _card(request: Request, model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": int(request.app.state.started_at), "owned_by": "llm-router"}


async def list_models(request: Request) -> Response:
    """``GET /v1/models``: ``model_names`` in OpenAI's list shape."""
    pipeline, _, request_id = begin_request(request)
    data = [_card(request, name) for name in model_names(pipeline)]
    body = orjson.dumps({"object": "list", "data": data})
    return Response(body, media_type="application/json", headers={"x-request-id": request_id})


async def retrieve_model(request: Request) -> Response:
    """``GET /v1/models/{id}``: one of ``model_names`` in OpenAI's model shape."""
    pipeline, _, request_id = begin_request(request)
    model = request.path_params["model_id"]
    if model not in model_names(pipeline):
        raise ModelNotFoundError(f"The model '{model}' does not exist.", param="model")
    return Response(orjson.dumps(_card(request, model)), media_type="application/json", headers={"x-request-id": request_id})


#: POST paths ``app.GatewayApp`` serves directly, outside FastAPI's routing (as chat completions).
#: Anthropic's SDK puts ``/v1`` in the path itself, so its endpoints have no shorter form.
DIRECT_ENDPOINTS: dict[str, ASGIApp] = {
    "/v1/messages": MessagesEndpoint(),
    "/v1/messages/count_tokens": CountTokensEndpoint(),
}
for prefix in ("/v1", ""):
    DIRECT_ENDPOINTS[f"{prefix}/responses"] = ResponsesEndpoint()
    DIRECT_ENDPOINTS[f"{prefix}/completions"] = CompletionsEndpoint()
    DIRECT_ENDPOINTS[f"{prefix}/embeddings"] = _embeddings
    router.add_route(f"{prefix}/responses/{{response_id}}", retrieve_response, methods=["GET"], include_in_schema=False)
    router.add_route(
        f"{prefix}/responses/{{response_id}}", delete_response, methods=["DELETE"], include_in_schema=False
    )
    router.add_route(
        f"{prefix}/responses/{{response_id}}/input_items", list_input_items, methods=["GET"], include_in_schema=False
    )
    router.add_route(f"{prefix}/models", list_models, methods=["GET"], include_in_schema=False)
    router.add_route(f"{prefix}/models/{{model_id:path}}", retrieve_model, methods=["GET"], include_in_schema=False)
router.add_route("/v1/router/decide", decide, methods=["POST"], include_in_schema=False)
