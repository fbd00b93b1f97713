from __future__ import annotations

import pytest

from router.envsubst import interpolate


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        ("${A}", {"A": "x"}, "x"),
        ("http://${HOST:-localhost}:${PORT:-80}/v1", {"PORT": "8000"}, "http://localhost:8000/v1"),
        ("${A:-fallback}", {"A": ""}, "fallback"),
        ("${A:-}", {}, ""),
        ("price $$5 ${A}", {"A": "now"}, "price $5 now"),
        ("no reference $HOME", {}, "no reference $HOME"),
    ],
)
def test_substitution(value: str, env: dict[str, str], expected: str) -> None:
    result, missing = interpolate({"k": value}, env)
    assert missing == []
    assert result == {"k": expected}


def test_missing_variables_are_reported_with_their_path() -> None:
    tree = {"backends": {"flagship": {"api_key": "${OPENAI_API_KEY}"}}, "rules": [{"name": "${RULE}"}]}
    _, missing = interpolate(tree, {})
    assert [str(m) for m in missing] == [
        "backends.flagship.api_key: environment variable OPENAI_API_KEY is not set (use ${OPENAI_API_KEY:-default} for a default)",
        "rules.0.name: environment variable RULE is not set (use ${RULE:-default} for a default)",
    ]


def test_values_cannot_inject_structure() -> None:
    result, _ = interpolate({"k": "${A}", "n": 3, "b": True, "none": None}, {"A": "x\ny: {z: 1}"})
    assert result == {"k": "x\ny: {z: 1}", "n": 3, "b": True, "none": None}


def test_an_empty_required_variable_is_reported_as_empty() -> None:
    """``OPENAI_API_KEY=`` is a mistake, not a key: only ``${VAR:-}`` allows an empty value."""
    _, missing = interpolate({"api_key": "${KEY}", "optional": "${OPT:-}"}, {"KEY": "", "OPT": ""})
    assert [(m.path, m.name, m.empty) for m in missing] == [("api_key", "KEY", True)]
    assert str(missing[0]) == "api_key: environment variable KEY is set but empty (use ${KEY:-default} for a default)"
