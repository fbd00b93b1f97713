"""``llm-router demo`` as users start it: a real process, the official SDK as the client, Ctrl-C to stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.servers import free_port

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The demo on a free port, run from an empty directory (it falls back to the repo's demo config)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROUTER_", "LLM_ROUTER_", "OPENAI_"))}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.Popen(
        [sys.executable, "-m", "router", "demo", "--port", str(port)],
        cwd=tmp_path_factory.mktemp("demo"),
        env=env,
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
        assert proc.stdout is not None
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


def test_ctrl_c_stops_the_demo_cleanly(demo: tuple[str, subprocess.Popen[bytes]]) -> None:
    """Last in this module: it stops the shared demo."""
    _, proc = demo
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, output.decode(errors="replace")
    assert b"llm-router demo: gateway on" in output and b"Traceback" not in output
