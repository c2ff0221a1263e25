"""What a bundle's manifest states, recomputed from its members (the collector's side).

docs/export-format.md, "What a reader recomputes": the manifest is the volunteer's agent's
signed statement about the members, and a signature says only that nobody changed it since.
:class:`Recount` recomputes every count and summary the members determine — steps, event
counts, duration, loss, typed redactions — with the writer's own functions
(agent/export/counts.py), checks that what steps and frames point at exists, and refuses the
bundle at the first difference.  It also holds the reader's strict JSON and the way messages
show untrusted values (:func:`shown`), shared with agent/export/inspect.py.

Memory: one line of ``events.jsonl`` or ``frames.jsonl`` is parsed at a time; what is kept is
counters, the markers, and one member name per frame.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from agent.export import counts
from agent.untrusted_text import visible

EVENTS = "events.jsonl"
FRAMES = "frames.jsonl"
#: Characters of untrusted text a message or the summary shows.
SHOWN = 80
#: docs/export-format.md's member grammar (names below ``<session-id>/``).
MEMBER = re.compile(
    r"manifest\.json|manifest\.sig|events\.jsonl|frames\.jsonl|(frames/)?[0-9]{6}\.(json|webp|png)"
)
STEP = re.compile(r"([0-9]{6})\.json")
IMAGE = re.compile(r"(frames/)?([0-9]{6})\.(webp|png)")
_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")  # an action or an event kind

Refuse = Callable[[str], NoReturn]


def shown(value: Any, limit: int = SHOWN) -> str:
    """Untrusted text (a name, a manifest value) as a message shows it: quoted, visible, cut short."""
    return "'" + visible(value if isinstance(value, str) else repr(value), limit=limit) + "'"


def canonical(value: Any) -> bytes:
    """Canonical JSON (docs/export-format.md, Conventions): what "equal" compares."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def json_shown(value: Any) -> str:
    """A JSON value from the bundle as a message shows it: canonical, visible, cut short."""
    return visible(canonical(value).decode("utf-8", "replace"), limit=2 * SHOWN)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        msg = "duplicate key"
        raise ValueError(msg)
    return dict(pairs)


def _no_constant(name: str) -> Any:
    msg = f"{name} is not JSON"
    raise ValueError(msg)


def json_object(blob: bytes) -> dict[str, Any] | None:
    """``blob`` parsed as a JSON object — UTF-8, no duplicate keys, no NaN or Infinity — or None."""
    try:
        value = json.loads(
            blob.decode("utf-8"), object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant
        )
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    return value if isinstance(value, dict) else None


#: Seconds the manifest rounds to milliseconds: a stated value may differ by this much.
_SECONDS_SLACK = 0.001
_SECONDS = ("paused_s", "cut_s")
#: Times are monotonic nanoseconds: signed 64-bit, and never negative in a bundle.
_INT64 = 1 << 63


