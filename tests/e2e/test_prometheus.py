"""A real Prometheus scrapes a real gateway: the dashboard's queries return data and totals are exact.

Needs the ``prometheus`` and ``promtool`` binaries (Debian's package: scripts/install-prometheus.sh).
Without them the tests skip locally and fail in CI (``CI`` set), except where .ci/run found no way
to install them (no apt-get; it sets ``LLM_ROUTER_SKIP_SERVERS=prometheus``): there they skip, loudly.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from router.app import create_app
from router.config import load_config
from router.simulator import SimProfile, create_simulator_app
from tests.e2e.conftest import CLIENT_KEY, ENV, OTHER_KEY, REPO, UPSTREAM_KEY, write_config
from tests.servers import free_port, serve

DASHBOARD = REPO / "config/grafana/dashboards/llm-router.json"
ALERTS = REPO / "config/prometheus/alerts.yml"
#: Grafana's built-in variables, as Grafana would expand them for a short dashboard range and 1 s scrapes.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "10m", "$__interval": "1s"}
PRICES = {"mid": (0.1, 0.2), "flagship": (2.0, 8.0)}  # tests/e2e/conftest.py CONFIG, USD per million tokens
TENANTS = {CLIENT_KEY: "acme", OTHER_KEY: "beta"}

FAQ = [{"role": "user", "content": "How do I reset my online banking password?"}]
MATH = [{"role": "user", "content": "A train travels 120 km in 1.5 hours and then 80 km in 2 hours. What is its average speed? Show your steps."}]

POLICY = """\
policy:
  retries: {{same_backend_retries: 1, backoff_base_seconds: 0.01, backoff_cap_seconds: 0.05, budget_min_per_second: 100}}
  breaker: {{consecutive_failures: 1000, min_requests: 1000}}
  fallback: {{mid: [flagship]}}
  ledger: {{path: {ledger}}}
  budgets:
    action: allow
    limits:
      - {{scope: global, daily_usd: 1000}}
      - {{scope: tenant, name: acme, daily_usd: 50, monthly_usd: 500}}
  shadow: {{sample_rate: 1, judge: flagship, daily_usd: 10}}
"""


def binary(name: str) -> str:
    """The binary's path. Missing: skip where .ci/run could not install it and locally; fail in CI."""
    path = shutil.which(name)
    if path is None:
        message = f"`{name}` is not installed: run scripts/install-prometheus.sh (Debian's prometheus package)"
        if "prometheus" in os.environ.get("LLM_ROUTER_SKIP_SERVERS", "").split(","):
            pytest.skip(f"SKIPPED ON PURPOSE, no way to install it here: {message}")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = condition()
        except (httpx.HTTPError, KeyError, IndexError):
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.1)


# --- the gateway under test, with upstreams, budgets and fallback -------------------------------------


@dataclass
class Observed:
    """What the clients saw: the ground truth the metrics must match."""

    status_classes: Counter[str] = field(default_factory=Counter)
    ok_by_tier: Counter[str] = field(default_factory=Counter)
    input_tokens: Counter[str] = field(default_factory=Counter)
    output_tokens: Counter[str] = field(default_factory=Counter)
    cost: defaultdict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    saved: defaultdict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))

    def served(self, key: str, headers: Mapping[str, str], usage: Any) -> None:
        backend = headers["x-router-backend"]
        self.status_classes["2xx"] += 1
        self.ok_by_tier[headers["x-router-tier"]] += 1
        self.input_tokens[backend] += usage.prompt_tokens
        self.output_tokens[backend] += usage.completion_tokens
        cost = price(backend, usage.prompt_tokens, usage.completion_tokens)
        self.cost[(backend, TENANTS[key])] += cost
        if backend != "flagship":
            self.saved[(backend, TENANTS[key])] += price("flagship", usage.prompt_tokens, usage.completion_tokens) - cost

    @property
    def requests(self) -> int:
        return sum(self.status_classes.values())


def price(backend: str, input_tokens: int, output_tokens: int) -> float:
    per_input, per_output = PRICES[backend]
    return (input_tokens * per_input + output_tokens * per_output) / 1_000_000


