"""The learned part of the classifier: a linear model over hashed word and byte n-grams.

A request is read where people write instructions: the head of each system/developer prompt and the
head and tail of the last user message (``Window``); pasted text in the middle of a long message does
not move the model, and earlier turns do not either (so the number of turns is no signal). The text is
normalised as the cue matcher reads it (lower case, punctuation as spaces, digits all ``0``), then
hashed into ``2**bits`` buckets: every word, every pair of adjacent words, every 3-, 4- and 5-byte
run (so words the training rows never held still share pieces with known ones, in any script), and a
few shape tokens (question marks, code symbols, numbers, line breaks).

The model is two linear heads over those counts, scaled by one over the square root of their total:
a logistic escalation head (the probability the request needs the flagship) and a softmax head over the
tasks. Hashing is vectorised with numpy (a polynomial hash from prefix sums), so a request costs a
dozen array operations whatever its vocabulary; ``TextModel.explain`` re-reads a text in Python to
name the n-grams that pushed most.

The model file (``.npz``, no pickles) is written by ``router.train`` and checked whole at load:
``ModelError`` names what is wrong, so a bad file is a ``check`` error and never a request-time crash.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from router.vocabulary import PUNCTUATION

#: Bumped when hashing or the file layout changes; a file of another version is refused.
FORMAT_VERSION = 1
_P = 0x100000001B3  # odd, so invertible modulo 2**64
_MIX = np.uint64(0x9E3779B97F4A7C15)
#: Seeds that keep the kinds of feature apart: (3-, 4-, 5-byte runs, words, word pairs) per window kind.
_SEEDS = {"user": (11, 12, 13, 14, 15), "system": (21, 22, 23, 24, 25)}
_SHAPE_SEED = 99
_DIGITS_TO_ZERO = bytes(48 if 48 <= b <= 57 else b for b in range(256))
_SPACE = 33  # b" " after the +1 shift that keeps a NUL byte from hashing like no byte
_CODE_SYMBOLS = "{}[]();=<>_"


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


class Hasher:
    """Text -> bucket indices. Pure; shared by training and serving so both hash the same way."""

    def __init__(self, bits: int, window: Window, grams: tuple[int, ...] = (3, 4, 5)) -> None:
        self.bits = bits
        self.window = window
        #: Lengths of the byte runs hashed (a subset of 3, 4, 5); words and word pairs always are.
        self.grams = grams
        longest = 4 * (window.head + window.tail) + 8  # UTF-8 bytes of the longest window, spaced
        powers = np.empty(longest + 1, dtype=np.uint64)
        inverse = np.empty(longest + 1, dtype=np.uint64)
        powers[0] = inverse[0] = 1
        p, inv, mod = 1, 1, 1 << 64
        p_inv = pow(_P, -1, mod)
        for i in range(1, longest + 1):
            p, inv = p * _P % mod, inv * p_inv % mod
            powers[i], inverse[i] = p, inv
        self._powers, self._inverse = powers, inverse
        self._shift = np.uint64(64 - bits)

    def indices(self, text: str, kind: str) -> np.ndarray:
        """Bucket indices of one message text read as ``kind`` ("user" or "system")."""
        seeds = _SEEDS[kind]
        cut = self.window.cut(text) if kind == "user" else text[: self.window.head]
        data = normalise(cut)
        hashes = self._hashes(data, seeds)
        if kind == "user":
            hashes.append(self._hashes(shape_tokens(cut, data), (0, 0, 0, _SHAPE_SEED, _SHAPE_SEED + 1), grams=False)[0])
        if not hashes:
            return np.zeros(0, dtype=np.intp)
        return (np.concatenate(hashes) * _MIX >> self._shift).astype(np.intp)

    def _hashes(self, data: bytes, seeds: tuple[int, ...], grams: bool = True) -> list[np.ndarray]:
        data = data[: len(self._powers) - 1]
        a = np.frombuffer(data, dtype=np.uint8).astype(np.uint64) + np.uint64(1)
        n = len(a)
        prefix = np.zeros(n + 1, dtype=np.uint64)
        np.cumsum(a * self._powers[:n], out=prefix[1:])
        out: list[np.ndarray] = []
        if grams:
            for k, seed in zip((3, 4, 5), seeds):
                if k in self.grams and n >= k:
                    out.append(((prefix[k:] - prefix[:-k]) * self._inverse[: n - k + 1]) ^ np.uint64(seed))
        spaces = np.flatnonzero(a == _SPACE)
        starts, ends = spaces[:-1] + 1, spaces[1:]
        keep = ends > starts
        starts, ends = starts[keep], ends[keep]
        words = (prefix[ends] - prefix[starts]) * self._inverse[starts]
        out.append(words ^ np.uint64(seeds[3]))
        if len(words) > 1:
            out.append((words[:-1] * _MIX + words[1:]) ^ np.uint64(seeds[4]))
        return out


def normalise(text: str) -> bytes:
    """A text as the model reads it: lower case, punctuation as spaces, single spaces around every word,
    digits as ``0``, UTF-8."""
    return f" {' '.join(text.lower().translate(PUNCTUATION).split())} ".encode(
        "utf-8", "surrogatepass"
    ).translate(_DIGITS_TO_ZERO)


def shape_tokens(text: str, normalised: bytes) -> bytes:
    """A few facts about a text's shape, as words: question marks, code symbols, numbers (words with a
    digit, from the ``normalise``d text), line breaks."""
    questions = min(text.count("?"), 3)
    symbols = sum(map(text.count, _CODE_SYMBOLS))
    numbers = len([w for w in normalised.split() if b"0" in w]) if b"0" in normalised else 0
    lines = text.count("\n")
    return (f" #q{questions} #sym{_log2(symbols, 8)} #num{_log2(numbers, 6)} #nl{_log2(lines, 6)} ").encode()


def _log2(n: int, cap: int) -> int:
    return min(int(math.log2(1 + n)), cap)


class TextModel:
    """A loaded model: ``predict`` reads a request's windows and returns a ``Prediction``."""

    def __init__(
        self, weights: np.ndarray, bias: np.ndarray, tasks: tuple[str, ...], meta: dict[str, Any], digest: str = ""
    ) -> None:
        #: SHA-256 of the file it was loaded from: part of the config's version.
        self.digest = digest
        self.weights = weights  # (2**bits, 1 + len(tasks)): escalation, then one column per task
        self.bias = bias
        self.tasks = tasks
        self.meta = meta
        self.hasher = Hasher(int(meta["bits"]), Window(**meta["window"]), tuple(meta.get("grams", (3, 4, 5))))

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
        missing = {"weights", "bias", "tasks", "meta"} - arrays.keys()
        if missing:
            raise ModelError(f"model file {path} lacks {sorted(missing)}")
        try:
            meta = json.loads(str(arrays["meta"]))
        except ValueError:
            raise ModelError(f"model file {path}: its meta is not JSON") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
            raise ModelError(f"model file {path}: format {meta.get('format') if isinstance(meta, dict) else None!r}, "
                             f"this gateway reads format {FORMAT_VERSION}; retrain with `llm-router train`")
        tasks = tuple(str(t) for t in arrays["tasks"].tolist())
        weights, bias = arrays["weights"], arrays["bias"]
        bits = meta.get("bits")
        if not isinstance(bits, int) or not 10 <= bits <= 24:
            raise ModelError(f"model file {path}: bits must be an integer in 10..24, not {bits!r}")
        if weights.shape != (1 << bits, 1 + len(tasks)) or bias.shape != (1 + len(tasks),):
            raise ModelError(f"model file {path}: weights {weights.shape} and bias {bias.shape} do not fit "
                             f"{bits} bits and {len(tasks)} tasks")
        if not (np.isfinite(weights).all() and np.isfinite(bias).all()):
            raise ModelError(f"model file {path}: weights hold NaN or infinity")
        if not isinstance(meta.get("window"), dict):
            raise ModelError(f"model file {path}: meta has no window")
        digest = hashlib.sha256(raw).hexdigest()
        return cls(weights.astype(np.float32), bias.astype(np.float64), tasks, meta, digest)

    def read(self, text: str, kind: str) -> tuple[np.ndarray, int]:
        """One message's contribution: the summed weights of its n-grams, and how many there were."""
        idx = self.hasher.indices(text, kind)
        return self.weights[idx].sum(axis=0, dtype=np.float64), len(idx)

    def predict(self, parts: list[tuple[np.ndarray, int]]) -> Prediction:
        """Combine the ``read`` of each window of a request into probabilities."""
        count = sum(n for _, n in parts)
        logits = self.bias.copy()
        if count:
            logits += sum(v for v, _ in parts) / math.sqrt(count)
        escalation = 1.0 / (1.0 + math.exp(-logits[0]))
        task_logits = logits[1:]
        exp = np.exp(task_logits - task_logits.max())
        probs = (exp / exp.sum()).tolist()
        best = max(range(len(probs)), key=probs.__getitem__)
        return Prediction(
            escalation=escalation,
            probabilities=dict(zip(self.tasks, probs)),
            task=self.tasks[best],
            confidence=probs[best],
        )

    def explain(self, texts: list[tuple[str, str]], top: int = 6) -> list[tuple[str, float]]:
        """The n-grams that moved the escalation logit most (name, contribution), strongest first; for
        ``/v1/router/decide``, not the request path."""
        contributions: dict[str, float] = {}
        total = 0
        for text, kind in texts:
            cut = self.hasher.window.cut(text) if kind == "user" else text[: self.hasher.window.head]
            data = normalise(cut)[: len(self.hasher._powers) - 1]
            names = _gram_names(data, self.hasher.grams)
            idx = self.hasher.indices(text, kind)
            total += len(idx)
            for name, i in zip(names, idx[: len(names)].tolist()):
                contributions[name] = contributions.get(name, 0.0) + float(self.weights[i, 0])
        if not total:
            return []
        scale = 1.0 / math.sqrt(total)
        best = sorted(contributions.items(), key=lambda kv: -abs(kv[1]))[:top]
        return [(name, round(value * scale, 3)) for name, value in best]


