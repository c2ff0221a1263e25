"""A checked bundle's steps as uniform dataset samples (docs/dataset.md, "WebDataset shards").

Pure: no I/O, no image decoding.  Typed text, titles, names and pixels are captured content:
nothing here logs them or puts them into an exception message.

:func:`samples` takes what ``optin inspect``'s checks (agent/export/bundle_checks.py) handed
over for one bundle, parsed: the manifest, the step members in order, the task list, the
``frames.jsonl`` rows, the markers of ``events.jsonl`` and each frame's image bytes, and
gives one :class:`Sample` per step: its key ``<session-id>_<NNNNNN>``, its JSON (every key
of "The sample JSON" always present, canonical JSON) and its image member (the frame's WebP
byte for byte, or :data:`PLACEHOLDER`).  It checks again what it relies on and refuses the
bundle with :class:`SampleRefused`, whose ``reason`` is a code of "Reason codes"
(``session_id_unsupported``, ``image_invalid``, ...): a session id the dataset cannot key,
an image whose header is not its frame's, a coordinate outside 32 bits, a text over
:data:`MAX_TEXT_CHARS`.
"""

from __future__ import annotations

import re
import struct
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from agent.canonical_json import canonical
from agent.dataset.pyautogui_code import code as pyautogui_code
from agent.errors import ExportError
from agent.export.counts import element_problem, is_integer
from agent.export.reasons import REASONS
from agent.steps import ACTIONS
from agent.untrusted_text import visible

#: The ``schema`` of every sample JSON.
SAMPLE_SCHEMA = "optin-sample/1"
#: Bundle schemas a sample can be made from; ``optin-bundle/1`` ids are not bound to their key.
BUNDLE_SCHEMAS = ("optin-bundle/1", "optin-bundle/2", "optin-bundle/3")
#: Session ids the dataset keys (Decision 7): no ``.``, at most 80 characters.
SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,79}")
#: A sample key: the session id, ``_``, the step number in 6 digits.
SAMPLE_KEY = re.compile(r"([A-Za-z0-9][A-Za-z0-9_-]{0,79})_([0-9]{6})")
#: A pseudonym (``volunteer.id``).
PSEUDONYM = re.compile(r"[0-9a-f]{32}")
#: At most this many steps (the bundle grammar's 6 digits).
MAX_STEPS = 1_000_000
#: A ``type`` step's text longer than this is refused (``step_invalid``): a sample stays a
#: bounded record (its code repeats the text escaped).
MAX_TEXT_CHARS = 1_000_000
#: At most this many keys in a step, each at most this long.
MAX_KEYS = 16
MAX_KEY_CHARS = 64
#: A sample JSON larger than this is refused (``step_invalid``).
MAX_SAMPLE_JSON = 16 * 1024 * 1024
#: Pixel coordinates and frame geometry are 32-bit (the ``steps`` table's int32 columns).
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
#: Markers after which the history before a step is not continuous (``after_gap``).
GAP_MARKERS = frozenset({"pause", "deny", "cut", "secure_input"})
#: A ``png`` frame is decoded (to be re-encoded as WebP) only up to this many pixels (8K UHD fits),
#: and no side over WebP's limit: memory and time bounded, whatever a hostile header says.
MAX_PNG_PIXELS = 1 << 25
MAX_WEBP_SIDE = 16_383
#: The placeholder image of a step without a frame: a 1 x 1 lossless WebP of grey (128, 128, 128).
PLACEHOLDER = bytes.fromhex("5249464616000000574542505650384c0a0000002f00000000450123fa1f")
#: Its SHA-256 (docs/dataset.md, Images).
PLACEHOLDER_SHA256 = "e00c0ecd17536039354810dee10ec1574ab5ca6e1ef052e429358caf93198244"

#: Each reason code this module raises, with its stage (docs/dataset.md, "Reason codes";
#: the stages are agent/export/reasons.py's).
STAGES = {
    reason: REASONS[reason]
    for reason in (
        "session_id_unsupported",
        "image_invalid",
        "internal_error",
        "member_missing",
        "schema_unknown",
        "manifest_types",
        "step_invalid",
        "stream_invalid",
        "tasks_invalid",
        "elements_invalid",
    )
}

