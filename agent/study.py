"""The study a volunteer consents to.

A study file is TOML written by the study operator (docs/study.md has every key)::

    [study]
    id = "web-tasks-2026"
    name = "Everyday web tasks"
    contact = "Dr. A. Researcher <study@example.org>"
    consent_version = "3"
    scopes = ["pointer", "keyboard", "screen", "window_titles"]
    recipients = ["age1..."]          # the study's age public key(s): who can read exports
    consent_text = \"\"\"...\"\"\"

    [[deny]]                          # optional, any number: never capture these windows
    label = "Our HR system"
    app_class = "hr-client*"          # glob on the application (WM_CLASS class, exe, bundle id)
    title = "salary|payroll"          # regular expression on the window title

    [retention]                       # optional
    days = 30
    max_gib = 2.0
    after_export = "keep"             # or "delete": shred a session once it is exported

    [capture]                         # optional
    idle_pause_minutes = 10
    pause_hotkey = "<ctrl>+<alt>+p"

    [redaction]                       # optional
    ocr = "required"                  # or "if-available", "off"
    typed_text = "redact"             # or "drop"
    window_titles = "redact"          # or "drop"

The consent text's SHA-256 (over its UTF-8 bytes) is what a volunteer agrees
to: a changed text is a new consent.  ``optin run --study FILE`` installs a
study; the installed copy lives in the config directory.

Validation is strict (an unknown key is an error: a typo must not silently
drop a deny rule) and every problem is one line, ``FILE:LINE: <dotted key> <what
is wrong>[. Fix: ...]``, such as ``study.toml:7: study.scopes has 'microphone';
allowed scopes are ...``.  ``tomllib`` keeps no positions, so :class:`_Locator` finds
the lines itself with a small scanner of the TOML source.  Messages never
quote the consent text.
"""

from __future__ import annotations

import bisect
import contextlib
import difflib
import hashlib
import math
import os
import re
import stat
import sys
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.canonical_json import canonical
from agent.capture.deny import MAX_LABEL, DenyRule, title_pattern_problem
from agent.errors import StudyError
from agent.keyboard.hotkey import hotkey_problem
from agent.paths import Dirs, ensure_private_dir, write_private_file
from agent.untrusted_text import hidden_characters

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

#: Every capture scope a study can ask for.
SCOPES = ("pointer", "keyboard", "screen", "window_titles")

#: Defaults of the optional tables.
DEFAULT_RETENTION_DAYS = 30
DEFAULT_RETENTION_MAX_GIB = 2.0
DEFAULT_IDLE_PAUSE_MINUTES = 10
DEFAULT_PAUSE_HOTKEY = "<ctrl>+<alt>+p"

#: ``[redaction]`` choices, the first of each is the default.
REDACTION_CHOICES: dict[str, tuple[str, ...]] = {
    "ocr": ("required", "if-available", "off"),
    "typed_text": ("redact", "drop"),
    "window_titles": ("redact", "drop"),
}
#: Every key with a fixed set of choices (``[retention] after_export`` too), the first the default.
_CHOICES: dict[str, tuple[str, ...]] = {**REDACTION_CHOICES, "after_export": ("keep", "delete")}

#: Allowed ranges (inclusive).
RETENTION_DAYS_RANGE = (1, 365)
RETENTION_MAX_GIB_RANGE = (0.1, 1024.0)
IDLE_PAUSE_MINUTES_RANGE = (0, 240)

_STUDY_KEYS = ("id", "name", "contact", "consent_version", "consent_text", "scopes", "recipients")
_DENY_KEYS = ("label", "app_class", "title")
_RETENTION_KEYS = ("days", "max_gib", "after_export")
_CAPTURE_KEYS = ("idle_pause_minutes", "pause_hotkey")
_REDACTION_KEYS = tuple(REDACTION_CHOICES)
_TOP_LEVEL = ("study", "deny", "retention", "capture", "redaction")

#: Longest deny-rule label (as agent.capture.deny accepts: labels are stored in sessions).
MAX_DENY_LABEL = MAX_LABEL

#: At most this many problems are listed in one StudyError.
_MAX_REPORTED = 20

