"""openai-agents, in its default (Responses) mode, runs an agent with a tool against ``llm-router demo``."""

from __future__ import annotations

import subprocess

import httpx
import openai
from agents import Agent, OpenAIResponsesModel, RunConfig, Runner, function_tool

from tests.e2e.test_demo_command import DemoSetup, demo, demo_setup  # noqa: F401  (the demo process fixtures)

NO_TRACING = RunConfig(tracing_disabled=True)  # traces would go to api.openai.com


async def test_an_agent_calls_its_tool_and_answers(
    demo: tuple[str, subprocess.Popen[bytes]],  # noqa: F811
    demo_setup: DemoSetup,  # noqa: F811
) -> None:
    url, _ = demo
    cities: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The current weather in a city."""
        cities.append(city)
        return f"18 degrees and sunny in {city}"

    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="demo", max_retries=0) as client:
        agent = Agent(
            name="weather",
            instructions="Answer with the weather tool.",
            tools=[get_weather],
            model=OpenAIResponsesModel(model="auto", openai_client=client),
        )
        result = await Runner.run(agent, "What is the weather in Paris?", run_config=NO_TRACING)
        assert len(cities) == 1 and cities[0]
        assert [item.type for item in result.new_items] == [
            "tool_call_item",
            "tool_call_output_item",
            "message_output_item",
        ]
        assert isinstance(result.final_output, str) and result.final_output
        # Two model calls, the second carrying the tool's output through the gateway's translation.
        assert [r.response_id[:5] for r in result.raw_responses] == ["resp_", "resp_"]

        streamed = Runner.run_streamed(agent, "And in Oslo?", run_config=NO_TRACING)
        async for _ in streamed.stream_events():
            pass
        assert len(cities) == 2 and isinstance(streamed.final_output, str) and streamed.final_output
    metrics = httpx.get(f"{url}/metrics").text
    assert 'llm_router_endpoint_requests_total{endpoint="responses",status_class="2xx"} 4.0' in metrics
    # The demo keeps stored responses in its state directory, beside its ledger.
    assert (demo_setup.ledger.parent / "demo-responses.sqlite3").is_file()