_RAW_INTS = ("x", "y", "to_x", "to_y", "dx", "dy")
_WINDOW_KEYS = frozenset({"title", "app_class", "x", "y", "width", "height"})
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: Re-encodes a ``png`` frame (bytes, width, height) as lossless WebP; the caller's (Pillow).
Transcoder = Callable[[bytes | memoryview, int, int], bytes]


class SampleRefused(ExportError):
    """The bundle cannot be made into samples; ``reason`` and ``stage`` are its quarantine codes.

    The message names the step, member or field and the rule, never captured content.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message, reason=reason, stage=STAGES[reason])

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled with its reason (a build's worker process hands it to the driver)."""
        return (type(self), (self.reason, str(self)), self.__dict__)


def _refuse(reason: str, message: str) -> NoReturn:
    raise SampleRefused(reason, message)


@dataclass(frozen=True)
class Sample:
    """One step as a dataset sample: the shard members ``<key>.json`` and ``<key>.webp``.

    :ivar doc: the sample JSON as a dict (``json`` is its canonical JSON).
    :ivar image: the ``.webp`` member: the frame's bytes as the bundle has them, or :data:`PLACEHOLDER`.
    """

    key: str
    step: int
    doc: dict[str, Any]
    json: bytes
    image: bytes | memoryview
    has_image: bool


def sample_key(session: str, step: int) -> str:
    """``<session-id>_<NNNNNN>``.

    :raises SampleRefused: ``session_id_unsupported`` for a session id outside
        ``[A-Za-z0-9][A-Za-z0-9_-]{0,79}``; ``step_invalid`` for a step outside 0–999,999.
    """
    check_session_id(session)
    if not (is_integer(step) and 0 <= step < MAX_STEPS):
        _refuse("step_invalid", f"step number {step!r} is not from 0 to {MAX_STEPS - 1:,}")
    return f"{session}_{step:06d}"


def parse_key(key: str) -> tuple[str, int]:
    """(session id, step number) of a sample key, parsed from the end.

    :raises ValueError: it is not a sample key.
    """
    m = SAMPLE_KEY.fullmatch(key) if isinstance(key, str) else None
    if m is None:
        msg = f"{visible(str(key), limit=120)!r} is not a sample key (<session-id>_<6 digits>)"
        raise ValueError(msg)
    return m[1], int(m[2])


def check_session_id(session: Any) -> str:
    """``session`` if the dataset can key it (docs/dataset.md, Sample keys).

    :raises SampleRefused: ``session_id_unsupported``.
    """
    if not (isinstance(session, str) and SESSION_ID.fullmatch(session)):
        shown = visible(session, limit=120) if isinstance(session, str) else type(session).__name__
        _refuse(
            "session_id_unsupported",
            f"session id {shown!r} is not 1 to 80 of A-Z a-z 0-9 _ - starting with a letter or digit, "
            "so it cannot be a sample key; optin's own ids always are (the bundle stays quarantined)",
        )
    return session


# --- images ------------------------------------------------------------------------------------


def webp_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """(width, height) from a WebP file's header, or None when it is not a whole RIFF WebP file.

    Checks: ``RIFF``, a RIFF size of the data's length - 8, ``WEBP``, then a ``VP8L``, ``VP8 ``
    or ``VP8X`` chunk whose header holds the size (no pixel is decoded).
    """
    head = bytes(data[:30])
    if len(head) < 30 or head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        return None
    if struct.unpack_from("<I", head, 4)[0] != len(data) - 8:
        return None
    chunk = head[12:16]
    size: tuple[int, int] | None = None
    if chunk == b"VP8L" and head[20] == 0x2F:
        bits = struct.unpack_from("<I", head, 21)[0]
        size = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    elif chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack_from("<HH", head, 26)
        size = w & 0x3FFF, h & 0x3FFF
    elif chunk == b"VP8X":
        size = int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    return size


