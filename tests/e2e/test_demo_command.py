"""``llm-router demo`` as users start it: a real process, the official SDK as the client, Ctrl-C to stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from tests.servers import free_port

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class DemoSetup:
    """Where the demo runs: an empty working directory, its own state home and pinned upstream ports."""

    cwd: Path
    state_home: Path
    port: int
    mid_port: int
    flagship_port: int

    @property
    def ledger(self) -> Path:
        return self.state_home / "llm-router" / "demo-spend.sqlite3"


@pytest.fixture(scope="module")
def demo_setup(tmp_path_factory: pytest.TempPathFactory) -> DemoSetup:
    return DemoSetup(tmp_path_factory.mktemp("demo"), tmp_path_factory.mktemp("state"), free_port(), free_port(), free_port())


def demo_env(setup: DemoSetup) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROUTER_", "LLM_ROUTER_", "OPENAI_"))}
    env["PYTHONPATH"] = str(REPO)
    env["XDG_STATE_HOME"] = str(setup.state_home)
    return env


@pytest.fixture(scope="module")
def demo(demo_setup: DemoSetup) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The demo on free ports, run from an empty directory (it falls back to the repo's demo config)."""
    with running_demo(demo_setup) as running:
        yield running


@contextmanager
def running_demo(setup: DemoSetup, *options: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``llm-router demo [options]`` on ``setup``'s ports and directories, until the block ends."""
    port = setup.port
    proc = subprocess.Popen(
        [sys.executable, "-m", "router", "demo", "--port", str(port),
         "--mid-port", str(setup.mid_port), "--flagship-port", str(setup.flagship_port), *options],
        cwd=setup.cwd,
        env=demo_env(setup),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"demo did not come up:\n{proc.communicate()[0].decode(errors='replace')}")
        time.sleep(0.1)
    try:
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_sdk_chat_against_the_demo_routes_by_difficulty(demo: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, _ = demo
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="demo", max_retries=0)
    easy = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "What are your opening hours?"}]
    )
    hard = client.chat.completions.with_raw_response.create(
        model="auto",
        messages=[{"role": "user", "content": "Prove that the square root of 2 is irrational, step by step."}],
    )
    assert (easy.headers["x-router-tier"], hard.headers["x-router-tier"]) == ("mid", "flagship")
    completion = easy.parse()
    assert completion.object == "chat.completion" and completion.choices[0].message.content
    assert completion.usage is not None and completion.usage.completion_tokens > 0


def test_sdk_stream_against_the_demo_ends_with_usage(demo: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, _ = demo
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="demo", max_retries=0)
    chunks = list(
        client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "Summarise: the meeting moved to 3pm."}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_sdk_sees_an_openai_shaped_error_from_the_demo(demo: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, _ = demo
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="demo", max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="auto", messages=[])
    assert caught.value.status_code == 400
    assert isinstance(caught.value.body, dict) and caught.value.body.get("message")


def test_simulated_upstreams_listen_on_the_ports_given(demo: tuple[str, subprocess.Popen[bytes]], demo_setup: DemoSetup) -> None:
    for port, model in ((demo_setup.mid_port, "sim-qwen2.5-7b-instruct"), (demo_setup.flagship_port, "sim-flagship-large")):
        models = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="demo", max_retries=0).models.list()
        assert [m.id for m in models.data] == [model]


def test_a_taken_upstream_port_is_one_clear_error(demo_setup: DemoSetup) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "router", "demo", "--port", str(free_port()), "--mid-port", str(port),
             "--flagship-port", "0"],
            cwd=demo_setup.cwd, env=demo_env(demo_setup), capture_output=True, text=True, timeout=60, check=False,
        )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"llm-router demo: cannot listen on 127.0.0.1:{port} (Address already in use); "
        "pick another port with --mid-port (0 picks a free one)"
    ]


def test_ctrl_c_stops_the_demo_cleanly(demo: tuple[str, subprocess.Popen[bytes]], demo_setup: DemoSetup) -> None:
    """Last in this module: it stops the shared demo, whose banner said where the ledger is."""
    _, proc = demo
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, output.decode(errors="replace")
    assert b"llm-router demo: gateway on" in output and b"Traceback" not in output
    text = output.decode()
    assert f"mid on :{demo_setup.mid_port}, flagship on :{demo_setup.flagship_port}" in text
    assert f"Spend ledger: {demo_setup.ledger}" in text
    # The requests above were billed in the state directory, not in the working directory.
    assert demo_setup.ledger.is_file()
    assert list(demo_setup.cwd.iterdir()) == []
