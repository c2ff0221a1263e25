"""Synthetic volunteers and sessions, written as real ``optin-bundle/3`` files by optin's own writer.

For the dataset build's tests and benchmarks (issue 17): many bundles, fast, deterministic for a
seed, with the variety a build must handle.  Nothing here hand-makes a tar: each session is a list
of recorder events (agent/events.py) that goes through the real redaction policy
(:func:`agent.redact.policy.redact_session`, OCR off as the synthetic study says), the real task
and step rules (:func:`agent.export.bundle.task_records_kept`, :func:`agent.steps.steps`) and the
real writer (:func:`agent.export.bundle.build_tar`, signed with the volunteer's key for the study),
and is age-encrypted to the study recipient as :func:`agent.export.bundle.export_session` does it
(``pyrage.encrypt`` of the tar to the parsed recipient, written as ``<session>.optin.tar.age`` with
:func:`agent.paths.write_private_file`).  Only the store and the approval step are skipped:
:func:`agent.export.bundle.prepare` is the store's half of what is done here.

Every bundle has, with ``steps=6`` (more steps continue the cycle with a shift+``right_click``,
whose ``keys`` are ``["shift"]``, and a ``double_click``; fewer take its head):

* a ``click`` with a frame, a ``type`` step whose text the redaction leaves as ``to:[EMAIL]`` (the
  keys of an e-mail address, replaced by one ``redacted`` record), a ``key`` (Enter), a ``drag``
  (in another window), a ``scroll`` (three notches down, ``dy`` -3) and a ``hotkey`` (ctrl+c);
* when the session looks elements up, an element on the click (``point``), the typing and the
  Enter after it (the ``focus`` line still in force), none on the drag, scroll (its lookup found
  ``no_element``) and hotkey;
* three windows, one whose title holds an e-mail address (exported as ``[EMAIL]``), and a
  ``screen_layout`` marker; frames are 64 x 40 and so are the screen and the windows.

Some sessions (chosen by the bundle's position ``g`` in the output, so that any 12 consecutive
bundles hold every variant; see :func:`variant`): the first step without a frame (no frame before
it; the others have a ``start`` frame that no step uses); a study task ending ``done`` or a free
task ending ``failed`` whose instruction holds an e-mail address (redacted), covering every step
but the last; a ``pause``/``resume`` gap before the middle step (its sample has ``after_gap``); a
``settled`` frame no step uses (``frames/NNNNNN.webp``); no element lookups at all
(``elements.api`` null).  ``frames=False``, ``tasks=False``, ``elements=False`` turn each off for
every bundle.

Determinism: the volunteers, sessions, events and therefore every tar member (manifest.json
included) are the same for the same seed, volunteer count, session count, study recipient and
optin version (the manifest names it).  The ``.age`` files are not: age encryption is randomised
(an ephemeral key and a random file key), so ``sha256`` differs from run to run.  The study
identity from :func:`make_study_identity` is random too (and the recipient is in the consent
terms, so two study identities give two sets of manifests).

Speed: frames are four tiny WebP images (:func:`agent.frame_codec.encode_image`) encoded once per
process and reused; the study is parsed once per call; a volunteer's pseudonym and signing key are
derived once per volunteer (build_tar derives them again for the manifest, as it must).  Measured
on the project's 2-core machine: 200 bundles of 6 steps written in 0.5-0.6 s (about 3 ms and
32 KiB each), opened and checked by the reader in 0.3 s; 1000 in 2.5 s; 200 of 60 steps in 3.0 s.
"""

from __future__ import annotations

import base64
import calendar
import functools
import hashlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent import __version__
from agent.consent import Receipt
from agent.events import (
    ButtonPress,
    ButtonRelease,
    ElementSeen,
    Event,
    Frame,
    KeyPress,
    KeyRelease,
    Marker,
    PointerMove,
    Scroll,
    TaskEnd,
    TaskStart,
    WindowFocus,
)
from agent.export import bundle
from agent.frame_codec import FRAME_FORMAT, encode_image
from agent.paths import write_private_file
from agent.redact.policy import Policy, redact_session
from agent.steps import steps as find_steps
from agent.store import signing
from agent.study import Study, parse_study

