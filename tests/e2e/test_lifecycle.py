"""Shutdown and crash, from outside: ``llm-router serve`` as a child process, the openai SDK as clients
(the scenarios of ``python -m bench.lifecycle``, small)."""

from __future__ import annotations

from bench.lifecycle import sigterm


def test_sigterm_drains_then_ends_open_streams_with_an_error_event_and_writes_the_ledger() -> None:
    """Item 15: before, nothing bounded the drain: at the orchestrator's SIGKILL every stream was cut
    with no event and no ledger row was written (50/50 cut, 0/50 rows at 40 s streams, 30 s grace)."""
    result = sigterm(clients=6, stream_seconds=30, drain=1.0, grace=20, src=None)
    assert result["endings"] == {"error event": 6}, result
    assert result["sigkill"] is False, result
    assert result["ledger"] == {"requests": 6}, result
