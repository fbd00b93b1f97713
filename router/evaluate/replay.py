"""``llm-router replay``: what logged traffic would have done under another config.

Each ledger row carries its request's decision inputs (``router.evaluate.inputs``): the recorded
features are re-decided with the new config's rules and policy (idle backends: no stress,
breakers closed), with no prompt text and no upstream call. "Before" is what the serving config
decided (its rule and planned tier) and what the request really cost; "after" is the new decision
and the same real token counts priced at the backend it would now go to (unchanged backends keep
their real cost). Rows recorded without decision inputs are counted and left out.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from router.evaluate.inputs import Recorded, UnreadableRecordError, decode
from router.evaluate.offline import EvaluationError, OfflineRouter
from router.ledger import Ledger, LedgerRow

REFUSED = "refused"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, *, now: float | None = None) -> float:
    """Unix seconds, an ISO 8601 date or time (UTC unless it says otherwise), or an age such as ``24h`` or ``7d``."""
    duration = _DURATION.match(text)
    if duration:
        return (time.time() if now is None else now) - float(duration[1]) * _SECONDS[duration[2]]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise EvaluationError(f"cannot read time {text!r}: give unix seconds, an ISO date such as 2026-12-01, or an age such as 24h") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


@contextmanager
def open_ledger(path: Path) -> Iterator[Ledger]:
    """An existing ledger file (a missing one is an error, not a new empty ledger)."""
    if not path.is_file():
        raise EvaluationError(f"{path}: no such ledger")
    try:
        ledger = Ledger(path)
    except Exception as exc:  # sqlite3 errors: not a database, locked, unreadable
        raise EvaluationError(f"{path}: cannot open the ledger: {exc}") from exc
    try:
        yield ledger
    finally:
        ledger.close()


@dataclass(frozen=True, slots=True)
class Replayed:
    """One logged request, before and after."""

    row: LedgerRow
    recorded: Recorded
    rule: str
    tier: str
    backend: str | None
    cost_usd: float


def replay(router: OfflineRouter, rows: list[LedgerRow]) -> tuple[list[Replayed], Counter[str]]:
    """Re-decide every row that has decision inputs; also return why the others were left out."""
    out: list[Replayed] = []
    skipped: Counter[str] = Counter()
    for row in rows:
        if row.decision is None:
            skipped["recorded without decision inputs"] += 1
            continue
        try:
            recorded = decode(row.decision)
        except UnreadableRecordError as exc:
            skipped[str(exc)] += 1
            continue
        routed = router.redecide(recorded.features, recorded.context(row.tenant, row.key), recorded.max_output_tokens)
        if routed.backend is None:
            cost = 0.0
        elif routed.backend == row.backend:
            cost = row.cost_usd
        else:
            cost = router.cost(routed.backend, row.input_tokens, row.output_tokens)
        out.append(Replayed(row, recorded, routed.decision.rule, routed.tier or REFUSED, routed.backend, cost))
    return out, skipped


@dataclass(slots=True)
class Summary:
    requests: int
    skipped: dict[str, int]
    since: float | None
    until: float | None
    tiers: dict[str, tuple[int, int]] = field(default_factory=dict)
    rules: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: (rule before, rule after, tier before, tier after) -> requests that changed tier so.
    changed: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    cost_before_usd: float = 0.0
    cost_after_usd: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "skipped": self.skipped,
            "since": self.since,
            "until": self.until,
            "tiers": {k: {"before": b, "after": a} for k, (b, a) in self.tiers.items()},
            "rules": {k: {"before": b, "after": a} for k, (b, a) in self.rules.items()},
            "changed_tier": [
                {"rule_before": rb, "rule_after": ra, "tier_before": tb, "tier_after": ta, "requests": n}
                for (rb, ra, tb, ta), n in self.changed.items()
            ],
            "cost_before_usd": round(self.cost_before_usd, 8),
            "cost_after_usd": round(self.cost_after_usd, 8),
        }


def summarize(replayed: list[Replayed], skipped: Counter[str]) -> Summary:
    summary = Summary(
        requests=len(replayed), skipped=dict(skipped),
        since=min((r.row.ts for r in replayed), default=None), until=max((r.row.ts for r in replayed), default=None),
    )
    tiers_before = Counter(r.recorded.tier or REFUSED for r in replayed)
    tiers_after = Counter(r.tier for r in replayed)
    summary.tiers = {t: (tiers_before[t], tiers_after[t]) for t in sorted({*tiers_before, *tiers_after})}
    rules_before = Counter(r.recorded.rule for r in replayed)
    rules_after = Counter(r.rule for r in replayed)
    summary.rules = {name: (rules_before[name], rules_after[name]) for name in [*rules_before, *(n for n in rules_after if n not in rules_before)]}
    changed = Counter(
        (r.recorded.rule, r.rule, r.recorded.tier or REFUSED, r.tier) for r in replayed if (r.recorded.tier or REFUSED) != r.tier
    )
    summary.changed = dict(changed.most_common())
    summary.cost_before_usd = sum(r.row.cost_usd for r in replayed)
    summary.cost_after_usd = sum(r.cost_usd for r in replayed)
    return summary


def render(summary: Summary) -> str:
    n = summary.requests
    if not n:
        left_out = "; ".join(f"{k}: {v}" for k, v in summary.skipped.items()) or "the ledger has no requests in the period"
        return f"no requests to replay ({left_out})"
    period = f"{_iso(summary.since)} .. {_iso(summary.until)}"
    lines = [f"replayed {n} requests from {period}"]
    lines += [f"  left out: {count} ({why})" for why, count in summary.skipped.items()]
    lines += ["", f"{'tier':32s} {'before':>14s} {'after':>14s}"]
    lines += [f"{t:32s} {_share(b, n)} {_share(a, n)}" for t, (b, a) in summary.tiers.items()]
    lines += ["", f"{'rule':32s} {'before':>14s} {'after':>14s}"]
    lines += [f"{r:32s} {_share(b, n)} {_share(a, n)}" for r, (b, a) in summary.rules.items()]
    moved = sum(summary.changed.values())
    lines += ["", f"requests changing tier: {moved} ({moved / n:.1%})"]
    lines += [f"  {rb} -> {ra}: {count} ({tb} -> {ta})" for (rb, ra, tb, ta), count in summary.changed.items()]
    before, after = summary.cost_before_usd, summary.cost_after_usd
    change = f" ({after / before - 1:+.1%})" if before else ""
    lines += ["", f"cost: ${before:.6f} -> ${after:.6f}{change} (real token counts)"]
    return "\n".join(lines)


def _share(count: int, total: int) -> str:
    return f"{count:6d} {count / total:6.1%}"


def _iso(ts: float | None) -> str:
    return "-" if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
