"""``python -m bench.run --fleet``: what sharing state through Redis costs, and what a second replica buys.

Starts the mock upstream, a redis-server and llm-router replicas (one worker each, each in its own
directory with its own ledger, as on separate machines) on ``config/router.yaml`` plus a global
rate limit high enough never to refuse, so every request takes its rate-limit buckets and its
budget share from the state under test:

- concurrency 1, non-stream: one replica with local state against one replica with Redis, in
  alternating rounds: the added p50 of shared state (target <= +150 us), as the median over the
  rounds of the difference within a round (steadier than the difference of medians on a machine
  whose load comes and goes).
  The limit is far from reached, so requests are admitted from rate-limit leases; a third replica
  with leases off (``state.rate_limit_lease: 0``) shows what one round trip per request adds;
- concurrency 64, non-stream: one replica with Redis against two replicas with Redis, the load
  split evenly between them (a load balancer's job): throughput.
"""

from __future__ import annotations

import shutil
import statistics
import sys
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from bench import procstat
from bench.loadgen import LoadResult
from bench.mock_upstream import MockConfig
from bench.run import LoadProcess
from bench.servers import REPO, Server, llm_router, mock_upstream, redis_server

#: Never refuses (the benchmark measures the cost of asking, not refusals).
RATE_LIMIT = "rate_limits: [{scope: global, rpm: 1000000000, tpm: 1000000000000}]"


@dataclass
class FleetResult:
    #: The p50 of each c=1 round.
    p50s_local_ms: list[float]
    p50s_shared_ms: list[float]
    #: Every request asks Redis (leases off): one round trip each.
    p50s_round_trip_ms: list[float]
    #: The gateway process's CPU per request at c=1: steadier than latency on a busy machine.
    cpu_local_ms: float
    cpu_shared_ms: float
    cpu_round_trip_ms: float
    rps_one_replica: float
    rps_two_replicas: float
    rounds: int

    @property
    def added_p50_us(self) -> float:
        return _added_us(self.p50s_shared_ms, self.p50s_local_ms)

    @property
    def round_trip_p50_us(self) -> float:
        return _added_us(self.p50s_round_trip_ms, self.p50s_local_ms)


def _added_us(side: list[float], local: list[float]) -> float:
    return statistics.median(s - l for s, l in zip(side, local, strict=True)) * 1000


def fleet_config(log_dir: Path, *, leases: bool = True) -> Path:
    """config/router.yaml with the always-admitting rate limit (and rate-limit leases on or off),
    next to its vocabulary file."""
    text = (REPO / "config" / "router.yaml").read_text()
    state = "  on_failure: open"
    assert "rate_limits: []" in text and state in text, "config/router.yaml changed: update bench/fleet.py"
    text = text.replace("rate_limits: []", RATE_LIMIT)
    if not leases:
        text = text.replace(state, "  rate_limit_lease: 0\n" + state)
    config = log_dir / ("fleet-router.yaml" if leases else "fleet-router-no-leases.yaml")
    config.write_text(text)
    shutil.copy(REPO / "config" / "tasks.yaml", log_dir / "tasks.yaml")
    shutil.copytree(REPO / "config" / "models", log_dir / "models", dirs_exist_ok=True)
    return config


def load(servers: list[Server], concurrency: int, duration: float, warmup: float, log_file: Path) -> list[LoadResult]:
    """Load every server at once, ``concurrency`` split evenly between them."""
    return [result for result, _ in load_with_cpu(servers, concurrency, duration, warmup, log_file)]


