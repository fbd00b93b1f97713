"""``llm-router train``: fit the classifier's model (``router.classify_model``) on labelled rows.

Rows are JSON lines as in ``data/routing/*.jsonl``: ``source``, ``expected_tier`` (mid or flagship),
``task`` and ``messages``. Training is deterministic (same rows in the same order, same file); it needs
scikit-learn (``pip install 'llm-router[train]'``), serving does not.

Words of other languages are folded into their English equivalents before fitting (the lexicon,
``router/lexicon/*.tsv`` and any files given), and the model file carries the same mapping, so
a language that appears in one tier only in the rows does not become a sign of that tier; the names
of languages (``LANGUAGE_NAMES``) are never features at all.

Every row is also fitted in ``copies`` templates (``router.templates``: a "Question: ... Answer:" frame,
a closing "Keep it short.", a greeting), in both tiers alike, so a dataset's layout does not become a
sign of its tier; the report scores each held-out source as written and in templates training never
used.

Every source weighs the same in the fit, whatever its number of rows, so one large dataset's style
does not become "the" look of its tier. Leave-one-source-out accuracy (fit on every source but one,
score that one) is reported per source and tier: it is the honest estimate of how the model does on
traffic unlike its training rows, where accuracy on the training rows themselves says little.
"""

from __future__ import annotations

import json
import math
import sys
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from router.classify_model import (
    FORMAT_VERSION,
    TextModel,
    Window,
    features,
    model_text,
)
from router.templates import MEASURING, TRAINING, pick

TIERS = ("mid", "flagship")
DEFAULT_C = 16.0
#: Copies of each row fitted in ``router.templates.TRAINING`` templates.
DEFAULT_COPIES = 1
#: Words the model never learns: a language's name says which language to answer in, not how hard the
#: request is (the cues read translation requests), and the rows name some languages mostly in one tier
#: ("english" in translations, mid; "german" in law exams, flagship), so "Reply in English." moved routes.
LANGUAGE_NAMES = frozenset({
    "english", "french", "german", "spanish", "italian", "portuguese", "dutch", "polish", "swedish",
    "danish", "norwegian", "finnish", "greek", "turkish", "russian", "ukrainian", "czech", "hungarian",
    "romanian", "arabic", "hebrew", "persian", "hindi", "urdu", "bengali", "chinese", "mandarin",
    "cantonese", "japanese", "korean", "vietnamese", "thai", "indonesian", "malay", "swahili", "latin",
})
#: The shipped lexicon; where two languages spell a word alike, the first file listed wins.
DEFAULT_LEXICON = tuple(Path(__file__).with_name("lexicon") / f"{language}.tsv"
                        for language in ("fr", "de", "it", "es", "pt"))


class TrainingError(ValueError):
    """Unusable training input, with the file and line."""


@dataclass(frozen=True, slots=True)
class Row:
    source: str
    tier: str
    task: str
    messages: list[dict[str, Any]]


def _numbered_lines(paths: Iterable[Path]) -> Iterator[tuple[str, str]]:
    """Each line of each file with its ``path:line`` for error messages; an unreadable file is a
    ``TrainingError``."""
    for path in paths:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise TrainingError(f"{path}: {exc.strerror or exc}") from None
        for n, line in enumerate(lines, 1):
            yield f"{path}:{n}", line


def read_rows(paths: Iterable[Path]) -> list[Row]:
    """Rows from JSON-lines files, checked; ``TrainingError`` names the first bad line."""
    rows: list[Row] = []
    for where, line in _numbered_lines(paths):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except ValueError as exc:
            raise TrainingError(f"{where}: not JSON ({exc})") from None
        rows.append(_row(raw, where))
    if not rows:
        raise TrainingError("no rows to train on")
    return rows


