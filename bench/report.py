"""What a benchmark run produced, and how it is reported: the table, the notes, the ratios versus
LiteLLM, the issue's targets (met / not met / unknown) and the JSON written to ``bench/results``.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from bench.loadgen import LoadResult

Mode = Literal["nonstream", "stream"]
MODES: tuple[Mode, ...] = ("nonstream", "stream")
_SATURATED_PCT = 90.0
_BUSY_MACHINE_PCT = 25.0
_STOLEN_PCT = 5.0


@dataclass(frozen=True)
class Cell:
    """One measurement: a target, a mode and a concurrency."""

    target: str
    mode: Mode
    concurrency: int
    load: LoadResult
    cpu_ms_per_req: float  #: Server process tree CPU over the window / requests completed in it.
    server_cpu_pct: float  #: The same CPU as % of one core.
    upstream_cpu_pct: float  #: The mock's CPU as % of one core (equals server_cpu_pct for direct).
    #: CPU used by processes other than the server, the mock and the load generator (% of one core):
    #: when it is high, something else was running on the machine and the cell is unreliable.
    other_cpu_pct: float = 0.0
    #: CPU time the hypervisor gave other guests while this VM wanted it (% of one core): when it is
    #: high, the whole machine ran slower during the cell, the direct call included.
    steal_pct: float = 0.0


@dataclass
class TargetRun:
    name: str
    cells: list[Cell] = field(default_factory=list)
    rss_start: int = 0  #: Bytes, server process tree, at the start of the first measured window.
    rss_end: int = 0  #: Bytes, at the end of the last one.
    error: str | None = None  #: Why this target could not be measured.


@dataclass(frozen=True)
class Soak:
    seconds: float
    rss: list[tuple[float, int]]  #: (seconds into the window, bytes) samples.
    loads: list[LoadResult]  #: One non-stream and one stream load, half the concurrency each.

    @property
    def growth_pct(self) -> float:
        return 100 * (self.rss[-1][1] - self.rss[0][1]) / self.rss[0][1]


@dataclass(frozen=True)
class Plan:
    """What every target is put through: each mode at each concurrency, ``warmup`` then ``duration`` seconds."""

    modes: tuple[Mode, ...]
    concurrency: tuple[int, ...]
    duration: float
    warmup: float
    workers: int
    log_dir: Path


_HEADER = (
    f"{'target':<11} {'mode':<9} {'conc':>4} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'TTFB p50':>9} "
    f"{'CPU ms/req':>10} {'+p50 ms':>8} {'+TTFB ms':>8} {'errors':>6}"
)


def row(cell: Cell, direct: Cell | None) -> str:
    """One table row; the overhead columns need the ``direct`` cell of the same mode and concurrency."""
    r = cell.load
    if r.requests == 0:
        return f"{cell.target:<11} {cell.mode:<9} {cell.concurrency:>4}   no request completed in the window"
    if direct is not None and direct.load.requests == 0:
        direct = None
    extra_p50 = f"{r.latency_ms.p50 - direct.load.latency_ms.p50:8.3f}" if direct else f"{'-':>8}"
    extra_ttfb = f"{r.ttfb_ms.p50 - direct.load.ttfb_ms.p50:8.3f}" if direct else f"{'-':>8}"
    return (
        f"{cell.target:<11} {cell.mode:<9} {cell.concurrency:>4} {r.rps:>9.0f} {r.latency_ms.p50:>8.3f} "
        f"{r.latency_ms.p99:>8.3f} {r.ttfb_ms.p50:>9.3f} {cell.cpu_ms_per_req:>10.3f} {extra_p50} {extra_ttfb} "
        f"{sum(r.errors.values()):>6}"
    )


def _index(runs: list[TargetRun]) -> dict[tuple[str, str, int], Cell]:
    return {(c.target, c.mode, c.concurrency): c for run in runs for c in run.cells}


def report(runs: list[TargetRun], soak: Soak | None, micro: dict[str, Any] | None, plan: Plan) -> list[str]:
    """The printed report: table, notes, RSS, ratios versus LiteLLM, and the issue's targets."""
    cells = _index(runs)
    lines = [_HEADER, "-" * len(_HEADER)]
    for run in runs:
        for cell in run.cells:
            direct = cells.get(("direct", cell.mode, cell.concurrency)) if run.name != "direct" else None
            lines.append(row(cell, direct))
    lines.append("")
    lines += _notes(runs)
    for run in runs:
        if run.error is not None:
            lines.append(f"{run.name}: not measured: {run.error.splitlines()[0]}")
        elif run.cells:
            growth = 100 * (run.rss_end - run.rss_start) / run.rss_start if run.rss_start else 0.0
            lines.append(f"RSS {run.name}: start {mib(run.rss_start)}, end {mib(run.rss_end)} ({growth:+.1f}%)")
    if soak is not None:
        lines.append(
            f"soak llm-router {soak.seconds:.0f}s at c=64: "
            f"RSS start {mib(soak.rss[0][1])}, end {mib(soak.rss[-1][1])} "
            f"({soak.growth_pct:+.1f}%); {sum(load.requests for load in soak.loads)} requests, "
            f"{sum(sum(load.errors.values()) for load in soak.loads)} errors"
        )
    lines.append("")
    lines += _ratios(cells, plan)
    lines += _responses_ratios(cells, plan)
    lines.append("")
    lines += [
        f"{'PASS' if ok else 'FAIL' if ok is not None else 'n/a '}  {text}"
        for ok, text in targets(cells, plan, soak, micro)
    ]
    return lines


