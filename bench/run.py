"""``python -m bench.run``: the gateway benchmark, in one run.

Starts the mock upstream, llm-router (2 workers) on it and, with ``--litellm``, LiteLLM proxy
with an equivalent one-model config; then, for non-stream and 20-chunk stream requests at each
concurrency, measures the mock directly and through each gateway back to back, so a cell's
comparison is not skewed by the machine drifting between phases. Prints one table (req/s,
p50/p99 latency, time to first byte, server CPU per request, overhead versus direct), the ratios
versus LiteLLM and the issue's targets, and writes everything to ``bench/results/latest.json``.

Each load runs in its own process (``bench.loadgen``), so the client's CPU never mixes with the
server's; CPU per request is the server's process tree (supervisor + workers) over the window.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import orjson

from bench import procstat
from bench.loadgen import LoadResult
from bench.mock_upstream import MockConfig
from bench.report import (
    MODES,
    Cell,
    Mode,
    Plan,
    Soak,
    TargetRun,
    mib,
    report,
    row,
    to_json,
)
from bench.servers import (
    LITELLM_SPEC,
    REPO,
    Server,
    ServerError,
    litellm_proxy,
    llm_router,
    mock_upstream,
)

RESULTS = REPO / "bench" / "results"


class LoadProcess:
    """A ``bench.loadgen`` subprocess; the caller reacts to its window's phases as they happen."""

    def __init__(
        self, server: Server, stream: bool, concurrency: int, duration: float, warmup: float, log: IO[bytes]
    ) -> None:
        cmd = [sys.executable, "-m", "bench.loadgen", "--url", server.chat_url, "--model", server.model]
        cmd += ["-c", str(concurrency), "--duration", str(duration), "--warmup", str(warmup)]
        if stream:
            cmd.append("--stream")
        self._proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=log)

    def wait_phase(self, phase: str) -> None:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            self._proc.wait()
            raise RuntimeError(f"load generator exited with {self._proc.returncode} before phase {phase!r}")
        got = orjson.loads(line).get("phase")
        if got != phase:
            raise RuntimeError(f"load generator: expected phase {phase!r}, got {line[:200]!r}")

    def result(self) -> LoadResult:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        self._proc.stdout.close()
        self._proc.wait()
        if not line:
            raise RuntimeError(f"load generator exited with {self._proc.returncode} without a result")
        return LoadResult.from_json(orjson.loads(line)["result"])


def measure(
    server: Server, upstream: Server, mode: Mode, concurrency: int, plan: Plan, run: TargetRun, log: IO[bytes]
) -> Cell:
    """One cell: load ``server`` and sample its process tree's CPU (and RSS) at the window's edges."""
    load = LoadProcess(server, mode == "stream", concurrency, plan.duration, plan.warmup, log)
    load.wait_phase("start")
    cpu0, up0, all0, steal0 = (
        procstat.cpu_seconds(server.pid),
        procstat.cpu_seconds(upstream.pid),
        procstat.machine_cpu_seconds(),
        procstat.stolen_cpu_seconds(),
    )
    if not run.cells:
        run.rss_start = procstat.rss_bytes(server.pid)
    load.wait_phase("end")
    cpu1, up1, all1, steal1 = (
        procstat.cpu_seconds(server.pid),
        procstat.cpu_seconds(upstream.pid),
        procstat.machine_cpu_seconds(),
        procstat.stolen_cpu_seconds(),
    )
    run.rss_end = procstat.rss_bytes(server.pid)
    result = load.result()
    ours = (cpu1 - cpu0) + (up1 - up0 if upstream.pid != server.pid else 0.0)
    other = (all1 - all0) - ours - result.client_cpu_pct / 100 * result.seconds
    cell = Cell(
        target=run.name,
        mode=mode,
        concurrency=concurrency,
        load=result,
        cpu_ms_per_req=1000 * (cpu1 - cpu0) / result.requests if result.requests else 0.0,
        server_cpu_pct=100 * (cpu1 - cpu0) / result.seconds,
        upstream_cpu_pct=100 * (up1 - up0) / result.seconds,
        other_cpu_pct=max(100 * other / result.seconds, 0.0),
        steal_pct=100 * (steal1 - steal0) / result.seconds,
    )
    run.cells.append(cell)
    return cell


