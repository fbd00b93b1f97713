"""Closed-loop load generator: N keep-alive connections, each sending the next request as soon as
the previous response is complete, for a warm-up and then a bounded measurement window.

Written on raw asyncio Protocols (uvloop when importable) rather than an HTTP client library, so
that one process can drive far more requests per second than the servers it measures. A request
counts when it was sent and completed inside the window. Latency is send -> last byte; time to
first byte (TTFB) is send -> first byte of the response for non-streams, and send -> first decoded
body byte (the first SSE data) for streams. Every response is checked (status 200, a JSON body, or
an SSE body ending with ``data: [DONE]``); anything else is counted as an error, by kind.

Run ``python -m bench.loadgen --url URL --model M [--stream] -c 16 --duration 5``: it prints
``{"phase": "start"}`` and ``{"phase": "end"}`` lines at the edges of the window (the runner samples
server CPU there) and then ``{"result": {...}}``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import orjson

from bench import eventloop
from bench.http1 import ProtocolError, ResponseParser
from bench.workload import chat_body, messages_body, responses_body

_DRAIN_SECONDS = 5.0
_RECONNECT_DELAY = 0.1


@dataclass(frozen=True)
class LoadSpec:
    #: Full URL of the chat completions endpoint, ``http://host:port/v1/chat/completions``, or of
    #: ``/v1/messages`` (then requests and streams are Anthropic's Messages API).
    url: str
    model: str
    stream: bool
    concurrency: int
    duration: float
    warmup: float = 1.0
    timeout: float = 30.0  #: A request still unanswered after this many seconds is an error.
    api_key: str = "bench-dummy"

    @property
    def anthropic(self) -> bool:
        return self.url.endswith("/v1/messages")

    @property
    def responses(self) -> bool:
        return self.url.endswith("/v1/responses")

    def request_bytes(self) -> bytes:
        parts = urlsplit(self.url)
        make = messages_body if self.anthropic else responses_body if self.responses else chat_body
        body = make(self.model, stream=self.stream)
        head = (
            f"POST {parts.path or '/'} HTTP/1.1\r\nhost: {parts.netloc}\r\ncontent-type: application/json\r\n"
            f"authorization: Bearer {self.api_key}\r\ncontent-length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body


@dataclass(frozen=True)
class Summary:
    """Milliseconds; all zero when nothing was measured."""

    p50: float = 0.0
    p90: float = 0.0
    p99: float = 0.0
    max: float = 0.0
    mean: float = 0.0


@dataclass(frozen=True)
class LoadResult:
    requests: int  #: Completed inside the window, without error.
    seconds: float
    rps: float
    latency_ms: Summary
    ttfb_ms: Summary
    errors: dict[str, int] = field(default_factory=dict)  #: Kind -> count, over the whole run (warm-up included).
    error_samples: dict[str, str] = field(default_factory=dict)  #: First response body per error kind.
    stream_events: dict[int, int] = field(default_factory=dict)  #: ``data:`` events per stream -> responses.
    client_cpu_pct: float = 0.0  #: The load generator's own CPU use over the window, % of one core.

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoadResult:
        """The inverse of ``dataclasses.asdict`` through JSON (which turned the int keys into strings)."""
        return cls(
            **{
                **data,
                "latency_ms": Summary(**data["latency_ms"]),
                "ttfb_ms": Summary(**data["ttfb_ms"]),
                "stream_events": {int(k): v for k, v in data["stream_events"].items()},
            }
        )


class _Run:
    """State shared by the connections of one load run."""

    def __init__(self, spec: LoadSpec) -> None:
        parts = urlsplit(spec.url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"only http:// URLs are supported, got {spec.url!r}")
        self.spec = spec
        self.host = parts.hostname
        self.port = parts.port or 80
        self.request = spec.request_bytes()
        self.latencies = array("d")
        self.ttfbs = array("d")
        self.errors: Counter[str] = Counter()
        self.error_samples: dict[str, str] = {}
        self.events: Counter[int] = Counter()
        self.window = (math.inf, math.inf)
        self.stopping = False
        self.connections: set[_Connection] = set()
        self.connecting: set[asyncio.Task[None]] = set()

    def record(self, sent: float, first: float, done: float, parser: ResponseParser) -> None:
        error = self._check(parser)
        if error is not None:
            self.error(error, parser.body[:300].decode(errors="replace"))
        elif self.window[0] <= sent and done <= self.window[1]:
            self.latencies.append(done - sent)
            self.ttfbs.append(first - sent)

    def _check(self, parser: ResponseParser) -> str | None:
        if parser.status != 200:
            return f"http {parser.status}"
        body = parser.body
        if self.spec.stream:
            if self.spec.responses:
                if b"event: response.completed" not in body[-4096:]:
                    return "stream not ended by response.completed"
            else:
                last = b'data: {"type":"message_stop"}' if self.spec.anthropic else b"data: [DONE]"
                if not body.rstrip().endswith(last):
                    return f"stream not ended by {last.decode()}"
            self.events[body.count(b"data:")] += 1
        elif not body.startswith(b"{"):
            return "non-JSON body"
        return None

    def error(self, kind: str, sample: str = "") -> None:
        self.errors[kind] += 1
        self.error_samples.setdefault(kind, sample)

    def connect(self, delay: float = 0.0) -> None:
        task = asyncio.get_running_loop().create_task(self._connect(delay))
        self.connecting.add(task)
        task.add_done_callback(self.connecting.discard)

    async def _connect(self, delay: float) -> None:
        while not self.stopping:
            if delay:
                await asyncio.sleep(delay)
            try:
                await asyncio.get_running_loop().create_connection(lambda: _Connection(self), self.host, self.port)
                return
            except OSError as exc:
                self.error(f"connect: {exc.strerror or exc}")
                delay = _RECONNECT_DELAY

    def lost(self, conn: _Connection, failed: bool) -> None:
        self.connections.discard(conn)
        if not self.stopping:
            self.connect(_RECONNECT_DELAY if failed else 0.0)

    async def watchdog(self) -> None:
        """Fail requests that exceed the timeout (one periodic sweep instead of a timer per request)."""
        while True:
            await asyncio.sleep(min(1.0, self.spec.timeout / 4))
            now = time.perf_counter()
            for conn in list(self.connections):
                if conn.busy and now - conn.sent > self.spec.timeout:
                    conn.fail("timeout")


class _Connection(asyncio.Protocol):
    """One keep-alive connection running requests back to back."""

    __slots__ = ("_first", "_parser", "_run", "_transport", "busy", "sent")

    def __init__(self, run: _Run) -> None:
        self._run = run
        self._transport: asyncio.Transport | None = None
        self._parser = ResponseParser()
        self.sent = 0.0
        self._first = 0.0
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        self._run.connections.add(self)
        self._send()

    def _send(self) -> None:
        assert self._transport is not None
        if self._run.stopping:
            self._transport.close()
            return
        self._parser = ResponseParser()
        self._first = 0.0
        self.busy = True
        self.sent = time.perf_counter()
        self._transport.write(self._run.request)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        parser = self._parser
        try:
            done = parser.feed(data)
        except ProtocolError as exc:
            self.fail(f"protocol: {exc}")
            return
        if not self._first and (parser.body_started or not self._run.spec.stream):
            self._first = now
        if done:
            self.busy = False
            self._run.record(self.sent, self._first or now, now, parser)
            if parser.keep_alive:
                self._send()
            elif self._transport is not None:
                self._transport.close()

    def eof_received(self) -> bool | None:
        if self.busy and self._parser.feed_eof():
            self.busy = False
            now = time.perf_counter()
            self._run.record(self.sent, self._first or now, now, self._parser)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        failed = self.busy
        if failed:
            self.busy = False
            self._run.error("connection closed mid-response")
        self._transport = None
        self._run.lost(self, failed)

    def fail(self, kind: str) -> None:
        self.busy = False
        self._run.error(kind)
        if self._transport is not None:
            self._transport.abort()


async def run_load(spec: LoadSpec, on_phase: Callable[[str], None] | None = None) -> LoadResult:
    """Drive the load described by ``spec``; ``on_phase("start" | "end")`` marks the measured window."""
    run = _Run(spec)
    watchdog = asyncio.get_running_loop().create_task(run.watchdog())
    start = time.perf_counter()
    run.window = (start + spec.warmup, start + spec.warmup + spec.duration)
    for _ in range(spec.concurrency):
        run.connect()
    try:
        await asyncio.sleep(max(run.window[0] - time.perf_counter(), 0.0))
        cpu = time.process_time()
        if on_phase is not None:
            on_phase("start")
        await asyncio.sleep(max(run.window[1] - time.perf_counter(), 0.0))
        cpu = time.process_time() - cpu
        if on_phase is not None:
            on_phase("end")
        await _stop(run)
    finally:
        watchdog.cancel()
    latencies, ttfbs = sorted(run.latencies), sorted(run.ttfbs)
    return LoadResult(
        requests=len(latencies),
        seconds=spec.duration,
        rps=len(latencies) / spec.duration,
        latency_ms=_summary(latencies),
        ttfb_ms=_summary(ttfbs),
        errors=dict(run.errors),
        error_samples=run.error_samples,
        stream_events=dict(sorted(run.events.items())),
        client_cpu_pct=100 * cpu / spec.duration,
    )


async def _stop(run: _Run) -> None:
    """Let in-flight requests finish (their connections then close), then abort what is left."""
    run.stopping = True
    for task in list(run.connecting):
        task.cancel()
    deadline = time.perf_counter() + min(_DRAIN_SECONDS, run.spec.timeout)
    while run.connections and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    for conn in list(run.connections):
        conn.fail("still running at the end of the drain")
    while run.connections or run.connecting:
        await asyncio.sleep(0.01)


def _summary(ordered: list[float]) -> Summary:
    if not ordered:
        return Summary()

    def pct(p: float) -> float:
        return 1000 * ordered[max(math.ceil(p / 100 * len(ordered)) - 1, 0)]

    return Summary(
        p50=pct(50), p90=pct(90), p99=pct(99), max=1000 * ordered[-1], mean=1000 * sum(ordered) / len(ordered)
    )


def _print_line(payload: dict[str, object]) -> None:
    sys.stdout.write(orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS).decode() + "\n")
    sys.stdout.flush()


async def _main(spec: LoadSpec) -> None:
    result = await run_load(spec, on_phase=lambda phase: _print_line({"phase": phase}))
    _print_line({"result": asdict(result)})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="http://host:port/v1/chat/completions")
    parser.add_argument("--model", required=True)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("-c", "--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before the window")
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, seconds")
    args = parser.parse_args(argv)
    spec = LoadSpec(
        url=args.url,
        model=args.model,
        stream=args.stream,
        concurrency=args.concurrency,
        duration=args.duration,
        warmup=args.warmup,
        timeout=args.timeout,
    )
    eventloop.run(_main(spec))


if __name__ == "__main__":
    main()
