"""The export redaction policy: what leaves, what is replaced, what is masked (P6).

:func:`redact_session` is the one function that decides, pure given its OCR engine:

* **Typed text** (``[redaction] typed_text = "redact"``, the default): the keys of each
  field are replayed into text (:mod:`agent.keyboard.replay`); the detectors run on the
  field's final text *and* on everything typed into it (a card number typed and then
  deleted is still in the key stream).  Every key event inside a detected span — and
  the modifiers, arrows and backspaces between its first and last character — is
  replaced by one :class:`Redacted` record with the entity type and the time of the
  first one: neither the characters nor their timing leave.  A field typed into a
  terminal is redacted whole as ``PASSWORD`` when the screen never showed its text or a
  visible prompt asked for a password, passphrase, PIN, secret or token; without the
  screen, when it is one word right after a command that asks for a password (``sudo``,
  ``ssh``, ``passwd``...) (:mod:`agent.redact.terminal`).
  With ``"drop"``, every typed character and character key code is removed.
* **Pasted text**: redacted like typed text (a paste inside a detected span goes with it).
* **Window titles** (``window_titles = "redact"``): detected spans become ``[EMAIL]``...;
  with ``"drop"`` titles are removed.
* **UI elements** (``element`` records): an element's name, its ancestors' names and its
  automation id are redacted like window titles, then cut to the bundle's bounds (counted per
  record in ``elements``); with ``window_titles = "drop"`` they are null (``ALL_TEXT`` per text
  removed).  Role, states, bounds and application stay.  A ``focus`` record of a key or paste
  that a detected span replaced moves to the span's ``Redacted`` record, so its time tells
  nothing of the span.
* **Screens**: deny-listed windows were masked at capture; OCR (``ocr = "required"``, the
  default) reads the changed parts of each frame once (before the typed text: the terminal
  rule needs it) and masks detected text and the typed text that was redacted.  A frame
  the OCR engine fails on is left out.  If the study requires OCR and no engine is
  installed, export refuses (:class:`RedactorUnavailable`): the policy fails closed, never
  skips.  Frames may come without their bytes (a session read with ``lazy_frames`` for a
  streaming export, agent/export/frame_data.py): each is loaded when it is read or masked and
  let go after, and a masked one comes out as its boxes and the hash of its masked bytes.

The manifest gets :meth:`Redaction.evidence`: the policy and its hash, the redactors that
ran with their versions (the ``terminal-passwords`` entry says whether the screen rule ran
or the command rule alone, and why), and counts per entity type — never the values.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.errors import RedactorUnavailable
from agent.events import (
    ElementSeen,
    Event,
    Frame,
    KeyPress,
    KeyRelease,
    Paste,
    Redacted,
    TaskStart,
    WindowFocus,
)
from agent.export.counts import ELEMENT_ID_BOUND, ELEMENT_NAME_BOUND, ELEMENT_ROLE
from agent.export.frame_data import LoadingView
from agent.keyboard import replay
from agent.keyboard.editing import Field
from agent.redact import detectors, terminal
from agent.redact.local_names import LocalNames
from agent.redact.spans import Span

#: Name and version of this policy (the manifest names both, and their hash).  5: OCR reads the
#: changed regions of a frame, not full-width bands, and groups words into lines by their neighbours.
POLICY_NAME = "optin-redaction"
POLICY_VERSION = "5"

#: Entity of a whole terminal field taken as a password (agent/redact/terminal.py).
PROMPTED_ENTITY = "PASSWORD"


@dataclass(frozen=True)
class Policy:
    """The study's ``[redaction]`` choices (docs/study.md)."""

    ocr: str = "required"
    typed_text: str = "redact"
    window_titles: str = "redact"

    @classmethod
    def from_study(cls, study: Any) -> Policy:
        return cls(study.redaction_ocr, study.redaction_typed_text, study.redaction_window_titles)

    def describe(self) -> dict[str, Any]:
        return {
            "name": POLICY_NAME,
            "version": POLICY_VERSION,
            "ocr": self.ocr,
            "typed_text": self.typed_text,
            "window_titles": self.window_titles,
            "detectors_version": detectors.DETECTORS_VERSION,
            "text_version": replay.TEXT_VERSION,
            "terminal_version": terminal.RULES_VERSION,
        }

    def sha256(self) -> str:
        """Hash of everything that decides the output, so a manifest names exactly the policy that ran."""
        return hashlib.sha256(json.dumps(self.describe(), sort_keys=True).encode()).hexdigest()


