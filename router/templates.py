"""Prompt templates that do not change what a request asks, for training and measuring the model.

Applications and datasets wrap the same request in templates of their own: a system prompt, a
"Question: ... Answer:" frame, a closing "Keep it short.". The rows of one source mostly share one
layout, so a model fitted on them learns the layout (its line breaks, its frame words) as a sign of
the source's tier, and a request in another frame is routed differently. ``llm-router train`` adds
copies of every row wrapped in ``TRAINING`` templates, in both tiers alike, so that a frame weighs
nothing (they frame the user message: the model does not read system prompts). ``MEASURING`` holds
other templates, in other words, that training never uses, system prompts among them, and
leave-one-source-out accuracy of the routing under them is the report's "unseen templates" column.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Template:
    """A frame around the last user message (``{request}`` stands for it), or a system prompt."""

    name: str
    user: str = "{request}"
    system: str | None = None

    def apply(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The messages with the frame applied; a request that already has a system prompt keeps it,
        and non-text content is left as it is."""
        out = list(messages)
        if self.user != "{request}":
            last = next((i for i in range(len(out) - 1, -1, -1) if out[i].get("role") == "user"), None)
            if last is not None and isinstance(out[last].get("content"), str):
                out[last] = {**out[last], "content": self.user.replace("{request}", out[last]["content"])}
        if self.system is not None and not any(m.get("role") in ("system", "developer") for m in out):
            out.insert(0, {"role": "system", "content": self.system})
        return out


TRAINING = (
    Template("question-answer", "Question: {request}\nAnswer:"),
    Template("q-a", "Q: {request}\nA:"),
    Template("input-output", "Input: {request}\nOutput:"),
    Template("here-is", "Here is my question:\n\n{request}"),
    Template("respond-to", "Please respond to the following:\n{request}"),
    Template("concise", "{request}\n\nPlease answer concisely."),
    Template("keep-short", "{request}\n\nKeep it short."),
    Template("give-answer", "{request}\n\nGive me your answer."),
    Template("thanks", "{request}\n\nThanks in advance!"),
    Template("blank-lines", "\n{request}\n"),
    Template("greeting", "Hi there, {request}"),
)

MEASURING = (
    Template("reply-briefly", "{request}\n\nReply briefly."),
    Template("instruction-response", "### Instruction:\n{request}\n\n### Response:"),
    Template("user-query", "User query: {request}"),
    Template("one-paragraph", "{request}\nOne paragraph max."),
    Template("task", "Task:\n{request}"),
    Template("i-have-a-request", "I have a request.\n\n{request}"),
    Template("reply-in-english", "{request}\n\nReply in English."),
    Template("prompt-response", "Prompt: {request}\nResponse:"),
    Template("be-brief", "{request} (Be brief.)"),
    Template("hello", "Hello! {request}"),
    Template("system-terse", system="Terse replies only."),
    # a widely used default system prompt, verbatim: some of its words are also in TRAINING's
    Template("system-honest", system=(
        "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while "
        "being safe. If a question does not make any sense, or is not factually coherent, explain why "
        "instead of answering something not correct. If you don't know the answer to a question, please "
        "don't share false information.")),
)


def pick(templates: tuple[Template, ...], key: str, k: int = 1) -> list[Template]:
    """``k`` different templates for the row ``key``: the same ones on every run."""
    return sorted(templates, key=lambda t: zlib.crc32(f"{key}\0{t.name}".encode()))[:k]