def _row(raw: Any, where: str) -> Row:
    if not isinstance(raw, dict):
        raise TrainingError(f"{where}: a row must be a JSON object")
    for key in ("source", "expected_tier", "task"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise TrainingError(f"{where}: `{key}` must be a non-empty string")
    if raw["expected_tier"] not in TIERS:
        raise TrainingError(f"{where}: `expected_tier` must be one of {list(TIERS)}, not {raw['expected_tier']!r}")
    messages = raw.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise TrainingError(f"{where}: `messages` must be a non-empty list of message objects")
    return Row(raw["source"], raw["expected_tier"], raw["task"], messages)


def read_lexicon(paths: Iterable[Path]) -> dict[str, str]:
    """Word -> English word, from TSV files (``word<TAB>english`` per line, words as the model's features
    spell them); the first file to list a word wins. ``TrainingError`` names a bad line."""
    lexicon: dict[str, str] = {}
    for where, line in _numbered_lines(paths):
        fields = line.split("\t")
        if len(fields) != 2 or not all(f and f == f.lower() and f.split() == [f] for f in fields):
            raise TrainingError(f"{where}: want `word<TAB>english`, lower case, one word each")
        if fields[0] != fields[1]:
            lexicon.setdefault(fields[0], fields[1])
    chained = next((w for w in lexicon.values() if w in lexicon), None)
    if chained is not None:
        raise TrainingError(f"lexicon: {chained!r} is both a word to map and a word mapped to")
    return lexicon


class Featurizer:
    """Rows -> the vocabulary (features in at least ``min_rows`` rows, less ``LANGUAGE_NAMES``) and the
    sparse matrix the model's heads are fitted on, read exactly as the serving path reads a request
    (with the lexicon's words folded into their English equivalents, as the model's aliases fold them
    at serving).

    ``groups`` numbers each row's original: a row and its copies in templates count as one row for the
    vocabulary, so a word is not learned from one row seen twice."""

    def __init__(self, rows: Sequence[Row], window: Window = Window(), min_rows: int = 2,
                 lexicon: dict[str, str] | None = None, groups: Sequence[int] | None = None) -> None:
        self.window = window
        self.lexicon = dict(lexicon or {})
        self.rows = [self.features(r) for r in rows]
        per_original: dict[int, set[str]] = defaultdict(set)
        for g, found in zip(range(len(rows)) if groups is None else groups, self.rows):
            per_original[g].update(found)
        frequency = Counter(f for found in per_original.values() for f in found)
        self.vocabulary = sorted(f for f, n in frequency.items() if n >= min_rows and f not in LANGUAGE_NAMES)

    def features(self, row: Row) -> list[str]:
        text, fold = model_text(row.messages), self.lexicon.get
        return [fold(f, f) for f in features(text, self.window)] if text else []

    def aliases(self) -> dict[str, str]:
        """The lexicon's words whose English equivalent made the vocabulary: what the model file carries."""
        known = set(self.vocabulary)
        return {w: e for w, e in sorted(self.lexicon.items()) if e in known}

    def matrix(self, rows: Sequence[Row] | None = None) -> Any:
        """The matrix of the rows read at construction, or of other ``rows`` on the same vocabulary."""
        from scipy.sparse import csr_matrix

        index = {f: i for i, f in enumerate(self.vocabulary)}
        indptr, indices, data = [0], [], []
        found_rows = self.rows if rows is None else [self.features(r) for r in rows]
        for found in found_rows:
            known = [index[f] for f in found if f in index]
            indices += known
            data += [1.0 / math.sqrt(len(found))] * len(known)
            indptr.append(len(indices))
        matrix = csr_matrix((np.array(data), np.array(indices, dtype=np.int64), np.array(indptr)),
                            shape=(len(found_rows), len(self.vocabulary)))
        matrix.sum_duplicates()
        return matrix


def in_templates(rows: Sequence[Row], copies: int) -> tuple[list[Row], list[int]]:
    """The rows followed by ``copies`` of each in different ``TRAINING`` templates (chosen by the row's
    text, so adding rows does not reshuffle the others'), and the index of each one's original."""
    framed, originals = list(rows), list(range(len(rows)))
    for i, row in enumerate(rows):
        key = str(zlib.crc32(json.dumps(row.messages, sort_keys=True).encode()))
        for template in pick(TRAINING, key, copies):
            framed.append(Row(row.source, row.tier, row.task, template.apply(row.messages)))
            originals.append(i)
    return framed, originals


def in_unseen_template(rows: Sequence[Row]) -> list[Row]:
    """Each row in one ``MEASURING`` template (never trained on), for the held-out scores."""
    return [Row(r.source, r.tier, r.task, pick(MEASURING, str(i))[0].apply(r.messages)) for i, r in enumerate(rows)]


def source_weights(rows: Sequence[Row]) -> np.ndarray:
    """Per-row weights that give every source the same total weight (and the rows the mean weight 1)."""
    counts = Counter(r.source for r in rows)
    weights = np.array([1.0 / counts[r.source] for r in rows])
    return weights * (len(rows) / weights.sum())


def _fit_escalation(x: Any, rows: Sequence[Row], c: float) -> Any:
    from sklearn.linear_model import LogisticRegression

    y = np.array([r.tier == "flagship" for r in rows], dtype=int)
    return LogisticRegression(C=c, max_iter=3000).fit(x, y, sample_weight=source_weights(rows))


@dataclass(frozen=True, slots=True)
class Result:
    """What ``train`` produced: the model's arrays and the leave-one-source-out scores."""

    vocabulary: list[str]
    weights: np.ndarray
    bias: np.ndarray
    tasks: tuple[str, ...]
    meta: dict[str, Any]
    #: source -> {"rows", "mid", "flagship", "accuracy", "unseen_templates"}
    held_out: dict[str, dict[str, float]]
    #: word -> the feature whose weights it shares (``Featurizer.aliases``)
    aliases: dict[str, str]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        aliases = np.array(sorted(self.aliases.items()), dtype=str).reshape(-1, 2)
        with path.open("wb") as fh:
            np.savez_compressed(fh, vocabulary=np.array(self.vocabulary), weights=self.weights.astype(np.float16), bias=self.bias.astype(np.float32),
                                tasks=np.array(self.tasks), meta=np.array(json.dumps(self.meta, sort_keys=True)),
                                aliases=aliases)


#: Given a model, a function that routes a row to a tier (the config's cues and rules; see ``config_router``).
RouterFactory = Callable[[TextModel], Callable[[Row], str]]


def train(
    rows: Sequence[Row], *, c: float = DEFAULT_C, copies: int = DEFAULT_COPIES, held_out: bool = True,
    router: RouterFactory | None = None, lexicon: dict[str, str] | None = None,
) -> Result:
    """Fit both heads on all rows, each also in ``copies`` templates (``c`` is per row: its copies share
    it). With ``held_out``, also score each source with a model fitted without it (on the same
    vocabulary: a held-out source's words count only where other sources hold them too), as written and
    in unseen templates. With a ``router``, the held-out score is the routing's (cues + model + rules),
    not the model's alone."""
    framed, originals = in_templates(rows, copies)
    featurizer = Featurizer(framed, lexicon=lexicon, groups=originals)
    aliases = featurizer.aliases()
    x = featurizer.matrix()
    tasks = tuple(sorted({r.task for r in rows}))
    if len(tasks) < 2:
        raise TrainingError(f"the rows name only the task(s) {list(tasks)}; at least two are needed")
    c_fit = c / (1 + copies)
    weights, bias = _fit_heads(x, framed, tasks, c_fit)
    window = featurizer.window
    meta = {
        "format": FORMAT_VERSION,
        "window": {"head": window.head, "tail": window.tail},
        "c": c,
        "copies_in_templates": copies,
        "rows": len(rows),
        "sources": dict(sorted(Counter(r.source for r in rows).items())),
        "lexicon_words": len(lexicon or {}),
    }
    scores: dict[str, dict[str, float]] = {}
    if held_out:
        unseen = in_unseen_template(rows)
        scores = _held_out(x, framed, rows, (featurizer.matrix(unseen), unseen), c_fit, tasks,
                           router and (lambda w, b: router(
                               TextModel(featurizer.vocabulary, w.astype(np.float32), b, tasks, meta, aliases=aliases))))
    return Result(featurizer.vocabulary, weights, bias, tasks, meta, scores, aliases)


def _fit_heads(x: Any, rows: Sequence[Row], tasks: tuple[str, ...], c: float) -> tuple[np.ndarray, np.ndarray]:
    """The escalation head and the task head, as one weight matrix (escalation first) and bias."""
    from sklearn.linear_model import LogisticRegression

    escalation = _fit_escalation(x, rows, c)
    present = sorted({tasks.index(r.task) for r in rows})
    y_task = np.array([tasks.index(r.task) for r in rows])
    task_head = LogisticRegression(C=c, max_iter=3000).fit(x, y_task, sample_weight=source_weights(rows))
    weights = np.zeros((x.shape[1], 1 + len(tasks)), dtype=np.float64)
    bias = np.full(1 + len(tasks), -30.0)  # a task no training row had is never predicted
    weights[:, 0], bias[0] = escalation.coef_[0], escalation.intercept_[0]
    if len(present) == 2:  # scikit-learn fits one logit for two classes: split it between them
        weights[:, 1 + present[1]], bias[1 + present[1]] = task_head.coef_[0], task_head.intercept_[0]
        weights[:, 1 + present[0]], bias[1 + present[0]] = 0.0, 0.0
    else:
        for k, t in enumerate(present):
            weights[:, 1 + t], bias[1 + t] = task_head.coef_[k], task_head.intercept_[k]
    return weights, bias


def _held_out(
    x: Any, framed: Sequence[Row], rows: Sequence[Row], unseen: tuple[Any, Sequence[Row]], c: float,
    tasks: tuple[str, ...], router: Callable[[np.ndarray, np.ndarray], Callable[[Row], str]] | None,
) -> dict[str, dict[str, float]]:
    """Per source: a model fitted on the other sources' ``framed`` rows scores the source's ``rows`` (the
    first rows of ``x``) and the same rows in ``unseen`` templates (their matrix and rows)."""
    framed_sources = np.array([r.source for r in framed])
    sources = framed_sources[: len(rows)]
    flagship = np.array([r.tier == "flagship" for r in rows])
    x_unseen, unseen_rows = unseen
    out: dict[str, dict[str, float]] = {}
    for source in sorted(set(sources)):
        test = np.flatnonzero(sources == source)
        train_idx = np.flatnonzero(framed_sources != source)
        train_rows = [framed[int(i)] for i in train_idx]
        if len({r.tier for r in train_rows}) < 2:
            continue  # the others hold one tier only: nothing to fit
        if router is None:
            model = _fit_escalation(x[train_idx], train_rows, c)
            predicted = model.predict_proba(x[test])[:, 1] >= 0.5
            predicted_unseen = model.predict_proba(x_unseen[test])[:, 1] >= 0.5
        else:
            route = router(*_fit_heads(x[train_idx], train_rows, tasks, c))
            predicted = np.array([route(rows[int(i)]) == "flagship" for i in test])
            predicted_unseen = np.array([route(unseen_rows[int(i)]) == "flagship" for i in test])
        truth = flagship[test]
        out[source] = {
            "rows": len(test),
            "mid": int((~truth).sum()),
            "flagship": int(truth.sum()),
            "accuracy": float((predicted == truth).mean()),
            "unseen_templates": float((predicted_unseen == truth).mean()),
        }
    return out


def report(result: Result, what: str = "model alone, threshold 0.5") -> str:
    """A plain-text report of the held-out scores, per source and overall."""
    lines = [f"leave-one-source-out tier accuracy ({what}); tmpl: the same rows in templates never trained on",
             f"{'source':34s} {'rows':>5s} {'mid':>5s} {'flag':>5s} {'acc':>6s} {'tmpl':>6s}"]
    per_tier: dict[str, list[float]] = defaultdict(list)
    for source, s in result.held_out.items():
        lines.append(f"{source:34s} {s['rows']:5d} {s['mid']:5d} {s['flagship']:5d} {s['accuracy']:6.3f} "
                     f"{s['unseen_templates']:6.3f}")
        per_tier["flagship" if s["flagship"] >= s["mid"] else "mid"].append(s["accuracy"])
    if result.held_out:
        for key, label in (("accuracy", "as written"), ("unseen_templates", "in unseen templates")):
            accs = [s[key] for s in result.held_out.values()]
            rows = sum(s["rows"] for s in result.held_out.values())
            weighted = sum(s[key] * s["rows"] for s in result.held_out.values()) / rows
            lines.append(f"{label}: mean over {len(accs)} sources {sum(accs) / len(accs):.3f}, "
                         f"over rows {weighted:.3f}, worst source {min(accs):.3f}")
        for tier, values in sorted(per_tier.items()):
            lines.append(f"  sources mostly {tier} (as written): mean {sum(values) / len(values):.3f} over {len(values)}")
    return "\n".join(lines)


def config_router(path: Path) -> RouterFactory:
    """Route rows as the gateway would for ``"model": "auto"`` with the config at ``path`` (its cues and
    rules), given a model. Unset environment variables get placeholders: nothing here calls an upstream."""
    import os

    import yaml

    from router.classify import Classifier
    from router.config import load_config
    from router.envsubst import interpolate
    from router.rules import RequestContext, compile_rules, match_rules

    _, missing = interpolate(yaml.safe_load(path.read_text(encoding="utf-8")), os.environ)
    config = load_config(path, {**os.environ, **{m.name: f"unset-{m.name}" for m in missing}})
    rules, ctx = compile_rules(config.rules), RequestContext(model="auto")

    def factory(model: TextModel) -> Callable[[Row], str]:
        classifier = Classifier(config.classifier.vocabulary, model)

        def route(row: Row) -> str:
            target = match_rules(classifier.classify(row.messages), ctx, rules).target
            return target.tier if target.tier is not None else config.backends[str(target.backend)].tier

        return route

    return factory


def run_command(data: list[Path], out: Path, *, c: float, held_out: bool, rules: Path | None = None,
                lexicon: Sequence[Path] = (), copies: int = DEFAULT_COPIES) -> int:
    """``llm-router train``: exit 0 with the model and ``<out>.report.txt`` written, 2 on bad input.
    ``lexicon`` files are read before the shipped ones, so their words win."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        print("llm-router train needs scikit-learn: pip install 'llm-router[train]'", file=sys.stderr)
        return 2
    try:
        rows = read_rows(data)
        router = config_router(rules) if rules is not None else None
        result = train(rows, c=c, copies=copies, held_out=held_out, router=router,
                       lexicon=read_lexicon([*lexicon, *DEFAULT_LEXICON]))
    except TrainingError as exc:
        print(f"llm-router train: {exc}", file=sys.stderr)
        return 2
    result.save(out)
    text = f"{len(rows)} rows from {len(result.meta['sources'])} sources -> {out}\n"
    if held_out:
        text += report(result, f"routed with {rules}'s cues and rules" if rules else "model alone, threshold 0.5") + "\n"
    out.with_name(out.name + ".report.txt").write_text(text, encoding="utf-8")
    print(text, end="")
    return 0
