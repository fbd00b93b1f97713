"""OpenAI-compatible upstreams (OpenAI, vLLM, Ollama, llama.cpp, TGI, ...): a near pass-through."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from router.config import BackendConfig
from router.errors import UpstreamError
from router.upstream.base import Chunk, Completion, error_from_status, map_transport_errors
from router.upstream.chunks import chunks_to_completion, completion_to_chunks
from router.upstream.sse import DONE, SSEDecoder

#: An error body larger than this is cut before decoding; it only feeds an error message.
_MAX_ERROR_BODY = 64 * 1024


class OpenAICompatProvider:
    """Sends chat completions to ``{base_url}/chat/completions`` with the backend's own key."""

    def __init__(self, name: str, config: BackendConfig, client: httpx.AsyncClient) -> None:
        self.name = name
        self.config = config
        self._client = client
        self._url = f"{config.base_url}/chat/completions"
        # identity: relaying SSE byte for byte is cheaper than gunzipping it on the hot path.
        headers = {"content-type": "application/json", "accept-encoding": "identity", **config.headers}
        if config.api_key is not None:
            headers["authorization"] = f"Bearer {config.api_key.get_secret_value()}"
        self._headers = headers

    async def complete(self, body: dict[str, Any]) -> Completion:
        with map_transport_errors(self.name):
            response = await self._client.post(self._url, content=orjson.dumps(body), headers=self._headers)
        if response.status_code != 200:
            raise error_from_status(self.name, response.status_code, response.content[:_MAX_ERROR_BODY], response.headers)
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            events = _decode_events(self.name, SSEDecoder().feed(response.content + b"\n\n"))
            chunks = [chunk.data for chunk in events if chunk is not None]
            data = chunks_to_completion(chunks)
            return Completion(orjson.dumps(data), data)
        data = _decode_json(self.name, response.content)
        if not isinstance(data.get("choices"), list):
            raise UpstreamError(f"Backend {self.name!r} sent a completion without `choices`.", code="upstream_malformed")
        return Completion(response.content, data)

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        """Yield the upstream's chunks, validated; ``[DONE]`` ends the iteration, any failure raises."""
        request = self._client.build_request("POST", self._url, content=orjson.dumps(body), headers=self._headers)
        with map_transport_errors(self.name):
            response = await self._client.send(request, stream=True)
        try:
            if response.status_code != 200:
                with map_transport_errors(self.name):
                    content = await _read_bounded(response)
                raise error_from_status(self.name, response.status_code, content, response.headers)
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                with map_transport_errors(self.name):
                    content = await response.aread()
                for data in completion_to_chunks(_decode_json(self.name, content)):
                    yield Chunk(orjson.dumps(data), data)
                return
            decoder = SSEDecoder()
            iterator = response.aiter_bytes()
            while True:
                with map_transport_errors(self.name):
                    raw = await anext(iterator, None)
                payloads = decoder.feed(raw) if raw is not None else decoder.flush()
                for chunk in _decode_events(self.name, payloads):
                    if chunk is None:
                        return
                    yield chunk
                if raw is None:
                    raise UpstreamError(
                        f"Backend {self.name!r} ended the stream without [DONE].", code="upstream_disconnected"
                    )
        finally:
            await response.aclose()

    async def healthy(self, path: str, timeout: float) -> bool:
        """One active health check: a 2xx answer to ``GET {base_url}{path}`` within ``timeout``."""
        try:
            response = await self._client.get(f"{self.config.base_url}{path}", headers=self._headers, timeout=timeout)
        except httpx.HTTPError:
            return False
        return response.is_success

    async def aclose(self) -> None:
        await self._client.aclose()


def _decode_events(backend: str, payloads: list[bytes]) -> list[Chunk | None]:
    """Decode SSE payloads into chunks; ``None`` marks ``[DONE]``; an error event raises."""
    out: list[Chunk | None] = []
    for payload in payloads:
        if payload == DONE:
            out.append(None)
            break
        data = _decode_json(backend, payload)
        if "error" in data:
            error = data["error"] if isinstance(data["error"], dict) else {"message": str(data["error"])}
            raise UpstreamError(
                f"Backend {backend!r} failed mid-stream: {error.get('message', 'unknown error')}",
                code=str(error["code"]) if error.get("code") is not None else "upstream_stream_error",
            )
        out.append(Chunk(payload, data))
    return out


def _decode_json(backend: str, content: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError(f"Backend {backend!r} sent malformed JSON.", code="upstream_malformed") from exc
    if not isinstance(data, dict):
        raise UpstreamError(f"Backend {backend!r} sent JSON that is not an object.", code="upstream_malformed")
    return data


async def _read_bounded(response: httpx.Response) -> bytes:
    content = b""
    async for part in response.aiter_bytes():
        content += part
        if len(content) >= _MAX_ERROR_BODY:
            break
    return content[:_MAX_ERROR_BODY]
