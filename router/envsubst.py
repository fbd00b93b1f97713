"""``${VAR}`` / ``${VAR:-default}`` interpolation over a parsed YAML tree.

Substitution happens on string values after parsing, so a value can never inject YAML structure,
and every missing variable is reported with its path inside the file. ``${VAR}`` is required: unset
and empty are both reported, so ``OPENAI_API_KEY=`` cannot start a gateway that fails every call;
``${VAR:-}`` is how a config allows an empty value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class MissingVariableError(LookupError):
    """A required ``${VAR}`` that is unset, or set but empty (an empty secret is a mistake, not a value)."""

    def __init__(self, path: str, name: str, *, empty: bool = False) -> None:
        state = "is set but empty" if empty else "is not set"
        super().__init__(f"{path}: environment variable {name} {state} (use ${{{name}:-default}} for a default)")
        self.path = path
        self.name = name
        self.empty = empty


def interpolate(tree: Any, environ: Mapping[str, str], path: str = "") -> tuple[Any, list[MissingVariableError]]:
    """Return a copy of ``tree`` with references replaced, and the references that could not be."""
    missing: list[MissingVariableError] = []
    return _walk(tree, environ, path, missing), missing


def _walk(node: Any, environ: Mapping[str, str], path: str, missing: list[MissingVariableError]) -> Any:
    if isinstance(node, str):
        return _substitute(node, environ, path, missing) if "$" in node else node
    if isinstance(node, dict):
        return {k: _walk(v, environ, _join(path, k), missing) for k, v in node.items()}
    if isinstance(node, list):
        return [_walk(v, environ, _join(path, i), missing) for i, v in enumerate(node)]
    return node


def _substitute(text: str, environ: Mapping[str, str], path: str, missing: list[MissingVariableError]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        value = environ.get(name)
        if not value:
            if default is not None:
                return default
            missing.append(MissingVariableError(path or "<root>", name, empty=value == ""))
            return ""
        return value

    return _REFERENCE.sub(replace, text)


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)
