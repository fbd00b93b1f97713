"""Policy: a rules ``Decision`` -> a ``Plan``, the ordered backends to try. Pure.

The rules say where a request should go; the policy says which concrete backends can take it:
a backend whose context window cannot hold the prompt is skipped in favour of one that can,
except that a request carrying personal data never leaves its tier.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from router.classify import Features
from router.config import BackendConfig, GatewayConfig
from router.rules import Decision


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

    @property
    def primary(self) -> Candidate:
        return self.candidates[0]

    def __repr__(self) -> str:
        chain = " -> ".join(c.backend for c in self.candidates)
        return f"Plan({chain}{'; ' + '; '.join(self.notes) if self.notes else ''})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "candidates": [{"backend": c.backend, "tier": c.tier} for c in self.candidates],
            "notes": list(self.notes),
        }


def make_plan(decision: Decision, features: Features, config: GatewayConfig, max_output_tokens: int) -> Plan:
    if decision.target.backend is not None:
        name = decision.target.backend
        return Plan((Candidate(name, config.backends[name].tier, config.backends[name]),))
    tier = decision.target.tier or ""
    wanted = [Candidate(name, tier, config.backends[name]) for name in config.tiers[tier]]
    needed = features.input_tokens + max_output_tokens
    fitting = [c for c in wanted if c.config.context_window >= needed]
    if fitting:
        return Plan(tuple(fitting))
    if features.pii:
        return Plan(tuple(wanted), (f"prompt needs ~{needed} tokens, more than tier {tier!r} holds; personal data keeps it there",))
    elsewhere = [
        Candidate(name, backend.tier, backend)
        for name, backend in config.backends.items()
        if backend.tier != tier and backend.context_window >= needed
    ]
    if elsewhere:
        return Plan(
            tuple(elsewhere),
            (f"prompt needs ~{needed} tokens, more than tier {tier!r} holds; moved to tier {elsewhere[0].tier!r}",),
        )
    return Plan(tuple(wanted), (f"prompt needs ~{needed} tokens, more than any backend holds",))
