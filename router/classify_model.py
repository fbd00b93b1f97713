"""The learned part of the classifier: a linear model over the words of a request.

A request is read where people write what they want: the head and tail of the last user message
(``Window``), less any labelled material (``router.material``). Pasted text in the middle of a long
message does not move the model, and neither do earlier turns (so the number of turns is no signal)
nor the system prompt: an application's system prompt (a persona, a tone, a format) is the same for
every request it sends, and the cues read it for the job it states. The text is normalised as the cue
matcher reads it (lower case, punctuation as spaces, every digit ``0``) and cut into features: each
word and a few shape tokens (question marks, code symbols, digits, line breaks).

The model holds a weight row for each feature its training rows held at least twice (the vocabulary),
except the names of languages (``router.train.LANGUAGE_NAMES``); a feature outside it weighs nothing.
Words of other languages are read as their English equivalents (``router/lexicon/*.tsv``, folded in
by ``router.train``): the file lists each such word with the feature whose row it shares, so a German
or French request is read through the words the model learned from English rows instead of through
its language, at no cost per request.

Two linear heads read the summed rows, scaled by one over the square root of the number of features:
a logistic escalation head (the probability the request needs the flagship) and a softmax head over
the tasks. Reading a 1 KB prompt is a dictionary lookup per feature and one array sum.

Measured while choosing it (group cross-validation by source, six folds over 45 sources): hashed byte
3-5-grams learned each dataset's topics and templates and generalised worse to unseen sources than
words (tier accuracy 0.67 against 0.73), at ten times the cost; word pairs added nothing (0.72).

The model file (``.npz``, no pickles) is written by ``router.train`` and checked whole at load:
``ModelError`` names what is wrong, so a bad file is a ``check`` error and never a request-time crash.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np

from router.material import split_material
from router.vocabulary import PUNCTUATION

#: Bumped when features or the file layout change; a file of another version is refused.
FORMAT_VERSION = 3
#: Older formats this gateway still reads: 2 is 3 without aliases.
_READABLE = (2, FORMAT_VERSION)
#: ``router.vocabulary.PUNCTUATION`` (punctuation -> spaces) with every digit made ``0``, in one table.
_NORMALISE = {**PUNCTUATION, **str.maketrans("123456789", "000000000")}


def _ascii_normalise() -> tuple[bytes, bytes]:
    """``_NORMALISE`` after ``str.lower`` for ASCII text, as a bytes.translate table and the bytes it deletes."""
    table, deleted = bytearray(range(256)), bytearray()
    for b in range(128):
        to = chr(b).lower().translate(_NORMALISE)
        if to:
            table[b] = ord(to)
        else:
            deleted.append(b)
    return bytes(table), bytes(deleted)


_ASCII_NORMALISE, _ASCII_DELETED = _ascii_normalise()
_CODE_SYMBOLS = b"{}();="
#: The shape tokens, by their value: question marks (up to 3), then log2 buckets of code symbols,
#: digits and line breaks.
_QUESTIONS = tuple(f"#q{i}" for i in range(4))
_SYMBOLS = tuple(f"#sym{i}" for i in range(9))
_DIGITS = tuple(f"#digits{i}" for i in range(8))
_LINES = tuple(f"#nl{i}" for i in range(7))


class ModelError(ValueError):
    """A model file that cannot be used, with the reason."""


@dataclass(frozen=True, slots=True)
class Window:
    """How much of a message the model reads: characters from its head and from its tail."""

    head: int = 600
    tail: int = 300

    def cut(self, text: str) -> str:
        if len(text) <= self.head + self.tail:
            return text
        return f"{text[: self.head]}\n{text[len(text) - self.tail :]}"


@dataclass(frozen=True, slots=True)
class Prediction:
    """The model's reading of one request."""

    escalation: float
    #: Probability of each task, in the model's task order.
    probabilities: dict[str, float]
    task: str
    confidence: float