def load_with_cpu(
    servers: list[Server], concurrency: int, duration: float, warmup: float, log_file: Path
) -> list[tuple[LoadResult, float]]:
    """``load``, with each server's CPU milliseconds per completed request over the window."""
    with log_file.open("ab") as log:
        loads = [LoadProcess(s, False, concurrency // len(servers), duration, warmup, log) for s in servers]
        for process in loads:
            process.wait_phase("start")
        before = [procstat.cpu_seconds(s.pid) for s in servers]
        for process in loads:
            process.wait_phase("end")
        spent = [procstat.cpu_seconds(s.pid) - cpu for s, cpu in zip(servers, before, strict=True)]
        results = [process.result() for process in loads]
    return [(r, 1000 * cpu / r.requests if r.requests else 0.0) for r, cpu in zip(results, spent, strict=True)]


def run(log_dir: Path, duration: float, warmup: float, rounds: int = 9) -> FleetResult:
    log_dir.mkdir(parents=True, exist_ok=True)
    config = fleet_config(log_dir)
    no_leases = fleet_config(log_dir, leases=False)
    loadgen_log = log_dir / "fleet-loadgen.log"
    with ExitStack() as stack:
        mock = stack.enter_context(mock_upstream(MockConfig(), log_dir))
        redis_url = stack.enter_context(redis_server(log_dir))

        def replica(name: str, config: Path = config, **env: str) -> Server:
            home = log_dir / name
            home.mkdir(exist_ok=True)
            return stack.enter_context(llm_router(mock, home, 1, config=config, name=name, **env))

        local = replica("local")
        shared = replica("shared-a", REDIS_URL=redis_url)
        second = replica("shared-b", REDIS_URL=redis_url)
        asking = replica("shared-no-leases", no_leases, REDIS_URL=redis_url)
        for server in (local, shared, second, asking):  # warm up: imports, pools, first budget shares
            load([server], 4, 1.0, 0.0, loadgen_log)
        rounds_local: list[tuple[LoadResult, float]] = []
        rounds_shared: list[tuple[LoadResult, float]] = []
        rounds_asking: list[tuple[LoadResult, float]] = []
        sides = [(local, rounds_local), (shared, rounds_shared), (asking, rounds_asking)]
        for round_ in range(rounds):  # alternating (in turns), so a busy spell of the machine hits every side
            print(f"   fleet: c=1 round {round_ + 1}/{rounds}", file=sys.stderr, flush=True)
            for server, results in sides[round_ % 3:] + sides[:round_ % 3]:
                results += load_with_cpu([server], 1, duration, warmup, loadgen_log)
        print("   fleet: c=64, one replica then two", file=sys.stderr, flush=True)
        one = load([shared], 64, duration, warmup, loadgen_log)
        two = load([shared, second], 64, duration, warmup, loadgen_log)
    return FleetResult(
        p50s_local_ms=[r.latency_ms.p50 for r, _ in rounds_local],
        p50s_shared_ms=[r.latency_ms.p50 for r, _ in rounds_shared],
        p50s_round_trip_ms=[r.latency_ms.p50 for r, _ in rounds_asking],
        cpu_local_ms=statistics.median(cpu for _, cpu in rounds_local),
        cpu_shared_ms=statistics.median(cpu for _, cpu in rounds_shared),
        cpu_round_trip_ms=statistics.median(cpu for _, cpu in rounds_asking),
        rps_one_replica=sum(r.rps for r in one),
        rps_two_replicas=sum(r.rps for r in two),
        rounds=rounds,
    )


def report(result: FleetResult) -> list[str]:
    verdict = "PASS" if result.added_p50_us <= 150 else "FAIL"
    return [
        "fleet mode (replicas with 1 worker each; non-stream; mock upstream; Redis on loopback)",
        f"  c=1   p50 local state {statistics.median(result.p50s_local_ms):.3f} ms, "
        f"Redis {statistics.median(result.p50s_shared_ms):.3f} ms (median of {result.rounds} rounds each)",
        f"{verdict}  added p50 of shared state at c=1 <= 150 us: {result.added_p50_us:+.0f} us "
        "(median of the rounds' differences)",
        f"  c=1   p50 with leases off (a round trip per request) {statistics.median(result.p50s_round_trip_ms):.3f} ms "
        f"({result.round_trip_p50_us:+.0f} us)",
        f"  c=1   gateway CPU per request: local {result.cpu_local_ms:.3f} ms, Redis {result.cpu_shared_ms:.3f} ms "
        f"({(result.cpu_shared_ms - result.cpu_local_ms) * 1000:+.0f} us), leases off {result.cpu_round_trip_ms:.3f} ms "
        f"({(result.cpu_round_trip_ms - result.cpu_local_ms) * 1000:+.0f} us)",
        f"  c=64  throughput 1 replica {result.rps_one_replica:.0f} req/s, 2 replicas {result.rps_two_replicas:.0f} req/s "
        f"({result.rps_two_replicas / result.rps_one_replica:.2f}x)",
    ]


def main(log_dir: Path, output: Path, duration: float, warmup: float) -> int:
    result = run(log_dir, duration, warmup)
    print("\n".join(report(result)))
    summary = {**asdict(result), "added_p50_us": result.added_p50_us, "round_trip_p50_us": result.round_trip_p50_us}
    output.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    print(f"(results in {output})")
    return 0
