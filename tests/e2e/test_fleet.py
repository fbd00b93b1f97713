"""Fleet mode: several ``llm-router serve`` replicas sharing budgets and rate limits through a real redis-server.

Each replica has its own SQLite ledger, as on separate machines; only Redis is shared. The
client is the openai SDK; requests alternate between the replicas as a load balancer would send them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import openai
import pytest

from router.simulator import SimProfile, create_simulator_app
from router.ledger import LedgerRow
from router.ledger_pg import LedgerUnavailableError, PostgresLedger
from tests.e2e.conftest import ADMIN_KEY, CLIENT_KEY, ENV, UPSTREAM_KEY, write_config
from tests.e2e.processes import Postgres, Process, RedisServer, gateway_process, postgres_server, redis_server, wait_until
from tests.servers import serve

ASK = [{"role": "user", "content": "What are your opening hours on Saturday?"}]
FLAGSHIP_PRICE = (2.0, 8.0)


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[str, str]]:
    mid = create_simulator_app(SimProfile(name="mid", model="sim-mid-7b", ttft=0.2, token_interval=0.0))
    flagship = create_simulator_app(SimProfile(name="flagship", model="sim-flagship", ttft=0.2, token_interval=0.0,
                                               context_window=200000, api_key=UPSTREAM_KEY))
    with serve(mid) as mid_url, serve(flagship) as flagship_url:
        yield mid_url, flagship_url


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path) as server:
        yield server


def replicas(tmp_path: Path, upstreams: tuple[str, str], redis_url: str, policy: str, count: int = 2,
             on_failure: str = "open") -> tuple[ExitStack, list[Process]]:
    """``count`` replicas, each in its own directory with its own ledger, sharing ``redis_url``."""
    stack = ExitStack()
    processes = []
    for i in range(count):
        home = tmp_path / f"replica{i}"
        home.mkdir()
        config = home / "router.yaml"
        write_config(config, *upstreams, policy=policy)
        config.write_text(config.read_text() + f"state: {{redis_url: {redis_url}, on_failure: {on_failure}}}\n")
        processes.append(stack.enter_context(gateway_process(config, ENV)))
    return stack, processes


async def spread(urls: list[str], requests: int, **extra: object) -> list[openai.APIStatusError | float]:
    """``requests`` at once, round-robin over ``urls``; each outcome is the answer's cost or the SDK's error."""
    clients = [openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=60) for url in urls]
    rotation = itertools.cycle(clients)

    async def one(client: openai.AsyncOpenAI) -> openai.APIStatusError | float:
        try:
            raw = await client.chat.completions.with_raw_response.create(model="flagship", messages=ASK, **extra)  # type: ignore[arg-type]
        except openai.APIStatusError as exc:
            return exc
        return float(raw.headers["x-router-cost-usd"])

    try:
        return await asyncio.gather(*(one(next(rotation)) for _ in range(requests)))
    finally:
        for client in clients:
            await client.close()


def test_a_budget_hammered_through_two_replicas_is_not_overrun(tmp_path: Path, upstreams: tuple[str, str],
                                                               redis: RedisServer) -> None:
    """Before: each replica enforced the budget alone ($1.94 served against $1.00 in the issue)."""
    budget = 0.05
    policy = f"  budgets:\n    limits:\n      - {{scope: tenant, name: acme, daily_usd: {budget}, action: reject}}\n"
    stack, gateways = replicas(tmp_path, upstreams, redis.url, policy)
    with stack:
        outcomes = asyncio.run(spread([g.url for g in gateways], 200, max_tokens=64))
    costs = [o for o in outcomes if isinstance(o, float)]
    refused = [o for o in outcomes if not isinstance(o, float)]
    assert costs and refused
    assert all(e.status_code == 429 and e.code == "budget_exceeded" for e in refused)
    one_estimate = (40 * FLAGSHIP_PRICE[0] + 64 * FLAGSHIP_PRICE[1]) / 1e6
    assert sum(costs) <= budget + one_estimate, f"${sum(costs):.4f} served against ${budget}"
    assert sum(costs) > budget / 2  # the shares were not left stranded


async def burst(urls: list[str], requests: int) -> list[httpx.Response]:
    """``requests`` small requests of tenant acme at once (so a minute's refill does not blur a count), alternating over ``urls``."""
    async with httpx.AsyncClient(timeout=30) as client:
        return await asyncio.gather(*(
            client.post(f"{urls[i % len(urls)]}/v1/chat/completions", headers={"authorization": f"Bearer {CLIENT_KEY}"},
                        json={"model": "mid", "messages": ASK, "max_tokens": 8})
            for i in range(requests)
        ))


def burst_through_replicas(tmp_path: Path, upstreams: tuple[str, str], redis: RedisServer,
                           policy: str) -> tuple[list[httpx.Response], list[httpx.Response]]:
    """60 requests at once through two replicas under ``policy``: the answers served and those refused,
    checked to be OpenAI's 429 ``rate_limit_exceeded`` with ``retry-after``."""
    stack, gateways = replicas(tmp_path, upstreams, redis.url, policy)
    with stack:
        answers = asyncio.run(burst([g.url for g in gateways], 60))
    served = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code != 200]
    assert refused and {a.status_code for a in refused} == {429}
    for answer in refused:
        assert answer.json()["error"]["code"] == "rate_limit_exceeded"
        assert int(answer.headers["retry-after"]) >= 1
    return served, refused


