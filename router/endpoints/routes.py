"""The routes of the endpoints besides chat completions, and the list an unknown path's 404 names."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.types import ASGIApp

from router.api import _begin
from router.endpoints.completions import CompletionsEndpoint
from router.endpoints.embeddings import EmbeddingsEndpoint
from router.endpoints.messages import CountTokensEndpoint, MessagesEndpoint
from router.endpoints.responses import ResponsesEndpoint, delete_response, retrieve_response
from router.errors import ModelNotFoundError

#: What the gateway serves, as an unknown path's 404 lists it.
ENDPOINTS = (
    "POST /v1/chat/completions",
    "POST /v1/responses",
    "GET /v1/responses/{id}",
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


async def retrieve_model(request: Request) -> Response:
    """``GET /v1/models/{id}``: one routable name (chat or embeddings) in OpenAI's model shape."""
    pipeline, _, request_id = _begin(request)
    model = request.path_params["model_id"]
    embeddings = _embeddings.targets(pipeline.config).names
    if model not in pipeline.model_names and model not in embeddings:
        raise ModelNotFoundError(f"The model '{model}' does not exist.", param="model")
    card = {"id": model, "object": "model", "created": int(request.app.state.started_at), "owned_by": "llm-router"}
    return Response(orjson.dumps(card), media_type="application/json", headers={"x-request-id": request_id})


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
    router.add_route(f"{prefix}/models/{{model_id:path}}", retrieve_model, methods=["GET"], include_in_schema=False)
