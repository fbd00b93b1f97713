"""The personal-data scan has a bounded cost: a text too full of number-like strings fails closed."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.classify import _MAX_DIGIT_RUNS, Classifier
from router.vocabulary import load_vocabulary

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier(load_vocabulary(REPO / "config" / "tasks.yaml"))


def numbers(count: int) -> str:
    """``count`` card-like numbers that fail the Luhn check and match no other detector."""
    return " ".join(f"card {not_luhn(400_000_000_000_000 + 7 * i)} x" for i in range(count))


def not_luhn(prefix: int) -> str:
    """``prefix`` and a check digit one off from the Luhn one."""
    total = 0
    for i, d in enumerate(int(c) for c in reversed(str(prefix))):
        total += (d * 2 - 9 if d > 4 else d * 2) if i % 2 == 0 else d
    return f"{prefix}{(-total + 1) % 10}"


def test_a_text_with_more_number_runs_than_the_cap_counts_as_personal_data(classifier: Classifier) -> None:
    messages = [{"role": "user", "content": "Summarise these: " + numbers(_MAX_DIGIT_RUNS + 1)}]
    assert classifier.classify(messages).pii == ("unverified",)


def test_a_text_at_the_cap_is_read_in_full(classifier: Classifier) -> None:
    assert classifier.classify([{"role": "user", "content": numbers(_MAX_DIGIT_RUNS)}]).pii == ()
    with_card = numbers(_MAX_DIGIT_RUNS - 1) + " and 4111 1111 1111 1111"
    assert classifier.classify([{"role": "user", "content": with_card}]).pii == ("card",)


def test_the_cap_is_per_text_and_other_detectors_still_run(classifier: Classifier) -> None:
    crowded = numbers(_MAX_DIGIT_RUNS + 1) + " write to jane@example.com"
    assert classifier.classify([{"role": "user", "content": crowded}]).pii == ("email", "unverified")
    messages = [{"role": "user", "content": numbers(_MAX_DIGIT_RUNS // 2)} for _ in range(4)]
    assert classifier.classify(messages).pii == ()


def test_a_request_of_more_messages_than_are_read_fails_closed_and_still_counts_its_size(classifier: Classifier) -> None:
    from router.classify import _MAX_READ_MESSAGES

    many = [{"role": "user", "content": f"card {not_luhn(400_000_000_000_000 + 7 * i)}"} for i in range(_MAX_READ_MESSAGES + 1)]
    features = classifier.classify(many)
    assert features.pii == ("unverified",)
    assert features.input_tokens > classifier.classify(many[1:]).input_tokens
    assert classifier.classify(many[1:]).pii == ()  # exactly the cap: every message read