def _gram_names(data: bytes, grams: tuple[int, ...]) -> list[str]:
    """Readable names of the features ``Hasher._hashes`` makes from ``data``, in the same order."""
    names: list[str] = []
    for k in grams:
        names += [f"~{data[i : i + k].decode('utf-8', 'replace').replace(' ', '_')}~" for i in range(len(data) - k + 1)]
    words = data.decode("utf-8", "replace").split()
    names += words
    names += [f"{a} {b}" for a, b in zip(words, words[1:])]
    return names


def model_texts(messages: list[Any]) -> list[tuple[str, str]]:
    """The texts the model reads in a request, each with its kind: every system/developer prompt and the
    last user message. ``router.classify`` reads the same ones (through its cache)."""
    texts: list[tuple[str, str]] = []
    last_user = next((i for i in range(len(messages) - 1, -1, -1)
                      if isinstance(messages[i], dict) and messages[i].get("role") == "user"), -1)
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if i == last_user or role in ("system", "developer"):
            text = message_text(message)
            if text:
                texts.append((text, "user" if i == last_user else "system"))
    return texts


def message_text(message: dict[str, Any]) -> str:
    """The text parts of a message's content, joined by newlines."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p["text"] for p in content
                         if isinstance(p, dict) and p.get("type") in ("text", "input_text") and isinstance(p.get("text"), str))
    return ""
