"""``llm-router eval``: how well a config routes a labelled data set.

A data set is JSON Lines, one request per line::

    {"id": "gsm8k-7", "source": "gsm8k", "messages": [...], "expected_tier": "flagship", "task": "math"}

``messages`` and ``expected_tier`` are required; ``task`` (the expected task), ``source``, ``id``,
``model`` (default ``auto``), ``tools`` and ``max_tokens`` are optional. Each row is routed through
the gateway's own pipeline. The report gives tier and task accuracy overall, per source, per
expected tier and per matched rule, the confusion matrix (expected tier x routed tier), the
flagship share, and the projected cost per 1,000 requests against sending all of them to the
flagship (price table; input tokens as the classifier estimates them, output tokens from
``max_tokens`` or ``policy.budgets.expected_output_tokens``).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from router.evaluate.offline import EvaluationError, OfflineRouter


@dataclass(frozen=True, slots=True)
class Row:
    id: str
    source: str
    body: dict[str, Any]
    expected_tier: str
    task: str | None


def load_rows(path: Path, tiers: set[str]) -> list[Row]:
    """Read a data set; ``EvaluationError`` names the file, line and problem of the first bad row."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise EvaluationError(f"{path}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"{path}: cannot read: {exc}") from exc
    rows: list[Row] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvaluationError(f"{where}: invalid JSON: {exc.msg} (column {exc.colno})") from exc
        if not isinstance(data, dict):
            raise EvaluationError(f"{where}: each line must be a JSON object")
        if not isinstance(data.get("messages"), list) or not data["messages"]:
            raise EvaluationError(f"{where}: `messages` must be a non-empty list of chat messages")
        expected = data.get("expected_tier")
        if expected not in tiers:
            raise EvaluationError(f"{where}: `expected_tier` must be one of {sorted(tiers)}, got {expected!r}")
        body: dict[str, Any] = {"model": data.get("model", "auto"), "messages": data["messages"]}
        for name in ("tools", "max_tokens"):
            if data.get(name) is not None:
                body[name] = data[name]
        rows.append(Row(str(data.get("id", number)), str(data.get("source", "all")), body, expected, data.get("task")))
    if not rows:
        raise EvaluationError(f"{path}: no rows")
    return rows


@dataclass(slots=True)
class _Tally:
    rows: int = 0
    right_tier: int = 0
    labelled: int = 0
    right_task: int = 0

    def add(self, tier_ok: bool, task_ok: bool | None) -> None:
        self.rows += 1
        self.right_tier += tier_ok
        if task_ok is not None:
            self.labelled += 1
            self.right_task += task_ok

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "tier_accuracy": round(self.right_tier / self.rows, 4) if self.rows else None,
            "task_accuracy": round(self.right_task / self.labelled, 4) if self.labelled else None,
        }


@dataclass(slots=True)
class Report:
    tiers: list[str]
    top_tier: str
    overall: _Tally = field(default_factory=_Tally)
    sources: defaultdict[str, _Tally] = field(default_factory=lambda: defaultdict(_Tally))
    by_tier: defaultdict[str, _Tally] = field(default_factory=lambda: defaultdict(_Tally))
    by_rule: defaultdict[str, _Tally] = field(default_factory=lambda: defaultdict(_Tally))
    confusion: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    cost_usd: float = 0.0
    top_cost_usd: float = 0.0
    misrouted: list[dict[str, Any]] = field(default_factory=list)

    @property
    def tier_accuracy(self) -> float:
        return self.overall.right_tier / self.overall.rows

    @property
    def flagship_share(self) -> float:
        return sum(row[self.top_tier] for row in self.confusion.values()) / self.overall.rows

    def as_dict(self) -> dict[str, Any]:
        per_1000 = 1000 / self.overall.rows
        return {
            **self.overall.as_dict(),
            "per_source": {k: v.as_dict() for k, v in self.sources.items()},
            "per_tier": {k: v.as_dict() for k, v in self.by_tier.items()},
            "per_rule": {k: v.as_dict() for k, v in self.by_rule.items()},
            "confusion": {"rows_expected_columns_routed": self.tiers,
                          "matrix": {e: {r: self.confusion[e][r] for r in self.tiers} for e in self.tiers}},
            "flagship_share": round(self.flagship_share, 4),
            "cost_per_1000_usd": round(self.cost_usd * per_1000, 6),
            "all_flagship_cost_per_1000_usd": round(self.top_cost_usd * per_1000, 6),
            "misrouted": self.misrouted,
        }