#: The study texts a volunteer reads (the consent dialog, ``optin consent show``): no character in
#: them may be invisible or act on the text around it (bidi overrides and isolates, zero-width
#: characters, controls).  The consent text may hold line breaks and tabs.
_SHOWN_TEXT_KEYS = ("id", "name", "contact", "consent_version", "consent_text")
#: Whitespace controls a consent text may hold.
_TEXT_CONTROLS_ALLOWED = frozenset({"U+0009"})

#: The largest study file read (a consent text of a few pages is a few KiB).
MAX_STUDY_BYTES = 1024 * 1024

#: The canonical form of :meth:`Study.terms` (a new form asks every volunteer again).
TERMS_VERSION = "optin-consent-terms/1"
#: What each part of :meth:`Study.terms` is, in words, for "the study changed since you agreed: ...".
TERMS_IN_WORDS: dict[str, str] = {
    "id": "the study",
    "name": "its name",
    "contact": "its contact",
    "consent_version": "the consent version",
    "text_sha256": "the consent text",
    "scopes": "what it asks to record",
    "recipients": "who can read exports",
    "deny": "the windows it excludes",
    "retention": "how long recordings are kept",
    "capture": "pausing",
    "redaction": "what exports hold",
}

#: Recipients a study may name: collectors refuse an age header of more than 64 stanzas, and age
#: adds a grease stanza (docs/export-format.md).
MAX_RECIPIENTS = 63
#: An age X25519 recipient: "age1" and 58 bech32 characters (32 bytes and the checksum).
_AGE_X25519 = re.compile(r"age1[qpzry9x8gf2tvdw0s3jn54khce6mua7l]{58}", re.IGNORECASE)
#: A bare TOML key.
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Study:
    """A parsed, validated study file."""

    id: str
    name: str
    contact: str
    consent_version: str
    consent_text: str
    scopes: tuple[str, ...]
    recipients: tuple[str, ...]
    #: Extra deny rules from ``[[deny]]``, in file order.
    deny: tuple[DenyRule, ...] = ()
    #: ``[retention] days``: local data older than this is deleted.
    retention_days: int = DEFAULT_RETENTION_DAYS
    #: ``[retention] max_gib``: the local store's budget in GiB.
    retention_max_gib: float = DEFAULT_RETENTION_MAX_GIB
    #: ``[retention] after_export``: ``keep`` an exported session locally, or ``delete`` it (shredded).
    retention_after_export: str = "keep"
    #: ``[capture] idle_pause_minutes``: pause after this long without input (0: never).
    idle_pause_minutes: int = DEFAULT_IDLE_PAUSE_MINUTES
    #: ``[capture] pause_hotkey``: pynput GlobalHotKeys syntax; "" for none.
    pause_hotkey: str = DEFAULT_PAUSE_HOTKEY
    #: ``[redaction] ocr``: whether export must OCR-mask text on screens.
    redaction_ocr: str = REDACTION_CHOICES["ocr"][0]
    #: ``[redaction] typed_text``: redact detected spans, or drop every typed character.
    redaction_typed_text: str = REDACTION_CHOICES["typed_text"][0]
    #: ``[redaction] window_titles``: redact detected spans, or drop every title.
    redaction_window_titles: str = REDACTION_CHOICES["window_titles"][0]

    @property
    def text_sha256(self) -> str:
        """Hex SHA-256 of the consent text: what a volunteer agrees to."""
        return hashlib.sha256(self.consent_text.encode("utf-8")).hexdigest()

    def terms(self) -> dict[str, Any]:
        """Everything the consent dialog and ``optin consent show`` state about this study, as plain data.

        A consent receipt binds their SHA-256 (:attr:`terms_sha256`): a study file that changes any
        of them (the recipients, a deny rule, the retention, a redaction or capture choice) needs a
        new agreement.  The consent text is in it by its SHA-256.
        """
        return {
            "terms": TERMS_VERSION,
            "id": self.id,
            "name": self.name,
            "contact": self.contact,
            "consent_version": self.consent_version,
            "text_sha256": self.text_sha256,
            "scopes": list(self.scopes),
            "recipients": sorted({r.lower() for r in self.recipients}),
            "deny": [rule.to_json() for rule in self.deny],
            "retention": {
                "days": self.retention_days,
                "max_gib": self.retention_max_gib,
                "after_export": self.retention_after_export,
            },
            "capture": {"idle_pause_minutes": self.idle_pause_minutes, "pause_hotkey": self.pause_hotkey},
            "redaction": {
                "ocr": self.redaction_ocr,
                "typed_text": self.redaction_typed_text,
                "window_titles": self.redaction_window_titles,
            },
        }

    @property
    def terms_sha256(self) -> str:
        """Hex SHA-256 of :meth:`terms` in canonical JSON: the consent a receipt binds."""
        return terms_digest(self.terms())

    @property
    def retention_max_bytes(self) -> int:
        """``retention_max_gib`` in bytes."""
        return int(self.retention_max_gib * 1024**3)

    @property
    def idle_pause_s(self) -> float:
        """``idle_pause_minutes`` in seconds (0: the idle pause is off)."""
        return self.idle_pause_minutes * 60.0