def test_a_30_per_minute_limit_is_exact_across_replicas(tmp_path: Path, upstreams: tuple[str, str],
                                                        redis: RedisServer) -> None:
    served, refused = burst_through_replicas(tmp_path, upstreams, redis, "  rate_limits:\n    - {scope: tenant, name: acme, rpm: 30}\n")
    assert 29 <= len(served) <= 31
    for answer in served + refused:  # OpenAI's headers on every answer of the limited tenant
        assert answer.headers["x-ratelimit-limit-requests"] == "30"
        assert int(answer.headers["x-ratelimit-remaining-requests"]) >= 0
        assert answer.headers["x-ratelimit-reset-requests"].endswith("s")
    assert min(int(a.headers["x-ratelimit-remaining-requests"]) for a in served) == 0
    assert max(int(a.headers["x-ratelimit-remaining-requests"]) for a in served) == 29
    assert {a.headers["x-ratelimit-remaining-requests"] for a in refused} == {"0"}


def test_a_token_limit_holds_across_replicas_with_token_headers(tmp_path: Path, upstreams: tuple[str, str],
                                                               redis: RedisServer) -> None:
    """tpm: each request reserves its estimate (prompt + max_tokens) and settles its usage later, so the
    tokens answered never pass the limit by more than one request's estimate, across replicas."""
    served, refused = burst_through_replicas(tmp_path, upstreams, redis, "  rate_limits:\n    - {scope: tenant, name: acme, tpm: 600}\n")
    used = sum(a.json()["usage"]["total_tokens"] for a in served)
    one_estimate = 40 + 8  # a generous prompt estimate for ASK, plus max_tokens
    assert 300 <= used <= 600 + one_estimate, used
    for answer in served + refused:
        assert answer.headers["x-ratelimit-limit-tokens"] == "600"
        assert int(answer.headers["x-ratelimit-remaining-tokens"]) >= 0
        assert answer.headers["x-ratelimit-reset-tokens"].endswith("s")


def test_leases_never_admit_beyond_a_limit_across_replicas(tmp_path: Path, upstreams: tuple[str, str],
                                                           redis: RedisServer) -> None:
    """120 a minute lends each replica 1.2 requests ahead while the bucket is at most half used."""
    policy = "  rate_limits:\n    - {scope: tenant, name: acme, rpm: 120}\n"
    stack, gateways = replicas(tmp_path, upstreams, redis.url, policy)
    with stack:
        started = time.monotonic()
        answers = asyncio.run(burst([g.url for g in gateways], 240))
        refill = (time.monotonic() - started) * 120 / 60  # what the bucket regained while they were served
    served = len([a for a in answers if a.status_code == 200])
    assert {a.status_code for a in answers} == {200, 429}
    assert 120 - 2 * 1.2 - 1 <= served <= 120 + refill + 1  # early by at most the leases held, never beyond


