"""Policy: a rules ``Decision`` -> a ``Plan``, the ordered backends to try and why.

Hard constraints come first: a request carrying personal data only ever sees self-hosted backends,
and a backend whose context window cannot hold the prompt is never tried. Then the rule's target,
a sticky escalated conversation, stress (capacity, latency) and the fallback chain order the rest.
Budgets and circuit breakers are applied per attempt at dispatch, because they change by the moment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from router.classify import Features
from router.config import BackendConfig, GatewayConfig, RuleConfig
from router.rules import REQUESTED_MODEL, Decision
from router.state import BackendState


@dataclass(frozen=True, slots=True)
class Candidate:
    """One backend in a plan."""

    backend: str
    tier: str
    config: BackendConfig


@dataclass(frozen=True, slots=True)
class Plan:
    candidates: tuple[Candidate, ...]
    notes: tuple[str, ...] = ()
    #: Why the first candidate is not the rule's own target (``capacity``, ``latency``, ``sticky``...), if so.
    rerouted: str | None = None
    #: Set when nothing may serve the request (e.g. personal data and no self-hosted backend fits).
    refusal: str | None = None
    pii_locked: bool = False
    allow_downgrade: bool = True
    #: The cheapest tier's backends, tried only when the budget cannot afford the candidates.
    downgrades: tuple[Candidate, ...] = ()

    @property
    def primary(self) -> Candidate:
        return self.candidates[0]

    def __repr__(self) -> str:
        chain = " -> ".join(c.backend for c in self.candidates) or "nothing"
        return f"Plan({chain}{'; ' + '; '.join(self.notes) if self.notes else ''})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "candidates": [{"backend": c.backend, "tier": c.tier} for c in self.candidates],
            "notes": list(self.notes),
            "rerouted": self.rerouted,
            "refusal": self.refusal,
            "pii_locked": self.pii_locked,
            "budget_downgrade": [c.backend for c in self.downgrades],
        }


@dataclass(slots=True)
class _Draft:
    config: GatewayConfig
    allowed: set[str]
    order: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, names: list[str]) -> None:
        for name in names:
            if name in self.allowed and name not in self.order:
                self.order.append(name)


def make_plan(
    decision: Decision,
    features: Features,
    config: GatewayConfig,
    backends: Mapping[str, BackendState],
    *,
    rule: RuleConfig | None,
    max_output_tokens: int,
    sticky_tier: str | None = None,
) -> Plan:
    needed = features.input_tokens + max_output_tokens
    self_hosted = config.self_hosted
    pii_locked = bool(features.pii) and bool(self_hosted)
    allowed = self_hosted if pii_locked else set(config.backends)
    fits = {n for n in allowed if config.backends[n].context_window >= needed}
    draft = _Draft(config, fits)
    allow_downgrade = rule.allow_downgrade if rule is not None else True
    rerouted: str | None = None

    if decision.target.backend is not None:
        target = [decision.target.backend]
    else:
        target = list(config.tiers[decision.target.tier or ""])
    ranks = config.tier_rank
    if sticky_tier is not None and not (rule is not None and rule.break_stickiness):
        decided_tier = config.backends[target[0]].tier
        if ranks.get(sticky_tier, 0) > ranks.get(decided_tier, 0) and decision.rule != REQUESTED_MODEL:
            target = config.tiers[sticky_tier]
            rerouted = "sticky"
            draft.notes.append(f"conversation was escalated to tier {sticky_tier!r} earlier; staying there")
    if pii_locked and not any(n in self_hosted for n in target):
        draft.notes.append("personal data: kept on self-hosted backends instead of " + ", ".join(target))
    draft.add(target)
    if not draft.order and any(n in allowed for n in target):
        # Too long for the target: the cheapest backends whose window fits take it, before any call.
        draft.notes.append(f"prompt needs ~{needed} tokens, more than {', '.join(target)} can hold")
        draft.add(sorted(fits, key=lambda n: ranks[config.backends[n].tier]))
    for name in target:
        draft.add(_fallbacks(config, name))

    if allow_downgrade and config.policy.degrade_under_stress and draft.order:
        max_ttft = rule.max_ttft_ms if rule is not None else None
        first = draft.order[0]
        why = backends[first].stress(config.backends[first], max_ttft) if first in backends else None
        if why is not None:
            calm = [n for n in draft.order[1:] if backends[n].stress(config.backends[n], max_ttft) is None]
            if calm:
                draft.order.remove(calm[0])
                draft.order.insert(0, calm[0])
                rerouted = why
                draft.notes.append(f"backend {first!r} is under {why} stress; serving from {calm[0]!r} first")

    refusal = None
    if not draft.order:
        if pii_locked:
            refusal = (
                f"The request contains personal data ({', '.join(features.pii)}), which may only be sent to self-hosted "
                f"backends, and none of them can take it (needs ~{needed} tokens)."
            )
        else:
            refusal = f"No backend can take a prompt of ~{needed} tokens."
    candidates = tuple(_candidate(config, n) for n in draft.order)
    cheapest = min(ranks.values())
    downgrades = tuple(
        _candidate(config, n)
        for n in sorted(fits)
        if allow_downgrade and n not in draft.order and ranks[config.backends[n].tier] == cheapest
    )
    return Plan(candidates, tuple(draft.notes), rerouted, refusal, pii_locked, allow_downgrade, downgrades)


def _candidate(config: GatewayConfig, name: str) -> Candidate:
    return Candidate(name, config.backends[name].tier, config.backends[name])


def _expand(config: GatewayConfig, name: str) -> list[str]:
    """A tier name -> its backends; a backend name -> [it]. A tier wins over a backend of the same name."""
    return list(config.tiers[name]) if name in config.tiers else [name]


def _fallbacks(config: GatewayConfig, backend: str) -> list[str]:
    chain = config.backends[backend].fallback
    if chain is None:
        chain = config.policy.fallback.get(config.backends[backend].tier, [])
    return [n for target in chain for n in _expand(config, target)]
