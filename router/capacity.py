"""Capacity of self-hosted backends, read from their own Prometheus endpoint (e.g. vLLM's gauges).

A poller scrapes ``num_requests_waiting`` and ``gpu_cache_usage_perc`` on an interval and keeps a
saturated/not-saturated verdict with hysteresis: it turns on at the high thresholds and off only
below the low ones, so routing does not flap around a threshold.
"""

from __future__ import annotations

import asyncio
import logging
import math

import aiohttp

from router.config import CapacityConfig
from router.gpu_cost import Throughput

log = logging.getLogger("router.capacity")


class CapacityGauge:
    def __init__(self, backend: str, config: CapacityConfig) -> None:
        self.backend = backend
        self.config = config
        self.saturated = False
        self.waiting: float | None = None
        self.cache_usage: float | None = None
        self.last_error: str | None = None
        #: Fed the summed token counters on every scrape when the backend is priced per GPU-hour.
        self.throughput: Throughput | None = None

    def update(self, waiting: float | None, cache_usage: float | None) -> None:
        c = self.config
        self.waiting, self.cache_usage = waiting, cache_usage
        high = (waiting is not None and waiting >= c.waiting_high) or (cache_usage is not None and cache_usage >= c.cache_high)
        low = (waiting is None or waiting <= c.waiting_low) and (cache_usage is None or cache_usage <= c.cache_low)
        if not self.saturated and high:
            self.saturated = True
            log.warning("backend %s saturated (waiting=%s, cache=%s): spilling over", self.backend, waiting, cache_usage)
        elif self.saturated and low:
            self.saturated = False
            log.info("backend %s no longer saturated", self.backend)

    async def poll(self, session: aiohttp.ClientSession) -> None:
        """Scrape forever; a failed scrape keeps the last verdict and is reported in ``last_error``."""
        assert self.config.metrics_url is not None
        timeout = aiohttp.ClientTimeout(total=self.config.interval_seconds)
        while True:
            try:
                async with session.get(self.config.metrics_url, timeout=timeout, raise_for_status=True) as response:
                    text = await response.text()
                self.update(*parse_gauges(text, self.config.waiting_metric, self.config.cache_metric))
                if self.throughput is not None:
                    tokens = [v for v in parse_samples(text, self.config.token_metrics).values() if v is not None]
                    if tokens:
                        self.throughput.total(sum(tokens))
                self.last_error = None
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(self.config.interval_seconds)

    def snapshot(self) -> dict[str, object]:
        return {"saturated": self.saturated, "waiting": self.waiting, "cache_usage": self.cache_usage, "last_error": self.last_error}


def parse_gauges(text: str, waiting_metric: str, cache_metric: str) -> tuple[float | None, float | None]:
    sums = parse_samples(text, [waiting_metric, cache_metric])
    return sums[waiting_metric], sums[cache_metric]


def parse_samples(text: str, names: list[str]) -> dict[str, float | None]:
    """Sum each metric's samples over all label sets (vLLM labels by model name) in Prometheus text format."""
    sums: dict[str, float | None] = dict.fromkeys(names)
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in sums:
            value = float(line.rsplit(" ", 1)[-1]) if "}" not in line else float(line.rsplit("}", 1)[1].split()[0])
            if math.isfinite(value):
                sums[name] = (sums[name] or 0.0) + value
    return sums
