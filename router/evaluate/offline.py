"""The gateway's own routing path (classify -> rules -> plan), built from a config with no I/O.

The evaluation commands route through ``Pipeline.route`` and ``Pipeline.decide`` themselves, not a
re-implementation, so what they report is what the gateway would do. Nothing here calls an
upstream, opens the config's ledger or needs its secrets: environment variables the config needs
and the caller has not set get placeholders.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

from router.auth import ANONYMOUS, ClientKey
from router.classify import Features
from router.config import ConfigError, GatewayConfig, PriceConfig, RuleConfig, load_config
from router.cost import cost_usd
from router.envsubst import interpolate
from router.errors import GatewayError
from router.gateway import Gateway
from router.pipeline import Pipeline
from router.policy import Planner
from router.rules import Decision, RequestContext, compile_rules
from router.schemas import parse_chat_request
from router.trace import Route

class EvaluationError(Exception):
    """Input an evaluation command cannot use; the message is one line for the command line."""


def load_offline_config(path: Path) -> GatewayConfig:
    """Load and validate a config; unset environment variables it needs get placeholders.

    Raises ``ConfigError`` (one line per problem) like ``llm-router check``.
    """
    try:
        tree = yaml.safe_load(path.read_bytes())
    except (OSError, yaml.YAMLError):
        return load_config(path)  # it reports the problem in its own words
    if not isinstance(tree, dict):
        return load_config(path)
    _, missing = interpolate(tree, os.environ)
    return load_config(path, environ={**os.environ, **{m.name: f"unset-{m.name}" for m in missing}})


@dataclass(frozen=True, slots=True)
class Routed:
    """Where the gateway would send one request, and why."""

    features: Features
    decision: Decision
    tier: str | None
    backend: str | None
    refusal: str | None
    reason: str


class OfflineRouter:
    """A config's pipeline with idle backends (no load, breakers closed) and no ledger."""

    def __init__(self, config: GatewayConfig) -> None:
        ledger = config.policy.ledger.model_copy(update={"path": None})
        quiet = config.model_copy(update={"policy": config.policy.model_copy(update={"ledger": ledger})})
        self.config = config
        self.pipeline: Pipeline = Gateway(quiet, environ={}).pipeline
        ranks = config.tier_rank
        #: The most expensive tier, whose share the commands report as the flagship share.
        self.top_tier = max(ranks, key=ranks.__getitem__)
        self.top_price = self.price(config.tiers[self.top_tier][0])

    def route(self, body: Mapping[str, Any], client: ClientKey = ANONYMOUS,
              headers: Mapping[str, str] | None = None) -> Routed:
        """Route a chat-completions body as the gateway would; ``EvaluationError`` if it would refuse it."""
        try:
            parsed = parse_chat_request(orjson.dumps(body))
            route = self.pipeline.route(parsed, client, {k.lower(): v for k, v in (headers or {}).items()})
        except GatewayError as exc:
            raise EvaluationError(str(exc)) from exc
        return _routed(route.features, route.decision, route)

    def redecide(self, features: Features, ctx: RequestContext, max_output_tokens: int = 0) -> Routed:
        """Decide a request already classified (a ledger row's recorded inputs) under this config."""
        decision = self.pipeline.decide(features, ctx)
        plan = self.pipeline.planner.plan(decision, features, {}, max_output_tokens=max_output_tokens)
        return _routed(features, decision, Route(features, decision, plan, ctx))

    def with_rules(self, rules: Sequence[RuleConfig]) -> OfflineRouter:
        """This router with other rules, keeping its classifier (calibration tries many thresholds)."""
        other = copy.copy(self)
        other.config = self.config.model_copy(update={"rules": list(rules)})
        other.pipeline = copy.copy(self.pipeline)
        other.pipeline.config = other.config
        other.pipeline.rules = compile_rules(rules)
        other.pipeline.planner = Planner(other.config)
        return other

    def price(self, backend: str | None) -> PriceConfig:
        return self.config.backends[backend].price if backend in self.config.backends else PriceConfig()

    def cost(self, backend: str | None, input_tokens: int, output_tokens: int) -> float:
        return cost_usd(self.price(backend), input_tokens, output_tokens)


def _routed(features: Features, decision: Decision, route: Route) -> Routed:
    plan = route.plan
    first = plan.candidates[0] if plan.candidates and plan.refusal is None else None
    return Routed(
        features=features,
        decision=decision,
        tier=first.tier if first else None,
        backend=first.backend if first else None,
        refusal=plan.refusal,
        reason=route.reason(),
    )


def config_or_error(path: Path) -> GatewayConfig:
    """``load_offline_config`` with its problems as one ``EvaluationError``."""
    try:
        return load_offline_config(path)
    except ConfigError as exc:
        raise EvaluationError("; ".join(exc.errors)) from exc
