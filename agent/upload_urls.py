"""Which addresses ``optin upload`` may talk to (docs/upload.md, "Where the volunteer's side sends"),
pure and with no import of agent's: the study file's check (``[upload] url``) and the upload protocol
(every part URL an intake returns) apply the same rule.

https, or http to this computer (127.0.0.1, [::1]) only; no user information, no fragment; a query
only where allowed. Parsed with regular expressions: the volunteer's side imports no URL library
outside agent/upload/ (tests/unit/test_no_network.py). No message ever quotes the URL: a presigned
one holds a signature.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_AUTHORITY = re.compile(r"[^/?#]*")
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?")
_LOOPBACK = ("127.0.0.1", "[::1]")


@dataclass(frozen=True)
class Address:
    """A URL the client may use, split: ``https``, host (IPv6 in brackets), port, path with query."""

    https: bool
    host: str
    port: int
    target: str


def split_url(url: str, *, query: bool = True) -> Address:
    """``url`` split into what an HTTP connection needs.

    :raises ValueError: it breaks :func:`url_problem`'s rule (the message never quotes it).
    """
    parsed = _parse(url, query=query)
    if isinstance(parsed, str):
        raise ValueError(parsed)
    return parsed


def url_problem(url: str, *, query: bool = True) -> str | None:
    """What makes ``url`` an address the client must not use, or None (never quotes it: a presigned
    URL holds a signature).

    The rule: ``https://``, or ``http://`` to 127.0.0.1 or [::1] only; no user information, no
    fragment; a query only where ``query`` (the intake's own address has none, presigned URLs do).
    """
    parsed = _parse(url, query=query)
    return parsed if isinstance(parsed, str) else None


def _parse(url: str, *, query: bool) -> Address | str:  # noqa: PLR0911 - one return per rule
    """``url`` as an :class:`Address`, or what is wrong with it."""
    if len(url) > 8192 or any(c.isspace() or not c.isprintable() for c in url):
        return "has spaces, control characters or is over 8192 characters"
    scheme = _SCHEME.match(url)
    if scheme is None or scheme.group(1).lower() not in ("http", "https"):
        return "is not an https:// address"
    rest = url[scheme.end() :]
    authority = _AUTHORITY.match(rest)
    if authority is None or not authority.group():
        return "has no host"
    if "@" in authority.group():
        return "holds a user name or password"
    host = _HOST_PORT.fullmatch(authority.group())
    if host is None or (host.group(2) is not None and not 0 < int(host.group(2)) <= 65535):
        return "has a host name or port that cannot be read"
    https = scheme.group(1).lower() == "https"
    if not https and host.group(1) not in _LOOPBACK:
        return "is plain http:// to another computer than this one (only https:// is allowed)"
    target = rest[authority.end() :]
    if "#" in target:
        return "has a fragment (#...)"
    if not query and "?" in target:
        return "has a query (?...)"
    port = int(host.group(2)) if host.group(2) else (443 if https else 80)
    return Address(https, host.group(1), port, target or "/")


def action_url(base: str, action: str) -> str:
    """``<base>v1/<action>`` (``base`` ends with ``/``; checked by :func:`url_problem` with no query)."""
    return base + ("" if base.endswith("/") else "/") + f"v1/{action}"


__all__ = ["Address", "action_url", "split_url", "url_problem"]