@dataclass
class Redaction:
    """The redacted stream and what was done to it."""

    events: list[Any]
    policy: Policy
    redactors: list[dict[str, Any]]
    counts: dict[str, dict[str, int]]
    frames_masked: bool
    frames_left_out: int = 0
    #: Typed text that was redacted (screen matching only; never leaves memory).
    secrets: tuple[str, ...] = field(default=(), repr=False)

    def evidence(self) -> dict[str, Any]:
        """What the manifest records: no values, only names, versions and counts."""
        return {
            "policy": self.policy.describe(),
            "policy_sha256": self.policy.sha256(),
            "redactors": self.redactors,
            "frames_masked_by_ocr": self.frames_masked,
            "deny_masks": "applied at capture, before encryption",
            "frames_left_out_ocr_failed": self.frames_left_out,
            "counts": {where: dict(sorted(c.items())) for where, c in sorted(self.counts.items())},
        }


# --- the one function -------------------------------------------------------------------------------

OcrEngine = Any  # agent.redact.screen.TesseractOcr or a stand-in with name, version and __call__
Progress = Callable[[int, int], None]


def redact_session(
    events: Sequence[Event],
    policy: Policy,
    *,
    ocr: OcrEngine | None,
    progress: Progress | None = None,
    local: LocalNames | None = None,
) -> Redaction:
    """Redact one session's events for export (pure given ``ocr``).

    :param ocr: the OCR engine, or None when none is installed.
    :param local: this computer's names, found like detector entities (``[HOSTNAME]``...).
    :param progress: called with (frames done, frames in all) while frames are read.
    :raises RedactorUnavailable: the policy requires OCR and ``ocr`` is None.
    """
    frames = [e for e in events if isinstance(e, Frame)]
    if policy.ocr == "required" and ocr is None and frames:
        msg = (
            'the study requires OCR redaction of screenshots ([redaction] ocr = "required") and no '
            "OCR engine is installed, so nothing was exported. Fix: apt-get install tesseract-ocr "
            "tesseract-ocr-eng (optin doctor checks it)"
        )
        raise RedactorUnavailable(msg)
    ordered = sorted(events, key=lambda e: e.t_ns)  # stable: a paste sorts right behind its key
    counts: dict[str, Counter[str]] = {w: Counter() for w in ("typed", "paste", "titles", "screen")}
    find = _finder(local)
    engine = ocr if policy.ocr != "off" else None
    reads = None
    if engine is not None and frames:
        from agent.redact.screen import read_frames

        # once: terminals and masks use it; a frame left in the store is loaded when reached
        reads = read_frames(LoadingView(ordered), engine, progress=progress)
    in_order = [e for e in ordered if isinstance(e, Frame)]
    screen = None if reads is None else terminal.ScreenText(reads, LoadingView(in_order), engine)
    rules: list[terminal.Found] = []
    if policy.typed_text == "drop":  # the spans are still found: the screens must not show them
        _, secrets = redact_typing(
            ordered, {w: Counter() for w in ("typed", "paste")}, find, screen=screen, rules=rules
        )
        kept = [_drop_text(e, counts) for e in ordered]
    else:
        kept, secrets = redact_typing(ordered, counts, find, screen=screen, rules=rules)
    kept = [_title(e, policy, counts, find) for e in kept]
    if any(isinstance(e, ElementSeen) and e.element is not None for e in kept):
        counts["elements"] = Counter()
        kept = [_element(e, policy, counts["elements"], find) for e in kept]
    if any(isinstance(e, TaskStart) and e.source == "volunteer" for e in kept):
        counts["instructions"] = Counter()
        kept = [_instruction(e, policy, counts, find) for e in kept]
    redactors: list[dict[str, Any]] = [
        {
            "name": "detectors",
            "version": detectors.DETECTORS_VERSION,
            "families": list(detectors.DETECTOR_NAMES),
        },
        {"name": "typed-text", "version": replay.TEXT_VERSION, "mode": policy.typed_text},
        terminal.evidence(rules[0], None if screen is not None else _no_screen(policy, ocr, frames)),
    ]
    if local is not None:
        redactors.append(
            {
                "name": "local-names",
                "version": "1",
                "finds": ["HOSTNAME", "USER_NAME", "HOME_PATH", "MAC_ADDRESS"],
            }
        )
    use_ocr = engine is not None
    left_out = 0
    if engine is not None:
        if frames:
            from agent.redact.screen import mask_frames

            kept, left_out, screen_counts = mask_frames(kept, engine, secrets, detect=find, reads=reads)
            counts["screen"].update(screen_counts)
        redactors.append({"name": engine.name, "version": engine.version, "on": "changed regions of frames"})
    return Redaction(
        events=kept,
        policy=policy,
        redactors=redactors,
        counts={w: dict(c) for w, c in counts.items()},
        frames_masked=use_ocr,
        frames_left_out=left_out,
        secrets=secrets,
    )


