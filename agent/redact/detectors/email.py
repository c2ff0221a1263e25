"""E-mail addresses (``EMAIL``).

Catches ``local@domain.tld`` with dots, plus-tags, ``%`` and ``-`` in the local part,
subdomains, Unicode letters in both parts (``jörg@exämple.de``), and any TLD in the IANA
list (:mod:`._tlds`, plus ``.test``, ``.example`` and other reserved names; IDN TLDs are
checked in punycode).  The address may follow punctuation directly (``mailto:a@example.com``,
``<a@example.com>``).

Knowingly misses, by design:

* ``user@host`` without a dot, ``@decorators``, ``icon@2x.png`` (``png`` is not a TLD),
  ``name@domain.tld`` style placeholders whose TLD does not exist;
* the user name of a URL (``https://alice@example.com/``: see :mod:`.url_credentials`);
* SSH and scp targets of well-known service accounts followed by ``:``
  (``git@github.com:owner/repo.git``, ``ubuntu@host.example.com:~/``): a login, not a mailbox;
* quoted local parts (``"john doe"@example.com``) and obfuscated forms (``alice at example dot com``).
"""

from __future__ import annotations

import re

from agent.redact.detectors._tlds import TLDS
from agent.redact.spans import Span

NAME = "email"

_LOCAL_TAIL = re.compile(r"[\w.+%-]{1,64}\Z")
_DOMAIN = re.compile(r"(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+([^\W\d_]{2,63}|xn--[a-z0-9-]{1,59})(?![\w-])")
_URL_USERINFO = re.compile(r"[A-Za-z][\w+.-]*://[^\s/]*\Z")
#: Users that are SSH service accounts when followed by ``host:path``.
_SSH_USER_NAMES = (
    "git hg svn ubuntu ec2-user centos debian fedora admin root core pi vagrant deploy azureuser "
    "opc bitnami alpine ansible jenkins gitlab forgejo gitea aur"
)
_SSH_USERS = frozenset(_SSH_USER_NAMES.split())


def _tld_ok(tld: str) -> bool:
    if tld.isascii():
        low = tld.lower()
        return len(low) == 2 or low in TLDS
    try:
        puny = tld.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return False
    return puny in TLDS


def find(text: str) -> list[Span]:
    """Every e-mail address in ``text``."""
    if "@" not in text:
        return []
    spans: list[Span] = []
    at = text.find("@")
    floor = 0  # no address may start before the end of the previous one
    while at >= 0:
        nxt = text.find("@", at + 1)
        head = text[max(floor, at - 64) : at]
        local = _LOCAL_TAIL.search(head)
        dom = _DOMAIN.match(text, at + 1)
        if local is not None and dom is not None:
            start = at - (len(head) - local.start())
            while start < at and text[start] == ".":
                start += 1
            end = dom.end()
            user = text[start:at]
            if (
                user
                and not user.endswith(".")
                and ".." not in user
                and _tld_ok(dom.group(1))
                and not (user.lower() in _SSH_USERS and text.startswith(":", end))
                and _URL_USERINFO.search(text, max(0, start - 200), start) is None
            ):
                spans.append(Span(start, end, "EMAIL"))
                floor = end
        at = nxt
    return spans
