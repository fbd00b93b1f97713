"""The endpoints besides chat completions, end to end: gateway and simulated upstreams as real servers,
the official openai SDK as the client. Responses, legacy completions, embeddings, models/{id}, the 404."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from pydantic import BaseModel

from router.app import create_app
from router.config import load_config
from router.gateway import Gateway
from tests.e2e.conftest import CLIENT_KEY, ENV, OTHER_KEY, Stack, write_config
from tests.servers import serve

EASY = "What are your opening hours?"
HARD = "Prove that sqrt(2) is irrational."
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@dataclass
class GatewayStack(Stack):
    gateway: Gateway

    def spend_by_model(self) -> dict[str, dict]:
        ledger = self.gateway.state.ledger
        assert ledger is not None and ledger.flush(5)
        return {row["model"]: row for row in ledger.spend(group_by=("model",))}


@pytest.fixture(scope="module")
def stack(upstreams: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The shared test config, with embeddings on both backends and a file-backed response store."""
    mid_url, flagship_url = upstreams
    path = tmp_path_factory.mktemp("endpoints") / "router.yaml"
    write_config(path, mid_url, flagship_url, policy="  fallback: {mid: [flagship], flagship: [mid]}\n")
    text = path.read_text()
    text = text.replace(
        "    model: sim-mid-7b\n",
        "    model: sim-mid-7b\n    self_hosted: true\n    embeddings: {model: sim-embed-small, price: 0.02}\n"
        "    reasoning_effort: false\n    max_tokens_field: max_tokens\n",
    )
    text = text.replace(
        "    model: sim-flagship\n",
        "    model: sim-flagship\n    embeddings: {model: sim-embed-large, price: 0.13}\n"
        "    max_tokens_field: max_completion_tokens\n",
    )
    text += f"responses: {{store_path: {path.parent / 'responses.sqlite3'}}}\n"
    path.write_text(text)
    app = create_app(load_config(path, ENV), path=path, environ=ENV, watch=False)
    with serve(app) as url:
        yield GatewayStack(url, mid_url, flagship_url, path, app.state.gateway)


@pytest.fixture
def gateway(stack: GatewayStack) -> Iterator[GatewayStack]:
    yield stack
    stack.reset_faults()


def last_upstream_body(stack: Stack, which: str) -> dict:
    with stack.sim(which) as sim:
        return sim.get("/_sim/stats").json()["last_request"]["body"]


# -- responses --------------------------------------------------------------------------------------


def test_responses_create_is_routed_like_chat_and_answers_a_response(gateway: Stack) -> None:
    client = gateway.client()
    easy = client.responses.with_raw_response.create(model="auto", input=EASY)
    hard = client.responses.with_raw_response.create(model="auto", instructions="Be rigorous.", input=HARD)
    assert (easy.headers["x-router-tier"], easy.headers["x-router-rule"]) == ("mid", "default-mid")
    assert (hard.headers["x-router-tier"], hard.headers["x-router-rule"]) == ("flagship", "escalate-hard-tasks")
    assert float(hard.headers["x-router-cost-usd"]) > float(easy.headers["x-router-cost-usd"]) > 0
    response = hard.parse()
    assert response.id.startswith("resp_") and response.status == "completed" and response.model == "sim-flagship"
    assert response.output_text and response.output[0].type == "message"
    assert response.usage is not None
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens > 0
    sent = last_upstream_body(gateway, "flagship")
    assert sent["messages"] == [{"role": "system", "content": "Be rigorous."}, {"role": "user", "content": HARD}]
    assert sent["model"] == "sim-flagship"


def test_the_output_token_limit_reaches_each_backend_under_the_name_it_takes(gateway: Stack) -> None:
    client = gateway.client()
    client.responses.create(model="auto", input=HARD, max_output_tokens=50)  # escalated
    sent = last_upstream_body(gateway, "flagship")  # like OpenAI's reasoning models, which refuse max_tokens
    assert sent["max_completion_tokens"] == 50 and "max_tokens" not in sent
    client.chat.completions.create(model="auto", messages=[{"role": "user", "content": EASY}], max_completion_tokens=40)
    sent = last_upstream_body(gateway, "mid")  # like Ollama, which ignores max_completion_tokens
    assert sent["max_tokens"] == 40 and "max_completion_tokens" not in sent


