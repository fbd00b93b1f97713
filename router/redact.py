"""Credentials out of text the gateway relays or reports (upstream error messages, config errors).

Upstream servers and proxies sometimes echo the request's headers in an error body; config errors
may quote an interpolated value. Known secrets are replaced wherever they appear, and anything
shaped like a credential (``Bearer ...``, ``sk-...``, ``api_key=...``) is masked as well, because
the gateway cannot know every secret an upstream might echo.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "[redacted]"
#: Shorter "secrets" (an empty or toy value) would mask ordinary words.
_MIN_SECRET = 6

_CREDENTIAL = re.compile(
    r"(?i)(\b(?:bearer|basic|token)\s+)[A-Za-z0-9._~+/=-]{6,}"
    r"|\b(?:sk|pk|rk)-[A-Za-z0-9_-]{8,}"
    r"|(\b(?:api[-_ ]?key|x-api-key|authorization|access[-_]?token|secret|password|passwd)[\"']?\s*[:=]\s*[\"']?(?:(?:bearer|basic)\s+)?)"
    r"(?!\[redacted\])[^\s\"',;}&]{4,}"
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with each of ``secrets`` and every credential-shaped token replaced by ``[redacted]``."""
    for secret in secrets:
        if len(secret) >= _MIN_SECRET and secret in text:
            text = text.replace(secret, MASK)
    return _CREDENTIAL.sub(_mask, text)


def _mask(match: re.Match[str]) -> str:
    prefix = match.group(1) or match.group(2) or ""
    return prefix + MASK