def png_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """(width, height) from a PNG's signature and ``IHDR`` chunk, or None when it has neither."""
    head = bytes(data[:24])
    if len(head) < 24 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    w, h = struct.unpack_from(">II", head, 16)
    return w, h


def _image(
    frame_row: Mapping[str, Any],
    line: int,
    images: Mapping[int, bytes | memoryview],
    transcode: Transcoder | None,
) -> tuple[bytes | memoryview, str | None]:
    """The ``.webp`` member of a step whose frame is ``frames.jsonl`` line ``line``; ``transcoded_from``."""
    data = images.get(line)
    if data is None:
        _refuse("member_missing", f"frames.jsonl line {line + 1} is a step's frame but no image was given")
    want = (frame_row["width"], frame_row["height"])
    fmt = frame_row["format"]
    if fmt == "webp":
        got = webp_size(data)
        if got != want:
            said = "nothing" if got is None else f"{got[0]} x {got[1]}"
            _refuse(
                "image_invalid",
                f"the image of frames.jsonl line {line + 1} is not a whole WebP file of "
                f"{want[0]} x {want[1]} pixels (its header says {said})",
            )
        return data, None
    got = png_size(data)
    if got != want:
        _refuse(
            "image_invalid",
            f"the image of frames.jsonl line {line + 1} is not a PNG of {want[0]} x {want[1]} pixels",
        )
    if want[0] * want[1] > MAX_PNG_PIXELS or max(want) > MAX_WEBP_SIDE:
        _refuse(
            "image_invalid",
            f"the png frame of frames.jsonl line {line + 1} is {want[0]} x {want[1]} pixels: over the "
            f"{MAX_PNG_PIXELS:,} pixels (or {MAX_WEBP_SIDE:,} a side) the dataset decodes",
        )
    if transcode is None:
        _refuse("internal_error", "a png frame needs a transcoder to WebP, and none was given")
    webp = transcode(data, want[0], want[1])
    if webp_size(webp) != want:
        _refuse("internal_error", f"the WebP made of frames.jsonl line {line + 1} is not its size")
    return webp, "png"


# --- the sample --------------------------------------------------------------------------------


def _int32(value: Any) -> bool:
    return is_integer(value) and INT32_MIN <= value <= INT32_MAX


def _frame(rows: Sequence[Mapping[str, Any]], line: Any, where: str) -> Mapping[str, Any]:
    if not (is_integer(line) and 0 <= line < len(rows)):
        _refuse("step_invalid", f"{where} names frame {line!r}, which is no frames.jsonl line")
    row = rows[line]
    ok = (
        isinstance(row, Mapping)
        and is_integer(row.get("t_ns"))
        and _int32(row.get("left"))
        and _int32(row.get("top"))
        and _int32(row.get("width"))
        and _int32(row.get("height"))
        and row["width"] >= 1
        and row["height"] >= 1
        and row.get("format") in ("webp", "png")
        and isinstance(row.get("reason"), str)
    )
    if not ok:
        _refuse(
            "stream_invalid",
            f"frames.jsonl line {line + 1} has no t_ns, 32-bit left and top, width and height of at least 1, "
            "format webp or png, and reason",
        )
    return row


def _raw(step: Mapping[str, Any], where: str) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for name in _RAW_INTS:
        value = step.get(name)
        if value is not None and not _int32(value):
            _refuse("step_invalid", f"{where}'s {name} is not a 32-bit integer or null")
        raw[name] = value
    button = step.get("button")
    if button is not None and not (isinstance(button, str) and 0 < len(button) <= MAX_KEY_CHARS):
        _refuse("step_invalid", f"{where}'s button is not a short string or null")
    raw["button"] = button
    text = step.get("text")
    if text is not None and not isinstance(text, str):
        _refuse("step_invalid", f"{where}'s text is not a string or null")
    if text is not None and len(text) > MAX_TEXT_CHARS:
        _refuse(
            "step_invalid",
            f"{where}'s text is {len(text):,} characters, over the {MAX_TEXT_CHARS:,} a sample holds",
        )
    raw["text"] = text
    keys = step.get("keys", [])
    if keys is None:
        keys = []
    if not (
        isinstance(keys, list)
        and len(keys) <= MAX_KEYS
        and all(isinstance(k, str) and 0 < len(k) <= MAX_KEY_CHARS for k in keys)
    ):
        _refuse(
            "step_invalid",
            f"{where}'s keys are not a list of at most {MAX_KEYS} names of 1 to {MAX_KEY_CHARS} characters",
        )
    raw["keys"] = list(keys)
    return raw