#: The one study every synthetic bundle is exported to.
STUDY_ID = "synth-web-tasks-2026"
#: Frame (and screen) size: tiny, so that 200 bundles take a few seconds.
WIDTH, HEIGHT = 64, 40
#: The actions of a session's steps, in order; a session of n steps has the first n of the cycle.
CYCLE = ("click", "type", "key", "drag", "scroll", "hotkey", "right_click", "double_click")
#: When the consent of every synthetic volunteer was given (fixed: manifests are deterministic).
GRANTED_AT = "2026-11-30T08:00:00+00:00"
#: The first session's wall-clock start (UTC, seconds); session g starts about g * 10 min later.
WALL0_S = calendar.timegm((2026, 12, 1, 9, 0, 0, 0, 0, 0))
#: The study task of the synthetic study (its id, instruction and hint are in the consent terms).
STUDY_TASK_ID = "sign-in"
STUDY_TASK_INSTRUCTION = "Sign in to the staff portal with the test account"

S = 1_000_000_000
MS = 1_000_000

_STUDY_TOML = """[study]
id = "{study_id}"
name = "Synthetic web tasks"
contact = "nobody: synthetic volunteers for optin's dataset tests"
consent_version = "1"
scopes = ["pointer", "keyboard", "screen", "window_titles"]
recipients = ["{recipient}"]
consent_text = \"\"\"
Synthetic volunteers made by tests/study/synth.py; no person recorded anything.
\"\"\"

[redaction]
ocr = "off"

[tasks]
mode = "both"

[[task]]
id = "{task_id}"
instruction = "{instruction}"
url = "https://portal.example.org/"
time_limit_minutes = 10

[[task]]
id = "rename-report"
instruction = "Rename the report to today's date"
app = "Files"
"""

#: A found element (the Username field of a page), as the recorder stores it.
_FIELD: dict[str, Any] = {
    "app": "Firefox",
    "automation_id": "user",
    "bounds": [8, 10, 40, 8],
    "name": "Username",
    "path": [
        {"name": "Staff portal — Mozilla Firefox", "role": "frame"},
        {"name": "Staff portal", "role": "document web"},
    ],
    "role": "entry",
    "states": ["editable", "enabled", "focusable"],
}
_FOCUSED: dict[str, Any] = {**_FIELD, "states": ["editable", "enabled", "focusable", "focused"]}


@dataclass(frozen=True)
class SynthBundle:
    """One written bundle.

    :ivar path: the ``<session>.optin.tar.age`` file.
    :ivar session: its session id (``YYYYMMDDTHHMMSSZ-xxxxxxxx``).
    :ivar volunteer: the volunteer's pseudonym for :data:`STUDY_ID` (the manifest's ``volunteer.id``).
    :ivar sha256: hex SHA-256 of the file (differs per run: age encryption is randomised).
    :ivar steps: how many steps (``NNNNNN.json`` members) it holds.
    :ivar signing_key: the volunteer's Ed25519 public key for the study, base64, as the manifest's
        ``volunteer.signing_key``.
    :ivar size: the file's size in bytes.
    :ivar volunteer_index: which volunteer (0-based) made it; ``variant``: what it holds (:func:`variant`).
    :ivar identity: the synthetic volunteer's X25519 identity (to sign more bundles as them).
    """

    path: Path
    session: str
    volunteer: str
    sha256: str
    steps: int
    signing_key: str
    size: int = 0
    volunteer_index: int = 0
    variant: Variant | None = None
    identity: bytes = field(default=b"", repr=False)


@dataclass(frozen=True)
class Variant:
    """What one session holds beyond the fixed cycle of actions."""

    first_step_frame: bool  # False: no frame before the first step (its ``frame`` is null)
    settled_frame: bool  # a frame no step uses (``frames/NNNNNN.webp``)
    task: str | None  # "study" (ends done), "free" (ends failed) or None
    pause: bool  # a pause/resume gap before the middle step
    elements: bool  # the session looks elements up (``elements.api`` "atspi")
    frames: bool  # the session has frames at all