def _notes(runs: list[TargetRun]) -> list[str]:
    notes = []
    for run in runs:
        for cell in run.cells:
            where = f"{cell.target} {cell.mode} c={cell.concurrency}"
            if cell.load.client_cpu_pct > _SATURATED_PCT:
                notes.append(
                    f"note: {where}: the load generator used {cell.load.client_cpu_pct:.0f}% of a core (client-bound)"
                )
            if cell.other_cpu_pct > _BUSY_MACHINE_PCT:
                notes.append(f"note: {where}: other processes used {cell.other_cpu_pct:.0f}% of a core (busy machine)")
            if cell.steal_pct > _STOLEN_PCT:
                notes.append(f"note: {where}: the hypervisor took {cell.steal_pct:.0f}% of a core (steal: a slow cell)")
            if cell.target != "direct" and cell.upstream_cpu_pct > _SATURATED_PCT:
                notes.append(f"note: {where}: the mock upstream used {cell.upstream_cpu_pct:.0f}% of a core")
            for kind, count in cell.load.errors.items():
                sample = cell.load.error_samples.get(kind, "")
                notes.append(f"errors: {where}: {count} x {kind} {sample[:160]!r}")
    return notes + ([""] if notes else [])


def _ratios(cells: dict[tuple[str, str, int], Cell], plan: Plan) -> list[str]:
    lines = []
    for mode in plan.modes:
        for c in plan.concurrency:
            ours, theirs, direct = (cells.get((t, mode, c)) for t in ("llm-router", "litellm", "direct"))
            if ours is None or theirs is None or direct is None:
                continue
            if 0 in (ours.load.requests, theirs.load.requests, direct.load.requests):
                continue
            our_over = ours.load.latency_ms.p50 - direct.load.latency_ms.p50
            their_over = theirs.load.latency_ms.p50 - direct.load.latency_ms.p50
            lines.append(
                f"{mode:<9} c={c:<3} llm-router vs LiteLLM: throughput x{_ratio(ours.load.rps, theirs.load.rps)}, "
                f"added p50 {our_over:.3f} vs {their_over:.3f} ms (/{_ratio(their_over, our_over)}), "
                f"CPU/req {ours.cpu_ms_per_req:.3f} vs {theirs.cpu_ms_per_req:.3f} ms "
                f"(/{_ratio(theirs.cpu_ms_per_req, ours.cpu_ms_per_req)})"
            )
    return ["ratios (llm-router vs LiteLLM):", *lines] if lines else ["ratios: LiteLLM not measured (use --litellm)"]


def _responses_ratios(cells: dict[tuple[str, str, int], Cell], plan: Plan) -> list[str]:
    """``/v1/responses`` against chat completions on the same gateway (``--responses``): added latency and CPU."""
    lines = []
    for mode in plan.modes:
        for c in plan.concurrency:
            chat, responses, direct = (cells.get((t, mode, c)) for t in ("llm-router", "responses", "direct"))
            if chat is None or responses is None or direct is None:
                continue
            if 0 in (chat.load.requests, responses.load.requests, direct.load.requests) or not chat.cpu_ms_per_req:
                continue
            key = "ttfb_ms" if mode == "stream" else "latency_ms"
            base = getattr(direct.load, key).p50
            chat_over, responses_over = getattr(chat.load, key).p50 - base, getattr(responses.load, key).p50 - base
            lines.append(
                f"{mode:<9} c={c:<3} /v1/responses vs chat: added p50 {responses_over:.3f} vs {chat_over:.3f} ms "
                f"(x{responses_over / chat_over:.2f}), CPU/req {responses.cpu_ms_per_req:.3f} vs "
                f"{chat.cpu_ms_per_req:.3f} ms (x{responses.cpu_ms_per_req / chat.cpu_ms_per_req:.2f})"
            )
    return ["", "ratios (/v1/responses vs /v1/chat/completions):", *lines] if lines else []


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}" if b > 0 else "inf"


