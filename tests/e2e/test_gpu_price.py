"""A backend priced per GPU-hour: the gateway bills, explains and exports its effective price."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from router.app import create_app
from router.config import load_config
from router.gpu_cost import GpuCost
from tests.e2e.conftest import CLIENT_KEY, ENV, Stack, write_config
from tests.servers import serve
from tests.test_gpu_cost import Clock


def test_the_gateway_bills_and_shows_the_effective_price(upstreams: tuple[str, str], tmp_path: Path) -> None:
    mid, flagship = upstreams
    path = tmp_path / "router.yaml"
    write_config(path, mid, flagship)
    path.write_text(path.read_text().replace("price: {input: 0.1, output: 0.2}", "price: {input: 0.1, output: 0.2, gpu_hour_usd: 3.6}", 1))
    app = create_app(load_config(path, ENV), path=path, environ=ENV, watch=False)
    state = app.state.gateway.state
    clock = Clock()
    state.backends["mid"].gpu_cost = cost = GpuCost(state.backends["mid"].gpu_cost.config, "gateway", clock=clock)
    with serve(app) as url:
        stack = Stack(url, mid, flagship, path)
        client = stack.client(CLIENT_KEY)
        faq = [{"role": "user", "content": "How do I reset my online banking password?"}]
        body = {"model": "auto", "messages": faq}
        headers = {"authorization": f"Bearer {CLIENT_KEY}"}
        chain = httpx.post(f"{url}/v1/router/decide", json=body, headers=headers).json()["plan"]["chain"]
        assert chain[0]["price_usd_per_mtok"]["from"] == "table" and chain[0]["price_usd_per_mtok"]["input"] == 0.1

        for _ in range(60):  # 1,000 tokens/s: 3.60 USD/h = 0.001 USD/s -> 1 USD per million tokens
            clock.now += 1
            cost.throughput.count(1000)
        chain = httpx.post(f"{url}/v1/router/decide", json=body, headers=headers).json()["plan"]["chain"]
        assert chain[0]["price_usd_per_mtok"]["from"] == "gpu_hour"
        assert chain[0]["price_usd_per_mtok"]["usd_per_mtok"] == pytest.approx(1.0)

        raw = client.chat.completions.with_raw_response.create(model="auto", messages=faq)  # type: ignore[arg-type]
        usage = raw.parse().usage
        assert raw.headers["x-router-backend"] == "mid" and usage is not None
        assert float(raw.headers["x-router-cost-usd"]) == pytest.approx(usage.total_tokens * 1.0 / 1e6, abs=1e-8)
        metrics = httpx.get(f"{url}/metrics").text
        assert 'llm_router_price_usd_per_mtok{backend="mid",type="input"} 1.0' in metrics
        assert 'llm_router_price_usd_per_mtok{backend="flagship",type="output"} 8.0' in metrics