def variant(g: int, *, frames: bool = True, tasks: bool = True, elements: bool = True) -> Variant:
    """The variant of the ``g``-th bundle (0-based, in output order): every combination's parts
    appear within any 12 consecutive bundles."""
    return Variant(
        first_step_frame=frames and g % 4 != 1,
        settled_frame=frames and g % 2 == 1,
        task=("study", "free", None)[g % 3] if tasks else None,
        pause=g % 2 == 0,
        elements=elements and g % 4 != 2,
        frames=frames,
    )


def make_study_identity(tmp: Path) -> tuple[Path, str]:
    """A fresh study key pair: the identity file (as ``age-keygen`` writes it) and its recipient."""
    from pyrage import x25519

    identity = x25519.Identity.generate()
    recipient = str(identity.to_public())
    path = tmp / "study-identity.txt"
    text = f"# created: {GRANTED_AT}\n# public key: {recipient}\n{identity}\n"
    write_private_file(path, text.encode("ascii"), durable=False)
    return path, recipient


def volunteer_identity(seed: int, volunteer: int) -> bytes:
    """The synthetic volunteer's 32-byte X25519 identity (deterministic: seed and index)."""
    return hashlib.sha256(f"optin synth volunteer {seed} {volunteer}".encode()).digest()


def synth_study(recipient: str) -> Study:
    """The synthetic study (tasks mode ``both``, OCR off), encrypting to ``recipient``."""
    text = _STUDY_TOML.format(
        study_id=STUDY_ID, recipient=recipient, task_id=STUDY_TASK_ID, instruction=STUDY_TASK_INSTRUCTION
    )
    return parse_study(text, source="<synth study>")


def receipt_of(study: Study) -> dict[str, Any]:
    """The consent receipt every synthetic volunteer gave to ``study`` (as consent.grant writes it)."""
    return Receipt(
        study_id=study.id,
        study_name=study.name,
        consent_version=study.consent_version,
        text_sha256=study.text_sha256,
        scopes=tuple(study.scopes),
        granted_at=GRANTED_AT,
        agent_version=__version__,
        terms_sha256=study.terms_sha256,
        terms=study.terms(),
    ).to_json()


def make_bundles(
    out: Path,
    recipient: str,
    *,
    volunteers: int,
    sessions: int,
    seed: int,
    steps: int = 6,
    frames: bool = True,
    tasks: bool = True,
    elements: bool = True,
    study: Study | None = None,
) -> list[SynthBundle]:
    """Write ``volunteers * sessions`` bundles into ``out``, in (volunteer, session) order.

    :param recipient: the study's age recipient (``age1...``), as :func:`make_study_identity` gives.
    :param study: another study than the synthetic one (e.g. the demo's, to sit beside a real
        recording); its bundles hold no task (the tasks are the synthetic study's).
    :param sessions: per volunteer.
    :param steps: per session (at least 1).
    :raises ValueError: a count is out of range.
    """
    if volunteers < 1 or sessions < 1 or steps < 1:
        msg = f"volunteers, sessions and steps are at least 1 (got {volunteers}, {sessions}, {steps})"
        raise ValueError(msg)
    if study is not None and tasks:
        msg = "synthetic tasks belong to the synthetic study: give tasks=False with another study"
        raise ValueError(msg)
    out.mkdir(parents=True, exist_ok=True)
    study = synth_study(recipient) if study is None else study
    study_id = study.id
    receipt = receipt_of(study)
    policy = Policy.from_study(study)
    age_recipients = [bundle.parse_recipient(r) for r in study.recipients]
    from pyrage import encrypt

    written: list[SynthBundle] = []
    seen: set[str] = set()
    for v in range(volunteers):
        identity = volunteer_identity(seed, v)
        pseudonym = signing.volunteer_id(identity, study_id)
        key = base64.b64encode(signing.public_signing_key(identity, study_id)).decode("ascii")
        for s in range(sessions):
            g = v * sessions + s
            kind = variant(g, frames=frames, tasks=tasks, elements=elements)
            rng = random.Random(f"optin synth {seed} {v} {s}")  # noqa: S311 - test data, not secrets
            session_id, events = session_events(g, rng, receipt, kind, steps)
            if session_id in seen:  # the clock part grows with g: only a broken generator repeats
                msg = f"session id {session_id} made twice"
                raise RuntimeError(msg)
            seen.add(session_id)
            prepared = prepare(session_id, events, policy, receipt)
            if len(prepared.steps) != steps:
                msg = f"session {session_id} has {len(prepared.steps)} steps, not the {steps} meant"
                raise RuntimeError(msg)
            sealed = encrypt(bundle.build_tar(prepared, identity, study_id), age_recipients)
            path = out / f"{session_id}.optin.tar.age"
            write_private_file(path, sealed, durable=False)
            written.append(
                SynthBundle(
                    path=path,
                    session=session_id,
                    volunteer=pseudonym,
                    sha256=hashlib.sha256(sealed).hexdigest(),
                    steps=len(prepared.steps),
                    signing_key=key,
                    size=len(sealed),
                    volunteer_index=v,
                    variant=kind,
                    identity=identity,
                )
            )
    return written


