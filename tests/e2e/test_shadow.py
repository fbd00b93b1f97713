"""Shadow judging against real simulated upstreams: which requests are judged (streams too), the
verdict in the metrics and the ledger, and when judging pauses (budget, breaker)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from router.app import create_app
from router.config import load_config
from router.evaluate.shadow import JUDGE_MARKER
from tests.e2e.conftest import CLIENT_KEY, ENV, OTHER_KEY, Stack, write_config
from tests.servers import serve

FAQ = [{"role": "user", "content": "How do I reset my online banking password?"}]
MATH = [{"role": "user", "content": "Solve for x: 3x + 7 = 22. Show each step of the algebra."}]
PII = [{"role": "user", "content": "Update the billing email on my account to jane.doe@example.com please"}]


@contextmanager
def gateway(upstreams: tuple[str, str], tmp_path: Path, shadow: str, breaker: str = "") -> Iterator[Stack]:
    mid, flagship = upstreams
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "router.yaml"
    write_config(path, mid, flagship, policy=f"  shadow: {shadow}\n{breaker}")
    app = create_app(load_config(path, ENV), path=path, environ=ENV, watch=False)
    with serve(app) as url:
        yield Stack(url, mid, flagship, path)


def samples(url: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = httpx.get(f"{url}/metrics").text
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def verdicts(url: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {k: v for k, v in samples(url, "llm_router_shadow_verdicts_total").items() if v}


def wait_for_verdicts(url: str, count: int) -> dict[tuple[tuple[str, str], ...], float]:
    deadline = time.monotonic() + 10
    while sum(verdicts(url).values()) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return verdicts(url)


def no_verdicts_after_a_while(url: str) -> bool:
    """Judging is asynchronous: give a judge call that should not exist time to show up first."""
    time.sleep(0.5)
    return verdicts(url) == {}


def judge_requests(stack: Stack) -> int:
    with stack.sim("flagship") as sim:
        stats = sim.get("/_sim/stats").json()
    body = (stats["last_request"] or {}).get("body") or {}
    messages = body.get("messages") or [{}]
    return int(str(messages[0].get("content", "")).startswith(JUDGE_MARKER))


def test_a_mid_answer_is_judged_and_counted(upstreams: tuple[str, str], tmp_path: Path) -> None:
    with gateway(upstreams, tmp_path, "{sample_rate: 1, judge: flagship, daily_usd: 1}") as stack:
        client = stack.client(CLIENT_KEY)
        answer = client.chat.completions.with_raw_response.create(model="auto", messages=FAQ)  # type: ignore[arg-type]
        assert answer.headers["x-router-tier"] == "mid"
        ((labels, count),) = wait_for_verdicts(stack.url, 1).items()
        assert count == 1
        assert dict(labels)["rule"] == "default-mid" and dict(labels)["task"] == answer.headers["x-router-task"]
        assert dict(labels)["verdict"] in ("acceptable", "unacceptable")
        assert judge_requests(stack) == 1
        with stack.sim("flagship") as sim:
            judged = sim.get("/_sim/stats").json()["last_request"]["body"]["messages"][1]["content"]
        assert FAQ[0]["content"] in judged and answer.parse().choices[0].message.content in judged
        cost = samples(stack.url, "llm_router_shadow_cost_usd_total")[()]
        assert cost > 0
        assert samples(stack.url, "llm_router_shadow_min_acceptance")[()] == 0.8

        # A streamed answer is judged on the text the client received.
        chunks = list(client.chat.completions.create(model="auto", messages=FAQ, stream=True))  # type: ignore[call-overload]
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert sum(wait_for_verdicts(stack.url, 2).values()) == 2
        with stack.sim("flagship") as sim:
            judged = sim.get("/_sim/stats").json()["last_request"]["body"]["messages"][1]["content"]
        assert judged.endswith(f"Answer under review:\n{streamed.strip()}")

        # Not judged: personal data, a flagship answer.
        client.chat.completions.create(model="auto", messages=PII)  # type: ignore[arg-type]
        client.chat.completions.create(model="auto", messages=MATH)  # type: ignore[arg-type]
        stack.client(OTHER_KEY).chat.completions.create(model="auto", messages=FAQ)  # tenant beta: flagship
        time.sleep(0.5)
        assert sum(verdicts(stack.url).values()) == 2

    with sqlite3.connect(tmp_path / "spend.sqlite3") as db:
        rows = db.execute("SELECT rule, task, backend, judge, verdict, cost_usd, simulated FROM shadow_verdicts").fetchall()
        spend = db.execute("SELECT SUM(cost_usd) FROM requests").fetchone()[0]
    assert len(rows) == 2
    rule, task, backend, judge, verdict, row_cost, simulated = rows[0]
    assert (rule, backend, judge, simulated) == ("default-mid", "mid", "flagship", 1)
    assert verdict == dict(labels)["verdict"] and row_cost == pytest.approx(cost)
    # The judge's cost is its own: request spend is what the five client requests cost.
    assert spend > 0


def test_budget_and_breaker_pause_judging(upstreams: tuple[str, str], tmp_path: Path) -> None:
    with gateway(upstreams, tmp_path, "{sample_rate: 1, judge: flagship, daily_usd: 0.0000001}") as stack:
        stack.client(CLIENT_KEY).chat.completions.create(model="auto", messages=FAQ)  # type: ignore[arg-type]
        assert samples(stack.url, "llm_router_shadow_skipped_total") == {(("reason", "budget"),): 1.0}
        assert no_verdicts_after_a_while(stack.url)

    breaker = "  breaker: {consecutive_failures: 1, cooldown_seconds: 60}\n"
    with gateway(upstreams, tmp_path / "b", "{sample_rate: 1, judge: flagship}", breaker) as stack:
        with stack.sim("flagship") as sim:
            sim.post("/_sim/faults", json={"status": 500, "times": 1}).raise_for_status()
        # The flagship fails once: its breaker opens (the request's own retry still gets an answer).
        stack.client(CLIENT_KEY).chat.completions.create(model="auto", messages=MATH)  # type: ignore[arg-type]
        stack.client(CLIENT_KEY).chat.completions.create(model="auto", messages=FAQ)  # type: ignore[arg-type]
        assert samples(stack.url, "llm_router_shadow_skipped_total") == {(("reason", "breaker_open"),): 1.0}
        assert no_verdicts_after_a_while(stack.url)
        stack.reset_faults()
