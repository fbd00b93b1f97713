"""The learned classifier: training is deterministic, model files are checked at load, rules read it."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from router.classify import Classifier, Features
from router.classify_model import (
    _NORMALISE,
    ModelError,
    TextModel,
    Window,
)
from router.classify_model import features as model_features
from router.cli import main
from router.config import ConfigError, RuleConfig, load_config
from router.rules import RequestContext, compile_rules, match_rules
from router.train import (
    DEFAULT_LEXICON,
    Row,
    TrainingError,
    read_lexicon,
    read_rows,
    train,
)

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "config" / "models" / "routing-model.npz"
DATA = REPO / "data" / "routing"


def small_rows() -> list[Any]:
    """A few rows of each of six sources: enough for a fit, quick on a busy machine."""
    rows = read_rows([DATA / "public-train.jsonl"])
    out, seen = [], {}
    for row in rows:
        if seen.get(row.source, 0) < 8 and row.source in {"nq-open", "covid-faq", "aqua-rat", "folio", "catqa", "ntrex"}:
            seen[row.source] = seen.get(row.source, 0) + 1
            out.append(row)
    return out


def test_training_is_deterministic(tmp_path: Path) -> None:
    rows = small_rows()
    first, second = train(rows, held_out=False), train(rows, held_out=False)
    first.save(tmp_path / "a.npz")
    second.save(tmp_path / "b.npz")
    a, b = TextModel.load(tmp_path / "a.npz"), TextModel.load(tmp_path / "b.npz")
    assert np.array_equal(a.weights, b.weights) and np.array_equal(a.bias, b.bias)
    assert a.digest == b.digest
    assert np.abs(a.weights[:, 0]).max() > 0  # it learned something


def test_held_out_scores_every_source_with_a_model_that_never_saw_it() -> None:
    result = train(small_rows())
    assert set(result.held_out) == {"nq-open", "covid-faq", "aqua-rat", "folio", "catqa", "ntrex"}
    assert all(s["rows"] == 8 and 0.0 <= s["accuracy"] <= 1.0 for s in result.held_out.values())


def test_train_command_writes_model_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "rows.jsonl"
    data.write_text("\n".join(json.dumps({"source": r.source, "expected_tier": r.tier, "task": r.task,
                                          "messages": r.messages}) for r in small_rows()))
    out = tmp_path / "m.npz"
    assert main(["train", "--data", str(data), "--out", str(out)]) == 0
    assert TextModel.load(out).meta["rows"] == 48
    report = (tmp_path / "m.npz.report.txt").read_text()
    assert "leave-one-source-out" in report and "catqa" in report
    assert "catqa" in capsys.readouterr().out


def test_training_folds_the_lexicons_words_into_english(tmp_path: Path) -> None:
    rows = small_rows()
    german = [Row(r.source, r.tier, r.task, [{"role": "user", "content": "Beweise: " + str(r.messages[-1]["content"])}])
              for r in rows if r.source == "aqua-rat"]
    result = train(rows + german, held_out=False, lexicon={"beweise": "prove", "blorp": "zzyzx"})
    assert "beweise" not in result.vocabulary and "prove" in result.vocabulary
    assert result.aliases["beweise"] == "prove" and "blorp" not in result.aliases  # no row says "zzyzx"
    result.save(tmp_path / "m.npz")
    model = TextModel.load(tmp_path / "m.npz")
    assert np.array_equal(model.read("Beweise x")[0], model.read("prove x")[0])


def test_language_names_are_never_learned(tmp_path: Path) -> None:
    rows = small_rows()
    told = [Row(r.source, r.tier, r.task, [{"role": "user", "content": f"{r.messages[-1]['content']} Reply in {lang}."}])
            for r in rows for lang in ("English", "German")]
    result = train(rows + told, held_out=False, lexicon={"anglais": "english", "reply": "answer"})
    assert "reply" not in result.vocabulary and "answer" in result.vocabulary  # the rows' other words are learned
    assert not {"english", "german"} & set(result.vocabulary) and "anglais" not in result.aliases
    result.save(tmp_path / "m.npz")
    model = TextModel.load(tmp_path / "m.npz")
    assert model.read("Reply in English.")[0] == model.read("Reply in Klingon.")[0]


def test_the_shipped_lexicon_reads_and_the_first_language_wins(tmp_path: Path) -> None:
    lexicon = read_lexicon(DEFAULT_LEXICON)
    assert len(lexicon) > 4000 and lexicon["ich"] == "i" and lexicon["warum"] == "why"
    a, b = tmp_path / "a.tsv", tmp_path / "b.tsv"
    a.write_text("le\tthe\n")
    b.write_text("le\thim\nder\tthe\n")
    assert read_lexicon([a, b]) == {"le": "the", "der": "the"}


def test_train_command_reads_the_lexicon_it_is_given(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "rows.jsonl"
    data.write_text("\n".join(json.dumps({"source": r.source, "expected_tier": r.tier, "task": r.task,
                                          "messages": r.messages}) for r in small_rows()))
    (tmp_path / "nl.tsv").write_text("bewijs\tprove\nwat\twhat\nist\tthe\n")
    out = tmp_path / "m.npz"
    assert main(["train", "--data", str(data), "--out", str(out), "--lexicon", str(tmp_path / "nl.tsv"),
                 "--no-held-out"]) == 0
    model = TextModel.load(out)
    # added to the shipped lexicon, and first: its "ist" wins over the shipped "ist" -> "is"
    assert model.aliases.get("wat") == "what" and model.aliases.get("der") == "the"
    assert model.aliases.get("ist") == "the" and model.meta["lexicon_words"] == len(read_lexicon(DEFAULT_LEXICON)) + 2
    (tmp_path / "bad.tsv").write_text("bewijs prove\n")
    assert main(["train", "--data", str(data), "--out", str(out), "--lexicon", str(tmp_path / "bad.tsv")]) == 2
    assert "bad.tsv:1: want `word<TAB>english`" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "message"),
    [("ich i\n", "x.tsv:1: want `word<TAB>english`"), ("ok\tfine\nIch\ti\n", "x.tsv:2: want"),
     ("ist\tis\nis\tbe\n", "'is' is both a word to map and a word mapped to")],
)
def test_a_bad_lexicon_is_named_by_line(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "x.tsv").write_text(text)
    with pytest.raises(TrainingError, match=message):
        read_lexicon([tmp_path / "x.tsv"])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "rows.jsonl:2: not JSON"),
        ('{"source": "s", "expected_tier": "huge", "task": "qa", "messages": [{"role": "user", "content": "x"}]}',
         "rows.jsonl:2: `expected_tier` must be one of ['mid', 'flagship'], not 'huge'"),
        ('{"source": "s", "expected_tier": "mid", "task": "qa", "messages": []}',
         "rows.jsonl:2: `messages` must be a non-empty list"),
    ],
)
def test_bad_rows_are_named_by_line(tmp_path: Path, line: str, message: str) -> None:
    good = '{"source": "s", "expected_tier": "mid", "task": "qa", "messages": [{"role": "user", "content": "hi"}]}'
    path = tmp_path / "rows.jsonl"
    path.write_text(f"{good}\n{line}\n")
    with pytest.raises(TrainingError, match=message.replace("[", r"\[").replace("]", r"\]")):
        read_rows([path])


def _write_npz(path: Path, **arrays: Any) -> None:
    np.savez(path, **arrays)


def _valid_arrays(tasks: tuple[str, ...] = ("qa", "math")) -> dict[str, Any]:
    return {
        "vocabulary": np.array(["prove", "that", "prove that"]),
        "weights": np.zeros((3, 1 + len(tasks)), dtype=np.float16),
        "bias": np.zeros(1 + len(tasks), dtype=np.float32),
        "tasks": np.array(tasks),
        "meta": np.array(json.dumps({"format": 3, "window": {"head": 600, "tail": 300}})),
        "aliases": np.array([["beweise", "prove"]]),
    }


def test_a_valid_model_file_loads_and_reads(tmp_path: Path) -> None:
    arrays = _valid_arrays()
    arrays["weights"][0, 0] = 4.0  # "prove" pushes towards the flagship
    _write_npz(tmp_path / "m.npz", **arrays)
    model = TextModel.load(tmp_path / "m.npz")
    assert model.predict(model.read("Prove it.")).escalation > 0.5
    assert model.predict(model.read("Hello there.")).escalation == 0.5
    assert model.explain("Prove it.")[0][0] == "prove"


def test_an_alias_reads_as_its_english_feature(tmp_path: Path) -> None:
    arrays = _valid_arrays()
    arrays["weights"][0, 0] = 4.0
    _write_npz(tmp_path / "m.npz", **arrays)
    model = TextModel.load(tmp_path / "m.npz")
    german, english = model.read("Beweise es."), model.read("Prove it.")
    assert np.array_equal(german[0], english[0]) and model.predict(german).escalation > 0.5
    assert model.explain("Beweise es.")[0] == ("beweise", model.explain("Prove it.")[0][1])


def test_a_format_2_file_without_aliases_still_loads(tmp_path: Path) -> None:
    arrays = _valid_arrays()
    del arrays["aliases"]
    arrays["meta"] = np.array(json.dumps({"format": 2, "window": {"head": 600, "tail": 300}}))
    _write_npz(tmp_path / "m.npz", **arrays)
    model = TextModel.load(tmp_path / "m.npz")
    assert model.aliases == {} and not any(model.read("Beweise es.")[0])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda a: a.pop("bias"), r"lacks \['bias'\]"),
        (lambda a: a.update(meta=np.array('{"format": 99}')), "format 99, this gateway reads format 3"),
        (lambda a: a.update(aliases=np.array(["beweise", "prove"])), "aliases must be .alias, feature. pairs"),
        (lambda a: a.update(aliases=np.array([["beweise", "proof"]])), "alias 'beweise' -> 'proof' must map"),
        (lambda a: a.update(aliases=np.array([["that", "prove"]])), "alias 'that' -> 'prove' must map"),
        (lambda a: a.update(aliases=np.array([["x", "prove"], ["x", "that"]])), "aliases repeat a word"),
        (lambda a: a.update(bias=np.zeros(7, dtype=np.float32)), "do not fit 3 features and 2 tasks"),
        (lambda a: a.update(vocabulary=np.array(["a", "a", "b"])), "repeats a feature"),
        (lambda a: a.update(meta=np.array('{"format": 3, "window": {"head": -1, "tail": 3}}')), "positive integers"),
        (lambda a: a["weights"].__setitem__((0, 0), np.nan), "NaN or infinity"),
        (lambda a: a.update(meta=np.array("{")), "meta is not JSON"),
    ],
)
def test_a_damaged_model_is_refused_with_the_reason(tmp_path: Path, damage: Any, message: str) -> None:
    arrays = _valid_arrays()
    damage(arrays)
    path = tmp_path / "m.npz"
    _write_npz(path, **arrays)
    with pytest.raises(ModelError, match=message):
        TextModel.load(path)


def test_corrupt_or_missing_files_are_model_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot read model file"):
        TextModel.load(tmp_path / "absent.npz")
    torn = tmp_path / "torn.npz"
    torn.write_bytes(SHIPPED.read_bytes()[:5000])
    with pytest.raises(ModelError, match="not a valid .npz model"):
        TextModel.load(torn)
    assert not zipfile.is_zipfile(torn)


def _config(tmp_path: Path, model_line: str, rule_when: str = "{escalation_gte: 0.5}") -> Path:
    (tmp_path / "tasks.yaml").write_text((REPO / "config" / "tasks.yaml").read_text())
    path = tmp_path / "router.yaml"
    path.write_text(f"""\
