"""Access log: one JSON object per request, the fields operators need, and never prompts or secrets by default."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from router.accesslog import ACCESS_LOGGER, AccessLog, JsonFormatter, TextFormatter, configure_logging
from router.accounting import Accountant
from router.config import load_config
from router.metrics import Metrics
from router.state import PolicyState

PROMPT = [{"role": "user", "content": "My card is 4111 1111 1111 1111, what is my balance?"}]


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The access logger writing JSON lines into a buffer."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(ACCESS_LOGGER)
    logger.addHandler(handler)
    old_level, old_propagate = logger.level, logger.propagate
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield out
    logger.removeHandler(handler)
    logger.setLevel(old_level)
    logger.propagate = old_propagate


def request(log: AccessLog, **overrides: Any) -> None:
    args: dict[str, Any] = {
        "request_id": "req-1", "method": "POST", "path": "/v1/chat/completions", "status": 200,
        "latency_s": 0.81234, "stream": True, "tier": "mid", "backend": "mid", "rule": "default-mid", "task": "faq",
        "tenant": "acme", "key": "acme-prod", "ttft_s": 0.1204, "input_tokens": 41, "output_tokens": 64,
        "cost_usd": 1.485e-05, "attempts": 2, "fallback": "mid->flagship:5xx", "messages": PROMPT,
    }
    log.request(**{**args, **overrides})


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def test_one_json_line_per_request_with_every_field(captured: io.StringIO) -> None:
    log = AccessLog()
    request(log)
    request(log, request_id="req-2", status=502, ttft_s=None, stream=False)
    first, second = lines(captured)
    assert first.pop("ts").endswith("Z")
    assert first == {
        "level": "info", "logger": "router.access", "msg": "request",
        "request_id": "req-1", "method": "POST", "path": "/v1/chat/completions", "status": 200, "stream": True,
        "tier": "mid", "backend": "mid", "rule": "default-mid", "task": "faq", "tenant": "acme", "key": "acme-prod",
        "latency_ms": 812.3, "ttft_ms": 120.4, "input_tokens": 41, "output_tokens": 64, "cost_usd": 1.485e-05,
        "attempts": 2, "fallback": "mid->flagship:5xx",
    }
    assert (second["request_id"], second["status"], second["ttft_ms"]) == ("req-2", 502, None)


def test_prompts_are_logged_only_when_opted_in(captured: io.StringIO) -> None:
    request(AccessLog())
    request(AccessLog(include_prompts=True))
    off, on = lines(captured)
    assert "messages" not in off
    assert "4111" not in captured.getvalue().splitlines()[0]
    assert on["messages"] == PROMPT


def test_nothing_is_built_when_the_access_log_is_off(captured: io.StringIO) -> None:
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.WARNING)
    request(AccessLog())
    assert captured.getvalue() == ""


def test_configure_logging_routes_every_logger_through_one_handler(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("warning", json=True)
        assert len(root.handlers) == 1 and isinstance(root.handlers[0].formatter, JsonFormatter)
        logging.getLogger("router.gateway").info("not shown at warning")
        logging.getLogger("router.gateway").error("reload rejected: %s", "bad yaml")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("router.app").exception("unhandled")
        records = [orjson.loads(line) for line in capsys.readouterr().err.splitlines()]
        assert [(r["level"], r["logger"], r["msg"]) for r in records] == [
            ("error", "router.gateway", "reload rejected: bad yaml"), ("error", "router.app", "unhandled"),
        ]
        assert "ValueError: boom" in records[1]["exc"]

        configure_logging("info", json=False)
        assert isinstance(root.handlers[0].formatter, TextFormatter)
        request(AccessLog())
        err = capsys.readouterr().err
        assert "router.access: request request_id=req-1 method=POST" in err
        assert "fallback=mid->flagship:5xx" in err and "4111" not in err
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)



def test_prompts_reach_the_access_log_only_when_the_config_says_so(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    env = {"OPENAI_API_KEY": "sk-x", "ROUTER_LEDGER_PATH": str(tmp_path / "spend.sqlite3")}
    for enabled in (False, True):
        config = load_config(repo / "config" / "router.yaml", env)
        config = config.model_copy(update={"server": config.server.model_copy(update={"log_prompts": enabled})})
        metrics = Metrics(backends=[], tiers=[], tenants=[], tasks=[], rules=[], version="v")
        accountant = Accountant(config, PolicyState(config), metrics)
        assert accountant.access_log.include_prompts is enabled