@dataclass
class Gateway:
    url: str
    mid: str
    flagship: str
    config_path: Path
    observed: Observed = field(default_factory=Observed)
    judged: int = 0

    def client(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0)

    def fault(self, which: str, **spec: Any) -> None:
        httpx.post(f"{self.mid if which == 'mid' else self.flagship}/_sim/faults", json=spec).raise_for_status()

    def chat(self, key: str, messages: list[dict[str, str]], *, stream: bool = False, model: str = "auto") -> None:
        client = self.client(key)
        try:
            if stream:
                with client.chat.completions.with_streaming_response.create(  # type: ignore[call-overload]
                    model=model, messages=messages, stream=True, stream_options={"include_usage": True}
                ) as response:
                    chunks = list(response.parse())
                    usage = chunks[-1].usage
                    self.observed.served(key, response.headers, usage)
            else:
                raw = client.chat.completions.with_raw_response.create(model=model, messages=messages)  # type: ignore[arg-type]
                self.observed.served(key, raw.headers, raw.parse().usage)
        except openai.APIStatusError as exc:
            self.observed.status_classes[f"{exc.status_code // 100}xx"] += 1

    def shadow_judged(self) -> None:
        """Wait for the shadow judge's verdicts on the mid answers so far (two per round: acme's FAQ,
        streamed and not), so its calls cannot take a fault armed for a client's request."""
        self.judged += 2
        name = "llm_router_shadow_verdicts_total"

        def verdicts() -> float:
            text = httpx.get(f"{self.url}/metrics").text
            return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)

        wait_for(lambda: verdicts() == self.judged, what=f"{self.judged} shadow verdicts")

    def traffic(self) -> None:
        """One round: both tiers, streamed and not, two tenants, a retry, a fallback, a 4xx and a 5xx."""
        self.chat(CLIENT_KEY, FAQ)
        self.chat(CLIENT_KEY, FAQ, stream=True)
        self.chat(CLIENT_KEY, MATH)
        self.chat(CLIENT_KEY, MATH, stream=True)
        self.chat(OTHER_KEY, FAQ)
        self.chat(OTHER_KEY, FAQ, stream=True)
        self.chat(CLIENT_KEY, FAQ, model="no-such-model")
        self.shadow_judged()
        self.fault("mid", status=503, times=2)  # mid fails, is retried, fails again: fallback to the flagship
        self.chat(CLIENT_KEY, FAQ)
        self.fault("mid", status=500, times=2)
        self.fault("flagship", status=500, times=1)  # every attempt fails: the client gets a 5xx
        self.chat(CLIENT_KEY, FAQ)
        for which in ("mid", "flagship"):
            httpx.delete(f"{self.mid if which == 'mid' else self.flagship}/_sim/faults").raise_for_status()


@pytest.fixture(scope="module")
def sims() -> Iterator[tuple[str, str]]:
    mid = create_simulator_app(SimProfile(name="mid", model="sim-mid-7b", ttft=0.02, token_interval=0.0, context_window=32768))
    flagship = create_simulator_app(
        SimProfile(name="flagship", model="sim-flagship", ttft=0.02, token_interval=0.0, context_window=200000, api_key=UPSTREAM_KEY)
    )
    with serve(mid) as mid_url, serve(flagship) as flagship_url:
        yield mid_url, flagship_url


def write_gateway_config(path: Path, mid: str, flagship: str, extra: str = "") -> None:
    write_config(path, mid, flagship)
    with path.open("a") as f:
        f.write(POLICY.format(ledger=path.parent / "spend.sqlite3") + extra)