def prepare(
    session_id: str, events: Sequence[Event], policy: Policy, receipt: dict[str, Any]
) -> bundle.Prepared:
    """What :func:`agent.export.bundle.prepare` makes of a stored session (without the store)."""
    redaction = redact_session(events, policy, ocr=None)
    kept = bundle.task_records_kept(sorted(redaction.events, key=lambda e: e.t_ns), session_id)
    return bundle.Prepared(session_id, kept, find_steps(kept), redaction, receipt, [])


# --- one session's events ---------------------------------------------------------------------------


#: Background and foreground colours of the four frames.
_PALETTE = (
    ((245, 245, 245), (30, 90, 200)),
    ((255, 255, 255), (20, 20, 20)),
    ((40, 44, 52), (200, 200, 80)),
    ((230, 240, 230), (180, 40, 40)),
)


@functools.cache
def frame_images() -> tuple[bytes, ...]:
    """Four distinct 64 x 40 WebP frames (encoded once per process)."""
    from PIL import Image, ImageDraw

    images = []
    for n, (bg, fg) in enumerate(_PALETTE):
        image = Image.new("RGB", (WIDTH, HEIGHT), bg)
        draw = ImageDraw.Draw(image)
        draw.rectangle((4 + 6 * n, 6, 40 + 4 * n, 18), outline=fg)
        draw.line((2, 30, 60 - 8 * n, 30), fill=fg)
        images.append(encode_image(image))
    return tuple(images)


def session_id_of(wall_ns: int, rng: random.Random) -> str:
    """optin's session id form: the UTC start to the second, ``-``, 8 lower-case hex digits."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(wall_ns // S))
    return f"{stamp}-{rng.getrandbits(32):08x}"


class _Events:
    """A session's events as the recorder stores them, built forward in time from ``t``."""

    def __init__(self, t: int, rng: random.Random, kind: Variant) -> None:
        self.events: list[Event] = []
        self.t = t
        self.rng = rng
        self.kind = kind
        self.frames = 0

    def add(self, *events: Event) -> None:
        self.events.extend(events)

    def gap(self, lo_ms: int, hi_ms: int) -> None:
        self.t += self.rng.randint(lo_ms, hi_ms) * MS

    def frame(self, t: int, reason: str) -> None:
        data = frame_images()[self.frames % len(frame_images())]
        self.frames += 1
        self.add(Frame(t, 0, 0, WIDTH, HEIGHT, FRAME_FORMAT, reason, data))

    def point(self) -> tuple[int, int]:
        return self.rng.randint(4, WIDTH - 5), self.rng.randint(4, HEIGHT - 5)


#: The pre-action frame's ``reason`` for each action.
_REASON = {"drag": "click", "right_click": "click", "double_click": "click", "type": "key"}


