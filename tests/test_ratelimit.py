"""Rate limits: GCRA buckets, resolution per caller, OpenAI's headers, the give-back of a request never sent. No I/O."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.config import RateLimitConfig, load_config
from router.ratelimit import Bucket, LocalBuckets, RateLimits, costs, duration, gcra, headers
from router.state import PolicyState

REPO = Path(__file__).resolve().parents[1]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("tat_offset", "per_minute", "cost", "admitted"),
    [
        (0.0, 30, 1, True),  # an idle bucket takes a request
        (58.0, 30, 1, True),  # 29 requests in: the 30th fits exactly (60 s of burst)
        (60.0, 30, 1, False),  # 30 in: the 31st does not
        (0.0, 1000, 1001, False),  # more tokens than a minute holds never fit
        (-30.0, 30, 1, True),  # a bucket that drained long ago starts from now
    ],
)
def test_gcra_admits_a_minutes_burst_and_no_more(tat_offset: float, per_minute: int, cost: float, admitted: bool) -> None:
    now = 500.0
    _, excess = gcra(now + tat_offset, now, per_minute, cost)
    assert (excess <= 0) is admitted


def test_local_buckets_take_all_or_none_and_refill() -> None:
    clock = Clock()
    buckets = LocalBuckets(clock)
    requests = Bucket("tenant:acme:requests", "tenant:acme", "requests", 3)
    tokens = Bucket("tenant:acme:tokens", "tenant:acme", "tokens", 100)
    outcomes = [buckets.take_now([requests, tokens], [1, 40]).admitted for _ in range(4)]
    assert outcomes == [True, True, False, False]  # the third would pass 100 tokens: neither bucket is charged
    refused = buckets.take_now([requests, tokens], [1, 40])
    assert refused.retry_after == pytest.approx(60 * (120 - 100) / 100)  # until 20 tokens drained
    clock.now += 60
    assert buckets.take_now([requests, tokens], [1, 40]).admitted
    buckets.adjust_now([tokens], [-40])  # the request used nothing after all
    assert buckets.take_now([requests, tokens], [1, 60]).remaining[1][0] == pytest.approx(40)


def test_limits_resolve_named_default_and_global_per_caller() -> None:
    limits = RateLimits([
        RateLimitConfig(scope="global", rpm=1000),
        RateLimitConfig(scope="tenant", name="acme", rpm=30, tpm=10_000),
        RateLimitConfig(scope="key", tpm=5000),  # each key separately
    ])
    acme = limits.buckets("acme", "ci")
    assert [(b.key, b.per_minute) for b in acme] == [
        ("global:requests", 1000), ("tenant:acme:requests", 30), ("tenant:acme:tokens", 10_000), ("key:ci:tokens", 5000)
    ]
    assert [b.key for b in limits.buckets("beta", None)] == ["global:requests"]
    assert costs(acme, 250) == [1.0, 1.0, 250.0, 250.0]
    assert not RateLimits([])


def test_headers_report_the_tightest_limit_of_each_kind_in_openais_names() -> None:
    clock = Clock()
    buckets = LocalBuckets(clock)
    wide = Bucket("global:requests", "global", "requests", 1000)
    narrow = Bucket("key:ci:requests", "key:ci", "requests", 2)
    tokens = Bucket("key:ci:tokens", "key:ci", "tokens", 1000)
    take = buckets.take_now([wide, narrow, tokens], [1, 1, 100])
    assert headers([wide, narrow, tokens], take) == {
        "x-ratelimit-limit-requests": "2", "x-ratelimit-remaining-requests": "1", "x-ratelimit-reset-requests": "30s",
        "x-ratelimit-limit-tokens": "1000", "x-ratelimit-remaining-tokens": "900", "x-ratelimit-reset-tokens": "6s",
    }
    buckets.take_now([wide, narrow, tokens], [1, 1, 100])
    refused = buckets.take_now([wide, narrow, tokens], [1, 1, 100])
    assert not refused.admitted
    answer = headers([wide, narrow, tokens], refused)
    assert answer["retry-after"] == "30" and answer["x-ratelimit-remaining-requests"] == "0"


@pytest.mark.parametrize(("seconds", "text"), [(0.12, "120ms"), (2.0, "2s"), (17.5, "17.5s"), (90.0, "1m30s"), (360.0, "6m0s")])
def test_durations_read_like_openais(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_config_refuses_a_limit_without_rpm_or_tpm_and_a_named_global() -> None:
    with pytest.raises(ValueError, match="give `rpm`, `tpm` or both"):
        RateLimitConfig(scope="key", name="ci")
    with pytest.raises(ValueError, match="global rate limit has no `name`"):
        RateLimitConfig(scope="global", name="x", rpm=1)


async def test_a_request_never_sent_gives_its_take_back(tmp_path: Path) -> None:
    """A request the plan refuses (too long for every window) takes nothing from the rate limits."""
    path = tmp_path / "router.yaml"
    path.write_text(
        "backends:\n"
        '  mid: {tier: mid, base_url: "http://m/v1", model: m, context_window: 8000, self_hosted: true}\n'
        f"classifier: {{vocabulary: {REPO / 'config' / 'tasks.yaml'}}}\n"
        "policy:\n"
        "  ledger: {path: null}\n"
        "  rate_limits: [{scope: global, rpm: 2, tpm: 1000}]\n"
        "rules: [{name: default, tier: mid}]\n"
    )
    state = PolicyState(load_config(path, {}))
    taken, _ = await state.admit(None, None, 300)
    assert taken is not None and taken[1].admitted
    state.settle_rate(taken[0], 0, refund=True)
    again, _ = await state.admit(None, None, 300)
    assert again is not None
    (requests_left, _), (tokens_left, _) = again[1].remaining
    assert int(requests_left) == 1  # 2 a minute, only this one taken
    assert tokens_left == pytest.approx(700, abs=1)
