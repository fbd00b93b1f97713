"""Shared state in Redis (``state.redis_url``): budget escrow, rate-limit buckets and conversation
stickiness, exact across replicas on any number of machines.

Each operation is one Lua script (atomic on the server, one round trip) and uses Redis' own clock,
so replicas with skewed clocks agree. A call that fails or takes longer than
``state.timeout_seconds`` marks Redis down: the failure is logged once, ``on_change(False)``
is called (the ``llm_router_state_backend_up`` gauge), further calls fail at once, and a probe
pings every second until Redis answers, then logs once and calls ``on_change(True)``. Callers
turn ``StateUnavailableError`` into local state (``on_failure: open``) or a refusal (``closed``).

Budget windows that do not exist yet are created from the seed the caller passes (this replica's
ledger totals), and each window keeps what every replica moved into it: a Redis that restarted
empty is restored to the larger of a replica's ledger view and the sum the live replicas moved.
A restart is noticed at once, not at the next trade: ``watch`` keeps one connection blocked,
whose end tells the replica to drop the shares that Redis no longer knows about.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import cache, partial
from typing import TYPE_CHECKING, Any, TypeVar

from router.config import StateConfig
from router.ratelimit import Bucket, Take
from router.shared import Exchange, Grant, StateUnavailableError

if TYPE_CHECKING:
    from redis.asyncio.connection import AbstractConnection

log = logging.getLogger("router.shared")

T = TypeVar("T")

#: Seconds after its last trade at which a replica's budget shares go back to the others.
STALE_SECONDS = 15

_ESCROW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local worker, fraction, stale = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local workers = KEYS[1]
redis.call('ZADD', workers, now, worker)
local out = {}
for i = 2, #KEYS do
  local key = KEYS[i]
  local a = 3 + (i - 2) * 7
  local limit, seed, settled = tonumber(ARGV[a + 1]), ARGV[a + 2], tonumber(ARGV[a + 3])
  local floor, want, expires = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6])
  local moved = tonumber(ARGV[a + 7])
  redis.call('HSETNX', key, 'spent', seed)
  if settled ~= 0 then redis.call('HINCRBYFLOAT', key, 'spent', settled) end
  if moved + settled ~= 0 then redis.call('HSET', key, 'm:' .. worker, tostring(moved + settled)) end
  local spent = tonumber(redis.call('HGET', key, 'spent'))
  local mine, others, contributed = 0, 0, 0
  local fields = redis.call('HGETALL', key)
  for j = 1, #fields, 2 do
    local f = fields[j]
    if string.sub(f, 1, 2) == 'm:' then
      contributed = contributed + tonumber(fields[j + 1])
    elseif string.sub(f, 1, 2) == 's:' then
      local w = string.sub(f, 3)
      if w == worker then
        mine = tonumber(fields[j + 1])
      else
        local seen = redis.call('ZSCORE', workers, w)
        if (not seen) or tonumber(seen) < now - stale then
          redis.call('HDEL', key, f)
        else
          others = others + tonumber(fields[j + 1])
        end
      end
    end
  end
  if contributed > spent then  -- the window was lost and re-created from one replica's seed
    spent = contributed
    redis.call('HSET', key, 'spent', tostring(spent))
  end
  mine = math.max(0, mine - settled)
  local share
  if want <= 0 then
    share = floor
  else
    local available = limit - spent - others + 1e-9
    if available >= floor + want then
      share = floor + want + (available - floor - want) * fraction
    else
      share = math.max(floor, mine)
    end
  end
  redis.call('HSET', key, 's:' .. worker, tostring(share))
  redis.call('EXPIREAT', key, math.floor(expires) + 86400)
  out[#out + 1] = tostring(share)
  out[#out + 1] = tostring(spent)
  out[#out + 1] = tostring(others)
end
redis.call('ZREMRANGEBYSCORE', workers, '-inf', now - 86400)
return out
"""

# A request's admission, in one round trip: the tier its conversation was escalated to (when
# ARGV[1] is '1', KEYS[1] is that conversation's sticky key), then GCRA over every bucket of the
# request, all or none (see router.ratelimit.gcra). ARGV: then per bucket (per_minute, cost, delta,
# lease), where delta is what earlier requests settled (actual - estimated tokens) or leases given
# back, applied first whether or not this request is admitted; lease is what the replica asks to take
# ahead besides the cost, granted (in every bucket or none) only if each bucket stays at most half
# full. Returns the excess over the burst (> 0: refused), the sticky tier ('' for none), '1' if the
# leases were granted, then each bucket's backlog in seconds.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local first, sticky = 1, ''
if ARGV[1] == '1' then
  sticky = redis.call('GET', KEYS[1]) or ''
  first = 2
end
local adjusted, news, leased, over = {}, {}, {}, 0
local lend = true
for i = first, #KEYS do
  local a = (i - first) * 4 + 1
  local per, cost, delta = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local lease = tonumber(ARGV[a + 4])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0') + delta * 60 / per
  adjusted[i] = tat
  news[i] = math.max(tat, now) + cost * 60 / per
  leased[i] = news[i] + lease * 60 / per
  over = math.max(over, news[i] - now - 60)
  lend = lend and lease > 0 and leased[i] - now <= 30
