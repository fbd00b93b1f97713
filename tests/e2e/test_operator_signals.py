"""What an operator sees: failed attempts in the log, event counters from the start, why a model was not used."""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_policy import FAQ, PII, make_gate  # noqa: F401 - make_gate is a fixture
from tests.servers import free_port

SECRET = "hunter2-basic-auth"


def failed_attempts(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [r.fields for r in caplog.records if r.name == "router.pipeline" and r.getMessage() == "upstream attempt failed"]  # type: ignore[attr-defined]


def test_each_failed_attempt_is_logged_once_with_backend_url_and_errno(
    make_gate: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong port: the warning names the backend, its URL without the credentials in it, and ECONNREFUSED."""
    dead = free_port()
    with caplog.at_level(logging.WARNING, logger="router.pipeline"), \
            make_gate(mid_url=f"http://ops:{SECRET}@127.0.0.1:{dead}") as gate:
        raw = gate.client().chat.completions.with_raw_response.create(model="auto", messages=FAQ)
        assert raw.headers["x-router-backend"] == "flagship"
        assert raw.headers["x-router-attempts"] == "3"
    attempts = failed_attempts(caplog)
    assert [(a["backend"], a["attempt"]) for a in attempts] == [("mid", 1), ("mid", 2)]
    for attempt in attempts:
        assert attempt["url"] == f"http://127.0.0.1:{dead}/v1"
        assert attempt["kind"] == "connect"
        assert attempt["error"] == "ClientConnectorError"
        assert attempt["errno"] == errno.ECONNREFUSED
        assert attempt["request_id"] == raw.headers["x-request-id"]
    warnings = [r for r in caplog.records if r.name == "router.pipeline"]
    assert all(r.levelno == logging.WARNING for r in warnings)
    assert all(SECRET not in str(r.__dict__) for r in caplog.records)


def test_an_upstream_error_status_is_logged_with_its_status(
    make_gate: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="router.pipeline"), make_gate() as gate:
        gate.fault("mid", status=503, message="overloaded", times=1)
        raw = gate.client().chat.completions.with_raw_response.create(model="auto", messages=FAQ)
        assert raw.headers["x-router-backend"] == "mid"  # the retry on mid succeeded
    (attempt,) = failed_attempts(caplog)
    assert (attempt["backend"], attempt["kind"], attempt["upstream_status"]) == ("mid", "server_error", 503)
    assert attempt["url"] == f"{gate.mid}/v1"


def test_fallback_and_retry_series_exist_before_the_first_event(make_gate: Callable[..., Any]) -> None:
    with make_gate() as gate:
        text = httpx.get(f"{gate.url}/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    fallbacks = {(s.labels["from_backend"], s.labels["to_backend"], s.labels["reason"]): s.value
                 for s in families["llm_router_fallbacks"].samples}
    assert fallbacks[("mid", "flagship", "server_error")] == 0
    assert fallbacks[("flagship", "mid", "timeout")] == 0
    retries = {(s.labels["backend"], s.labels["reason"]): s.value for s in families["llm_router_retries"].samples}
    assert retries[("mid", "server_error")] == 0 and retries[("flagship", "rate_limit")] == 0


def test_flagship_asked_for_but_personal_data_kept_on_mid_says_why(make_gate: Callable[..., Any]) -> None:
    with make_gate() as gate:
        pii = gate.client().chat.completions.with_raw_response.create(model="flagship", messages=PII)
        assert (pii.headers["x-router-backend"], pii.headers["x-router-rerouted"]) == ("mid", "pii")
        plain = gate.client().chat.completions.with_raw_response.create(model="flagship", messages=FAQ)
        assert plain.headers["x-router-backend"] == "flagship" and "x-router-rerouted" not in plain.headers
        # The rule that already keeps personal data on mid is no reroute.
        auto = gate.client().chat.completions.with_raw_response.create(model="auto", messages=PII)
        assert auto.headers["x-router-backend"] == "mid" and "x-router-rerouted" not in auto.headers
