"""Text detectors: find personal data and secrets in text, replace them with placeholders.

Standard library only (``re``), no network, no models.  One module per family, each with a
``find(text) -> list[Span]`` that says in its docstring what it catches and what it knowingly
misses:

* :mod:`.email`: ``EMAIL``
* :mod:`.phone`: ``PHONE``
* :mod:`.cards`: ``CREDIT_CARD`` (Luhn, issuer ranges)
* :mod:`.iban`: ``IBAN`` (registry lengths, mod 97)
* :mod:`.ssn`: ``US_SSN``
* :mod:`.url_credentials`: ``URL_CREDENTIALS``
* :mod:`.tokens`: ``AWS_ACCESS_KEY``, ``AWS_SECRET_KEY``, ``GOOGLE_API_KEY``, ``GITHUB_TOKEN``,
  ``GITLAB_TOKEN``, ``SLACK_TOKEN``, ``STRIPE_KEY``, ``OPENAI_KEY`` (and ``SECRET`` for a few
  other vendors)
* :mod:`.jwt`: ``JWT``
* :mod:`.private_keys`: ``PRIVATE_KEY`` (PEM blocks, across lines)
* :mod:`.prompts`: ``PASSWORD``, ``SECRET`` after prompts and keys (the backstop)

The public surface is :func:`detect`, :func:`detect_lines`, :func:`redact`,
:data:`DETECTORS_VERSION` and :data:`DETECTOR_NAMES`.  Spans returned are sorted and
disjoint: overlapping or touching findings are merged into their union, labelled with the
more specific entity (:data:`SPECIFICITY`: a card beats a phone number, a GitHub token beats
the ``SECRET`` its ``token:`` prompt gave).  Nothing here logs or keeps the text.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from agent.redact.detectors import (
    cards,
    email,
    iban,
    jwt,
    phone,
    private_keys,
    prompts,
    ssn,
    tokens,
    url_credentials,
)
from agent.redact.detectors._common import Finder
from agent.redact.spans import Span

__all__ = ["DETECTORS_VERSION", "DETECTOR_NAMES", "SPECIFICITY", "detect", "detect_lines", "redact"]

#: Bumped whenever what the detectors find changes; goes into the export manifest.
DETECTORS_VERSION = "1"

_FAMILIES = (email, phone, cards, iban, ssn, url_credentials, tokens, jwt, private_keys, prompts)
_FINDERS: tuple[Finder, ...] = tuple(module.find for module in _FAMILIES)

#: The family modules that run, in order (for the export manifest).
DETECTOR_NAMES: tuple[str, ...] = tuple(module.NAME for module in _FAMILIES)

#: When findings overlap, the entity with the higher number names the merged span.
SPECIFICITY: dict[str, int] = {
    "PRIVATE_KEY": 100,
    "AWS_ACCESS_KEY": 90,
    "GOOGLE_API_KEY": 90,
    "GITHUB_TOKEN": 90,
    "GITLAB_TOKEN": 90,
    "SLACK_TOKEN": 90,
    "STRIPE_KEY": 90,
    "OPENAI_KEY": 90,
    "JWT": 85,
    "AWS_SECRET_KEY": 80,
    "CREDIT_CARD": 70,
    "IBAN": 65,
    "US_SSN": 60,
    "URL_CREDENTIALS": 55,
    "EMAIL": 50,
    "PASSWORD": 40,
    "SECRET": 35,
    "HOME_PATH": 30,
    "HOSTNAME": 25,
    "MAC_ADDRESS": 25,
    "USER_NAME": 20,
    "PHONE": 10,
}

#: Lines a PEM block is followed for when its END never comes (fail closed, but not forever).
PEM_MAX_LINES = 200


def _merge(found: Iterable[Span]) -> list[Span]:
    """Sorted, disjoint spans: overlapping or touching ones become their union."""
    merged: list[Span] = []
    for span in sorted(found):
        if merged and span.start <= merged[-1].end:
            last = merged[-1]
            entity = last.entity
            if SPECIFICITY[span.entity] > SPECIFICITY[entity]:
                entity = span.entity
            merged[-1] = Span(last.start, max(last.end, span.end), entity)
        else:
            merged.append(span)
    return merged


def detect(text: str) -> list[Span]:
    """Every sensitive span in ``text`` (which may hold newlines): sorted, disjoint."""
    if not text:
        return []
    found: list[Span] = []
    for finder in _FINDERS:
        found.extend(finder(text))
    return _merge(found)


def detect_lines(lines: Iterable[str]) -> Iterator[list[Span]]:
    """:func:`detect` for a stream of lines (without their newline), one list per line.

    A PEM private key block is carried across lines: its BEGIN line, every line after it
    and its END line are covered whole.  A BEGIN whose END never comes covers the next
    :data:`PEM_MAX_LINES` lines.
    """
    left = 0  # lines still covered by an open key block
    for line in lines:
        if left:
            end = private_keys.END.search(line) if "PRIVATE KEY" in line else None
            if end is None:
                left -= 1
            else:  # the END line is covered whole; another block may open after it
                left = PEM_MAX_LINES if private_keys.opens_block(line[end.end() :]) else 0
            yield [Span(0, len(line), "PRIVATE_KEY")] if line else []
            continue
        if private_keys.opens_block(line):
            left = PEM_MAX_LINES
            yield [Span(0, len(line), "PRIVATE_KEY")]
            continue
        yield detect(line)


def redact(text: str, spans: Sequence[Span]) -> str:
    """``text`` with every span replaced by its placeholder (``[EMAIL]``).

    ``spans`` should come from :func:`detect` on the same text; overlapping ones are merged
    first, so any sorted or unsorted list is safe.
    """
    out: list[str] = []
    pos = 0
    for span in _merge(spans):
        out.append(text[pos : span.start])
        out.append(span.placeholder())
        pos = max(pos, span.end)
    out.append(text[pos:])
    return "".join(out)