end
lend = lend and over <= 0 and #KEYS >= first
local out = {tostring(over), sticky, lend and '1' or '0'}
for i = first, #KEYS do
  local tat = adjusted[i]
  if lend then tat = leased[i] elseif over <= 0 then tat = news[i] end
  if over <= 0 or tonumber(ARGV[(i - first) * 4 + 4]) ~= 0 then
    redis.call('SET', KEYS[i], tostring(tat), 'PXAT', math.ceil(math.max(tat, now) * 1000) + 1000)
  end
  out[#out + 1] = tostring(math.max(0, tat - now))
end
return out
"""

#: Idle connections kept for scripts (more are opened while more requests are in flight at once).
_MAX_IDLE = 64


@dataclass(frozen=True, slots=True)
class Admitted:
    """Redis' answer to a request's admission (``RedisStore.admit``)."""

    take: Take
    #: Whether the leases asked for were granted (and are counted in ``take.remaining``).
    leased: bool
    #: The tier the request's conversation was escalated to, if any.
    sticky_tier: str | None


class RedisStore:
    def __init__(self, config: StateConfig, *, on_change: Callable[[bool], None] | None = None) -> None:
        try:
            import redis.asyncio as aioredis
            from redis.backoff import NoBackoff
            from redis.exceptions import ConnectionError as RedisConnectionError
            from redis.exceptions import NoScriptError, RedisError
            from redis.retry import Retry
        except ImportError as exc:  # pragma: no cover - the extra is missing
            raise RuntimeError("state.redis_url needs the redis package: pip install 'llm-router[fleet]'") from exc
        self._errors: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)
        timeout = config.timeout_seconds
        self._timeout = timeout
        self._broken: type[BaseException] = RedisConnectionError
        self._no_script: type[BaseException] = NoScriptError
        self._client = aioredis.Redis.from_url(
            config.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )
        pool = self._client.connection_pool
        # Script connections: the pool's settings without its per-read timeout (one deadline bounds the whole call).
        self._script_connection = partial(pool.connection_class, **{**pool.connection_kwargs, "socket_timeout": None})
        self._idle: list[AbstractConnection] = []
        self._prefix = config.key_prefix
        self._on_change = on_change
        self._probe: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[bool], None]] = []
        self.up = True

    def listen(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(up)`` on every transition (after the log line and ``on_change``)."""
        self._listeners.append(listener)

    # -- escrow (router.shared.EscrowStore) -------------------------------------------------------

    async def exchange(self, worker: str, trades: list[Exchange], fraction: float) -> list[Grant]:
        keys = [f"{self._prefix}:budget:workers"]
        args: list[Any] = [worker, fraction, STALE_SECONDS]
        for t in trades:
            account, period, start = t.key
            keys.append(f"{self._prefix}:budget:{account}:{period}:{start}")
            args += [t.limit, repr(t.seed), t.settled, t.floor, t.want, t.expires_at, t.moved]
        out = await self._call(lambda: self._script(_ESCROW, keys, args))
        return [Grant(float(out[i]), float(out[i + 1]), float(out[i + 2])) for i in range(0, len(out), 3)]

    # -- a request's admission: rate-limit buckets and stickiness ---------------------------------

    async def admit(
        self,
        buckets: Sequence[Bucket],
        costs: Sequence[float],
        deltas: Sequence[float],
        leases: Sequence[float],
        conversation: bytes | None = None,
    ) -> Admitted:
        """In one round trip: the tier ``conversation`` (a ``conversation_digest``) was escalated to,
        if given; then apply ``deltas`` (settlements of earlier requests, leases given back) and take
        ``costs`` from every bucket, all or none, and ``leases`` besides if every bucket has the room."""
        keys = [f"{self._prefix}:rate:{b.key}" for b in buckets]
        args: list[Any] = ["0" if conversation is None else "1"]
        if conversation is not None:
            keys.insert(0, self._sticky_key(conversation))
        for bucket, cost, delta, lease in zip(buckets, costs, deltas, leases, strict=True):
            args += [bucket.per_minute, cost, delta, lease]
        out: list[str] = await self._call(lambda: self._script(_ADMIT, keys, args))
        over = float(out[0])
        remaining = tuple(
            (max(0.0, (60.0 - float(backlog)) * b.per_minute / 60.0), float(backlog))
            for b, backlog in zip(buckets, out[3:], strict=True)
        )
        return Admitted(Take(over <= 0, max(over, 0.0), remaining), out[2] == "1", out[1] or None)

    # -- stickiness ------------------------------------------------------------------------------

    async def sticky_set(self, digest: bytes, tier: str, ttl_seconds: float) -> None:
        key = self._sticky_key(digest)
        await self._call(lambda: self._client.set(key, tier, px=int(ttl_seconds * 1000)))

    def _sticky_key(self, digest: bytes) -> str:
        return f"{self._prefix}:sticky:{digest.hex()}"

    # -- stored Responses ------------------------------------------------------------------------

    async def response_get(self, response_id: str) -> str | None:
        value = await self._call(lambda: self._client.get(f"{self._prefix}:response:{response_id}"))
        return value if isinstance(value, str) else None  # decode_responses: never bytes

    async def response_set(self, response_id: str, value: str, ttl_seconds: float) -> None:
        key = f"{self._prefix}:response:{response_id}"
        await self._call(lambda: self._client.set(key, value, px=int(ttl_seconds * 1000)))

    async def response_delete(self, response_id: str) -> None:
        await self._call(lambda: self._client.delete(f"{self._prefix}:response:{response_id}"))

    # -- scripts -----------------------------------------------------------------------------------

    async def _script(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """Run ``script`` by its digest (sent in full only when Redis does not know it yet), within
        ``state.timeout_seconds``, on a connection of its own.

        The request path's one Redis call: taking a connection from this LIFO list instead of the
        client's pool, with one deadline instead of one per socket read, costs about a third of the
        client CPU of ``Redis.evalsha`` (measured: 16-19 us against 50-57 us per call).
        """
        conn = self._idle.pop() if self._idle else self._script_connection()
        try:
            async with asyncio.timeout(self._timeout):
                if not conn.is_connected:
                    await conn.connect()
                try:
                    await conn.send_packed_command(
                        conn.pack_command("EVALSHA", _sha1(script), len(keys), *keys, *args), check_health=False
                    )
                    reply = await conn.read_response()
                except self._no_script:  # a Redis that restarted or flushed its scripts: EVAL loads it again
                    await conn.send_packed_command(conn.pack_command("EVAL", script, len(keys), *keys, *args), check_health=False)
                    reply = await conn.read_response()
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        if len(self._idle) < _MAX_IDLE:
            self._idle.append(conn)
        else:
            await conn.disconnect()
        return reply

    async def _drop_connections(self) -> None:
        """Close the idle connections (all of them dead when Redis restarted)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.disconnect(nowait=True)
        await self._client.connection_pool.disconnect(inuse_connections=False)

    # -- restarts -------------------------------------------------------------------------------

    async def watch(self, lost: Callable[[], None], back: Callable[[], None]) -> None:
        """Keep one connection blocked on Redis (``BLPOP`` of a list nobody fills); call ``lost()``
        each time it ends (the server went away, and whatever it held may be gone with it) and
        ``back()`` once it is blocked again.

        A Redis restarted within a second is otherwise noticed only at this replica's next call,
        while its budget shares, granted by the Redis that went away, may still be spent, and the
        spend it settled since its last trade is unknown to the new Redis; the other replicas'
        trades with the new Redis cannot count either.
        """
        key = f"{self._prefix}:watch"
        was_lost = False
        while True:
            conn = self._script_connection()
            blocked = False
            try:
                await conn.connect()
                while True:  # nothing is pushed: a call returns only when the connection ends
                    await conn.send_packed_command(conn.pack_command("BLPOP", key, 0), check_health=False)
                    if was_lost:
                        was_lost = False
                        back()
                    blocked = True
                    await conn.read_response()
            except self._errors:
                pass
            finally:
                await conn.disconnect(nowait=True)
            if blocked:
                was_lost = True
                lost()
            await asyncio.sleep(0.25)

    # -- availability ----------------------------------------------------------------------------

    async def _call(self, run: Callable[[], Awaitable[T]]) -> T:
        if not self.up:
            raise StateUnavailableError("Redis is down")
        try:
            try:
                return await run()
            except self._broken:
                # A pooled socket to a Redis that restarted: the idle others are as dead. Drop them and
                # retry once, at once (not after a timeout: a slow Redis must not hold requests twice as long).
                await self._drop_connections()
                return await run()
        except self._errors as exc:
            self._mark(False, exc)
            raise StateUnavailableError(f"Redis: {type(exc).__name__}") from exc

    def _mark(self, up: bool, error: BaseException | None = None) -> None:
        if up == self.up:
            return
        self.up = up
        if up:
            log.warning("shared state: Redis is reachable again")
        else:
            log.error("shared state: Redis is unreachable (%s); probing it every second", type(error).__name__)
            self._probe = asyncio.get_running_loop().create_task(self._wait_for_redis())
        if self._on_change is not None:
            self._on_change(up)
        for listener in self._listeners:
            listener(up)

    async def _wait_for_redis(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                await self._client.ping()
            except self._errors:
                continue
            await self._drop_connections()  # sockets to the Redis that went away are dead
            self._mark(True)
            return

    async def aclose(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
        await self._drop_connections()
        await self._client.aclose()


@cache
def _sha1(script: str) -> str:
    """The digest by which Redis knows a script (``EVALSHA``)."""
    return hashlib.sha1(script.encode()).hexdigest()
