"""``${VAR}`` / ``${VAR:-default}`` interpolation over a parsed YAML tree.

Substitution happens on string values after parsing, so a value can never inject YAML structure,
and every missing variable is reported with its path inside the file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class MissingVariableError(LookupError):
    def __init__(self, path: str, name: str) -> None:
        super().__init__(f"{path}: environment variable {name} is not set (use ${{{name}:-default}} for a default)")
        self.path = path
        self.name = name


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
        if value is None or (value == "" and default is not None):
            if default is not None:
                return default
            missing.append(MissingVariableError(path or "<root>", name))
            return ""
        return value

    return _REFERENCE.sub(replace, text)


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)
