"""Stored Responses across worker processes: ``llm-router serve --workers 2`` sharing one store file,
each request on a new connection (so either worker may take it), the official openai SDK as client.

A follow-up sent the moment its answer arrived finds the response (the other worker may still be
writing it) and stays on the tier that answered the conversation, whichever worker serves it.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import openai

from tests.e2e.conftest import CLIENT_KEY, ENV, write_config
from tests.e2e.processes import gateway_process

HARD = "Prove that sqrt(2) is irrational."
EASY = "What are your opening hours?"


def fresh_client(url: str) -> openai.OpenAI:
    """A client whose every request opens a new connection: the kernel hands it to either worker."""
    return openai.OpenAI(base_url=f"{url}/v1", api_key=CLIENT_KEY, max_retries=0,
                         http_client=httpx.Client(headers={"connection": "close"}, timeout=30))


def test_follow_ups_through_either_worker_find_the_response_and_keep_its_tier(
    upstreams: tuple[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "router.yaml"
    write_config(config, *upstreams)
    config.write_text(config.read_text() + f"responses: {{store_path: {tmp_path / 'responses.sqlite3'}}}\n")
    with gateway_process(config, ENV, workers=2) as gateway:
        client = fresh_client(gateway.url)
        tiers, sticky = [], []
        for _ in range(12):
            first = client.responses.with_raw_response.create(model="auto", input=HARD)
            assert first.headers["x-router-tier"] == "flagship"
            # at once, through whichever worker takes the new connection
            follow = client.responses.with_raw_response.create(
                model="auto", previous_response_id=first.parse().id,
                input="thanks!",
            )
            assert follow.status_code == 200
            tiers.append(follow.headers["x-router-tier"])
            sticky.append(follow.headers.get("x-router-rerouted"))
            easy = client.responses.with_raw_response.create(model="auto", input=EASY)
            again = client.responses.with_raw_response.create(
                model="auto", input=EASY, previous_response_id=easy.parse().id)
            assert (easy.headers["x-router-tier"], again.headers["x-router-tier"]) == ("mid", "mid")
    assert tiers == ["flagship"] * 12 and sticky == ["sticky"] * 12
