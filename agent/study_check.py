"""The study file check: parse a study file's text and validate every key, with its line.

Validation is strict (an unknown key is an error: a typo must not silently
drop a deny rule) and every problem is one line, ``FILE:LINE: <dotted key> <what
is wrong>[. Fix: ...]``, such as ``study.toml:7: study.scopes has 'microphone';
allowed scopes are ...``.  ``tomllib`` keeps no positions, so
:class:`agent.toml_lines.TomlLines` finds the lines itself with a small scanner of
the TOML source.  Messages never quote the consent text.  :mod:`agent.study` is
the entry callers import (it re-exports :func:`parse_study`).
"""

from __future__ import annotations

import difflib
import math
import re
import sys
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

from agent.deny_rules import MAX_LABEL, DenyRule, title_pattern_problem
from agent.errors import StudyError
from agent.keyboard.hotkey import hotkey_problem
from agent.study_model import (
    DEFAULT_IDLE_PAUSE_MINUTES,
    DEFAULT_PAUSE_HOTKEY,
    DEFAULT_RETENTION_DAYS,
    DEFAULT_RETENTION_MAX_GIB,
    IDLE_PAUSE_MINUTES_RANGE,
    MAX_TASK_APP,
    MAX_TASK_INSTRUCTION,
    MAX_TASK_URL,
    MAX_TASKS,
    REDACTION_CHOICES,
    RETENTION_DAYS_RANGE,
    RETENTION_MAX_GIB_RANGE,
    SCOPES,
    TASK_ID_PATTERN,
    TASK_MODES,
    TASK_TIME_LIMIT_MINUTES_RANGE,
    Study,
    StudyTask,
)
from agent.toml_lines import BARE_KEY, KeyPath, TomlLines
from agent.untrusted_text import hidden_characters
from agent.upload_urls import url_problem

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

#: Every key with a fixed set of choices (``[retention] after_export`` too), the first the default.
_CHOICES: dict[str, tuple[str, ...]] = {
    **REDACTION_CHOICES,
    "after_export": ("keep", "delete"),
    "after_upload": ("keep", "delete"),
}

_STUDY_KEYS = ("id", "name", "contact", "consent_version", "consent_text", "scopes", "recipients")
_DENY_KEYS = ("label", "app_class", "title")
_RETENTION_KEYS = ("days", "max_gib", "after_export", "after_upload")
_UPLOAD_KEYS = ("url",)
_CAPTURE_KEYS = ("idle_pause_minutes", "pause_hotkey")
_REDACTION_KEYS = tuple(REDACTION_CHOICES)
_TASK_KEYS = ("id", "instruction", "app", "url", "time_limit_minutes")
_TASKS_KEYS = ("mode", "done_hotkey")
_TOP_LEVEL = ("study", "deny", "retention", "capture", "redaction", "task", "tasks", "upload")
_TASK_ID = re.compile(TASK_ID_PATTERN)
#: A task url's scheme (``https:``), then ``//`` and its authority (up to ``/``, ``?`` or ``#``), and the
#: authority's host (a name or an ``[IPv6]`` literal) and optional port.
_URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_URL_AUTHORITY = re.compile(r"//([^/?#]*)")
_URL_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%!$&'()*+,;=-]+)(?::(\d{1,5}))?")

#: Longest deny-rule label (as agent.deny_rules accepts: labels are stored in sessions).
MAX_DENY_LABEL = MAX_LABEL

#: At most this many problems are listed in one StudyError.
_MAX_REPORTED = 20

#: The study texts a volunteer reads (the consent dialog, ``optin consent show``): no character in
#: them may be invisible or act on the text around it (bidi overrides and isolates, zero-width
#: characters, controls).  The consent text may hold line breaks and tabs.
_SHOWN_TEXT_KEYS = ("id", "name", "contact", "consent_version", "consent_text")
#: Whitespace controls a consent text may hold.
_TEXT_CONTROLS_ALLOWED = frozenset({"U+0009"})

