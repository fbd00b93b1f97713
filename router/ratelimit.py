"""Request and token rate limits per key, per tenant and for the whole gateway (``policy.rate_limits``).

Each limit is a GCRA bucket (the generic cell rate algorithm, a leaky bucket kept as one
timestamp): ``rpm`` requests or ``tpm`` tokens per minute, with a burst of a whole minute. A
request takes one request and its estimated tokens from every bucket that applies, all or none;
when it ends, the difference between its actual and estimated tokens is settled. Refusals carry
``retry-after``, and every answer to a limited caller carries OpenAI's ``x-ratelimit-*`` headers
(the tightest applicable limit of each kind).

``LocalBuckets`` keeps the buckets in this process; ``router.shared.redis.RedisStore`` keeps them
in Redis with the same arithmetic in a Lua script, exact across replicas. With Redis, settlements
wait for the caller's next request (or the once-a-second flush), which carries them in the same
round trip as its own take.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from router.config import RateLimitConfig

Kind = Literal["requests", "tokens"]
_PERIOD = 60.0


@dataclass(frozen=True, slots=True)
class Bucket:
    """One limit of one kind for one concrete caller: ``key`` names it in a store (e.g. ``tenant:acme:requests``)."""

    key: str
    label: str
    kind: Kind
    per_minute: int


@dataclass(frozen=True, slots=True)
class Take:
    """What ``take`` found: admitted or not, and per bucket (remaining, seconds until full) after it."""

    admitted: bool
    retry_after: float
    remaining: tuple[tuple[float, float], ...]


def gcra(tat: float, now: float, per_minute: int, cost: float) -> tuple[float, float]:
    """(the bucket's new theoretical arrival time, seconds over the burst: > 0 means refuse)."""
    new_tat = max(tat, now) + cost * _PERIOD / per_minute
    return new_tat, new_tat - now - _PERIOD


class LocalBuckets:
    """Buckets in this process's memory: exact for one process."""

    def __init__(self, clock: object = time.time) -> None:
        self._clock = clock
        self._tat: dict[str, float] = {}

    def take_now(self, buckets: Sequence[Bucket], costs: Sequence[float]) -> Take:
        now: float = self._clock()  # type: ignore[operator]
        tats = [gcra(self._tat.get(b.key, 0.0), now, b.per_minute, cost) for b, cost in zip(buckets, costs, strict=True)]
        over = max((excess for _, excess in tats), default=0.0)
        if over <= 0:
            for bucket, (tat, _) in zip(buckets, tats, strict=True):
                self._tat[bucket.key] = tat
        current = [self._tat.get(b.key, now) for b in buckets]
        remaining = tuple(_remaining(b, tat, now) for b, tat in zip(buckets, current, strict=True))
        return Take(over <= 0, max(over, 0.0), remaining)

    def adjust_now(self, buckets: Sequence[Bucket], deltas: Sequence[float]) -> None:
        now: float = self._clock()  # type: ignore[operator]
        for bucket, delta in zip(buckets, deltas, strict=True):
            tat = self._tat.get(bucket.key)
            if tat is not None:
                self._tat[bucket.key] = max(now, tat + delta * _PERIOD / bucket.per_minute)


def _remaining(bucket: Bucket, tat: float, now: float) -> tuple[float, float]:
    backlog = max(0.0, tat - now)
    return max(0.0, (_PERIOD - backlog) * bucket.per_minute / _PERIOD), backlog


class RateLimits:
    """The configured limits, resolved per caller (a limit without a name applies to each tenant or key separately)."""

    def __init__(self, limits: Sequence[RateLimitConfig]) -> None:
        self.limits = tuple(limits)
        self._named: dict[tuple[str, str | None], RateLimitConfig] = {
            (limit.scope, limit.name): limit for limit in limits if limit.name is not None or limit.scope == "global"
        }
        self._defaults: dict[str, RateLimitConfig] = {
            limit.scope: limit for limit in limits if limit.name is None and limit.scope != "global"
        }
        self._callers: dict[tuple[str | None, str | None], tuple[Bucket, ...]] = {}

    def __bool__(self) -> bool:
        return bool(self.limits)

    def buckets(self, tenant: str | None, key: str | None) -> tuple[Bucket, ...]:
        cached = self._callers.get((tenant, key))
        if cached is not None:
            return cached
        found: list[Bucket] = []
        for scope, name in (("global", None), ("tenant", tenant), ("key", key)):
            if scope != "global" and name is None:
                continue
            limit = self._named.get((scope, name)) or self._defaults.get(scope)
            if limit is None:
                continue
            label = scope if name is None else f"{scope}:{name}"
            if limit.rpm is not None:
                found.append(Bucket(f"{label}:requests", label, "requests", limit.rpm))
            if limit.tpm is not None:
                found.append(Bucket(f"{label}:tokens", label, "tokens", limit.tpm))
        if len(self._callers) > 10_000:
            self._callers.clear()
        buckets = self._callers[tenant, key] = tuple(found)
        return buckets


def costs(buckets: Sequence[Bucket], tokens: int) -> list[float]:
    return [1.0 if b.kind == "requests" else float(tokens) for b in buckets]


def headers(buckets: Sequence[Bucket], take: Take) -> dict[str, str]:
    """OpenAI's ``x-ratelimit-*`` headers for the tightest limit of each kind (and ``retry-after`` on a refusal)."""
    out: dict[str, str] = {}
    for kind in ("requests", "tokens"):
        tightest = min(
            ((b, left, reset) for b, (left, reset) in zip(buckets, take.remaining, strict=True) if b.kind == kind),
            key=lambda item: item[1],
            default=None,
        )
        if tightest is not None:
            bucket, left, reset = tightest
            out[f"x-ratelimit-limit-{kind}"] = str(bucket.per_minute)
            out[f"x-ratelimit-remaining-{kind}"] = str(int(left))
            out[f"x-ratelimit-reset-{kind}"] = duration(reset)
    if not take.admitted:
        out["retry-after"] = str(max(1, math.ceil(take.retry_after)))
        out["retry-after-ms"] = str(max(1, math.ceil(take.retry_after * 1000)))
    return out


def refused(buckets: Sequence[Bucket], take: Take) -> str:
    """The message of a 429, in OpenAI's words."""
    for bucket, (left, _) in zip(buckets, take.remaining, strict=True):
        if left < 1 or bucket.kind == "tokens":
            unit = "requests per min (RPM)" if bucket.kind == "requests" else "tokens per min (TPM)"
            return (f"Rate limit reached for {unit} on {bucket.label}: limit {bucket.per_minute}. "
                    f"Please try again in {duration(take.retry_after)}.")
    return f"Rate limit reached. Please try again in {duration(take.retry_after)}."


def duration(seconds: float) -> str:
    """Seconds in OpenAI's header style: ``120ms``, ``2s``, ``1m30s``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    rest_text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{rest_text}" if minutes else rest_text