def _window(window: Any, where: str) -> dict[str, Any] | None:
    if window is None:
        return None
    ok = (
        isinstance(window, Mapping)
        and set(window) == _WINDOW_KEYS
        and all(window[k] is None or isinstance(window[k], str) for k in ("title", "app_class"))
        and all(window[k] is None or _int32(window[k]) for k in ("x", "y", "width", "height"))
    )
    if not ok:
        _refuse(
            "step_invalid",
            f"{where}'s window is not null or exactly title, app_class (strings), x, y, width, height",
        )
    return dict(window)


def _tasks_by_id(tasks: Sequence[Mapping[str, Any]] | None) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for n, task in enumerate(tasks or ()):
        steps = task.get("steps") if isinstance(task, Mapping) else None
        span = steps.get("range") if isinstance(steps, Mapping) else None
        ok = (
            isinstance(task, Mapping)
            and isinstance(task.get("id"), str)
            and task.get("source") in ("study", "volunteer")
            and (task.get("instruction") is None or isinstance(task.get("instruction"), str))
            and isinstance(task.get("outcome"), str)
            and (task.get("time_limit_s") is None or is_integer(task.get("time_limit_s")))
            and (
                span is None
                or (isinstance(span, list) and len(span) == 2 and all(is_integer(v) for v in span))
            )
        )
        if not ok or task["id"] in out:
            _refuse("tasks_invalid", f"task {n + 1} of the task list is not a task object with a unique id")
        out[task["id"]] = task
    return out


def _task(step: Mapping[str, Any], number: int, tasks: Mapping[str, Mapping[str, Any]], where: str) -> Any:
    task_id = step.get("task")
    if task_id is None:
        return None
    task = tasks.get(task_id) if isinstance(task_id, str) else None
    span = task["steps"]["range"] if task is not None else None
    if task is None or span is None or not span[0] <= number <= span[1]:
        _refuse("tasks_invalid", f"{where} names a task whose step range does not hold it")
    return {
        "id": task["id"],
        "index": number - span[0],
        "instruction": task["instruction"],
        "outcome": task["outcome"],
        "source": task["source"],
        "time_limit_s": task["time_limit_s"],
    }