@dataclass
class Target:
    """A gateway (or the mock itself) to measure."""

    run: TargetRun
    server: Server | None  #: None when it could not be started (``run.error`` says why).


def start_targets(
    stack: ExitStack, starters: list[tuple[str, Callable[[], AbstractContextManager[Server]]]], log: IO[bytes]
) -> list[Target]:
    """Start and prime every target, each stopped when ``stack`` closes; one that fails is reported, not measured."""
    targets = []
    for name, start in starters:
        run = TargetRun(name)
        server = None
        try:
            server = stack.enter_context(start())
            prime(server, log)
        except ServerError as exc:
            run.error = str(exc)
            print(f"   {name}: not measured: {exc}", file=sys.stderr, flush=True)
        targets.append(Target(run, server))
    return targets


def measure_cells(targets: list[Target], upstream: Server, plan: Plan, log: IO[bytes]) -> None:
    """Every cell on every target, the targets back to back within a cell."""
    for mode in plan.modes:
        for concurrency in plan.concurrency:
            print(f"== {mode} c={concurrency}", file=sys.stderr, flush=True)
            for target in targets:
                if target.server is not None:
                    cell = measure(target.server, upstream, mode, concurrency, plan, target.run, log)
                    print(f"   {row(cell, None)}", file=sys.stderr, flush=True)


def prime(server: Server, log: IO[bytes], seconds: float = 1.0) -> None:
    """Send unmeasured traffic first: servers warm up lazily (imports, pools, caches) on their first requests."""
    load = LoadProcess(server, False, 4, seconds, 0.0, log)
    load.wait_phase("start")
    load.wait_phase("end")
    load.result()


