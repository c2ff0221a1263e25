"""optin-bundle/3's tasks, written and read back (agent/export/bundle.py, task_list.py, recount.py).

The known answers are docs/export-format.md's ("Known answers", optin-bundle/3): the minimal
session the spec describes — a study task ``sign-in`` started at 5 s, a click on the Username
field at (530, 276), typing, Enter, done at 9.5 s — is redacted with the real policy, written by
the real writer, and read back by the real reader; its task entry, ``tasks.jsonl`` and first step
member are pinned byte for byte.  Elements are not looked up yet: every step's ``element`` is null
and ``elements.api`` null.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from agent.canonical_json import canonical
from agent.errors import ExportError
from agent.events import (
    ButtonPress,
    ButtonRelease,
    Event,
    KeyPress,
    KeyRelease,
    Marker,
    TaskEnd,
    TaskStart,
    WindowFocus,
)
from agent.export import bundle, inspect
from agent.redact.policy import Policy, redact_session
from agent.steps import steps

VOLUNTEER = bytes(range(32))
STUDY = "web-tasks-2026"
SESSION = "20261128T050000Z-1a2b3c4d"
S = 1_000_000_000
INSTRUCTION = "Sign in to the staff portal with the test account"
TERMS_TASK = {
    "id": "sign-in",
    "instruction": INSTRUCTION,
    "app": "firefox",
    "url": "https://portal.example.org/",
    "time_limit_minutes": 10,
}

#: docs/export-format.md's vectors.
STUDY_TASK = (
    b'{"hints":{"app":"firefox","url":"https://portal.example.org/"},"id":"sign-in",'
    b'"instruction":"Sign in to the staff portal with the test account","outcome":"done","source":"study",'
    b'"steps":{"by_action":{"click":1,"double_click":0,"drag":0,"hotkey":0,"key":1,"middle_click":0,"right_click":0,"scroll":0,"type":1},'
    b'"count":3,"range":[0,2]},"t_end_ns":9500000000,"t_start_ns":5000000000,"time_limit_s":600}'
)
VOLUNTEER_TASK = (
    b'{"hints":{"app":null,"url":null},"id":"free-3fa85c1e","instruction":null,"outcome":"done","source":'
    b'"volunteer","steps":{"by_action":{"click":1,"double_click":0,"drag":0,"hotkey":0,"key":1,"middle_click":0,'
    b'"right_click":0,"scroll":0,"type":1},"count":3,"range":[0,2]},"t_end_ns":9500000000,"t_start_ns":'
    b'5000000000,"time_limit_s":null}'
)
FIRST_STEP = (
    '{"action":"click","button":"left","dx":null,"dy":null,"element":null,"events":[3,4],"frame":null,'
    '"keys":[],"t_end_ns":6080000000,"t_start_ns":6000000000,"task":"sign-in","text":null,"to_x":null,'
    '"to_y":null,"window":{"app_class":"firefox","height":800,"title":"Staff portal — Mozilla Firefox",'
    '"width":1280,"x":0,"y":0},"x":530,"y":276}'
).encode()
FIRST_STEP_SIZE_SHA256 = (336, "d1a09a7c693b0f4a13069c55e23879bae15e5220d9654870fec1d66ccfc9f063")
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def session_events(task: TaskStart | None, end: str | None = "done") -> list[Event]:
    """The spec's minimal session: ``task`` from 5 s, a click, "ada", Enter, its end at 9.5 s."""
    stop = {"loss": {"events": 0, "frame_failures": 0, "frames_skipped": 0, "pastes_lost": 0}}
    out: list[Event] = [
        Marker(1 * S, "session_start", {"backend": "xorg"}),
        WindowFocus(2 * S, "Staff portal — Mozilla Firefox", "firefox", 4242, 0, 0, 1280, 800),
    ]
    if task is not None:
        out.append(task)
    out += [ButtonPress(6 * S, 530, 276, "left"), ButtonRelease(6_080_000_000, 530, 276, "left")]
    for n, ch in enumerate("ada"):
        out += [
            KeyPress(7 * S + n * 200_000_000, ch, None, ord(ch), ()),
            KeyRelease(7 * S + n * 200_000_000 + 50_000_000, ch, None, ord(ch), ()),
        ]
    out += [KeyPress(8 * S, None, "enter", 65293, ()), KeyRelease(8_050_000_000, None, "enter", 65293, ())]
    if task is not None and end is not None:
        out.append(TaskEnd(9_500_000_000, task.task_id, end))
    out.append(Marker(10 * S, "session_stop", stop))
    return out


