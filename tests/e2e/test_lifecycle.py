"""Shutdown and crash, from outside: ``llm-router serve`` as a child process, the openai SDK as clients
(the scenarios of ``python -m bench.lifecycle``, small)."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time

import httpx
import openai

from bench.lifecycle import MESSAGES, ledger_rows, gateway_stack, sigterm
from router.ledger import PENDING_STATUS, Ledger


def test_sigterm_drains_then_ends_open_streams_with_an_error_event_and_writes_the_ledger() -> None:
    """Item 15: before, nothing bounded the drain: at the orchestrator's SIGKILL every stream was cut
    with no event and no ledger row was written (50/50 cut, 0/50 rows at 40 s streams, 30 s grace)."""
    result = sigterm(clients=6, stream_seconds=30, drain=1.0, grace=20, src=None)
    assert result["endings"] == {"error event": 6}, result
    assert result["sigkill"] is False, result
    assert result["ledger"] == {"requests": 6, "pending": 0}, result


def test_kill_9_leaves_the_call_in_flight_billed_at_its_estimate() -> None:
    """Item 16: a request in flight when the process is killed was never billed; its write-ahead row
    now survives the kill, and the next start bills it at the reserved estimate once it is stale."""
    with gateway_stack(0.01, "", None) as (process, url, ledger, upstreams):
        with httpx.Client(base_url=upstreams["mid"]) as sim:
            sim.post("/_sim/faults", json={"stall_after_chunks": 2, "stall_seconds": 60}).raise_for_status()
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=60)
        stream = client.chat.completions.create(model="mid", messages=MESSAGES, stream=True, max_tokens=100)  # type: ignore[arg-type]
        assert next(iter(stream)).choices[0].delta.role == "assistant"

        def pending() -> int:
            return ledger_rows(ledger).get("pending", 0) if ledger.exists() else 0

        deadline = time.monotonic() + 10
        while pending() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pending() == 1
        process.send_signal(signal.SIGKILL)
        process.wait()
        stream.close()
        Ledger(ledger, stale_after=0).close()  # the next start, once the dead process's requests are over
        with sqlite3.connect(ledger) as conn:
            billed = conn.execute("SELECT backend, status, estimated, cost_usd FROM requests").fetchall()
        conn.close()
        assert len(billed) == 1
        backend, status, estimated, cost = billed[0]
        assert (backend, status, estimated) == ("mid", PENDING_STATUS, 1)
        assert cost > 0


def test_sigterm_answers_a_request_still_waiting_for_its_upstream_with_a_503() -> None:
    """Item 15, before the answer started (a non-stream call, or a stream before its first token)."""
    with gateway_stack(0.01, "drain_seconds: 0.5", None) as (process, url, ledger, upstreams):
        sim = httpx.Client(base_url=upstreams["mid"])
        sim.post("/_sim/faults", json={"delay_first_token": 60}).raise_for_status()
        outcome: list[BaseException] = []

        def call() -> None:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=60)
            try:
                client.chat.completions.create(model="mid", messages=MESSAGES)  # type: ignore[arg-type]
            except BaseException as exc:  # noqa: BLE001 - the test inspects it
                outcome.append(exc)

        caller = threading.Thread(target=call)
        caller.start()
        deadline = time.monotonic() + 10
        while sim.get("/_sim/stats").json()["in_flight"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        process.wait(20)  # uvicorn re-raises SIGTERM once it has shut down
        caller.join(20)
        sim.close()
        assert len(outcome) == 1 and isinstance(outcome[0], openai.APIStatusError), outcome
        assert outcome[0].status_code == 503
        assert outcome[0].code == "gateway_shutting_down"
        # No upstream answered: nothing is billed, and no write-ahead row is left to bill it later.
        assert ledger_rows(ledger) == {"requests": 0, "pending": 0}
