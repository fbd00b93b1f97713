"""The records a request leaves behind: its ``Route`` (why it goes where it goes) and its ``Trace``
(what happened to it), which the pipeline fills in and the accountant closes exactly once."""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from router.auth import ClientKey
from router.budget import Exceeded, Reservation
from router.classify import Features
from router.cost import Usage
from router.policy import Candidate, Plan
from router.rules import Decision, RequestContext
from router.upstream.base import Chunk


@dataclass(frozen=True, slots=True)
class Route:
    """Why a request goes where it goes: the classification, the rule's decision and the plan."""

    features: Features
    decision: Decision
    plan: Plan
    #: What the rules saw besides the features (model, tenant, key, headers).
    context: RequestContext | None = None

    def headers(self, candidate: Candidate) -> dict[str, str]:
        return {
            "x-router-tier": candidate.tier,
            "x-router-backend": candidate.backend,
            "x-router-rule": self.decision.rule,
            "x-router-task": self.features.task,
        }

    def reason(self) -> str:
        text = f"{self.decision.why}; {self.features.reason()}"
        return f"{text}; {'; '.join(self.plan.notes)}" if self.plan.notes else text


@dataclass(slots=True)
class Trace:
    """One request's story, filled in as it goes and finished exactly once."""

    request_id: str
    #: Unique per request even when a client reuses its ``x-request-id``: the ledger's key.
    unique_id: str
    client: ClientKey
    route: Route
    body: dict[str, Any]
    stream: bool
    started: float = field(default_factory=time.perf_counter)
    upstream_seconds: float = 0.0
    attempts: int = 0
    retries: int = 0
    fallback: tuple[str, str, str] | None = None
    downgraded: str | None = None
    rerouted: str | None = None
    served: Candidate | None = None
    #: The last backend tried (or turned away by its breaker): the one an error answer names.
    attempted: Candidate | None = None
    reservation: Reservation | None = None
    budget_exceeded: Exceeded | None = None
    #: Seconds from the request's arrival to the upstream's first content (streams) or answer.
    ttft: float | None = None
    #: When the gateway started answering the client (perf_counter); the overhead is measured up to here.
    answered_at: float | None = None
    in_flight: AbstractContextManager[None] | None = None
    output_chars: int = 0
    usage_reported: Any = None
    #: The non-streaming answer's JSON (for shadow judging, after the client has it).
    answer: dict[str, Any] | None = None
    #: Selected for shadow judging; a selected stream's chunks are kept here as they are relayed.
    shadow: bool = False
    shadow_chunks: list[Chunk] | None = None
    status: int = 200
    usage: Usage | None = None
    cost: float = 0.0
    finished: bool = False
    #: The client went away mid-answer (as opposed to the server cancelling the request at shutdown).
    client_gone: bool = False
    #: The endpoint it came in on, for the access log and the ``endpoint`` metric label.
    path: str = "/v1/chat/completions"
    #: The rate-limit buckets this request took from (``PolicyState.admit``), settled at the end.
    rate: Any = None
    #: OpenAI's ``x-ratelimit-*`` headers for a rate-limited caller.
    rate_headers: dict[str, str] | None = None

    def client_left(self) -> None:
        self.client_gone = True

    def headers(self) -> dict[str, str]:
        candidate = self.served or self.attempted or (self.route.plan.candidates[0] if self.route.plan.candidates else None)
        headers = self.route.headers(candidate) if candidate else {"x-router-rule": self.route.decision.rule}
        headers["x-request-id"] = self.request_id
        headers["x-router-attempts"] = str(self.attempts)
        if self.fallback is not None:
            headers["x-router-fallback"] = f"{self.fallback[0]}->{self.fallback[1]}; reason={self.fallback[2]}"
        if self.downgraded is not None:
            headers["x-router-downgraded"] = self.downgraded
        if self.rerouted is not None:
            headers["x-router-rerouted"] = self.rerouted
        if self.rate_headers is not None:
            headers.update(self.rate_headers)
        return headers
