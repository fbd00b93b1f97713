"""Shadow judging's pure parts: the judge's prompt, the answer's text, reading the verdict, the simulated judge, the config."""

from __future__ import annotations

import pytest

from router.config import ConfigError, load_config
from router.evaluate.shadow import RUBRIC, answer_text, judge_messages, parse_verdict, streamed_text
from router.simulator_text import compose_replies
from router.upstream.base import Chunk
from tests.evaluate.conftest import EditConfig


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"verdict": "acceptable", "reason": "fine"}', ("acceptable", False)),
        ('Sure.\n```json\n{"verdict": "unacceptable", "reason": "wrong sum"}\n```', ("unacceptable", False)),
        ('{"verdict": "acceptable", "reason": "x", "simulated": true}', ("acceptable", True)),
        ('{"verdict": "acceptable", "reason": "unbalanced {"', ("acceptable", False)),
        ('{"verdict": "maybe"}', ("error", False)),
        ("I think it is fine", ("error", False)),
        ("", ("error", False)),
    ],
)
def test_parse_verdict(reply: str, expected: tuple[str, bool]) -> None:
    assert parse_verdict(reply) == expected


def test_judge_sees_the_rubric_the_conversation_and_the_answer() -> None:
    messages = [{"role": "system", "content": "You are a bank's assistant."},
                {"role": "user", "content": [{"type": "text", "text": "How do I reset my password?"}]}]
    system, user = judge_messages(messages, "Click 'Forgot password'.")
    assert system == {"role": "system", "content": RUBRIC}
    assert user["content"] == ("Conversation:\nsystem: You are a bank's assistant.\n\nuser: How do I reset my password?"
                               "\n\nAnswer under review:\nClick 'Forgot password'.")
    long = judge_messages([{"role": "user", "content": "x" * 50_000}], "y" * 50_000)[1]["content"]
    assert len(long) < 25_000


def test_streamed_text_puts_the_first_choice_back_together() -> None:
    def chunk(**delta: object) -> Chunk:
        return Chunk(b"", {"choices": [{"index": 0, "delta": delta}]})

    chunks = [chunk(role="assistant", content=""), chunk(content="Click "), chunk(content="'Forgot password'."),
              Chunk(b"", {"choices": [{"index": 1, "delta": {"content": "other choice"}}]}),
              chunk(tool_calls=[{"index": 0, "function": {"name": "lookup", "arguments": '{"id"'}}]),
              chunk(tool_calls=[{"index": 0, "function": {"arguments": ": 7}"}}]),
              Chunk(b"", {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}})]
    assert streamed_text(chunks) == "Click 'Forgot password'.\n[tool call] lookup({\"id\": 7})"


def test_answer_text_includes_tool_calls() -> None:
    completion = {"choices": [{"message": {"content": None, "tool_calls": [
        {"function": {"name": "lookup", "arguments": '{"id": 7}'}}]}}]}
    assert answer_text(completion) == '[tool call] lookup({"id": 7})'
    assert answer_text({"choices": []}) == ""


def test_simulated_judge_is_deterministic_and_labelled() -> None:
    verdicts = []
    for i in range(60):
        body = {"model": "j", "messages": judge_messages([{"role": "user", "content": f"question {i}"}], f"answer {i}")}
        reply = "".join(compose_replies(body, tier="flagship", model="j", default_length=20)[0].pieces)
        again = "".join(compose_replies(body, tier="flagship", model="j", default_length=20)[0].pieces)
        assert reply == again
        verdict, simulated = parse_verdict(reply)
        assert simulated and verdict in ("acceptable", "unacceptable")
        verdicts.append(verdict)
    assert 0 < verdicts.count("unacceptable") < 20  # about one in ten


@pytest.mark.parametrize(
    ("shadow", "error"),
    [
        ("{judge: flagshp}", "policy.shadow.judge: unknown tier or backend 'flagshp'"),
        ("{judge: flagship, rules: [nope]}", "policy.shadow.rules[0]: unknown rule 'nope'"),
        ("{judge: flagship, sample_rate: 2}", "policy.shadow.sample_rate: Input should be less than or equal to 1"),
    ],
)
def test_shadow_config_is_validated(edited_config: EditConfig, shadow: str, error: str) -> None:
    path = edited_config("  degrade_under_stress: true\n", f"  degrade_under_stress: true\n  shadow: {shadow}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, {"OPENAI_API_KEY": "x"})
    assert any(error in line for line in info.value.errors), info.value.errors


def test_shadow_config_accepts_rules_and_requested_model(edited_config: EditConfig) -> None:
    path = edited_config("  degrade_under_stress: true\n",
                         "  degrade_under_stress: true\n  shadow: {judge: flagship, rules: [default-mid, requested-model]}\n")
    assert load_config(path, {"OPENAI_API_KEY": "x"}).policy.shadow is not None