def _manifest(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The sample fields every step of the bundle shares."""
    schema = manifest.get("schema") if isinstance(manifest, Mapping) else None
    if schema not in BUNDLE_SCHEMAS:
        _refuse("schema_unknown", f"the manifest's schema is not one of {', '.join(BUNDLE_SCHEMAS)}")
    session = check_session_id(manifest.get("session"))
    volunteer = manifest.get("volunteer")
    consent = manifest.get("consent")
    pseudonym = volunteer.get("id") if isinstance(volunteer, Mapping) else None
    study = consent.get("study_id") if isinstance(consent, Mapping) else None
    version = consent.get("consent_version") if isinstance(consent, Mapping) else None
    agent_version = manifest.get("agent_version")
    if not (
        isinstance(pseudonym, str)
        and PSEUDONYM.fullmatch(pseudonym)
        and isinstance(study, str)
        and isinstance(version, str)
        and isinstance(agent_version, str)
    ):
        _refuse(
            "manifest_types",
            "the manifest lacks volunteer.id (32 hex), consent.study_id, consent.consent_version "
            "or agent_version (strings)",
        )
    return {
        "agent_version": agent_version,
        "bundle_schema": schema,
        "consent_version": version,
        "schema": SAMPLE_SCHEMA,
        "session": session,
        "study": study,
        "volunteer": pseudonym,
        "volunteer_verified": schema != "optin-bundle/1",
    }


def _clock(events: Iterable[Mapping[str, Any]]) -> tuple[tuple[int, int] | None, list[int]]:
    """The first ``session_start`` marker's (mono_ns, wall_ns), and the times of gap markers, sorted."""
    anchor: tuple[int, int] | None = None
    started = False
    gaps: list[int] = []
    for ev in events:
        if not isinstance(ev, Mapping) or ev.get("k") != "marker":
            continue
        name = ev.get("marker")
        if name == "session_start" and not started:
            started = True
            detail = ev.get("detail")
            mono = detail.get("mono_ns") if isinstance(detail, Mapping) else None
            wall = detail.get("wall_ns") if isinstance(detail, Mapping) else None
            if is_integer(mono) and is_integer(wall):
                anchor = (mono, wall)
        elif name in GAP_MARKERS and is_integer(ev.get("t_ns")):
            gaps.append(ev["t_ns"])
    gaps.sort()
    return anchor, gaps


def _utc(anchor: tuple[int, int] | None, t_ns: int, where: str) -> int | None:
    if anchor is None:
        return None
    utc = anchor[1] + (t_ns - anchor[0])
    if not is_integer(utc):
        _refuse("stream_invalid", f"{where}'s UTC time is outside 64 bits (session_start's clocks)")
    return utc


def _norm(action: str, raw: Mapping[str, Any], frame: Mapping[str, Any] | None) -> dict[str, Any]:
    def fraction(value: int | None, origin: str, size: str) -> float | None:
        if value is None or frame is None:
            return None
        origin_px: int = frame[origin]
        size_px: int = frame[size]
        return (value - origin_px) / size_px

    x, y = fraction(raw["x"], "left", "width"), fraction(raw["y"], "top", "height")
    to_x, to_y = fraction(raw["to_x"], "left", "width"), fraction(raw["to_y"], "top", "height")
    norm: dict[str, Any] = {"x": x, "y": y, "to_x": to_x, "to_y": to_y}
    pointer = action not in ("type", "hotkey", "key")
    norm["code"] = (
        None
        if pointer and frame is None
        else pyautogui_code(
            action,
            x=x,
            y=y,
            to_x=to_x,
            to_y=to_y,
            button=raw["button"],
            dx=raw["dx"],
            dy=raw["dy"],
            text=raw["text"],
            keys=raw["keys"],
        )
    )
    return norm


def samples(
    manifest: Mapping[str, Any],
    steps: Sequence[Mapping[str, Any]],
    *,
    tasks: Sequence[Mapping[str, Any]] | None,
    frames: Sequence[Mapping[str, Any]],
    events: Iterable[Mapping[str, Any]],
    images: Mapping[int, bytes | memoryview],
    transcode: Transcoder | None = None,
) -> Iterator[Sample]:
    """One :class:`Sample` per step of a checked bundle, in step order.

    :param manifest: ``manifest.json``, parsed.
    :param steps: the step members ``000000.json``, ``000001.json``, ..., parsed, in order.
    :param tasks: the manifest's ``tasks`` (``optin-bundle/3``), or None (``/1``, ``/2``: every
        ``task`` and ``element`` null).
    :param frames: the ``frames.jsonl`` rows, parsed (a step's ``frame`` indexes them).
    :param events: the ``events.jsonl`` rows, parsed, in order (only markers are read: the first
        ``session_start`` for UTC times, ``pause``, ``deny``, ``cut``, ``secure_input`` for gaps).
    :param images: each frame's image bytes by ``frames.jsonl`` line (at least every step's frame).
    :param transcode: re-encodes a ``png`` frame as lossless WebP (only needed when one is used).
    :raises SampleRefused: before the first sample for the manifest, the session id, the task list
        and the step count; later for a step, frame or image that breaks a rule.
    """
    shared = _manifest(manifest)
    v3 = shared["bundle_schema"] == "optin-bundle/3"
    by_id = _tasks_by_id(tasks if v3 else None)
    if len(steps) > MAX_STEPS:
        _refuse("step_invalid", f"the bundle has {len(steps):,} steps, over {MAX_STEPS:,}")
    anchor, gaps = _clock(events)
    return _each(shared, steps, by_id, v3, frames, anchor, gaps, images, transcode)


def _each(  # noqa: PLR0917 - the parts samples() checked, passed on once
    shared: dict[str, Any],
    steps: Sequence[Mapping[str, Any]],
    tasks: Mapping[str, Mapping[str, Any]],
    v3: bool,
    frames: Sequence[Mapping[str, Any]],
    anchor: tuple[int, int] | None,
    gaps: list[int],
    images: Mapping[int, bytes | memoryview],
    transcode: Transcoder | None,
) -> Iterator[Sample]:
    previous_end: int | None = None
    session = shared["session"]
    for number, step in enumerate(steps):
        where = f"step {number:06d}"
        if not isinstance(step, Mapping) or step.get("action") not in ACTIONS:
            _refuse("step_invalid", f"{where} is not a step object with one of the nine actions")
        start, end = step.get("t_start_ns"), step.get("t_end_ns")
        if not (is_integer(start) and is_integer(end) and 0 <= start <= end):
            _refuse("step_invalid", f"{where} has no 64-bit t_start_ns <= t_end_ns")
        action: str = step["action"]
        raw = _raw(step, where)
        line = step.get("frame")
        frame_row = None if line is None else _frame(frames, line, where)
        image: bytes | memoryview = PLACEHOLDER
        if frame_row is None or line is None:
            frame, has_image = None, False
        else:
            image, transcoded = _image(frame_row, line, images, transcode)
            has_image = True
            frame = {
                "height": frame_row["height"],
                "left": frame_row["left"],
                "line": line,
                "reason": frame_row["reason"],
                "t_ns": frame_row["t_ns"],
                "top": frame_row["top"],
                "transcoded_from": transcoded,
                "width": frame_row["width"],
            }
        element = step.get("element") if v3 else None
        if element is not None and element_problem(element) is not None:
            _refuse("elements_invalid", f"{where}'s element is not an element object")
        lo = bisect_left(gaps, previous_end) if previous_end is not None else 0
        after_gap = lo < len(gaps) and gaps[lo] <= start
        previous_end = end
        key = sample_key(session, number)
        doc = {
            **shared,
            "action": action,
            "after_gap": after_gap,
            "element": element,
            "frame": frame,
            "has_image": has_image,
            "key": key,
            "norm": _norm(action, raw, frame),
            "raw": raw,
            "step": number,
            "t_end_ns": end,
            "t_start_ns": start,
            "task": _task(step, number, tasks, where) if v3 else None,
            "utc_end_ns": _utc(anchor, end, where),
            "utc_start_ns": _utc(anchor, start, where),
            "window": _window(step.get("window"), where),
        }
        try:
            blob = canonical(doc)
        except UnicodeEncodeError:  # a lone surrogate ("\ud800") that JSON allows and UTF-8 does not
            _refuse("step_invalid", f"{where} holds text that is not Unicode (a lone surrogate)")
        if len(blob) > MAX_SAMPLE_JSON:
            _refuse("step_invalid", f"{where}'s sample JSON is {len(blob):,} bytes, over {MAX_SAMPLE_JSON:,}")
        yield Sample(key=key, step=number, doc=doc, json=blob, image=image, has_image=has_image)


__all__ = [
    "BUNDLE_SCHEMAS",
    "GAP_MARKERS",
    "MAX_PNG_PIXELS",
    "MAX_SAMPLE_JSON",
    "MAX_STEPS",
    "MAX_TEXT_CHARS",
    "MAX_WEBP_SIDE",
    "PLACEHOLDER",
    "PLACEHOLDER_SHA256",
    "SAMPLE_KEY",
    "SAMPLE_SCHEMA",
    "SESSION_ID",
    "STAGES",
    "Sample",
    "SampleRefused",
    "Transcoder",
    "check_session_id",
    "parse_key",
    "png_size",
    "sample_key",
    "samples",
    "webp_size",
]