def test_responses_stream_is_the_typed_event_sequence(gateway: Stack) -> None:
    client = gateway.client()
    with client.responses.stream(model="auto", input=EASY) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:5] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert len({e.response.id for e in events if hasattr(e, "response")}) == 1
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas and final.output_text == deltas and final.status == "completed"
    assert final.usage is not None and final.usage.output_tokens > 0


def test_a_stream_cut_by_max_output_tokens_ends_incomplete(gateway: Stack) -> None:
    events = list(gateway.client().responses.create(model="auto", input=EASY, max_output_tokens=12, stream=True))
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.incomplete_details.reason == "max_output_tokens"
    assert last.response.usage.output_tokens == 12


def test_function_tool_round_trip_through_previous_response_id(gateway: Stack) -> None:
    client = gateway.client()
    first = client.responses.create(
        model="auto", input="What is the weather in Paris?", tools=[WEATHER], tool_choice="required"
    )
    call = first.output[-1]
    assert call.type == "function_call" and call.name == "get_weather"
    assert isinstance(json.loads(call.arguments)["city"], str)
    second = client.responses.create(
        model="auto",
        previous_response_id=first.id,
        tools=[WEATHER],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"temp_c": 18}'}],
    )
    assert second.previous_response_id == first.id and second.output_text
    sent = last_upstream_body(gateway, "mid")
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "tool"]
    assert sent["messages"][1]["tool_calls"][0]["id"] == call.call_id
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": call.call_id, "content": '{"temp_c": 18}'}
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    listed = client.responses.input_items.list(second.id, order="asc")
    assert [item.type for item in listed] == ["message", "function_call", "function_call_output"]
    assert listed.data[1].id == call.id and listed.data[2].call_id == call.call_id


def test_stream_that_ends_with_a_tool_call(gateway: Stack) -> None:
    client = gateway.client()
    with client.responses.stream(model="auto", input="Weather in Oslo?", tools=[WEATHER], tool_choice="required") as s:
        events = list(s)
        final = s.get_final_response()
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.delta" in kinds and kinds[-1] == "response.completed"
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    call = final.output[-1]
    assert call.type == "function_call" and call.arguments == done.arguments and json.loads(call.arguments)


def test_stored_responses_are_retrieved_deleted_and_private_to_the_tenant(gateway: Stack) -> None:
    acme, beta = gateway.client(), gateway.client(OTHER_KEY)
    stored = acme.responses.create(model="mid", input=EASY)
    assert acme.responses.retrieve(stored.id).output_text == stored.output_text
    with pytest.raises(openai.NotFoundError):
        beta.responses.retrieve(stored.id)
    with pytest.raises(openai.NotFoundError) as follow_up:
        beta.responses.create(model="mid", input="and then?", previous_response_id=stored.id)
    assert follow_up.value.body["code"] == "previous_response_not_found"
    with pytest.raises(openai.NotFoundError):
        beta.responses.delete(stored.id)
    acme.responses.delete(stored.id)
    with pytest.raises(openai.NotFoundError):
        acme.responses.retrieve(stored.id)
    unstored = acme.responses.create(model="mid", input=EASY, store=False)
    with pytest.raises(openai.NotFoundError):
        acme.responses.retrieve(unstored.id)


def test_input_items_list_the_conversation_a_page_at_a_time(gateway: Stack) -> None:
    acme, beta = gateway.client(), gateway.client(OTHER_KEY)
    first = acme.responses.create(model="mid", input=EASY)
    follow_up = [{"role": "user", "content": [{"type": "input_text", "text": "And on Sunday?"}]}]
    second = acme.responses.create(model="mid", previous_response_id=first.id, input=follow_up)
    page = acme.responses.input_items.list(second.id)  # newest first, OpenAI's default
    assert [(item.type, item.role) for item in page.data] == [("message", "user"), ("message", "assistant"),
                                                                ("message", "user")]
    assert page.data[0].content[0].text == "And on Sunday?" and page.data[2].content[0].text == EASY
    assert page.data[1].id == first.output[0].id and page.has_more is False
    # The earlier input keeps its id across the conversation.
    assert [item.id for item in acme.responses.input_items.list(first.id)] == [page.data[2].id]
    # One at a time, oldest first: the SDK follows `after` from page to page until has_more is false.
    one_by_one = acme.responses.input_items.list(second.id, order="asc", limit=1)
    assert len(one_by_one.data) == 1 and one_by_one.has_more is True
    assert [item.id for item in one_by_one] == [item.id for item in reversed(page.data)]
    with pytest.raises(openai.NotFoundError) as other:
        beta.responses.input_items.list(second.id)  # another tenant's response does not exist for beta
    assert other.value.body["code"] == "response_not_found"
    for query, param in (({"limit": 101}, "limit"), ({"after": "msg_nope"}, "after"), ({"order": "up"}, "order")):
        with pytest.raises(openai.BadRequestError) as bad:
            acme.responses.input_items.list(second.id, extra_query=query)
        assert bad.value.body["param"] == param


def test_decide_reads_a_responses_body_and_notes_an_ignored_reasoning_effort(gateway: Stack) -> None:
    client = gateway.client()
    headers = {"authorization": f"Bearer {CLIENT_KEY}"}
    first = client.responses.create(model="auto", input=HARD)  # escalated: its follow-ups stay on the flagship
    body = {"model": "auto", "input": "thanks!", "previous_response_id": first.id, "reasoning": {"effort": "high"}}
    decided = httpx.post(f"{gateway.url}/v1/router/decide", json=body, headers=headers).json()
    assert decided["endpoint"] == "/v1/responses" and decided["tier"] == "flagship"
    assert decided["plan"]["rerouted"] == "sticky"  # it read the stored conversation, as /v1/responses does
    note = "reasoning effort 'high' ignored on backend 'mid' (reasoning_effort: false)"
    assert decided["notes"] == [note] and note in decided["reason"]  # mid is the flagship's fallback
    chat = {"model": "mid", "messages": [{"role": "user", "content": EASY}], "reasoning_effort": "low"}
    decided = httpx.post(f"{gateway.url}/v1/router/decide", json=chat, headers=headers).json()
    assert decided["endpoint"] == "/v1/chat/completions"
    assert decided["notes"] == ["reasoning effort 'low' ignored on backend 'mid' (reasoning_effort: false)"]
    without = httpx.post(f"{gateway.url}/v1/router/decide", json={**chat, "reasoning_effort": None}, headers=headers)
    assert without.json()["notes"] == []
    hosted = httpx.post(f"{gateway.url}/v1/router/decide", json={"model": "auto", "input": [{"type": "web_search_call"}]},
                        headers=headers)
    assert hosted.status_code == 400 and hosted.json()["error"]["param"] == "input[0].type"
    unknown = {**body, "previous_response_id": "resp_nope"}
    missing = httpx.post(f"{gateway.url}/v1/router/decide", json=unknown, headers=headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "previous_response_not_found"


def test_a_follow_up_stays_on_the_escalated_tier(gateway: Stack) -> None:
    client = gateway.client()
    first = client.responses.create(model="auto", input=HARD)
    follow = client.responses.with_raw_response.create(model="auto", input="thanks!", previous_response_id=first.id)
    assert follow.headers["x-router-tier"] == "flagship"
    assert follow.headers.get("x-router-rerouted") == "sticky"


def test_failure_before_the_first_token_falls_back(gateway: Stack) -> None:
    with gateway.sim("mid") as sim:
        sim.post("/_sim/faults", json={"status": 500, "times": 2}).raise_for_status()
    client = gateway.client()
    with client.responses.with_streaming_response.create(model="auto", input=EASY, stream=True) as raw:
        assert raw.headers["x-router-fallback"] == "mid->flagship; reason=server_error"
        kinds = [json.loads(line[6:])["type"] for line in raw.iter_lines() if line.startswith("data: ")]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"


def test_stream_failing_mid_way_ends_with_response_failed(gateway: Stack) -> None:
    with gateway.sim("mid") as sim:
        sim.post("/_sim/faults", json={"drop_after_chunks": 4, "times": 1}).raise_for_status()
    client = gateway.client()
    events = list(client.responses.create(model="mid", input=EASY, stream=True))
    assert events[-1].type == "response.failed"
    failed = events[-1].response
    assert failed.status == "failed" and failed.error is not None and "mid" in failed.error.message
    assert failed.output and failed.output[0].content[0].text  # what was produced before the failure
    with pytest.raises(openai.NotFoundError):  # a failed response is not stored
        client.responses.retrieve(failed.id)


def test_bad_responses_requests_get_openai_errors(gateway: Stack) -> None:
    client = gateway.client()
    with pytest.raises(openai.BadRequestError) as hosted:
        client.responses.create(model="auto", input=EASY, tools=[{"type": "web_search"}])
    assert hosted.value.body["param"] == "tools[0].type"
    with pytest.raises(openai.BadRequestError) as bad_item:
        client.responses.create(model="auto", input=[{"type": "message", "role": "robot", "content": "hi"}])
    assert bad_item.value.body["param"] == "input[0].role"
    with pytest.raises(openai.BadRequestError) as bad_type:
        client.responses.create(model="auto", input=EASY, temperature=7)
    assert bad_type.value.body["param"] == "temperature"
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="gpt-9", input=EASY)
    with pytest.raises(openai.AuthenticationError):
        gateway.client("sk-wrong").responses.create(model="auto", input=EASY)


