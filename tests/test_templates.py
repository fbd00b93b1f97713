"""Prompt templates: what a frame does to a request, and how training uses them."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from router.cli import main
from router.templates import MEASURING, TRAINING, Template, pick
from router.train import (
    Featurizer,
    Row,
    in_templates,
    in_unseen_template,
    read_rows,
    report,
    train,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "routing"
CHAT = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "Is 91 prime?"},
]


def test_a_frame_wraps_the_last_user_message_and_nothing_else() -> None:
    framed = Template("qa", "Question: {request}\nAnswer:").apply(CHAT)
    assert framed[:2] == CHAT[:2]
    assert framed[2] == {"role": "user", "content": "Question: Is 91 prime?\nAnswer:"}
    assert CHAT[2]["content"] == "Is 91 prime?"  # the input is not changed


def test_a_system_template_adds_a_prompt_only_where_there_is_none() -> None:
    template = Template("helpful", system="You are a helpful assistant.")
    assert template.apply(CHAT) == [{"role": "system", "content": "You are a helpful assistant."}, *CHAT]
    own = [{"role": "system", "content": "You label tickets."}, *CHAT]
    assert template.apply(own) == own


def test_content_parts_are_left_as_they_are() -> None:
    parts = [{"role": "user", "content": [{"type": "text", "text": "Is 91 prime?"}]}]
    assert Template("qa", "Q: {request}\nA:").apply(parts) == parts


def test_the_measuring_frames_use_no_word_of_the_training_frames() -> None:
    """Accuracy in unseen templates means something only if training never saw their words."""
    def words(templates: tuple[Template, ...]) -> set[str]:
        text = " ".join(t.user.replace("{request}", " ") + " " + (t.system or "") for t in templates
                        if t.name != "system-honest")  # a real, widely used prompt, quoted verbatim
        return {w for w in re.findall(r"[a-z]+", text.lower()) if len(w) > 2}

    assert words(TRAINING) and words(MEASURING)
    assert not words(TRAINING) & words(MEASURING)
    assert not {t.name for t in TRAINING} & {t.name for t in MEASURING}


def test_copies_are_different_templates_chosen_by_the_rows_text() -> None:
    rows = [Row("a", "mid", "qa", [{"role": "user", "content": f"question {i}"}]) for i in range(20)]
    framed, originals = in_templates(rows, 2)
    assert framed[:20] == rows and originals == list(range(20)) + [i for i in range(20) for _ in range(2)]
    assert all(framed[20 + 2 * i].messages != framed[21 + 2 * i].messages for i in range(20))
    assert framed == in_templates(rows, 2)[0]  # deterministic
    # a new row does not reshuffle the others' templates
    more, _ = in_templates([Row("a", "mid", "qa", [{"role": "user", "content": "new"}]), *rows], 2)
    assert more[23:] == framed[20:]
    assert len({str(r.messages) for r in framed[20:]}) > 10
    assert pick(TRAINING, "x", 3) == pick(TRAINING, "x", 3) and len(set(pick(TRAINING, "x", 3))) == 3


def test_a_row_and_its_copies_count_once_for_the_vocabulary() -> None:
    rows = [Row("a", "mid", "qa", [{"role": "user", "content": "zebra crossing"}]),
            Row("b", "flagship", "math", [{"role": "user", "content": "prove the crossing lemma"}])]
    framed, originals = in_templates(rows, 1)
    vocabulary = Featurizer(framed, groups=originals).vocabulary
    assert "crossing" in vocabulary  # in two rows
    assert "zebra" not in vocabulary and "lemma" not in vocabulary  # in one row and its copy
    assert "zebra" in Featurizer(framed).vocabulary  # counted twice without the groups


def some_rows() -> list[Row]:
    """Fifteen rows of each of six public sources, three per tier."""
    keep = {"nq-open", "covid-faq", "taskmaster", "aqua-rat", "folio", "hotpotqa"}
    picked: list[Row] = []
    for row in read_rows([DATA / "public-train.jsonl"]):
        if row.source in keep and sum(r.source == row.source for r in picked) < 15:
            picked.append(row)
    return picked


def test_a_model_fitted_in_templates_is_moved_less_by_frames_it_never_saw() -> None:
    rows = some_rows()

    def shift(copies: int) -> float:
        """The mean change of the escalation logit when a row comes in a ``MEASURING`` frame."""
        result = train(rows, copies=copies, held_out=False)
        featurizer = Featurizer(rows)
        featurizer.vocabulary = result.vocabulary
        plain = featurizer.matrix(rows) @ result.weights[:, 0]
        return float(np.mean([np.abs(featurizer.matrix([Row(r.source, r.tier, r.task, t.apply(r.messages)) for r in rows])
                                     @ result.weights[:, 0] - plain).mean() for t in MEASURING]))

    without, with_templates = shift(0), shift(1)
    assert without > 0.3  # a frame alone moves the decision
    assert with_templates < 0.75 * without


def test_held_out_sources_are_also_scored_in_unseen_templates() -> None:
    rows = some_rows()
    result = train(rows)
    assert set(result.held_out) == {"nq-open", "covid-faq", "taskmaster", "aqua-rat", "folio", "hotpotqa"}
    assert all(0.0 <= s["unseen_templates"] <= 1.0 for s in result.held_out.values())
    text = report(result)
    assert "in unseen templates: mean over 6 sources" in text and "tmpl" in text
    unseen = in_unseen_template(rows)
    assert all(u.messages != r.messages for u, r in zip(unseen, rows))
    assert {pick(MEASURING, str(i))[0].name for i in range(len(rows))} <= {t.name for t in MEASURING}


@pytest.mark.parametrize("value", ["-1", "99", "two"])
def test_train_refuses_a_bad_number_of_templates(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", "--data", "x.jsonl", "--out", "m.npz", "--templates", value])
    assert exc.value.code == 2
    assert f"--templates: must be a whole number from 0 to {len(TRAINING)}" in capsys.readouterr().err
