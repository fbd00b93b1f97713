"""When to retry an attempt: backoff delays, ``Retry-After`` and a retry budget.

The pipeline owns the loop (attempt limit, total deadline, fallback); these are its parts.
A retry happens only if both agree: ``RetryBudget.try_spend`` grants one, and
``backoff_delay`` returns a delay (None: the wait is too long, fall back instead).
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Callable
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

_SECONDS = re.compile(r"\s*(\d+(?:\.\d+)?)\s*")


def backoff_delay(
    attempt: int,
    *,
    base: float = 0.25,
    cap: float = 8.0,
    retry_after: float | None = None,
    remaining: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float | None:
    """Seconds to wait before retrying after failed attempt number ``attempt`` (counting from 0).

    Full jitter: uniform in ``[0, min(cap, base * 2**attempt))``, which spreads a burst of
    clients that failed together. An upstream ``Retry-After`` replaces the jitter (retrying
    sooner would only be refused again).

    None means "do not wait, fall back instead": when ``Retry-After`` asks for more than ``cap``
    (a long wait is better spent on another backend), or when the wait would use up the
    ``remaining`` seconds before the request's deadline.
    """
    if attempt < 0:
        raise ValueError("attempt counts from 0")
    if retry_after is not None:
        if retry_after > cap:
            return None
        delay = max(0.0, retry_after)
    else:
        delay = rand() * min(cap, base * 2.0 ** min(attempt, 64))
    if remaining is not None and delay >= remaining:
        return None
    return delay


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """A ``Retry-After`` header as seconds from ``now`` (default: the wall clock); None if absent or invalid.

    Accepts delta-seconds (decimals too, as some APIs send) and an HTTP-date; a date in the
    past is 0.
    """
    if value is None:
        return None
    match = _SECONDS.fullmatch(value)
    if match:
        return float(match.group(1))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" means UTC with no further information
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class RetryBudget:
    """Retries may be at most ``ratio`` of recent requests plus ``min_per_second``.

    Requests and retries are counted in exponentially decaying counters (time constant
    ``window_seconds``), so in a steady state the retry rate is held to
    ``ratio * request rate + min_per_second``. During an outage that bounds the extra load
    retries add to ``ratio`` instead of multiplying it by the attempt limit. The floor, a
    reserve of ``min_per_second * window_seconds`` retries, lets a quiet backend still retry.

    ``record_request`` once per client request (not per attempt); ``try_spend`` before each retry.
    """

    __slots__ = ("_clock", "_last", "_ratio", "_requests", "_reserve", "_retries", "_window")

    def __init__(
        self,
        *,
        ratio: float = 0.2,
        min_per_second: float = 1.0,
        window_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ratio < 0 or min_per_second < 0 or window_seconds <= 0:
            raise ValueError("ratio and min_per_second must be >= 0, window_seconds > 0")
        self._ratio = ratio
        self._reserve = min_per_second * window_seconds
        self._window = window_seconds
        self._clock = clock
        self._last = clock()
        self._requests = 0.0
        self._retries = 0.0

    def record_request(self) -> None:
        self._decay()
        self._requests += 1.0

    def try_spend(self) -> bool:
        """True, and one retry is counted, if the budget allows a retry now."""
        self._decay()
        if self._retries + 1.0 > self._ratio * self._requests + self._reserve:
            return False
        self._retries += 1.0
        return True

    def snapshot(self) -> dict[str, Any]:
        self._decay()
        return {
            "recent_requests": round(self._requests, 2),
            "recent_retries": round(self._retries, 2),
            "retries_available": max(0, math.floor(self._ratio * self._requests + self._reserve - self._retries)),
        }

    def _decay(self) -> None:
        now = self._clock()
        elapsed = now - self._last
        if elapsed > 0:
            factor = math.exp(-elapsed / self._window)
            self._requests *= factor
            self._retries *= factor
            self._last = now