#: Recipients a study may name: collectors refuse an age header of more than 64 stanzas, and age
#: adds a grease stanza (docs/export-format.md).
MAX_RECIPIENTS = 63
#: An age X25519 recipient: "age1" and 58 bech32 characters (32 bytes and the checksum).
_AGE_X25519 = re.compile(r"age1[qpzry9x8gf2tvdw0s3jn54khce6mua7l]{58}", re.IGNORECASE)


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


def _key_name(path: KeyPath) -> str:
    """``study.scopes``, ``deny[2].title``: array indices counted from 1, as people count."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part + 1}]"
        else:
            shown = part if BARE_KEY.fullmatch(part) else f'"{part}"'
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
        self._locator: TomlLines | None = None
        self._errors: list[tuple[int, int, str]] = []

    # -- reporting

    def line(self, path: KeyPath) -> int:
        if self._locator is None:
            self._locator = TomlLines(self.text)
        return self._locator.line(path)

    def error(self, path: KeyPath, message: str) -> None:
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
                    f"[retention], [capture], [redaction], [[task]], [tasks] and [upload]"
                    f"{_suggest(key, _TOP_LEVEL)}",
                )
        fields = self._study_table(doc.get("study"))
        deny = self._deny(doc.get("deny"))
        self._hidden_text(doc)
        retention = self._table(doc.get("retention"), "retention", _RETENTION_KEYS)
        days = self._int(retention, ("retention", "days"), DEFAULT_RETENTION_DAYS, RETENTION_DAYS_RANGE)
        max_gib = self._number(retention, ("retention", "max_gib"), DEFAULT_RETENTION_MAX_GIB)
        after_export = self._choice(retention, ("retention", "after_export"))
        upload_url = self._upload_url(doc.get("upload"))
        after_upload = self._choice(retention, ("retention", "after_upload"))
        if "after_upload" in retention and not upload_url:
            self.error(
                ("retention", "after_upload"),
                "retention.after_upload is set but the study has no [upload] url. Fix: delete it, or add "
                "[upload] with the intake's url",
            )
        capture = self._table(doc.get("capture"), "capture", _CAPTURE_KEYS)
        idle = self._int(
            capture, ("capture", "idle_pause_minutes"), DEFAULT_IDLE_PAUSE_MINUTES, IDLE_PAUSE_MINUTES_RANGE
        )
        hotkey = self._hotkey(capture, ("capture", "pause_hotkey"), DEFAULT_PAUSE_HOTKEY)
        redaction = self._table(doc.get("redaction"), "redaction", _REDACTION_KEYS)
        choices = {key: self._choice(redaction, ("redaction", key)) for key in _REDACTION_KEYS}
        tasks, entries = self._tasks(doc.get("task"))
        mode = self._tasks_mode(doc.get("tasks"), entries)
        done_hotkey = self._done_hotkey(doc.get("tasks"), mode, hotkey, fields["scopes"])
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
            tasks=tasks,
            tasks_mode=mode,
            task_done_hotkey=done_hotkey,
            upload_url=upload_url,
            retention_after_upload=after_upload,
        )

    def _upload_url(self, value: object) -> str:
        """``[upload] url``: the intake's address (https, or http to this computer), "" without [upload]."""
        table = self._table(value, "upload", _UPLOAD_KEYS)
        if value is not None and isinstance(value, dict) and "url" not in table:
            self.error(("upload",), 'upload needs url = "https://..." (the study\'s intake). Fix: add it')
            return ""
        url = table.get("url", "")
        path: KeyPath = ("upload", "url")
        if not isinstance(url, str):
            self.error(
                path, f'upload.url must be a string such as "https://intake.example.org/", not {_kind(url)}'
            )
            return ""
        if not url:
            return ""
        hidden = hidden_characters(url)
        problem = (
            f"has hidden or control characters ({', '.join(hidden)})"
            if hidden
            else url_problem(url, query=False)
        )
        if problem:
            self.error(
                path,
                f'upload.url {problem}. Fix: the intake\'s https:// address, e.g. "https://intake.example.org/"',
            )
            return ""
        return url

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
        self, table: Mapping[str, object], path: KeyPath, known: tuple[str, ...], where: str
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
        are shown in the consent dialog and by ``optin consent show`` (a task's instruction, app and
        url are checked the same way by :meth:`_task_text`): a bidi override could show
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

    def _hidden_in(self, value: str, path: KeyPath, *, text: bool) -> None:
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

    def _line_of_char(self, path: KeyPath, ch: str, lines: int) -> int:
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

    def _str(self, table: Mapping[str, object], path: KeyPath) -> str:
        value = table[str(path[-1])]
        if isinstance(value, str) and value.strip():
            return value
        got = "an empty one" if isinstance(value, str) else _kind(value)
        fix = ' (in quotes: consent_version = "3")' if path[-1] == "consent_version" else ""
        self.error(path, f"{_key_name(path)} must be a non-empty string{fix}, not {got}")
        return ""

    def _str_list(self, value: object, path: KeyPath) -> list[str] | None:
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
        path: KeyPath = ("study", "scopes")
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
        path: KeyPath = ("study", "recipients")
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

    def _deny_rule(self, entry: dict[str, Any], path: KeyPath) -> DenyRule | None:
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

    # -- tasks

    def _tasks(self, value: object) -> tuple[tuple[StudyTask, ...], int | None]:
        """The ``[[task]]`` entries and how many the file has (None: ``task`` is not an array of tables)."""
        if value is None:
            return (), 0
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.error(
                ("task",),
                "task must be an array of tables: write [[task]] (two brackets) above each task, then its "
                "id and instruction",
            )
            return (), None
        if len(value) > MAX_TASKS:
            self.error(
                ("task",),
                f"the file has {len(value)} [[task]] entries; a study lists at most {MAX_TASKS} (each is "
                "shown to the volunteer and bound into their consent). Fix: list fewer tasks, or split "
                "them across studies",
            )
            return (), len(value)
        tasks = [self._task(entry, ("task", i)) for i, entry in enumerate(value)]
        first_of: dict[str, int] = {}
        for i, entry in enumerate(value):
            task_id = entry.get("id")
            if not isinstance(task_id, str) or not _TASK_ID.fullmatch(task_id):
                continue  # reported by _task
            if task_id in first_of:
                self.error(
                    ("task", i, "id"),
                    f"task[{i + 1}].id {_show(task_id)} is also the id of task[{first_of[task_id] + 1}]; "
                    "an id names its task in every export. Fix: give each task its own id",
                )
            else:
                first_of[task_id] = i
        return tuple(t for t in tasks if t is not None), len(value)

    def _task(self, entry: dict[str, Any], path: KeyPath) -> StudyTask | None:
        name = _key_name(path)
        self._unknown_keys(entry, path, _TASK_KEYS, "[[task]]")
        ok = True
        for key, fix in (("id", '"book-flight-2"'), ("instruction", '"what the volunteer is asked to do"')):
            if key not in entry:
                self.error(path, f"{name} (a [[task]] entry) is missing {key}. Fix: add {key} = {fix}")
                ok = False
        task_id = self._task_id(entry, path) if "id" in entry else None
        texts: dict[str, str | None] = {}
        for key, limit in (
            ("instruction", MAX_TASK_INSTRUCTION),
            ("app", MAX_TASK_APP),
            ("url", MAX_TASK_URL),
        ):
            if key in entry:
                texts[key] = self._task_text(entry[key], (*path, key), limit)
                ok = ok and texts[key] is not None
        url = texts.get("url")
        if url is not None:
            problem = _url_problem(url)
            if problem is not None:
                self.error((*path, "url"), f"{name}.url {problem}")
                ok = False
        minutes_ok, minutes = self._time_limit(entry, path)
        if not (ok and minutes_ok) or task_id is None:
            return None
        return StudyTask(
            id=task_id,
            instruction=str(texts["instruction"]),
            app=texts.get("app") or "",
            url=url or "",
            time_limit_minutes=minutes,
        )

    def _task_id(self, entry: Mapping[str, object], path: KeyPath) -> str | None:
        value = entry["id"]
        ipath = (*path, "id")
        rule = "1 to 64 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit"
        fix = 'Fix: an id such as "book-flight-2"'
        if not isinstance(value, str):
            self.error(ipath, f"{_key_name(ipath)} must be a string of {rule}, not {_kind(value)}. {fix}")
            return None
        if not _TASK_ID.fullmatch(value):
            got = "empty" if not value else _show(value)
            self.error(ipath, f"{_key_name(ipath)} is {got}; a task id is {rule}. {fix}")
            return None
        return value

    def _task_text(self, value: object, path: KeyPath, limit: int) -> str | None:
        """A task's instruction, app or url: a non-empty string of at most ``limit`` characters with no
        hidden characters (the instruction may hold line breaks and tabs).  Never quoted in messages."""
        key = str(path[-1])
        name = _key_name(path)
        if not isinstance(value, str) or not value.strip():
            got = "an empty one" if isinstance(value, str) else _kind(value)
            omit = "" if key == "instruction" else f"; leave {key} out if the task does not need it"
            self.error(path, f"{name} must be a non-empty string, not {got}{omit}")
            return None
        if len(value) > limit:
            self.error(
                path,
                f"{name} has {len(value):,} characters; at most {limit:,}. Fix: a shorter {key} (the "
                "volunteer reads it)",
            )
            return None
        before = len(self._errors)
        self._hidden_in(value, path, text=key == "instruction")
        return value if len(self._errors) == before else None

    def _time_limit(self, entry: Mapping[str, object], path: KeyPath) -> tuple[bool, int | None]:
        """(whether it is right, ``time_limit_minutes`` or None when absent); a wrong one is reported."""
        if "time_limit_minutes" not in entry:
            return True, None
        value = entry["time_limit_minutes"]
        tpath = (*path, "time_limit_minutes")
        low, high = TASK_TIME_LIMIT_MINUTES_RANGE
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(
                tpath,
                f"{_key_name(tpath)} must be a whole number of minutes from {low} to {high}, not "
                f"{_kind(value)}; leave it out for no limit",
            )
            return False, None
        if not low <= value <= high:
            self.error(
                tpath,
                f"{_key_name(tpath)} is {value}; it must be from {low} to {high} minutes (24 hours); "
                "leave it out for no limit",
            )
            return False, None
        return True, value

    def _tasks_mode(self, value: object, entries: int | None) -> str:
        """``[tasks] mode``: its default follows the ``[[task]]`` entries, and it must agree with them."""
        listed = ", ".join(f'"{m}"' for m in TASK_MODES)
        default = "list" if entries else "off"
        if value is None:
            return default
        if not isinstance(value, dict):
            plural = " (each task is a [[task]] entry, singular)" if isinstance(value, list) else ""
            self.error(
                ("tasks",),
                f"tasks must be a table: write [tasks] on a line of its own, then mode = one of {listed}"
                + plural,
            )
            return default
        self._unknown_keys(value, ("tasks",), _TASKS_KEYS, "[tasks]")
        if "mode" not in value:
            return default
        path: KeyPath = ("tasks", "mode")
        mode = value["mode"]
        if mode not in TASK_MODES:
            shown = _show(mode) if isinstance(mode, str) else _kind(mode)
            hint = _suggest(mode, TASK_MODES) if isinstance(mode, str) else ""
            self.error(path, f"tasks.mode is {shown}; it must be one of {listed}{hint}")
            return default
        if entries is None:  # task is not an array of tables: reported above
            return str(mode)
        if mode in ("list", "both") and entries == 0:
            self.error(
                path,
                f'tasks.mode is "{mode}" but the file has no [[task]] entries: there is no list to pick '
                'from. Fix: add [[task]] entries (each with id and instruction), or mode = "free" for '
                "instructions the volunteer writes",
            )
        elif mode in ("off", "free") and entries > 0:
            entries_word = "entry" if entries == 1 else "entries"
            offer = "both" if mode == "free" else "list"
            self.error(
                path,
                f'tasks.mode is "{mode}" but the file has {entries} [[task]] {entries_word}, which would '
                f'never be offered. Fix: mode = "{offer}" to offer them, or delete them',
            )
        return str(mode)

    # -- numbers and choices

    def _int(self, table: Mapping[str, object], path: KeyPath, default: int, bounds: tuple[int, int]) -> int:
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

    def _number(self, table: Mapping[str, object], path: KeyPath, default: float) -> float:
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

    def _choice(self, table: Mapping[str, object], path: KeyPath) -> str:
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

    def _hotkey(self, table: Mapping[str, object], path: KeyPath, default: str) -> str:
        key, name = str(path[-1]), _key_name(path)
        if key not in table:
            return default
        value = table[key]
        if not isinstance(value, str):
            self.error(path, f'{name} must be a string such as "<ctrl>+<alt>+p", not {_kind(value)}')
            return default
        problem = hotkey_problem(value)
        if problem:
            self.error(path, f"{name} {_show(value)} {problem}")
            return default
        return value

    def _done_hotkey(self, value: object, mode: str, pause: str, scopes: Any) -> str:
        """``[tasks] done_hotkey``: optional; only with tasks and the keyboard, and not the pause keys."""
        if not isinstance(value, dict) or "done_hotkey" not in value:
            return ""
        path: KeyPath = ("tasks", "done_hotkey")
        keys = self._hotkey(value, path, "")
        if not keys:
            return ""
        if mode == "off":
            self.error(
                path, "tasks.done_hotkey is set but the study has no tasks. Fix: delete it, or add tasks"
            )
        elif "keyboard" not in (scopes or ()):
            self.error(
                path,
                'tasks.done_hotkey needs the "keyboard" scope (optin sees keys only then). '
                'Fix: add "keyboard" to scopes, or delete it',
            )
        elif _same_keys(keys, pause):
            self.error(path, "tasks.done_hotkey is the pause hotkey too. Fix: choose other keys")
        return keys