def targets(
    cells: dict[tuple[str, str, int], Cell], plan: Plan, soak: Soak | None, micro: dict[str, Any] | None
) -> list[tuple[bool | None, str]]:
    """The issue's targets as (met, description); met is None when this run could not tell."""
    top = max(plan.concurrency)

    def get(target: str, mode: str, c: int) -> Cell | None:
        return cells.get((target, mode, c))

    def added(mode: str, metric: str) -> tuple[bool | None, str]:
        ours, direct = get("llm-router", mode, 1), get("direct", mode, 1)
        if ours is None or direct is None or 0 in (ours.load.requests, direct.load.requests):
            return None, "needs llm-router and direct results at c=1"
        value = getattr(ours.load, metric).p50 - getattr(direct.load, metric).p50
        return value < 1.0, f"{value:.3f} ms"

    def times(mode: str, factor: float) -> tuple[bool | None, str]:
        ours, theirs = get("llm-router", mode, top), get("litellm", mode, top)
        if ours is None or theirs is None or theirs.load.rps == 0:
            return None, "needs llm-router and --litellm"
        value = ours.load.rps / theirs.load.rps
        return value >= factor, f"x{value:.1f}"

    results = []
    ok, text = added("nonstream", "latency_ms")
    results.append((ok, f"non-stream added p50 latency at c=1 < 1 ms: {text}"))
    ok, text = times("nonstream", 10)
    results.append((ok, f"non-stream throughput at c={top} >= 10x LiteLLM: {text}"))
    ok, text = added("stream", "ttfb_ms")
    results.append((ok, f"stream added TTFB p50 at c=1 < 1 ms: {text}"))
    ok, text = times("stream", 20)
    results.append((ok, f"stream throughput at c={top} >= 20x LiteLLM: {text}"))
    ours = [c for (t, _, _), c in cells.items() if t == "llm-router"]
    if ours:
        worst = max(ours, key=lambda c: c.cpu_ms_per_req)
        results.append(
            (
                worst.cpu_ms_per_req < 1.0,
                f"CPU per proxied request < 1 ms: "
                f"worst {worst.cpu_ms_per_req:.3f} ms ({worst.mode} c={worst.concurrency})",
            )
        )
    else:
        results.append((None, "CPU per proxied request < 1 ms: needs llm-router"))
    if soak is not None:
        results.append(
            (soak.growth_pct < 10, f"RSS growth over a {soak.seconds:.0f}s soak at c=64 < 10%: {soak.growth_pct:+.1f}%")
        )
    else:
        results.append((None, "RSS growth over a 10-minute soak < 10%: use --soak 600"))
    if micro is not None:
        results.append(
            (
                micro["total_us"] < 100,
                f"classify + rules + policy < 100 us per 1 KB prompt: {micro['total_us']:.1f} us "
                f"(classify {micro['classify_us']:.1f} us; python -m bench.micro)",
            )
        )
    else:
        results.append((None, "classify + rules + policy < 100 us: micro-benchmark unavailable"))
    return results


def mib(value: int) -> str:
    return f"{value / 2**20:.1f} MiB"


def to_json(
    meta: dict[str, Any], plan: Plan, runs: list[TargetRun], soak: Soak | None, micro: dict[str, Any] | None
) -> dict[str, Any]:
    """Everything measured, for ``bench/results/latest.json``."""
    cells = _index(runs)
    return {
        "meta": {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": len(os.sched_getaffinity(0)),
            "plan": {
                "modes": plan.modes,
                "concurrency": plan.concurrency,
                "duration": plan.duration,
                "warmup": plan.warmup,
                "workers": plan.workers,
            },
            **meta,
        },
        "targets": [
            {
                "name": run.name,
                "error": run.error,
                "rss_start": run.rss_start,
                "rss_end": run.rss_end,
                "cells": [asdict(cell) for cell in run.cells],
            }
            for run in runs
        ],
        "soak": asdict(soak) | {"growth_pct": soak.growth_pct} if soak is not None else None,
        "micro": micro,
        "checks": [{"met": ok, "what": text} for ok, text in targets(cells, plan, soak, micro)],
    }