def test_redis_killed_mid_traffic_gives_no_5xx_in_open_mode(tmp_path: Path, upstreams: tuple[str, str],
                                                            redis: RedisServer) -> None:
    policy = ("  budgets:\n    limits:\n      - {scope: tenant, name: acme, daily_usd: 100, action: reject}\n"
              "  rate_limits:\n    - {scope: tenant, name: acme, rpm: 100000}\n")
    stack, gateways = replicas(tmp_path, upstreams, redis.url, policy)
    urls = [g.url for g in gateways]
    async def kill_redis_under(requests: int) -> list[openai.APIStatusError | float]:
        """``requests`` at once, and Redis killed while they are in flight."""
        traffic = asyncio.create_task(spread(urls, requests, max_tokens=8))
        await asyncio.sleep(0.2)
        await asyncio.to_thread(redis.stop)
        return await traffic

    with stack:
        before = asyncio.run(spread(urls, 20, max_tokens=8))
        during = asyncio.run(kill_redis_under(200)) + asyncio.run(spread(urls, 40, max_tokens=8))
        gauges = [_gauge(url, "llm_router_state_backend_up") for url in urls]
        redis.start()
        for url in urls:  # the probe pings every second
            wait_until(lambda url=url: _gauge(url, "llm_router_state_backend_up") == 1.0, 15, "Redis seen again")
        after = asyncio.run(spread(urls, 20, max_tokens=8))
        logs = [g.tail() for g in gateways]
    for outcome in (*before, *during, *after):
        assert isinstance(outcome, float), outcome
    assert gauges == [0.0, 0.0]
    for log in logs:
        assert log.count("Redis is unreachable") == 1 and log.count("Redis is reachable again") == 1


def test_closed_mode_refuses_budgeted_requests_while_redis_is_down(tmp_path: Path, upstreams: tuple[str, str],
                                                                   redis: RedisServer) -> None:
    policy = "  budgets:\n    limits:\n      - {scope: tenant, name: acme, daily_usd: 100, action: reject}\n"
    stack, gateways = replicas(tmp_path, upstreams, redis.url, policy, count=1, on_failure="closed")
    with stack:
        redis.stop()  # the replica holds no share yet: its first budgeted request must ask Redis
        outcomes = asyncio.run(spread([gateways[0].url], 5, max_tokens=8))
    statuses = {o.status_code for o in outcomes if not isinstance(o, float)}
    assert statuses == {503}, outcomes


def _gauge(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exported by {url}")


def test_a_redis_that_restarts_empty_is_restored_and_the_budget_still_holds(
    tmp_path: Path, upstreams: tuple[str, str], redis: RedisServer
) -> None:
    budget = 0.05
    policy = f"  budgets:\n    limits:\n      - {{scope: tenant, name: acme, daily_usd: {budget}, action: reject}}\n"
    stack, gateways = replicas(tmp_path, upstreams, redis.url, policy)
    urls = [g.url for g in gateways]
    with stack:
        first = asyncio.run(spread(urls, 40, max_tokens=64))  # about half the budget
        redis.stop()
        redis.start()  # empty: no save, no append-only file
        for url in urls:
            wait_until(lambda url=url: _gauge(url, "llm_router_state_backend_up") == 1.0, 15, "Redis seen again")
        second = asyncio.run(spread(urls, 200, max_tokens=64))
    costs = [o for o in (*first, *second) if isinstance(o, float)]
    one_estimate = (40 * FLAGSHIP_PRICE[0] + 64 * FLAGSHIP_PRICE[1]) / 1e6
    assert len([o for o in first if isinstance(o, float)]) == 40
    assert sum(costs) <= budget + one_estimate, f"${sum(costs):.4f} served against ${budget} across a Redis restart"


def test_an_escalated_conversation_sticks_on_another_replica(tmp_path: Path, upstreams: tuple[str, str],
                                                             redis: RedisServer) -> None:
    stack, (a, b) = replicas(tmp_path, upstreams, redis.url, "")
    with stack:
        first = openai.OpenAI(base_url=f"{a.url}/v1", api_key=CLIENT_KEY, max_retries=0).chat.completions.create(
            model="flagship", messages=ASK)
        follow_up = [*ASK, {"role": "assistant", "content": first.choices[0].message.content},
                     {"role": "user", "content": "and on Sunday?"}]
        time.sleep(0.2)  # replica a records the conversation in Redis after it answered
        raw = openai.OpenAI(base_url=f"{b.url}/v1", api_key=CLIENT_KEY, max_retries=0).chat.completions.with_raw_response.create(
            model="auto", messages=follow_up)
    assert raw.headers["x-router-tier"] == "flagship"
    assert raw.headers["x-router-rerouted"] == "sticky"


def test_a_request_costs_one_redis_round_trip(tmp_path: Path, upstreams: tuple[str, str], redis: RedisServer) -> None:
    """Its rate limits and its conversation's sticky tier in one script call; settlements and budget
    trades happen in the background."""
    import redis as redis_client

    policy = "  rate_limits:\n    - {scope: tenant, name: acme, rpm: 1000, tpm: 1000000}\n"
    stack, (gateway,) = replicas(tmp_path, upstreams, redis.url, policy, count=1)
    conversation = [*ASK, {"role": "assistant", "content": "From 9 to 5."}, {"role": "user", "content": "And on Sunday?"}]
    with stack, redis_client.Redis(port=redis.port) as monitor:
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=CLIENT_KEY, max_retries=0)
        client.chat.completions.create(model="auto", messages=conversation)  # connections open, scripts loaded
        monitor.config_set("slowlog-log-slower-than", 0)  # log every command
        monitor.config_set("slowlog-max-len", 10000)
        monitor.slowlog_reset()
        for _ in range(5):
            client.chat.completions.create(model="auto", messages=conversation)  # mid by the rules: may stick
        entries = monitor.slowlog_get(10000)
    # What the gateway sent (the commands a script runs inside Redis are logged from the address "?:0").
    gateways = [e["command"].decode() for e in entries if e["client_address"] != b"?:0" and b"llm-router:" in e["command"]]
    background = [c for c in gateways if ":budget:" in c or ":sticky:" not in c]  # trades, settlement flushes
    in_line = [c for c in gateways if c not in background]
    assert len(in_line) == 5, in_line
    for command in in_line:
        assert command.startswith("EVALSHA ")
        assert ":rate:tenant:acme:requests" in command and ":rate:tenant:acme:tokens" in command


