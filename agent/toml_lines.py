"""Where the tables, keys and array entries of a TOML document are: their line numbers.

``tomllib`` keeps no positions, so the study file check (:mod:`agent.study_check`) finds
the line of each key it complains about with :class:`TomlLines`, a small scanner of the
TOML source that runs only on text ``tomllib`` has accepted.  Pure: no I/O.
"""

from __future__ import annotations

import bisect
import contextlib
import re
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

#: A path to a key: keys and array indices (from 0), ``("deny", 1, "title")``.
KeyPath = tuple[str | int, ...]

#: A bare TOML key.
BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


class _Stop(Exception):
    """The scanner met something it does not understand; the lines found so far stand."""


class TomlLines:
    """Lines (from 1) of the tables, keys and array entries of a TOML document.

    A path is a tuple of keys and array indices: ``("study", "scopes", 2)`` is the
    third entry of ``scopes``, ``("deny", 1, "title")`` the title of the second
    ``[[deny]]`` (or of the second inline table in ``deny = [...]``).  The scanner
    follows strings (multi-line ones too, so a key-like line inside the consent
    text is not a key), arrays, inline tables, comments, quoted and dotted keys.
    It only runs on text ``tomllib`` has accepted, and stops quietly at anything
    it does not follow.
    """

    def __init__(self, text: str) -> None:
        self._s = text
        self._i = 0
        self._newlines = [m.start() for m in re.finditer("\n", text)]
        self._explicit: dict[KeyPath, int] = {}  # headers, keys, array entries
        self._implicit: dict[KeyPath, int] = {}  # tables made by dotted keys or headers below them
        self._aot: dict[KeyPath, int] = {}  # array of tables -> index of its current entry
        with contextlib.suppress(_Stop, IndexError, ValueError, RecursionError):
            self._document()

    def line(self, path: KeyPath) -> int:
        """The line of ``path``, or of the nearest enclosing table or key found; 1 if none."""
        p = tuple(path)
        while p:
            for found in (self._explicit, self._implicit):
                if p in found:
                    return found[p]
            p = p[:-1]
        return 1

    # -- scanning

    def _line_at(self, pos: int) -> int:
        return bisect.bisect_left(self._newlines, pos) + 1

    def _peek(self, k: int = 1) -> str:
        return self._s[self._i : self._i + k]

    def _skip_blank(self, *, newlines: bool) -> None:
        """Skip spaces and tabs; with ``newlines`` also line ends and comments."""
        s = self._s
        while self._i < len(s):
            c = s[self._i]
            if c in " \t" or (newlines and c in "\r\n"):
                self._i += 1
            elif newlines and c == "#":
                end = s.find("\n", self._i)
                self._i = len(s) if end < 0 else end
            else:
                return

    def _record(self, found: dict[KeyPath, int], path: KeyPath, pos: int) -> None:
        found.setdefault(path, self._line_at(pos))

    def _document(self) -> None:
        table: KeyPath = ()
        while True:
            self._skip_blank(newlines=True)
            if self._i >= len(self._s):
                return
            start = self._i
            if self._peek() == "[":
                table = self._header(start)
            else:
                keys = self._key()
                self._record_key(table, keys, start)
                self._expect("=")
                self._value((*table, *keys))
            self._skip_blank(newlines=False)
            if self._peek() == "#":
                self._skip_blank(newlines=True)
            elif self._i < len(self._s) and self._peek() not in "\r\n":
                raise _Stop

    def _header(self, start: int) -> KeyPath:
        array = self._peek(2) == "[["
        self._i += 2 if array else 1
        keys = self._key()
        self._expect("]]" if array else "]")
        path: KeyPath = ()
        for j, key in enumerate(keys):
            path = (*path, key)
            if j == len(keys) - 1 and array:
                index = self._aot.get(path, -1) + 1
                self._aot[path] = index
                self._record(self._implicit, path, start)
                path = (*path, index)
            elif path in self._aot:
                path = (*path, self._aot[path])
            if j < len(keys) - 1:
                self._record(self._implicit, path, start)
        self._record(self._explicit, path, start)
        return path

    def _record_key(self, base: KeyPath, keys: tuple[str, ...], start: int) -> None:
        for j in range(1, len(keys)):
            self._record(self._implicit, (*base, *keys[:j]), start)
        self._record(self._explicit, (*base, *keys), start)

    def _expect(self, token: str) -> None:
        self._skip_blank(newlines=False)
        if not self._s.startswith(token, self._i):
            raise _Stop
        self._i += len(token)
        self._skip_blank(newlines=False)

    def _key(self) -> tuple[str, ...]:
        """A bare, quoted or dotted key."""
        s = self._s
        keys: list[str] = []
        while True:
            self._skip_blank(newlines=False)
            c = self._peek()
            if c in "\"'":
                start = self._i
                self._string()
                raw = s[start : self._i]
                keys.append(tomllib.loads(f"k = {raw}")["k"] if c == '"' else raw[1:-1])
            else:
                m = BARE_KEY.match(s, self._i)
                if not m:
                    raise _Stop
                keys.append(m.group())
                self._i = m.end()
            self._skip_blank(newlines=False)
            if self._peek() != ".":
                return tuple(keys)
            self._i += 1

    def _string(self) -> None:
        """Skip one string of any of the four kinds."""
        s = self._s
        quote = s[self._i]
        if s.startswith(quote * 3, self._i):
            self._multiline_string(quote)
            return
        self._i += 1
        while True:
            if self._i >= len(s) or s[self._i] == "\n":
                raise _Stop
            c = s[self._i]
            if quote == '"' and c == "\\":
                self._i += 2
            elif c == quote:
                self._i += 1
                return
            else:
                self._i += 1

    def _multiline_string(self, quote: str) -> None:
        s = self._s
        self._i += 3
        while True:
            if self._i >= len(s):
                raise _Stop
            if quote == '"' and s[self._i] == "\\":
                self._i += 2
            elif s.startswith(quote * 3, self._i):
                self._i += 3
                for _ in range(2):  # up to two quotes of the content may touch the delimiter
                    if self._peek() == quote:
                        self._i += 1
                return
            else:
                self._i += 1

    def _value(self, path: KeyPath) -> None:
        c = self._peek()
        if c in "\"'":
            self._string()
        elif c == "[":
            self._array(path)
        elif c == "{":
            self._inline_table(path)
        else:  # numbers, booleans, dates (which may hold one space)
            s = self._s
            while self._i < len(s) and s[self._i] not in ",]}#\r\n":
                self._i += 1

    def _array(self, path: KeyPath) -> None:
        self._i += 1
        index = 0
        while True:
            self._skip_blank(newlines=True)
            if self._peek() == "]":
                self._i += 1
                return
            self._record(self._explicit, (*path, index), self._i)
            self._value((*path, index))
            index += 1
            self._skip_blank(newlines=True)
            c = self._peek()
            self._i += 1
            if c == "]":
                return
            if c != ",":
                raise _Stop

    def _inline_table(self, path: KeyPath) -> None:
        self._i += 1
        while True:
            self._skip_blank(newlines=True)
            if self._peek() == "}":
                self._i += 1
                return
            start = self._i
            keys = self._key()
            self._record_key(path, keys, start)
            self._expect("=")
            self._value((*path, *keys))
            self._skip_blank(newlines=True)
            c = self._peek()
            self._i += 1
            if c == "}":
                return
            if c != ",":
                raise _Stop