def features(text: str, window: Window) -> list[str]:
    """The features of a request's text. Pure; training and serving share it, so both read a text the
    same way."""
    cut = window.cut(text)
    encoded = cut.encode("utf-8", "surrogatepass")
    if cut.isascii():  # most prompts: one bytes.translate, several times cheaper than lower() + str.translate
        normalised = encoded.translate(_ASCII_NORMALISE, _ASCII_DELETED).decode("ascii")
    else:
        normalised = cut.lower().translate(_NORMALISE)
    out = normalised.split()
    # The code symbols are ASCII, so UTF-8 holds as many of them as the text: deleting them all from
    # the bytes is one pass, where counting each one in the text is six.
    symbols = len(encoded) - len(encoded.translate(None, _CODE_SYMBOLS))
    out += (_QUESTIONS[min(cut.count("?"), 3)], _SYMBOLS[_log2(symbols, 8)],
            _DIGITS[_log2(normalised.count("0"), 7)], _LINES[_log2(cut.count("\n"), 6)])
    return out


def _aliases(array: np.ndarray | None, vocabulary: set[str], path: Path) -> dict[str, str]:
    """The file's ``aliases`` array (pairs of alias, feature) as a dict, checked against the vocabulary."""
    if array is None:
        return {}
    if array.ndim != 2 or array.shape[1:] != (2,) or array.dtype.kind != "U":
        raise ModelError(f"model file {path}: aliases must be (alias, feature) pairs of strings")
    aliases = {str(alias): str(feature) for alias, feature in array.tolist()}
    if len(aliases) != len(array):
        raise ModelError(f"model file {path}: its aliases repeat a word")
    wrong = next((a for a, f in aliases.items() if f not in vocabulary or a in vocabulary), None)
    if wrong is not None:
        raise ModelError(f"model file {path}: alias {wrong!r} -> {aliases[wrong]!r} must map a word outside "
                         f"the vocabulary to a feature in it")
    return aliases


def _log2(n: int, cap: int) -> int:
    """``floor(log2(1 + n))``, at most ``cap``."""
    return min((1 + n).bit_length() - 1, cap)


