"""What goes upstream: the client's body with the backend's model, minus what the backend cannot take."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.micro import bench_environ, build_pipeline
from router.auth import ANONYMOUS
from router.config import load_config

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("takes_it", "sent"), [("true", "high"), ("false", None)])
def test_reasoning_effort_reaches_only_backends_that_take_it(takes_it: str, sent: str | None) -> None:
    environ = {**bench_environ(), "FLAGSHIP_REASONING_EFFORT": takes_it}
    pipeline = build_pipeline(load_config(REPO / "config" / "router.yaml", environ))
    body = {"model": "flagship", "reasoning_effort": "high", "messages": [{"role": "user", "content": "hi"}]}
    route = pipeline.route(body, ANONYMOUS, {})
    out = pipeline.upstream_body(body, route.plan.candidates[0])
    assert out.get("reasoning_effort") == sent
    assert out["model"] == "mock-flagship" and body["reasoning_effort"] == "high"  # the client's dict is untouched
