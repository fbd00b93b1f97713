"""Legacy completions <-> chat completions at the wire: fixed examples in, exact payloads out."""

from __future__ import annotations

from typing import Any

import pytest

from router.errors import InvalidRequestError
from router.upstream.completions_wire import chat_request, chat_to_completion, chunk_to_completion


def test_the_prompt_becomes_one_user_message_and_sampling_carries_over() -> None:
    body = {
        "model": "auto",
        "prompt": ["Say hi"],
        "max_tokens": 5,
        "temperature": 0.1,
        "stop": ["\n"],
        "n": 2,
        "stream": True,
        "stream_options": {"include_usage": True},
        "logprobs": 2,
        "echo": False,
    }
    assert chat_request(body) == {
        "model": "auto",
        "messages": [{"role": "user", "content": "Say hi"}],
        "max_tokens": 5,
        "temperature": 0.1,
        "n": 2,
        "stop": ["\n"],
        "stream": True,
        "stream_options": {"include_usage": True},
        "logprobs": True,
        "top_logprobs": 2,
    }


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"prompt": ["a", "b"]}, "prompt"),
        ({"prompt": [1, 2, 3]}, "prompt"),
        ({"echo": True}, "echo"),
        ({"suffix": "x"}, "suffix"),
        ({"best_of": 3}, "best_of"),
    ],
)
def test_what_chat_cannot_do_is_refused(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        chat_request({"model": "auto", "prompt": "hi", **extra})
    assert refused.value.param == param


def test_answers_and_chunks_become_text_completions() -> None:
    completion = {
        "id": "chatcmpl-7",
        "created": 3,
        "model": "m",
        "usage": {"prompt_tokens": 1, "completion_tokens": 2},
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi!"}, "finish_reason": "stop"}],
    }
    assert chat_to_completion(completion) == {
        "id": "cmpl-7",
        "object": "text_completion",
        "created": 3,
        "model": "m",
        "choices": [{"index": 0, "text": "Hi!", "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2},
    }
    head = {"id": "chatcmpl-7", "created": 3, "model": "m"}
    assert (
        chunk_to_completion({**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}) is None
    )
    assert chunk_to_completion(
        {**head, "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]}
    ) == {
        "id": "cmpl-7",
        "object": "text_completion",
        "created": 3,
        "model": "m",
        "choices": [{"index": 0, "text": "Hi", "logprobs": None, "finish_reason": None}],
    }
    assert chunk_to_completion({**head, "choices": [], "usage": {"prompt_tokens": 1}})["usage"] == {"prompt_tokens": 1}
