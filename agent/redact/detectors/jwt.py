"""JSON Web Tokens (``JWT``).

Catches compact JWS/JWT: three base64url parts separated by dots whose first two start with
``eyJ`` (a JSON object ``{"``), the signature possibly empty (``alg: none``); the span is the
whole token, also inside a header (``Authorization: Bearer eyJ...``) or a URL.

Knowingly misses: tokens whose header or payload JSON starts with whitespace (``eyAi...``),
JWE (five parts) beyond its first three, and tokens broken over lines.
"""

from __future__ import annotations

import re

from agent.redact.spans import Span

NAME = "jwt"

_JWT = re.compile(
    r"eyJ(?<![A-Za-z0-9_-]eyJ)[A-Za-z0-9_-]{8,}={0,2}\.eyJ[A-Za-z0-9_-]{2,}={0,2}\.[A-Za-z0-9_-]*={0,2}"
    r"(?![A-Za-z0-9_-])"
)


def find(text: str) -> list[Span]:
    """Every JSON Web Token in ``text``."""
    if "eyJ" not in text:
        return []
    return [Span(m.start(), m.end(), "JWT") for m in _JWT.finditer(text)]
