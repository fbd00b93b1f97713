"""``llm-router test``: golden routing cases, kept next to the config they hold it to.

A cases file (``config/routing-tests.yaml``)::

    cases:
      - name: faq-stays-mid
        prompt: What are your opening hours?          # or `messages: [...]` (+ `tools`, `max_tokens`)
        expect: {tier: mid, rule: default-mid, task: faq}
      - name: canary-header
        prompt: Hello
        tenant: acme                                  # optional: tenant, key (a key name), headers, model
        headers: {x-canary: "1"}
        expect: {backend: flagship}

Each case is routed through the gateway's own pipeline (idle backends, nothing called). ``expect``
may check ``tier``, ``backend``, ``rule``, ``task`` and ``refused`` (the gateway would answer with an
error, e.g. an unknown model); a failure lists each expected value next to the one found.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from router.auth import ClientKey
from router.config import ApiKeyConfig
from router.evaluate.offline import EvaluationError, OfflineRouter, Routed


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Expect(_Model):
    tier: str | None = None
    backend: str | None = None
    rule: str | None = None
    task: str | None = None
    refused: bool = False

    @model_validator(mode="after")
    def _something(self) -> Self:
        if not self.refused and not any((self.tier, self.backend, self.rule, self.task)):
            raise ValueError("expect at least one of tier, backend, rule, task or refused")
        return self


class Case(_Model):
    name: str = Field(min_length=1)
    prompt: str | None = None
    #: The prompt repeated this many times (long-context cases without a huge file).
    repeat: int = Field(default=1, ge=1)
    messages: list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    model: str = "auto"
    tenant: str | None = None
    #: A client key's name, as rules (``api_key``) and budgets see it.
    key: str | None = None
    headers: dict[str, str] = {}
    expect: Expect

    @model_validator(mode="after")
    def _one_request(self) -> Self:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of `prompt` or `messages`")
        return self

    def body(self) -> dict[str, Any]:
        messages = self.messages or [{"role": "user", "content": (self.prompt or "") * self.repeat}]
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        if self.tools is not None:
            body["tools"] = self.tools
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        return body


class CaseFile(_Model):
    cases: list[Case] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        names = [case.name for case in self.cases]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate case names: {duplicates}")
        return self


def load_cases(path: Path) -> list[Case]:
    try:
        tree = yaml.safe_load(path.read_bytes())
    except FileNotFoundError as exc:
        raise EvaluationError(f"{path}: no such file") from exc
    except OSError as exc:
        raise EvaluationError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise EvaluationError(f"{path}: {where}invalid YAML: {getattr(exc, 'problem', None) or exc}") from exc
    try:
        return CaseFile.model_validate(tree).cases
    except ValidationError as exc:
        problems = [
            f"{'.'.join(map(str, e['loc'])) or 'top level'}: {str(e['msg']).removeprefix('Value error, ')}"
            for e in exc.errors(include_url=False)
        ]
        raise EvaluationError(f"{path}: {'; '.join(problems)}") from exc


@dataclass(frozen=True, slots=True)
class Result:
    case: Case
    routed: Routed | None
    #: Why the gateway would refuse the request (None when it routes it).
    refusal: str | None
    #: (what, expected, got) for every expectation not met.
    diffs: tuple[tuple[str, Any, Any], ...]
    seconds: float

    @property
    def passed(self) -> bool:
        return not self.diffs


def run(router: OfflineRouter, cases: list[Case]) -> list[Result]:
    keys = {key.name: key for key in router.config.auth.keys}
    return [_run_case(router, case, keys) for case in cases]


def _run_case(router: OfflineRouter, case: Case, keys: dict[str, ApiKeyConfig]) -> Result:
    tenant = case.tenant
    if tenant is None and case.key in keys:
        tenant = keys[case.key].tenant
    client = ClientKey(name=case.key or "anonymous", tenant=tenant)
    started = time.perf_counter()
    routed: Routed | None = None
    refusal: str | None = None
    try:
        routed = router.route(case.body(), client, case.headers)
        refusal = routed.refusal
    except EvaluationError as exc:
        refusal = str(exc)
    seconds = time.perf_counter() - started
    got: dict[str, Any] = {"refused": refusal is not None}
    if routed is not None:
        got.update(tier=routed.tier, backend=routed.backend, rule=routed.decision.rule, task=routed.features.task)
    wanted = {name: value for name, value in case.expect.model_dump().items() if value is not None}
    diffs = tuple((name, value, got.get(name)) for name, value in wanted.items() if got.get(name) != value)
    return Result(case, routed, refusal, diffs, seconds)


def render(results: list[Result], *, fixtures: Path, config: Path) -> str:
    """pytest-like: a mark per case, a diff per failure, a summary line."""
    failed = [r for r in results if not r.passed]
    lines = [f"{fixtures}: {len(results)} routing cases against {config}",
             "".join("." if r.passed else "F" for r in results)]
    for result in failed:
        lines += ["", f"FAILED {result.case.name}"]
        lines += [f"  {what:8s} expected {wanted!r}, got {got!r}" for what, wanted, got in result.diffs]
        if result.routed is not None:
            lines.append(f"  because  {result.routed.reason}")
        if result.refusal is not None:
            lines.append(f"  refused  {result.refusal}")
    seconds = sum(r.seconds for r in results)
    summary = f"{len(failed)} failed, {len(results) - len(failed)} passed" if failed else f"{len(results)} passed"
    lines += ["", f"== {summary} in {seconds:.2f}s =="]
    return "\n".join(lines)
