"""GPU-hour pricing: throughput over a window, the effective price, and where the gateway bills with it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import httpx
import pytest

from router.capacity import CapacityGauge
from router.config import CapacityConfig, PriceConfig, load_config
from router.gpu_cost import GpuCost, Throughput
from router.simulator import SimProfile, create_simulator_app
from router.state import PolicyState
from tests.evaluate.conftest import write_config
from tests.servers import serve


class Clock:
    """A settable ``time.monotonic``."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_gateway_counts_include_idle_time() -> None:
    clock = Clock()
    tp = Throughput(clock=clock)
    assert tp.per_second(scraped=False) is None
    for _ in range(60):
        clock.now += 1
        tp.count(100)
    assert tp.per_second(scraped=False) == pytest.approx(100)
    clock.now += 60  # idle for a minute: the same tokens over twice the time
    assert tp.per_second(scraped=False) == pytest.approx(50)
    clock.now += 600  # nothing in the window any more
    assert tp.per_second(scraped=False) == 0


def test_window_keeps_the_count_it_starts_from() -> None:
    clock = Clock()
    tp = Throughput(clock=clock, window=100)
    for _ in range(300):  # 10 tokens/s for 300 s, then 30 tokens/s for 100 s
        clock.now += 1
        tp.count(10)
    for _ in range(100):
        clock.now += 1
        tp.count(30)
    assert tp.per_second(scraped=False) == pytest.approx(30)


def test_scraped_counter_rate_and_reset() -> None:
    clock = Clock()
    tp = Throughput(clock=clock)
    tp.total(1000)
    clock.now += 10
    tp.total(2000)
    assert tp.per_second(scraped=True) is None  # under MIN_SECONDS of samples
    clock.now += 30
    tp.total(5000)
    assert tp.per_second(scraped=True) == pytest.approx(100)
    clock.now += 1
    tp.total(10)  # vLLM restarted
    assert tp.per_second(scraped=True) is None and tp.last == 10


def test_effective_price_from_gpu_hours() -> None:
    clock = Clock()
    cost = GpuCost(PriceConfig(input=0.05, output=0.2, gpu_hour_usd=3.6, gpus=2), "gateway", clock=clock)
    assert cost.price() == PriceConfig(input=0.05, output=0.2, gpu_hour_usd=3.6, gpus=2)  # not measured yet
    assert cost.usd_per_mtok is None
    for _ in range(60):
        clock.now += 1
        cost.throughput.count(100)
    # 2 GPUs at 3.60/h = 0.002 USD/s; at 100 tokens/s that is 20 USD per million tokens
    assert cost.usd_per_mtok == pytest.approx(20)
    assert cost.price().input == cost.price().output == pytest.approx(20)
    assert cost.snapshot()["tokens_per_second"] == pytest.approx(100)


async def test_capacity_poll_feeds_vllm_token_counters() -> None:
    sim = create_simulator_app(SimProfile(name="mid", model="m", ttft=0, token_interval=0))
    with serve(sim) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            for _ in range(2):
                r = await client.post("/v1/chat/completions", json={"model": "m", "max_tokens": 5,
                                                                    "messages": [{"role": "user", "content": "hello there"}]})
                usage = r.json()["usage"]
        gauge = CapacityGauge("mid", CapacityConfig(metrics_url=f"{url}/metrics", interval_seconds=0.05))
        gauge.throughput = Throughput()
        async with aiohttp.ClientSession() as session:
            task = asyncio.create_task(gauge.poll(session))
            while gauge.throughput.last is None:
                await asyncio.sleep(0.01)
            task.cancel()
    assert gauge.throughput.last == 2 * usage["total_tokens"]


@pytest.mark.parametrize(("capacity", "source"), [("capacity: {metrics_url: 'http://127.0.0.1:9/metrics'}", "vllm"), ("", "gateway")])
def test_policy_state_measures_from_vllm_where_it_can(tmp_path: Path, capacity: str, source: str) -> None:
    path = write_config(tmp_path / "c.yaml")
    path.write_text(path.read_text().replace("price: {input: 0.05, output: 0.20}}",
                                             f"price: {{input: 0.05, output: 0.20, gpu_hour_usd: 2.5}}, {capacity}}}"))
    config = load_config(path)
    state = PolicyState(config)
    assert state.ledger is not None
    state.ledger.close()
    mid = state.backends["mid"]
    assert mid.gpu_cost is not None and mid.gpu_cost.source == source
    assert (mid.capacity.throughput is mid.gpu_cost.throughput) if mid.capacity else source == "gateway"
    assert state.price("mid", config.backends["mid"]).input == 0.05  # nothing measured yet: the table
    assert state.backends["flagship"].gpu_cost is None
    state.reconfigure(config)
    assert state.backends["mid"].gpu_cost is mid.gpu_cost  # kept across a reload
