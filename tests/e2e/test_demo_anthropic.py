"""``llm-router demo --anthropic-flagship``: the simulated flagship speaks Anthropic's Messages API, so
the outbound translation runs with no keys; the demo also serves ``/v1/messages`` to Anthropic clients."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import anthropic
import openai
import pytest

from tests.e2e.test_demo_command import DemoSetup, running_demo
from tests.servers import free_port

HARD = [{"role": "user", "content": "Prove that the square root of 2 is irrational, step by step."}]
EASY = [{"role": "user", "content": "What are your opening hours?"}]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    setup = DemoSetup(tmp_path_factory.mktemp("demo"), tmp_path_factory.mktemp("state"), free_port(), free_port(), free_port())
    with running_demo(setup, "--anthropic-flagship") as running:
        yield running


def test_openai_sdk_reaches_the_anthropic_speaking_flagship(demo: tuple[str, subprocess.Popen[bytes]]) -> None:
    with openai.OpenAI(base_url=f"{demo[0]}/v1", api_key="demo", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=HARD)  # type: ignore[arg-type]
        stream = list(
            client.chat.completions.create(
                model="flagship",
                messages=EASY,
                stream=True,  # type: ignore[arg-type]
                stream_options={"include_usage": True},
            )
        )
    assert raw.headers["x-router-tier"] == "flagship"
    completion = raw.parse()
    assert completion.id.startswith("msg_")  # translated from the simulator's Anthropic message
    assert completion.choices[0].message.content and completion.usage is not None
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices).strip()
    assert stream[-1].usage is not None and stream[-1].usage.completion_tokens > 0


def test_anthropic_sdk_against_the_demo(demo: tuple[str, subprocess.Popen[bytes]]) -> None:
    with anthropic.Anthropic(base_url=demo[0], api_key="demo", max_retries=0) as client:
        easy = client.messages.with_raw_response.create(model="claude-haiku-4-5", max_tokens=100, messages=EASY)  # type: ignore[arg-type]
        with client.messages.stream(model="claude-sonnet-4-5", max_tokens=50, messages=EASY) as stream:  # type: ignore[arg-type]
            text = "".join(stream.text_stream)
    assert easy.headers["x-router-tier"] == "mid" and easy.parse().content[0].text  # type: ignore[union-attr]
    assert text.strip()