def run_soak(server: Server, seconds: float, plan: Plan, log: IO[bytes], concurrency: int = 64) -> Soak:
    """A long run at ``concurrency`` (half non-stream, half stream), sampling the server's RSS."""
    print(f"   soak: {seconds:.0f}s at concurrency {concurrency}", file=sys.stderr, flush=True)
    loads = [
        LoadProcess(server, stream, concurrency // 2, seconds, max(plan.warmup, 5.0), log) for stream in (False, True)
    ]
    for load in loads:
        load.wait_phase("start")
    began = time.monotonic()
    samples = [(0.0, procstat.rss_bytes(server.pid))]
    step = max(seconds / 10, 1.0)
    while (elapsed := time.monotonic() - began) + step < seconds:
        time.sleep(step - (elapsed % step))
        samples.append((time.monotonic() - began, procstat.rss_bytes(server.pid)))
        print(f"   soak: t={samples[-1][0]:.0f}s rss={mib(samples[-1][1])}", file=sys.stderr, flush=True)
    loads[0].wait_phase("end")
    samples.append((time.monotonic() - began, procstat.rss_bytes(server.pid)))
    loads[1].wait_phase("end")
    return Soak(seconds=seconds, rss=samples, loads=[load.result() for load in loads])


def _micro() -> dict[str, Any] | None:
    """The decision micro-benchmark, in its own process: a failure there must not lose the run's results."""
    done = subprocess.run([sys.executable, "-m", "bench.micro", "--json"], cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["(no output)"]
        print(f"micro-benchmark failed: {lines[-1]}", file=sys.stderr)
        return None
    result: dict[str, Any] = orjson.loads(done.stdout)
    return result


def _csv(kind: Callable[[str], object]) -> Callable[[str], tuple[object, ...]]:
    def parse(text: str) -> tuple[object, ...]:
        return tuple(kind(part.strip()) for part in text.split(",") if part.strip())

    return parse


def _mode(text: str) -> Mode:
    if text not in MODES:
        raise argparse.ArgumentTypeError(f"unknown mode {text!r}; use {', '.join(MODES)}")
    return text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short cells (2 s + 0.5 s warm-up): under a minute")
    parser.add_argument("--duration", type=float, help="measured seconds per cell (default 10; --quick 2)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per cell (default 2; --quick 0.5)")
    parser.add_argument("--concurrency", type=_csv(int), default=(1, 16, 64), help="default 1,16,64")
    parser.add_argument("--mode", type=_csv(_mode), default=MODES, help="default nonstream,stream")
    parser.add_argument(
        "--litellm", action="store_true", help="also measure LiteLLM proxy (installs it into a throwaway venv)"
    )
    parser.add_argument("--litellm-spec", default=LITELLM_SPEC, help=f"pip requirement (default {LITELLM_SPEC!r})")
    parser.add_argument("--no-router", action="store_true", help="skip llm-router (e.g. to check the harness alone)")
    parser.add_argument("--anthropic", action="store_true",
                        help="also llm-router through a kind: anthropic backend, and Anthropic's /v1/messages "
                        "in front of the mid (every request translated, one way or the other)")
    parser.add_argument(
        "--soak", type=float, default=0.0, metavar="S",
        help="then run llm-router S seconds at c=64 (on /v1/responses with --responses), printing RSS"
    )
    parser.add_argument(
        "--responses", action="store_true", help="also load llm-router's /v1/responses (target 'responses')"
    )
    parser.add_argument("--no-micro", action="store_true", help="skip the decision micro-benchmark (bench.micro)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of each gateway")
    parser.add_argument("--ttft", type=float, default=0.0, help="mock: seconds before the first token")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="mock: seconds between tokens")
    parser.add_argument("--fleet", action="store_true",
                        help="fleet mode instead: Redis-shared state against local, 1 vs 2 replicas (bench/fleet.py)")
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = Plan(
        modes=args.mode,
        concurrency=args.concurrency,
        duration=args.duration or (2.0 if args.quick else 10.0),
        warmup=args.warmup if args.warmup is not None else (0.5 if args.quick else 2.0),
        workers=args.workers,
        log_dir=args.output.parent / "logs",
    )
    plan.log_dir.mkdir(parents=True, exist_ok=True)
    for stale in plan.log_dir.rglob("*.sqlite3*"):  # a run starts from empty stores, as a fresh deployment
        stale.unlink()
    if args.fleet:
        from bench import fleet  # it builds on this module's LoadProcess

        return fleet.main(plan.log_dir, args.output.parent / "fleet.json", plan.duration, plan.warmup)
    began = time.monotonic()
    soak: Soak | None = None
    with ExitStack() as stack:
        log = stack.enter_context((plan.log_dir / "loadgen.log").open("wb"))
        mock = stack.enter_context(
            mock_upstream(MockConfig(ttft=args.ttft, chunk_delay=args.chunk_delay), plan.log_dir)
        )
        starters: list[tuple[str, Callable[[], AbstractContextManager[Server]]]] = [
            ("direct", lambda: nullcontext(mock))
        ]
        if not args.no_router:
            starters.append(("llm-router", lambda: llm_router(mock, plan.log_dir, plan.workers)))
        if args.anthropic:
            starters.append(("llm-router-claude", lambda: llm_router(mock, plan.log_dir, plan.workers, claude=True)))
            starters.append(
                ("llm-router-messages", lambda: llm_router(mock, plan.log_dir, plan.workers, messages=True))
            )
        if args.litellm:
            starters.append(("litellm", lambda: litellm_proxy(mock, plan.log_dir, args.litellm_spec, plan.workers)))
        targets = start_targets(stack, starters, log)
        router = next((t.server for t in targets if t.run.name == "llm-router" and t.server is not None), None)
        if args.responses and router is not None:  # the same gateway, measured right after its chat cells
            targets.append(Target(TargetRun("responses"), replace(router, name="responses", path="/v1/responses")))
        measure_cells(targets, mock, plan, log)
        if args.soak > 0 and router is not None:
            soaked = targets[-1].server if args.responses else router  # with --responses, Responses is soaked
            assert soaked is not None
            soak = run_soak(soaked, args.soak, plan, log)
    runs = [target.run for target in targets]
    micro = None if args.no_micro else _micro()
    lines = report(runs, soak, micro, plan)
    print("\n".join(lines))
    print(f"\n({time.monotonic() - began:.0f} s; results in {args.output})")
    meta = {
        "mock": {"ttft": args.ttft, "chunk_delay": args.chunk_delay, "chunks": MockConfig().chunks},
        "litellm_spec": args.litellm_spec if args.litellm else None,
    }
    data = to_json(meta, plan, runs, soak, micro)
    args.output.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
