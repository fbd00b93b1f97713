"""Rate-limit leases: what a replica took from a Redis bucket ahead of its requests.

A request whose buckets all have room (each stays at most half full) takes, in its admission round
trip, a lease of ``state.rate_limit_lease`` of a minute's capacity of each bucket besides its own
cost. The replica then admits requests from its leases without asking Redis, all buckets or none,
and gives back what is left every second (``give_back``, a negative settlement). So a request costs
no round trip while its limits are far from reached, and exactly one near them, where leases are not
granted. Redis never lends beyond a limit, so a fleet never admits beyond it; other replicas may be
refused early by what a replica holds (at most that fraction of the limit each) until it gives it back.

Not thread-safe: one event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from router.ratelimit import Bucket, Take


@dataclass(slots=True)
class _Lease:
    bucket: Bucket
    left: float
    #: The bucket's (remaining, seconds until full) when the lease was granted, the lease not counted.
    remaining: tuple[float, float]


class Leases:
    def __init__(self, fraction: float) -> None:
        self.fraction = fraction
        self._leases: dict[str, _Lease] = {}

    def sizes(self, buckets: Sequence[Bucket], costs: Sequence[float]) -> list[float]:
        """What to ask Redis to lend besides a request's ``costs``: ``fraction`` of each bucket's minute,
        or nothing when that would not cover one more such request in every bucket."""
        sizes = [b.per_minute * self.fraction for b in buckets]
        if not buckets or any(size < cost or size < 1.0 for size, cost in zip(sizes, costs, strict=True)):
            return [0.0] * len(buckets)
        return sizes

    def take(self, buckets: Sequence[Bucket], costs: Sequence[float]) -> Take | None:
        """Admit a request from the leases, without I/O; None when one of its buckets has no lease covering it."""
        leases = self._leases
        held = [leases.get(b.key) for b in buckets]
        if not buckets or any(lease is None or lease.left < cost for lease, cost in zip(held, costs, strict=True)):
            return None
        remaining = []
        for lease, cost in zip(held, costs, strict=True):
            assert lease is not None
            lease.left -= cost
            left, reset = lease.remaining
            remaining.append((left + lease.left, reset))
        return Take(True, 0.0, tuple(remaining))

    def grant(self, buckets: Sequence[Bucket], sizes: Sequence[float], take: Take) -> Take:
        """Hold the leases Redis granted with ``take``; ``take`` with them counted as remaining."""
        remaining = []
        for bucket, size, (left, reset) in zip(buckets, sizes, take.remaining, strict=True):
            lease = self._leases.get(bucket.key)
            if lease is None:
                lease = self._leases[bucket.key] = _Lease(bucket, 0.0, (left, reset))
            lease.left += size
            lease.remaining = (left, reset)
            remaining.append((left + lease.left, reset))
        return Take(take.admitted, take.retry_after, tuple(remaining))

    def give_back(self) -> list[tuple[Bucket, float]]:
        """Drop every lease: the settlements (negative) that return what is left of them to Redis."""
        leases, self._leases = self._leases, {}
        return [(lease.bucket, -lease.left) for lease in leases.values() if lease.left > 0.0]
