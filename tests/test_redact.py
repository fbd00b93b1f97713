from __future__ import annotations

import pytest

from router.redact import MASK, redact


@pytest.mark.parametrize(
    ("text", "secrets", "gone"),
    [
        ("upstream said: headers={'Authorization': 'Bearer sk-upstream-123456789'}", (), "sk-upstream-123456789"),
        ("Incorrect API key provided: sk-proj-abcdefgh12345", (), "sk-proj-abcdefgh12345"),
        ("request failed ?api_key=AIzaSyA1234567890 denied", (), "AIzaSyA1234567890"),
        ('{"x-api-key": "q7Zp0Lk2mN"} rejected', (), "q7Zp0Lk2mN"),
        ("echo: my-private-token-value was sent", ("my-private-token-value",), "my-private-token-value"),
        ("authorization: Basic dXNlcjpwYXNz", (), "dXNlcjpwYXNz"),
    ],
)
def test_credentials_are_masked(text: str, secrets: tuple[str, ...], gone: str) -> None:
    out = redact(text, secrets)
    assert gone not in out
    assert MASK in out


def test_ordinary_text_is_left_alone() -> None:
    text = "CUDA out of memory; the model is overloaded, try again (skipped 3 tokens)"
    assert redact(text, ("", "abc")) == text
