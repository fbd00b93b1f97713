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


@pytest.mark.parametrize(("flagship", "mid"), [("true", "true"), ("false", "true"), ("true", "false"), ("false", "false")])
def test_decide_notes_each_planned_backend_that_ignores_reasoning_effort(flagship: str, mid: str) -> None:
    environ = {**bench_environ(), "FLAGSHIP_REASONING_EFFORT": flagship, "MID_REASONING_EFFORT": mid}
    pipeline = build_pipeline(load_config(REPO / "config" / "router.yaml", environ))
    body = {"model": "flagship", "reasoning_effort": "high", "messages": [{"role": "user", "content": "hi"}]}
    route = pipeline.route(body, ANONYMOUS, {})
    assert [c.backend for c in route.plan.candidates] == ["flagship", "mid"]  # the flagship falls back to mid
    explained = pipeline.explain(route, ANONYMOUS, body["messages"], body)
    ignoring = [name for name, takes in (("flagship", flagship), ("mid", mid)) if takes == "false"]
    assert explained["notes"] == [f"reasoning effort 'high' ignored on backend {name!r} (reasoning_effort: false)"
                                  for name in ignoring]
    assert all(note in explained["reason"] for note in explained["notes"])
    without = pipeline.explain(route, ANONYMOUS, body["messages"], {**body, "reasoning_effort": None})
    assert without["notes"] == [] and "reasoning" not in without["reason"]
