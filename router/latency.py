"""Observed load of one backend: requests in flight and time-decayed latency averages.

Each average is a weighted mean in which every observation starts with weight 1 and its
weight halves every ``half_life_seconds``. Decay follows elapsed time, not the number of
observations, so a burst of requests does not wash out the recent past any faster than a
trickle, and two observations at the same instant count equally. Between observations an
average keeps its last value. A TTFT average not fed for ~30 half-lives while totals keep
coming (only non-streamed requests) is forgotten: ``ttft_ms`` is None again.
Not thread-safe by design: the gateway drives it from one event loop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

_FORGOTTEN = 1e-9  # below this total weight, the old observations no longer count


class BackendLoad:
    __slots__ = ("_clock", "_in_flight", "_last", "_rate", "_total_sum", "_total_weight", "_ttft_sum", "_ttft_weight")

    def __init__(self, *, half_life_seconds: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        if half_life_seconds <= 0:
            raise ValueError("half_life_seconds must be > 0")
        self._clock = clock
        self._rate = math.log(2) / half_life_seconds
        self._last = clock()
        self._in_flight = 0
        self._total_sum = 0.0
        self._total_weight = 0.0
        self._ttft_sum = 0.0
        self._ttft_weight = 0.0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def started(self) -> None:
        self._in_flight += 1

    def finished(self) -> None:
        if self._in_flight > 0:
            self._in_flight -= 1

    def observe(self, *, ttft: float | None, total: float) -> None:
        """One finished request: seconds to its first token (None if not streamed) and in total."""
        now = self._clock()
        elapsed = now - self._last
        if elapsed > 0:
            factor = math.exp(-elapsed * self._rate)
            self._total_sum *= factor
            self._total_weight *= factor
            self._ttft_sum *= factor
            self._ttft_weight *= factor
            self._last = now
            if self._ttft_weight < _FORGOTTEN:
                self._ttft_sum = self._ttft_weight = 0.0
        self._total_sum += total
        self._total_weight += 1.0
        if ttft is not None:
            self._ttft_sum += ttft
            self._ttft_weight += 1.0

    @property
    def ttft_ms(self) -> float | None:
        return self._ttft_sum / self._ttft_weight * 1000.0 if self._ttft_weight else None

    @property
    def total_ms(self) -> float | None:
        return self._total_sum / self._total_weight * 1000.0 if self._total_weight else None

    def snapshot(self) -> dict[str, Any]:
        ttft, total = self.ttft_ms, self.total_ms
        return {
            "in_flight": self._in_flight,
            "ttft_ms": None if ttft is None else round(ttft, 1),
            "total_ms": None if total is None else round(total, 1),
        }

    def __repr__(self) -> str:
        return f"BackendLoad(in_flight={self._in_flight}, ttft_ms={self.ttft_ms}, total_ms={self.total_ms})"
