"""The README's recipes work as written: the "three lines" load the shipped config as they say."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from router.cli import _parser
from router.config import load_config

REPO = Path(__file__).resolve().parents[1]


def recipes() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("### Real upstreams in three lines", 1)[1].split("\n### ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, re.S)


def exported(recipe: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in recipe.splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["export"]:
            env.update(word.split("=", 1) for word in words[1:])  # type: ignore[misc]
    return env


def test_there_is_a_recipe_each_for_vllm_ollama_and_openai() -> None:
    found = recipes()
    assert len(found) == 3
    for recipe in found:
        assert len(recipe.strip().splitlines()) == 3
        assert recipe.strip().splitlines()[-1] == "llm-router serve --config config/router.yaml"


@pytest.mark.parametrize(
    ("index", "mid_url", "mid_model", "flagship_url"),
    [
        (0, "http://127.0.0.1:8000/v1", "Qwen/Qwen2.5-7B-Instruct", "https://api.openai.com/v1"),  # vLLM
        (1, "http://127.0.0.1:11434/v1", "qwen2.5:7b-instruct", "https://api.openai.com/v1"),  # Ollama
        (2, "http://127.0.0.1:8000/v1", "Qwen/Qwen2.5-7B-Instruct", "https://api.openai.com/v1"),  # OpenAI
    ],
)
def test_recipe_configures_the_shipped_config(index: int, mid_url: str, mid_model: str, flagship_url: str) -> None:
    recipe = recipes()[index]
    args = _parser().parse_args(shlex.split(recipe.strip().splitlines()[-1])[1:])
    config = load_config(REPO / args.config, exported(recipe))
    mid, flagship = config.backends["mid"], config.backends["flagship"]
    assert (mid.base_url, mid.model, mid.self_hosted) == (mid_url, mid_model, True)
    assert flagship.base_url == flagship_url and flagship.api_key is not None