backends:
  mid: {{tier: mid, base_url: "http://127.0.0.1:9/v1", model: m}}
  flagship: {{tier: flagship, base_url: "http://127.0.0.1:9/v1", model: f}}
classifier:
  vocabulary: tasks.yaml
{model_line}
rules:
  - name: learned
    when: {rule_when}
    tier: flagship
  - name: default
    tier: mid
""")
    return path


def test_check_names_a_broken_model_file_and_serve_never_starts_with_it(tmp_path: Path) -> None:
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ConfigError) as info:
        load_config(_config(tmp_path, "  model: broken.npz"), {})
    assert any("classifier.model" in line and "not a valid .npz model" in line for line in info.value.errors)
    assert main(["check", str(_config(tmp_path, "  model: broken.npz"))]) == 2


def test_model_conditions_need_a_model(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_config(tmp_path, ""), {})
    assert any("escalation_gte: needs a model" in line for line in info.value.errors)


def test_shipped_model_loads_and_routes(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "routing-model.npz").write_bytes(SHIPPED.read_bytes())
    config = load_config(_config(tmp_path, "  model: models/routing-model.npz"), {})
    model = config.classifier.model
    assert model is not None and SHIPPED.stat().st_size <= 20 * 2**20
    classifier = Classifier(config.classifier.vocabulary, model)
    features = classifier.classify([{"role": "user", "content": "Translate 'good morning' into German."}])
    assert features.escalation is not None and 0.0 <= features.escalation <= 1.0
    assert features.probabilities is not None and abs(sum(features.probabilities.values()) - 1.0) < 1e-6
    assert features.confidence == round(max(features.probabilities.values()), 3)


def test_the_model_reads_the_instruction_not_the_pasted_middle() -> None:
    model = TextModel.load(SHIPPED)
    head = "Please list the dates mentioned in the text below.\n" + "Meeting notes, week one. " * 30
    tail = "Meeting notes, week two. " * 15 + "\nThat is all."
    quiet = model.read(head + "x " * 2000 + tail)
    loud = model.read(head + "integral theorem court ruling exploit " * 200 + tail)
    assert np.allclose(quiet[0], loud[0]) and quiet[1] == loud[1]



def test_ascii_text_reads_as_the_general_path_reads_it() -> None:
    """The bytes fast path for ASCII text gives the words lower() + the normalising table give."""
    every = "".join(map(chr, range(128)))
    text = f"{every} Hello, World! It's 42-year-old C++ code: x[i] = f(y); {every[::-1]} e.g. A/B \\ DONE?"
    words = Window().cut(text).lower().translate(_NORMALISE).split()
    assert model_features(text, Window())[: len(words)] == words


@pytest.mark.parametrize(
    "text",
    [
        "Prove that the square root of 2 is irrational.",
        "Can my landlord keep the deposit?",
        "a " * 5000 + "? {x} 1\n" * 100,  # as many words as a window holds
        "",
        None,
    ],
)
def test_prediction_is_the_models_formula(text: str | None) -> None:
    """Sigmoid and softmax of bias + (summed rows of the known features) / sqrt(number of features)."""
    model = TextModel.load(SHIPPED)
    prediction = model.predict(None if text is None else model.read(text))
    found = [] if text is None else model_features(text, model.window)
    summed = sum((model.weights[model.index.get(f, 0)].astype(np.float64) for f in found), np.zeros(model.weights.shape[1]))
    logits = model.bias + (summed / np.sqrt(len(found)) if found else 0.0)
    tasks = np.exp(logits[1:] - logits[1:].max())
    tasks /= tasks.sum()
    assert prediction.escalation == pytest.approx(1 / (1 + np.exp(-logits[0])), abs=1e-5)
    assert list(prediction.probabilities.values()) == pytest.approx(tasks.tolist(), abs=1e-5)
    assert prediction.task == model.tasks[int(tasks.argmax())] and prediction.confidence == pytest.approx(tasks.max(), abs=1e-5)

def test_a_model_task_fills_in_only_where_no_cue_reached_the_score() -> None:
    config = load_config(REPO / "config" / "demo.yaml", {})
    classifier = Classifier(config.classifier.vocabulary, config.classifier.model)
    cue = classifier.classify([{"role": "user", "content": "Summarize this article in three bullet points: ..."}])
    assert (cue.task, cue.task_source) == ("summarize", "cues")
    quiet = classifier.classify([{"role": "user", "content": "zebra lamp orbit"}])
    assert quiet.task_source == "model" and quiet.task == max(quiet.probabilities, key=quiet.probabilities.get)


def features(**overrides: Any) -> Features:
    base: dict[str, Any] = dict(task="faq", scores={}, complexity=0.2, input_tokens=100, has_tools=False,
                                has_images=False, pii=(), signals={})
    return Features(**{**base, **overrides})


@pytest.mark.parametrize(
    ("escalation", "confidence", "rule"),
    [(0.9, 0.9, "learned"), (0.3, 0.4, "unsure"), (0.3, 0.9, "default"), (None, None, "default")],
)
def test_rules_read_the_model(escalation: float | None, confidence: float | None, rule: str) -> None:
    rules = compile_rules([
        RuleConfig.model_validate(r) for r in [
            {"name": "learned", "when": {"escalation_gte": 0.6}, "tier": "flagship"},
            {"name": "unsure", "when": {"confidence_lt": 0.55, "escalation_gte": 0.25}, "tier": "flagship"},
            {"name": "default", "tier": "mid"},
        ]
    ])
    decision = match_rules(features(escalation=escalation, confidence=confidence), RequestContext(model="auto"), rules)
    assert decision.rule == rule


def test_decide_explains_the_probabilities_the_pushing_features_and_the_cues() -> None:
    from bench.micro import bench_environ, build_pipeline
    from router.auth import ANONYMOUS

    pipeline = build_pipeline(load_config(REPO / "config" / "router.yaml", bench_environ()))
    body = {"model": "auto", "messages": [{"role": "user", "content": "Prove that the square root of 2 is irrational."}]}
    route = pipeline.route(body, ANONYMOUS, {})
    explained = pipeline.explain(route, ANONYMOUS, body["messages"])
    assert explained["features"]["escalation"] == route.features.escalation is not None
    assert set(explained["features"]["probabilities"]) == set(pipeline.classifier.model.tasks)
    pushes = explained["model_push"]
    assert pushes and all(isinstance(p["feature"], str) and isinstance(p["escalation_logit"], float) for p in pushes)
    assert abs(pushes[0]["escalation_logit"]) >= abs(pushes[-1]["escalation_logit"])
    assert explained["cues"] == list(route.features.evidence)


def test_held_out_routing_uses_the_configs_cues_and_rules(tmp_path: Path) -> None:
    from router.train import config_router

    demo = (REPO / "config" / "demo.yaml").read_text()
    gate = ", escalation_lt: 0.8}"
    assert gate in demo
    (tmp_path / "demo.yaml").write_text(demo.replace(gate, "}"))  # plain tasks stay mid, whatever the model says
    shutil.copy(REPO / "config" / "tasks.yaml", tmp_path)
    shutil.copytree(REPO / "config" / "models", tmp_path / "models")
    rows = small_rows()
    routed = train(rows, router=config_router(tmp_path / "demo.yaml"))
    alone = train(rows)
    assert set(routed.held_out) == set(alone.held_out)
    # translations are held by a cue ("translate") and that rule
    assert routed.held_out["ntrex"]["accuracy"] == 1.0
