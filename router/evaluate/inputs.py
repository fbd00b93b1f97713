"""The decision inputs recorded with each ledger row, so traffic can be re-decided offline.

What the rules and the policy read, never the prompt: the ``Features`` fields (task, scores or
probabilities, complexity, token estimate, flags, the names of the personal-data kinds found...),
the model the client asked for, the values of the headers the serving config's rules look at, the
matched rule and planned tier, and the output-token bound. Every ``Features`` field is recorded
except ``evidence`` (cue phrases, not needed to re-decide), so fields a newer classifier adds are
recorded without a change here. Tenant and key name are ledger columns of their own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from router.classify import Features
from router.config import RuleConfig
from router.rules import RequestContext

#: Bumped when the record's shape changes incompatibly.
VERSION = 1
_SKIPPED = frozenset({"evidence"})
_FIELDS = tuple(f for f in dataclasses.fields(Features) if f.name not in _SKIPPED)
_RECORDED = tuple(f.name for f in _FIELDS)


def rule_headers(rules: Iterable[RuleConfig]) -> frozenset[str]:
    """The header names any rule looks at: the only headers recorded (others may carry secrets)."""
    return frozenset(name for rule in rules if rule.when is not None for name in (rule.when.headers or {}))


def encode(
    features: Features,
    ctx: RequestContext,
    *,
    rule: str,
    tier: str | None,
    max_output_tokens: int,
    headers: frozenset[str],
) -> str:
    """One request's decision inputs as JSON text for the ledger's ``decision`` column."""
    record = {
        "v": VERSION,
        "rule": rule,
        "tier": tier,
        "model": ctx.model,
        "headers": {name: ctx.headers[name] for name in headers if name in ctx.headers},
        "max_output_tokens": max_output_tokens,
        "features": {name: getattr(features, name) for name in _RECORDED},
    }
    return orjson.dumps(record).decode()


@dataclass(frozen=True, slots=True)
class Recorded:
    """A ledger row's decision inputs, read back."""

    features: Features
    model: str
    headers: Mapping[str, str]
    rule: str
    tier: str | None
    max_output_tokens: int

    def context(self, tenant: str | None, key: str | None) -> RequestContext:
        return RequestContext(model=self.model, tenant=tenant, api_key=key, headers=self.headers)


class UnreadableRecordError(ValueError):
    """A recorded decision that cannot be turned back into ``Features`` (e.g. a field it lacks)."""


def decode(text: str) -> Recorded:
    try:
        record: dict[str, Any] = orjson.loads(text)
        values = record["features"]
        kwargs: dict[str, Any] = {}
        for f in _FIELDS:
            if f.name in values:
                kwargs[f.name] = _restore(f, values[f.name])
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise UnreadableRecordError(f"recorded features lack {f.name!r} (recorded by an older version)")
        return Recorded(
            features=Features(**kwargs),
            model=record["model"],
            headers=record.get("headers") or {},
            rule=record["rule"],
            tier=record.get("tier"),
            max_output_tokens=int(record.get("max_output_tokens") or 0),
        )
    except UnreadableRecordError:
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise UnreadableRecordError(f"malformed decision record: {exc}") from exc


def _restore(f: dataclasses.Field[Any], value: Any) -> Any:
    """JSON has no tuples: give tuple-typed fields (``pii``) their type back."""
    annotation = str(f.type)
    if isinstance(value, list) and annotation.startswith("tuple"):
        return tuple(value)
    return value

