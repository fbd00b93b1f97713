"""``python -m bench.micro``: the cost of deciding where a request goes, without any I/O.

Times ``Pipeline.route`` (classification + rule matching + policy plan: what the gateway runs per
request between parsing the body and calling an upstream) on the benchmark's ~1 KB FAQ prompt with
``config/router.yaml``, and the classify and rules stages on their own. The issue's target is
under 100 us for the whole decision.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import orjson

from bench.servers import REPO
from bench.workload import chat_body
from router.auth import ANONYMOUS
from router.config import GatewayConfig, load_config
from router.gateway import Gateway
from router.pipeline import Pipeline
from router.rules import RequestContext, match_rules

CONFIG = REPO / "config" / "router.yaml"


def bench_environ() -> dict[str, str]:
    """The environment ``config/router.yaml`` is loaded with: the benchmark's, auth off."""
    env = dict(os.environ)
    env.pop("ROUTER_API_KEYS", None)
    upstream = "http://127.0.0.1:9/v1"  # never called: nothing here does I/O
    env.update(
        MID_BASE_URL=upstream,
        FLAGSHIP_BASE_URL=upstream,
        MID_MODEL="mock-mid",
        FLAGSHIP_MODEL="mock-flagship",
        OPENAI_API_KEY="bench-dummy",
    )
    return env


def build_pipeline(config: GatewayConfig) -> Pipeline:
    """The gateway's own pipeline, built as the server builds it, minus the spend ledger (a file)."""
    no_ledger = config.policy.model_copy(update={"ledger": config.policy.ledger.model_copy(update={"path": None})})
    return Gateway(config.model_copy(update={"policy": no_ledger}), environ=bench_environ()).pipeline


def time_us(fn: Callable[[], object], repeat: int = 7, batch_seconds: float = 0.05) -> float:
    """Median over ``repeat`` batches of the mean time of one call, in microseconds."""
    n = 1
    while True:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - start >= batch_seconds:
            break
        n *= 2
    means = []
    for _ in range(repeat):
        start = time.perf_counter_ns()
        for _ in range(n):
            fn()
        means.append((time.perf_counter_ns() - start) / n / 1000)
    return statistics.median(means)


def measure_decision(
    body: Mapping[str, Any] | None = None, config_path: os.PathLike[str] | str = CONFIG
) -> dict[str, Any]:
    """Time the decision for ``body`` (default: the benchmark request); also say what was decided."""
    request: dict[str, Any] = dict(body) if body is not None else orjson.loads(chat_body("auto", stream=False))
    pipeline = build_pipeline(load_config(config_path, bench_environ()))
    messages, tools = request["messages"], request.get("tools")
    features = pipeline.classifier.classify(messages, tools)
    ctx = RequestContext(model=request["model"])
    route = pipeline.route(request, ANONYMOUS, {})
    # Cold: every request carries a message the classifier has not read before (its per-text cache
    # misses), as a new user turn does. Warm: the same request again, as re-sent history and system
    # prompts are.
    fresh = iter(_unique_variants(request))
    return {
        "prompt_bytes": len(orjson.dumps(messages)),
        "classify_us": time_us(lambda: pipeline.classifier.classify(next(fresh)["messages"], tools)),
        "rules_us": time_us(lambda: match_rules(features, ctx, pipeline.rules)),
        "total_us": time_us(lambda: pipeline.route(next(fresh), ANONYMOUS, {})),
        "warm_classify_us": time_us(lambda: pipeline.classifier.classify(messages, tools)),
        "warm_total_us": time_us(lambda: pipeline.route(request, ANONYMOUS, {})),
        "decision": repr(route.decision),
        "plan": repr(route.plan),
        "task": features.task,
        "complexity": features.complexity,
    }


def _unique_variants(request: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """``request`` again and again, its last message's text made unique by a ticket number."""
    *history, last = request["messages"]
    for n in itertools.count():
        yield {**request, "messages": [*history, {**last, "content": f"Ticket {n}: {last['content']}"}]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.micro", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(CONFIG))
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = parser.parse_args(argv)
    result = measure_decision(config_path=args.config)
    if args.json:
        print(orjson.dumps(result).decode())
        return
    print(
        f"request: {result['prompt_bytes']} bytes of messages; "
        f"task={result['task']} complexity={result['complexity']:.2f}"
    )
    print(f"decision: {result['decision']}")
    print(f"plan: {result['plan']}")
    print(f"classify        {result['classify_us']:8.1f} us   (same text again: {result['warm_classify_us']:.1f} us)")
    print(f"rules           {result['rules_us']:8.1f} us")
    verdict = "PASS" if result["total_us"] < 100 else "FAIL"
    print(f"route (total)   {result['total_us']:8.1f} us   target < 100 us: {verdict}"
          f"   (same text again: {result['warm_total_us']:.1f} us)")


if __name__ == "__main__":
    main()
