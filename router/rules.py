"""Routing rules: ``Features`` + request context -> ``Decision``. First match wins; pure.

Rules are compiled once per loaded config into tuples of small predicates, so matching a
request is a handful of attribute reads; each rule's decision, reason included, is built once.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from router.classify import Features
from router.config import RuleConfig, WhenConfig


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What the rules may look at besides the classification."""

    model: str
    tenant: str | None = None
    api_key: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


Predicate = Callable[[Features, RequestContext], bool]

#: The rule name reported when the client named a tier, backend or alias instead of ``auto``.
REQUESTED_MODEL = "requested-model"
#: The synthetic rule of ``model: auto`` embeddings, sent to the default embeddings backend.
EMBEDDINGS_DEFAULT = "embeddings-default"
#: The task reported for embeddings requests (their input is scanned for personal data, not routed by task).
EMBEDDINGS_TASK = "embeddings"


@dataclass(frozen=True, slots=True)
class Target:
    """Where a decision sends a request: a tier, or one named backend."""

    tier: str | None = None
    backend: str | None = None

    def __str__(self) -> str:
        return f"backend {self.backend}" if self.backend else f"tier {self.tier}"


@dataclass(frozen=True, slots=True)
class Decision:
    """The rules' answer: which rule matched and where it sends the request."""

    rule: str
    target: Target
    why: str

    def __repr__(self) -> str:
        return f"Decision(rule={self.rule!r}, target={self.target}, why={self.why!r})"


@dataclass(frozen=True, slots=True)
class CompiledRule:
    conditions: tuple[tuple[str, Predicate], ...]
    config: RuleConfig
    #: What matching this rule decides; built once, as it depends on the rule alone.
    decision: Decision

    def matches(self, features: Features, ctx: RequestContext) -> bool:
        for _, predicate in self.conditions:
            if not predicate(features, ctx):
                return False
        return True


def compile_rules(rules: Sequence[RuleConfig]) -> tuple[CompiledRule, ...]:
    return tuple(_compile(rule) for rule in rules)


def _compile(rule: RuleConfig) -> CompiledRule:
    conditions = _conditions(rule.when) if rule.when else ()
    target = Target(tier=rule.tier, backend=rule.backend)
    describe = " and ".join(text for text, _ in conditions) or "always (default rule)"
    decision = Decision(rule=rule.name, target=target, why=f"rule {rule.name!r}: {describe}")
    return CompiledRule(conditions=conditions, config=rule, decision=decision)


def match_rules(features: Features, ctx: RequestContext, rules: Sequence[CompiledRule]) -> Decision:
    """Return the decision of the first rule that matches; the config guarantees a default rule."""
    for rule in rules:
        if rule.matches(features, ctx):
            return rule.decision
    raise LookupError("no rule matched; a validated config always ends with a default rule")


def _conditions(when: WhenConfig) -> tuple[tuple[str, Predicate], ...]:
    out: list[tuple[str, Predicate]] = []
    if when.task is not None:
        tasks = frozenset(when.task)
        out.append((f"task in {sorted(tasks)}", lambda f, c: f.task in tasks))
    if when.task_not is not None:
        excluded = frozenset(when.task_not)
        out.append((f"task not in {sorted(excluded)}", lambda f, c: f.task not in excluded))
    for condition, attribute, (symbol, compare) in _BOUNDS:
        bound = getattr(when, condition)
        if bound is not None:
            out.append((f"{attribute.replace('_', ' ')} {symbol} {bound}", _bound(attribute, compare, bound)))
    if when.pii is not None:
        want_pii = when.pii
        out.append((f"pii is {want_pii}", lambda f, c: bool(f.pii) is want_pii))
    if when.tools is not None:
        want_tools = when.tools
        out.append((f"tools is {want_tools}", lambda f, c: f.has_tools is want_tools))
    if when.images is not None:
        want_images = when.images
        out.append((f"images is {want_images}", lambda f, c: f.has_images is want_images))
    if when.model is not None:
        models = frozenset(when.model)
        out.append((f"model in {sorted(models)}", lambda f, c: c.model in models))
    if when.tenant is not None:
        tenants = frozenset(when.tenant)
        out.append((f"tenant in {sorted(tenants)}", lambda f, c: c.tenant in tenants))
    if when.api_key is not None:
        keys = frozenset(when.api_key)
        out.append((f"api key in {sorted(keys)}", lambda f, c: c.api_key in keys))
    for name, values in (when.headers or {}).items():
        accepted = frozenset(values)
        out.append((f"header {name} in {sorted(accepted)}", _header_predicate(name, accepted)))
    return tuple(out)


#: Threshold conditions: (field of ``when``, attribute of ``Features``, (symbol, comparison)).
_AT_LEAST, _BELOW, _ABOVE, _AT_MOST = (">=", operator.ge), ("<", operator.lt), (">", operator.gt), ("<=", operator.le)
_BOUNDS: tuple[tuple[str, str, tuple[str, Callable[[Any, Any], bool]]], ...] = (
    ("complexity_gte", "complexity", _AT_LEAST),
    ("complexity_lt", "complexity", _BELOW),
    ("escalation_gte", "escalation", _AT_LEAST),
    ("escalation_lt", "escalation", _BELOW),
    ("confidence_gte", "confidence", _AT_LEAST),
    ("confidence_lt", "confidence", _BELOW),
    ("input_tokens_gt", "input_tokens", _ABOVE),
    ("input_tokens_lte", "input_tokens", _AT_MOST),
)


def _bound(attribute: str, compare: Callable[[Any, Any], bool], bound: float) -> Predicate:
    """``features.<attribute> <compare> bound``; a value the classifier did not give (no model) never matches."""
    read = operator.attrgetter(attribute)

    def predicate(f: Features, c: RequestContext) -> bool:
        value = read(f)
        return value is not None and compare(value, bound)

    return predicate


def _header_predicate(name: str, accepted: frozenset[str]) -> Predicate:
    return lambda f, c: c.headers.get(name) in accepted