def test_a_follow_up_that_cannot_escalate_asks_redis_nothing(tmp_path: Path, upstreams: tuple[str, str],
                                                             redis: RedisServer) -> None:
    """Stickiness only moves a conversation up: a follow-up the rules already send to the top tier, or
    that names its model, makes no round trip (no rate limit applies here)."""
    import redis as redis_client

    stack, (gateway,) = replicas(tmp_path, upstreams, redis.url, "", count=1)
    hard = [*ASK, {"role": "assistant", "content": "From 9 to 5."}, {"role": "user", "content": "Prove that sqrt(2) is irrational."}]
    easy = [*ASK, {"role": "assistant", "content": "From 9 to 5."}, {"role": "user", "content": "And on Sunday?"}]
    with stack, redis_client.Redis(port=redis.port) as monitor:
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=CLIENT_KEY, max_retries=0)
        client.chat.completions.create(model="auto", messages=easy)  # connections open, scripts loaded
        time.sleep(0.3)  # background budget trades of the first request
        monitor.config_set("slowlog-log-slower-than", 0)
        monitor.config_set("slowlog-max-len", 10000)
        monitor.slowlog_reset()
        tiers = [client.chat.completions.with_raw_response.create(model=model, messages=messages).headers["x-router-tier"]
                 for model, messages in (("auto", hard), ("mid", easy), ("auto", easy))]
        entries = monitor.slowlog_get(10000)
    commands = [e["command"].decode() for e in entries if e["client_address"] != b"?:0"]
    asked = [c for c in commands if c.startswith("EVALSHA ") and ":sticky:" in c]  # (a SET records the escalation)
    assert tiers == ["flagship", "mid", "mid"]
    assert len(asked) == 1, asked  # only the follow-up the rules sent to mid


def test_requests_far_from_their_limit_are_admitted_from_leases(tmp_path: Path, upstreams: tuple[str, str],
                                                                redis: RedisServer) -> None:
    """No round trip per request while the limit is far: the first takes a lease of 60 requests."""
    import redis as redis_client

    policy = "  rate_limits:\n    - {scope: tenant, name: acme, rpm: 6000}\n"
    stack, (gateway,) = replicas(tmp_path, upstreams, redis.url, policy, count=1)
    key = "llm-router:rate:tenant:acme:requests"
    with stack, redis_client.Redis(port=redis.port) as monitor:
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=CLIENT_KEY, max_retries=0)
        monitor.config_set("slowlog-log-slower-than", 0)
        monitor.config_set("slowlog-max-len", 10000)
        monitor.slowlog_reset()
        for _ in range(20):
            client.chat.completions.create(model="mid", messages=ASK)
        entries = monitor.slowlog_get(10000)
    admissions = [e for e in entries if e["command"].startswith(b"EVALSHA ") and key.encode() in e["command"]
                  and e["client_address"] != b"?:0" and b" 6000 1.0 " in e["command"]]
    assert 1 <= len(admissions) <= 10  # one more after each once-a-second give-back


