"""What a bundle's manifest states, recomputed from its members (the collector's side).

docs/export-format.md, "What a reader recomputes": the manifest is the volunteer's agent's
signed statement about the members, and a signature says only that nobody changed it since.
:class:`Recount` recomputes every count and summary the members determine — steps, event
counts, duration, loss, typed redactions — with the writer's own functions
(agent/export/counts.py), checks that what steps and frames point at exists, and refuses the
bundle at the first difference.  In ``optin-bundle/3`` it also recomputes the task list, the
``tasks.jsonl`` member and every step's ``task`` from ``events.jsonl``, the step members and the
signed consent terms (agent/export/task_list.py, the writer's own code again), checks that every
step member has the same keys, checks every ``element`` line and step element against the
element table, and recomputes each step's ``element`` (agent/steps.py's :class:`ElementIndex`),
``elements`` and ``loss.elements`` (counts.py).
It also holds the members over the decrypted tar (:class:`Members`), the reader's strict JSON
and the way messages show untrusted values (:func:`shown`), shared with
agent/export/bundle_checks.py and bundle_report.py.

Memory: the members are views of the one decrypted tar; one line of ``events.jsonl`` or
``frames.jsonl`` is copied and parsed at a time; what is kept is counters, the markers, the
tasks (at most 10,000), per step its start, action and task, one
member name per frame, and per ``element`` line its time, place, result and the canonical bytes
of its element (not the parsed object), with the times of the lines that end a focus.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NoReturn, Protocol

from agent.canonical_json import canonical
from agent.elements import AT, FOUND
from agent.export import counts, task_list
from agent.steps import FOCUS_ENDERS, ElementIndex
from agent.untrusted_text import visible

EVENTS = "events.jsonl"
FRAMES = "frames.jsonl"
TASKS = "tasks.jsonl"
#: The schema with tasks (docs/export-format.md, optin-bundle/3).
V3 = "optin-bundle/3"
#: Largest ``tasks.jsonl``.
MAX_TASKS_SIZE = 64 << 20
#: The keys of every optin-bundle/3 step member (the writer's own table).
STEP_KEYS = frozenset(counts.STEP_KEYS)
#: The element rules' version an optin-bundle/3 manifest states.
ELEMENTS_VERSION = 1
#: The keys of an ``element`` line.
ELEMENT_LINE_KEYS = frozenset({"v", "k", "t_ns", "at", "result", "element"})
#: Characters of untrusted text a message or the summary shows.
SHOWN = 80
#: docs/export-format.md's member grammar (names below ``<session-id>/``; ``tasks.jsonl`` only in
#: ``optin-bundle/3``, which bundle_checks.py checks once the manifest is read).
MEMBER = re.compile(
    r"manifest\.json|manifest\.sig|tasks\.jsonl|events\.jsonl|frames\.jsonl|(frames/)?[0-9]{6}\.(json|webp|png)"
)
STEP = re.compile(r"([0-9]{6})\.json")
IMAGE = re.compile(r"(frames/)?([0-9]{6})\.(webp|png)")
_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")  # an action or an event kind
_LINE = re.compile(rb"[^\n]*\n|[^\n]+")  # a line, its newline kept; the last one may have none


class Refuse(Protocol):
    """``refuse(what, fix=..., reason=...)``: never returns (bundle_checks.py gives the fix a refusal
    ends with); ``reason`` is a code of agent/export/reasons.py."""

    def __call__(self, what: str, fix: str = ..., *, reason: str) -> NoReturn: ...


class Members(Mapping[str, bytes]):
    """A bundle's members by name, in tar order, over the one decrypted tar held in memory.

    ``members[name]`` is a copy of that member's bytes; :func:`view` is the same bytes without a
    copy, for reading, hashing and writing, so a bundle costs its own size in memory once, not twice.
    """

    def __init__(self, plaintext: bytes, spans: dict[str, tuple[int, int]]) -> None:
        self._plaintext = plaintext
        self._spans = spans

    def __getitem__(self, name: str) -> bytes:
        start, end = self._spans[name]
        return self._plaintext[start:end]

    def __iter__(self) -> Iterator[str]:
        return iter(self._spans)

    def __len__(self) -> int:
        return len(self._spans)

    def view(self, name: str) -> memoryview:
        """Member ``name`` without a copy."""
        start, end = self._spans[name]
        return memoryview(self._plaintext)[start:end]


def view(members: Mapping[str, bytes], name: str) -> bytes | memoryview:
    """Member ``name``, read-only: a view of the tar when ``members`` is :class:`Members` (no copy).

    :raises KeyError: there is no such member.
    """
    return members.view(name) if isinstance(members, Members) else members[name]


def each_line(blob: bytes | memoryview) -> Iterator[bytes]:
    """Each line of ``blob``, newline kept (a last line without one too), copied one at a time."""
    return (match.group() for match in _LINE.finditer(blob))


def shown(value: Any, limit: int = SHOWN) -> str:
    """Untrusted text (a name, a manifest value) as a message shows it: quoted, visible, cut short."""
    return "'" + visible(value if isinstance(value, str) else repr(value), limit=limit) + "'"


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
        self.span = counts.Span()  # of every line's t_ns, events and frames
        self.v3 = False
        self.task_lines = task_list.TaskLines()
        #: optin-bundle/3: the element lines (which one each step has), their results, and per
        #: line the canonical bytes of its element (None unless found).
        self.element_index = ElementIndex()
        self.element_results: Counter[str] = Counter()
        self.element_bytes: list[bytes | None] = []
        self.element_at: list[int] = []  # ... and its events.jsonl line number (from 0)
        self.steps_without = 0
        self.api: str | None = None
        #: optin-bundle/3: each step's t_start_ns, action and stated task, by step number.
        self.step_starts: list[int] = []
        self.step_actions: list[str] = []
        self.step_tasks: list[Any] = []

    def check(self, manifest: dict[str, Any]) -> dict[str, int]:
        """Every recomputation; the steps by action (refusing the bundle at the first difference)."""
        self.v3 = manifest.get("schema") == V3
        events = self._lines(EVENTS, self._take_event)
        frames = self._lines(FRAMES, self._take_frame)
        by_action = self._steps(manifest, events, frames)
        if self.v3:
            self._tasks(manifest)
            self._elements(manifest)
        self._frames_are_held(frames)
        recounted = Counter(self.kinds)
        recounted["frame"] += frames
        self._same(
            "counts",
            manifest.get("counts"),
            counts.kind_counts(recounted.elements()),
            reason="recount_mismatch",
        )
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
                self.refuse(f"the manifest's {field} is not a string", reason="manifest_types")

    def _same(self, field: str, stated: Any, recomputed: Any, *, reason: str) -> None:
        """Refuse under ``reason`` unless the manifest's ``field`` is what the members give."""
        if canonical(stated) != canonical(recomputed):
            given = json_shown(recomputed)
            self.refuse(
                f"the manifest's {field} is {json_shown(stated)} but the members give {given}", reason=reason
            )

    # -- events.jsonl and frames.jsonl

    def _lines(self, member: str, take: Callable[[int, dict[str, Any]], None]) -> int:
        """Parse each line of ``member`` with ``take(line number from 0, record)``; how many lines."""
        if member not in self.members:
            self.refuse(f"it has no {member}", reason="member_missing")
        blob = view(self.members, member)  # the tar's bytes: only one line is copied at a time
        if len(blob) and blob[-1] != ord("\n"):
            self.refuse(f"{member} does not end with a newline", reason="stream_invalid")
        count = 0
        previous: int | None = None
        for line in each_line(blob):
            count += 1
            record = json_object(line)
            version = record.get("v") if record is not None else None
            if record is None or not (counts.is_integer(version) and version == 1):
                self.refuse(
                    f"{member} line {count} is not a JSON object of version 1", reason="stream_invalid"
                )
            kind, t_ns = record.get("k"), record.get("t_ns")
            if not (isinstance(kind, str) and _NAME.fullmatch(kind)):
                self.refuse(f"{member} line {count} has no kind", reason="stream_invalid")
            if not (counts.is_integer(t_ns) and t_ns >= 0):
                self.refuse(
                    f"{member} line {count} has no t_ns (an integer from 0 to 2^63 - 1)",
                    reason="stream_invalid",
                )
            if previous is not None and t_ns < previous:
                self.refuse(
                    f"{member} line {count} is earlier than the line before (not in time order)",
                    reason="stream_invalid",
                )
            previous = t_ns
            self.span.add(t_ns)
            take(count - 1, record)
        return count

    def _take_event(self, number: int, record: dict[str, Any]) -> None:
        kind = record["k"]
        if kind == "frame":
            self.refuse(
                f"{EVENTS} line {number + 1} is a frame (frames are in {FRAMES})", reason="stream_invalid"
            )
        self.kinds[kind] += 1
        if kind == "redacted":
            entity = record.get("entity")
            if not isinstance(entity, str):
                self.refuse(
                    f"{EVENTS} line {number + 1} is a redacted record without an entity",
                    reason="stream_invalid",
                )
            self.entities[entity] += 1
        elif kind == "marker":
            self.markers.append(record)
        elif self.v3 and kind in ("task_start", "task_end"):
            try:
                self.task_lines.add(record)
            except ValueError as exc:
                self.refuse(f"{EVENTS} line {number + 1}: {exc}", reason="tasks_invalid")
        elif self.v3 and kind == "element":
            self._take_element(number, record)
        if self.v3 and kind in FOCUS_ENDERS:
            self.element_index.ender(record["t_ns"])

    def _take_element(self, number: int, record: dict[str, Any]) -> None:
        """An ``element`` line: its shape, then what a step needs of it (its element's bytes)."""
        where = f"{EVENTS} line {number + 1}"
        if set(record) != ELEMENT_LINE_KEYS:
            self.refuse(
                f"{where} is an element line without exactly the keys {', '.join(sorted(ELEMENT_LINE_KEYS))}",
                reason="elements_invalid",
            )
        at, result, element = record["at"], record["result"], record["element"]
        if at not in AT or result not in counts.ELEMENT_RESULTS:
            self.refuse(
                f"{where} is an element line whose at or result is not one of the known values",
                reason="elements_invalid",
            )
        if (result == FOUND) != (element is not None):
            self.refuse(
                f"{where} is an element line with an element exactly when its result is not found",
                reason="elements_invalid",
            )
        problem = None if element is None else counts.element_problem(element)
        if problem is not None:
            self.refuse(
                f"{where} is an element line whose element is not well-formed: {problem}",
                reason="elements_invalid",
            )
        self.element_results[result] += 1
        self.element_bytes.append(None if element is None else canonical(element))
        self.element_at.append(number)
        self.element_index.line(record["t_ns"], at, element is not None)

    def _take_frame(self, number: int, record: dict[str, Any]) -> None:
        member = record.get("member")
        if record["k"] != "frame":
            self.refuse(f"{FRAMES} line {number + 1} is not a frame", reason="stream_invalid")
        if not (isinstance(member, str) and IMAGE.fullmatch(member) and member in self.members):
            self.refuse(
                f"{FRAMES} line {number + 1} names no image member of the bundle", reason="stream_invalid"
            )
        self.frame_members.append(member)

    def _frames_are_held(self, frames: int) -> None:
        """Each ``frames/NNNNNN.<image>`` member is the one line NNNNNN names."""
        for name in self.members:
            if (m := IMAGE.fullmatch(name)) and m[1]:
                line = int(m[2])
                if line >= frames or self.frame_members[line] != name:
                    self.refuse(
                        f"member {shown(name)} is not the member of {FRAMES} line {line + 1}",
                        reason="stream_invalid",
                    )

    # -- steps

    def _steps(self, manifest: dict[str, Any], events: int, frames: int) -> dict[str, int]:
        """Steps by action, counted from the members, refused unless the manifest's ``steps`` agree."""
        numbers = sorted(m[1] for name in self.members if (m := STEP.fullmatch(name)))
        expected = [f"{i:06d}" for i in range(len(numbers))]
        if numbers != expected:
            gap = next(e for n, e in zip(numbers, expected, strict=True) if n != e)
            self.refuse(
                f"the step members are not numbered from 000000 without gaps (no {gap}.json)",
                reason="step_invalid",
            )
        images = {m[2]: name for name in self.members if (m := IMAGE.fullmatch(name)) and not m[1]}
        for number, name in images.items():
            if f"{number}.json" not in self.members:
                self.refuse(
                    f"member {shown(name)} is the frame of a step that has no {number}.json",
                    reason="step_invalid",
                )
        by_action: Counter[str] = Counter()
        for number in numbers:
            step = json_object(self.members[f"{number}.json"])
            action = step.get("action") if step is not None else None
            if step is None or not (isinstance(action, str) and _NAME.fullmatch(action)):
                self.refuse(
                    f"step member '{number}.json' is not a JSON object with an action", reason="step_invalid"
                )
            self._step_points_into_the_stream(number, step, images.get(number), events, frames)
            if self.v3:
                self._step_of_v3(number, step)
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
                f"{len(numbers)} ({json_shown(dict(sorted(by_action.items())))})",
                reason="recount_mismatch",
            )
        return dict(by_action)

    def _step_points_into_the_stream(
        self, number: str, step: dict[str, Any], image: str | None, events: int, frames: int
    ) -> None:
        where = f"step member '{number}.json'"
        frame, lines = step.get("frame"), step.get("events")
        if frame is not None and not (counts.is_integer(frame) and 0 <= frame < frames):
            self.refuse(
                f"{where} points at no {FRAMES} line (frame {json_shown(frame)})", reason="step_invalid"
            )
        if (frame is None) != (image is None):
            has = "has no frame but an image member" if frame is None else "has a frame but no image member"
            self.refuse(f"{where} {has}", reason="step_invalid")
        if image is not None and frame is not None and self.listed[image][0] != self._holder_digest(frame):
            self.refuse(
                f"{where}'s image is not the frame {FRAMES} line {frame + 1} names", reason="step_invalid"
            )
        if not (isinstance(lines, list) and all(counts.is_integer(i) and 0 <= i < events for i in lines)):
            self.refuse(f"{where} has events that are not {EVENTS} line numbers", reason="step_invalid")

    def _step_of_v3(self, number: str, step: dict[str, Any]) -> None:
        """An optin-bundle/3 step: exactly the step keys, an integer start, the element its lines give."""
        where = f"step member '{number}.json'"
        if set(step) != STEP_KEYS:
            odd = sorted(set(step) ^ STEP_KEYS)
            self.refuse(
                f"{where} has not the keys of a step (missing or extra: {shown(', '.join(odd))})",
                reason="step_invalid",
            )
        start = step["t_start_ns"]
        if not (counts.is_integer(start) and start >= 0):
            self.refuse(f"{where} has no t_start_ns (an integer from 0 to 2^63 - 1)", reason="step_invalid")
        self._step_element(where, step["action"], start, step["element"])
        task = step["task"]
        if not (task is None or (isinstance(task, str) and task_list.TASK_ID.fullmatch(task))):
            self.refuse(f"{where} has a task that is not a task id", reason="tasks_invalid")
        self.step_starts.append(start)
        self.step_actions.append(step["action"])
        self.step_tasks.append(task)

    # -- optin-bundle/3: tasks and elements

    def _tasks(self, manifest: dict[str, Any]) -> None:
        """The manifest's ``tasks``, ``tasks.jsonl`` and every step's ``task``, from the members."""
        consent = manifest.get("consent")
        terms = consent.get("terms") if isinstance(consent, dict) else None
        high = self.span.high if self.span.high is not None else 0
        try:
            tasks, of_step = self.task_lines.tasks(high, terms, self.step_starts, self.step_actions)
        except ValueError as exc:
            self.refuse(f"{EVENTS}: {exc}", reason="tasks_invalid")
        stated = manifest.get("tasks")
        if not isinstance(stated, list):
            self.refuse("the manifest has no tasks list", reason="tasks_invalid")
        if len(stated) != len(tasks):
            self.refuse(
                f"the manifest lists {len(stated)} tasks but {EVENTS} gives {len(tasks)}",
                reason="tasks_invalid",
            )
        for n, (said, task) in enumerate(zip(stated, tasks, strict=True)):
            if canonical(said) != canonical(task):
                self.refuse(
                    f"the manifest's tasks[{n}] is not the task {EVENTS} gives (task {task['id']!r})",
                    reason="tasks_invalid",
                )
        for n, (said, task_id) in enumerate(zip(self.step_tasks, of_step, strict=True)):
            if canonical(said) != canonical(task_id):
                self.refuse(
                    f"step member '{n:06d}.json' names task {json_shown(said)} but its time is in "
                    f"{'no task' if task_id is None else f'task {task_id!r}'}",
                    reason="tasks_invalid",
                )
        self._tasks_member(tasks)

    def _tasks_member(self, tasks: list[dict[str, Any]]) -> None:
        """``tasks.jsonl``: one line per task, the canonical JSON of the manifest's object, in order."""
        if TASKS not in self.members:
            self.refuse(f"it has no {TASKS}", reason="member_missing")
        blob = view(self.members, TASKS)
        if len(blob) > MAX_TASKS_SIZE:
            self.refuse(
                f"{TASKS} is {len(blob)} bytes, over the {MAX_TASKS_SIZE}-byte limit", reason="tasks_invalid"
            )
        count = 0
        for line in each_line(blob):
            if count >= len(tasks):
                self.refuse(
                    f"{TASKS} has more lines than the manifest has tasks ({len(tasks)})",
                    reason="tasks_invalid",
                )
            if line != canonical(tasks[count]) + b"\n":
                self.refuse(
                    f"{TASKS} line {count + 1} is not the manifest's tasks[{count}] as canonical JSON",
                    reason="tasks_invalid",
                )
            count += 1
        if count != len(tasks):
            self.refuse(
                f"{TASKS} has {count} lines but the manifest has {len(tasks)} tasks", reason="tasks_invalid"
            )

    def _step_element(self, where: str, action: Any, start: int, element: Any) -> None:
        """A step's ``element``: well-formed, and the element of the line the step rules give it."""
        if element is None:
            self.steps_without += 1
        else:
            problem = counts.element_problem(element)
            if problem is not None:
                self.refuse(
                    f"{where} has an element that is not well-formed: {problem}", reason="elements_invalid"
                )
        line = self.element_index.of(action, start)
        expected = None if line is None else self.element_bytes[line]
        if (None if element is None else canonical(element)) != expected:
            given = "none" if line is None else f"the element of its line {self.element_at[line] + 1}"
            self.refuse(
                f"{where} has {'no' if element is None else 'an'} element but {EVENTS} gives {given}",
                reason="elements_invalid",
            )

    def _elements(self, manifest: dict[str, Any]) -> None:
        """``elements``: the rules' version and the API of the first ``session_start`` marker."""
        try:
            self.api = counts.elements_api(self.markers)
        except ValueError as exc:
            self.refuse(f"{EVENTS}: {exc}", reason="elements_invalid")
        stated, recomputed = manifest.get("elements"), {"version": ELEMENTS_VERSION, "api": self.api}
        self._same("elements", stated, recomputed, reason="elements_invalid")

    def _holder_digest(self, line: int) -> str:
        """The SHA-256 of the member that holds the pixels of ``frames.jsonl`` line ``line``."""
        return self.listed[self.frame_members[line]][0]

    # -- duration and loss

    def _duration(self, stated: Any) -> None:
        if not _close(stated, self.span.ns / 1e9):
            self._same("duration_s", stated, counts.seconds(self.span.ns), reason="recount_mismatch")

    def _loss(self, manifest: dict[str, Any]) -> None:
        stated = manifest.get("loss")
        redaction = manifest.get("redaction")
        if not isinstance(stated, dict) or not isinstance(redaction, dict):
            self.refuse("the manifest has no loss or no redaction", reason="manifest_types")
        problems = stated.get("store_problems")
        if not (isinstance(problems, list) and all(isinstance(p, str) for p in problems)):
            self.refuse(
                "the manifest's loss.store_problems is not a list of strings", reason="manifest_types"
            )
        left_out = stated.get("frames_left_out_ocr_failed")
        if (
            not isinstance(left_out, int)
            or not _is_count(left_out)
            or canonical(left_out) != canonical(redaction.get("frames_left_out_ocr_failed"))
        ):
            self.refuse(
                "the manifest's loss.frames_left_out_ocr_failed and redaction.frames_left_out_ocr_failed "
                "are not the same count",
                reason="recount_mismatch",
            )
        try:
            recomputed = counts.loss(self.markers, problems, left_out)
        except ValueError as exc:
            self.refuse(f"a marker in {EVENTS} is malformed: {exc}", reason="stream_invalid")
        for key in _SECONDS:
            if _close(stated.get(key), recomputed[key]):
                recomputed[key] = stated[key]
        if self.v3:
            try:
                recomputed["elements"] = counts.element_loss(
                    self.api, self.element_results, self.markers, self.steps_without
                )
            except ValueError as exc:
                self.refuse(f"{EVENTS}: {exc}", reason="elements_invalid")
        self._same("loss", stated, recomputed, reason=_loss_reason(stated, recomputed))
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
            self.refuse(
                "the manifest's redaction.counts is not a table of counts by entity", reason="manifest_types"
            )
        if self.v3 and not all(isinstance(found.get(where), dict) for where in ("instructions", "elements")):
            self.refuse(
                "the manifest's redaction.counts has no instructions or no elements table",
                reason="manifest_types",
            )
        typed = found.get("typed", {})
        stated = {e: n for e, n in typed.items() if e != "ALL_TEXT" and n != 0}
        self._same(
            "redaction.counts.typed", stated, dict(sorted(self.entities.items())), reason="recount_mismatch"
        )


def _loss_reason(stated: dict[str, Any], recomputed: dict[str, Any]) -> str:
    """``elements_invalid`` when only ``loss.elements`` differs (element loss), else ``recount_mismatch``."""
    others = {k: v for k, v in stated.items() if k != "elements"}
    same_but_elements = canonical(others) == canonical(
        {k: v for k, v in recomputed.items() if k != "elements"}
    )
    return "elements_invalid" if "elements" in recomputed and same_but_elements else "recount_mismatch"


def _is_count(value: Any) -> bool:
    return counts.is_integer(value) and value >= 0


def _close(stated: Any, exact: float) -> bool:
    """``stated`` is a number of seconds within a millisecond of ``exact``."""
    if not isinstance(stated, (int, float)) or isinstance(stated, bool):
        return False
    try:
        value = float(stated)
    except OverflowError:  # a JSON integer of hundreds of digits
        return False
    return math.isfinite(value) and abs(value - exact) <= _SECONDS_SLACK