# -- embeddings ------------------------------------------------------------------------------------


def test_embeddings_go_to_the_self_hosted_default_and_are_deterministic(gateway: Stack) -> None:
    client = gateway.client()
    raw = client.embeddings.with_raw_response.create(model="auto", input=["hello world", "goodbye"])
    again = client.embeddings.create(model="auto", input="hello world", encoding_format="float")
    assert (raw.headers["x-router-backend"], raw.headers["x-router-rule"]) == ("mid", "embeddings-default")
    result = raw.parse()
    assert result.model == "sim-embed-small" and len(result.data) == 2
    assert result.data[0].embedding == pytest.approx(again.data[0].embedding, abs=1e-6)
    assert result.data[0].embedding != result.data[1].embedding
    assert sum(x * x for x in result.data[0].embedding) == pytest.approx(1.0, abs=1e-4)
    assert result.usage.prompt_tokens > 0
    assert float(raw.headers["x-router-cost-usd"]) == pytest.approx(result.usage.prompt_tokens * 0.02 / 1e6)


def test_embeddings_report_their_own_task_and_leave_the_classifier_counts_alone(gateway: Stack) -> None:
    """A RAG stack embeds far more text than it sends to chat: its inputs must not skew the task mix."""

    def decisions() -> float:
        lines = httpx.get(f"{gateway.url}/metrics").text.splitlines()
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines
                   if line.startswith("llm_router_classifier_decisions_total{"))

    before = decisions()
    raw = gateway.client().embeddings.with_raw_response.create(model="auto", input="What are your opening hours?")
    assert raw.headers["x-router-task"] == "embeddings"
    assert decisions() == before
    requests = [line for line in httpx.get(f"{gateway.url}/metrics").text.splitlines()
                if line.startswith("llm_router_requests_total{") and 'rule="embeddings-default"' in line]
    assert requests and all('task="embeddings"' in line for line in requests)


def test_embeddings_leave_the_backends_generation_latency_alone(gateway: Stack) -> None:
    """What ``max_ttft_ms`` and decide read is the latency of answers, not of (much quicker) embeddings."""
    client = gateway.client()
    client.chat.completions.create(model="mid", messages=[{"role": "user", "content": EASY}])

    def mid_load() -> dict:
        decided = httpx.post(f"{gateway.url}/v1/router/decide", json={"model": "mid", "messages": [{"role": "user", "content": EASY}]},
                             headers={"authorization": f"Bearer {CLIENT_KEY}"}).json()
        return decided["plan"]["chain"][0]["load"]

    before = mid_load()
    assert before["total_ms"] is not None
    for _ in range(5):
        client.embeddings.create(model="mid", input="hello world")
    assert mid_load() == before


def test_embeddings_by_name_and_personal_data_stays_home(gateway: Stack) -> None:
    client = gateway.client()
    by_tier = client.embeddings.with_raw_response.create(model="flagship", input="hello", dimensions=64)
    assert by_tier.headers["x-router-backend"] == "flagship" and len(by_tier.parse().data[0].embedding) == 64
    assert client.embeddings.create(model="sim-embed-large", input="hi").model == "sim-embed-large"
    with pytest.raises(openai.InternalServerError) as pii:
        client.embeddings.create(model="flagship", input="Mail me at jane.doe@example.com")
    assert pii.value.status_code == 503
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="text-embedding-nope", input="hi")
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="auto", input=[])


