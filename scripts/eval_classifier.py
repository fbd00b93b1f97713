"""Measure the classifier and the routing rules on a labelled set of chat requests.

    python scripts/eval_classifier.py [--data ../shared/data/routing-dev.jsonl] [--config config/router.yaml] [-v]

Each row is classified with the config's vocabulary and routed with its rules, exactly as the gateway
does for ``"model": "auto"``; the script prints tier and task accuracy per source and overall, then
the mean time of one classification. ``-v`` lists misrouted rows, ``-vv`` also rows with the wrong task.
No request leaves the process: unset environment variables the config needs (API keys) get placeholders.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from router.classify import Classifier, Features  # noqa: E402
from router.config import GatewayConfig, load_config  # noqa: E402
from router.envsubst import interpolate  # noqa: E402
from router.rules import RequestContext, compile_rules, match_rules  # noqa: E402
from router.vocabulary import Vocabulary  # noqa: E402

Router = Callable[[Features], tuple[str, str]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "routing-dev.jsonl")
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "router.yaml")
    parser.add_argument("--repeat", type=int, default=20, help="timing repetitions over all rows (default 20)")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    args = parser.parse_args(argv)
    if not args.data.is_file():
        sys.exit(f"eval_classifier.py: no labelled data at {args.data}; pass --data PATH (JSON lines with "
                 "messages, expected_tier, task and source)")

    rows = [json.loads(line) for line in args.data.read_text(encoding="utf-8").splitlines() if line.strip()]
    config = _load(args.config)
    classifier = Classifier(config.classifier.vocabulary, config.classifier.model)
    route = _router(config)

    per_source: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # rows, right tier, right task
    misses: list[str] = []
    for row in rows:
        features = classifier.classify(row["messages"], row.get("tools"))
        tier, rule = route(features)
        stats = per_source[row["source"]]
        stats[0] += 1
        stats[1] += tier == row["expected_tier"]
        stats[2] += features.task == row["task"]
        if tier != row["expected_tier"] or (args.verbose > 1 and features.task != row["task"]):
            mark = "MISROUTED" if tier != row["expected_tier"] else "task"
            misses.append(
                f"{mark:9s} {row['id']}: expected {row['expected_tier']}/{row['task']}, got {tier}/{features.task} "
                f"by rule {rule!r}\n          {features.reason()}\n          {_snippet(row['messages'])}"
            )

    print(f"{'source':16s} {'rows':>5s} {'tier acc':>9s} {'task acc':>9s}")
    totals = [0, 0, 0]
    for source, (n, tier_ok, task_ok) in per_source.items():
        print(f"{source:16s} {n:5d} {tier_ok / n:9.3f} {task_ok / n:9.3f}")
        totals = [totals[0] + n, totals[1] + tier_ok, totals[2] + task_ok]
    print(f"{'overall':16s} {totals[0]:5d} {totals[1] / totals[0]:9.3f} {totals[2] / totals[0]:9.3f}")

    mean_us, best_us = _classify_us(config.classifier.vocabulary, rows, args.repeat)
    size = sum(len(json.dumps(r["messages"])) for r in rows) / len(rows)
    print(f"classification: {mean_us:.1f} us per request, mean over {len(rows)} rows x {args.repeat} runs "
          f"(fastest run {best_us:.1f} us); requests average {size:.0f} bytes of messages")
    if args.verbose and misses:
        print()
        print("\n".join(misses))
    return 0


def _load(path: Path) -> GatewayConfig:
    """Load the config, giving unset environment variables placeholders: nothing here calls an upstream."""
    _, missing = interpolate(yaml.safe_load(path.read_text(encoding="utf-8")), os.environ)
    environ = {**os.environ, **{m.name: f"unset-{m.name}" for m in missing}}
    return load_config(path, environ=environ)


def _router(config: GatewayConfig) -> Router:
    """The gateway's rules for a request sent with ``"model": "auto"``: features -> (tier, rule name)."""
    rules = compile_rules(config.rules)
    ctx = RequestContext(model="auto")

    def route(features: Features) -> tuple[str, str]:
        decision = match_rules(features, ctx, rules)
        target = decision.target
        tier = target.tier if target.tier is not None else config.backends[str(target.backend)].tier
        return tier, decision.rule

    return route


def _classify_us(vocabulary: Vocabulary, rows: list[dict[str, Any]], repeat: int) -> tuple[float, float]:
    """Microseconds per classification: the mean over all runs, and the mean of the fastest run.

    Each run uses a new classifier, so no text is in its cache: the cost of a never-seen request.
    """
    requests = [(row["messages"], row.get("tools")) for row in rows]
    runs: list[int] = []
    for _ in range(max(1, repeat)):
        classifier = Classifier(vocabulary)
        start = time.perf_counter_ns()
        for messages, tools in requests:
            classifier.classify(messages, tools)
        runs.append(time.perf_counter_ns() - start)
    per_request = len(requests) * 1000
    return sum(runs) / len(runs) / per_request, min(runs) / per_request


def _snippet(messages: list[dict[str, Any]]) -> str:
    text = " | ".join(str(m.get("content") or "") for m in messages)
    text = " ".join(text.split())
    return text if len(text) <= 160 else text[:157] + "..."


if __name__ == "__main__":
    raise SystemExit(main())