def test_a_stored_response_is_continued_read_and_deleted_through_another_replica(
        tmp_path: Path, upstreams: tuple[str, str], redis: RedisServer) -> None:
    stack, (a, b) = replicas(tmp_path, upstreams, redis.url, "")  # each keeps its own responses in memory
    with stack:
        on_a = openai.OpenAI(base_url=f"{a.url}/v1", api_key=CLIENT_KEY, max_retries=0)
        on_b = openai.OpenAI(base_url=f"{b.url}/v1", api_key=CLIENT_KEY, max_retries=0)
        first = on_a.responses.create(model="flagship", input="What is the capital of France?")
        time.sleep(0.2)  # replica a writes the response to Redis after it answered
        raw = on_b.responses.with_raw_response.create(model="auto", input="And of Spain?",
                                                      previous_response_id=first.id)
        assert raw.headers["x-router-tier"] == "flagship"  # the conversation's tier, as replica a recorded it
        assert raw.headers["x-router-rerouted"] == "sticky"
        follow_up = raw.parse()
        assert follow_up.status == "completed"
        assert on_b.responses.retrieve(first.id).output_text == first.output_text
        time.sleep(0.2)  # and replica b the follow-up
        listed = [item.id for item in on_a.responses.input_items.list(follow_up.id, order="asc")]
        assert listed == [*(item.id for item in on_b.responses.input_items.list(first.id)), first.output[0].id,
                          on_b.responses.input_items.list(follow_up.id).first_id]
        on_b.responses.delete(first.id)
        with pytest.raises(openai.NotFoundError):
            on_a.responses.retrieve(first.id)  # a still holds its copy, but the fleet's store says deleted


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    with postgres_server() as server:
        yield server


def test_replicas_share_one_postgres_ledger_and_agree_on_spend(tmp_path: Path, upstreams: tuple[str, str],
                                                               redis: RedisServer, postgres: Postgres) -> None:
    env = {**ENV, "ROUTER_LEDGER_URL": postgres.url}
    stack = ExitStack()
    gateways = []
    for i in range(2):
        home = tmp_path / f"replica{i}"
        home.mkdir()
        config = home / "router.yaml"
        write_config(config, *upstreams)
        text = config.read_text().replace("  ledger: {path:", "  ledger: {url: '${ROUTER_LEDGER_URL}', path:")
        config.write_text(text + f"state: {{redis_url: {redis.url}}}\n")
        gateways.append(stack.enter_context(gateway_process(config, env)))
    with stack:
        outcomes = asyncio.run(spread([g.url for g in gateways], 30, max_tokens=16))
        answered = sum(o for o in outcomes if isinstance(o, float))
        assert all(isinstance(o, float) for o in outcomes)
        time.sleep(0.6)  # the writers commit every 0.2 s
        reports = [httpx.get(f"{g.url}/v1/router/spend", headers={"authorization": f"Bearer {ADMIN_KEY}"}).json()
                   for g in gateways]
    assert reports[0] == reports[1]
    assert reports[0]["total_usd"] == pytest.approx(answered)
    assert sum(r["requests"] for r in reports[0]["data"]) == 30