class Recount:
    """docs/export-format.md, "What a reader recomputes": the manifest against the members."""

    def __init__(
        self, members: Mapping[str, bytes], listed: Mapping[str, tuple[str, int]], refuse: Refuse
    ) -> None:
        """:param listed: the manifest's ``members`` (name → SHA-256, size); ``refuse`` never returns."""
        self.members = members
        self.listed = listed
        self.refuse: Refuse = refuse
        self.kinds: Counter[str] = Counter()
        self.entities: Counter[str] = Counter()
        self.markers: list[dict[str, Any]] = []
        self.frame_members: list[str] = []
        self.low: int | None = None
        self.high: int | None = None
        self.lines = 0

    def check(self, manifest: dict[str, Any]) -> dict[str, int]:
        """Every recomputation; the steps by action (refusing the bundle at the first difference)."""
        events = self._lines(EVENTS, self._take_event)
        frames = self._lines(FRAMES, self._take_frame)
        by_action = self._steps(manifest, events, frames)
        self._frames_are_held(frames)
        recounted = Counter(self.kinds)
        recounted["frame"] += frames
        self._same("counts", manifest.get("counts"), counts.kind_counts(recounted.elements()))
        self._duration(manifest.get("duration_s"))
        self._loss(manifest)
        self._stated_types(manifest)
        return by_action

    def _stated_types(self, manifest: dict[str, Any]) -> None:
        """What the members cannot show is stated: it must at least be of the type the spec gives."""
        consent = manifest.get("consent")
        consent = consent if isinstance(consent, dict) else {}
        for field, value in (
            ("agent_version", manifest.get("agent_version")),
            ("consent.study_name", consent.get("study_name")),
            ("consent.consent_version", consent.get("consent_version")),
        ):
            if not isinstance(value, str):
                self.refuse(f"the manifest's {field} is not a string")

    def _same(self, field: str, stated: Any, recomputed: Any) -> None:
        if canonical(stated) != canonical(recomputed):
            given = json_shown(recomputed)
            self.refuse(f"the manifest's {field} is {json_shown(stated)} but the members give {given}")

    # -- events.jsonl and frames.jsonl

    def _lines(self, member: str, take: Callable[[int, dict[str, Any]], None]) -> int:
        """Parse each line of ``member`` with ``take(line number from 0, record)``; how many lines."""
        blob = self.members.get(member)
        if blob is None:
            self.refuse(f"it has no {member}")
        if blob and not blob.endswith(b"\n"):
            self.refuse(f"{member} does not end with a newline")
        count = 0
        previous: int | None = None
        for line in io.BytesIO(blob):  # one line in memory at a time
            count += 1
            record = json_object(line)
            version = record.get("v") if record is not None else None
            if record is None or not (_is_int(version) and version == 1):
                self.refuse(f"{member} line {count} is not a JSON object of version 1")
            kind, t_ns = record.get("k"), record.get("t_ns")
            if not (isinstance(kind, str) and _NAME.fullmatch(kind)):
                self.refuse(f"{member} line {count} has no kind")
            if not isinstance(t_ns, int) or isinstance(t_ns, bool) or not 0 <= t_ns < _INT64:
                self.refuse(f"{member} line {count} has no t_ns (an integer from 0 to 2^63 - 1)")
            if previous is not None and t_ns < previous:
                self.refuse(f"{member} line {count} is earlier than the line before (not in time order)")
            previous = t_ns
            self.lines += 1
            self.low = t_ns if self.low is None or t_ns < self.low else self.low
            self.high = t_ns if self.high is None or t_ns > self.high else self.high
            take(count - 1, record)
        return count

    def _take_event(self, number: int, record: dict[str, Any]) -> None:
        kind = record["k"]
        if kind == "frame":
            self.refuse(f"{EVENTS} line {number + 1} is a frame (frames are in {FRAMES})")
        self.kinds[kind] += 1
        if kind == "redacted":
            entity = record.get("entity")
            if not isinstance(entity, str):
                self.refuse(f"{EVENTS} line {number + 1} is a redacted record without an entity")
            self.entities[entity] += 1
        elif kind == "marker":
            self.markers.append(record)

    def _take_frame(self, number: int, record: dict[str, Any]) -> None:
        member = record.get("member")
        if record["k"] != "frame":
            self.refuse(f"{FRAMES} line {number + 1} is not a frame")
        if not (isinstance(member, str) and IMAGE.fullmatch(member) and member in self.members):
            self.refuse(f"{FRAMES} line {number + 1} names no image member of the bundle")
        self.frame_members.append(member)

    def _frames_are_held(self, frames: int) -> None:
        """Each ``frames/NNNNNN.<image>`` member is the one line NNNNNN names."""
        for name in self.members:
            if (m := IMAGE.fullmatch(name)) and m[1]:
                line = int(m[2])
                if line >= frames or self.frame_members[line] != name:
                    self.refuse(f"member {shown(name)} is not the member of {FRAMES} line {line + 1}")

    # -- steps

    def _steps(self, manifest: dict[str, Any], events: int, frames: int) -> dict[str, int]:
        """Steps by action, counted from the members, refused unless the manifest's ``steps`` agree."""
        numbers = sorted(m[1] for name in self.members if (m := STEP.fullmatch(name)))
        expected = [f"{i:06d}" for i in range(len(numbers))]
        if numbers != expected:
            gap = next(e for n, e in zip(numbers, expected, strict=True) if n != e)
            self.refuse(f"the step members are not numbered from 000000 without gaps (no {gap}.json)")
        images = {m[2]: name for name in self.members if (m := IMAGE.fullmatch(name)) and not m[1]}
        for number, name in images.items():
            if f"{number}.json" not in self.members:
                self.refuse(f"member {shown(name)} is the frame of a step that has no {number}.json")
        by_action: Counter[str] = Counter()
        for number in numbers:
            step = json_object(self.members[f"{number}.json"])
            action = step.get("action") if step is not None else None
            if step is None or not (isinstance(action, str) and _NAME.fullmatch(action)):
                self.refuse(f"step member '{number}.json' is not a JSON object with an action")
            self._step_points_into_the_stream(number, step, images.get(number), events, frames)
            by_action[action] += 1
        declared = manifest.get("steps")
        count = declared.get("count") if isinstance(declared, dict) else None
        stated = declared.get("by_action") if isinstance(declared, dict) else None
        nonzero = {k: v for k, v in stated.items() if v != 0} if isinstance(stated, dict) else None
        if canonical(count) != canonical(len(numbers)) or canonical(nonzero) != canonical(
            dict(sorted(by_action.items()))
        ):
            self.refuse(
                f"the manifest's steps say {json_shown(count)} ({json_shown(stated)}) but the bundle holds "
                f"{len(numbers)} ({json_shown(dict(sorted(by_action.items())))})"
            )
        return dict(by_action)

    def _step_points_into_the_stream(
        self, number: str, step: dict[str, Any], image: str | None, events: int, frames: int
    ) -> None:
        where = f"step member '{number}.json'"
        frame, lines = step.get("frame"), step.get("events")
        if frame is not None and not (_is_int(frame) and 0 <= frame < frames):
            self.refuse(f"{where} points at no {FRAMES} line (frame {json_shown(frame)})")
        if (frame is None) != (image is None):
            has = "has no frame but an image member" if frame is None else "has a frame but no image member"
            self.refuse(f"{where} {has}")
        if image is not None and frame is not None and self.listed[image][0] != self._holder_digest(frame):
            self.refuse(f"{where}'s image is not the frame {FRAMES} line {frame + 1} names")
        if not (isinstance(lines, list) and all(_is_int(i) and 0 <= i < events for i in lines)):
            self.refuse(f"{where} has events that are not {EVENTS} line numbers")

    def _holder_digest(self, line: int) -> str:
        """The SHA-256 of the member that holds the pixels of ``frames.jsonl`` line ``line``."""
        return self.listed[self.frame_members[line]][0]

    # -- duration and loss

    def _duration(self, stated: Any) -> None:
        span_ns = 0 if self.lines < 2 or self.low is None or self.high is None else self.high - self.low
        if not _close(stated, span_ns / 1e9):
            self._same("duration_s", stated, counts.seconds(span_ns))

    def _loss(self, manifest: dict[str, Any]) -> None:
        stated = manifest.get("loss")
        redaction = manifest.get("redaction")
        if not isinstance(stated, dict) or not isinstance(redaction, dict):
            self.refuse("the manifest has no loss or no redaction")
        problems = stated.get("store_problems")
        if not (isinstance(problems, list) and all(isinstance(p, str) for p in problems)):
            self.refuse("the manifest's loss.store_problems is not a list of strings")
        left_out = stated.get("frames_left_out_ocr_failed")
        if (
            not isinstance(left_out, int)
            or not _is_count(left_out)
            or canonical(left_out) != canonical(redaction.get("frames_left_out_ocr_failed"))
        ):
            self.refuse(
                "the manifest's loss.frames_left_out_ocr_failed and redaction.frames_left_out_ocr_failed "
                "are not the same count"
            )
        try:
            recomputed = counts.loss(self.markers, problems, left_out)
        except ValueError as exc:
            self.refuse(f"a marker in {EVENTS} is malformed: {exc}")
        for key in _SECONDS:
            if _close(stated.get(key), recomputed[key]):
                recomputed[key] = stated[key]
        self._same("loss", stated, recomputed)
        self._redaction_counts(redaction)

    def _redaction_counts(self, redaction: dict[str, Any]) -> None:
        found = redaction.get("counts")
        if not (
            isinstance(found, dict)
            and all(
                isinstance(c, dict) and all(isinstance(e, str) and _is_count(n) for e, n in c.items())
                for c in found.values()
            )
        ):
            self.refuse("the manifest's redaction.counts is not a table of counts by entity")
        typed = found.get("typed", {})
        stated = {e: n for e, n in typed.items() if e != "ALL_TEXT" and n != 0}
        self._same("redaction.counts.typed", stated, dict(sorted(self.entities.items())))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return _is_int(value) and value >= 0


def _close(stated: Any, exact: float) -> bool:
    """``stated`` is a number of seconds within a millisecond of ``exact``."""
    if not isinstance(stated, (int, float)) or isinstance(stated, bool):
        return False
    try:
        value = float(stated)
    except OverflowError:  # a JSON integer of hundreds of digits
        return False
    return math.isfinite(value) and abs(value - exact) <= _SECONDS_SLACK
