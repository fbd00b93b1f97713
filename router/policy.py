"""Policy: a rules ``Decision`` -> a ``Plan``, the ordered backends to try and why.

Hard constraints come first: a request carrying personal data only ever sees self-hosted backends,
and a backend whose context window cannot hold the prompt is never tried. Then the rule's target,
a sticky escalated conversation, stress (capacity, latency) and the fallback chain order the rest.
Budgets and circuit breakers are applied per attempt at dispatch, because they change by the moment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
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
    #: Why the first candidate is not the rule's own target (``pii``, ``capacity``, ``latency``, ``sticky``;
    #: ``anthropic`` from ``router.endpoints.messages``), if so.
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
    allowed: frozenset[str]
    order: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: False when a note depends on the request itself (its size), not only on the case.
    reusable: bool = True

    def add(self, names: list[str]) -> None:
        for name in names:
            if name in self.allowed and name not in self.order:
                self.order.append(name)


@dataclass(frozen=True, slots=True)
class _Case:
    """The part of a plan fixed by the decision, the rule and which backends may and can take the prompt."""

    order: tuple[str, ...]
    #: The plan while no backend of ``order`` is under stress: most requests get it as it is.
    plan: Plan


class Planner:
    """Plans requests under one config.

    Most requests share their case: the same rule target, personal data or not, the same backends
    able to hold the prompt, the same sticky tier. That part of the plan is worked out once per
    case and remembered (cases are few: targets x rules x window thresholds); stress, which changes
    by the moment, is applied to every request.
    """

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self._rules = {rule.name: rule for rule in config.rules}
        self._all = frozenset(config.backends)
        self._self_hosted = frozenset(config.self_hosted)
        self._windows = {name: backend.context_window for name, backend in config.backends.items()}
        #: Prompts up to this many tokens (output included) fit every backend.
        self._fits_all = min(self._windows.values(), default=0)
        self._top_rank = max(config.tier_rank.values())
        self._cases: dict[tuple[Any, ...], _Case] = {}

    def may_stick(self, decision: Decision) -> bool:
        """Whether a conversation's sticky tier could change where ``decision`` goes (``_case`` applies
        it): not for a model the client named, a rule that breaks stickiness, or the top tier already."""
        rule = self._rules.get(decision.rule)
        if decision.rule == REQUESTED_MODEL or (rule is not None and rule.break_stickiness):
            return False
        target = decision.target
        tier = target.tier if target.backend is None else self.config.backends[target.backend].tier
        return self.config.tier_rank.get(tier or "", 0.0) < self._top_rank

    def plan(
        self,
        decision: Decision,
        features: Features,
        backends: Mapping[str, BackendState],
        *,
        max_output_tokens: int,
        sticky_tier: str | None = None,
    ) -> Plan:
        config = self.config
        rule = self._rules.get(decision.rule)
        needed = features.input_tokens + max_output_tokens
        pii_locked = bool(features.pii) and bool(self._self_hosted)
        allowed = self._self_hosted if pii_locked else self._all
        fits = allowed if needed <= self._fits_all else frozenset(n for n in allowed if self._windows[n] >= needed)
        key = (decision.target, decision.rule, pii_locked, fits, sticky_tier)
        case = self._cases.get(key)
        if case is None:
            case = self._case(key, decision, rule, allowed, fits, needed, pii_locked, sticky_tier)
        if not case.order:
            return replace(case.plan, refusal=_refusal(features, needed, pii_locked))
        if not (case.plan.allow_downgrade and config.policy.degrade_under_stress):
            return case.plan
        max_ttft = rule.max_ttft_ms if rule is not None else None
        first = case.order[0]
        why = backends[first].stress(config.backends[first], max_ttft) if first in backends else None
        if why is None:
            return case.plan
        calm = [n for n in case.order[1:] if backends[n].stress(config.backends[n], max_ttft) is None]
        if not calm:
            return case.plan
        order = [calm[0], *(n for n in case.order if n != calm[0])]
        return replace(
            case.plan,
            candidates=tuple(_candidate(config, n) for n in order),
            rerouted=why,
            notes=(*case.plan.notes, f"backend {first!r} is under {why} stress; serving from {calm[0]!r} first"),
        )

    def _case(
        self,
        key: tuple[Any, ...],
        decision: Decision,
        rule: RuleConfig | None,
        allowed: frozenset[str],
        fits: frozenset[str],
        needed: int,
        pii_locked: bool,
        sticky_tier: str | None,
    ) -> _Case:
        """Target, personal data, context windows, stickiness and fallback chains, in that order."""
        config = self.config
        draft = _Draft(config, fits)
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
        if pii_locked and not any(n in self._self_hosted for n in target):
            draft.notes.append("personal data: kept on self-hosted backends instead of " + ", ".join(target))
            rerouted = "pii"
        draft.add(target)
        if not draft.order and any(n in allowed for n in target):
            # Too long for the target: the cheapest backends whose window fits take it, before any call.
            draft.notes.append(f"prompt needs ~{needed} tokens, more than {', '.join(target)} can hold")
            draft.reusable = False
            draft.add(sorted(fits, key=lambda n: ranks[config.backends[n].tier]))
        for name in target:
            draft.add(_fallbacks(config, name))
        allow_downgrade = rule.allow_downgrade if rule is not None else True
        cheapest = min(ranks.values())
        downgrades = tuple(
            _candidate(config, n)
            for n in sorted(fits)
            if allow_downgrade and n not in draft.order and ranks[config.backends[n].tier] == cheapest
        )
        candidates = tuple(_candidate(config, n) for n in draft.order)
        plan = Plan(candidates, tuple(draft.notes), rerouted, None, pii_locked, allow_downgrade, downgrades)
        case = _Case(tuple(draft.order), plan)
        if draft.reusable:
            self._cases[key] = case
        return case


def fallback_routes(config: GatewayConfig) -> set[tuple[str, str]]:
    """The (from, to) backend pairs a fallback can take: any two backends of one plan's chain.

    A chain is a tier's backends, their fallbacks and the cheapest tier (budget downgrades);
    the metrics export these pairs before the first fallback happens.
    """
    ranks = config.tier_rank
    cheapest = [n for n, b in config.backends.items() if ranks[b.tier] == min(ranks.values())]
    routes: set[tuple[str, str]] = set()
    for names in config.tiers.values():
        chain = {*names, *cheapest, *(n for name in names for n in _fallbacks(config, name))}
        routes |= {(src, dst) for src in chain for dst in chain if src != dst}
    return routes


def _refusal(features: Features, needed: int, pii_locked: bool) -> str:
    if pii_locked:
        return (
            f"The request contains personal data ({', '.join(features.pii)}), which may only be sent to "
            f"self-hosted backends, and none of them can take it (needs ~{needed} tokens)."
        )
    return f"No backend can take a prompt of ~{needed} tokens."


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
