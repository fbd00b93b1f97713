"""End-to-end fixtures: two simulated upstreams and the gateway, each a real uvicorn server on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from router.app import create_app
from router.config import load_config
from router.simulator import SimProfile, create_simulator_app
from tests.servers import serve

REPO = Path(__file__).resolve().parents[2]
CLIENT_KEY = "sk-client-acme"
OTHER_KEY = "sk-client-beta"
UPSTREAM_KEY = "sk-upstream-flagship"

CONFIG = """\
auth:
  keys_env: TEST_CLIENT_KEYS
  keys:
    - {{name: ops, key_env: TEST_ADMIN_KEY, admin: true}}
backends:
  mid:
    tier: mid
    base_url: {mid}/v1
    model: sim-mid-7b
    context_window: 32768
    price: {{input: 0.1, output: 0.2}}
    timeouts: {{connect: 2, first_token: 5, idle: 5, total: 30}}
  flagship:
    tier: flagship
    base_url: {flagship}/v1
    model: sim-flagship
    api_key: ${{FLAGSHIP_KEY}}
    context_window: 200000
    price: {{input: 2, output: 8}}
    timeouts: {{connect: 2, first_token: 5, idle: 5, total: 30}}
aliases:
  gpt-4o: flagship
  gpt-4o-mini: auto
classifier:
  vocabulary: {vocabulary}
policy:
  ledger: {{path: {ledger}}}
{policy}
rules:
{rules}
"""

DEFAULT_RULES = """\
  - name: pii-stays-self-hosted
    when: {pii: true}
    tier: mid
  - name: beta-tenant-flagship
    when: {tenant: beta}
    tier: flagship
  - name: escalate-hard-tasks
    when: {task: [reasoning, math, code, legal, policy]}
    tier: flagship
  - name: default-mid
    tier: mid
"""


@dataclass
class Stack:
    url: str
    mid: str
    flagship: str
    config_path: Path

    def client(self, key: str = CLIENT_KEY, **kwargs: object) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, **kwargs)  # type: ignore[arg-type]

    def sim(self, which: str) -> httpx.Client:
        return httpx.Client(base_url=self.mid if which == "mid" else self.flagship, timeout=5)

    def reset_faults(self) -> None:
        for which in ("mid", "flagship"):
            with self.sim(which) as sim:
                sim.delete("/_sim/faults").raise_for_status()


def write_config(path: Path, mid: str, flagship: str, rules: str = DEFAULT_RULES, policy: str = "") -> None:
    """A gateway config for the simulated upstreams; ``policy`` is extra YAML indented under ``policy:``."""
    vocabulary = REPO / "config" / "tasks.yaml"
    ledger = path.parent / "spend.sqlite3"
    path.write_text(CONFIG.format(mid=mid, flagship=flagship, vocabulary=vocabulary, rules=rules, ledger=ledger, policy=policy))


ADMIN_KEY = "sk-admin-ops"
ENV = {"TEST_CLIENT_KEYS": f"{CLIENT_KEY}:acme,{OTHER_KEY}:beta", "FLAGSHIP_KEY": UPSTREAM_KEY, "TEST_ADMIN_KEY": ADMIN_KEY}


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[str, str]]:
    mid = create_simulator_app(SimProfile(name="mid", model="sim-mid-7b", ttft=0.0, token_interval=0.0, context_window=32768))
    flagship = create_simulator_app(
        SimProfile(name="flagship", model="sim-flagship", ttft=0.0, token_interval=0.0, context_window=200000, api_key=UPSTREAM_KEY)
    )
    with serve(mid) as mid_url, serve(flagship) as flagship_url:
        yield mid_url, flagship_url


@pytest.fixture(scope="module")
def stack(upstreams: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    mid_url, flagship_url = upstreams
    path = tmp_path_factory.mktemp("gateway") / "router.yaml"
    write_config(path, mid_url, flagship_url)
    app = create_app(load_config(path, ENV), path=path, environ=ENV, watch=False)
    with serve(app) as url:
        yield Stack(url, mid_url, flagship_url, path)


@pytest.fixture
def gateway(stack: Stack) -> Iterator[Stack]:
    """The shared stack, with every simulator fault cleared after the test."""
    yield stack
    stack.reset_faults()