def test_postgres_down_buffers_rows_and_writes_them_when_it_returns(postgres: Postgres) -> None:
    """Unit-level with a real server: the writer keeps rows while PostgreSQL is down, counts them, writes them later."""
    url = postgres.url
    ledger = PostgresLedger(url, buffer_rows=50)
    row = LedgerRow(ts=time.time(), request_id="r0", tenant="acme", key=None, backend="mid", tier="mid", model="m",
                    input_tokens=1, output_tokens=2, cost_usd=0.5, estimated=False, status=200, latency_ms=1.0,
                    attempts=1, fallback=None)
    ledger.record(row)
    assert ledger.flush(5)
    postgres.stop()
    for i in range(1, 61):
        ledger.record(dataclasses.replace(row, request_id=f"r{i}"))
    assert not ledger.flush(0.5)
    assert ledger.buffered == 50 and ledger.dropped == 10  # bounded: the oldest ten went (and /metrics says so)
    with pytest.raises(LedgerUnavailableError):  # a read says so (the API answers 503), it does not hang
        ledger.spend()
    late = PostgresLedger(url)  # a replica starting while PostgreSQL is down serves, and buffers
    late.record(dataclasses.replace(row, request_id="late"))
    postgres.start()
    assert ledger.flush(10)
    assert ledger.buffered == 0
    assert late.flush(10)  # migrated the schema once PostgreSQL was back, then wrote
    assert sum(r["requests"] for r in ledger.spend()) == 52
    late.close()
    ledger.close()


def test_a_killed_replicas_calls_in_flight_are_billed_at_their_estimate(postgres: Postgres) -> None:
    """Write-ahead rows: a call that started and never ended (its process died) is billed once stale;
    one that ended replaces its row; one that ended with nothing to bill leaves none."""
    dead = PostgresLedger(postgres.url)
    row = LedgerRow(ts=time.time() - 10, request_id="in-flight", tenant="acme", key=None, backend="mid", tier="mid",
                    model="m", input_tokens=10, output_tokens=0, cost_usd=0.25, estimated=True, status=0,
                    latency_ms=0.0, attempts=1, fallback=None)
    dead.begin(row)
    dead.begin(dataclasses.replace(row, request_id="answered"))
    dead.record(dataclasses.replace(row, request_id="answered", output_tokens=5, cost_usd=0.1, status=200))
    dead.begin(dataclasses.replace(row, request_id="refused"))
    dead.discard("refused")
    assert dead.flush(5)
    assert {r["status"]: r["requests"] for r in dead.spend(group_by=("status",))} == {200: 1}  # pending is not spend
    survivor = PostgresLedger(postgres.url, stale_after=5.0)  # the dead one's row is 10 s old
    survivor.record(dataclasses.replace(row, request_id="next", ts=time.time(), status=200))
    assert survivor.flush(5)
    billed = {r["status"]: (r["requests"], r["cost_usd"]) for r in survivor.spend(group_by=("status",))}
    assert billed == {0: (1, 0.25), 200: (2, pytest.approx(0.35))}
    survivor.close()
    dead.close()


def test_kill_9_loses_at_most_the_last_flush_interval_of_rows(tmp_path: Path, upstreams: tuple[str, str],
                                                              postgres: Postgres) -> None:
    """A replica killed with SIGKILL under load: every row older than the writer's interval (0.2 s) is in
    PostgreSQL; what is missing was answered in the last moments before the kill."""
    config = tmp_path / "router.yaml"
    write_config(config, *upstreams)
    config.write_text(config.read_text().replace("  ledger: {path:", "  ledger: {url: '${ROUTER_LEDGER_URL}', path:"))
    answered: list[float] = []  # monotonic times of the answers

    async def load(url: str, stop: asyncio.Event) -> None:
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=10) as client:
            async def worker() -> None:
                while not stop.is_set():
                    try:
                        await client.chat.completions.create(model="mid", messages=ASK, max_tokens=8)
                    except openai.APIError:
                        return
                    answered.append(time.monotonic())
            await asyncio.gather(*(worker() for _ in range(8)))

    async def run(gateway: Process) -> float:
        stop = asyncio.Event()
        task = asyncio.create_task(load(gateway.url, stop))
        await asyncio.sleep(2.0)
        killed_at = time.monotonic()
        gateway.stop(signal.SIGKILL)
        stop.set()
        await task
        return killed_at

    with gateway_process(config, {**ENV, "ROUTER_LEDGER_URL": postgres.url}) as gateway:
        killed_at = asyncio.run(run(gateway))
    rows = sum(r["requests"] for r in PostgresLedger(postgres.url).spend())
    lost = len(answered) - rows
    late = sum(1 for t in answered if t > killed_at - 0.5)  # the flush interval plus a request's own latency
    print(f"kill -9 after {len(answered)} answers: {rows} rows in PostgreSQL, {lost} lost, {late} answered in the last 0.5 s")
    assert 0 <= lost <= late
