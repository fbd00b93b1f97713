"""Policy engine under fault injection: real simulated upstreams, the openai SDK as client.

Each test gets its own gateway (breakers, budgets and the ledger are per gateway) in front of the
module's two simulated upstreams, whose faults are cleared after every test.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from router.app import create_app
from router.config import load_config
from router.gateway import Gateway
from tests.e2e.conftest import ADMIN_KEY, CLIENT_KEY, ENV, OTHER_KEY, write_config
from tests.servers import free_port, serve

FAQ = [{"role": "user", "content": "How do I reset my online banking password?"}]
MATH = [{"role": "user", "content": "Solve for x: 3x + 7 = 22. Show each step of the algebra."}]
PII = [{"role": "user", "content": "Update the billing email on my account to jane.doe@example.com please"}]

RULES = """\
  - name: pii-stays-self-hosted
    when: {pii: true}
    tier: mid
  - name: escalate-hard-tasks
    when: {task: [reasoning, math, code, legal, policy]}
    tier: flagship
  - name: default-mid
    tier: mid
"""

POLICY = """\
  fallback: {mid: [flagship], flagship: [mid]}
  retries: {max_attempts: 3, same_backend_retries: 1, backoff_base_seconds: 0.01, backoff_cap_seconds: 2, deadline_seconds: 20}
  breaker: {consecutive_failures: 3, min_requests: 1000, cooldown_seconds: 0.6}