@pytest.fixture(scope="module")
def gateway(sims: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    mid, flagship = sims
    path = tmp_path_factory.mktemp("gateway") / "router.yaml"
    write_gateway_config(path, mid, flagship)
    app = create_app(load_config(path, ENV), path=path, environ=ENV, watch=True)
    with serve(app) as url:
        yield Gateway(url, mid, flagship, path)


# --- Prometheus --------------------------------------------------------------------------------------


@dataclass
class Prometheus:
    url: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", f"{expr}: {body}"
        data = body["data"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def value(self, expr: str) -> float:
        (sample,) = self.query(expr)
        return float(sample["value"][1])

    def values(self, expr: str, *labels: str) -> dict[tuple[str, ...], float]:
        """Non-zero results by the given labels (zero series, e.g. of a backend that served nothing, are left out)."""
        out = {tuple(s["metric"].get(label, "") for label in labels): float(s["value"][1]) for s in self.query(expr)}
        return {k: v for k, v in out.items() if v}


@pytest.fixture(scope="module")
def prometheus(gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    executable = binary("prometheus")
    workdir = tmp_path_factory.mktemp("prometheus")
    target = httpx.URL(gateway.url)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [{
            "job_name": "llm-router",
            "metrics_path": "/metrics",
            "static_configs": [{"targets": [f"{target.host}:{target.port}"]}],
        }],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (workdir / "prometheus.log").open("w")
    process = subprocess.Popen(
        [executable, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: process.poll() is None and httpx.get(f"{url}/-/ready").status_code == 200, what="prometheus to start")
        yield Prometheus(url)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


@pytest.fixture(scope="module")
def scraped(gateway: Gateway, prometheus: Prometheus) -> Prometheus:
    """Traffic in two rounds, each fully scraped, so every counter has moved inside the rate windows."""
    up = 'up{job="llm-router"}'
    wait_for(lambda: prometheus.query(up) and prometheus.value(up) == 1, what="the first successful scrape")
    total = "sum(llm_router_requests_total)"

    def counted(expected: int) -> Callable[[], bool]:
        return lambda: bool(prometheus.query(total)) and prometheus.value(total) == expected

    for _ in range(2):
        gateway.traffic()
        wait_for(counted(gateway.observed.requests), what=f"{total} == {gateway.observed.requests}")
    return prometheus


def test_promtool_accepts_the_shipped_rules_and_config() -> None:
    promtool = binary("promtool")
    rules = subprocess.run([promtool, "check", "rules", str(ALERTS)], check=False, capture_output=True, text=True, timeout=60)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = subprocess.run([promtool, "check", "config", str(REPO / "config/prometheus.yml")], check=False,
                            capture_output=True, text=True, timeout=60)
    assert config.returncode == 0, config.stdout + config.stderr


ALERT_TESTS = """\
rule_files: [{alerts}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'llm_router_requests_total{{tier="mid",backend="mid",status_class="2xx"}}'
        values: '0+10x60'
      - series: 'llm_router_requests_total{{tier="flagship",backend="flagship",status_class="2xx"}}'
        values: '0+10x60'
      - series: 'llm_router_requests_total{{tier="flagship",backend="flagship",status_class="5xx"}}'
        values: '0+2x60'
      - series: 'llm_router_fallbacks_total{{from_backend="mid",to_backend="flagship",reason="timeout"}}'
        values: '0+3x60'
      - series: 'llm_router_circuit_breaker_state{{backend="mid"}}'
        values: '0x10 2x50'
      - series: 'llm_router_circuit_breaker_state{{backend="flagship"}}'
        values: '0x60'
      - series: 'llm_router_budget_remaining_usd{{scope="tenant",name="acme",period="day"}}'
        values: '50x10 4x50'
      - series: 'llm_router_budget_limit_usd{{scope="tenant",name="acme",period="day"}}'
        values: '50x60'
      - series: 'llm_router_config_last_reload_successful'
        values: '1x10 0x50'
      - series: 'llm_router_state_backend_up{{instance="gateway-1:8080"}}'
        values: '1x10 0x50'
      - series: 'llm_router_state_backend_up{{instance="gateway-2:8080"}}'
        values: '1x60'
      - series: 'llm_router_ledger_dropped_rows_total{{instance="gateway-1:8080"}}'
        values: '0x20 0+5x10 50x30'
      - series: 'llm_router_ledger_dropped_rows_total{{instance="gateway-2:8080"}}'
        values: '0x60'
      - series: 'up{{job="llm-router"}}'
        values: '1x60'
    alert_rule_test:
      - {{alertname: LLMRouterLedgerRowsDropped, eval_time: 15m, exp_alerts: []}}
      - alertname: LLMRouterLedgerRowsDropped
        eval_time: 25m
        exp_alerts: [{{exp_labels: {{severity: critical, instance: "gateway-1:8080"}}}}]
      - {{alertname: LLMRouterLedgerRowsDropped, eval_time: 50m, exp_alerts: []}}
      - {{alertname: LLMRouterCircuitBreakerOpen, eval_time: 5m, exp_alerts: []}}
      - alertname: LLMRouterCircuitBreakerOpen
        eval_time: 20m
        exp_alerts: [{{exp_labels: {{severity: warning, backend: mid}}}}]
      - {{alertname: LLMRouterBudgetNearlySpent, eval_time: 5m, exp_alerts: []}}
      - alertname: LLMRouterBudgetNearlySpent
        eval_time: 20m
        exp_alerts: [{{exp_labels: {{severity: warning, scope: tenant, name: acme, period: day}}}}]
      - {{alertname: LLMRouterStateBackendDown, eval_time: 10m, exp_alerts: []}}
      - alertname: LLMRouterStateBackendDown
        eval_time: 20m
        exp_alerts: [{{exp_labels: {{severity: critical, instance: "gateway-1:8080"}}}}]
      - {{alertname: LLMRouterConfigReloadFailing, eval_time: 5m, exp_alerts: []}}
      - alertname: LLMRouterConfigReloadFailing
        eval_time: 20m
        exp_alerts: [{{exp_labels: {{severity: warning}}}}]
      - alertname: LLMRouterFlagshipShareHigh
        eval_time: 50m
        exp_alerts: [{{exp_labels: {{severity: warning}}}}]
      - alertname: LLMRouterHighFallbackRate
        eval_time: 20m
        exp_alerts: [{{exp_labels: {{severity: warning}}}}]
      - alertname: LLMRouterHighErrorRate
        eval_time: 20m
        exp_alerts: [{{exp_labels: {{severity: critical}}}}]
      - {{alertname: LLMRouterDown, eval_time: 20m, exp_alerts: []}}
  - interval: 1m
    input_series:
      - series: 'llm_router_requests_total{{tier="mid",backend="mid",status_class="2xx"}}'
        values: '0+20x60'
      - series: 'llm_router_requests_total{{tier="flagship",backend="flagship",status_class="2xx"}}'
        values: '0+1x60'
      - series: 'up{{job="llm-router"}}'
        values: '0x60'
    alert_rule_test:
      - {{alertname: LLMRouterFlagshipShareHigh, eval_time: 50m, exp_alerts: []}}
      - {{alertname: LLMRouterHighErrorRate, eval_time: 50m, exp_alerts: []}}
      - {{alertname: LLMRouterHighFallbackRate, eval_time: 50m, exp_alerts: []}}
      - alertname: LLMRouterDown
        eval_time: 10m
        exp_alerts: [{{exp_labels: {{severity: critical}}}}]
  - interval: 1m
    input_series:  # per minute: default-mid 6 of 10 acceptable; pii 9 of 10; rare 1 of 2 (too few to judge)
      - series: 'llm_router_shadow_verdicts_total{{rule="default-mid",task="faq",verdict="acceptable"}}'
        values: '0+6x120'
      - series: 'llm_router_shadow_verdicts_total{{rule="default-mid",task="faq",verdict="unacceptable"}}'
        values: '0+4x120'
      - series: 'llm_router_shadow_verdicts_total{{rule="default-mid",task="faq",verdict="error"}}'
        values: '0+50x120'
      - series: 'llm_router_shadow_verdicts_total{{rule="pii-stays-self-hosted",task="faq",verdict="acceptable"}}'
        values: '0+9x120'
      - series: 'llm_router_shadow_verdicts_total{{rule="pii-stays-self-hosted",task="faq",verdict="unacceptable"}}'
        values: '0+1x120'
      - series: 'llm_router_shadow_verdicts_total{{rule="rare",task="qa",verdict="unacceptable"}}'
        values: '0+0.1x120'
      - series: 'llm_router_shadow_min_acceptance'
        values: '0.8x120'
    alert_rule_test:
      - {{alertname: LLMRouterMidAcceptanceLow, eval_time: 10m, exp_alerts: []}}
      - alertname: LLMRouterMidAcceptanceLow
        eval_time: 30m
        exp_alerts: [{{exp_labels: {{severity: warning, rule: default-mid}}}}]
  - interval: 1m
    input_series:  # the same verdicts, held to a lower objective
      - series: 'llm_router_shadow_verdicts_total{{rule="default-mid",task="faq",verdict="acceptable"}}'
        values: '0+6x120'
      - series: 'llm_router_shadow_verdicts_total{{rule="default-mid",task="faq",verdict="unacceptable"}}'
        values: '0+4x120'
      - series: 'llm_router_shadow_min_acceptance'
        values: '0.5x120'
    alert_rule_test:
      - {{alertname: LLMRouterMidAcceptanceLow, eval_time: 60m, exp_alerts: []}}
"""


def test_alerts_fire_on_the_situations_they_describe(tmp_path: Path) -> None:
    """Expressions, labels and ``for`` durations, via ``promtool test rules`` (annotations left out: prose)."""
    promtool = binary("promtool")
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
    tests = tmp_path / "alerts_test.yml"
    tests.write_text(ALERT_TESTS.format(alerts=json.dumps(str(tmp_path / "alerts.yml"))))
    result = subprocess.run([promtool, "test", "rules", str(tests)], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def dashboard_exprs() -> list[tuple[str, str]]:
    panels = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    exprs = []
    for panel in panels:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"{panel['title']}: unknown Grafana variable in {expr}"
            exprs.append((f"{panel['title']} [{target['refId']}]", expr))
    return exprs


def test_every_dashboard_query_returns_data(scraped: Prometheus) -> None:
    empty = []
    for title, expr in dashboard_exprs():
        samples = scraped.query(expr)
        if not any(math.isfinite(float(s["value"][1])) for s in samples):
            empty.append(f"{title}: {expr} -> {samples}")
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)


def test_alert_rules_evaluate_without_errors(scraped: Prometheus) -> None:
    def evaluated() -> list[dict[str, Any]]:
        groups = httpx.get(f"{scraped.url}/api/v1/rules").json()["data"]["groups"]
        rules: list[dict[str, Any]] = [rule for group in groups for rule in group["rules"]]
        return rules if rules and all(rule["health"] != "unknown" for rule in rules) else []

    rules = wait_for(evaluated, what="every alert rule to be evaluated")
    assert {rule["name"] for rule in rules} >= {"LLMRouterFlagshipShareHigh", "LLMRouterConfigReloadFailing"}
    assert [(rule["name"], rule.get("lastError")) for rule in rules if rule["health"] != "ok"] == []


def test_scraped_totals_match_the_traffic_exactly(gateway: Gateway, scraped: Prometheus) -> None:
    seen = gateway.observed
    assert seen.ok_by_tier["mid"] > 0 and seen.ok_by_tier["flagship"] > 0
    assert seen.status_classes["4xx"] == 2 and seen.status_classes["5xx"] == 2

    assert scraped.values("sum by (status_class) (llm_router_requests_total)", "status_class") == {
        (status_class,): float(count) for status_class, count in seen.status_classes.items()
    }
    assert scraped.values('sum by (tier) (llm_router_requests_total{status_class="2xx"})', "tier") == {
        (tier,): float(count) for tier, count in seen.ok_by_tier.items()
    }
    for kind, expected in (("input", seen.input_tokens), ("output", seen.output_tokens)):
        assert scraped.values(f'sum by (backend) (llm_router_tokens_total{{type="{kind}"}})', "backend") == {
            (backend,): float(tokens) for backend, tokens in expected.items()
        }
    cost = scraped.values("sum by (backend, tenant) (llm_router_cost_usd_total)", "backend", "tenant")
    assert cost == pytest.approx(dict(seen.cost), rel=1e-9)
    saved = scraped.values("sum by (backend, tenant) (llm_router_cost_saved_usd_total)", "backend", "tenant")
    assert saved == pytest.approx(dict(seen.saved), rel=1e-9)
    # The savings' definition: everything on the flagship would have cost (actual + saved).
    flagship_price_of_all = sum(
        price("flagship", seen.input_tokens[b], seen.output_tokens[b]) for b in seen.input_tokens
    )
    assert scraped.value("sum(llm_router_cost_usd_total) + sum(llm_router_cost_saved_usd_total)") == pytest.approx(
        flagship_price_of_all, rel=1e-9)
    # Two rounds, each with one mid failure retried then failed over, and one request failing everywhere.
    assert scraped.value('sum(llm_router_fallbacks_total{from_backend="mid",to_backend="flagship"})') == 4
    assert scraped.value("sum(llm_router_retries_total)") == 4
    assert scraped.value("sum(llm_router_time_to_first_token_seconds_count)") == 6  # the streams: 3 per round
    assert scraped.value("sum(llm_router_in_flight_requests)") == 0


def test_config_reloads_are_counted_and_the_version_exported(gateway: Gateway, scraped: Prometheus) -> None:
    def ready() -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(f"{gateway.url}/readyz").json()
        return data

    first = ready()["config_version"]
    assert scraped.values("llm_router_config_info == 1", "version") == {(first,): 1.0}
    good = gateway.config_path.read_text()
    gateway.config_path.write_text(good.replace("tier: mid\n", "tier: nowhere\n", 1))
    wait_for(lambda: ready()["last_reload_error"], what="the invalid edit to be rejected")
    wait_for(lambda: scraped.value("min(llm_router_config_last_reload_successful)") == 0, what="reload failure metric")
    assert scraped.value('sum(llm_router_config_reloads_total{result="failure"})') >= 1

    gateway.config_path.write_text(good + "# a comment changes the version\n")
    second = wait_for(lambda: ready()["config_version"] != first and ready()["config_version"], what="the valid edit")
    wait_for(lambda: scraped.values("llm_router_config_info == 1", "version") == {(second,): 1.0}, what="new version")
    assert scraped.value("min(llm_router_config_last_reload_successful)") == 1
    assert scraped.value('sum(llm_router_config_reloads_total{result="success"})') == 1


# --- two workers --------------------------------------------------------------------------------------


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = httpx.get(f"{url}/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text) for s in family.samples
    }


def total(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in found.items() if n == name and wanted <= ls)


def requests_per_worker(directory: Path) -> dict[str, float]:
    """Requests each worker process recorded, from its own file in PROMETHEUS_MULTIPROC_DIR."""
    out = {}
    for path in directory.glob("counter_*.db"):
        count = 0.0
        for family in MultiProcessCollector.merge([str(path)]):
            count += sum(s.value for s in family.samples if s.name == "llm_router_requests_total")
        out[path.stem.removeprefix("counter_")] = count
    return out


def test_two_workers_export_exact_totals(sims: tuple[str, str], tmp_path: Path) -> None:
    mid, flagship = sims
    path = tmp_path / "router.yaml"
    write_gateway_config(path, mid, flagship)
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"stale file from an earlier run")  # must be wiped at start
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, **ENV, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "PYTHONPATH": str(REPO)}
    log = (tmp_path / "gateway.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "router", "serve", "--config", str(path), "--port", str(port), "--workers", "2"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: process.poll() is None and httpx.get(f"{url}/healthz").status_code == 200, what="the workers")

        def one(i: int) -> tuple[str, int, int, str]:
            key = CLIENT_KEY if i % 3 else OTHER_KEY
            messages = MATH if i % 4 == 0 else FAQ
            # A new connection each time, so the kernel spreads requests over both workers.
            with httpx.Client(timeout=30) as http:
                response = http.post(f"{url}/v1/chat/completions", json={"model": "auto", "messages": messages},
                                     headers={"authorization": f"Bearer {key}"})
            assert response.status_code == 200, response.text
            usage = response.json()["usage"]
            return response.headers["x-router-backend"], usage["prompt_tokens"], usage["completion_tokens"], TENANTS[key]

        answers: list[tuple[str, int, int, str]] = []
        with ThreadPoolExecutor(8) as pool:
            for _ in range(5):  # until both workers have served some
                answers += pool.map(one, range(24))
                time.sleep(1.5)  # each worker publishes its metrics to its file every second
                if sum(1 for n in requests_per_worker(metrics_dir).values() if n > 0) >= 2:
                    break
        served = requests_per_worker(metrics_dir)
        assert sum(1 for n in served.values() if n > 0) >= 2, f"one worker took everything: {served}"

        def merged() -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
            found = scrape(url)
            return found if total(found, "llm_router_requests_total") == len(answers) else None

        found = wait_for(merged, timeout=5, what="every request in the merged totals")
        for backend in ("mid", "flagship"):
            mine = [a for a in answers if a[0] == backend]
            assert total(found, "llm_router_requests_total", backend=backend, status_class="2xx") == len(mine)
            assert total(found, "llm_router_tokens_total", backend=backend, type="input") == sum(a[1] for a in mine)
            assert total(found, "llm_router_tokens_total", backend=backend, type="output") == sum(a[2] for a in mine)
            assert total(found, "llm_router_request_duration_seconds_count", backend=backend) == len(mine)
            for tenant in ("acme", "beta"):
                expected = sum(price(backend, a[1], a[2]) for a in mine if a[3] == tenant)
                assert total(found, "llm_router_cost_usd_total", backend=backend, tenant=tenant) == pytest.approx(
                    expected, rel=1e-9, abs=1e-15)
        assert total(found, "llm_router_in_flight_requests") == 0
        assert found[("llm_router_config_info", frozenset({("version", load_config(path, ENV).digest)}))] == 1
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()
    assert re.search(r"Traceback", (tmp_path / "gateway.log").read_text()) is None, (tmp_path / "gateway.log").read_text()
