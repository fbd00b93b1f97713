"""Metrics: exact values for known call patterns, label folding, config changes, and multi-worker merging."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any, get_args

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from router.config import FailureKind, load_config
from router.metrics import LATENCY_BUCKETS, MULTIPROC_ENV, Metrics, prepare_multiprocess_dir
from router.policy import fallback_routes

REPO = Path(__file__).resolve().parents[1]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

# Prices as in the shipped config: USD per million tokens.
MID_PRICE = (0.05, 0.20)
FLAGSHIP_PRICE = (2.00, 8.00)


def cost(price: tuple[float, float], input_tokens: int, output_tokens: int) -> float:
    return (input_tokens * price[0] + output_tokens * price[1]) / 1_000_000


def make(**overrides: Any) -> Metrics:
    args: dict[str, Any] = {
        "backends": ["mid", "flagship"],
        "tiers": ["mid", "flagship"],
        "tenants": ["acme", "beta"],
        "tasks": ["faq", "code", "math"],
        "rules": ["default-mid", "escalate-hard-tasks", "requested-model"],
        "version": "v1",
        "registry": CollectorRegistry(),
    }
    return Metrics(**{**args, **overrides})


def samples(metrics: Metrics) -> Samples:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain; version=0.0.4")
    return parse(body.decode())


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(found: Samples, metric: str, /, **labels: str) -> float:
    return found[(metric, frozenset(labels.items()))]


def series(found: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in found.items() if n == name}


def nonzero(found: dict[frozenset[tuple[str, str]], float]) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for labels, v in found.items() if v}


def finish(metrics: Metrics, **overrides: Any) -> None:
    args: dict[str, Any] = {
        "tier": "mid", "backend": "mid", "rule": "default-mid", "task": "faq", "status": 200, "stream": False,
        "tenant": "acme", "duration_s": 0.5, "ttft_s": None, "overhead_s": 0.0004, "input_tokens": 0,
        "output_tokens": 0, "cost_usd": 0.0, "saved_usd": 0.0,
    }
    metrics.request_finished(**{**args, **overrides})


def mid_request(metrics: Metrics, input_tokens: int, output_tokens: int, **overrides: Any) -> None:
    actual = cost(MID_PRICE, input_tokens, output_tokens)
    saved = cost(FLAGSHIP_PRICE, input_tokens, output_tokens) - actual
    finish(metrics, input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=actual, saved_usd=saved, **overrides)


def flagship_request(metrics: Metrics, input_tokens: int, output_tokens: int, **overrides: Any) -> None:
    actual = cost(FLAGSHIP_PRICE, input_tokens, output_tokens)
    finish(metrics, tier="flagship", backend="flagship", rule="escalate-hard-tasks", task="code",
           input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=actual, saved_usd=0.0, **overrides)


def test_known_traffic_pattern_gives_exact_counts_tokens_cost_and_savings() -> None:
    m = make()
    mid_request(m, 100, 50, duration_s=0.3)
    mid_request(m, 200, 80, duration_s=0.7, stream=True, ttft_s=0.12)
    mid_request(m, 40, 10, duration_s=0.05, tenant="beta")
    flagship_request(m, 1000, 400, duration_s=4.0, stream=True, ttft_s=0.8, tenant="beta")
    flagship_request(m, 10, 0, duration_s=30.0, status=502)
    finish(m, tier=None, backend=None, rule=None, task=None, status=401, tenant=None, duration_s=0.001)
    for task in ("faq", "faq", "faq", "code", "code"):
        m.classified(task)

    found = samples(m)
    requests = series(found, "llm_router_requests_total")
    assert requests == {
        frozenset({"tier": "mid", "backend": "mid", "rule": "default-mid", "task": "faq", "status_class": "2xx",
                   "stream": "false"}.items()): 2.0,
        frozenset({"tier": "mid", "backend": "mid", "rule": "default-mid", "task": "faq", "status_class": "2xx",
                   "stream": "true"}.items()): 1.0,
        frozenset({"tier": "flagship", "backend": "flagship", "rule": "escalate-hard-tasks", "task": "code",
                   "status_class": "2xx", "stream": "true"}.items()): 1.0,
        frozenset({"tier": "flagship", "backend": "flagship", "rule": "escalate-hard-tasks", "task": "code",
                   "status_class": "5xx", "stream": "false"}.items()): 1.0,
        frozenset({"tier": "none", "backend": "none", "rule": "none", "task": "none", "status_class": "4xx",
                   "stream": "false"}.items()): 1.0,
    }
    assert value(found, "llm_router_tokens_total", backend="mid", type="input") == 340
    assert value(found, "llm_router_tokens_total", backend="mid", type="output") == 140
    assert value(found, "llm_router_tokens_total", backend="flagship", type="input") == 1010
    assert value(found, "llm_router_tokens_total", backend="flagship", type="output") == 400

    assert value(found, "llm_router_cost_usd_total", backend="mid", tenant="acme") == pytest.approx(
        cost(MID_PRICE, 300, 130), rel=1e-12)
    assert value(found, "llm_router_cost_usd_total", backend="mid", tenant="beta") == pytest.approx(
        cost(MID_PRICE, 40, 10), rel=1e-12)
    assert value(found, "llm_router_cost_usd_total", backend="flagship", tenant="beta") == pytest.approx(
        cost(FLAGSHIP_PRICE, 1000, 400), rel=1e-12)
    assert value(found, "llm_router_cost_usd_total", backend="flagship", tenant="acme") == pytest.approx(
        cost(FLAGSHIP_PRICE, 10, 0), rel=1e-12)
    # Savings: what the mid requests' tokens would have cost on the flagship, minus what they cost.
    saved = series(found, "llm_router_cost_saved_usd_total")
    assert saved == {
        frozenset({"backend": "flagship", "tenant": "acme"}.items()): 0.0,
        frozenset({"backend": "flagship", "tenant": "beta"}.items()): 0.0,
        frozenset({"backend": "mid", "tenant": "acme"}.items()): pytest.approx(
            cost(FLAGSHIP_PRICE, 300, 130) - cost(MID_PRICE, 300, 130), rel=1e-12),
        frozenset({"backend": "mid", "tenant": "beta"}.items()): pytest.approx(
            cost(FLAGSHIP_PRICE, 40, 10) - cost(MID_PRICE, 40, 10), rel=1e-12),
    }

    assert value(found, "llm_router_request_duration_seconds_count", backend="mid") == 3
    assert value(found, "llm_router_request_duration_seconds_sum", backend="mid") == pytest.approx(1.05)
    assert value(found, "llm_router_request_duration_seconds_bucket", backend="mid", le="0.05") == 1
    assert value(found, "llm_router_request_duration_seconds_bucket", backend="mid", le="0.5") == 2
    assert value(found, "llm_router_request_duration_seconds_bucket", backend="mid", le="1.0") == 3
    assert value(found, "llm_router_request_duration_seconds_bucket", backend="flagship", le="2.5") == 0
    assert value(found, "llm_router_request_duration_seconds_bucket", backend="flagship", le="5.0") == 1
    assert value(found, "llm_router_request_duration_seconds_bucket", backend="flagship", le="30.0") == 2
    assert value(found, "llm_router_request_duration_seconds_count", backend="none") == 1
    # TTFT only for streams.
    assert value(found, "llm_router_time_to_first_token_seconds_count", backend="mid") == 1
    assert value(found, "llm_router_time_to_first_token_seconds_sum", backend="mid") == pytest.approx(0.12)
    assert value(found, "llm_router_time_to_first_token_seconds_count", backend="flagship") == 1
    assert value(found, "llm_router_time_to_first_token_seconds_bucket", backend="flagship", le="0.5") == 0
    assert value(found, "llm_router_time_to_first_token_seconds_bucket", backend="flagship", le="1.0") == 1
    assert value(found, "llm_router_gateway_overhead_seconds_count") == 6
    assert value(found, "llm_router_gateway_overhead_seconds_sum") == pytest.approx(0.0024)

    assert series(found, "llm_router_classifier_decisions_total") == {
        frozenset({("task", "faq")}): 3.0, frozenset({("task", "code")}): 2.0, frozenset({("task", "math")}): 0.0,
    }


def test_latency_buckets_span_ten_milliseconds_to_minutes() -> None:
    found = samples(make())
    bounds = [float(dict(labels)["le"]) for labels in series(found, "llm_router_request_duration_seconds_bucket")
              if ("backend", "mid") in labels]
    assert bounds == [*LATENCY_BUCKETS, float("inf")]
    assert bounds[0] == 0.01 and bounds[-2] == 300.0


def test_unknown_values_fold_into_other_and_missing_ones_into_none() -> None:
    m = make()
    finish(m, tier="gpt-5-preview", backend="sk-live-123", rule="x-request-id-abc", task="Tell me a secret",
           tenant="evil-corp", status=299, cost_usd=1.0, input_tokens=7)
    m.classified("some raw model string")
    m.fallback("mid", "unknown-backend", "teapot")
    m.retry("unknown-backend", "connect")
    m.budget("tenant", "no-such-tenant", "day", remaining_usd=3.0, limit_usd=4.0)
    m.budget("planet", "earth", "century", remaining_usd=1.0, limit_usd=2.0)
    m.breaker_state("ghost", "open")

    body = m.render()[0].decode()
    for secret in ("gpt-5-preview", "sk-live-123", "x-request-id-abc", "Tell me a secret", "evil-corp",
                   "some raw model string", "unknown-backend", "teapot", "no-such-tenant", "ghost", "planet", "earth",
                   "century"):
        assert secret not in body
    found = parse(body)
    assert value(found, "llm_router_requests_total", tier="other", backend="other", rule="other", task="other",
                 status_class="2xx", stream="false") == 1
    assert value(found, "llm_router_cost_usd_total", backend="other", tenant="other") == 1.0
    assert value(found, "llm_router_tokens_total", backend="other", type="input") == 7
    assert value(found, "llm_router_classifier_decisions_total", task="other") == 1
    assert value(found, "llm_router_fallbacks_total", from_backend="mid", to_backend="other", reason="other") == 1
    assert value(found, "llm_router_retries_total", backend="other", reason="connect") == 1
    assert value(found, "llm_router_budget_remaining_usd", scope="tenant", name="other", period="day") == 3.0
    assert value(found, "llm_router_budget_limit_usd", scope="tenant", name="other", period="day") == 4.0
    assert value(found, "llm_router_budget_remaining_usd", scope="other", name="other", period="other") == 1.0
    assert value(found, "llm_router_circuit_breaker_state", backend="other") == 2


def test_savings_are_never_negative_and_zero_amounts_add_no_series() -> None:
    m = make()
    finish(m, tier="flagship", backend="flagship", cost_usd=0.5, saved_usd=-0.25)
    finish(m, cost_usd=0.0, saved_usd=0.0)
    found = samples(m)
    assert value(found, "llm_router_cost_usd_total", backend="flagship", tenant="acme") == 0.5
    assert value(found, "llm_router_cost_saved_usd_total", backend="flagship", tenant="acme") == 0.0
    assert ("llm_router_cost_usd_total", frozenset({"backend": "mid", "tenant": "acme"}.items())) not in found


def test_every_status_class_is_bucketed() -> None:
    m = make()
    for status in (200, 201, 400, 404, 429, 499, 500, 502, 504):
        finish(m, status=status)
    by_class: dict[str, float] = {}
    for labels, v in series(samples(m), "llm_router_requests_total").items():
        by_class[dict(labels)["status_class"]] = v
    assert by_class == {"2xx": 2, "4xx": 4, "5xx": 3}


def test_fallbacks_retries_and_breaker_states() -> None:
    m = make()
    m.fallback("mid", "flagship", "server_error")
    m.fallback("mid", "flagship", "server_error")
    m.fallback("mid", "flagship", "timeout")
    m.fallback("flagship", "mid", "budget")
    m.retry("flagship", "rate_limit")
    found = samples(m)
    assert nonzero(series(found, "llm_router_fallbacks_total")) == {
        frozenset({"from_backend": "mid", "to_backend": "flagship", "reason": "server_error"}.items()): 2.0,
        frozenset({"from_backend": "mid", "to_backend": "flagship", "reason": "timeout"}.items()): 1.0,
        frozenset({"from_backend": "flagship", "to_backend": "mid", "reason": "budget"}.items()): 1.0,
    }
    assert nonzero(series(found, "llm_router_retries_total")) == {
        frozenset({"backend": "flagship", "reason": "rate_limit"}.items()): 1.0,
    }
    # Known backends start closed.
    assert series(found, "llm_router_circuit_breaker_state") == {
        frozenset({("backend", "mid")}): 0.0, frozenset({("backend", "flagship")}): 0.0,
    }
    for state, expected in (("open", 2), ("half_open", 1), ("closed", 0)):
        m.breaker_state("mid", state)  # type: ignore[arg-type]
        assert value(samples(m), "llm_router_circuit_breaker_state", backend="mid") == expected
    with pytest.raises(KeyError):
        m.breaker_state("mid", "ajar")  # type: ignore[arg-type]


def test_event_counters_start_at_zero_for_every_known_label_set() -> None:
    """Panels and alerts over fallbacks and retries have data before the first event."""
    m = make(routes=[("mid", "flagship"), ("flagship", "mid")])
    found = samples(m)
    fallbacks = series(found, "llm_router_fallbacks_total")
    assert set(fallbacks.values()) == {0.0}
    assert {(dict(k)["from_backend"], dict(k)["to_backend"]) for k in fallbacks} == {("mid", "flagship"), ("flagship", "mid")}
    assert {dict(k)["reason"] for k in fallbacks} == {*get_args(FailureKind), "breaker_open", "budget"}
    retries = series(found, "llm_router_retries_total")
    assert set(retries.values()) == {0.0}
    assert {(dict(k)["backend"], dict(k)["reason"]) for k in retries} == {
        (backend, reason) for backend in ("mid", "flagship") for reason in get_args(FailureKind)
    }
    assert series(found, "llm_router_classifier_decisions_total") == {
        frozenset({("task", task)}): 0.0 for task in ("faq", "code", "math")
    }
    m.fallback("mid", "flagship", "timeout")
    assert value(samples(m), "llm_router_fallbacks_total", from_backend="mid", to_backend="flagship", reason="timeout") == 1


def test_fallback_routes_cover_every_pair_a_plan_can_chain() -> None:
    config = load_config(REPO / "config" / "router.yaml", {"OPENAI_API_KEY": "sk-x"})
    assert fallback_routes(config) == {("mid", "flagship"), ("flagship", "mid")}


def test_in_flight_counts_open_attempts_and_survives_errors() -> None:
    m = make()
    assert value(samples(m), "llm_router_in_flight_requests", backend="mid") == 0
    with m.in_flight("mid"), m.in_flight("mid"), m.in_flight("flagship"):
        found = samples(m)
        assert value(found, "llm_router_in_flight_requests", backend="mid") == 2
        assert value(found, "llm_router_in_flight_requests", backend="flagship") == 1
    with pytest.raises(RuntimeError), m.in_flight("mid"):
        raise RuntimeError("upstream blew up")
    found = samples(m)
    assert value(found, "llm_router_in_flight_requests", backend="mid") == 0
    assert value(found, "llm_router_in_flight_requests", backend="flagship") == 0


def test_budget_gauges_per_scope_name_and_period() -> None:
    m = make(keys=["acme-prod"])
    m.budget("tenant", "acme", "day", remaining_usd=80.0, limit_usd=100.0)
    m.budget("tenant", "acme", "day", remaining_usd=79.5, limit_usd=100.0)
    m.budget("tenant", "acme", "month", remaining_usd=2000.0, limit_usd=2500.0)
    m.budget("key", "acme-prod", "day", remaining_usd=5.0, limit_usd=10.0)
    m.budget("global", None, "month", remaining_usd=900.0, limit_usd=1000.0)
    found = samples(m)
    assert series(found, "llm_router_budget_remaining_usd") == {
        frozenset({"scope": "tenant", "name": "acme", "period": "day"}.items()): 79.5,
        frozenset({"scope": "tenant", "name": "acme", "period": "month"}.items()): 2000.0,
        frozenset({"scope": "key", "name": "acme-prod", "period": "day"}.items()): 5.0,
        frozenset({"scope": "global", "name": "global", "period": "month"}.items()): 900.0,
    }
    assert value(found, "llm_router_budget_limit_usd", scope="tenant", name="acme", period="day") == 100.0
    assert value(found, "llm_router_budget_limit_usd", scope="global", name="global", period="month") == 1000.0


def test_the_postgres_ledgers_backlog_and_dropped_rows() -> None:
    m = make()
    m.ledger_buffered(40)
    m.ledger_dropped(0)
    assert value(samples(m), "llm_router_ledger_buffered_rows") == 40
    assert value(samples(m), "llm_router_ledger_dropped_rows_total") == 0
    m.ledger_dropped(3)  # the ledger's running total: the counter follows it, never counting twice
    m.ledger_dropped(3)
    m.ledger_dropped(10)
    assert value(samples(m), "llm_router_ledger_dropped_rows_total") == 10


def test_config_reloads_and_version() -> None:
    m = make(version="aaa111")
    found = samples(m)
    assert series(found, "llm_router_config_info") == {frozenset({("version", "aaa111")}): 1.0}
    assert value(found, "llm_router_config_reloads_total", result="success") == 0
    assert value(found, "llm_router_config_reloads_total", result="failure") == 0
    assert value(found, "llm_router_config_last_reload_successful") == 1

    m.config_reload(False)
    found = samples(m)
    assert value(found, "llm_router_config_reloads_total", result="failure") == 1
    assert value(found, "llm_router_config_last_reload_successful") == 0

    m.config_reload(True)
    m.configure(backends=["mid", "flagship", "mid-b"], tiers=["mid", "flagship"], tenants=["acme", "gamma"],
                tasks=["faq"], rules=["default-mid"], version="bbb222")
    finish(m, backend="mid-b", tenant="gamma", cost_usd=0.25)
    finish(m, task="code", rule="escalate-hard-tasks")  # no longer in the config: folded
    found = samples(m)
    assert series(found, "llm_router_config_info") == {frozenset({("version", "bbb222")}): 1.0}
    assert value(found, "llm_router_config_reloads_total", result="success") == 1
    assert value(found, "llm_router_config_last_reload_successful") == 1
    assert value(found, "llm_router_cost_usd_total", backend="mid-b", tenant="gamma") == 0.25
    assert value(found, "llm_router_in_flight_requests", backend="mid-b") == 0
    assert value(found, "llm_router_requests_total", tier="mid", backend="mid", rule="other", task="other",
                 status_class="2xx", stream="false") == 1


def test_batched_recording_exports_what_prometheus_client_would() -> None:
    """Histograms are published through their bucket and sum values: the exposition must equal
    what ``observe`` gives for the same values (bounds included), and counters their plain sums."""
    durations = [0.0, 0.009, 0.01, 0.0100001, 0.3, 2.5, 7.0, 299.0, 300.0, 301.0, 1e6]
    m = make()
    for i, d in enumerate(durations):
        mid_request(m, 10 + i, i, duration_s=d, ttft_s=d / 2, overhead_s=d / 1000, stream=True)
    m.publish()
    m.publish()  # nothing pending: a second publish changes nothing
    found = samples(m)

    reference = make()
    for i, d in enumerate(durations):
        reference._requests.labels("mid", "mid", "default-mid", "faq", "2xx", "true").inc()
        reference._endpoint_requests.labels("chat", "2xx").inc()
        reference._endpoint_duration.labels("chat").observe(d)
        reference._duration.labels("mid").observe(d)
        reference._ttft.labels("mid").observe(d / 2)
        reference._overhead.observe(d / 1000)
        reference._tokens.labels("mid", "input").inc(10 + i)
        if i:
            reference._tokens.labels("mid", "output").inc(i)
        reference._cost.labels("mid", "acme").inc(cost(MID_PRICE, 10 + i, i))
        reference._saved.labels("mid", "acme").inc(cost(FLAGSHIP_PRICE, 10 + i, i) - cost(MID_PRICE, 10 + i, i))
    expected = parse(generate_latest(reference.registry).decode())
    assert found.keys() == expected.keys()
    for key, v in expected.items():
        assert found[key] == pytest.approx(v, rel=1e-12), key
    assert value(found, "llm_router_request_duration_seconds_bucket", backend="mid", le="0.01") == 3
    assert value(found, "llm_router_request_duration_seconds_bucket", backend="mid", le="+Inf") == len(durations)


def test_requests_by_endpoint_fold_unknown_paths_into_other() -> None:
    m = make()
    finish(m)
    finish(m, path="/v1/responses", status=502)
    finish(m, path="/v1/embeddings")
    finish(m, path="/v1/assistants")
    found = samples(m)
    assert series(found, "llm_router_endpoint_requests_total") == {
        frozenset({"endpoint": "chat", "status_class": "2xx"}.items()): 1.0,
        frozenset({"endpoint": "responses", "status_class": "5xx"}.items()): 1.0,
        frozenset({"endpoint": "embeddings", "status_class": "2xx"}.items()): 1.0,
        frozenset({"endpoint": "other", "status_class": "2xx"}.items()): 1.0,
    }


def test_latency_by_endpoint_and_a_backends_latency_without_embeddings() -> None:
    m = make()
    finish(m, duration_s=2.0)
    finish(m, path="/v1/responses", duration_s=3.0)
    finish(m, path="/v1/embeddings", duration_s=0.01)
    found = samples(m)
    assert value(found, "llm_router_endpoint_duration_seconds_count", endpoint="chat") == 1
    assert value(found, "llm_router_endpoint_duration_seconds_sum", endpoint="responses") == 3.0
    assert value(found, "llm_router_endpoint_duration_seconds_sum", endpoint="embeddings") == 0.01
    assert value(found, "llm_router_request_duration_seconds_count", backend="mid") == 2
    assert value(found, "llm_router_request_duration_seconds_sum", backend="mid") == 5.0


def test_each_instance_has_its_own_registry() -> None:
    a, b = make(), make()
    finish(a)
    assert value(samples(a), "llm_router_request_duration_seconds_count", backend="mid") == 1
    assert value(samples(b), "llm_router_request_duration_seconds_count", backend="mid") == 0
    assert a.registry is not b.registry


# --- multi-worker: real processes sharing PROMETHEUS_MULTIPROC_DIR ----------------------------------------


def _worker(requests: int, breaker: str, graceful: bool, leave_in_flight: bool) -> None:
    """A worker process: record a known pattern, then exit (calling close() or not)."""
    m = make(registry=None)
    for _ in range(requests):
        mid_request(m, 100, 20, duration_s=0.2)
    flagship_request(m, 50, 10, stream=True, ttft_s=0.4, duration_s=1.5)
    m.classified("faq")
    m.fallback("mid", "flagship", "server_error")
    m.breaker_state("mid", breaker)  # type: ignore[arg-type]
    m.budget("tenant", "acme", "day", remaining_usd=10.0 - requests, limit_usd=10.0)
    if leave_in_flight:
        m.in_flight("flagship").__enter__()  # a request still running when the worker dies
    with m.in_flight("mid"):
        pass
    if graceful:
        m.close()
    else:
        m.publish()  # as the gateway does every second; then the worker dies without close()


def _render() -> str:
    return make(registry=None).render()[0].decode()


def _run(ctx: Any, target: Any, *args: Any) -> None:
    process = ctx.Process(target=target, args=args)
    process.start()
    process.join(60)
    assert process.exitcode == 0


def test_two_worker_processes_export_exact_totals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    ctx = multiprocessing.get_context("spawn")  # as uvicorn starts its workers: a fresh interpreter each
    _run(ctx, _worker, 3, "half_open", False, True)
    _run(ctx, _worker, 5, "open", True, False)
    with ctx.Pool(1) as pool:
        text = pool.apply(_render)
    assert len({p.name for p in tmp_path.glob("counter_*.db")}) >= 2

    found = parse(text)
    assert value(found, "llm_router_requests_total", tier="mid", backend="mid", rule="default-mid", task="faq",
                 status_class="2xx", stream="false") == 8
    assert value(found, "llm_router_requests_total", tier="flagship", backend="flagship", rule="escalate-hard-tasks",
                 task="code", status_class="2xx", stream="true") == 2
    assert value(found, "llm_router_tokens_total", backend="mid", type="input") == 800
    assert value(found, "llm_router_tokens_total", backend="mid", type="output") == 160
    assert value(found, "llm_router_tokens_total", backend="flagship", type="input") == 100
    assert value(found, "llm_router_cost_usd_total", backend="mid", tenant="acme") == pytest.approx(
        8 * cost(MID_PRICE, 100, 20), rel=1e-12)
    assert value(found, "llm_router_cost_usd_total", backend="flagship", tenant="acme") == pytest.approx(
        2 * cost(FLAGSHIP_PRICE, 50, 10), rel=1e-12)
    assert value(found, "llm_router_cost_saved_usd_total", backend="mid", tenant="acme") == pytest.approx(
        8 * (cost(FLAGSHIP_PRICE, 100, 20) - cost(MID_PRICE, 100, 20)), rel=1e-12)
    assert value(found, "llm_router_request_duration_seconds_count", backend="mid") == 8
    assert value(found, "llm_router_request_duration_seconds_bucket", backend="flagship", le="1.0") == 0
    assert value(found, "llm_router_request_duration_seconds_bucket", backend="flagship", le="2.5") == 2
    assert value(found, "llm_router_time_to_first_token_seconds_count", backend="flagship") == 2
    assert value(found, "llm_router_gateway_overhead_seconds_count") == 10
    assert value(found, "llm_router_classifier_decisions_total", task="faq") == 2
    assert value(found, "llm_router_fallbacks_total", from_backend="mid", to_backend="flagship",
                 reason="server_error") == 2
    # Live gauges: the gracefully stopped worker no longer counts; the killed one's values remain.
    assert value(found, "llm_router_in_flight_requests", backend="flagship") == 1
    assert value(found, "llm_router_in_flight_requests", backend="mid") == 0
    assert value(found, "llm_router_circuit_breaker_state", backend="mid") == 1
    # Budgets: the most recent write wins (the second worker's).
    assert value(found, "llm_router_budget_remaining_usd", scope="tenant", name="acme", period="day") == 5.0
    assert series(found, "llm_router_config_info") == {frozenset({("version", "v1")}): 1.0}


def test_prepare_multiprocess_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MULTIPROC_ENV, "")  # so that teardown restores the original state
    monkeypatch.delenv(MULTIPROC_ENV)
    assert prepare_multiprocess_dir(1) is None
    assert MULTIPROC_ENV not in os.environ

    created = prepare_multiprocess_dir(2)
    assert created is not None and created.is_dir() and not any(created.iterdir())
    assert os.environ[MULTIPROC_ENV] == str(created)

    given = tmp_path / "metrics"
    given.mkdir()
    (given / "counter_123.db").write_bytes(b"stale")
    (given / "keep.txt").write_text("not ours")
    monkeypatch.setenv(MULTIPROC_ENV, str(given))
    assert prepare_multiprocess_dir(4) == given
    assert sorted(p.name for p in given.iterdir()) == ["keep.txt"]
