"""True cost of a self-hosted backend: what its GPUs cost per hour, spread over the tokens it serves.

With ``price: {gpu_hour_usd: 2.50, gpus: 1}`` a backend's price is

    effective USD per million tokens = gpu_hour_usd * gpus / 3600 / tokens per second * 1e6

for input and output tokens alike, the tokens per second being those observed over the last
``WINDOW_SECONDS``: from vLLM's own counters (``vllm:prompt_tokens_total`` +
``vllm:generation_tokens_total``) where ``capacity.metrics_url`` is set, so traffic that bypasses the
gateway counts too, else from the gateway's own token counts for the backend. An idle GPU costs as
much as a busy one, so quiet hours make every token dearer: that is the honest price. Until
``MIN_SECONDS`` of tokens have been observed, the static ``input``/``output`` prices apply.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

from router.config import PriceConfig

WINDOW_SECONDS = 300.0
MIN_SECONDS = 30.0
#: The effective price is recomputed at most this often (it is read on every request).
_REFRESH_SECONDS = 1.0

Source = Literal["gateway", "vllm"]


class Throughput:
    """Tokens per second over a sliding window, from increments or from a cumulative counter."""

    def __init__(self, *, window: float = WINDOW_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window
        self._clock = clock
        #: (time, cumulative tokens), oldest first; at most one sample per second from ``count``.
        self._samples: deque[tuple[float, float]] = deque()
        self._total = 0.0
        self._started = clock()

    @property
    def last(self) -> float | None:
        """The cumulative token count last seen."""
        return self._samples[-1][1] if self._samples else None

    def count(self, tokens: int) -> None:
        """The gateway served ``tokens`` more."""
        now = self._clock()
        self._total += tokens
        if self._samples and now - self._samples[-1][0] < 1.0:
            self._samples[-1] = (self._samples[-1][0], self._total)
        else:
            self._samples.append((now, self._total))
        self._trim(now)

    def total(self, cumulative: float) -> None:
        """A scraped counter's value (a counter that went down was reset: start over)."""
        now = self._clock()
        if self._samples and cumulative < self._samples[-1][1]:
            self._samples.clear()
            self._started = now
        self._samples.append((now, cumulative))
        self._trim(now)

    def per_second(self, *, scraped: bool) -> float | None:
        """None until ``MIN_SECONDS`` have been observed. A scraped counter's rate is taken between its
        first and last samples in the window; the gateway's own counts over the window, idle time included."""
        now = self._clock()
        self._trim(now)
        samples = self._samples
        if scraped:
            if len(samples) < 2 or samples[-1][0] - samples[0][0] < MIN_SECONDS:
                return None
            (t0, c0), (t1, c1) = samples[0], samples[-1]
            return (c1 - c0) / (t1 - t0)
        span = min(self._window, now - self._started)
        if span < MIN_SECONDS:
            return None
        # _trim keeps the last sample at or before the window's start: the count the window starts from.
        start = samples[0][1] if samples and samples[0][0] <= now - self._window else 0.0
        return (self._total - start) / span

    def _trim(self, now: float) -> None:
        samples = self._samples
        while len(samples) > 1 and samples[1][0] <= now - self._window:
            samples.popleft()


class GpuCost:
    """One GPU-priced backend's effective price."""

    def __init__(self, price: PriceConfig, source: Source, *, clock: Callable[[], float] = time.monotonic) -> None:
        assert price.gpu_hour_usd is not None
        self.config = price
        self.source = source
        self.throughput = Throughput(clock=clock)
        self._clock = clock
        self._usd_per_second = price.gpu_hour_usd * price.gpus / 3600
        self._price = price
        self._tokens_per_second: float | None = None
        self._refreshed = float("-inf")

    @property
    def usd_per_mtok(self) -> float | None:
        """The effective price, or None while it cannot be measured (the static prices apply)."""
        self._refresh()
        return self._price.input if self._tokens_per_second else None

    def price(self) -> PriceConfig:
        """The price to bill with now: effective when measured, else the static table."""
        self._refresh()
        return self._price

    def snapshot(self) -> dict[str, Any]:
        price = self.price()
        return {"gpu_hour_usd": self.config.gpu_hour_usd, "gpus": self.config.gpus, "source": self.source,
                "tokens_per_second": self._tokens_per_second, "usd_per_mtok": self.usd_per_mtok,
                "input": price.input, "output": price.output}

    def _refresh(self) -> None:
        now = self._clock()
        if now - self._refreshed < _REFRESH_SECONDS:
            return
        self._refreshed = now
        rate = self.throughput.per_second(scraped=self.source == "vllm")
        self._tokens_per_second = rate
        if rate:
            per_mtok = self._usd_per_second / rate * 1_000_000
            self._price = PriceConfig(input=per_mtok, output=per_mtok)
        else:
            self._price = self.config