def study_task() -> TaskStart:
    return TaskStart(5 * S, "sign-in", INSTRUCTION, "study", 600)


def prepared(
    events: list[Event], policy: Policy | None = None, terms_task: dict[str, Any] = TERMS_TASK
) -> Any:
    """What :func:`bundle.prepare` makes of ``events`` (without the store): redacted, tasks kept, steps."""
    redaction = redact_session(events, policy or Policy(ocr="off"), ocr=None)
    kept = bundle.task_records_kept(sorted(redaction.events, key=lambda e: e.t_ns), SESSION)
    receipt = {
        "study_id": STUDY,
        "study_name": "Everyday web tasks",
        "consent_version": "1",
        "terms": {"tasks": {"mode": "both", "list": [terms_task]}},
    }
    return bundle.Prepared(SESSION, kept, steps(kept), redaction, receipt, [])


def members_of(tar_bytes: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        out = {}
        for info in tar.getmembers():
            f = tar.extractfile(info)
            assert f is not None
            out[info.name.split("/", 1)[1]] = f.read()
        return out


def written(events: list[Event], policy: Policy | None = None) -> tuple[dict[str, bytes], inspect.Bundle]:
    """The tar the writer makes of ``events``, by member, and the reader's bundle of it."""
    tar_bytes = bundle.build_tar(prepared(events, policy), VOLUNTEER, STUDY)
    return members_of(tar_bytes), inspect.check_tar(tar_bytes, Path(f"{SESSION}.optin.tar.age"))


def test_the_study_task_known_answers() -> None:
    members, read = written(session_events(study_task()))
    assert list(members)[:3] == ["manifest.json", "manifest.sig", "tasks.jsonl"]
    assert members["tasks.jsonl"] == STUDY_TASK + b"\n"
    assert len(STUDY_TASK) + 1 == 400
    assert hashlib.sha256(STUDY_TASK + b"\n").hexdigest() == (
        "ec81acb3537980c6b70b61a8b1a6b9d0c51b017f8f71a076bc243df5560a234c"
    )
    manifest = json.loads(members["manifest.json"])
    assert [canonical(t) for t in manifest["tasks"]] == [STUDY_TASK]
    assert members["000000.json"] == FIRST_STEP
    assert (len(FIRST_STEP), hashlib.sha256(FIRST_STEP).hexdigest()) == FIRST_STEP_SIZE_SHA256
    steps_ = [json.loads(members[f"{n:06d}.json"]) for n in range(3)]
    assert [(s["action"], s["task"], s["element"]) for s in steps_] == [
        ("click", "sign-in", None),
        ("type", "sign-in", None),
        ("key", "sign-in", None),
    ]
    events = [json.loads(line) for line in members["events.jsonl"].splitlines()]
    assert [e["k"] for e in events if e["k"].startswith("task")] == ["task_start", "task_end"]
    assert manifest["elements"] == {"version": 1, "api": None} and manifest["loss"]["elements"] is None
    assert manifest["counts"]["task_start"] == manifest["counts"]["task_end"] == 1
    assert (
        manifest["redaction"]["counts"]["instructions"] == manifest["redaction"]["counts"]["elements"] == {}
    )
    assert read.manifest == manifest


def test_a_volunteer_task_under_drop_has_a_null_instruction() -> None:
    """typed_text = "drop" empties a volunteer's instruction (agent/redact/policy.py); the bundle says
    null, as the spec does: never a made-up text."""
    task = TaskStart(5 * S, "free-3fa85c1e", "mail alice.canary@example.com the booking", "volunteer", None)
    members, read = written(session_events(task), Policy(ocr="off", typed_text="drop"))
    assert members["tasks.jsonl"] == VOLUNTEER_TASK + b"\n"
    assert len(VOLUNTEER_TASK) == 333
    assert hashlib.sha256(VOLUNTEER_TASK).hexdigest() == (
        "a49ecbe468a0f834adc5ba51c015cd3140acb1ccddf4b84361b6d7c10a7ff36c"
    )
    manifest = json.loads(members["manifest.json"])
    assert manifest["redaction"]["counts"]["instructions"] == {"ALL_TEXT": 1}
    (start,) = [json.loads(x) for x in members["events.jsonl"].splitlines() if b'"task_start"' in x]
    assert start["instruction"] is None
    assert not any(b"canary" in blob for blob in members.values())
    assert read.manifest["tasks"][0]["instruction"] is None


def test_a_volunteers_instruction_is_redacted() -> None:
    task = TaskStart(5 * S, "free-3fa85c1e", "mail alice.canary@example.com the booking", "volunteer", None)
    members, read = written(session_events(task))
    assert read.manifest["tasks"][0]["instruction"] == "mail [EMAIL] the booking"
    assert read.manifest["redaction"]["counts"]["instructions"] == {"EMAIL": 1}
    assert not any(b"canary" in blob for blob in members.values())


def test_a_session_without_a_task_has_an_empty_tasks_member() -> None:
    members, read = written(session_events(None))
    assert members["tasks.jsonl"] == b"" and hashlib.sha256(b"").hexdigest() == EMPTY_SHA256
    assert read.manifest["tasks"] == []
    assert all(json.loads(members[f"{n:06d}.json"])["task"] is None for n in range(3))
    assert inspect.summarise(read)["tasks"] == []
    assert "tasks:" in inspect.render_summary(inspect.summarise(read))


def test_a_task_without_its_end_is_interrupted_at_the_last_event() -> None:
    _members, read = written(session_events(study_task(), end=None))
    (task,) = read.manifest["tasks"]
    assert task["outcome"] == "interrupted" and task["t_end_ns"] == 10 * S
    assert task["steps"]["range"] == [0, 2]


def test_a_task_end_without_its_start_is_left_out() -> None:
    """A cut took the task's start: its end is not written, and its steps have no task."""
    events: list[Event] = [e for e in session_events(study_task()) if not isinstance(e, TaskStart)]
    members, read = written(events)
    assert read.manifest["tasks"] == [] and b"task_end" not in members["events.jsonl"]
    assert all(json.loads(members[f"{n:06d}.json"])["task"] is None for n in range(3))


def test_steps_after_a_tasks_end_belong_to_no_task() -> None:
    events = session_events(study_task())
    events.insert(-1, ButtonPress(9_700_000_000, 5, 5, "left"))
    events.insert(-1, ButtonRelease(9_750_000_000, 5, 5, "left"))
    members, read = written(events)
    assert json.loads(members["000003.json"])["task"] is None
    assert read.manifest["tasks"][0]["steps"]["range"] == [0, 2]


def test_an_abandoned_task_is_never_exported() -> None:
    with pytest.raises(ExportError, match="gave up") as info:
        prepared(session_events(study_task(), end="abandoned"))
    assert INSTRUCTION not in str(info.value)


def test_a_study_task_whose_words_differ_from_the_consent_terms_is_not_written() -> None:
    other = {**TERMS_TASK, "instruction": "Something else"}
    with pytest.raises(ExportError, match="differs from its entry in the consent terms") as info:
        bundle.build_tar(prepared(session_events(study_task()), terms_task=other), VOLUNTEER, STUDY)
    assert INSTRUCTION not in str(info.value)


def test_the_report_shows_the_tasks_visibly() -> None:
    _members, read = written(session_events(study_task()))
    summary = inspect.summarise(read)
    assert summary["tasks"] == read.manifest["tasks"]
    text = inspect.render_summary(summary)
    assert "tasks:" in text and "1: sign-in (study) done, steps 0-2" in text
    assert INSTRUCTION not in text  # the text summary shows no instruction; --json has them
    assert "\nelements:   no lookups\n" in text


def test_an_optin_bundle_2_reports_tasks_as_unknown() -> None:
    from tests.unit.test_inspect import entries_for, sample_members, tar_of

    read = inspect.check_tar(tar_of(entries_for(sample_members())), Path("b.optin.tar.age"))
    assert read.manifest["schema"] == "optin-bundle/2"
    assert inspect.summarise(read)["tasks"] is None
    assert "unknown" in inspect.render_summary(inspect.summarise(read)).split("tasks:")[1].splitlines()[0]


def test_an_optin_bundle_2_with_task_lines_ignores_them() -> None:
    """An older bundle's task lines mean nothing: counted like any kind, never a task."""
    from tests.unit.test_inspect import (
        SAMPLE_COUNTS,
        entries_for,
        lines,
        manifest_for,
        sample_events,
        sample_members,
        tar_of,
    )

    members = sample_members()
    events = sample_events()
    events.insert(1, {"v": 1, "k": "task_end", "t_ns": 1, "task_id": "x", "outcome": "abandoned"})
    members["events.jsonl"] = lines(events)
    manifest = manifest_for(members, counts={**SAMPLE_COUNTS, "task_end": 1})
    read = inspect.check_tar(tar_of(entries_for(members, manifest)), Path("b.optin.tar.age"))
    assert inspect.summarise(read)["tasks"] is None