def terms_digest(terms: Mapping[str, Any]) -> str:
    """Hex SHA-256 of ``terms`` in canonical JSON (sorted keys, no spaces, UTF-8)."""
    return hashlib.sha256(canonical(terms)).hexdigest()


def changed_terms(before: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """The parts of two :meth:`Study.terms` that differ, in words (:data:`TERMS_IN_WORDS` order)."""
    return [words for key, words in TERMS_IN_WORDS.items() if before.get(key) != now.get(key)]


# --- parsing ----------------------------------------------------------------------------------------


def parse_study(text: str, *, source: str = "<study>") -> Study:
    """Parse and validate a study file's text.

    :param source: the file name used in messages, as given.
    :raises StudyError: one line per problem, in file order: ``SOURCE:LINE: <dotted key>
        <what is wrong>[. Fix: ...]``.
    """
    text = text.removeprefix("\ufeff")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line, what = _decode_error_position(exc, text)
        msg = f"{source}:{line}: not valid TOML: {what}"
        raise StudyError(msg) from None
    except RecursionError:  # tomllib descends once per nested array or inline table
        msg = (
            f"{source}: not valid for optin: arrays or inline tables nested too deeply. "
            "Fix: a study file nests at most a few levels (docs/study.md)"
        )
        raise StudyError(msg) from None
    return _Validator(text, source).study(doc)


def _decode_error_position(exc: ValueError, text: str) -> tuple[int, str]:
    """The line of a TOML decode error and its message without the position."""
    message = str(getattr(exc, "msg", None) or exc)
    m = re.search(r"\s*\(at line (\d+), column (\d+)\)\s*$", message)
    if m:
        return int(m.group(1)), f"{message[: m.start()]} (column {m.group(2)})"
    m = re.search(r"\s*\(at end of document\)\s*$", message)
    if m:
        return text.count("\n") + 1, f"{message[: m.start()]} (at the end of the file)"
    lineno = getattr(exc, "lineno", None)  # Python 3.14 and tomli 2.1 keep the position apart
    colno = getattr(exc, "colno", None)
    where = f" (column {colno})" if isinstance(colno, int) else ""
    return (lineno if isinstance(lineno, int) else 1), message + where


_PathT = tuple[str | int, ...]


def _key_name(path: _PathT) -> str:
    """``study.scopes``, ``deny[2].title``: array indices counted from 1, as people count."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part + 1}]"
        else:
            shown = part if _BARE_KEY.fullmatch(part) else f'"{part}"'
            out += f".{shown}" if out else shown
    return out


_KINDS: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"),  # before int: a bool is an int
    (int, "an integer"),
    (float, "a number"),
    (str, "a string"),
    (list, "an array"),
    (dict, "a table"),
)


def _kind(value: object) -> str:
    """The TOML kind of ``value``, never the value itself (it may be the consent text)."""
    return next((name for t, name in _KINDS if isinstance(value, t)), "a date/time")


def _show(value: str, limit: int = 80) -> str:
    """``value`` quoted for a message, cut at ``limit`` characters."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


def _char_name(code_point: str) -> str:
    """``U+202E`` → ``RIGHT-TO-LEFT OVERRIDE`` (controls have no name: their kind instead)."""
    ch = chr(int(code_point[2:], 16))
    name = unicodedata.name(ch, "")
    if name:
        return name
    kinds = {"Cc": "a control character", "Cs": "a surrogate", "Co": "a private-use character"}
    return kinds.get(unicodedata.category(ch), "an unassigned code point")


def _suggest(word: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f". Did you mean {close[0]}?" if close else ""


class _Validator:
    """Checks a decoded study document, collecting every problem with its line."""

    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self._locator: _Locator | None = None
        self._errors: list[tuple[int, int, str]] = []

    # -- reporting

    def line(self, path: _PathT) -> int:
        if self._locator is None:
            self._locator = _Locator(self.text)
        return self._locator.line(path)

    def error(self, path: _PathT, message: str) -> None:
        line = self.line(path)
        self._errors.append((line, len(self._errors), f"{self.source}:{line}: {message}"))

    def _raise_if_errors(self) -> None:
        if not self._errors:
            return
        lines = [m for _, _, m in sorted(self._errors)]
        if len(lines) > _MAX_REPORTED:
            lines = [*lines[:_MAX_REPORTED], f"{self.source}: … and {len(lines) - _MAX_REPORTED} more"]
        raise StudyError("\n".join(lines))

    # -- the document

    def study(self, doc: dict[str, Any]) -> Study:
        for key in doc:
            if key not in _TOP_LEVEL:
                self.error(
                    (key,),
                    f"unknown table or key {_key_name((key,))}; a study file has [study], [[deny]], "
                    f"[retention], [capture] and [redaction]{_suggest(key, _TOP_LEVEL)}",
                )
        fields = self._study_table(doc.get("study"))
        deny = self._deny(doc.get("deny"))
        self._hidden_text(doc)
        retention = self._table(doc.get("retention"), "retention", _RETENTION_KEYS)
        days = self._int(retention, ("retention", "days"), DEFAULT_RETENTION_DAYS, RETENTION_DAYS_RANGE)
        max_gib = self._number(retention, ("retention", "max_gib"), DEFAULT_RETENTION_MAX_GIB)
        after_export = self._choice(retention, ("retention", "after_export"))
        capture = self._table(doc.get("capture"), "capture", _CAPTURE_KEYS)
        idle = self._int(
            capture, ("capture", "idle_pause_minutes"), DEFAULT_IDLE_PAUSE_MINUTES, IDLE_PAUSE_MINUTES_RANGE
        )
        hotkey = self._hotkey(capture)
        redaction = self._table(doc.get("redaction"), "redaction", _REDACTION_KEYS)
        choices = {key: self._choice(redaction, ("redaction", key)) for key in _REDACTION_KEYS}
        self._raise_if_errors()
        return Study(
            id=fields["id"],
            name=fields["name"],
            contact=fields["contact"],
            consent_version=fields["consent_version"],
            consent_text=fields["consent_text"],
            scopes=fields["scopes"],
            recipients=fields["recipients"],
            deny=deny,
            retention_days=days,
            retention_max_gib=max_gib,
            retention_after_export=after_export,
            idle_pause_minutes=idle,
            pause_hotkey=hotkey,
            redaction_ocr=choices["ocr"],
            redaction_typed_text=choices["typed_text"],
            redaction_window_titles=choices["window_titles"],
        )

    def _table(self, value: object, name: str, known: tuple[str, ...]) -> dict[str, Any]:
        """An optional table (``{}`` when absent or wrong), its unknown keys reported."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error((name,), f"{name} must be a table: write [{name}] on a line of its own, then its keys")
            return {}
        self._unknown_keys(value, (name,), known, f"[{name}]")
        return value

    def _unknown_keys(
        self, table: Mapping[str, object], path: _PathT, known: tuple[str, ...], where: str
    ) -> None:
        for key in table:
            if key not in known:
                self.error(
                    (*path, key),
                    f"unknown key {_key_name((*path, key))}; {where} has {', '.join(known)}"
                    + _suggest(key, known),
                )

    def _study_table(self, table: object) -> dict[str, Any]:
        """The ``[study]`` fields (placeholders for the wrong ones: errors are raised later)."""
        out: dict[str, Any] = {k: "" for k in _STUDY_KEYS} | {"scopes": (), "recipients": ()}
        if table is None:
            self.error(
                ("study",),
                "missing the [study] table. "
                "Fix: start the file with [study] and its keys (see docs/study.md)",
            )
            return out
        if not isinstance(table, dict):
            self.error(("study",), "study must be a table: write [study] on a line of its own, then its keys")
            return out
        self._unknown_keys(table, ("study",), _STUDY_KEYS, "[study]")
        for key in _STUDY_KEYS:
            if key not in table:
                example = '["age1..."]' if key == "recipients" else '["pointer", "screen"]'
                value = example if key in ("scopes", "recipients") else '"..."'
                self.error(("study",), f"[study] is missing {key}. Fix: add {key} = {value}")
        for key in ("id", "name", "contact", "consent_version", "consent_text"):
            if key in table:
                out[key] = self._str(table, ("study", key))
        if "scopes" in table:
            out["scopes"] = self._scopes(table["scopes"])
        if "recipients" in table:
            out["recipients"] = self._recipients(table["recipients"])
        return out

    # -- what the volunteer reads

    def _hidden_text(self, doc: Mapping[str, Any]) -> None:
        """Refuse invisible and text-reordering characters in the texts a volunteer reads.

        The study's id, name, contact, consent version and consent text and each deny rule's label
        are shown in the consent dialog and by ``optin consent show``: a bidi override could show
        them in another order than they are hashed, a zero-width character could hide a difference,
        a control character could act on the terminal.  Each one is refused with its code point and
        the line it is on.
        """
        table = doc.get("study")
        if isinstance(table, dict):
            for key in _SHOWN_TEXT_KEYS:
                value = table.get(key)
                if isinstance(value, str):
                    self._hidden_in(value, ("study", key), text=key == "consent_text")
        rules = doc.get("deny")
        if isinstance(rules, list):
            for i, entry in enumerate(rules):
                if isinstance(entry, dict) and isinstance(entry.get("label"), str):
                    self._hidden_in(entry["label"], ("deny", i, "label"), text=False)

    def _hidden_in(self, value: str, path: _PathT, *, text: bool) -> None:
        found = [
            c
            for c in hidden_characters(value, allow_newlines=text)
            if not (text and c in _TEXT_CONTROLS_ALLOWED)
        ]
        if not found:
            return
        first = chr(int(found[0][2:], 16))
        names = list(dict.fromkeys(found))
        shown = ", ".join(f"{c} ({_char_name(c)})" for c in names[:3])
        more = f" and {len(names) - 3} more kinds" if len(names) > 3 else ""
        allowed = " (line breaks and tabs are fine)" if text else ""
        line = self._line_of_char(path, first, value.count("\n") + 1)
        self._errors.append(
            (
                line,
                len(self._errors),
                f"{self.source}:{line}: {_key_name(path)} has {shown}{more}: a character that is invisible "
                "or changes how the text around it is shown, so the volunteer could read something other "
                f"than what they agree to. Fix: delete it{allowed}; an editor that shows invisible "
                "characters helps (vim: :set list, VS Code: Render Control Characters)",
            )
        )

    def _line_of_char(self, path: _PathT, ch: str, lines: int) -> int:
        """The line of the first ``ch`` written as itself within ``lines`` lines from ``path``'s line,
        else ``path``'s line (the character was written as an escape such as ``\\u202e``)."""
        line = self.line(path)
        start = 0
        for _ in range(line - 1):
            start = self.text.find("\n", start) + 1
        pos = self.text.find(ch, start)
        found = self.text.count("\n", 0, pos) + 1 if pos >= 0 else line
        return found if line <= found <= line + lines else line

    # -- values

    def _str(self, table: Mapping[str, object], path: _PathT) -> str:
        value = table[str(path[-1])]
        if isinstance(value, str) and value.strip():
            return value
        got = "an empty one" if isinstance(value, str) else _kind(value)
        fix = ' (in quotes: consent_version = "3")' if path[-1] == "consent_version" else ""
        self.error(path, f"{_key_name(path)} must be a non-empty string{fix}, not {got}")
        return ""

    def _str_list(self, value: object, path: _PathT) -> list[str] | None:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        if not isinstance(value, list):
            self.error(
                path, f'{_key_name(path)} must be an array of strings (["...", "..."]), not {_kind(value)}'
            )
            return None
        for i, v in enumerate(value):
            if not isinstance(v, str):
                self.error(
                    (*path, i), f"{_key_name(path)} must hold only strings; entry {i + 1} is {_kind(v)}"
                )
        return None

    def _scopes(self, value: object) -> tuple[str, ...]:
        path: _PathT = ("study", "scopes")
        scopes = self._str_list(value, path)
        if scopes is None:
            return ()
        allowed = ", ".join(SCOPES)
        if not scopes:
            self.error(path, f"study.scopes is empty; allowed scopes are {allowed}")
        for i, scope in enumerate(scopes):
            if scope not in SCOPES:
                self.error(
                    (*path, i),
                    f"study.scopes has {_show(scope)}; allowed scopes are {allowed}"
                    + _suggest(scope, SCOPES),
                )
        return tuple(dict.fromkeys(scopes))

    def _recipients(self, value: object) -> tuple[str, ...]:
        path: _PathT = ("study", "recipients")
        recipients = self._str_list(value, path)
        if recipients is None:
            return ()
        if not recipients:
            self.error(
                path,
                "study.recipients is empty; a study needs at least one age public key. "
                "Fix: age-keygen -o study-identity.txt, then put its age1... public key here",
            )
        if len(recipients) > MAX_RECIPIENTS:
            self.error(
                path,
                f"study.recipients has {len(recipients)} keys; a bundle can be encrypted to at most "
                f"{MAX_RECIPIENTS} (collectors refuse larger age headers). "
                f"Fix: list at most {MAX_RECIPIENTS}",
            )
        for i, r in enumerate(recipients):
            problem = _recipient_problem(r)
            if problem:
                self.error((*path, i), f"study.recipients[{i + 1}] {problem}")
        return tuple(dict.fromkeys(recipients))

    def _deny(self, value: object) -> tuple[DenyRule, ...]:
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.error(
                ("deny",),
                "deny must be an array of tables: write [[deny]] (two brackets) above each rule, "
                "then its label and app_class and/or title",
            )
            return ()
        rules = []
        for i, entry in enumerate(value):
            rule = self._deny_rule(entry, ("deny", i))
            if rule is not None:
                rules.append(rule)
        return tuple(rules)

    def _deny_rule(self, entry: dict[str, Any], path: _PathT) -> DenyRule | None:
        name = _key_name(path)
        self._unknown_keys(entry, path, _DENY_KEYS, "[[deny]]")
        ok = True
        if "label" not in entry:
            self.error(path, f'{name} (a [[deny]] rule) is missing label. Fix: add label = "what it hides"')
            ok = False
        values: dict[str, str | None] = {}
        for key in _DENY_KEYS:
            if key in entry:
                v = entry[key]
                if not isinstance(v, str) or not v.strip():
                    got = "an empty one" if isinstance(v, str) else _kind(v)
                    omit = "" if key == "label" else f"; leave {key} out if the rule does not need it"
                    self.error((*path, key), f"{name}.{key} must be a non-empty string, not {got}{omit}")
                    ok = False
                    continue
                values[key] = v
        label = values.get("label")
        if label is not None and len(label) > MAX_DENY_LABEL:
            self.error(
                (*path, "label"),
                f"{name}.label has {len(label)} characters; at most {MAX_DENY_LABEL}. Fix: a short name "
                "(it is stored in every session the rule masks)",
            )
            ok = False
        if "app_class" not in entry and "title" not in entry:
            self.error(
                path,
                f"{name} (a [[deny]] rule) needs app_class, title or both: a rule with neither matches "
                'nothing. Fix: add app_class = "glob*" or title = "regular expression"',
            )
            ok = False
        title = values.get("title")
        if title is not None:
            problem = title_pattern_problem(title)  # what DenyRule refuses: RE2 syntax, bounded size
            if problem is not None:
                self.error(
                    (*path, "title"),
                    f"{name}.title {_show(title)} {problem} (write the pattern as a literal string in "
                    "single quotes, 'a\\.b', so TOML keeps backslashes as they are)",
                )
                ok = False
        if not ok:
            return None
        try:
            return DenyRule(label=str(values["label"]), app_class=values.get("app_class"), title=title)
        except ValueError as exc:  # what DenyRule refuses beyond the checks above (a glob's length)
            self.error(path, f"{name}: {exc}")
            return None

    def _int(self, table: Mapping[str, object], path: _PathT, default: int, bounds: tuple[int, int]) -> int:
        key = str(path[-1])
        if key not in table:
            return default
        value = table[key]
        low, high = bounds
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(
                path, f"{_key_name(path)} must be a whole number from {low} to {high}, not {_kind(value)}"
            )
            return default
        if not low <= value <= high:
            self.error(path, f"{_key_name(path)} is {value}; it must be from {low} to {high}")
            return default
        return value

    def _number(self, table: Mapping[str, object], path: _PathT, default: float) -> float:
        key = str(path[-1])
        if key not in table:
            return default
        value = table[key]
        low, high = RETENTION_MAX_GIB_RANGE
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.error(path, f"{_key_name(path)} must be a number from {low} to {high:g}, not {_kind(value)}")
            return default
        if not (math.isfinite(value) and low <= value <= high):
            self.error(path, f"{_key_name(path)} is {value}; it must be from {low} to {high:g}")
            return default
        return float(value)

    def _choice(self, table: Mapping[str, object], path: _PathT) -> str:
        key = str(path[-1])
        allowed = _CHOICES[key]
        if key not in table:
            return allowed[0]
        value = table[key]
        if value not in allowed:
            shown = _show(value) if isinstance(value, str) else _kind(value)
            listed = ", ".join(f'"{a}"' for a in allowed)
            self.error(path, f"{_key_name(path)} is {shown}; it must be one of {listed}")
            return allowed[0]
        return str(value)

    def _hotkey(self, table: Mapping[str, object]) -> str:
        path: _PathT = ("capture", "pause_hotkey")
        if "pause_hotkey" not in table:
            return DEFAULT_PAUSE_HOTKEY
        value = table["pause_hotkey"]
        if not isinstance(value, str):
            self.error(
                path, f'capture.pause_hotkey must be a string such as "<ctrl>+<alt>+p", not {_kind(value)}'
            )
            return DEFAULT_PAUSE_HOTKEY
        problem = hotkey_problem(value)
        if problem:
            self.error(path, f"capture.pause_hotkey {_show(value)} {problem}")
            return DEFAULT_PAUSE_HOTKEY
        return value


def _recipient_problem(recipient: str) -> str | None:
    """What is wrong with ``recipient`` as an age X25519 public key, or None."""
    if recipient.upper().startswith("AGE-SECRET-KEY-"):
        # Never echo a secret key.
        return (
            "is an age SECRET key: anyone with this file could read every export. Fix: put the public "
            "key (the age1... line age-keygen prints) here, and make a new key pair: this one is exposed"
        )
    shown = _show(recipient)
    if recipient != recipient.strip():
        return f"{shown} has spaces around it. Fix: remove them"
    return _age_problem(recipient, shown)


def _age_problem(recipient: str, shown: str) -> str | None:
    """:func:`_recipient_problem` for a recipient that is no secret key and has no spaces."""
    if not recipient.lower().startswith("age1"):
        return (
            f"{shown} is not an age public key (they start with age1; ssh keys are not accepted). "
            "Fix: age-keygen -o study-identity.txt and use the public key it prints"
        )
    if not _AGE_X25519.fullmatch(recipient):
        if "1" in recipient[4:]:  # bech32 data has no "1": age1<plugin>1...
            return (
                f"{shown} is an age plugin recipient; optin encrypts only to X25519 keys. "
                "Fix: a key from age-keygen"
            )
        return (
            f"{shown} is not an age public key: it should be age1 and 58 more letters and digits, "
            "as age-keygen prints it"
        )
    if recipient != recipient.lower() and recipient != recipient.upper():
        return f"{shown} is not an age public key: it mixes upper and lower case"
    if not _pyrage_accepts(recipient.lower()):
        return f"{shown} is not an age public key: its checksum is wrong (a typo, or a cut-off copy)"
    return None


def _pyrage_accepts(recipient: str) -> bool:
    """True if pyrage parses ``recipient`` as an X25519 recipient (or pyrage is missing)."""
    try:
        from pyrage import x25519
    except ImportError:  # pragma: no cover - pyrage is a dependency
        return True
    try:
        x25519.Recipient.from_str(recipient)
    except Exception:  # pyrage raises its own RecipientError/ValueError variants
        return False
    return True


# --- where keys are ---------------------------------------------------------------------------------


class _Stop(Exception):
    """The scanner met something it does not understand; the lines found so far stand."""


class _Locator:
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
        self._explicit: dict[_PathT, int] = {}  # headers, keys, array entries
        self._implicit: dict[_PathT, int] = {}  # tables made by dotted keys or headers below them
        self._aot: dict[_PathT, int] = {}  # array of tables -> index of its current entry
        with contextlib.suppress(_Stop, IndexError, ValueError, RecursionError):
            self._document()

    def line(self, path: _PathT) -> int:
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

    def _record(self, found: dict[_PathT, int], path: _PathT, pos: int) -> None:
        found.setdefault(path, self._line_at(pos))

    def _document(self) -> None:
        table: _PathT = ()
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

    def _header(self, start: int) -> _PathT:
        array = self._peek(2) == "[["
        self._i += 2 if array else 1
        keys = self._key()
        self._expect("]]" if array else "]")
        path: _PathT = ()
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

    def _record_key(self, base: _PathT, keys: tuple[str, ...], start: int) -> None:
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
                m = _BARE_KEY.match(s, self._i)
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

    def _value(self, path: _PathT) -> None:
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

    def _array(self, path: _PathT) -> None:
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

    def _inline_table(self, path: _PathT) -> None:
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


# --- files ------------------------------------------------------------------------------------------


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        msg = f"{source}:{line}: not UTF-8 text (byte {exc.start}). Fix: save the file as UTF-8"
        raise StudyError(msg) from None


def _read(path: Path) -> bytes:
    """The bytes of a regular file of at most :data:`MAX_STUDY_BYTES` (a FIFO or device is refused
    without waiting on it)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        msg = f"cannot read study file {path}: {exc.strerror}"
        raise StudyError(msg) from exc
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            msg = f"cannot read study file {path}: it is not a regular file. Fix: the path of the .toml file"
            raise StudyError(msg)
        if info.st_size > MAX_STUDY_BYTES:
            msg = (
                f"study file {path} has {info.st_size} bytes; a study file has at most {MAX_STUDY_BYTES} "
                "(a consent text of a few pages is a few KiB). Fix: check that this is the study file"
            )
            raise StudyError(msg)
        try:
            data = fh.read(MAX_STUDY_BYTES + 1)
        except OSError as exc:
            msg = f"cannot read study file {path}: {exc.strerror}"
            raise StudyError(msg) from exc
    if len(data) > MAX_STUDY_BYTES:  # it grew while being read
        msg = (
            f"study file {path} has more than {MAX_STUDY_BYTES} bytes. Fix: check that this is the study file"
        )
        raise StudyError(msg)
    return data


def load_study_file(path: Path) -> Study:
    """Read and validate a study file."""
    return parse_study(_decode(_read(path), str(path)), source=str(path))


def installed_path(dirs: Dirs) -> Path:
    """Where the installed study lives."""
    return dirs.config / "study.toml"


def install_study(dirs: Dirs, path: Path) -> Study:
    """Validate ``path`` and make it the installed study (the very bytes validated)."""
    data = _read(path)
    study = parse_study(_decode(data, str(path)), source=str(path))
    ensure_private_dir(dirs.config)
    write_private_file(installed_path(dirs), data)
    return study


def installed_study(dirs: Dirs) -> Study:
    """The installed study.

    :raises StudyError: none is installed, or the installed copy is damaged (the message says how
        to install it again).
    """
    path = installed_path(dirs)
    if not path.exists():
        msg = (
            "no study is installed. Fix: optin run --study FILE "
            "(the study file comes from the study's operator)"
        )
        raise StudyError(msg)
    try:
        return load_study_file(path)
    except StudyError as exc:
        msg = (
            f"{exc}\nThe installed copy of the study is damaged or was changed. Fix: install the study file "
            "again: optin run --study FILE (from the study's operator)"
        )
        raise StudyError(msg) from None


def demo_study_toml(recipient: str) -> str:
    """A study file for ``optin demo``, encrypting to a throwaway recipient."""
    return f'''[study]
id = "optin-demo"
name = "optin demo (private virtual display)"
contact = "nobody: this study exists only inside optin demo"
consent_version = "1"
scopes = ["pointer", "keyboard", "screen", "window_titles"]
recipients = ["{recipient}"]
consent_text = """
This is the optin demo. It records a scripted volunteer on a private virtual
display that optin starts and stops itself. Nothing on your own screen is
recorded. The recording is encrypted on disk and exported to a throwaway key
that is deleted when the demo ends.
"""
'''
