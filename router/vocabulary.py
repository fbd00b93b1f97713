"""The classifier's vocabulary (``config/tasks.yaml``): pydantic models and ``load_vocabulary``.

The vocabulary is pure data: task names and the cues behind them, complexity signals, PII detectors,
and the few numbers that shape how a request is read. Everything is checked at load (regexes are
compiled, phrases expanded, names cross-checked), so a vocabulary that loads is one the classifier can
compile without surprises. Problems are reported one per line as ``<file>: <path.in.yaml>: <problem>``.

Matching semantics shared with ``router.classify`` live here too (``words``, ``expand``), because they
define what a phrase in the YAML means.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

#: Checks a PII match must also pass (implemented in ``router.classify``): a card checksum (Luhn,
#: 13-19 digits), an IBAN checksum (mod 97), a US SSN's issued ranges, or none.
PiiCheck = Literal["none", "luhn", "iban", "ssn"]

#: ``str.translate`` table for phrase matching: punctuation becomes a space, apostrophes vanish
#: ("what's" -> "whats"), so a phrase matches whatever punctuation surrounds its words. ``+``, ``#``
#: and ``_`` stay word characters (``c++``, ``c#``, ``snake_case``).
PUNCTUATION = str.maketrans(
    {c: " " for c in "!\"$%&()*,-./:;<=>?@[\\]^`{|}~\u00a0\u2010\u2011\u2012\u2013\u2014\u2015\u2026"
                     "\u201c\u201d\u201e\u00ab\u00bb\u00bf\u00a1\u3001\u3002\uff0c\uff1f\uff01"}
    | {"'": None, "\u2018": None, "\u2019": None}
)

_TASK_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_BRACES = re.compile(r"\{([^{}]*)\}")


def words(text: str) -> list[str]:
    """The words of ``text`` as the classifier sees them: lower-cased, punctuation removed."""
    return text.lower().translate(PUNCTUATION).split()


def expand(phrase: str) -> list[str]:
    """Expand ``{a,b}`` alternatives (an empty one allowed): ``"summari{ze,se}"`` -> both spellings."""
    match = _BRACES.search(phrase)
    if match is None:
        return [phrase]
    head, tail = phrase[: match.start()], phrase[match.end() :]
    return [e for alt in match.group(1).split(",") for e in expand(head + alt + tail)]


def _check_phrase(phrase: str) -> str:
    stripped = _BRACES.sub("", phrase)
    if "{" in stripped or "}" in stripped:
        raise ValueError(f"unbalanced or nested braces in phrase {phrase!r}")
    for variant in expand(phrase):
        if not words(variant):
            raise ValueError(f"phrase {phrase!r} has a variant {variant!r} with no words")
    return phrase


def _check_regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None
    return pattern


def _check_finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


Phrase = Annotated[str, Field(min_length=1), AfterValidator(_check_phrase)]
Regex = Annotated[str, Field(min_length=1), AfterValidator(_check_regex)]
Weight = Annotated[float, AfterValidator(_check_finite)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CueGroup(_Model):
    """Phrases and/or regexes that add ``weight`` once per message when any of them matches.

    Phrases match whole words, case- and punctuation-insensitively; regexes run on the lower-cased text.
    ``min_numbers`` makes the group count only where the text holds at least that many numbers.
    """

    weight: Weight = 1.0
    phrases: list[Phrase] = []
    patterns: list[Regex] = []
    min_numbers: int = Field(default=0, ge=0)
    #: How explanations name a match of one of ``patterns`` (default: the regex itself).
    label: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if not self.phrases and not self.patterns:
            raise ValueError("give at least one of `phrases` or `patterns`")
        return self


class TaskConfig(_Model):
    description: str = Field(min_length=1)
    #: Prior difficulty of the task, the starting point of the complexity score (0..1).
    complexity: float = Field(default=0.0, ge=0, le=1)
    cues: list[CueGroup] = []


class LengthConfig(_Model):
    """Complexity added by prompt length: 0 at ``min_tokens``, ``weight`` at ``max_tokens`` (log scale)."""

    min_tokens: int = Field(default=64, gt=0)
    max_tokens: int = Field(default=4096, gt=0)
    weight: float = Field(default=0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.max_tokens <= self.min_tokens:
            raise ValueError("`max_tokens` must be greater than `min_tokens`")
        return self


class ComplexityConfig(_Model):
    length: LengthConfig = LengthConfig()
    #: Named signals; each adds its group's ``weight`` (scaled by role and position) when it fires.
    signals: dict[str, CueGroup] = {}


class PiiDetector(_Model):
    """One kind of personal data: regexes over the lower-cased text, cheap pre-filters, and a check.

    With ``min_digits`` the regexes read only windows around long enough runs of digits, not the
    whole text, so they must match within a few characters of such a run.
    """

    patterns: list[Regex] = Field(min_length=1)
    #: Only run the regex when the text contains this literal (e.g. ``@`` for e-mails).
    requires: str | None = Field(default=None, min_length=1)
    #: Only look around runs of at least this many digits (other characters between digits allowed,
    #: at most two at a time: "+1 (555) 123-4567" is one run of 11).
    min_digits: int = Field(default=0, ge=0)
    check: PiiCheck = "none"


class TokensConfig(_Model):
    """Token estimate: UTF-8 bytes / ``bytes_per_token`` plus fixed overheads."""

    bytes_per_token: float = Field(default=4.0, gt=0)
    per_message: int = Field(default=4, ge=0)
    per_image: int = Field(default=765, ge=0)
    per_request: int = Field(default=3, ge=0)


class WindowConfig(_Model):
    """Which part of the text is read for task cues (PII always reads everything)."""

    #: The first and last characters of a message, where instructions live, count fully.
    head_chars: int = Field(default=600, gt=0)
    tail_chars: int = Field(default=300, ge=0)
    #: The middle (pasted articles, code, data) is read up to this many characters, at ``body_weight``.
    body_chars: int = Field(default=4000, ge=0)
    body_weight: float = Field(default=0.3, ge=0, le=1)
    #: Non-system messages read, counting back from the end of the conversation.
    max_messages: int = Field(default=8, gt=0)


class RolesConfig(_Model):
    """How much each message's cues count, by its role and place in the conversation."""

    system: float = Field(default=0.7, ge=0)
    last_user: float = Field(default=1.0, ge=0)
    earlier_user: float = Field(default=0.4, ge=0)
    assistant: float = Field(default=0.2, ge=0)
    tool: float = Field(default=0.0, ge=0)


