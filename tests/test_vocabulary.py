"""The vocabulary file: the shipped one loads, and broken ones are reported line by line with their path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from router.vocabulary import Vocabulary, VocabularyError, expand, load_vocabulary, words

SHIPPED = Path(__file__).resolve().parent.parent / "config" / "tasks.yaml"

MINIMAL: dict[str, Any] = {
    "default_task": "chat",
    "tasks": {
        "chat": {"description": "Small talk.", "cues": [{"weight": 2, "phrases": ["hello"]}]},
        "code": {"description": "Programming.",
                 "cues": [{"weight": 3, "phrases": ["write a function"], "patterns": ["```"]}]},
    },
    "pii": {"email": {"patterns": ["@[a-z]+"], "requires": "@"}},
}


def write(tmp_path: Path, tree: Any) -> Path:
    path = tmp_path / "tasks.yaml"
    path.write_text(tree if isinstance(tree, str) else yaml.safe_dump(tree), encoding="utf-8")
    return path


def errors_of(tmp_path: Path, tree: Any) -> list[str]:
    path = write(tmp_path, tree)
    with pytest.raises(VocabularyError) as info:
        load_vocabulary(path)
    assert str(info.value) == "\n".join(info.value.errors)
    return [line.removeprefix(f"{path}: ") for line in info.value.errors]


def with_change(path: str, value: Any) -> dict[str, Any]:
    """MINIMAL with the value at a dotted path replaced (or added)."""
    tree = yaml.safe_load(yaml.safe_dump(MINIMAL))
    *parents, last = path.split(".")
    node = tree
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return tree


def test_shipped_vocabulary_loads_with_the_required_tasks() -> None:
    vocabulary = load_vocabulary(SHIPPED)
    required = {"chat", "faq", "qa", "classification", "extraction", "summarize", "rewrite", "translate",
                "creative", "code", "math", "reasoning", "legal", "policy"}
    assert required <= set(vocabulary.tasks)
    assert vocabulary.default_task in vocabulary.tasks
    assert all(task.description and task.cues for task in vocabulary.tasks.values())
    assert {"email", "phone", "card", "iban", "ssn"} <= set(vocabulary.pii)


def test_minimal_vocabulary_loads_and_is_frozen(tmp_path: Path) -> None:
    vocabulary = load_vocabulary(write(tmp_path, MINIMAL))
    assert list(vocabulary.tasks) == ["chat", "code"]
    assert vocabulary.tasks["code"].cues[0].weight == 3
    with pytest.raises(ValidationError):
        vocabulary.default_task = "code"  # type: ignore[misc]
    assert Vocabulary.model_validate_json(vocabulary.model_dump_json()) == vocabulary


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("tasks.code.cues.0.patterns.0", "(unclosed", "tasks.code.cues.0.patterns.0: invalid regular expression: "
                                                      "missing ), unterminated subpattern at position 0"),
        ("tasks.code.cues.0.patterns.0", "a)b", "tasks.code.cues.0.patterns.0: invalid regular expression: "
                                                "unbalanced parenthesis at position 1"),
        ("pii.email.patterns.0", "[a-", "pii.email.patterns.0: invalid regular expression: "
                                        "unterminated character set at position 0"),
        ("tasks.code.cues.0.wieght", 2, "tasks.code.cues.0.wieght: unknown key 'wieght'"),
        ("tasks.code.colour", "red", "tasks.code.colour: unknown key 'colour'"),
        ("tasks.code.cues.0.weight", "heavy", "tasks.code.cues.0.weight: Input should be a valid number, "
                                              "unable to parse string as a number"),
        ("tasks.code.cues.0.weight", float("nan"), "tasks.code.cues.0.weight: must be a finite number"),
        ("tasks.code.cues.0.phrases", "write a function", "tasks.code.cues.0.phrases: Input should be a valid list"),
        ("tasks.code.cues.0.phrases.0", "write {a,an function", "tasks.code.cues.0.phrases.0: unbalanced or nested "
                                                                "braces in phrase 'write {a,an function'"),
        ("tasks.code.cues.0.phrases.0", "{...,!!}", "tasks.code.cues.0.phrases.0: phrase '{...,!!}' has a variant "
                                                    "'...' with no words"),
        ("tasks.code.cues.0.min_numbers", -1,
         "tasks.code.cues.0.min_numbers: Input should be greater than or equal to 0"),
        ("tasks.code.complexity", 1.5, "tasks.code.complexity: Input should be less than or equal to 1"),
        ("pii.email.check", "crc32", "pii.email.check: Input should be 'none', 'luhn', 'iban' or 'ssn'"),
        ("pii.email.patterns", [], "pii.email.patterns: List should have at least 1 item after validation, not 0"),
        ("window", {"head_chars": 0}, "window.head_chars: Input should be greater than 0"),
        ("complexity", {"length": {"min_tokens": 100, "max_tokens": 50}},
         "complexity.length: Value error, `max_tokens` must be greater than `min_tokens`"),
        ("default_task", "poetry", "default_task: unknown task 'poetry'; known: ['chat', 'code']"),
        ("tasks.Code Review", {"description": "x"}, "tasks.Code Review: task names must match ^[a-z][a-z0-9_]*$"),
        ("tasks.code.cues.0", {"weight": 1}, "tasks.code.cues.0: give at least one of `phrases` or `patterns`"),
        ("version", 2, "version: Input should be 1"),
    ],
)
def test_invalid_vocabulary_names_the_path(tmp_path: Path, path: str, value: Any, expected: str) -> None:
    assert errors_of(tmp_path, with_change(path, value)) == [expected.replace("Value error, ", "")]


def test_every_problem_is_reported(tmp_path: Path) -> None:
    tree = with_change("tasks.code.cues.0.patterns.0", "(")
    tree["tasks"]["chat"]["cues"][0]["phrases"].append("{oops")
    tree["min_score"] = "low"
    del tree["default_task"]
    errors = errors_of(tmp_path, tree)
    assert [line.split(": ")[0] for line in errors] == [
        "default_task", "min_score", "tasks.chat.cues.0.phrases.1", "tasks.code.cues.0.patterns.0",
    ]
    assert errors[0] == "default_task: required key is missing"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version: 1\ntasks: [", "line 2, column 9: invalid YAML: expected the node content, but found '<stream end>'"),
        ("- just\n- a list\n", "the top level must be a mapping (default_task, tasks, ...)"),
        ("", "the top level must be a mapping (default_task, tasks, ...)"),
    ],
)
def test_unreadable_files(tmp_path: Path, text: str, expected: str) -> None:
    assert errors_of(tmp_path, text) == [expected]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(VocabularyError, match=r"nope\.yaml: cannot read: No such file or directory"):
        load_vocabulary(tmp_path / "nope.yaml")


def test_inline_vocabulary_is_validated_too() -> None:
    """Config files may embed the vocabulary; the same checks apply through pydantic."""
    with pytest.raises(ValidationError, match="invalid regular expression"):
        Vocabulary.model_validate(with_change("tasks.code.cues.0.patterns.0", "(?P<x"))


@pytest.mark.parametrize(
    ("phrase", "variants"),
    [
        ("step by step", ["step by step"]),
        ("summari{ze,se}", ["summarize", "summarise"]),
        ("write a {,python }function", ["write a function", "write a python function"]),
        ("{a,b} {c,d}", ["a c", "a d", "b c", "b d"]),
    ],
)
def test_expand(phrase: str, variants: list[str]) -> None:
    assert expand(phrase) == variants


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Step-by-step, please!", ["step", "by", "step", "please"]),
        ("What's my partner’s PIN?", ["whats", "my", "partners", "pin"]),
        ("C++ or C#? snake_case", ["c++", "or", "c#", "snake_case"]),
        ("Node.js (v18)", ["node", "js", "v18"]),
        ("¿Dónde está?", ["dónde", "está"]),
        ("", []),
    ],
)
def test_words(text: str, expected: list[str]) -> None:
    assert words(text) == expected