def test_embeddings_are_in_the_ledger(gateway: GatewayStack) -> None:
    before = gateway.spend_by_model().get("sim-embed-small", {"requests": 0, "input_tokens": 0, "output_tokens": 0})
    tokens = gateway.client().embeddings.create(model="auto", input="ledger me").usage.prompt_tokens
    after = gateway.spend_by_model()["sim-embed-small"]
    assert after["requests"] == before["requests"] + 1
    assert after["input_tokens"] == before["input_tokens"] + tokens
    assert after["output_tokens"] == before["output_tokens"] == 0


# -- completions, models, unknown paths ---------------------------------------------------------------


def test_legacy_completions_stream_and_non_stream(gateway: Stack) -> None:
    client = gateway.client()
    raw = client.completions.with_raw_response.create(model="auto", prompt=HARD, max_tokens=8)
    assert raw.headers["x-router-tier"] == "flagship"
    completion = raw.parse()
    assert completion.object == "text_completion" and completion.choices[0].text
    assert completion.choices[0].finish_reason == "length" and completion.usage.completion_tokens == 8
    chunks = list(
        client.completions.create(model="auto", prompt=EASY, stream=True, stream_options={"include_usage": True})
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert all(c.object == "text_completion" for c in chunks)
    with pytest.raises(openai.BadRequestError) as echo:
        client.completions.create(model="auto", prompt=EASY, echo=True)
    assert echo.value.body["param"] == "echo"


def test_responses_and_completions_are_accounted_like_chat(gateway: GatewayStack, caplog: pytest.LogCaptureFixture) -> None:
    """Each answer is one ledger row with its cost and one access-log line with its path; a legacy
    completions stream that breaks mid-way ends with an error the SDK raises, and is still billed."""
    caplog.set_level(logging.INFO, logger="router.access")
    client = gateway.client()
    before = gateway.spend_by_model().get("sim-mid-7b", {"requests": 0, "cost_usd": 0.0})
    answered = client.responses.with_raw_response.create(model="mid", input=EASY)
    list(client.responses.create(model="mid", input=EASY, stream=True))
    completed = client.completions.with_raw_response.create(model="mid", prompt=EASY, max_tokens=8)
    list(client.completions.create(model="mid", prompt=EASY, max_tokens=8, stream=True))
    with gateway.sim("mid") as sim:
        sim.post("/_sim/faults", json={"drop_after_chunks": 3, "times": 1}).raise_for_status()
    with pytest.raises(openai.APIError):
        list(client.completions.create(model="mid", prompt=EASY, max_tokens=30, stream=True))
    after = gateway.spend_by_model()["sim-mid-7b"]
    assert after["requests"] - before["requests"] == 5
    costs = float(answered.headers["x-router-cost-usd"]) + float(completed.headers["x-router-cost-usd"])
    assert after["cost_usd"] - before["cost_usd"] > costs > 0  # plus the three streams'
    paths = [(r.fields["path"], r.fields["status"]) for r in caplog.records if r.name == "router.access"]  # type: ignore[attr-defined]
    assert paths[-5:] == [("/v1/responses", 200)] * 2 + [("/v1/completions", 200)] * 2 + [("/v1/completions", 502)]


def test_models_retrieve_and_unknown_paths(gateway: Stack) -> None:
    client = gateway.client()
    assert client.models.retrieve("auto").id == "auto"
    assert client.models.retrieve("sim-embed-small").id == "sim-embed-small"
    listed = [model.id for model in client.models.list()]
    assert listed[0] == "auto" and {"mid", "flagship", "sim-embed-small", "sim-embed-large"} <= set(listed)
    assert len(listed) == len(set(listed))
    assert all(client.models.retrieve(name).id == name for name in listed)  # the list and retrieve agree
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-9")
    unknown = httpx.post(f"{gateway.url}/v1/assistants", json={})
    assert unknown.status_code == 404
    message = unknown.json()["error"]["message"]
    assert "POST /v1/responses" in message and "POST /v1/embeddings" in message


def test_endpoint_metrics(gateway: Stack) -> None:
    client = gateway.client()
    client.responses.create(model="auto", input=EASY)
    client.embeddings.create(model="auto", input="x")
    text = httpx.get(f"{gateway.url}/metrics").text
    assert 'llm_router_endpoint_requests_total{endpoint="responses",status_class="2xx"}' in text
    assert 'llm_router_endpoint_requests_total{endpoint="embeddings",status_class="2xx"}' in text


def test_the_response_store_survives_a_gateway_restart(gateway: GatewayStack, tmp_path: Path) -> None:
    stored = gateway.client().responses.create(model="mid", input=EASY)
    # What a stopping gateway does (the store is written within a fraction of a second of the answer,
    # and flushed at shutdown); a second gateway reading the same file then finds the response.
    assert gateway.gateway.responses.flush()
    app = create_app(load_config(gateway.config_path, ENV), path=gateway.config_path, environ=ENV, watch=False)
    with serve(app) as url:
        again = openai.OpenAI(base_url=f"{url}/v1", api_key=CLIENT_KEY, max_retries=0)
        assert again.responses.retrieve(stored.id).output_text == stored.output_text


# -- responses: native ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def native(upstreams: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The flagship speaks the Responses API itself (``responses: native``); mid is translated."""
    mid_url, flagship_url = upstreams
    path = tmp_path_factory.mktemp("native") / "router.yaml"
    write_config(path, mid_url, flagship_url, policy="  fallback: {mid: [flagship], flagship: [mid]}\n")
    path.write_text(
        path.read_text().replace("    model: sim-flagship\n", "    model: sim-flagship\n    responses: native\n")
    )
    app = create_app(load_config(path, ENV), path=path, environ=ENV, watch=False)
    with serve(app) as url:
        stack = Stack(url, mid_url, flagship_url, path)
        try:
            yield stack
        finally:
            stack.reset_faults()


def test_a_native_backend_gets_the_whole_conversation_and_answers_under_the_gateway_id(native: Stack) -> None:
    client = native.client()
    first = client.responses.with_raw_response.create(model="auto", input=HARD, instructions="Be rigorous.")
    assert first.headers["x-router-backend"] == "flagship" and "x-router-fallback" not in first.headers
    assert float(first.headers["x-router-cost-usd"]) > 0
    response = first.parse()
    sent = last_upstream_body(native, "flagship")
    assert sent["input"] == [{"type": "message", "role": "user", "content": HARD}]
    assert (sent["model"], sent["store"], sent["instructions"]) == ("sim-flagship", False, "Be rigorous.")
    assert client.responses.retrieve(response.id).output_text == response.output_text != ""

    with client.responses.stream(model="auto", input="And for sqrt(3)?", previous_response_id=response.id) as stream:
        events = list(stream)
        final = stream.get_final_response()
    sent = last_upstream_body(native, "flagship")
    assert "previous_response_id" not in sent and len(sent["input"]) == 3  # the question, the answer, the follow-up
    assert sent["input"][1]["type"] == "message" and sent["input"][1]["role"] == "assistant"
    assert "id" not in sent["input"][1]  # the gateway's item ids mean nothing to the backend
    assert {e.response.id for e in events if hasattr(e, "response")} == {final.id}
    assert final.id.startswith("resp_") and final.previous_response_id == response.id and final.output_text
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert client.responses.retrieve(final.id).output_text == final.output_text


def test_a_native_backend_that_fails_falls_back_to_a_translated_one(native: Stack) -> None:
    with native.sim("flagship") as sim:
        sim.post("/_sim/faults", json={"status": 503, "times": 2}).raise_for_status()
    client = native.client()
    with client.responses.with_streaming_response.create(model="flagship", input=HARD, stream=True) as raw:
        assert raw.headers["x-router-fallback"] == "flagship->mid; reason=server_error"
        kinds = [json.loads(line[6:])["type"] for line in raw.iter_lines() if line.startswith("data: ")]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"


def test_structured_output_through_responses_parse(gateway: Stack) -> None:
    class Weather(BaseModel):
        city: str
        temperature_c: float

    parsed = gateway.client().responses.parse(model="auto", input="Weather in Rome as JSON.", text_format=Weather)
    assert isinstance(parsed.output_parsed, Weather) and parsed.output_parsed.city
    sent = last_upstream_body(gateway, "mid")
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["name"] == "Weather"