class Vocabulary(_Model):
    version: Literal[1] = 1
    #: The task chosen when no task reaches ``min_score``.
    default_task: str
    min_score: float = Field(default=1.0, ge=0)
    tokens: TokensConfig = TokensConfig()
    window: WindowConfig = WindowConfig()
    roles: RolesConfig = RolesConfig()
    #: Task name -> cues. Order matters: on equal scores the task listed first wins.
    tasks: dict[str, TaskConfig] = Field(min_length=1)
    complexity: ComplexityConfig = ComplexityConfig()
    pii: dict[str, PiiDetector] = {}

    @model_validator(mode="after")
    def _names(self) -> Self:
        errors = [
            f"tasks.{name}: task names must match {_TASK_NAME.pattern}"
            for name in self.tasks
            if not _TASK_NAME.match(name)
        ]
        if self.default_task not in self.tasks:
            errors.append(f"default_task: unknown task {self.default_task!r}; known: {sorted(self.tasks)}")
        if errors:
            raise ValueError("\n".join(errors))
        return self


class VocabularyError(ValueError):
    """A vocabulary file that cannot be used; ``errors`` holds one ``<file>: <path>: <problem>`` line each."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


def load_vocabulary(path: Path) -> Vocabulary:
    """Read and validate a vocabulary file; raise ``VocabularyError`` listing every problem."""
    label = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise VocabularyError([f"{label}: cannot read: {exc.strerror or exc}"]) from exc
    try:
        tree: Any = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise VocabularyError([f"{label}: {where}invalid YAML: {getattr(exc, 'problem', None) or exc}"]) from exc
    if not isinstance(tree, dict):
        raise VocabularyError([f"{label}: the top level must be a mapping (default_task, tasks, ...)"])
    try:
        return Vocabulary.model_validate(tree)
    except ValidationError as exc:
        raise VocabularyError(_describe(label, exc)) from exc


def _describe(label: str, exc: ValidationError) -> list[str]:
    lines: list[str] = []
    for error in exc.errors(include_url=False):
        loc = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = f"unknown key {error['loc'][-1]!r}"
        elif error["type"] == "missing":
            message = "required key is missing"
        for line in message.splitlines():
            lines.append(f"{label}: {loc}: {line}" if loc else f"{label}: {line}")
    return lines
