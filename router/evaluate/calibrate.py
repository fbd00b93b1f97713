"""``llm-router calibrate``: the threshold that would have produced a target flagship share.

A threshold is a rule condition ``<feature>_gte`` or ``<feature>_lt`` over a 0..1 score of the
classifier (``complexity_gte`` today; any such field a newer classifier adds, such as
``escalation_gte``, works the same way). Logged requests are re-decided (``router.evaluate.replay``)
with the threshold moved; every threshold between two neighbouring recorded values routes the same
requests, so only those gaps are tried (a binary search, as the share moves one way with the
threshold) and the shortest decimal inside the best gap is proposed. Where shadow verdicts exist,
the projected mid acceptance is the share of acceptable verdicts among requests that would be
answered by a lower tier.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from router.classify import Features
from router.config import RuleConfig
from router.evaluate.offline import EvaluationError, OfflineRouter
from router.evaluate.replay import Replayed, replay
from router.ledger import LedgerRow

_SUFFIXES = ("_gte", "_lt")
#: The 0..1 scores of ``Features`` (``float``, or ``float | None`` for a model's scores).
_SCORES = frozenset(f.name for f in dataclasses.fields(Features) if str(f.type).replace(" ", "") in ("float", "float|None"))


@dataclass(frozen=True, slots=True)
class Threshold:
    """One threshold condition of one rule."""

    index: int
    rule: str
    condition: str
    value: float

    @property
    def feature(self) -> str:
        return self.condition.rsplit("_", 1)[0]

    def where(self) -> str:
        return f"rules.{self.index} ({self.rule}): when.{self.condition}"


def thresholds(router: OfflineRouter) -> list[Threshold]:
    """Every 0..1 score threshold in the config's rules, in rule order."""
    found = []
    for i, rule in enumerate(router.config.rules):
        if rule.when is None:
            continue
        for name, value in rule.when.model_dump(exclude_none=True).items():
            if name.endswith(_SUFFIXES) and name.rsplit("_", 1)[0] in _SCORES:
                found.append(Threshold(i, rule.name, name, float(value)))
    return found


def choose(router: OfflineRouter, rule: str | None) -> Threshold:
    """The named rule's threshold; else, of the rules sending requests to the top tier, the first
    that does so on a score alone (the general knob), else the first with a score threshold."""
    found = thresholds(router)
    if rule is not None:
        found = [t for t in found if t.rule == rule]
        if len(found) != 1:
            raise EvaluationError(f"rule {rule!r} has {len(found)} score thresholds; calibration needs exactly one")
        return found[0]
    top = [t for t in found if _tier_of(router, router.config.rules[t.index]) == router.top_tier]
    if not top:
        raise EvaluationError(
            f"no rule sends requests to tier {router.top_tier!r} on a score threshold "
            "(e.g. `when: {complexity_gte: 0.75}`); nothing to calibrate"
        )
    alone = [t for t in top if len(router.config.rules[t.index].when.model_dump(exclude_none=True)) == 1]  # type: ignore[union-attr]
    return (alone or top)[0]


@dataclass(frozen=True, slots=True)
class Outcome:
    """The logged requests under one threshold value."""

    value: float
    share: float
    cost_usd: float
    #: Acceptable / judged shadow verdicts of requests that would be answered below the top tier.
    accepted: int
    judged: int


@dataclass(frozen=True, slots=True)
class Calibration:
    threshold: Threshold
    target: float
    requests: int
    current: Outcome
    proposed: Outcome
    cost_before_usd: float

    def yaml_change(self) -> str:
        t = self.threshold
        return (f"rules.{t.index} ({t.rule}):\n"
                f"-    when.{t.condition}: {t.value}\n"
                f"+    when.{t.condition}: {self.proposed.value}")

    def as_dict(self) -> dict[str, Any]:
        def outcome(o: Outcome) -> dict[str, Any]:
            acceptance = round(o.accepted / o.judged, 4) if o.judged else None
            return {"value": o.value, "flagship_share": round(o.share, 4), "cost_usd": round(o.cost_usd, 8),
                    "mid_acceptance": acceptance, "verdicts": o.judged}

        t = self.threshold
        return {"rule": t.rule, "rule_index": t.index, "condition": t.condition, "target_flagship_share": self.target,
                "requests": self.requests, "cost_before_usd": round(self.cost_before_usd, 8),
                "current": outcome(self.current), "proposed": outcome(self.proposed)}