def session_events(
    g: int, rng: random.Random, receipt: dict[str, Any], kind: Variant, count: int
) -> tuple[str, list[Event]]:
    """The ``g``-th session's id and stored events: ``count`` actions of :data:`CYCLE`, in order."""
    wall_ns = (WALL0_S + 600 * g + rng.randint(0, 299)) * S + rng.randrange(S)
    session_id = session_id_of(wall_ns, rng)
    mono0 = rng.randrange(10**12, 10**13)
    ev = _Events(mono0, rng, kind)
    start: dict[str, Any] = {
        "mono_ns": mono0,
        "wall_ns": wall_ns,
        "study_id": receipt["study_id"],
        "consent_version": receipt["consent_version"],
        "consent_sha256": receipt["text_sha256"],
        "scopes": list(receipt["scopes"]),
        "backend": "xorg",
    }
    if kind.elements:
        start = {"elements": "atspi", **start}
    if kind.task is not None:
        start["after"] = "task"
    ev.add(Marker(ev.t, "session_start", start))
    ev.add(
        Marker(ev.t, "screen_layout", {"virtual": [0, 0, WIDTH, HEIGHT], "monitors": [[0, 0, WIDTH, HEIGHT]]})
    )
    task_id = _task_start(ev)
    ev.gap(100, 300)
    ev.add(WindowFocus(ev.t, "Staff portal — Mozilla Firefox", "firefox", 4242, 0, 0, WIDTH, HEIGHT))
    if kind.first_step_frame:
        ev.gap(50, 100)
        ev.frame(ev.t, "start")
    for n in range(count):
        action = CYCLE[n % len(CYCLE)]
        if n == count // 2 and n > 0 and kind.pause:
            ev.gap(200, 400)
            ev.add(Marker(ev.t, "pause", {"reason": "volunteer", "stop_ms": 1.5}))
            ev.gap(3000, 9000)
            ev.add(Marker(ev.t, "resume", {"after": "volunteer"}))
        if action == "type":  # the mail window: its title holds an address (exported as [EMAIL])
            ev.gap(200, 400)
            address = f"{rng.choice(['ada', 'bob', 'carol', 'dan'])}.{rng.randrange(10**4)}@example.com"
            ev.add(
                WindowFocus(
                    ev.t, f"Inbox — {address} — Mozilla Thunderbird", "thunderbird", 4343, 0, 0, WIDTH, HEIGHT
                )
            )
        elif action == "drag" and n > 0:
            ev.gap(200, 400)
            ev.add(WindowFocus(ev.t, "Files — Documents", "nautilus", 4444, 0, 0, WIDTH, HEIGHT))
        ev.gap(400, 900)
        if kind.frames and (n > 0 or kind.first_step_frame):
            ev.frame(ev.t - rng.randint(20, 60) * MS, _REASON.get(action, action))
        _ACTIONS[action](ev)
        if task_id is not None and n == max(0, count - 2):
            ev.gap(300, 600)
            ev.add(TaskEnd(ev.t, task_id, "done" if kind.task == "study" else "failed"))
        if kind.settled_frame and n == 0:
            ev.gap(150, 300)
            ev.frame(ev.t, "settled")
    ev.gap(500, 1500)
    stop = {"events": 0, "frame_failures": 0, "frames_skipped": 0, "pastes_lost": 0}
    if kind.elements:
        stop["element_lookups"] = 0
    ev.add(Marker(ev.t, "session_stop", {"loss": stop}))
    return session_id, ev.events


def _task_start(ev: _Events) -> str | None:
    """The session's task, right after its start (the recorder opens a session per task)."""
    if ev.kind.task is None:
        return None
    ev.gap(1, 5)
    if ev.kind.task == "study":
        ev.add(TaskStart(ev.t, STUDY_TASK_ID, STUDY_TASK_INSTRUCTION, "study", 600))
        return STUDY_TASK_ID
    task_id = f"free-{ev.rng.getrandbits(32):08x}"
    words = f"mail erin.{ev.rng.randrange(10**4)}@example.org the booking number"  # redacted: [EMAIL]
    ev.add(TaskStart(ev.t, task_id, words, "volunteer", None))
    return task_id


