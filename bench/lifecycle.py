"""``python -m bench.lifecycle sigterm|kill9``: what a shutdown or a crash costs, measured from outside.

Two simulated upstreams run in this process; ``llm-router serve`` runs as a child process with a
ledger in a temporary directory; clients are the openai SDK, one thread each.

- ``sigterm``: ``--clients`` streams of about ``--stream-seconds`` each; once all have their first
  chunk the gateway gets SIGTERM, and SIGKILL ``--grace`` seconds later if it is still running
  (Kubernetes' terminationGracePeriodSeconds). Reports how each client's stream ended and how many
  ledger rows were written.
- ``kill9``: ``--clients`` threads send short streams in a loop; after ``--seconds`` the gateway
  gets SIGKILL. Reports answered requests and upstream calls against the ledger's rows, after the
  write-ahead rows the dead process left are billed (as the next start does once they are stale).

``--gateway-src DIR`` runs another checkout's ``router`` package (to measure before a change).
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import openai
import uvicorn

from router.ledger import Ledger
from router.simulator import SimProfile, create_simulator_app

REPO = Path(__file__).resolve().parent.parent
MESSAGES = [{"role": "user", "content": "How do I reset my online banking password?"}]

CONFIG = """\
server: {{{server}}}
backends:
  mid:
    tier: mid
    base_url: {mid}/v1
    model: sim-mid
    context_window: 32768
    price: {{input: 0.1, output: 0.2}}
    timeouts: {{connect: 2, first_token: 10, idle: 10, total: 300}}
  flagship:
    tier: flagship
    base_url: {flagship}/v1
    model: sim-flagship
    context_window: 200000
    price: {{input: 2, output: 8}}
classifier: {{vocabulary: {vocabulary}}}
policy:
  ledger: {{path: {ledger}}}
rules:
  - {{name: default-mid, tier: mid}}
"""


@contextmanager
def _thread_server(app: object) -> Iterator[str]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def gateway_stack(token_interval: float, server: str, src: Path | None) -> Iterator[tuple[subprocess.Popen[bytes], str, Path, dict[str, str]]]:
    """Upstreams, and the gateway as a child process: (process, url, ledger path, upstream urls)."""
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        mid_sim = create_simulator_app(SimProfile(name="mid", model="sim-mid", ttft=0.05, token_interval=token_interval))
        flagship_sim = create_simulator_app(SimProfile(name="flagship", model="sim-flagship", ttft=0.05, token_interval=token_interval))
        mid = stack.enter_context(_thread_server(mid_sim))
        flagship = stack.enter_context(_thread_server(flagship_sim))
        ledger = tmp / "spend.sqlite3"
        config = tmp / "router.yaml"
        config.write_text(CONFIG.format(server=server, mid=mid, flagship=flagship, ledger=ledger,
                                        vocabulary=REPO / "config" / "tasks.yaml"))
        port = _free_port()
        env = {**os.environ, "PYTHONPATH": str(src or REPO)}
        log = stack.enter_context((tmp / "gateway.log").open("wb"))
        process = subprocess.Popen(
            [sys.executable, "-m", "router", "serve", "--config", str(config), "--port", str(port), "--log-level", "warning"],
            env=env, cwd=tmp, stderr=log,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/healthz").raise_for_status()
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the gateway did not start") from None
                time.sleep(0.1)
        try:
            yield process, url, ledger, {"mid": mid, "flagship": flagship}
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def ledger_rows(path: Path) -> dict[str, int]:
    """Rows per table: ``requests`` (finished) and, where it exists, ``pending`` (write-ahead)."""
    with sqlite3.connect(path) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return {table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] for table in ("requests", "pending") if table in tables}


def sigterm(clients: int, stream_seconds: float, drain: float | None, grace: float, src: Path | None) -> dict[str, object]:
    tokens = 64
    server = f"drain_seconds: {drain}" if drain is not None else ""
    with gateway_stack(stream_seconds / tokens, server, src) as (process, url, ledger, _):
        started = threading.Barrier(clients + 1)
        endings: list[str] = []

        def client() -> None:
            sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=grace + 30)
            stream = sdk.chat.completions.create(model="mid", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
            chunks = iter(stream)
            try:
                next(chunks)
            finally:
                started.wait(30)
            try:
                for _ in chunks:
                    pass
                endings.append("finished")
            except openai.APIConnectionError:  # the connection was cut with no event
                endings.append("cut")
            except openai.APIError:  # the gateway's error event
                endings.append("error event")
            except Exception:  # noqa: BLE001 - the connection was cut with no event
                endings.append("cut")

        threads = [threading.Thread(target=client) for _ in range(clients)]
        for thread in threads:
            thread.start()
        started.wait(30)
        stop = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
            killed = False
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            killed = True
        exit_seconds = time.monotonic() - stop
        for thread in threads:
            thread.join(30)
        return {"clients": clients, "endings": dict(Counter(endings)), "sigkill": killed,
                "exit_seconds": round(exit_seconds, 1), "ledger": ledger_rows(ledger)}


def kill9(clients: int, seconds: float, src: Path | None) -> dict[str, object]:
    with gateway_stack(0.02, "", src) as (process, url, ledger, upstreams):
        answered: list[int] = []
        stop = threading.Event()

        def client() -> None:
            sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=10)
            while not stop.is_set():
                try:
                    list(sdk.chat.completions.create(model="mid", messages=MESSAGES, stream=True, max_tokens=20))  # type: ignore[arg-type]
                    answered.append(1)
                except Exception:  # noqa: BLE001 - the kill cuts whatever is in flight
                    return

        threads = [threading.Thread(target=client) for _ in range(clients)]
        for thread in threads:
            thread.start()
        time.sleep(seconds)
        process.send_signal(signal.SIGKILL)
        process.wait()
        stop.set()
        for thread in threads:
            thread.join(15)
        with httpx.Client(base_url=upstreams["mid"]) as sim:
            calls = sim.get("/_sim/stats").json()["requests"]
        rows = ledger_rows(ledger)
        # The next start, once no request of the dead process can still be running, bills its write-ahead rows.
        Ledger(ledger, stale_after=0).close()
        recorded = ledger_rows(ledger)["requests"]
        return {"clients": clients, "answered": len(answered), "upstream_calls": calls, "ledger_at_kill": rows,
                "billed_after_recovery": recorded, "answered_without_row": max(0, len(answered) - recorded),
                "calls_without_row": max(0, calls - recorded)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.lifecycle", description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=["sigterm", "kill9"])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--stream-seconds", type=float, default=40.0)
    parser.add_argument("--drain", type=float, default=None, help="server.drain_seconds to configure (default: none)")
    parser.add_argument("--grace", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--gateway-src", type=Path, default=None)
    args = parser.parse_args()
    if args.scenario == "sigterm":
        print(sigterm(args.clients, args.stream_seconds, args.drain, args.grace, args.gateway_src))
    else:
        print(kill9(args.clients, args.seconds, args.gateway_src))


if __name__ == "__main__":
    main()