class TextModel:
    """A loaded model: ``read`` a request's text, then ``predict`` from the read."""

    def __init__(
        self,
        vocabulary: list[str],
        weights: np.ndarray,
        bias: np.ndarray,
        tasks: tuple[str, ...],
        meta: dict[str, Any],
        digest: str = "",
        aliases: dict[str, str] | None = None,
    ) -> None:
        self.vocabulary = vocabulary
        #: Feature -> its row in ``weights``; row 0 is all zeros and stands for every unknown feature, so a
        #: request's rows are one C-level ``map`` with no filtering. An alias shares its feature's row.
        self.index = {feature: i for i, feature in enumerate(vocabulary, 1)}
        self.aliases = dict(aliases or {})
        self.index.update((alias, self.index[feature]) for alias, feature in self.aliases.items())
        # (1 + len(vocabulary), 1 + len(tasks)): escalation, then one column per task
        self.weights = np.vstack([np.zeros((1, weights.shape[1]), dtype=weights.dtype), weights])
        self.bias = bias
        self._bias = bias.tolist()
        self.tasks = tuple(tasks)
        self.meta = meta
        self.window = Window(**meta["window"])
        # Enough ones for any read: a cut holds at most head + tail + 1 characters, so at most half as
        # many words (one space between two), and four shape tokens.
        self._ones = np.ones((self.window.head + self.window.tail + 2) // 2 + 4, dtype=self.weights.dtype)
        #: SHA-256 of the file it was loaded from: part of the config's version.
        self.digest = digest

    @classmethod
    def load(cls, path: Path) -> TextModel:
        """Read and check a model file; ``ModelError`` says what is wrong with it."""
        try:
            raw = path.read_bytes()
            with np.load(io.BytesIO(raw), allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except OSError as exc:
            raise ModelError(f"cannot read model file {path}: {exc.strerror or exc}") from None
        except Exception as exc:  # a corrupt zip or array: numpy raises several kinds
            raise ModelError(f"model file {path} is not a valid .npz model: {exc}") from None
        missing = {"vocabulary", "weights", "bias", "tasks", "meta"} - arrays.keys()
        if missing:
            raise ModelError(f"model file {path} lacks {sorted(missing)}")
        try:
            meta = json.loads(str(arrays["meta"]))
        except ValueError:
            raise ModelError(f"model file {path}: its meta is not JSON") from None
        version = meta.get("format") if isinstance(meta, dict) else None
        if version not in _READABLE:
            raise ModelError(f"model file {path}: format {version!r}, this gateway reads format {FORMAT_VERSION}; "
                             f"retrain with `llm-router train`")
        vocabulary = [str(f) for f in arrays["vocabulary"].tolist()]
        tasks = tuple(str(t) for t in arrays["tasks"].tolist())
        weights, bias = arrays["weights"], arrays["bias"]
        if weights.shape != (len(vocabulary), 1 + len(tasks)) or bias.shape != (1 + len(tasks),):
            raise ModelError(f"model file {path}: weights {weights.shape} and bias {bias.shape} do not fit "
                             f"{len(vocabulary)} features and {len(tasks)} tasks")
        if len(set(vocabulary)) != len(vocabulary):
            raise ModelError(f"model file {path}: its vocabulary repeats a feature")
        if not (np.isfinite(weights).all() and np.isfinite(bias).all()):
            raise ModelError(f"model file {path}: weights hold NaN or infinity")
        window = meta.get("window")
        if not (isinstance(window, dict) and set(window) == {"head", "tail"}
                and all(isinstance(v, int) and v > 0 for v in window.values())):
            raise ModelError(f"model file {path}: meta.window must give positive integers head and tail")
        aliases = _aliases(arrays.get("aliases"), set(vocabulary), path)
        return cls(vocabulary, weights.astype(np.float32), bias.astype(np.float64), tasks, meta,
                   hashlib.sha256(raw).hexdigest(), aliases)

    def read(self, text: str) -> tuple[list[float], int]:
        """The summed weight rows of the text's known features, and how many features it had in all
        (known or not)."""
        found = features(text, self.window)
        n = len(found)
        rows = np.fromiter(map(self.index.get, found, repeat(0, n)), dtype=np.intp, count=n)
        # A vector-matrix product is the sum of the rows, and a third of the cost of ``sum(axis=0)``.
        return (self._ones[:n] @ self.weights.take(rows, axis=0)).tolist(), n

    def predict(self, read: tuple[list[float], int] | None) -> Prediction:
        """Probabilities from the ``read`` of a request's text (``None``: the request has none).

        Plain Python on a few floats: numpy's per-call overhead, small in a loop of its own, grows
        several times between the cue scan's calls, whose code evicts numpy's from the CPU caches."""
        if read is None or not read[1]:
            escalation_logit, *task_logits = self._bias
        else:
            scale = 1.0 / math.sqrt(read[1])
            escalation_logit, *task_logits = (b + v * scale for b, v in zip(self._bias, read[0]))
        escalation = 1.0 / (1.0 + math.exp(-min(max(escalation_logit, -50.0), 50.0)))
        top = max(task_logits)
        exps = [math.exp(x - top) for x in task_logits]
        norm = sum(exps)
        best = task_logits.index(top)
        return Prediction(
            escalation=escalation,
            probabilities={task: e / norm for task, e in zip(self.tasks, exps)},
            task=self.tasks[best],
            confidence=1.0 / norm,
        )

    def explain(self, text: str | None, top: int = 6) -> list[tuple[str, float]]:
        """The features of a request's text that moved the escalation logit most, strongest first, with
        their contribution (positive: towards the flagship). For ``/v1/router/decide``, not the request path."""
        found = features(text, self.window) if text else []
        if not found:
            return []
        contributions: dict[str, float] = {}
        for feature in found:
            i = self.index.get(feature)
            if i is not None:
                contributions[feature] = contributions.get(feature, 0.0) + float(self.weights[i, 0])
        scale = 1.0 / math.sqrt(len(found))
        best = sorted(contributions.items(), key=lambda kv: -abs(kv[1]))[:top]
        return [(name, round(value * scale, 3)) for name, value in best]


def model_text(messages: list[Any]) -> str | None:
    """The text the model reads in a request: the last user message, less the material pasted in it
    (``router.material``); ``None`` if there is no such text. ``router.classify`` reads the same one
    (through its cache)."""
    last_user = next((m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), None)
    text = message_text(last_user) if last_user is not None else ""
    if not text:
        return None
    parts = split_material(text)
    return text if parts is None else parts[0]


def message_text(message: dict[str, Any]) -> str:
    """The text parts of a message's content, joined by newlines."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p["text"] for p in content
                         if isinstance(p, dict) and p.get("type") in ("text", "input_text") and isinstance(p.get("text"), str))
    return ""
