"""Request classifier: OpenAI chat messages (+ tools) -> ``Features``. Pure, deterministic, no I/O.

How a request is read (every number comes from the vocabulary, ``config/tasks.yaml``):

* Task cues come from the system/developer prompts and the last ``window.max_messages`` messages,
  each weighted by its role (``roles``). The last user turn counts most; earlier turns count less, so
  a follow-up such as "and in Python?" keeps the intent of the conversation without hiding a new one.
* Inside a message, the head and the tail (where instructions are written) count fully; the middle
  (pasted articles, code, data) counts ``window.body_weight`` and is read only up to
  ``window.body_chars``, which bounds the cost on long prompts. Labelled material ("Context: ...",
  ``router.material``) counts as a middle wherever it is, and the model reads the request around it.
* Phrases are all looked for in one pass: the words of the text (as ``router.vocabulary.words`` reads
  them: lower-cased, punctuation-insensitive) are joined by single spaces and searched with an
  Aho-Corasick automaton holding every phrase as " its words ", so matches are whole words and the
  cost of a text grows with its length, hardly with the number of phrases. Regexes run on the
  lower-cased text, each only when the text holds a character its matches need.
* A cue group adds its weight at most once per message. The task with the highest total wins, ties
  going to the task listed first; when no task reaches ``min_score`` the default task wins.
* Complexity = the winner's prior + a log-scaled length ramp + the complexity signals that fired,
  clipped to 0..1. ``Features.signals`` lists these parts.
* PII is searched in all text of all messages and tool calls, however long, because it is a hard
  routing constraint.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from ahocorasick_rs import BytesAhoCorasick

from router.classify_model import TextModel
from router.material import split_material
from router.vocabulary import PUNCTUATION, CueGroup, PiiCheck, Vocabulary, expand, words

_IMAGE_PARTS = frozenset({"image_url", "input_image", "image"})
_TEXT_PARTS = frozenset({"text", "input_text"})
_SYSTEM_ROLES = frozenset({"system", "developer"})
#: bytes.translate table: every digit -> b"0" and all else -> b" " (so split() yields the numbers).
_NUMBER_RUNS = bytes(48 if 48 <= b <= 57 else 32 for b in range(256))
#: Runs of digits long enough for a detector that are read in one text. A text with more is taken
#: to hold personal data (kind "unverified", as when the classifier fails), without reading them:
#: each run costs a few regex searches in Python, and an 8 MiB prompt of number-like strings held
#: the event loop for seconds.
_MAX_DIGIT_RUNS = 1024
#: Messages read per request, the most recent ones: a request with more is taken to hold personal data
#: ("unverified") rather than scanned, as 130k tiny number-like messages held the event loop for seconds.
_MAX_READ_MESSAGES = 2048
#: The kind of personal data reported for a text too full of numbers to read (see _MAX_DIGIT_RUNS).
_UNVERIFIED = "unverified"
#: Characters read around a run of digits, enough for a PII regex to see its whole match and context.
_RUN_MARGIN = 32
#: The characters other than ASCII that str.split() splits at (``str.isspace()``; a test checks the list).
_UNICODE_SPACES = "\x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"


@dataclass(slots=True)
class Features:
    """What the classifier found in one request; the input of the routing rules."""

    task: str
    scores: dict[str, float]
    complexity: float
    input_tokens: int
    has_tools: bool
    has_images: bool
    pii: tuple[str, ...]
    signals: dict[str, float]
    #: The strongest cues behind ``task`` (phrases or regexes, best first); empty for the default task.
    evidence: tuple[str, ...] = ()
    #: The model's probability that the request needs the flagship (None without ``classifier.model``).
    escalation: float | None = None
    #: The model's probability of its own top task.
    confidence: float | None = None
    #: The model's probability of each task.
    probabilities: dict[str, float] | None = None
    #: Who chose ``task``: "cues" (a cue group reached ``min_score``), "model", or "default".
    task_source: str = "default"
    #: Characters of labelled material (``router.material``) read as data rather than as the request.
    material_chars: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "scores": dict(self.scores),
            "complexity": self.complexity,
            "input_tokens": self.input_tokens,
            "has_tools": self.has_tools,
            "has_images": self.has_images,
            "pii": list(self.pii),
            "signals": dict(self.signals),
            "evidence": list(self.evidence),
            "task_source": self.task_source,
            "escalation": self.escalation,
            "confidence": self.confidence,
            "probabilities": self.probabilities,
            "material_chars": self.material_chars,
        }

    def reason(self) -> str:
        score = self.scores.get(self.task, 0.0)
        if self.evidence:
            cues = ", ".join(repr(e) for e in self.evidence)
            task = f"task={self.task} (score {score:.1f}: {cues})"
        elif self.task_source == "model":
            task = f"task={self.task} (model, p={self.confidence:.2f})"
        else:
            task = f"task={self.task} (default)"
        if self.escalation is not None:
            task += f", escalation={self.escalation:.2f}"
        parts = ", ".join(k for k in self.signals) or "no signals"
        text = f"{task}, complexity={self.complexity:.2f} ({parts}), {self.input_tokens} tokens"
        if self.has_tools:
            text += ", tools"
        if self.has_images:
            text += ", images"
        if self.pii:
            text += f", pii={','.join(self.pii)}"
        if self.material_chars:
            text += f", {self.material_chars} chars of pasted material read as data"
        return text


#: Bounds of the per-text cache: entries, and the longest text kept (longer ones are read every time).
_CACHE_ENTRIES = 4096
_CACHE_TEXT_CHARS = 8192


@dataclass(slots=True)
class _Read:
    """What one message text holds: personal data, size, and its cues once scanned for them."""

    pii: frozenset[str]
    size: int
    cues: tuple[dict[int, int], dict[int, int]] | None = None
    #: The model's reading of the text (``TextModel.read``), once asked for.
    model: tuple[list[float], int] | None = None
    #: The request and the pasted material of the text (``router.material``) once looked for, ``None`` if
    #: it holds no labelled material.
    split: tuple[str, str] | None = None
    looked: bool = False

    def parts(self, text: str, low: str | None = None) -> tuple[str, str] | None:
        """The request and the material of ``text`` (this read's text; ``low`` lower-cased), looked for once."""
        if not self.looked:
            self.split, self.looked = split_material(text, low), True
        return self.split


class Classifier:
    """Compiles a vocabulary once; ``classify`` then only reads the request."""

    def __init__(self, vocabulary: Vocabulary, model: TextModel | None = None) -> None:
        v = vocabulary
        self.model = model
        self._tasks = tuple(v.tasks)
        self._n_tasks = len(self._tasks)
        self._priors = tuple(t.complexity for t in v.tasks.values())
        self._default = self._tasks.index(v.default_task)
        self._task_index = {t: i for i, t in enumerate(self._tasks)}
        self._min_score = v.min_score
        self._signal_names = tuple(v.complexity.signals)
        groups = [g for t in v.tasks.values() for g in t.cues] + list(v.complexity.signals.values())
        targets = [i for i, t in enumerate(v.tasks.values()) for _ in t.cues]
        targets += [len(self._tasks) + i for i in range(len(self._signal_names))]
        self._group_target = tuple(targets)
        self._group_weight = tuple(g.weight for g in groups)
        self._group_numbers = tuple(g.min_numbers for g in groups)
        self._numbered_groups = frozenset(g for g, n in enumerate(self._group_numbers) if n)
        self._uses_numbers = bool(self._numbered_groups)
        self._compile_cues(groups)

        self._head = v.window.head_chars
        self._tail = v.window.tail_chars
        self._body = v.window.body_chars
        self._body_weight = v.window.body_weight
        self._max_messages = v.window.max_messages
        r = v.roles
        self._role_weight = {"system": r.system, "developer": r.system, "user": r.earlier_user,
                             "assistant": r.assistant, "tool": r.tool, "function": r.tool}
        self._last_user_weight = r.last_user
        self._cache: OrderedDict[str, _Read] = OrderedDict()

        length = v.complexity.length
        self._length_weight = length.weight
        self._length_min = length.min_tokens
        self._length_span = math.log(length.max_tokens / length.min_tokens)

        t = v.tokens
        self._bytes_per_token = t.bytes_per_token
        self._per_message = t.per_message
        self._per_image = t.per_image
        self._per_request = t.per_request

        self._min_digits = min((d.min_digits for d in v.pii.values() if d.min_digits), default=0)
        #: Finds the runs of digits long enough for some detector (a run of digits, as masked by
        #: _NUMBER_RUNS, with at most two other characters between them); most texts have none.
        self._long_run = re.compile(rb"0(?:0| 0|  0){%d,}" % max(0, self._min_digits - 1))
        self._detectors = tuple(
            (kind, tuple(re.compile(p) for p in d.patterns), d.requires, d.min_digits, _CHECKS[d.check])
            for kind, d in v.pii.items()
        )

    def _compile_cues(self, groups: list[CueGroup]) -> None:
        """Index cues for one pass over a text: all phrases in one Aho-Corasick automaton, regexes in
        buckets by a character they need. Cue ids (``self._labels``) number the phrase variants and
        then the regexes, in vocabulary order; a group's lowest id found in a text orders the evidence."""
        labels: list[str] = []
        # " phrase " -> {group: first cue id}: each distinct phrase is one key, however many groups use it.
        cues_of: dict[bytes, dict[int, int]] = {}
        for g, group in enumerate(groups):
            for phrase in group.phrases:
                for variant in expand(phrase):
                    label = " ".join(words(variant))
                    cues_of.setdefault(_utf8(f" {label} "), {}).setdefault(g, len(labels))
                    labels.append(label)
        self._phrases = BytesAhoCorasick(list(cues_of))
        self._phrase_cues = tuple(tuple(cues.items()) for cues in cues_of.values())

        # A regex used by several groups runs once per text.
        runs: dict[tuple[str, int], list[tuple[int, int]]] = {}
        for g, group in enumerate(groups):
            for pattern in group.patterns:
                runs.setdefault((pattern, group.min_numbers), []).append((len(labels), g))
                labels.append(group.label or pattern)
        # Regexes are bucketed by one character of their literal prefix ("" if none): a text is searched
        # once for each such character, and only the regexes whose character it holds are tried.
        buckets: dict[str, list[tuple[re.Pattern[str], str, int, tuple[tuple[int, int], ...]]]] = {}
        for (pattern, min_numbers), cues in runs.items():
            prefix = _literal_prefix(pattern)
            buckets.setdefault(_probe(prefix), []).append((re.compile(pattern), prefix, min_numbers, tuple(cues)))
        self._buckets = tuple((probe, tuple(entries)) for probe, entries in buckets.items())
        self._labels = tuple(labels)

    def classify(self, messages: list[dict[str, Any]], tools: list[Any] | None = None) -> Features:
        scores: dict[int, float] = {}  # task index -> score, for tasks with cues
        fired: dict[int, float] = {}  # signal index -> strongest contribution
        hits: list[tuple[float, int, int]] = []  # (-contribution, cue id, task index), for the evidence
        has_tools = bool(tools)
        images = 0
        size = 0
        pii: set[str] = set()  # kinds of personal data in any message or tool call
        material = 0  # characters of labelled material in the messages read for cues

        last_user = -1
        for i in range(len(messages) - 1, -1, -1):
            message = messages[i]
            if isinstance(message, dict) and message.get("role") == "user":
                last_user = i
                break
        first_read = len(messages) - self._max_messages
        model = self.model
        model_read: tuple[list[float], int] | None = None
        unread = len(messages) - _MAX_READ_MESSAGES  # messages before this one are only counted
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                continue
            text, n_images, calls = _read(message)
            role = message.get("role")
            images += n_images
            if i < unread:
                pii.add(_UNVERIFIED)
                size += sum(map(_utf8_size, calls), _utf8_size(text))
                continue
            if calls or role == "tool" or role == "function":
                has_tools = True
                call_text = self._text("\n".join(calls), cues=False)
                pii.update(call_text.pii)
                size += call_text.size
            if not text:
                continue
            if i < first_read and (role not in _SYSTEM_ROLES or i >= self._max_messages):
                weight = 0.0  # outside the window
            else:
                weight = self._last_user_weight if i == last_user else self._role_weight.get(role, 0.0)
            read = self._text(text, cues=weight > 0.0)
            if model is not None and i == last_user:
                model_read = self._model_read(model, read, text)
            pii.update(read.pii)
            size += read.size
            if read.cues is not None and weight > 0.0:
                if read.split is not None:
                    material += len(read.split[1])
                head, body = read.cues
                self._add(head, weight, scores, fired, hits)
                if body:
                    self._add(body, weight * self._body_weight, scores, fired, hits)

        tokens = size / self._bytes_per_token + self._per_request + self._per_message * len(messages)
        tokens += self._per_image * images
        if tools:
            tokens += _json_size(tools) / self._bytes_per_token
        input_tokens = math.ceil(tokens)

        best = _best(scores, self._default)
        evidence: list[str] = []
        prediction = model.predict(model_read) if model is not None else None
        source = "cues"
        if scores.get(best, 0.0) < self._min_score - 1e-9:
            best, source = self._default, "default"
            if prediction is not None and prediction.task in self._task_index:
                best, source = self._task_index[prediction.task], "model"
        else:
            for _, cid, _ in sorted([h for h in hits if h[2] == best]):
                label = self._labels[cid]
                if label not in evidence:
                    evidence.append(label)
                    if len(evidence) == 3:
                        break

        signals: dict[str, float] = {}
        if self._priors[best] > 0.0:
            signals["task"] = self._priors[best]
        if self._length_weight > 0.0 and input_tokens > self._length_min:
            ramp = min(1.0, math.log(input_tokens / self._length_min) / self._length_span)
            signals["length"] = _milli(self._length_weight * ramp)
        for k in sorted(fired):
            signals[self._signal_names[k]] = _milli(fired[k])

        return Features(
            task=self._tasks[best],
            scores={self._tasks[k]: _milli(v) for k, v in sorted(scores.items())},
            complexity=_milli(min(1.0, sum(signals.values()))),
            input_tokens=input_tokens,
            has_tools=has_tools,
            has_images=images > 0,
            pii=tuple(sorted(pii)),
            signals=signals,
            evidence=tuple(evidence),
            escalation=None if prediction is None else _milli(prediction.escalation),
            confidence=None if prediction is None else _milli(prediction.confidence),
            probabilities=None if prediction is None else prediction.probabilities,
            task_source=source,
            material_chars=material,
        )

    def _model_read(self, model: TextModel, read: _Read, text: str) -> tuple[list[float], int]:
        """The model's reading of the request's text, kept with the text's other findings in the cache."""
        if read.model is None:
            parts = read.parts(text)
            read.model = model.read(text if parts is None else parts[0])
        return read.model

    def _text(self, text: str, *, cues: bool) -> _Read:
        """What one message's text holds (with its ``cues`` if asked), from the cache when the same
        text was read before.

        Conversations re-send their history and system prompt on every turn, so most texts of a
        multi-turn request were read already; the cache is bounded in entries and text length, and
        keeps what was found, not the text's lower-cased copies.
        """
        # Only short texts are cached: hashing a long one to look it up would cost as much as a scan.
        read = self._cache.get(text) if len(text) <= _CACHE_TEXT_CHARS else None
        if read is not None and (read.cues is not None or not cues):
            return read
        low = text.lower()
        mask = _digit_mask(low)
        if read is None:
            read = _Read(self._find_pii([(low, mask)]), _utf8_size(text))
            if len(text) <= _CACHE_TEXT_CHARS:
                if len(self._cache) >= _CACHE_ENTRIES:
                    self._cache.popitem(last=False)  # the oldest entry
                self._cache[text] = read
        if cues:
            parts = read.parts(text, low)
            if parts is None:
                read.cues = self._read_cues(low, mask)
            else:
                read.cues = self._read_material_cues(parts[0].lower(), parts[1][: self._body].lower())
        return read

    def _read_cues(self, low: str, mask: bytes) -> tuple[dict[int, int], dict[int, int]]:
        """The cue groups found in one lower-cased message and its digit mask: those in its head and
        tail (full weight) and those only in its body (``window.body_weight``)."""
        n, head, tail = len(low), self._head, self._tail
        body: dict[int, int] = {}
        if n <= head + tail:
            found = self._scan(low, mask)
        else:
            found = self._scan(f"{low[:head]}\n{low[n - tail :]}", mask[:head] + b" " + mask[n - tail :])
            end = min(n - tail, head + self._body)
            if end > head and self._body_weight > 0.0:
                body = self._scan(low[head:end], mask[head:end], skip=found)
        return found, body

    def _read_material_cues(self, request: str, material: str) -> tuple[dict[int, int], dict[int, int]]:
        """The cue groups of a lower-cased request (read as a message is) and of the material it is about
        (``window.body_weight``, as a long message's middle)."""
        found, body = self._read_cues(request, _digit_mask(request))
        if material and self._body_weight > 0.0:
            body.update(self._scan(material, _digit_mask(material), skip=found.keys() | body.keys()))
        return found, body

    def _add(
        self,
        found: dict[int, int],
        weight: float,
        scores: dict[int, float],
        fired: dict[int, float],
        hits: list[tuple[float, int, int]],
    ) -> None:
        n_tasks, group_target, group_weight = self._n_tasks, self._group_target, self._group_weight
        for g, cid in found.items():
            target = group_target[g]
            value = group_weight[g] * weight
            if target < n_tasks:
                scores[target] = scores.get(target, 0.0) + value
                hits.append((-value, cid, target))
            elif value > fired.get(target - n_tasks, 0.0):
                fired[target - n_tasks] = value

    def _scan(self, low: str, mask: bytes, skip: Iterable[int] = ()) -> dict[int, int]:
        """Cue groups matching a lower-cased text (except those in ``skip``), each with its first cue id.
        ``mask`` is the text's digit mask, for counting numbers."""
        found = dict.fromkeys(skip, -1)  # skipped groups look found, with a cue id below any real one
        phrase_cues = self._phrase_cues
        # Overlapping: every occurrence of every phrase, also those sharing words (and so a space) with
        # another one (" step by " and " by step " in " step by step ") or inside one (" step ").
        for key, _, _ in self._phrases.find_matches_as_indexes(_spaced(low), overlapping=True):
            for g, cid in phrase_cues[key]:
                if g not in found or cid < found[g]:
                    found[g] = cid
        numbers = len(mask.split()) if self._uses_numbers else 0
        for g in self._numbered_groups.intersection(found):
            if self._group_numbers[g] > numbers and found[g] >= 0:
                del found[g]
        for probe, entries in self._buckets:
            if probe not in low:
                continue
            for pattern, prefix, min_numbers, cues in entries:
                if min_numbers > numbers:
                    continue
                if cues[0][1] in found and (len(cues) == 1 or all(g in found for _, g in cues)):
                    continue
                if prefix in low and pattern.search(low) is not None:
                    for cid, g in cues:
                        if g not in found:
                            found[g] = cid
        return {g: cid for g, cid in found.items() if cid >= 0} if skip else found

    def _find_pii(self, texts: list[tuple[str, bytes]]) -> frozenset[str]:
        """Kinds of personal data in lower-cased texts: pre-filters, then regexes, then checks.

        Detectors with ``min_digits`` only read windows around runs of digits long enough for them,
        found once per text for all of them, so a long text with few numbers costs little. A text
        with more than ``_MAX_DIGIT_RUNS`` such runs fails closed: it counts as holding personal data.
        """
        kinds: list[str] = []
        runs: dict[int, list[tuple[int, int, int]] | None] = {}
        for kind, patterns, requires, min_digits, check in self._detectors:
            for i, (low, mask) in enumerate(texts):
                if requires is not None and requires not in low:
                    continue
                if min_digits:
                    if i not in runs:
                        runs[i] = _digit_runs(mask, self._min_digits, self._long_run)
                    found_runs = runs[i]
                    if found_runs is None:
                        kinds.append(_UNVERIFIED)
                        continue
                    margin = _RUN_MARGIN
                    windows = [low[max(0, a - margin) : b + margin] for a, b, n in found_runs if n >= min_digits]
                    if not windows:
                        continue
                else:
                    windows = [low]
                if any(check(_checked_text(m)) for window in windows for p in patterns for m in p.finditer(window)):
                    kinds.append(kind)
                    break
        return frozenset(kinds)


def _best(scores: dict[int, float], default: int) -> int:
    """The task with the highest score, the first listed on a tie, ``default`` when none scored. Scores
    are compared in millionths, so the order cues were added in (float sums) cannot decide a tie."""
    best, top = default, None
    for k, score in scores.items():
        millionths = int(score * 1e6 + 0.5)
        if top is None or millionths > top or (millionths == top and k < best):
            best, top = k, millionths
    return best


def _milli(x: float) -> float:
    """``x`` to three decimals. Like ``round(x, 3)``, which goes through a decimal string and costs ten
    times more; the two can differ only when the fourth decimal is a tie."""
    return round(x * 1000) / 1000


def _spaced(low: str) -> bytes:
    """A lower-cased text as phrases are matched in it: its words (``router.vocabulary.words``) joined
    and surrounded by single spaces, in UTF-8, so a phrase's words are found in order as b" word word ".

    Works on UTF-8 bytes: ``str.translate`` is slow on a text that is not all ASCII (a dict lookup per
    character, some 70 ns). Separators other than ASCII, few and rare, are replaced first, each group
    only when the text holds the first byte of their encodings; bytes.translate then does the rest.
    """
    text = _utf8(low)
    if not low.isascii():
        for first, encodings, replacement in _OTHER_SEPARATORS:
            if first in text:
                text = encodings.sub(replacement, text)
    # Every separator is b" " after translate, so collapsing runs of spaces leaves single spaces
    # between words: bytes.replace, a C loop, is several times cheaper than split() + join().
    spaced = b" " + text.translate(_ASCII_SEPARATORS, _ASCII_DELETED) + b" "
    while b"  " in spaced:
        spaced = spaced.replace(b"  ", b" ")
    return spaced


def _utf8(text: str) -> bytes:
    """UTF-8, keeping lone surrogates (which valid text never holds), so any str can be matched."""
    return text.encode("utf-8", "surrogatepass")


def _separators() -> tuple[bytes, bytes, tuple[tuple[bytes, re.Pattern[bytes], bytes], ...]]:
    """How ``_spaced`` makes bytes.split() find in UTF-8 the words str.split() finds after ``PUNCTUATION``.

    For ASCII characters, a bytes.translate table and the bytes it deletes; the table also makes spaces
    of U+001C..U+001F, where str.split() splits and bytes.split() does not. The other characters that
    separate words (``PUNCTUATION``, ``_UNICODE_SPACES``) or vanish are grouped by the first byte of
    their encoding and by what replaces them (b" " or b""); each group as (that first byte, a regex of
    their encodings, the replacement). No character's UTF-8 encoding occurs inside another's, so
    replacing bytes replaces characters.
    """
    table, deleted = bytearray(range(256)), bytearray()
    for b in range(128):
        to = chr(b).translate(PUNCTUATION)
        if not to:
            deleted.append(b)
        else:
            table[b] = 32 if to.isspace() else ord(to)
    groups: dict[tuple[bytes, bytes], list[bytes]] = {}
    for char in sorted({*(chr(c) for c in PUNCTUATION if c >= 128), *_UNICODE_SPACES}):
        to = char.translate(PUNCTUATION)
        encoded = _utf8(char)
        groups.setdefault((encoded[:1], b" " if to.isspace() else _utf8(to)), []).append(re.escape(encoded))
    others = tuple((first, re.compile(b"|".join(encodings)), replacement)
                   for (first, replacement), encodings in groups.items())
    return bytes(table), bytes(deleted), others


_ASCII_SEPARATORS, _ASCII_DELETED, _OTHER_SEPARATORS = _separators()


def _digit_mask(text: str) -> bytes:
    """``text`` as bytes, one per character, with every digit b"0" and everything else b" "."""
    return text.encode("ascii", "replace").translate(_NUMBER_RUNS)


def _digit_runs(mask: bytes, min_digits: int, long_run: re.Pattern[bytes]) -> list[tuple[int, int, int]] | None:
    """(start, end, digits) of each run of at least ``min_digits`` digits in a digit mask, allowing two
    other characters between digits ("+1 (555) 123-4567"); ``long_run`` finds such runs. None when
    there are more than ``_MAX_DIGIT_RUNS``: the cost is bounded, whatever the text."""
    if mask.count(b"0") < min_digits or long_run.search(mask) is None:
        return []  # most texts: a test cheaper than setting up the iteration
    runs: list[tuple[int, int, int]] = []
    for match in long_run.finditer(mask):
        if len(runs) == _MAX_DIGIT_RUNS:
            return None
        runs.append((match.start(), match.end(), match.group().count(b"0")))
    return runs


def _literal_prefix(pattern: str) -> str:
    """Text that every match of ``pattern`` starts with, so ``prefix in text`` can skip a search.

    Conservative: it stops at the first character that is not plainly literal, and gives up ("")
    on a pattern with a top-level ``|`` or an unusual character class.
    """
    depth, i, in_class = 0, 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 1
        elif in_class:
            in_class = c != "]"
        elif c == "[":
            if pattern[i + 1 : i + 2] == "]" or pattern[i + 1 : i + 3] == "^]":
                return ""
            in_class = True
        elif c in "()":
            depth += 1 if c == "(" else -1
        elif c == "|" and depth == 0:
            return ""
        i += 1
    prefix: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            nxt = pattern[i + 1 : i + 2]
            if nxt in ("n", "t"):
                literal = "\n" if nxt == "n" else "\t"
            elif not nxt or nxt.isalnum() or nxt == "_":
                break
            else:
                literal = nxt
            step = 2
        elif c in ".^$*+?{}[]()|":
            break
        else:
            literal, step = c, 1
        if pattern[i + step : i + step + 1] in ("*", "+", "?", "{"):
            break
        prefix.append(literal)
        i += step
    return "".join(prefix)


def _probe(prefix: str) -> str:
    """One character of ``prefix`` to look for first: a single-character search is much cheaper than a
    longer one, and punctuation is rarer in text than letters."""
    return next((c for c in prefix if not c.isalnum() and c != " "), prefix[:1])


def _checked_text(match: re.Match[str]) -> str:
    """The text a PII check validates: the match, extended back to group 1 when a lookbehind captured
    the start (a pattern may begin at a digit for speed and look back for an IBAN's country code)."""
    start = match.start()
    if match.re.groups and match.start(1) != -1:
        start = min(start, match.start(1))
    return match.string[start : match.end()]


def _utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _read(message: dict[str, Any]) -> tuple[str, int, list[str]]:
    """A message's text, its number of images, and the text of each tool call (name and arguments)."""
    content = message.get("content")
    images = 0
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            if kind in _TEXT_PARTS:
                value = part.get("text")
                if isinstance(value, str):
                    texts.append(value)
            elif kind in _IMAGE_PARTS:
                images += 1
        text = "\n".join(texts)
    else:
        text = ""
    calls: list[str] = []
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list):
        for call in tool_calls:
            if isinstance(call, dict):
                calls.append(_call_text(call.get("function")))
    if message.get("function_call") is not None:
        calls.append(_call_text(message.get("function_call")))
    return text, images, calls


def _call_text(function: Any) -> str:
    if not isinstance(function, dict):
        return ""
    name, arguments = function.get("name"), function.get("arguments")
    return f"{name if isinstance(name, str) else ''} {arguments if isinstance(arguments, str) else ''}"


def _json_size(value: Any) -> int:
    try:
        return len(orjson.dumps(value))
    except TypeError:
        return len(repr(value))


def _luhn(candidate: str) -> bool:
    digits = [ord(c) - 48 for c in candidate if "0" <= c <= "9"]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _iban(candidate: str) -> bool:
    compact = "".join(candidate.split()).upper()
    if not 15 <= len(compact) <= 34 or not compact.isalnum() or not compact.isascii():
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _ssn(candidate: str) -> bool:
    digits = "".join(c for c in candidate if "0" <= c <= "9")[-9:]
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return len(digits) == 9 and area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


_CHECKS: dict[PiiCheck, Callable[[str], bool]] = {"none": lambda _: True, "luhn": _luhn, "iban": _iban, "ssn": _ssn}
