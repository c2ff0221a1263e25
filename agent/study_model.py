"""The study a volunteer consents to, as data: :class:`Study`, its defaults and ranges, and the
terms a consent receipt binds (:meth:`Study.terms`, :func:`terms_digest`, :func:`changed_terms`).

:mod:`agent.study` is the entry callers import (it re-exports these names); the study file's
format is described there, its check is :mod:`agent.study_check`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.canonical_json import canonical
from agent.deny_rules import DenyRule

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

#: ``[tasks] mode``: no tasks, the study's ``[[task]]`` list, instructions the volunteer writes
#: (free), or both.  Without a ``[tasks]`` table: ``list`` when the file has ``[[task]]`` entries,
#: else ``off``.
TASK_MODES = ("off", "list", "free", "both")

#: Allowed ranges (inclusive).
RETENTION_DAYS_RANGE = (1, 365)
RETENTION_MAX_GIB_RANGE = (0.1, 1024.0)
IDLE_PAUSE_MINUTES_RANGE = (0, 240)
TASK_TIME_LIMIT_MINUTES_RANGE = (1, 1440)

#: A ``[[task]]`` id: a lower-case letter or digit, then up to 63 of them or ``.``, ``_``, ``-``.
TASK_ID_PATTERN = r"[a-z0-9][a-z0-9._-]{0,63}"
#: Most ``[[task]]`` entries a study may list (each is shown to the volunteer and bound by consent).
MAX_TASKS = 500
#: Longest task instruction, ``app`` hint and ``url`` hint, in characters.
MAX_TASK_INSTRUCTION = 2000
MAX_TASK_APP = 200
MAX_TASK_URL = 2048

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
    "tasks": "the tasks it asks for",
    "upload": "where exports are uploaded",
}


@dataclass(frozen=True)
class StudyTask:
    """One ``[[task]]`` of a study file: what the volunteer is asked to do."""

    #: Short identifier, unique in the study (:data:`TASK_ID_PATTERN`); it names the task in bundles.
    id: str
    #: The instruction in words, as the volunteer reads it.
    instruction: str
    #: Optional hint of where to do it: an application (``app``) or an http(s) address (``url``); "" for none.
    app: str = ""
    url: str = ""
    #: Optional time limit in whole minutes (:data:`TASK_TIME_LIMIT_MINUTES_RANGE`); None: no limit.
    time_limit_minutes: int | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain data, as the consent terms and bundles hold it (empty hints left out)."""
        out: dict[str, Any] = {"id": self.id, "instruction": self.instruction}
        if self.app:
            out["app"] = self.app
        if self.url:
            out["url"] = self.url
        if self.time_limit_minutes is not None:
            out["time_limit_minutes"] = self.time_limit_minutes
        return out


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
    #: ``[[task]]`` entries, in file order.
    tasks: tuple[StudyTask, ...] = ()
    #: ``[tasks] mode`` (:data:`TASK_MODES`).
    tasks_mode: str = "off"
    #: ``[tasks] done_hotkey``: the keys that end the running task as done; "" for none.
    task_done_hotkey: str = ""
    #: ``[upload] url``: the study's intake, where ``optin upload`` sends exports; "" for none (the
    #: volunteer hands exports over themselves).
    upload_url: str = ""
    #: ``[retention] after_upload``: ``keep`` a delivered session locally, or ``delete`` it (shredded,
    #: with its export file) once the intake confirmed it stored the bundle.
    retention_after_upload: str = "keep"

    @property
    def text_sha256(self) -> str:
        """Hex SHA-256 of the consent text: what a volunteer agrees to."""
        return hashlib.sha256(self.consent_text.encode("utf-8")).hexdigest()

    def terms(self) -> dict[str, Any]:
        """Everything the consent dialog and ``optin consent show`` state about this study, as plain data.

        A consent receipt binds their SHA-256 (:attr:`terms_sha256`): a study file that changes any
        of them (the recipients, a deny rule, the retention, a redaction or capture choice, a task) needs a
        new agreement.  The consent text is in it by its SHA-256.  Tasks are in it only when the
        study has them (mode other than ``off``), so a study without tasks keeps the terms, and the
        receipts, it had before tasks existed.
        """
        terms = {
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
        if self.tasks_mode != "off":
            tasks: dict[str, Any] = {"mode": self.tasks_mode, "list": [task.to_json() for task in self.tasks]}
            if self.task_done_hotkey:  # only when set: a study without one keeps its consent hash
                tasks["done_hotkey"] = self.task_done_hotkey
            terms["tasks"] = tasks
        if self.upload_url:  # only when set: a study without an intake keeps its consent hash
            terms["upload"] = {"url": self.upload_url, "after_upload": self.retention_after_upload}
        return terms

    @property
    def terms_sha256(self) -> str:
        """Hex SHA-256 of :meth:`terms` in canonical JSON: the consent a receipt binds."""
        return terms_digest(self.terms())

    @property
    def deletes_after_upload(self) -> bool:
        """Whether a delivered session is deleted here (``after_upload = "delete"``; an export that
        already deletes it leaves nothing to delete)."""
        return (
            bool(self.upload_url)
            and self.retention_after_upload == "delete"
            and self.retention_after_export != "delete"
        )

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