def evaluate(router: OfflineRouter, rows: list[Row]) -> Report:
    config = router.config
    report = Report(tiers=list(config.tiers), top_tier=router.top_tier)
    expected_output = config.policy.budgets.expected_output_tokens
    for row in rows:
        try:
            routed = router.route(row.body)
        except EvaluationError as exc:
            raise EvaluationError(f"row {row.id}: the gateway would refuse it: {exc}") from exc
        tier = routed.tier or "refused"
        features = routed.features
        tier_ok = tier == row.expected_tier
        task_ok = None if row.task is None else features.task == row.task
        for tally in (report.overall, report.sources[row.source], report.by_tier[row.expected_tier],
                      report.by_rule[routed.decision.rule]):
            tally.add(tier_ok, task_ok)
        report.confusion[row.expected_tier][tier] += 1
        output = row.body.get("max_tokens") or expected_output
        report.cost_usd += router.cost(routed.backend, features.input_tokens, output)
        report.top_cost_usd += router.cost(config.tiers[router.top_tier][0], features.input_tokens, output)
        if not tier_ok or task_ok is False:
            report.misrouted.append({
                "id": row.id, "expected": f"{row.expected_tier}/{row.task}", "got": f"{tier}/{features.task}",
                "rule": routed.decision.rule, "tier_wrong": not tier_ok, "why": features.reason(),
            })
    return report


def render(report: Report, *, verbose: int = 0) -> str:
    """The report as text tables; ``verbose`` 1 lists misrouted rows, 2 also rows with the wrong task."""
    lines = [f"{'source':18s} {'rows':>5s} {'tier acc':>9s} {'task acc':>9s}"]
    lines += [_line(name, tally) for name, tally in report.sources.items()]
    lines.append(_line("overall", report.overall))
    lines += ["", f"{'expected tier':18s} {'rows':>5s} {'tier acc':>9s} {'task acc':>9s}"]
    lines += [_line(name, tally) for name, tally in report.by_tier.items()]
    lines += ["", f"{'rule':32s} {'rows':>5s} {'tier acc':>9s}"]
    lines += [f"{name:32s} {t.rows:5d} {t.right_tier / t.rows:9.3f}" for name, t in report.by_rule.items()]
    routed = [*report.tiers, *(["refused"] if any(c["refused"] for c in report.confusion.values()) else [])]
    lines += ["", "confusion (rows: expected tier, columns: routed tier)",
              f"{'':18s} " + " ".join(f"{t:>9s}" for t in routed)]
    lines += [f"{e:18s} " + " ".join(f"{report.confusion[e][r]:9d}" for r in routed) for e in report.tiers]
    per_1000 = 1000 / report.overall.rows
    cost, top = report.cost_usd * per_1000, report.top_cost_usd * per_1000
    saving = f" ({1 - cost / top:.0%} less)" if top else ""
    lines += ["", f"{report.top_tier} share: {report.flagship_share:.1%}",
              f"projected cost per 1,000 requests: ${cost:.4f} routed vs ${top:.4f} all-{report.top_tier}{saving}"]
    shown = [m for m in report.misrouted if m["tier_wrong"] or verbose > 1] if verbose else []
    if shown:
        lines.append("")
        for miss in shown:
            mark = "MISROUTED" if miss["tier_wrong"] else "task"
            lines.append(f"{mark:9s} {miss['id']}: expected {miss['expected']}, got {miss['got']} by rule "
                         f"{miss['rule']!r}\n          {miss['why']}")
    return "\n".join(lines)


def _line(name: str, tally: _Tally) -> str:
    task = f"{tally.right_task / tally.labelled:9.3f}" if tally.labelled else f"{'-':>9s}"
    return f"{name:18s} {tally.rows:5d} {tally.right_tier / tally.rows:9.3f} {task}"