def _same_keys(one: str, other: str) -> bool:
    """Whether two hotkeys are the same keys, whatever their order and case."""
    return bool(other) and {k.strip().lower() for k in one.split("+")} == {
        k.strip().lower() for k in other.split("+")
    }


def _url_problem(url: str) -> str | None:
    """What is wrong with ``url`` as a task's web address, or None.  The address itself is never quoted:
    it might hold a password.  (Parsed here with regular expressions: optin imports no network
    library, urllib included; tests/unit/test_no_network.py.)"""
    fix = 'Fix: a full address such as "https://example.org/page"'
    if any(c.isspace() for c in url):
        return f"has a space or line break in it. {fix} (a space inside one is written %20)"
    scheme = _URL_SCHEME.match(url)
    if scheme is None or scheme.group(1).lower() not in ("http", "https"):
        got = (
            f"an address of scheme {_show(scheme.group(1), 20)}" if scheme else "an address without a scheme"
        )
        return f"must be an http:// or https:// address, not {got}. {fix}"
    rest = url[scheme.end() :]
    authority = _URL_AUTHORITY.match(rest)
    if authority is None or not authority.group(1):
        return f"has no host name after {scheme.group(1)}://. {fix}"
    if "@" in authority.group(1):
        return (
            "holds a user name or password (user:password@host), which every volunteer would read. "
            "Fix: leave them out of the address"
        )
    host = _URL_HOST.fullmatch(authority.group(1))
    if host is None or (host.group(1) is not None and int(host.group(1)) > 65535):
        return f"is not a web address that can be read (its host name or port). {fix}"
    return None


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
