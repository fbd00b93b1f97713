"""Conversation stickiness: a thread escalated to a higher tier stays there for its follow-ups.

A follow-up request repeats the conversation so far and adds the assistant's answer and a new
user turn, so ``messages[:-2]`` of the follow-up equals the ``messages`` of the request that was
escalated. The store keeps a digest of each escalated conversation (bounded LRU with a TTL).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import orjson


def conversation_digest(messages: Sequence[Any], tenant: str | None) -> bytes:
    """A digest of the conversation, scoped to the tenant so threads never leak across tenants."""
    h = hashlib.blake2b(digest_size=16)
    h.update((tenant or "").encode())
    h.update(orjson.dumps(list(messages)))
    return h.digest()


class StickyStore:
    def __init__(self, *, ttl_seconds: float, max_conversations: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_seconds
        self._max = max_conversations
        self._clock = clock
        self._tiers: OrderedDict[bytes, tuple[str, float]] = OrderedDict()

    def tier_of(self, messages: Sequence[Any], tenant: str | None) -> str | None:
        """The tier that answered the conversation this request continues, if any."""
        if len(messages) < 3:
            return None
        key = conversation_digest(messages[:-2], tenant)
        entry = self._tiers.get(key)
        if entry is None:
            return None
        tier, expires = entry
        if expires < self._clock():
            del self._tiers[key]
            return None
        return tier

    def remember(self, messages: Sequence[Any], tenant: str | None, tier: str) -> None:
        key = conversation_digest(messages, tenant)
        self._tiers[key] = (tier, self._clock() + self._ttl)
        self._tiers.move_to_end(key)
        while len(self._tiers) > self._max:
            self._tiers.popitem(last=False)