# --- typed and pasted text --------------------------------------------------------------------------


Finder = Callable[[str], list[Span]]


def _finder(local: LocalNames | None) -> Finder:
    """The detectors, plus this computer's names when ``local`` is given."""
    if local is None:
        return detectors.detect
    names = local

    def find(value: str) -> list[Span]:
        extra = names.find(value)
        found = detectors.detect(value)
        return sorted(found + extra) if extra else found

    return find


def _no_screen(policy: Policy, ocr: OcrEngine | None, frames: Sequence[Frame]) -> str:
    """Why the terminal rule could not look at the screen (the manifest says it)."""
    if not frames:
        return "no frames (no screen scope)"
    if policy.ocr == "off":
        return "OCR off in the study's policy"
    return "no OCR engine" if ocr is None else "no screen"


def redact_typing(
    ordered: Sequence[Event],
    counts: dict[str, Counter[str]],
    find: Finder = detectors.detect,
    *,
    screen: terminal.ScreenText | None = None,
    rules: list[terminal.Found] | None = None,
) -> tuple[list[Any], tuple[str, ...]]:
    """Replace the key and paste events of every detected span; redact the rest of the pastes.

    :param screen: what OCR read on the session's frames (the terminal rule then looks at it);
        None: the command rule alone (:func:`agent.redact.terminal.password_fields`).
    :param rules: if given, the terminal rule's :class:`~agent.redact.terminal.Found` is appended.
    """
    fields = replay.reconstruct(ordered)
    found: list[tuple[Field, str, int, int, str]] = []
    secrets: set[str] = set()
    for fld in fields:
        for stream, value in fld.streams():
            for span in find(value):
                found.append((fld, stream, span.start, span.end, span.entity))
                secrets.add(value[span.start : span.end])
    passwords = terminal.password_fields(fields, ordered, screen)
    if rules is not None:
        rules.append(passwords)
    for fld in passwords.fields:
        for stream, value in (("text", fld.text), ("typed", fld.typed)):
            if value:
                found.append((fld, stream, 0, len(value), PROMPTED_ENTITY))
                secrets.add(value)
    windows = replay.key_windows(found)
    replaced: set[int] = set()
    heads: dict[int, str] = {}  # the first replaced event of each window: where its record stands
    for lo, hi, entity in windows:
        inside = [i for i in range(lo, hi + 1) if isinstance(ordered[i], (KeyPress, KeyRelease, Paste))]
        if inside:
            heads[inside[0]] = entity
            replaced.update(inside)
    moved = _moved_times(ordered, windows, heads)
    out: list[Any] = []
    for i, event in enumerate(ordered):
        if i in heads:
            out.append(Redacted(event.t_ns, heads[i]))
            counts["typed"][heads[i]] += 1
        elif i not in replaced:
            out.append(_kept_beside_spans(event, counts, find, moved))
    return out, tuple(sorted(secrets))


def _kept_beside_spans(
    event: Any, counts: dict[str, Counter[str]], find: Finder, moved: dict[int, int]
) -> Any:
    """An event no span replaced: a paste redacted, a ``focus`` element record of a replaced key
    moved to its span's record (:func:`_moved_times`), any other as it is."""
    if isinstance(event, Paste):
        return _paste(event, counts, find)
    if isinstance(event, ElementSeen) and event.at == "focus" and event.t_ns in moved:
        return dataclasses.replace(event, t_ns=moved[event.t_ns])
    return event


