"""Where a config problem is and what was meant: YAML line, a readable path, "did you mean".

``ConfigError`` lines read ``<file>:<line>: <path>: <problem>``, the form editors jump to. Paths
show list items by index and, where the item has one, by name (``rules[2] 'escalate-hard-tasks'.tier``),
because a rule is known by its name, not its position. Errors are located only once they exist:
a config that loads never pays for the second YAML pass.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterable
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError


def unknown(what: str, value: str, known: Iterable[str]) -> str:
    """``unknown tier 'flagshp' (did you mean 'flagship'?); known: ['flagship', 'mid']``."""
    names = sorted(known)
    return f"unknown {what} {value!r}{_did_you_mean(value, names)}; known: {names}"


def validation_problems(exc: ValidationError, model: type[BaseModel]) -> list[tuple[str, str]]:
    """(dotted path, problem) per error; cross-reference errors carry their path in the message."""
    problems: list[tuple[str, str]] = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden" and loc:
            key = str(loc[-1])
            fields = _fields_at(model, loc[:-1])
            hint = _did_you_mean(key, fields) or (f"; valid keys: {', '.join(fields)}" if fields else "")
            message = f"unknown key {key!r}{hint}"
        elif error["type"] == "missing":
            message = "required key is missing"
        path = ".".join(str(part) for part in loc)
        for line in message.splitlines():
            if path:
                problems.append((path, line))
                continue
            head, sep, rest = line.partition(": ")
            problems.append((head, rest) if sep and " " not in head else ("", line))
    return problems


def located(label: str, raw: bytes, problems: Iterable[tuple[str, str]]) -> list[str]:
    """``<label>:<line>: <readable path>: <problem>`` per problem (no line where the path is not in the file)."""
    try:
        root = yaml.compose(raw, Loader=yaml.SafeLoader)
    except yaml.YAMLError:  # pragma: no cover - the caller parsed the same bytes already
        root = None
    lines = []
    for path, problem in problems:
        where, line = _walk(root, path)
        prefix = f"{label}:{line}" if line is not None else label
        lines.append(f"{prefix}: {where}: {problem}" if where else f"{prefix}: {problem}")
    return lines


def _walk(node: yaml.Node | None, path: str) -> tuple[str, int | None]:
    """Follow a dotted path (keys may contain dots) through the YAML nodes: readable path, 1-based line."""
    shown = ""
    line: int | None = None
    rest = path
    while rest:
        if isinstance(node, yaml.MappingNode):
            matches = [(k, v) for k, v in node.value if rest == str(k.value) or rest.startswith(f"{k.value}.")]
            if not matches:
                break
            key, node = max(matches, key=lambda kv: len(str(kv[0].value)))
            shown = f"{shown}.{key.value}" if shown else str(key.value)
            line = key.start_mark.line + 1
            rest = rest[len(str(key.value)) + 1:]
        elif isinstance(node, yaml.SequenceNode):
            head, _, tail = rest.partition(".")
            if not head.isdigit() or int(head) >= len(node.value):
                break
            node = node.value[int(head)]
            shown += f"[{head}]{_name_of(node)}"
            line = node.start_mark.line + 1
            rest = tail
        else:
            break
    for part in filter(None, rest.split(".")):
        shown += f"[{part}]" if part.isdigit() else (f".{part}" if shown else part)
    return shown, line


def _name_of(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == "name" and isinstance(value, yaml.ScalarNode):
                return f" {value.value!r}"
    return ""


def _did_you_mean(value: str, names: list[str]) -> str:
    close = difflib.get_close_matches(value, names, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys the config model accepts at ``loc`` (list indices and dict keys step into items)."""
    annotation: Any = model
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(str(part))
            if field is None:
                return []
            annotation = field.annotation
        elif get_origin(annotation) in (list, dict):
            annotation = get_args(annotation)[-1]
        else:
            return []
    annotation = _unwrap(annotation)
    return list(annotation.model_fields) if isinstance(annotation, type) and issubclass(annotation, BaseModel) else []


def _unwrap(annotation: Any) -> Any:
    """``Annotated[X, ...]`` and ``X | None`` -> ``X``."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation
