"""Cloud and API tokens with a recognisable shape.

Catches, each standing alone (no letter or digit glued on either side):

* ``AWS_ACCESS_KEY``: ``AKIA``/``ASIA``/``AGPA``/``AIDA``/``AROA``/``AIPA``/``ANPA``/``ANVA``/
  ``ASCA``/``ABIA``/``ACCA``/``A3T`` + one character, followed by 16 of ``[A-Z0-9]`` (20 in all);
* ``AWS_SECRET_KEY``: 40 characters of ``[A-Za-z0-9/+]`` mixing upper case, lower case and a
  digit, on a line that also says ``aws``, ``secret`` or holds an access key id before it
  (``aws_secret_access_key = ...``, ``"SecretAccessKey": "..."``);
* ``GOOGLE_API_KEY``: ``AIza`` + 35 of ``[0-9A-Za-z_-]``;
* ``GITHUB_TOKEN``: ``ghp_``/``gho_``/``ghu_``/``ghs_``/``ghr_`` + 36 or more alphanumerics,
  and fine-grained ``github_pat_`` + 22 or more;
* ``GITLAB_TOKEN``: ``glpat-`` and the other ``gl…-`` prefixes (``gldt-``, ``glrt-``,
  ``glptt-``, ``glsoat-``, ``glft-``, ``glimt-``, ``glagent-``, ``glcbt-``, ``glffct-``,
  ``gloas-``, ``glwt-``...) + 20 or more, and runner registration tokens ``GR1348941…``;
* ``SLACK_TOKEN``: ``xoxb-``/``xoxp-``/``xoxa-``/``xoxo-``/``xoxs-``/``xoxr-``/``xoxe-``/
  ``xoxe.xoxp-`` and ``xapp-`` tokens, and ``https://hooks.slack.com/services/T…/B…/…``
  (also ``/workflows/`` and ``/triggers/``) webhook URLs, whole;
* ``STRIPE_KEY``: ``sk_live_``/``sk_test_``/``rk_live_``/``rk_test_`` + 10 or more, ``whsec_`` + 20;
* ``OPENAI_KEY``: ``sk-`` + 32 or more alphanumerics (not all lower-case letters),
  ``sk-proj-``/``sk-svcacct-``/``sk-admin-``/``sk-ant-…-`` (Anthropic) + 20 or more;
* ``SECRET`` for a few other unmistakable vendor prefixes: Hugging Face ``hf_``, npm ``npm_``,
  PyPI ``pypi-AgEIcHlwaS5vcmc…``, SendGrid ``SG.….…``, DigitalOcean ``dop_v1_``, Shopify ``shpat_``.

Knowingly misses: AWS secret keys with nothing on their line saying what they are, keys cut
short or wrapped over lines, publishable keys that are not secrets (``pk_live_``), vendor
tokens without a fixed prefix (Twilio, Azure, Datadog...: the prompt rules in
:mod:`.prompts` catch them after ``token:``/``api_key=``).
"""

from __future__ import annotations

import re

from agent.redact.detectors._common import caseless, class_changes, folded, scan
from agent.redact.spans import Span

NAME = "tokens"


def _token(first: str, rest: str) -> re.Pattern[str]:
    """``first`` (fixed width) then ``rest``, with no token character glued before or after.

    The look-behind sits after ``first`` so the regex engine can scan for ``first`` quickly.
    """
    return re.compile(rf"{first}(?<![A-Za-z0-9_-]{first}){rest}(?![A-Za-z0-9_-])")