def calibrate(
    router: OfflineRouter,
    rows: list[LedgerRow],
    target: float,
    *,
    rule: str | None = None,
    verdicts: Mapping[str, bool] | None = None,
) -> Calibration:
    """Propose the value of one threshold that brings the top tier's share of ``rows`` closest to ``target``."""
    if not 0 <= target <= 1:
        raise EvaluationError(f"the target share must be between 0 and 1, got {target}")
    threshold = choose(router, rule)
    base, skipped = replay(router, rows)
    if not base:
        why = "; ".join(f"{k}: {v}" for k, v in skipped.items()) or "no requests in the period"
        raise EvaluationError(f"nothing to calibrate on ({why})")
    scores = (getattr(r.recorded.features, threshold.feature) for r in base)
    values = sorted({float(v) for v in scores if v is not None})  # no score (no model): no threshold matches
    if not values:
        raise EvaluationError(f"no logged request has a {threshold.feature} score to calibrate on")
    # Threshold v_k routes like every value in (v_{k-1}, v_k]; 1 (the top of the scale) ends the list.
    cuts = [*values, 1.0] if values[-1] < 1.0 else values
    evaluate = _evaluator(router, rows, threshold, verdicts or {})
    outcomes: dict[int, Outcome] = {}

    def at(k: int) -> Outcome:
        if k not in outcomes:
            outcomes[k] = evaluate(cuts[k])
        return outcomes[k]

    rising = at(len(cuts) - 1).share >= at(0).share
    lo, hi = 0, len(cuts) - 1  # find the first cut whose share is on the target's far side
    while lo < hi:
        mid = (lo + hi) // 2
        if (at(mid).share >= target) == rising:
            hi = mid
        else:
            lo = mid + 1
    best = min((k for k in (lo - 1, lo) if 0 <= k < len(cuts)), key=lambda k: (abs(at(k).share - target), k))
    current = evaluate(threshold.value)
    if abs(current.share - target) <= abs(at(best).share - target):
        proposed = current  # moving the threshold would not get closer
    else:
        low = cuts[best - 1] if best > 0 else 0.0
        proposed = dataclasses.replace(at(best), value=_short_decimal(low, cuts[best]) if best > 0 else cuts[best])
    return Calibration(threshold, target, len(base), current, proposed, cost_before_usd=sum(r.row.cost_usd for r in base))


def _evaluator(
    router: OfflineRouter, rows: list[LedgerRow], threshold: Threshold, verdicts: Mapping[str, bool]
) -> Callable[[float], Outcome]:
    def evaluate(value: float) -> Outcome:
        rules = list(router.config.rules)
        old: RuleConfig = rules[threshold.index]
        assert old.when is not None
        rules[threshold.index] = old.model_copy(update={"when": old.when.model_copy(update={threshold.condition: value})})
        replayed, _ = replay(router.with_rules(rules), rows)
        return _outcome(value, replayed, router.top_tier, verdicts)

    return evaluate


def _outcome(value: float, replayed: list[Replayed], top: str, verdicts: Mapping[str, bool]) -> Outcome:
    lower = [r for r in replayed if r.tier != top]
    judged = [verdicts[r.row.request_id] for r in lower if r.row.request_id in verdicts]
    return Outcome(
        value=value,
        share=1 - len(lower) / len(replayed),
        cost_usd=sum(r.cost_usd for r in replayed),
        accepted=sum(judged),
        judged=len(judged),
    )


def _short_decimal(low: float, high: float) -> float:
    """The number with the fewest decimals in ``(low, high]``: a threshold people can read."""
    for digits in range(1, 10):
        scale = 10**digits
        candidate = (math.floor(round(low * scale, 6)) + 1) / scale  # the next step above low
        if low < candidate <= high:
            return candidate
    return high


def _tier_of(router: OfflineRouter, rule: RuleConfig) -> str | None:
    return rule.tier if rule.tier is not None else router.config.backends[rule.backend or ""].tier


def render(c: Calibration) -> str:
    t = c.threshold
    lines = [
        f"calibrating {t.where()} on {c.requests} logged requests",
        f"now:      {t.condition} {c.current.value} -> flagship share {c.current.share:.1%}",
        f"proposed: {t.condition} {c.proposed.value} -> flagship share {c.proposed.share:.1%} (target {c.target:.1%})",
    ]
    if abs(c.proposed.share - c.target) > 0.01:
        lines.append("  (the closest share this threshold can reach: other rules or ties in the recorded scores decide the rest)")
    if c.proposed.value == t.value:
        lines += ["", "YAML change: none (the current value is already the closest)", ""]
    else:
        lines += ["", "YAML change:", c.yaml_change(), ""]
    lines.append(f"projected cost: ${c.cost_before_usd:.6f} logged -> ${c.proposed.cost_usd:.6f} (real token counts)")
    if c.proposed.judged:
        lines.append(f"projected mid acceptance: {c.proposed.accepted / c.proposed.judged:.1%} "
                     f"({c.proposed.judged} shadow verdicts on requests that would stay below the flagship)")
    else:
        lines.append("projected mid acceptance: no shadow verdicts on these requests (see policy.shadow)")
    return "\n".join(lines)
