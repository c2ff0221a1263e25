"""Credentials inside URLs (``URL_CREDENTIALS``).

Catches the userinfo of ``scheme://user:password@host`` (the span is ``user:password``),
whatever the scheme (``https``, ``postgres``, ``mongodb+srv``, ``redis``, ``ftp``, ``amqp``...),
also when the password holds an unescaped ``@``; and a token used as the whole userinfo
(``https://ghp_...@github.com/``, ``https://x-access-token:...@``): a userinfo without a colon
counts when it is token-shaped (16+ characters mixing letters and digits) or starts with a
known token prefix.

Knowingly misses: a plain user name without a password (``https://alice@example.com/`` is not
reported; :mod:`.email` ignores it too), credentials outside a ``scheme://`` URL
(``user:pass@host`` in scp or git remotes), placeholders that are not secrets
(``user:password@``, ``foo:bar@``, ``:${PASSWORD}@``, ``:<pass>@``, ``:****@``, ``:%s@``), and
an empty user with a word for a password (``cvs://:pserver:anoncvs@``).
"""

from __future__ import annotations

import re

from agent.redact.detectors._common import looks_random
from agent.redact.spans import Span

NAME = "url_credentials"

_URL = re.compile(r":(?<=[A-Za-z0-9]:)//([^\s/?#\"'<>`\\]{1,256})@(?=[\w\[])")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]{0,30}\Z")
_PLACEHOLDER = re.compile(
    r"(?i)\A(?:|pass(?:word|wd)?|pwd|pw|secret|token|your[_-]?password|my[_-]?password|foo|bar|baz|"
    r"\**|x+|\.+|<[^>]*>|\{[^}]*\}|\$\{[^}]*\}|\$\w+|\$\([^)]*\)|%s|%\(\w+\)s|\{\{.*\}\})\Z"
)
_TOKEN_PREFIXES = ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "glpat-", "oauth2", "x-token")


def find(text: str) -> list[Span]:
    """Every credential held in the userinfo of a URL in ``text``."""
    if "://" not in text:
        return []
    spans: list[Span] = []
    for m in _URL.finditer(text):
        if _SCHEME.search(text, max(0, m.start() - 31), m.start()) is None:
            continue
        userinfo = m.group(1)
        start, end = m.span(1)
        user, _, password = userinfo.partition(":")
        if password:
            if not _PLACEHOLDER.match(password) and (user or looks_random(password)):
                spans.append(Span(start, end, "URL_CREDENTIALS"))
        elif user.lower().startswith(_TOKEN_PREFIXES) or looks_random(user, 16):
            spans.append(Span(start, end, "URL_CREDENTIALS"))
    return spans
