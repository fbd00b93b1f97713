"""Capacity hysteresis, conversation stickiness and cost accounting: small pure pieces."""

from __future__ import annotations

from router.capacity import CapacityGauge, parse_gauges
from router.config import CapacityConfig, PriceConfig
from router.cost import chunk_chars, completion_chars, cost_usd, usage_from
from router.sticky import StickyStore

VLLM = """\
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="qwen"} 7.0
vllm:num_requests_waiting{model_name="llama"} 2.0
vllm:gpu_cache_usage_perc{model_name="qwen"} 0.5
vllm:num_requests_running{model_name="qwen"} 3.0
"""


def test_parse_gauges_sums_label_sets() -> None:
    assert parse_gauges(VLLM, "vllm:num_requests_waiting", "vllm:gpu_cache_usage_perc") == (9.0, 0.5)
    assert parse_gauges("", "a", "b") == (None, None)


def test_saturation_has_hysteresis() -> None:
    gauge = CapacityGauge("mid", CapacityConfig(metrics_url="http://x", waiting_high=8, waiting_low=2, cache_high=0.9, cache_low=0.8))
    sequence = [(5, 0.1, False), (8, 0.1, True), (5, 0.1, True), (2, 0.85, True), (2, 0.8, False), (0, 0.95, True), (0, 0.5, False)]
    for waiting, cache, saturated in sequence:
        gauge.update(waiting, cache)
        assert gauge.saturated is saturated, (waiting, cache)


def test_sticky_store_matches_follow_ups_per_tenant_with_ttl() -> None:
    now = [0.0]
    store = StickyStore(ttl_seconds=10, max_conversations=2, clock=lambda: now[0])
    thread = [{"role": "user", "content": "prove it"}]
    follow_up = [*thread, {"role": "assistant", "content": "proof"}, {"role": "user", "content": "yes"}]
    store.remember(thread, "acme", "flagship")
    assert store.tier_of(follow_up, "acme") == "flagship"
    assert store.tier_of(follow_up, "other") is None
    assert store.tier_of(thread, "acme") is None  # a first turn is never a follow-up
    now[0] = 11
    assert store.tier_of(follow_up, "acme") is None
    for i in range(3):
        store.remember([{"role": "user", "content": str(i)}], None, "flagship")
    assert len(store._tiers) == 2  # bounded


def test_cost_from_usage_or_estimate() -> None:
    price = PriceConfig(input=2, output=8)
    reported = usage_from({"prompt_tokens": 1000, "completion_tokens": 500}, input_estimate=1, output_chars=1)
    assert (reported.input_tokens, reported.output_tokens, reported.estimated) == (1000, 500, False)
    assert cost_usd(price, 1000, 500) == (1000 * 2 + 500 * 8) / 1e6
    estimated = usage_from(None, input_estimate=120, output_chars=41)
    assert (estimated.input_tokens, estimated.output_tokens, estimated.estimated) == (120, 11, True)
    completion = {"choices": [{"message": {"content": "abcd", "tool_calls": [{"function": {"arguments": "{}"}}]}}]}
    assert completion_chars(completion) == 6
    assert chunk_chars({"choices": [{"delta": {"content": "xyz"}}]}) == 3
