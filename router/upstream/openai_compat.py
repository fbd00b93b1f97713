"""OpenAI-compatible upstreams (OpenAI, vLLM, Ollama, llama.cpp, TGI, ...): a near pass-through.

Upstream calls go through aiohttp: on this path it costs about a seventh of the CPU of httpx's
default transport per request (see the README's performance section), and the gateway makes one
upstream call for every request it serves.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
import orjson

from router.config import BackendConfig
from router.errors import UpstreamError
from router.upstream.base import (
    Batch,
    Chunk,
    Completion,
    error_from_status,
    error_in_answer,
    map_transport_errors,
)
from router.upstream.chunks import chunks_to_completion, completion_to_chunks
from router.upstream.sse import DONE, EventTooLargeError, SSEDecoder

#: An error body larger than this is cut before decoding; it only feeds an error message.
_MAX_ERROR_BODY = 64 * 1024
#: After ``[DONE]`` only the chunked-encoding terminator should follow; read it so the connection is reused.
_DRAIN_SECONDS = 0.1


class OpenAICompatProvider:
    """Sends chat completions to ``{base_url}/chat/completions`` with the backend's own key.

    Owns one pooled keep-alive ``aiohttp.ClientSession``, created on first use inside the event loop.
    """

    def __init__(self, name: str, config: BackendConfig) -> None:
        self.name = name
        self.config = config
        self._url = f"{config.base_url}/chat/completions"
        # identity: relaying SSE byte for byte is cheaper than decompressing it on the hot path.
        headers = {"content-type": "application/json", "accept-encoding": "identity", **config.headers}
        if config.api_key is not None:
            headers["authorization"] = f"Bearer {config.api_key.get_secret_value()}"
        self._headers = headers
        #: Values an upstream's error message must never carry back to a client.
        key = config.api_key.get_secret_value() if config.api_key is not None else ""
        self._secrets = (key, *config.headers.values())
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            timeouts = self.config.timeouts
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60, ttl_dns_cache=300),
                # Reads are bounded by the pipeline (first token, idle, total), not per socket read.
                timeout=aiohttp.ClientTimeout(total=None, connect=timeouts.connect, sock_connect=timeouts.connect),
                auto_decompress=False,
                skip_auto_headers=("User-Agent",),
                # Cookies an upstream sets (e.g. a CDN's) must not be replayed on other clients' requests.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def complete(self, body: dict[str, Any]) -> Completion:
        with map_transport_errors(self.name):
            status, headers, content = await self._post_bounded(self._url, orjson.dumps(body))
        if status != 200:
            raise self._status_error(status, content, headers)
        if headers.get("content-type", "").startswith("text/event-stream"):
            decoder = SSEDecoder(self.config.max_event_bytes)
            events, _ = _decode_events(self.name, self._events(decoder, content + b"\n\n"), self._secrets)
            data = chunks_to_completion([chunk.data for chunk in events])
            return Completion(orjson.dumps(data), data)
        return Completion(content, self._completion(content))

    async def _post_bounded(
        self, url: str, payload: bytes, headers: Mapping[str, str] | None = None
    ) -> tuple[int, Mapping[str, str], bytes]:
        """POST ``payload`` (with ``headers``, else the backend's): the answer's status, headers and body.
        A 200 body is read up to ``max_response_bytes`` (more raises, and the connection goes with the
        rest of it); an error body only up to ``_MAX_ERROR_BODY``, for its message."""
        async with self.session.post(url, data=payload, headers=headers or self._headers) as response:
            status, headers = response.status, response.headers
            limit = self.config.max_response_bytes if status == 200 else _MAX_ERROR_BODY
            content, whole = await _read_body(response, limit)
            if not whole:
                response.close()  # abandon the rest of the body with its connection
        if status == 200 and not whole:
            raise _too_large(self.name, limit)
        return status, headers, content

    def _completion(self, content: bytes) -> dict[str, Any]:
        """A JSON answer with status 200: a completion, or an error the upstream sent with the wrong status."""
        data = decode_json(self.name, content)
        if "error" in data:
            raise error_in_answer(self.name, data["error"], secrets=self._secrets)
        if not isinstance(data.get("choices"), list):
            raise UpstreamError(f"Backend {self.name!r} sent a completion without `choices`.", code="upstream_malformed")
        return data

    async def post(self, path: str, body: dict[str, Any]) -> Completion:
        """A JSON call to another endpoint of the upstream (``path`` e.g. ``/embeddings``): its decoded answer,
        under the same caps and error handling as ``complete``."""
        with map_transport_errors(self.name):
            status, headers, content = await self._post_bounded(f"{self.config.base_url}{path}", orjson.dumps(body))
        if status != 200:
            raise self._status_error(status, content, headers)
        data = decode_json(self.name, content)
        if data.get("error"):  # a Responses answer always has the key (null unless it failed)
            raise error_in_answer(self.name, data["error"], secrets=self._secrets)
        return Completion(content, data)

    def stream(self, body: dict[str, Any]) -> AsyncIterator[Batch]:
        """Yield the upstream's chunks, validated, in batches: the chunks that arrived together.

        The batch that came with ``[DONE]`` is marked and ends the iteration; any failure raises.
        Relaying a batch as one write keeps the cost per chunk low when the upstream is fast, and
        is exactly chunk by chunk when it is not. A JSON answer to the stream request is converted.
        """
        return self._stream(self._url, orjson.dumps(body), self._headers, self._decode, "[DONE]", self._plain)

    def _decode(self, payloads: list[bytes]) -> tuple[list[Chunk], bool, UpstreamError | None]:
        return (*_decode_events(self.name, payloads, self._secrets), None)

    def _plain(self, content: bytes) -> list[Chunk]:
        return [Chunk(orjson.dumps(data), data) for data in completion_to_chunks(self._completion(content))]

    async def _stream(
        self,
        url: str,
        payload: bytes,
        headers: Mapping[str, str],
        decode: Callable[[list[bytes]], tuple[list[Chunk], bool, UpstreamError | None]],
        end: str,
        plain: Callable[[bytes], list[Chunk]] | None = None,
    ) -> AsyncIterator[Batch]:
        """POST a stream request and yield its answer in batches. ``decode`` turns the events of one read
        into their chunks, whether ``end`` came with them, and the error of an error event (raised once
        the chunks before it are yielded); the batch with the end is marked done. ``plain`` converts a
        JSON answer (instead of SSE) into the whole stream."""
        response = await self._open_stream(url, payload, headers)
        reusable = False
        try:
            if plain is not None and not response.headers.get("content-type", "").startswith("text/event-stream"):
                with map_transport_errors(self.name):
                    content, reusable = await _read_body(response, self.config.max_response_bytes)
                if not reusable:
                    raise _too_large(self.name, self.config.max_response_bytes)
                yield plain(content), True
                return
            decoder = SSEDecoder(self.config.max_event_bytes)
            reader = response.content
            while True:
                with map_transport_errors(self.name):
                    raw = await reader.readany()
                payloads = self._events(decoder, raw)
                if payloads:
                    batch, done, failure = decode(payloads)
                    if failure is not None:
                        if batch:  # what came before the error is the client's, as if it came in its own read
                            yield batch, False
                        raise failure
                    if done:
                        reusable = await _drain(reader)
                        yield batch, True
                        return
                    if batch:
                        yield batch, False
                if not raw:
                    raise UpstreamError(
                        f"Backend {self.name!r} ended the stream without {end}.", code="upstream_disconnected"
                    )
        finally:
            # A fully read response goes back to the pool; anything else (errors, a client that
            # left, a cancelled task) closes the connection, which also stops the upstream's work.
            if reusable:
                response.release()
            else:
                response.close()

    def stream_responses(self, body: dict[str, Any]) -> AsyncIterator[Batch]:
        """A native ``POST {base_url}/responses`` stream: its events in batches, the batch with
        ``response.completed`` (or ``.incomplete``) marked done; ``error`` and ``response.failed``
        events raise, so the pipeline can fail over before the first token."""
        url = f"{self.config.base_url}/responses"
        return self._stream(url, orjson.dumps(body), self._headers, self._decode_responses, "response.completed",
                            self._plain_response)

    def _decode_responses(self, payloads: list[bytes]) -> tuple[list[Chunk], bool, UpstreamError | None]:
        batch: list[Chunk] = []
        for payload in payloads:
            event = decode_json(self.name, payload)
            kind = event.get("type")
            if kind in ("error", "response.failed"):
                failed = event.get("response")
                error = failed.get("error") if isinstance(failed, dict) else event
                return batch, False, error_in_answer(self.name, error or event, secrets=self._secrets, mid_stream=True)
            batch.append(Chunk(payload, event))
            if kind in ("response.completed", "response.incomplete"):
                return batch, True, None
        return batch, False, None

    def _plain_response(self, content: bytes) -> list[Chunk]:
        """A whole Response sent as JSON to a stream request: the one event that ends a stream."""
        data = decode_json(self.name, content)
        event = {"type": f"response.{data.get('status') or 'completed'}", "response": data}
        return [Chunk(orjson.dumps(event), event)]

    async def _open_stream(
        self, url: str, payload: bytes, headers: Mapping[str, str] | None = None
    ) -> aiohttp.ClientResponse:
        """POST a stream request: the response once its status is 200. Any other status raises the
        upstream's error (``_status_error``), its connection closed."""
        with map_transport_errors(self.name):
            response = await self.session.post(url, data=payload, headers=headers or self._headers)
        if response.status == 200:
            return response
        try:
            with map_transport_errors(self.name):
                content = await response.content.read(_MAX_ERROR_BODY)
            raise self._status_error(response.status, content, response.headers)
        finally:
            response.close()

    def _status_error(self, status: int, content: bytes, headers: Mapping[str, str]) -> UpstreamError:
        """The error an answer with a status other than 200 means (its body read up to ``_MAX_ERROR_BODY``)."""
        return error_from_status(self.name, status, content, headers, secrets=self._secrets)

    def _events(self, decoder: SSEDecoder, raw: bytes) -> list[bytes]:
        """The events completed by ``raw`` (by the end of the body when it is empty); one too large raises."""
        try:
            return decoder.feed(raw) if raw else decoder.flush()
        except EventTooLargeError as exc:
            raise UpstreamError(
                f"Backend {self.name!r} sent an SSE event larger than max_event_bytes "
                f"({self.config.max_event_bytes} bytes).",
                code="upstream_malformed",
            ) from exc

    async def healthy(self, path: str, timeout: float) -> bool:
        """One active health check: a 2xx answer to ``GET {base_url}{path}`` within ``timeout``."""
        try:
            async with self.session.get(
                f"{self.config.base_url}{path}", headers=self._headers, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as response:
                await response.read()
                return 200 <= response.status < 300
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


async def _read_body(response: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    """The response body and True, or its first ``limit`` bytes and False.

    A body with a Content-Length within the limit is read in one call; any other is read as it
    arrives and abandoned past the limit, so an endless body costs a few times ``limit`` of memory
    at most (the pieces, their join, the cut) while it is read, and nothing after.
    """
    declared = response.content_length
    if declared is not None and declared <= limit:
        return await response.read(), True
    pieces: list[bytes] = []
    size = 0
    while size <= limit and (piece := await response.content.readany()):
        pieces.append(piece)
        size += len(piece)
    return b"".join(pieces)[:limit], size <= limit


def _too_large(backend: str, limit: int) -> UpstreamError:
    # "malformed": an answer the gateway cannot use, which fails over like a broken one.
    return UpstreamError(
        f"Backend {backend!r} sent a response larger than max_response_bytes ({limit} bytes).",
        code="upstream_malformed",
    )


async def _drain(reader: aiohttp.StreamReader) -> bool:
    """Read what follows ``[DONE]`` (normally nothing but the end of the body); True if the body ended."""
    if reader.at_eof():  # the end of the body came with [DONE]: no timer needed
        return True
    try:
        async with asyncio.timeout(_DRAIN_SECONDS):
            while await reader.readany():
                pass
    except (TimeoutError, aiohttp.ClientError):
        return False
    return reader.at_eof()


def _decode_events(backend: str, payloads: list[bytes], secrets: tuple[str, ...]) -> tuple[list[Chunk], bool]:
    """Decode SSE payloads into chunks, up to ``[DONE]`` (then True); an error event raises.

    A payload that came as several ``data:`` lines holds newlines: it is re-encoded, so the event
    relayed to the client is one ``data:`` line of valid JSON.
    """
    out: list[Chunk] = []
    for payload in payloads:
        if payload == DONE:
            return out, True
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            data = None
        if type(data) is not dict:  # malformed, or JSON that is not an object: decode_json says which
            data = decode_json(backend, payload)
        if "error" in data:
            raise error_in_answer(backend, data["error"], secrets=secrets, mid_stream=True)
        out.append(Chunk(orjson.dumps(data) if b"\n" in payload else payload, data))
    return out, False


def decode_json(backend: str, content: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError(f"Backend {backend!r} sent malformed JSON.", code="upstream_malformed") from exc
    if not isinstance(data, dict):
        raise UpstreamError(f"Backend {backend!r} sent JSON that is not an object.", code="upstream_malformed")
    return data