def _click(ev: _Events, button: str = "left", *, twice: bool = False) -> None:
    x, y = ev.point()
    press = ev.t
    ev.add(ButtonPress(press, x, y, button))
    ev.t += 80 * MS
    ev.add(ButtonRelease(ev.t, x, y, button))
    if ev.kind.elements:  # answered after the release, with the press's time
        ev.add(ElementSeen(press, "point", "found", _FIELD))
    if twice:
        ev.t += 120 * MS
        ev.add(ButtonPress(ev.t, x, y, button))
        ev.t += 80 * MS
        ev.add(ButtonRelease(ev.t, x, y, button))


def _type(ev: _Events) -> None:
    text = f"to:{ev.rng.choice(['ada', 'bob', 'carol'])}.{ev.rng.randrange(10**4)}@example.com"
    for n, ch in enumerate(text):
        if n:
            ev.t += ev.rng.randint(60, 140) * MS
        first = ev.t
        ev.add(KeyPress(ev.t, ch, None, ord(ch), ()))
        ev.add(KeyRelease(ev.t + 40 * MS, ch, None, ord(ch), ()))
        if n == 0 and ev.kind.elements:
            ev.add(ElementSeen(first, "focus", "found", _FOCUSED))
    ev.t += 40 * MS


def _key(ev: _Events) -> None:
    ev.add(KeyPress(ev.t, None, "enter", 65293, ()))
    ev.t += 50 * MS
    ev.add(KeyRelease(ev.t, None, "enter", 65293, ()))


def _drag(ev: _Events) -> None:
    x0, y0 = ev.rng.randint(2, 20), ev.rng.randint(2, 15)
    x1, y1 = x0 + ev.rng.randint(20, 40), y0 + ev.rng.randint(12, 22)
    ev.add(ButtonPress(ev.t, x0, y0, "left"))
    for k in (1, 2, 3):
        ev.t += 50 * MS
        ev.add(PointerMove(ev.t, x0 + (x1 - x0) * k // 3, y0 + (y1 - y0) * k // 3))
    ev.t += 50 * MS
    ev.add(ButtonRelease(ev.t, x1, y1, "left"))


def _scroll(ev: _Events) -> None:
    x, y = ev.point()
    first = ev.t
    for k in range(3):
        if k:
            ev.t += 100 * MS
        ev.add(Scroll(ev.t, x, y, 0, -1))
    if ev.kind.elements:
        ev.add(ElementSeen(first, "point", "no_element", None))


def _hotkey(ev: _Events) -> None:
    ev.add(KeyPress(ev.t, None, "ctrl_l", 65507, ()))
    ev.t += 100 * MS
    ev.add(KeyPress(ev.t, "c", None, 99, ("ctrl",)))
    ev.t += 50 * MS
    ev.add(KeyRelease(ev.t, "c", None, 99, ("ctrl",)))
    ev.t += 50 * MS
    ev.add(KeyRelease(ev.t, None, "ctrl_l", 65507, ()))  # as the hooks record it: after the release


def _with_shift(ev: _Events, action: Callable[[], None]) -> None:
    """``action`` with shift held (shift+right-click: a pointer step whose ``keys`` are ["shift"],
    which pyautogui code cannot write: its sample's ``norm.code`` is null, its task not mappable)."""
    ev.add(KeyPress(ev.t, None, "shift_l", 65505, ()))
    ev.t += 80 * MS
    action()
    ev.t += 60 * MS
    ev.add(KeyRelease(ev.t, None, "shift_l", 65505, ()))


_ACTIONS: dict[str, Callable[[_Events], None]] = {
    "click": _click,
    "type": _type,
    "key": _key,
    "drag": _drag,
    "scroll": _scroll,
    "hotkey": _hotkey,
    "right_click": lambda ev: _with_shift(ev, lambda: _click(ev, "right")),
    "double_click": lambda ev: _click(ev, twice=True),
}
