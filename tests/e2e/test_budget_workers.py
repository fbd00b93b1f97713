"""Budgets hold with several worker processes and with requests that multiply their output (#17 items 1-2).

The gateway runs as ``llm-router serve --workers 2`` (real processes sharing the SQLite ledger), in
front of simulated upstreams; the client is the openai SDK.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from router.app import create_app
from router.config import load_config
from router.simulator import SimProfile, create_simulator_app
from tests.e2e.conftest import CLIENT_KEY, ENV, UPSTREAM_KEY, write_config
from tests.e2e.processes import gateway_process
from tests.servers import serve

ASK = [{"role": "user", "content": "What are your opening hours on Saturday?"}]
FLAGSHIP_PRICE = (2.0, 8.0)  # tests/e2e/conftest.py, USD per million tokens
BUDGET = 0.05


def tenant_budget(limit: float) -> str:
    return f"  budgets:\n    limits:\n      - {{scope: tenant, name: acme, daily_usd: {limit}, action: reject}}\n"


@pytest.fixture(scope="module")
def slow_upstreams() -> Iterator[tuple[str, str]]:
    """Upstreams slow enough to first token that 200 requests are in flight together."""
    mid = create_simulator_app(SimProfile(name="mid", model="sim-mid-7b", ttft=0.3, token_interval=0.0))
    flagship = create_simulator_app(SimProfile(name="flagship", model="sim-flagship", ttft=0.3, token_interval=0.0,
                                               context_window=200000, api_key=UPSTREAM_KEY, max_tokens_default=4000))
    with serve(mid) as mid_url, serve(flagship) as flagship_url:
        yield mid_url, flagship_url


async def hammer(url: str, requests: int, **extra: object) -> tuple[float, int, int]:
    """Send ``requests`` at once; return (sum of the costs answered, served, refused with budget_exceeded)."""
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=60)

    async def one() -> float | None:
        try:
            raw = await client.chat.completions.with_raw_response.create(model="flagship", messages=ASK, **extra)  # type: ignore[arg-type]
        except openai.RateLimitError as exc:
            assert exc.code == "budget_exceeded"
            return None
        return float(raw.headers["x-router-cost-usd"])

    async with client:
        costs = await asyncio.gather(*(one() for _ in range(requests)))
    served = [c for c in costs if c is not None]
    return sum(served), len(served), len(costs) - len(served)


def estimate(max_tokens: int, input_tokens: int = 40) -> float:
    """A generous bound on one request's reservation (the prompt is about 15 tokens)."""
    return (input_tokens * FLAGSHIP_PRICE[0] + max_tokens * FLAGSHIP_PRICE[1]) / 1e6


def test_two_workers_never_overrun_a_shared_budget(slow_upstreams: tuple[str, str], tmp_path: Path) -> None:
    """Before: each worker admitted up to the whole limit ($0.0993 spent of $0.05 in the issue)."""
    config = tmp_path / "router.yaml"
    write_config(config, *slow_upstreams, policy=tenant_budget(BUDGET))
    with gateway_process(config, ENV, workers=2) as gateway:
        spent, served, refused = asyncio.run(hammer(gateway.url, 200, max_tokens=64))
    assert served > 0 and refused > 0
    assert spent <= BUDGET + estimate(64), f"${spent:.4f} spent against ${BUDGET} by {served} requests"


def test_n_choices_are_part_of_the_estimate(slow_upstreams: tuple[str, str], tmp_path: Path) -> None:
    """Before: n=100 with max_tokens=100 was estimated as one choice and served ($4.80 against $0.05)."""
    config = tmp_path / "router.yaml"
    write_config(config, *slow_upstreams, policy=tenant_budget(BUDGET))
    app = create_app(load_config(config, ENV), path=config, environ=ENV, watch=False)
    with serve(app) as url:
        spent, served, refused = asyncio.run(hammer(url, 1, n=100, max_tokens=100))
        assert (served, refused, spent) == (0, 1, 0)
        spent, served, _ = asyncio.run(hammer(url, 1, n=2, max_tokens=100))  # two choices fit: served
        assert served == 1 and spent <= 2 * estimate(100)


def test_an_unbounded_request_reserves_up_to_the_cap(slow_upstreams: tuple[str, str], tmp_path: Path) -> None:
    """Before: without max_tokens, 512 output tokens were reserved and a 4,000-token answer overran 7.7x.

    Now an unbounded request reserves ``expected_output_tokens`` (4,096) per choice, so concurrent
    unbounded requests stay within the budget even when every answer is long.
    """
    limit = 0.2  # about six 4,000-token flagship answers
    config = tmp_path / "router.yaml"
    write_config(config, *slow_upstreams, policy=tenant_budget(limit))
    app = create_app(load_config(config, ENV), path=config, environ=ENV, watch=False)
    with serve(app) as url:
        spent, served, refused = asyncio.run(hammer(url, 20))
    assert served > 0 and refused > 0
    assert spent <= limit, f"${spent:.4f} spent against ${limit} by {served} unbounded requests"