"""


class Gate:
    """A gateway under test and handles on its upstreams."""

    def __init__(self, url: str, gateway: Gateway, mid: str, flagship: str) -> None:
        self.url = url
        self.gateway = gateway
        self.mid = mid
        self.flagship = flagship

    def client(self, key: str = CLIENT_KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0)

    def fault(self, which: str, **fault: Any) -> None:
        httpx.post(f"{self.mid if which == 'mid' else self.flagship}/_sim/faults", json=fault).raise_for_status()

    def sim_stats(self, which: str) -> dict[str, Any]:
        return httpx.get(f"{self.mid if which == 'mid' else self.flagship}/_sim/stats").json()  # type: ignore[no-any-return]

    def ledger_rows(self) -> list[dict[str, Any]]:
        ledger = self.gateway.state.ledger
        assert ledger is not None
        assert ledger.flush(5)
        return ledger.spend(group_by=("backend",))

    def decide(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        response = httpx.post(f"{self.url}/v1/router/decide", json={"model": "auto", "messages": messages},
                              headers={"authorization": f"Bearer {CLIENT_KEY}"})
        return response.json()  # type: ignore[no-any-return]


@pytest.fixture
def make_gate(upstreams: tuple[str, str], tmp_path: Path) -> Iterator[Callable[..., Any]]:
    @contextmanager
    def start(policy: str = POLICY, mid_url: str | None = None, **backend_extra: str) -> Iterator[Gate]:
        mid, flagship = upstreams
        path = tmp_path / "router.yaml"
        write_config(path, mid_url or mid, flagship, RULES, policy)
        text = path.read_text().replace("    model: sim-mid-7b\n", "    model: sim-mid-7b\n    self_hosted: true\n")
        for key, value in backend_extra.items():
            text = text.replace("  flagship:\n    tier: flagship\n", f"  flagship:\n    tier: flagship\n    {key}: {value}\n")
        path.write_text(text)
        app = create_app(load_config(path, ENV), path=path, environ=ENV, watch=False)
        with serve(app) as url:
            yield Gate(url, app.state.gateway, mid, flagship)

    yield start
    mid, flagship = upstreams
    for url in (mid, flagship):
        httpx.delete(f"{url}/_sim/faults").raise_for_status()
        httpx.post(f"{url}/_sim/state", json={"waiting": 0, "cache_usage": 0.0}).raise_for_status()


def test_server_errors_retry_then_fall_back_and_bill_once(make_gate: Callable[..., Any]) -> None:
    with make_gate() as gate:
        gate.fault("mid", status=500, message="CUDA error")
        raw = gate.client().chat.completions.with_raw_response.create(model="auto", messages=FAQ)
        completion = raw.parse()
        assert raw.headers["x-router-backend"] == "flagship"
        assert raw.headers["x-router-attempts"] == "3"  # mid, mid again, then flagship
        assert raw.headers["x-router-fallback"] == "mid->flagship; reason=server_error"
        usage = completion.usage
        assert usage is not None
        expected = (usage.prompt_tokens * 2 + usage.completion_tokens * 8) / 1e6
        assert float(raw.headers["x-router-cost-usd"]) == pytest.approx(expected)
        rows = gate.ledger_rows()
        assert rows == [{"backend": "flagship", "requests": 1, "input_tokens": usage.prompt_tokens,
                         "output_tokens": usage.completion_tokens, "cost_usd": pytest.approx(expected)}]


def test_connection_refused_falls_back(make_gate: Callable[..., Any]) -> None:
    with make_gate(mid_url=f"http://127.0.0.1:{free_port()}") as gate:
        raw = gate.client().chat.completions.with_raw_response.create(model="auto", messages=FAQ)
        assert raw.headers["x-router-backend"] == "flagship"
        assert raw.headers["x-router-fallback"] == "mid->flagship; reason=connect"


def test_rate_limit_honours_retry_after_on_the_same_backend(make_gate: Callable[..., Any]) -> None:
    with make_gate() as gate:
        gate.fault("mid", status=429, message="slow down", retry_after=1, times=1)
        started = time.monotonic()
        raw = gate.client().chat.completions.with_raw_response.create(model="auto", messages=FAQ)
        assert time.monotonic() - started >= 1.0  # waited as the upstream asked
        assert raw.headers["x-router-backend"] == "mid"
        assert raw.headers["x-router-attempts"] == "2"
        assert "x-router-fallback" not in raw.headers


def test_client_errors_do_not_fall_back(make_gate: Callable[..., Any]) -> None:
    with make_gate() as gate:
        gate.fault("mid", status=400, message="'temperature' is invalid", type="invalid_request_error")
        before = gate.sim_stats("flagship")["requests"]
        with pytest.raises(openai.BadRequestError) as info:
            gate.client().chat.completions.create(model="auto", messages=FAQ)
        assert "'temperature' is invalid" in info.value.message
        assert info.value.response.headers["x-router-attempts"] == "1"
        assert "x-router-fallback" not in info.value.response.headers
        assert gate.sim_stats("flagship")["requests"] == before


def test_context_length_error_moves_to_a_larger_window(make_gate: Callable[..., Any]) -> None:
    with make_gate() as gate:
        gate.fault("mid", context_length_error=True)
        raw = gate.client().chat.completions.with_raw_response.create(model="auto", messages=FAQ)
        assert raw.headers["x-router-backend"] == "flagship"
        assert raw.headers["x-router-fallback"] == "mid->flagship; reason=context_length"
        assert raw.headers["x-router-attempts"] == "2"  # a context error is not retried on the same backend


def test_too_long_for_mid_goes_to_flagship_before_any_call(make_gate: Callable[..., Any]) -> None:
    with make_gate() as gate:
        before = gate.sim_stats("mid")["requests"]
        long_text = "Summarise the following meeting notes. " + "The committee discussed the budget at length. " * 4000
        raw = gate.client().chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": long_text}])
        assert raw.headers["x-router-backend"] == "flagship"
        assert gate.sim_stats("mid")["requests"] == before


def test_personal_data_never_leaves_self_hosted_even_when_mid_is_down(make_gate: Callable[..., Any]) -> None:
    with make_gate() as gate:
        gate.fault("mid", status=503, message="down")
        before = gate.sim_stats("flagship")["requests"]
        with pytest.raises(openai.APIStatusError) as info:
            gate.client().chat.completions.create(model="auto", messages=PII)
        assert info.value.status_code == 502
        assert info.value.response.headers["x-router-tier"] == "mid"
        # Forcing the flagship model does not get personal data out either.
        with pytest.raises(openai.APIStatusError):
            gate.client().chat.completions.create(model="flagship", messages=PII)
        assert gate.sim_stats("flagship")["requests"] == before


def test_personal_data_with_no_self_hosted_backend_able_to_take_it_is_503(make_gate: Callable[..., Any]) -> None:
    with make_gate() as gate:
        huge = "My email is jane.doe@example.com. " + "Please summarise this long history. " * 5000
        with pytest.raises(openai.APIStatusError) as info:
            gate.client().chat.completions.create(model="auto", messages=[{"role": "user", "content": huge}])
        assert info.value.status_code == 503
        assert "personal data" in info.value.message


def test_circuit_breaker_opens_then_probes_and_closes(make_gate: Callable[..., Any]) -> None:
    policy = POLICY.replace("same_backend_retries: 1", "same_backend_retries: 0")
    with make_gate(policy) as gate:
        gate.fault("mid", status=500, message="boom")
        client = gate.client()
        for _ in range(3):
            raw = client.chat.completions.with_raw_response.create(model="auto", messages=FAQ)
            assert raw.headers["x-router-fallback"] == "mid->flagship; reason=server_error"
        assert gate.decide(FAQ)["plan"]["chain"][0]["breaker"]["state"] == "open"
        before = gate.sim_stats("mid")["requests"]
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=FAQ)
        assert raw.headers["x-router-fallback"] == "mid->flagship; reason=breaker_open"
        assert raw.headers["x-router-attempts"] == "1"
        assert gate.sim_stats("mid")["requests"] == before  # straight to the fallback
        httpx.delete(f"{gate.mid}/_sim/faults").raise_for_status()
        time.sleep(0.7)  # the cool-down passes: the next request is the half-open probe
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=FAQ)
        assert raw.headers["x-router-backend"] == "mid"
        assert gate.decide(FAQ)["plan"]["chain"][0]["breaker"]["state"] == "closed"


def test_stream_fails_over_before_the_first_token(make_gate: Callable[..., Any]) -> None:
    with make_gate() as gate:
        gate.fault("mid", status=503, message="overloaded")
        with gate.client().chat.completions.with_streaming_response.create(model="auto", messages=FAQ, stream=True) as response:
            assert response.headers["x-router-backend"] == "flagship"
            assert response.headers["x-router-fallback"] == "mid->flagship; reason=server_error"
            text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
        assert text.strip()


def test_slow_first_token_times_out_and_falls_back(make_gate: Callable[..., Any]) -> None:
    with make_gate() as gate:
        path = Path(gate.gateway.path or "")
        path.write_text(path.read_text().replace("first_token: 5", "first_token: 0.3", 1))
        assert gate.gateway.reload()
        gate.fault("mid", delay_first_token=3)
        with gate.client().chat.completions.with_streaming_response.create(model="auto", messages=FAQ, stream=True) as response:
            assert response.headers["x-router-fallback"] == "mid->flagship; reason=timeout"
            assert list(response.parse())


def test_drop_mid_stream_is_an_error_event_and_is_billed(make_gate: Callable[..., Any]) -> None:
    with make_gate() as gate:
        gate.fault("mid", drop_after_chunks=4)
        before = gate.sim_stats("flagship")["requests"]
        stream = gate.client().chat.completions.create(model="auto", messages=FAQ, stream=True)
        with pytest.raises(openai.APIError):
            for _ in stream:
                pass
        assert gate.sim_stats("flagship")["requests"] == before  # no retry after content reached the client
        rows = gate.ledger_rows()
        assert [r["backend"] for r in rows] == ["mid"]
        assert rows[0]["output_tokens"] > 0  # the tokens that were produced are billed (estimated)


@pytest.mark.parametrize("upstream_reports_usage", [True, False])
def test_stream_bills_the_reported_usage_or_an_estimate_from_the_text(
    make_gate: Callable[..., Any], upstream_reports_usage: bool
) -> None:
    with make_gate() as gate:
        if not upstream_reports_usage:
            gate.fault("mid", omit_usage=True)
        chunks = list(gate.client().chat.completions.create(
            model="auto", messages=FAQ, stream=True, stream_options={"include_usage": True}
        ))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text
        if upstream_reports_usage:
            assert chunks[-1].usage is not None
            expected = chunks[-1].usage.completion_tokens
        else:
            assert all(c.usage is None for c in chunks)
            expected = -(-len(text) // 4)  # four characters per token
        assert gate.ledger_rows()[0]["output_tokens"] == expected


def test_stalled_stream_ends_cleanly_with_an_error(make_gate: Callable[..., Any]) -> None:
    with make_gate() as gate:
        path = Path(gate.gateway.path or "")
        path.write_text(path.read_text().replace("idle: 5", "idle: 0.3", 1))
        assert gate.gateway.reload()
        gate.fault("mid", stall_after_chunks=3, stall_seconds=5)
        started = time.monotonic()
        with pytest.raises(openai.APIError) as info:
            for _ in gate.client().chat.completions.create(model="auto", messages=FAQ, stream=True):
                pass
        assert "stalled" in info.value.message
        assert time.monotonic() - started < 4


def test_client_disconnect_cancels_the_upstream_call(make_gate: Callable[..., Any]) -> None:
    with make_gate() as gate:
        gate.fault("mid", stall_after_chunks=3, stall_seconds=30)
        before = gate.sim_stats("mid")["cancelled"]
        with httpx.stream("POST", f"{gate.url}/v1/chat/completions", headers={"authorization": f"Bearer {CLIENT_KEY}"},
                          json={"model": "auto", "messages": FAQ, "stream": True}) as response:
            for line in response.iter_lines():
                if '"content":"' in line and '"content":""' not in line:
                    break  # content arrived; hang up
        deadline = time.monotonic() + 5
        while gate.sim_stats("mid")["cancelled"] == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gate.sim_stats("mid")["cancelled"] == before + 1
        deadline = time.monotonic() + 5
        while not gate.ledger_rows() and time.monotonic() < deadline:
            time.sleep(0.05)
        ledger = gate.gateway.state.ledger
        assert ledger is not None
        statuses = ledger.spend(group_by=("status",))
        assert statuses[0]["status"] == 499 and statuses[0]["output_tokens"] > 0


def budget(action: str, limit: float) -> str:
    return POLICY + f"  budgets:\n    action: {action}\n    limits:\n      - {{scope: global, daily_usd: {limit}}}\n"


def test_budget_reject_is_a_clear_429(make_gate: Callable[..., Any]) -> None:
    with make_gate(budget("reject", 0.001)) as gate:
        with pytest.raises(openai.RateLimitError) as info:
            gate.client().chat.completions.create(model="auto", messages=MATH)
        assert info.value.code == "budget_exceeded"
        assert "Daily budget of the gateway exceeded" in info.value.message
        assert gate.ledger_rows() == []


def test_budget_downgrade_serves_from_mid_with_a_header(make_gate: Callable[..., Any]) -> None:
    with make_gate(budget("downgrade", 0.001)) as gate:
        raw = gate.client().chat.completions.with_raw_response.create(model="auto", messages=MATH)
        assert raw.headers["x-router-rule"] == "escalate-hard-tasks"
        assert raw.headers["x-router-backend"] == "mid"
        assert raw.headers["x-router-downgraded"] == "budget"


def test_concurrent_requests_cannot_overrun_a_budget_together(make_gate: Callable[..., Any]) -> None:
    # Each flagship call reserves ~ (input*2 + 1000*8)/1e6 = ~$0.008: the $0.02 budget holds two at once.
    with make_gate(budget("reject", 0.02)) as gate:
        gate.fault("flagship", delay_first_token=1.0)
        outcomes: list[str] = []

        def call() -> None:
            try:
                gate.client().chat.completions.create(model="auto", messages=MATH, max_tokens=1000)
                outcomes.append("served")
            except openai.RateLimitError:
                outcomes.append("rejected")

        threads = [threading.Thread(target=call) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(outcomes) == ["rejected"] * 3 + ["served"] * 2
        rows = gate.ledger_rows()
        assert rows[0]["requests"] == 2 and rows[0]["cost_usd"] <= 0.02


def test_spend_endpoint_and_ledger_survive_a_restart(make_gate: Callable[..., Any]) -> None:
    with make_gate(budget("reject", 5)) as gate:
        gate.client().chat.completions.create(model="auto", messages=MATH)
        gate.client().chat.completions.create(model="auto", messages=FAQ)
        gate.ledger_rows()
        spend = httpx.get(f"{gate.url}/v1/router/spend", headers={"authorization": f"Bearer {CLIENT_KEY}"})
        assert spend.status_code == 403  # the test key is not an admin key
        report = httpx.get(f"{gate.url}/v1/router/spend", headers={"authorization": f"Bearer {ADMIN_KEY}"}).json()
        assert [(r["tenant"], r["backend"], r["requests"]) for r in report["data"]] == [("acme", "flagship", 1), ("acme", "mid", 1)]
        assert report["total_usd"] == pytest.approx(sum(r["cost_usd"] for r in report["data"]))
        assert report["data"][0]["cost_usd"] > report["data"][1]["cost_usd"] > 0
        remaining_before = gate.decide(MATH)["budgets"][0]
    with make_gate(budget("reject", 5)) as restarted:
        remaining_after = restarted.decide(MATH)["budgets"][0]
        assert remaining_after["spent_usd"] == pytest.approx(remaining_before["spent_usd"])
        assert remaining_after["spent_usd"] > 0


def test_escalated_conversation_sticks_to_flagship(make_gate: Callable[..., Any]) -> None:
    with make_gate() as gate:
        client = gate.client()
        first = client.chat.completions.create(model="flagship", messages=FAQ)  # escalated by the client
        follow_up = [*FAQ, {"role": "assistant", "content": first.choices[0].message.content},
                     {"role": "user", "content": "ok, and how long does that take?"}]
        assert gate.decide(follow_up)["rule"] == "default-mid"  # on its own it would go to mid
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=follow_up)
        assert raw.headers["x-router-tier"] == "flagship"
        assert raw.headers["x-router-rerouted"] == "sticky"
        # Another tenant's identical thread does not inherit it.
        other = gate.client(OTHER_KEY).chat.completions.with_raw_response.create(model="auto", messages=follow_up)
        assert other.headers["x-router-tier"] == "mid"


def test_saturated_mid_spills_over_to_flagship(make_gate: Callable[..., Any]) -> None:
    with make_gate() as gate:
        path = Path(gate.gateway.path or "")
        capacity = f"{{metrics_url: '{gate.mid}/metrics', interval_seconds: 0.1, waiting_high: 10, waiting_low: 2}}"
        text = path.read_text().replace("    self_hosted: true\n", f"    self_hosted: true\n    capacity: {capacity}\n", 1)
        path.write_text(text)
        assert gate.gateway.reload()
        httpx.post(f"{gate.mid}/_sim/state", json={"waiting": 25}).raise_for_status()
        deadline = time.monotonic() + 5
        while gate.decide(FAQ)["backend"] != "flagship" and time.monotonic() < deadline:
            time.sleep(0.1)
        raw = gate.client().chat.completions.with_raw_response.create(model="auto", messages=FAQ)
        assert raw.headers["x-router-backend"] == "flagship"
        assert raw.headers["x-router-rerouted"] == "capacity"
        # Personal data is never spilled over.
        pii = gate.client().chat.completions.with_raw_response.create(model="auto", messages=PII)
        assert pii.headers["x-router-backend"] == "mid"
        httpx.post(f"{gate.mid}/_sim/state", json={"waiting": 5}).raise_for_status()
        time.sleep(0.4)
        assert gate.decide(FAQ)["backend"] == "flagship"  # hysteresis: 5 is not below the low mark
        httpx.post(f"{gate.mid}/_sim/state", json={"waiting": 1}).raise_for_status()
        deadline = time.monotonic() + 5
        while gate.decide(FAQ)["backend"] != "mid" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert gate.decide(FAQ)["backend"] == "mid"


def test_active_health_check_feeds_the_breaker(make_gate: Callable[..., Any]) -> None:
    with make_gate() as gate:
        path = Path(gate.gateway.path or "")
        healthy = path.read_text().replace(
            "    self_hosted: true\n", "    self_hosted: true\n    health_check: {path: /models, interval_seconds: 0.05}\n", 1
        )
        path.write_text(healthy)
        assert gate.gateway.reload()
        time.sleep(0.5)
        assert gate.decide(FAQ)["plan"]["chain"][0]["breaker"]["state"] == "closed"
        path.write_text(healthy.replace("path: /models", "path: /no-such-endpoint"))  # every probe now fails
        assert gate.gateway.reload()
        deadline = time.monotonic() + 5
        while gate.decide(FAQ)["plan"]["chain"][0]["breaker"]["state"] == "closed" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gate.decide(FAQ)["plan"]["chain"][0]["breaker"]["state"] != "closed"
        raw = gate.client().chat.completions.with_raw_response.create(model="auto", messages=FAQ)
        assert raw.headers["x-router-fallback"] == "mid->flagship; reason=breaker_open"