#: (entity, literal prefixes one of which must occur in the text, pattern)
_RULES: tuple[tuple[str, tuple[str, ...], re.Pattern[str]], ...] = (
    (
        "AWS_ACCESS_KEY",
        ("AKIA", "ASIA", "AGPA", "AIDA", "AROA", "AIPA", "ANPA", "ANVA", "ASCA", "ABIA", "ACCA", "A3T"),
        re.compile(
            r"A(?<![A-Za-z0-9]A)(?:KIA|SIA|GPA|IDA|ROA|IPA|NPA|NVA|SCA|BIA|CCA|3T[A-Z0-9])"
            r"[A-Z0-9]{16}(?![A-Za-z0-9])"
        ),
    ),
    ("GOOGLE_API_KEY", ("AIza",), _token("AIza", r"[0-9A-Za-z_-]{35}")),
    ("GITHUB_TOKEN", ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"), _token("gh[pousr]_", r"[A-Za-z0-9]{36,251}")),
    ("GITHUB_TOKEN", ("github_pat_",), _token("github_pat_", r"[A-Za-z0-9_]{22,250}")),
    (
        "GITLAB_TOKEN",
        ("glpat-", "gldt-", "glrt-", "glptt-", "glsoat-", "glft-", "glimt-", "glagent-", "glcbt-",
         "glffct-", "gloas-", "glwt-", "glrtr-", "glsst-"),
        _token("gl", r"(?:pat|dt|rt|ptt|soat|ft|imt|agent|cbt|ffct|oas|wt|rtr|sst)-"
                     r"[A-Za-z0-9_-](?:[A-Za-z0-9_.-]*[A-Za-z0-9_-])?"),
    ),
    ("GITLAB_TOKEN", ("GR1348941",), _token("GR1348941", r"[A-Za-z0-9_-]{20,}")),
    ("SLACK_TOKEN", ("xox", "xapp-"),
     _token("x", r"(?:ox(?:[abposr]|e(?:\.xox[bp])?)|app)-[A-Za-z0-9-]{10,}[A-Za-z0-9]")),
    ("SLACK_TOKEN", ("hooks.slack.com",),
     re.compile(r"(?:https?://|(?<![\w.-]))hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/-]{10,}")),
    ("STRIPE_KEY", ("sk_live_", "sk_test_", "rk_live_", "rk_test_"),
     _token("[sr]k_", r"(?:live|test)_[A-Za-z0-9]{10,}")),
    ("STRIPE_KEY", ("whsec_",), _token("whsec_", r"[A-Za-z0-9+/=]{20,}")),
    ("OPENAI_KEY", ("sk-",),
     _token("sk-", r"(?:(?:proj|svcacct|admin|ant-[a-z]+\d*|or-v1)-[A-Za-z0-9_-]{20,}|[A-Za-z0-9]{32,})")),
    ("SECRET", ("hf_",), _token("hf_", r"[A-Za-z0-9]{30,}")),
    ("SECRET", ("npm_",), _token("npm_", r"[A-Za-z0-9]{36}")),
    ("SECRET", ("pypi-AgE",), _token("pypi-AgE", r"[A-Za-z0-9_-]{50,}")),
    ("SECRET", ("SG.",), _token(r"SG\.", r"[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}")),
    ("SECRET", ("dop_v1_", "doo_v1_", "dor_v1_"), _token("do[opr]_v1_", r"[a-f0-9]{64}")),
    ("SECRET", ("shpat_", "shpca_", "shppa_", "shpss_"), _token("shp(?:at|ca|pa|ss)_", r"[a-fA-F0-9]{32}")),
)  # fmt: skip

_AWS_SECRET = re.compile(r"[A-Za-z0-9/+](?<![A-Za-z0-9/+][A-Za-z0-9/+])[A-Za-z0-9/+]{39}(?![A-Za-z0-9/+=])")
_AWS_CONTEXT = caseless(r"aws|secret|\ba(?:kia|sia)[a-z0-9]{16}\b")
_HEX40 = re.compile(r"[0-9a-fA-F]{40}")


def _secret_shape(value: str) -> bool:
    """Random base64, not a SHA-1, a path or CamelCase words (``role/AmazonS3ReplicationRole``)."""
    if not (
        any(ch.isupper() for ch in value)
        and any(ch.islower() for ch in value)
        and any(ch.isdigit() for ch in value)
        and _HEX40.fullmatch(value) is None
        and class_changes(value) >= 0.35
    ):
        return False
    words = [part for part in value.split("/") if len(part) >= 3 and part.isalpha() and part.islower()]
    return len(words) < 2  # com/AmazonS3/latest/dev/...: a URL path


def _aws_secrets(text: str, spans: list[Span]) -> None:
    """40-character keys after a context word on the same line (only those lines are scanned)."""
    for ctx in scan(_AWS_CONTEXT, text, folded(text)):
        line_end = text.find("\n", ctx.end())
        if line_end < 0:
            line_end = len(text)
        for m in _AWS_SECRET.finditer(text, ctx.end(), min(line_end, ctx.end() + 240)):
            if _secret_shape(m.group()):
                spans.append(Span(m.start(), m.end(), "AWS_SECRET_KEY"))


def find(text: str) -> list[Span]:
    """Every recognisable cloud or API token in ``text``."""
    spans: list[Span] = []
    for entity, prefixes, pattern in _RULES:
        if not any(p in text for p in prefixes):
            continue
        for m in pattern.finditer(text):
            value = m.group()
            if entity == "OPENAI_KEY" and value[3:].isalpha() and value[3:].islower():
                continue
            if entity == "GITLAB_TOKEN" and value.startswith("gl") and len(value.split("-", 1)[1]) < 20:
                continue
            spans.append(Span(m.start(), m.end(), entity))
    low = text.lower()
    if "aws" in low or "secret" in low or "AKIA" in text or "ASIA" in text:
        _aws_secrets(text, spans)
    return spans
