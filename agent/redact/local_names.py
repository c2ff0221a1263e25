"""This computer's names: hostname, user name, home directory and MAC addresses.

No bundle may carry them (issue: "no hostname, user name, MAC address or home path
anywhere in a bundle"), yet they turn up in captured text all the time: a terminal's
title ``ada@lab-pc: /home/ada/src``, a pasted path, a typed ``ssh ada@lab-pc``.  The
export's redaction looks for them like for any detector's entity and replaces them
with ``[HOSTNAME]``, ``[USER_NAME]``, ``[HOME_PATH]`` and ``[MAC_ADDRESS]``.

:meth:`LocalNames.of_this_machine` reads them (no network: the kernel's names only);
:meth:`LocalNames.find` is pure.  Names shorter than :data:`MIN_NAME` are not looked for
(a one-letter user name would blank that letter wherever it stands alone); ``root`` and other common
words are looked for as whole words only, like every name.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from agent.redact.spans import Span

#: Shortest host or user name looked for.
MIN_NAME = 2

_MAC = re.compile(r"^([0-9a-f]{2})(:[0-9a-f]{2}){5}$")


@dataclass(frozen=True)
class LocalNames:
    """The names to look for; ``find`` is case-insensitive and whole-word."""

    hostnames: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    homes: tuple[str, ...] = ()
    macs: tuple[str, ...] = ()
    _pattern: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        alternatives: list[str] = []
        for group, names in (
            ("HOME_PATH", self.homes),
            ("MAC_ADDRESS", _mac_forms(self.macs)),
            ("HOSTNAME", self.hostnames),
            ("USER_NAME", self.users),
        ):
            wanted = sorted({n for n in names if len(n) >= MIN_NAME}, key=len, reverse=True)
            if wanted:
                alternatives.append(f"(?P<{group}>{'|'.join(re.escape(n) for n in wanted)})")
        if alternatives:
            body = "|".join(alternatives)
            pattern = re.compile(rf"(?<![\w.-])(?:{body})(?![\w-])", re.IGNORECASE)
            object.__setattr__(self, "_pattern", pattern)

    @classmethod
    def of_this_machine(cls) -> LocalNames:
        """This computer's and this user's names (whatever of them can be read)."""
        hosts: set[str] = set()
        with contextlib.suppress(OSError):
            name = socket.gethostname()
            hosts.update({name, name.split(".")[0]})
        users: set[str] = set()
        with contextlib.suppress(Exception):  # getpass raises OSError or KeyError without a passwd entry
            users.add(getpass.getuser())
        for var in ("USER", "LOGNAME", "USERNAME"):
            if os.environ.get(var):
                users.add(os.environ[var])
        homes = {str(Path.home())} if Path.home() != Path("/") else set()
        return cls(tuple(sorted(hosts)), tuple(sorted(users)), tuple(sorted(homes)), tuple(sorted(_macs())))

    def find(self, text: str) -> list[Span]:
        """The spans of ``text`` that name this computer or its user (sorted, disjoint)."""
        if self._pattern is None or not text:
            return []
        return [Span(m.start(), m.end(), str(m.lastgroup)) for m in self._pattern.finditer(text)]


def _mac_forms(macs: tuple[str, ...]) -> list[str]:
    """``aa:bb:..`` as written with colons, dashes and without separators."""
    out: list[str] = []
    for mac in macs:
        out += [mac, mac.replace(":", "-"), mac.replace(":", "")]
    return out


def _macs() -> set[str]:
    """The MAC addresses of this computer's network interfaces (Linux: sysfs; else uuid's node)."""
    found: set[str] = set()
    net = Path("/sys/class/net")
    if net.is_dir():
        for iface in net.iterdir():
            with contextlib.suppress(OSError):
                mac = (iface / "address").read_text().strip().lower()
                if _MAC.match(mac) and mac != "00:00:00:00:00:00":
                    found.add(mac)
    if not found:
        node = uuid.getnode()
        if not node >> 40 & 1:  # a real MAC, not uuid's random stand-in (multicast bit set)
            found.add(":".join(f"{node >> s & 0xFF:02x}" for s in range(40, -1, -8)))
    return found
