"""PEM and OpenSSH private keys (``PRIVATE_KEY``).

Catches ``-----BEGIN … PRIVATE KEY-----`` (any words before ``PRIVATE KEY``: RSA, EC, DSA,
OPENSSH, ENCRYPTED, PGP … ``PRIVATE KEY BLOCK``, and the ``---- BEGIN SSH2 ENCRYPTED PRIVATE
KEY ----`` form): the span runs from the BEGIN marker to the end of the matching END marker,
across lines, also when the key sits in one line with escaped newlines
(``"-----BEGIN PRIVATE KEY-----\\nMIIE…\\n-----END PRIVATE KEY-----\\n"`` in a JSON key file).
A BEGIN without an END covers everything to the end of the text: a truncated key is still a
key (fail closed).  Line by line, :func:`opens_block` and :data:`END` let the caller
carry the block over lines (see :func:`agent.redact.detectors.detect_lines`).

A BEGIN marker that is only *mentioned* (followed on its line by a closing quote, a
backtick or words, as in ``line.startswith("-----BEGIN RSA PRIVATE KEY-----")`` or
documentation) covers the marker alone, never the lines after it.

Knowingly misses: key material without its BEGIN line (a pasted middle part of a key),
PuTTY ``.ppk`` files, raw base64 or hex private keys, and keys whose markers were
reformatted (lower case, other dash counts).
"""

from __future__ import annotations

import re

from agent.redact.spans import Span

NAME = "private_keys"

BEGIN = re.compile(r"-{4,5} ?BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)? ?-{4,5}")
END = re.compile(r"-{4,5} ?END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)? ?-{4,5}")
_KEY_START = re.compile(r"[ \t]*(?:\Z|\n|\r|\\(?:r\\)?n|[A-Za-z0-9+/=]{16}|(?:Proc-Type|Comment|Version):)")


def is_key_start(text: str, marker_end: int) -> bool:
    """True when what follows a BEGIN marker is a key (line end, escaped newline, base64), not prose."""
    return _KEY_START.match(text, marker_end) is not None


def find(text: str) -> list[Span]:
    """Every private key block in ``text`` (to the end of the text when its END is missing)."""
    if "PRIVATE KEY" not in text:
        return []
    spans: list[Span] = []
    pos = 0
    while True:
        begin = BEGIN.search(text, pos)
        if begin is None:
            return spans
        if not is_key_start(text, begin.end()):
            spans.append(Span(begin.start(), begin.end(), "PRIVATE_KEY"))
            pos = begin.end()
            continue
        end = END.search(text, begin.end())
        stop = len(text) if end is None else end.end()
        spans.append(Span(begin.start(), stop, "PRIVATE_KEY"))
        pos = stop


def opens_block(line: str) -> bool:
    """True when ``line`` starts a key block that it does not close (a real BEGIN with no END after it)."""
    if "PRIVATE KEY" not in line:
        return False
    pos = 0
    while True:
        begin = BEGIN.search(line, pos)
        if begin is None:
            return False
        pos = begin.end()
        if is_key_start(line, pos):
            end = END.search(line, pos)
            if end is None:
                return True
            pos = end.end()
