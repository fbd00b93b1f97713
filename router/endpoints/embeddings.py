"""``POST /v1/embeddings``: sent to a backend that declares ``embeddings`` (its model and price).

``model`` picks the backend: ``auto`` (or an alias of it) the configured default (``embeddings.default``,
else the first self-hosted backend with embeddings: embeddings of personal data stay home); a tier,
a backend, an alias of either, or a backend's embeddings model name picks that one. Input holding
personal data is refused (503) by a backend that is not self-hosted, as chat would be. There is no
fallback to another backend: another model's vectors live in another space. Retries on the same
backend, breakers, budgets, cost (input tokens at the embeddings price), metrics, ledger and access
log are the chat pipeline's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from pydantic import ConfigDict, TypeAdapter, with_config
from starlette.types import Receive, Scope, Send
from typing_extensions import Required, TypedDict

from router.api import finish_on_error
from router.auth import ClientKey
from router.config import AUTO_MODEL, GatewayConfig, PriceConfig
from router.endpoints.base import Endpoint, parse_body, send_answer
from router.errors import InvalidRequestError, ModelNotFoundError, UpstreamTimeoutError
from router.gateway import Gateway
from router.pipeline import Pipeline
from router.policy import Candidate, Plan
from router.rules import (
    EMBEDDINGS_DEFAULT,
    EMBEDDINGS_TASK,
    REQUESTED_MODEL,
    Decision,
    Target,
)
from router.trace import Route, Trace
from router.upstream.base import Completion


class JSONCaller(Protocol):
    async def post(self, path: str, body: dict[str, Any]) -> Completion: ...


@with_config(ConfigDict(extra="allow"))
class EmbeddingsRequest(TypedDict, total=False):
    model: Required[str]
    input: Required[str | list[str] | list[int] | list[list[int]]]
    encoding_format: str | None
    dimensions: int | None
    user: str | None


_VALIDATOR = TypeAdapter(EmbeddingsRequest)


def parse_embeddings_request(raw: bytes) -> dict[str, Any]:
    """Decode and check an embeddings body; raise ``InvalidRequestError`` naming the bad field."""
    data = parse_body(raw, _VALIDATOR, "`model` and `input`")
    if data["input"] in ("", []):
        raise InvalidRequestError("'input' must not be empty.", param="input")
    return data


def _text_of(given: Any) -> str:
    return given if isinstance(given, str) else "\n".join(text for text in given if isinstance(text, str))


def _token_count(given: list[Any]) -> int:
    """Tokens of token-id input: one list of ids, or several."""
    return sum(len(ids) for ids in given) if isinstance(given[0], list) else len(given)


@dataclass(frozen=True, slots=True)
class EmbeddingTargets:
    """One config's embeddings backends as candidates (the backend with its embeddings model and price)."""

    candidates: dict[str, Candidate]
    #: Model name the client may send -> backend name.
    names: dict[str, str]
    default: str | None

    @classmethod
    def from_config(cls, config: GatewayConfig) -> EmbeddingTargets:
        candidates: dict[str, Candidate] = {}
        for name, backend in config.backends.items():
            if backend.embeddings is not None:
                priced = backend.model_copy(
                    update={
                        "model": backend.embeddings.model,
                        "price": PriceConfig(input=backend.embeddings.price, output=0.0),
                    }
                )
                candidates[name] = Candidate(name, backend.tier, priced)
        names = {c.config.model: name for name, c in candidates.items()}
        names.update({name: name for name in candidates})
        for tier, members in config.tiers.items():
            serving = [m for m in members if m in candidates]
            if serving:
                names.setdefault(tier, serving[0])
        for alias, target in config.aliases.items():
            if target in names:
                names[alias] = names[target]
        default = config.embeddings.default or next(
            (n for n in candidates if config.backends[n].self_hosted), next(iter(candidates), None)
        )
        return cls(candidates, names, default)

    def decide(self, model: str, config: GatewayConfig) -> Decision:
        """Which backend embeds for ``model``, and why; unknown names are a 404 listing the known ones."""
        auto = model == AUTO_MODEL or config.aliases.get(model) == AUTO_MODEL
        name = self.default if auto else self.names.get(model)
        if name is None:
            served = sorted({AUTO_MODEL, *self.names} if self.default else self.names)
            raise ModelNotFoundError(
                f"The model '{model}' does not serve embeddings. Available: {', '.join(served) or 'none'}.",
                param="model",
            )
        if auto:
            return Decision(EMBEDDINGS_DEFAULT, Target(backend=name), "embeddings go to the default embeddings backend")
        return Decision(REQUESTED_MODEL, Target(backend=name), f"client asked for model {model!r}")


class EmbeddingsEndpoint(Endpoint):
    path = "/v1/embeddings"

    def __init__(self) -> None:
        self._targets: tuple[GatewayConfig, EmbeddingTargets] | None = None

    def targets(self, config: GatewayConfig) -> EmbeddingTargets:
        """The targets of ``config``, built once per loaded config."""
        if self._targets is None or self._targets[0] is not config:
            self._targets = (config, EmbeddingTargets.from_config(config))
        return self._targets[1]

    async def prepare(
        self, gateway: Gateway, raw: bytes, client: ClientKey, headers: Mapping[str, str]
    ) -> tuple[dict[str, Any], Route, None]:
        body = parse_embeddings_request(raw)
        pipeline = gateway.pipeline
        config = pipeline.config
        targets = self.targets(config)
        decision = targets.decide(body["model"], config)
        backend = decision.target.backend
        assert backend is not None
        candidate = targets.candidates[backend]
        features = pipeline.classify([{"role": "user", "content": _text_of(body["input"])}], None)
        features = replace(features, task=EMBEDDINGS_TASK)
        if not isinstance(body["input"], str) and body["input"] and not isinstance(body["input"][0], str):
            features = replace(features, input_tokens=_token_count(body["input"]))
        if features.pii and not candidate.config.self_hosted:
            plan = Plan(
                (),
                refusal=f"The input holds personal data ({', '.join(features.pii)}) and backend "
                f"{backend!r} is not self-hosted.",
                pii_locked=True,
            )
        else:
            plan = Plan((candidate,), allow_downgrade=False)
        return body, Route(features, decision, plan), None

    async def serve(
        self, pipeline: Pipeline, trace: Trace, context: None, scope: Scope, receive: Receive, send: Send
    ) -> None:
        async def attempt(candidate: Candidate) -> Completion:
            provider: JSONCaller = pipeline.providers[candidate.backend]  # type: ignore[assignment]
            timeout = candidate.config.timeouts.total
            try:
                async with asyncio.timeout(timeout):
                    return await provider.post("/embeddings", {**trace.body, "model": candidate.config.model})
            except TimeoutError as exc:
                raise UpstreamTimeoutError(
                    f"Backend {candidate.backend!r} did not answer within {timeout:g}s."
                ) from exc

        with finish_on_error(pipeline, trace):
            answer = await pipeline.dispatch(trace, attempt)
        trace.answered_at = time.perf_counter()
        usage = answer.data.get("usage")
        prompt = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        if isinstance(prompt, int):
            trace.usage_reported = {"prompt_tokens": prompt, "completion_tokens": 0}
        await send_answer(pipeline, trace, answer.raw, send)
