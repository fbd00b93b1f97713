"""Circuit breaker, one per backend: stop sending traffic to a backend that keeps failing.

    closed    --N consecutive failures, or failure rate >= R over the window-->  open
    open      --the cool-down has passed (checked lazily, on the next call)--->  half_open
    half_open --a probe succeeds---------------------------------------------->  closed
    half_open --a probe fails--------------------------------------------------> open (a new cool-down)

While open, ``allow()`` is False and the caller goes straight to its fallback. Half-open lets
at most ``half_open_probes`` requests through at a time; the rest are refused as if open.

Contract: after ``allow()`` returns True, report how the attempt ended with exactly one of
``record_success``, ``record_failure`` or ``release`` (neither: e.g. the client went away).
Results that arrive while open are from requests admitted before it opened and are ignored.

The window is a ring of ``_BUCKETS`` buckets, each ``window_seconds / _BUCKETS`` wide, with
running sums, so every call is O(1); it covers the last 90-100% of ``window_seconds``.
Not thread-safe by design: the gateway drives it from one event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

BreakerState = Literal["closed", "open", "half_open"]

_BUCKETS = 10


class CircuitBreaker:
    __slots__ = (
        "_bucket",
        "_clock",
        "_consecutive",
        "_consecutive_limit",
        "_cooldown",
        "_failure_rate",
        "_failures",
        "_max_probes",
        "_min_requests",
        "_on_change",
        "_open_until",
        "_probes",
        "_state",
        "_totals",
        "_width",
        "_window_failures",
        "_window_total",
    )

    def __init__(
        self,
        *,
        consecutive_failures: int = 5,
        window_seconds: float = 30.0,
        failure_rate: float = 0.5,
        min_requests: int = 20,
        cooldown_seconds: float = 15.0,
        half_open_probes: int = 1,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState, BreakerState], None] | None = None,
    ) -> None:
        if consecutive_failures < 1 or half_open_probes < 1 or min_requests < 1:
            raise ValueError("consecutive_failures, min_requests and half_open_probes must be >= 1")
        if not 0.0 < failure_rate <= 1.0:
            raise ValueError("failure_rate must be in (0, 1]")
        if window_seconds <= 0 or cooldown_seconds < 0:
            raise ValueError("window_seconds must be > 0 and cooldown_seconds >= 0")
        self._clock = clock
        self._on_change = on_change
        self._consecutive_limit = consecutive_failures
        self._failure_rate = failure_rate
        self._min_requests = min_requests
        self._cooldown = cooldown_seconds
        self._max_probes = half_open_probes
        self._width = window_seconds / _BUCKETS
        self._state: BreakerState = "closed"
        self._consecutive = 0
        self._open_until = 0.0
        self._probes = 0
        self._bucket = int(clock() / self._width)
        self._totals = [0] * _BUCKETS
        self._failures = [0] * _BUCKETS
        self._window_total = 0
        self._window_failures = 0

    @property
    def state(self) -> BreakerState:
        if self._state == "open" and self._clock() >= self._open_until:
            self._move("half_open")
        return self._state

    def allow(self) -> bool:
        """May an attempt go to this backend now? In half-open, a True takes a probe slot."""
        state = self._state
        if state == "closed":
            return True
        if state == "open":
            if self._clock() < self._open_until:
                return False
            self._move("half_open")
        if self._probes >= self._max_probes:
            return False
        self._probes += 1
        return True

    def record_success(self) -> None:
        state = self._state
        if state == "closed":
            self._consecutive = 0
            self._count(failed=False)
        elif state == "half_open":
            self._close()

    def record_failure(self) -> None:
        state = self._state
        if state == "closed":
            self._consecutive += 1
            self._count(failed=True)
            if self._consecutive >= self._consecutive_limit or (
                self._window_total >= self._min_requests and self._window_failures >= self._failure_rate * self._window_total
            ):
                self._open()
        elif state == "half_open":
            self._open()

    def release(self) -> None:
        """An admitted attempt ended with no verdict on the backend: give back its probe slot."""
        if self._state == "half_open" and self._probes > 0:
            self._probes -= 1

    def retry_in(self) -> float:
        """Seconds until ``allow`` may admit an attempt again: the rest of the cool-down (0 once half-open)."""
        return max(0.0, self._open_until - self._clock()) if self._state == "open" else 0.0

    def snapshot(self) -> dict[str, Any]:
        state = self.state
        now = self._clock()
        self._advance(int(now / self._width))
        return {
            "state": state,
            "consecutive_failures": self._consecutive,
            "window_requests": self._window_total,
            "window_failures": self._window_failures,
            "half_open_in_seconds": max(0.0, self._open_until - now) if state == "open" else 0.0,
            "probes_in_flight": self._probes if state == "half_open" else 0,
        }

    def __repr__(self) -> str:
        return f"CircuitBreaker({self._state}, consecutive_failures={self._consecutive})"

    def _count(self, *, failed: bool) -> None:
        bucket = int(self._clock() / self._width)
        if bucket != self._bucket:
            self._advance(bucket)
        i = self._bucket % _BUCKETS
        self._totals[i] += 1
        self._window_total += 1
        if failed:
            self._failures[i] += 1
            self._window_failures += 1

    def _advance(self, bucket: int) -> None:
        """Move the ring forward to ``bucket``, dropping the buckets that fell out of the window."""
        if bucket <= self._bucket:
            return
        if bucket - self._bucket >= _BUCKETS:
            self._clear_window()
        else:
            for b in range(self._bucket + 1, bucket + 1):
                i = b % _BUCKETS
                self._window_total -= self._totals[i]
                self._window_failures -= self._failures[i]
                self._totals[i] = 0
                self._failures[i] = 0
        self._bucket = bucket

    def _clear_window(self) -> None:
        self._totals = [0] * _BUCKETS
        self._failures = [0] * _BUCKETS
        self._window_total = 0
        self._window_failures = 0

    def _open(self) -> None:
        self._open_until = self._clock() + self._cooldown
        self._probes = 0
        self._move("open")

    def _close(self) -> None:
        self._consecutive = 0
        self._probes = 0
        self._clear_window()
        self._move("closed")

    def _move(self, new: BreakerState) -> None:
        old = self._state
        self._state = new
        if self._on_change is not None and old != new:
            self._on_change(old, new)