def _moved_times(
    ordered: Sequence[Event], windows: Sequence[tuple[int, int, str]], heads: dict[int, str]
) -> dict[int, int]:
    """The times of the key and paste events a span replaced → the time of its ``Redacted`` record.

    A ``focus`` element record carries the time of its key press (or paste); one inside a span
    would tell when a key of the span was pressed, so it moves to the span's record.
    """
    moved: dict[int, int] = {}
    for lo, hi, _entity in windows:
        head = next((i for i in range(lo, hi + 1) if i in heads), None)
        if head is None:
            continue
        t_head = ordered[head].t_ns
        for i in range(lo, hi + 1):
            if isinstance(ordered[i], (KeyPress, Paste)) and ordered[i].t_ns != t_head:
                moved[ordered[i].t_ns] = t_head
    return moved


def _paste(event: Paste, counts: dict[str, Counter[str]], find: Finder) -> Paste:
    if not event.text:
        return event
    spans = find(event.text)
    if not spans:
        return event
    counts["paste"].update(s.entity for s in spans)
    return dataclasses.replace(event, text=detectors.redact(event.text, spans))


def _drop_text(event: Event, counts: dict[str, Counter[str]]) -> Event:
    if isinstance(event, (KeyPress, KeyRelease)):
        if event.name is None:  # a character key: its key code (keysym) would spell the text
            if event.char is not None or event.vk is not None:
                counts["typed"]["ALL_TEXT"] += 1
            return dataclasses.replace(event, char=None, vk=None)
        return dataclasses.replace(event, char=None)
    if isinstance(event, Paste) and event.text is not None:
        counts["paste"]["ALL_TEXT"] += 1
        return dataclasses.replace(event, text=None)
    return event


def _instruction(event: Any, policy: Policy, counts: dict[str, Counter[str]], find: Finder) -> Any:
    """A task the volunteer described in their own words: their words are captured text, redacted
    like typed text (and dropped, as an empty instruction, when the study drops typed text).  A
    study's own task instruction is the study's text and stays as it is."""
    if not isinstance(event, TaskStart) or event.source != "volunteer":
        return event
    if policy.typed_text == "drop":
        counts["instructions"]["ALL_TEXT"] += 1
        return dataclasses.replace(event, instruction="")
    spans = find(event.instruction)
    if not spans:
        return event
    counts["instructions"].update(s.entity for s in spans)
    return dataclasses.replace(event, instruction=detectors.redact(event.instruction, spans))


def _title(event: Any, policy: Policy, counts: dict[str, Counter[str]], find: Finder) -> Any:
    if not isinstance(event, WindowFocus) or event.title is None:
        return event
    if policy.window_titles == "drop":
        counts["titles"]["ALL_TEXT"] += 1
        return dataclasses.replace(event, title=None)
    spans = find(event.title)
    if not spans:
        return event
    counts["titles"].update(s.entity for s in spans)
    return dataclasses.replace(event, title=detectors.redact(event.title, spans))


def _element(event: Any, policy: Policy, counts: Counter[str], find: Finder) -> Any:
    """An element record as exported: its name, ancestor names and automation id redacted like
    window titles (or null under ``window_titles = "drop"``), each cut to the bundle's bound;
    a role outside the bundle's spelling reads ``unknown``.  Never logged."""
    if not isinstance(event, ElementSeen) or event.element is None:
        return event
    element = event.element
    drop = policy.window_titles == "drop"

    def text(value: Any, bound: int) -> str | None:
        if not isinstance(value, str) or not value:
            return None
        if drop:
            counts["ALL_TEXT"] += 1
            return None
        spans = find(value)
        if spans:
            counts.update(s.entity for s in spans)
            value = detectors.redact(value, spans)
        return value[:bound] or None

    def role(value: Any) -> str:
        return value if isinstance(value, str) and ELEMENT_ROLE.fullmatch(value) else "unknown"

    out = {
        "role": role(element.get("role")),
        "name": text(element.get("name"), ELEMENT_NAME_BOUND),
        "states": list(element.get("states") or ()),
        "bounds": None if element.get("bounds") is None else list(element["bounds"]),
        "app": element.get("app"),
        "path": [
            {"role": role(item.get("role")), "name": text(item.get("name"), ELEMENT_NAME_BOUND)}
            for item in element.get("path") or ()
        ],
        "automation_id": text(element.get("automation_id"), ELEMENT_ID_BOUND),
    }
    return dataclasses.replace(event, element=out)
