"""Pasted material is told apart from the request by labels and tags, and read as data."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.classify import Classifier
from router.classify_model import model_text
from router.material import MIN_MATERIAL_CHARS, split_material
from router.vocabulary import load_vocabulary

REPO = Path(__file__).resolve().parents[1]
PASSAGE = ("The Erie Canal opened in October 1825 and connected the Hudson River at Albany with Lake Erie at "
           "Buffalo, a distance of about 363 miles. It cut the cost of moving freight from Buffalo to New York "
           "City by about 95 percent and made New York the country's busiest port.")


def test_a_labelled_block_up_to_the_question_is_material() -> None:
    text = f"Answer using only the text below.\n\nContext:\n{PASSAGE}\n\nQuestion: When did the canal open?"
    request, material = split_material(text)
    assert request == "Answer using only the text below.\n\nContext:\nQuestion: When did the canal open?"
    assert material.strip() == PASSAGE


@pytest.mark.parametrize("text", [
    f"Context: {PASSAGE}\nQ: When did the canal open?\nA:",  # inline, SQuAD-style
    f"Kontext:\n{PASSAGE}\n\nFrage: Wann wurde der Kanal eröffnet?",
    f"### Document 1:\n{PASSAGE}\n### Question: When did the canal open?",
    f"<context>\n{PASSAGE}\n</context>\nWhen did the canal open?",
    f'<document index="1" source="wiki">{PASSAGE}</document>\n\nWhen did the canal open?',
])
def test_layouts_of_labelled_material(text: str) -> None:
    request, material = split_material(text)
    assert PASSAGE in material
    assert "canal open" in request or "Kanal" in request
    assert "Erie" not in request


def test_a_numbered_label_opens_a_block_after_its_title() -> None:
    text = f"### Document 1: Erie Canal\n{PASSAGE}\n### Document 2: Locks\n{PASSAGE}\n\nQuestion: How long is the canal?"
    request, material = split_material(text)
    assert request == "### Document 1:\n### Document 2:\nQuestion: How long is the canal?"
    assert "Erie Canal" in material and "Locks" in material and material.count(PASSAGE) == 2


@pytest.mark.parametrize("frame", ["Q: ", "Question: ", "### Instruction: ", "Input: "])
def test_a_template_label_before_the_material_label_does_not_hide_it(frame: str) -> None:
    request, material = split_material(f"{frame}Context:\n{PASSAGE}\n\nQuestion: When did the canal open?")
    assert request == f"{frame}Context:\nQuestion: When did the canal open?"
    assert material.strip() == PASSAGE


def test_a_question_after_the_material_without_a_label_stays_the_request() -> None:
    text = f"News report:\n{PASSAGE}\n\nHow far apart are Albany and Buffalo by the canal?"
    request, material = split_material(text)
    assert request.endswith("How far apart are Albany and Buffalo by the canal?")
    assert "363" in material and "363" not in request


def test_facts_after_the_material_are_the_request() -> None:
    text = (f"Return policy (excerpt):\n{PASSAGE}\n\nFacts: Mr Kaya sent back sealed earphones after 29 days.\n\n"
            "Can he get a refund? Give reasons.")
    request, _ = split_material(text)
    assert "Mr Kaya" in request and "Can he get a refund" in request


@pytest.mark.parametrize("text", [
    PASSAGE + "\n\nWhen did the canal open?",  # no label: nothing is set apart
    "Email: ann@example.com\nPhone: 555 0100\n" + PASSAGE,  # fields, not blocks
    "Context: we run a Django monolith.\n" + PASSAGE,  # a short inline label is the user's own situation
    "Document:\n" + PASSAGE,  # nothing but material: no request to read
    f"Text:\n{PASSAGE[: MIN_MATERIAL_CHARS - 10]}\n\nQuestion: When?",  # too short to be material
    "2. CFO report: " + PASSAGE + "\nTask: list the resolutions.",  # a list item, not a label
    "```python\n" + "def f(x):\n    return x\n" * 20 + "```\nWhy does this fail?",  # code is no material
])
def test_what_is_not_material(text: str) -> None:
    assert split_material(text) is None


def test_a_speaker_named_a_does_not_end_a_transcript() -> None:
    lines = "\n".join(f"Grad {who}: {PASSAGE[:80]}" for who in "ABAB")
    request, material = split_material(f"Meeting transcript:\n{lines}\n\nQuestion: What did Grad A propose?")
    assert request == "Meeting transcript:\nQuestion: What did Grad A propose?"
    assert material.count("Grad ") == 4


def test_labels_deep_in_a_long_text_are_not_looked_for() -> None:
    filler = "word " * 1000  # 5,000 characters before the label
    assert split_material(f"{filler}\nContext:\n{PASSAGE}\n\n{filler}\nQuestion: why?") is None


def test_the_classifier_reads_material_as_data() -> None:
    classifier = Classifier(load_vocabulary(REPO / "config" / "tasks.yaml"))
    statute = ("Section 12. A landlord shall not demand a deposit of more than two months' rent. A tenant who "
               "pays more may recover the excess with interest, and a court may award damages for breach of "
               "this section. The tenancy agreement must state the deposit in writing. ") * 2
    asked = "Answer from the text only. What is the largest deposit a landlord may ask for?"
    pasted = classifier.classify([{"role": "user", "content": f"{asked}\n\nStatute text:\n{statute}"}])
    inline = classifier.classify([{"role": "user", "content": f"{asked}\n\n{statute}"}])
    assert pasted.task == "extraction"
    assert pasted.scores["legal"] < inline.scores["legal"]  # the statute's words count as a body's
    assert inline.task == "legal"
    assert pasted.material_chars >= len(statute) and inline.material_chars == 0
    assert "chars of pasted material read as data" in pasted.reason()


def test_the_model_reads_the_request_around_the_material() -> None:
    text = f"Context:\n{PASSAGE}\n\nQuestion: When did the canal open?"
    messages = [{"role": "system", "content": "You answer from documents."}, {"role": "user", "content": text}]
    assert model_text(messages) == "Context:\nQuestion: When did the canal open?"


def test_offsets_hold_for_characters_that_lower_case_to_two_and_for_multibyte_text() -> None:
    # "İ".lower() is two characters, and the automaton reads UTF-8 bytes: the spans are still the text's.
    text = f"İstanbul, Ünïcödé: İİ notes first.\nKontext:\nÉtudes à Lyon — {PASSAGE}\n\nFrage: Wann?"
    request, material = split_material(text)
    assert request == "İstanbul, Ünïcödé: İİ notes first.\nKontext:\nFrage: Wann?"
    assert material.strip() == f"Études à Lyon — {PASSAGE}"


def test_training_reads_what_serving_reads() -> None:
    """The material's words never reach the model's vocabulary: training featurizes rows as serving does."""
    from router.train import Row, train

    passage = PASSAGE.replace("Erie", "Zyzzogeton")  # a word no other row holds
    rows = [Row(f"src{i % 3}", tier, task, [{"role": "user", "content": content}])
            for i, (tier, task, content) in enumerate([
                ("mid", "extraction", f"Context:\n{passage}\n\nQuestion: When did the canal open?"),
                ("mid", "extraction", f"Passage:\n{passage}\n\nQuestion: How long is the canal?"),
                ("flagship", "math", f"Zyzzogeton asks: prove that {PASSAGE[:40]} has no solution."),
                ("flagship", "math", "Prove that the square root of 2 is irrational, then generalise it."),
                ("mid", "extraction", "Extract the dates: the canal opened in October 1825."),
                ("flagship", "math", "Prove that there are infinitely many primes of the form 4k + 3."),
            ])]
    # copies=0: a greeting before a label ("Hi there, Context:") hides it, so that copy reads the material whole
    vocabulary = set(train(rows, copies=0, held_out=False).vocabulary)
    assert "question" in vocabulary and "canal" in vocabulary  # the requests' words are read
    assert "zyzzogeton" not in vocabulary  # once in a request, twice in material: seen in one row only


def test_tags_are_searched_a_bounded_way() -> None:
    # Many opening tags and a far-away close: each tag name is looked for once, and not too far on.
    flood = "<context>" * 300 + "x " * 100_000 + "</context>\nWhat is x?"
    assert split_material(flood) is None
    near = "<context>" + PASSAGE + "</context>" + "<context>" * 300 + "\nWhen did the canal open?"
    request, material = split_material(near)
    assert material == f"<context>{PASSAGE}</context>" and "When did the canal open?" in request
