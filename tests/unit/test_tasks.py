"""Tasks in the recorder and on the command line (issue 16 item 1): a task begins its own session,
ends done, failed, given up (its session shredded), timed out or interrupted, survives a pause, and
a volunteer's instruction is kept only in the encrypted store — never in status.json, a log, a
notification or a reply.  On the fake backend with real stores, real study files and a real socket."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import cli, consent, ipc
from agent.backends.fake import FakeBackend
from agent.backends.virtual_display import wait_for
from agent.control import Recorder
from agent.errors import OptinError, UsageError
from agent.events import (
    MAX_INSTRUCTION,
    Event,
    KeyPress,
    KeyRelease,
    Marker,
    TaskEnd,
    TaskStart,
    now_ns,
)
from agent.paths import Dirs, agent_lock, dirs
from agent.recorder_status import read_status
from agent.store import keys
from agent.store.reader import list_sessions, read_session
from agent.study import Study, demo_study_toml, install_study
from tests.tools import fake_backend, hooks_of

#: Stands for the words a volunteer writes: captured text, which must never leave the store.
CANARY = "CANARY-INSTRUCTION-7c1e pay the rent to Zorblax"
#: Typed during a task that is given up: must be gone from the store with it.
TYPED = "q"

TASKS = """
[[task]]
id = "find-flight"
instruction = "Find the cheapest flight to Rome"
time_limit_minutes = 2

[[task]]
id = "rename"
instruction = "Rename a file"
"""


def _study(tmp_path: Path, mode: str, *, tasks: str = TASKS, done_hotkey: str = "") -> tuple[Dirs, Study]:
    """Install a real study file with ``[tasks] mode`` and the tasks, consent to it, make keys."""
    from pyrage import x25519

    text = demo_study_toml(str(x25519.Identity.generate().to_public()))
    text += f'\n[tasks]\nmode = "{mode}"\n' + (f'done_hotkey = "{done_hotkey}"\n' if done_hotkey else "")
    text += tasks if mode in ("list", "both") else ""
    path = tmp_path / f"study-{mode}.toml"
    path.write_text(text)
    d = dirs()
    study = install_study(d, path)
    consent.grant(d, study, study.terms_sha256)
    keys.init_keys(d)
    return d, study


@pytest.fixture
def both(tmp_path: Path) -> tuple[Dirs, Study]:
    return _study(tmp_path, "both")


def _start(d: Dirs, study: Study) -> tuple[FakeBackend, Recorder]:
    backend = fake_backend()
    rec = Recorder(d, backend, study)
    rec.start()
    return backend, rec


def _events(d: Dirs, sid: str | None) -> list[Event]:
    assert sid is not None
    return read_session(d, sid, keys.load_identity(d)).events


def _wait(pred: Callable[[], bool]) -> bool:
    return wait_for(pred, 5.0, interval=0.01)


def _task_records(events: list[Event]) -> list[Event]:
    return [e for e in events if isinstance(e, (TaskStart, TaskEnd))]


def _ends(events: list[Event]) -> list[str]:
    return [e.outcome for e in events if isinstance(e, TaskEnd)]


# --- lifecycle ---------------------------------------------------------------------------------


def test_a_study_task_begins_its_own_session_and_ends_done(both: tuple[Dirs, Study]) -> None:
    d, study = both
    backend, rec = _start(d, study)
    before = rec.session_id
    info = rec.start_task(task_id="find-flight")
    assert info["id"] == "find-flight" and info["source"] == "study" and info["time_limit_s"] == 120
    assert rec.session_id != before and info["session"] == rec.session_id
    assert rec.state == "recording" and hooks_of(backend).is_alive()
    hooks_of(backend).emit(KeyPress(now_ns(), "r", None, 114, ()))
    status = read_status(d)
    assert status is not None and status["task"]["id"] == "find-flight"
    ended = rec.finish_task("done")
    assert ended["id"] == "find-flight" and ended["outcome"] == "done" and ended["seconds"] >= 0
    assert rec.task_status()["running"] is None and rec.task_status()["last"] == ended
    status = read_status(d)
    assert status is not None and status["task"] is None
    rec.stop()
    earlier = _events(d, before)
    assert _task_records(earlier) == []  # the session before the task holds none of it
    events = _events(d, info["session"])
    first, second = events[0], events[1]
    assert isinstance(first, Marker) and first.marker == "session_start" and first.detail["after"] == "task"
    assert isinstance(second, TaskStart)
    assert (second.task_id, second.instruction, second.source, second.time_limit_s) == (
        "find-flight",
        "Find the cheapest flight to Rome",
        "study",
        120,
    )
    kinds = [e.KIND for e in events]
    assert kinds.index("key_press") < kinds.index("task_end")
    (end,) = [e for e in events if isinstance(e, TaskEnd)]
    assert end.task_id == "find-flight" and end.outcome == "done" and end.t_ns > second.t_ns
    assert {s.id for s in list_sessions(d)} == {before, info["session"]}


def test_a_free_task_fails_and_its_words_are_only_in_the_store(
    both: tuple[Dirs, Study], caplog: pytest.LogCaptureFixture
) -> None:
    d, study = both
    caplog.set_level(logging.DEBUG)
    notes: list[str] = []
    _backend, rec = _start(d, study)
    rec.notify = notes.append
    info = rec.start_task(instruction=f"  {CANARY}  ")
    assert info["source"] == "volunteer" and info["id"].startswith("free-") and len(info["id"]) == 13
    status_text = (d.runtime / "status.json").read_text()
    assert info["id"] in status_text and CANARY not in status_text and "Zorblax" not in status_text
    assert "Zorblax" not in json.dumps(rec.task_status()) and "Zorblax" not in json.dumps(rec.status())
    ended = rec.finish_task("failed")
    rec.stop()
    assert ended["outcome"] == "failed"
    (start,) = [e for e in _events(d, info["session"]) if isinstance(e, TaskStart)]
    assert start.instruction == CANARY and start.source == "volunteer" and start.time_limit_s is None
    assert _ends(_events(d, info["session"])) == ["failed"]
    assert "Zorblax" not in caplog.text and "Zorblax" not in " ".join(notes)
    assert info["id"] in caplog.text  # the logs name the task by its id
    meta = (d.sessions / info["session"] / "meta.json").read_text()
    assert "Zorblax" not in meta and '"task_start": 1' in meta


def test_free_task_ids_differ(both: tuple[Dirs, Study]) -> None:
    d, study = both
    _backend, rec = _start(d, study)
    ids = set()
    for _ in range(3):
        ids.add(rec.start_task(instruction="Write a note")["id"])
        rec.finish_task("done")
    rec.stop()
    assert len(ids) == 3


def test_pausing_keeps_the_task_and_it_can_end_while_paused(both: tuple[Dirs, Study]) -> None:
    d, study = both
    backend, rec = _start(d, study)
    info = rec.start_task(task_id="rename")
    rec.pause()
    assert not hooks_of(backend).is_alive()
    assert rec.task_status()["running"]["id"] == "rename"
    status = read_status(d)
    assert status is not None and status["state"] == "paused" and status["task"]["id"] == "rename"
    rec.resume()
    assert rec.task_status()["running"]["id"] == "rename"
    rec.pause()
    rec.finish_task("done")  # ending a task while paused is allowed (it records nothing)
    assert rec.state == "paused"
    rec.resume()
    rec.stop()
    records = [
        e.marker if isinstance(e, Marker) else e.KIND
        for e in _events(d, info["session"])
        if isinstance(e, (TaskStart, TaskEnd)) or (isinstance(e, Marker) and e.marker != "screen_layout")
    ]
    assert records == [
        "session_start",
        "task_start",
        "pause",
        "resume",
        "pause",
        "task_end",
        "resume",
        "session_stop",
    ]


def test_stop_ends_a_running_task_as_interrupted_before_the_seal(both: tuple[Dirs, Study]) -> None:
    d, study = both
    _backend, rec = _start(d, study)
    info = rec.start_task(task_id="rename")
    rec.stop()
    events = _events(d, info["session"])
    assert _ends(events) == ["interrupted"]
    last, before_last = events[-1], events[-2]
    assert isinstance(last, Marker) and last.marker == "session_stop"
    assert isinstance(before_last, TaskEnd)
    assert read_status(d) is None


def test_withdrawing_consent_ends_the_task_as_interrupted(both: tuple[Dirs, Study]) -> None:
    d, study = both
    _backend, rec = _start(d, study)
    info = rec.start_task(task_id="rename")
    consent.withdraw(d)
    assert _wait(lambda: rec.state == "stopped")
    assert _ends(_events(d, info["session"])) == ["interrupted"]


def test_delete_last_ends_the_task_as_interrupted(both: tuple[Dirs, Study]) -> None:
    d, study = both
    _backend, rec = _start(d, study)
    rec.start_task(task_id="rename")
    rec.delete_last(1)  # the task's session is sealed (and trimmed): the task cannot go on
    assert rec.task_status()["running"] is None
    assert rec.task_status()["last"]["outcome"] == "interrupted"
    rec.stop()


def test_a_time_limit_ends_the_task_as_timed_out(both: tuple[Dirs, Study]) -> None:
    d, study = both
    notes: list[str] = []
    _backend, rec = _start(d, study)
    rec.notify = notes.append
    info = rec.start_task(task_id="find-flight")
    rec._check_task_limit(now_ns() + 60 * 10**9)  # a minute in: within its two
    assert rec.task_status()["running"] is not None
    rec._check_task_limit(now_ns() + 121 * 10**9)  # what the writer's once-a-second check does
    assert _wait(lambda: rec.task_status()["running"] is None)
    assert rec.task_status()["last"]["outcome"] == "timed out"
    assert _wait(lambda: bool(notes))
    assert "find-flight" in notes[0] and "time limit" in notes[0]
    rec.stop()
    assert _ends(_events(d, info["session"])) == ["timed out"]


def test_an_overdue_task_is_ended_by_one_thread_while_the_lock_is_busy(both: tuple[Dirs, Study]) -> None:
    import threading

    d, study = both
    _backend, rec = _start(d, study)
    rec.start_task(task_id="find-flight")
    late = now_ns() + 121 * 10**9

    def limit_threads() -> int:
        return sum(1 for t in threading.enumerate() if t.name == "optin-task-limit")

    with rec._lock:  # a slow delete-last or seal holds the lifecycle
        for _ in range(5):  # five seconds of the writer's checks
            rec._check_task_limit(late)
        assert limit_threads() == 1
    assert _wait(lambda: rec.task_status()["running"] is None)
    assert rec.task_status()["last"]["outcome"] == "timed out"
    rec.stop()


class _BrokenHooks:
    """Input hooks that cannot start (as when the X server refuses RECORD)."""

    def start(self) -> None:
        raise OSError(5, "Input/output error")

    def stop(self) -> None:
        pass

    def is_alive(self) -> bool:
        return False


def test_capture_failing_in_the_tasks_session_ends_it_interrupted(
    both: tuple[Dirs, Study], monkeypatch: pytest.MonkeyPatch
) -> None:
    d, study = both
    backend, rec = _start(d, study)
    monkeypatch.setattr(backend, "input_hooks", lambda *a, **k: _BrokenHooks())
    with pytest.raises(OSError):
        rec.start_task(task_id="rename")
    assert rec.state == "error" and rec.task_status()["running"] is None
    (newest,) = [s for s in list_sessions(d) if s.id == rec.session_id]
    events = _events(d, newest.id)
    assert [e.KIND for e in _task_records(events)] == ["task_start", "task_end"]
    assert _ends(events) == ["interrupted"]


def test_review_is_refused_while_a_task_runs(both: tuple[Dirs, Study]) -> None:
    d, study = both
    _backend, rec = _start(d, study)
    rec.start_task(task_id="rename")
    with pytest.raises(UsageError, match="task rename is running"):
        rec.seal_for_review()
    rec.finish_task("done")
    assert rec.seal_for_review()
    rec.stop()


# --- giving up ----------------------------------------------------------------------------------


def test_a_given_up_task_leaves_nothing_in_the_store(both: tuple[Dirs, Study]) -> None:
    d, study = both
    backend, rec = _start(d, study)
    hooks_of(backend).emit(KeyPress(now_ns(), "a", None, 97, ()))  # before the task: kept
    before = rec.session_id
    info = rec.start_task(instruction=CANARY)
    hooks_of(backend).emit(KeyPress(now_ns(), TYPED, None, ord(TYPED), ()))
    rec.pause()
    ended = rec.abandon_task()
    assert ended["outcome"] == "abandoned" and ended["id"] == info["id"]
    assert ended["deleted"]["session_id"] == info["session"] and ended["deleted"]["segments"] >= 1
    assert rec.state == "paused" and rec.session_id not in (before, info["session"])  # goes on, paused
    rec.resume()
    rec.stop()
    assert not (d.sessions / info["session"]).exists()
    sessions = {s.id for s in list_sessions(d)}
    assert info["session"] not in sessions and before in sessions
    left: list[Event] = []
    for sid in sessions:
        left += _events(d, sid)
    assert _task_records(left) == []
    assert [e.char for e in left if isinstance(e, KeyPress)] == ["a"]
    for path in d.data.rglob("*"):
        if path.is_file():
            assert b"Zorblax" not in path.read_bytes(), path


def test_abandon_and_finish_need_a_running_task(both: tuple[Dirs, Study]) -> None:
    d, study = both
    _backend, rec = _start(d, study)
    with pytest.raises(UsageError, match="no task is running"):
        rec.abandon_task()
    with pytest.raises(UsageError, match="no task is running"):
        rec.finish_task("done")
    rec.start_task(task_id="rename")
    with pytest.raises(UsageError, match="done or failed"):
        rec.finish_task("abandoned")
    rec.stop()
    with pytest.raises(UsageError, match="stopped"):
        rec.finish_task("done")


# --- a give-up chosen before the task ended (the tray's dialog was open) ----------------------------


def _session_ids(d: Dirs) -> set[str]:
    return {s.id for s in list_sessions(d)}


def test_giving_up_the_task_meant_deletes_it(both: tuple[Dirs, Study]) -> None:
    d, study = both
    _backend, rec = _start(d, study)
    info = rec.start_task(task_id="rename")
    ended = rec.abandon_task("rename", expected_session=info["session"])
    assert ended["outcome"] == "abandoned" and "ended_as" not in ended
    assert ended["deleted"]["session_id"] == info["session"]
    rec.stop()
    assert info["session"] not in _session_ids(d)


@pytest.mark.parametrize("how", ["done", "timed out"])
def test_a_task_that_ended_meanwhile_in_the_session_still_recorded_is_deleted_all_the_same(
    both: tuple[Dirs, Study], how: str
) -> None:
    """Done from the command line, or timed out, while the tray's "Give up" dialog was open: its session
    is still the one being recorded, so the volunteer's wish is carried out."""
    d, study = both
    backend, rec = _start(d, study)
    info = rec.start_task(task_id="find-flight")
    hooks_of(backend).emit(KeyPress(now_ns(), TYPED, None, ord(TYPED), ()))
    if how == "done":
        rec.finish_task("done")
    else:
        rec._check_task_limit(now_ns() + 121 * 10**9)
        assert _wait(lambda: rec.task_status()["running"] is None)
    rec.pause()
    assert rec.session_id == info["session"]
    ended = rec.abandon_task("find-flight", expected_session=info["session"])
    assert ended["outcome"] == "abandoned" and ended["ended_as"] == how and ended["id"] == "find-flight"
    assert ended["deleted"]["session_id"] == info["session"]
    assert rec.state == "paused" and rec.session_id != info["session"]  # goes on, in the same state
    assert rec.task_status()["last"]["outcome"] == "abandoned"
    with pytest.raises(UsageError, match=r"task find-flight was already given up.*already deleted"):
        rec.abandon_task("find-flight")  # a second click: nothing more, and it says so
    rec.resume()
    rec.stop()
    assert info["session"] not in _session_ids(d) and not (d.sessions / info["session"]).exists()
    left: list[Event] = []
    for sid in _session_ids(d):
        left += _events(d, sid)
    assert _task_records(left) == [] and not [e for e in left if isinstance(e, KeyPress)]


def test_a_give_up_never_deletes_the_task_that_started_since(both: tuple[Dirs, Study]) -> None:
    d, study = both
    _backend, rec = _start(d, study)
    first = rec.start_task(task_id="find-flight")
    rec.finish_task("done")
    second = rec.start_task(task_id="rename")  # a new task, in a new session
    with pytest.raises(UsageError) as refused:
        rec.abandon_task("find-flight", expected_session=first["session"])
    message = str(refused.value)
    assert "task find-flight already ended (done)" in message and "nothing was deleted" in message
    assert f"`optin sessions delete {first['session']}`" in message
    running = rec.task_status()["running"]
    assert running is not None and running["id"] == "rename" and rec.session_id == second["session"]
    rec.finish_task("done")
    rec.stop()
    assert {first["session"], second["session"]} <= _session_ids(d)  # neither was touched


def test_the_same_study_task_started_again_is_not_the_one_given_up(both: tuple[Dirs, Study]) -> None:
    """The tray names the task by its id and the session it began: a study's task started anew has the
    same id, but it is not the one the volunteer saw."""
    d, study = both
    _backend, rec = _start(d, study)
    first = rec.start_task(task_id="rename")
    rec.finish_task("done")
    again = rec.start_task(task_id="rename")
    with pytest.raises(UsageError, match=f"optin sessions delete {first['session']}"):
        rec.abandon_task("rename", expected_session=first["session"])
    assert rec.task_status()["running"]["session"] == again["session"]
    rec.stop()
    assert {first["session"], again["session"]} <= _session_ids(d)


def test_a_give_up_after_the_session_moved_on_names_the_command_that_deletes_it(
    both: tuple[Dirs, Study], capsys: pytest.CaptureFixture[str]
) -> None:
    """The task ended and its session was sealed (here for review): refused, and the command the message
    names really deletes it while optin records on."""
    d, study = both
    _backend, rec = _start(d, study)
    info = rec.start_task(task_id="rename")
    rec.finish_task("done")
    sealed = rec.seal_for_review()
    assert sealed == info["session"]
    with pytest.raises(UsageError) as refused:
        rec.abandon_task("rename", expected_session=info["session"])
    assert refused.value.exit_code == 2
    assert f"Fix: delete its session with `optin sessions delete {sealed}`" in str(refused.value)
    assert sealed in _session_ids(d)
    assert cli.main(["sessions", "delete", sealed]) == 0  # the fix, as written, while recording
    assert f"deleted session {sealed}" in capsys.readouterr().out
    with pytest.raises(UsageError, match=f"its session {sealed} is already deleted"):
        rec.abandon_task("rename")
    rec.stop()


def test_a_task_interrupted_by_delete_last_is_not_deleted_again(both: tuple[Dirs, Study]) -> None:
    d, study = both
    _backend, rec = _start(d, study)
    info = rec.start_task(task_id="rename")
    rec.delete_last(3600)  # ends it interrupted; its session (all of it) is deleted
    session = rec.session_id
    with pytest.raises(UsageError, match=r"already ended \(interrupted\).*is already deleted"):
        rec.abandon_task("rename", expected_session=info["session"])
    assert rec.session_id == session and rec.state == "recording"  # nothing was sealed
    rec.stop()


def test_a_give_up_of_a_task_optin_does_not_know_is_refused_without_echo(both: tuple[Dirs, Study]) -> None:
    d, study = both
    _backend, rec = _start(d, study)
    with pytest.raises(UsageError) as none_runs:
        rec.abandon_task("Zorblax")
    assert "no task runs" in str(none_runs.value) and "Zorblax" not in str(none_runs.value)
    assert "(an id of 7 characters)" in str(none_runs.value)
    assert "`optin sessions delete <session id>`" in str(none_runs.value)
    info = rec.start_task(task_id="rename")
    with pytest.raises(UsageError, match="task rename runs now") as other_runs:
        rec.abandon_task("Zorblax")
    assert "Zorblax" not in str(other_runs.value)
    assert rec.task_status()["running"]["id"] == "rename" and rec.session_id == info["session"]
    rec.stop()
    with pytest.raises(UsageError, match=r"already ended \(interrupted\).*optin sessions delete"):
        rec.abandon_task("rename")  # stopped: its session is sealed, kept
    assert info["session"] in _session_ids(d)


# --- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "kwargs", "needle"),
    [
        ("off", {"task_id": "rename"}, "asks for no tasks"),
        ("off", {"instruction": "Write a note"}, "asks for no tasks"),
        ("list", {"instruction": "Write a note"}, "its own tasks only"),
        ("free", {"task_id": "rename"}, "no task list"),
        ("both", {"task_id": "nope"}, "no task with that id .4 characters.*; its tasks: find-flight, rename"),
        ("both", {}, "one of the two"),
        ("both", {"task_id": "rename", "instruction": "x"}, "one of the two"),
        ("both", {"instruction": "   "}, "empty"),
        ("both", {"instruction": "x" * (MAX_INSTRUCTION + 1)}, f"at most {MAX_INSTRUCTION}"),
        ("both", {"instruction": "pay \u202eZorblax"}, r"U\+202E"),
        ("both", {"instruction": "two\nZorblax"}, r"U\+000A"),
        ("both", {"instruction": "zero\u200bZorblax"}, r"U\+200B"),
    ],
)
def test_what_the_study_does_not_allow_is_refused_with_the_fix(
    tmp_path: Path, mode: str, kwargs: dict[str, Any], needle: str
) -> None:
    d, study = _study(tmp_path, mode)
    _backend, rec = _start(d, study)
    session = rec.session_id
    with pytest.raises(UsageError, match=needle) as refused:
        rec.start_task(**kwargs)
    assert "Zorblax" not in str(refused.value)  # the text is not quoted
    assert rec.session_id == session and rec.task_status()["running"] is None  # nothing was sealed
    rec.stop()


def test_one_task_at_a_time_and_only_while_recording(both: tuple[Dirs, Study]) -> None:
    d, study = both
    _backend, rec = _start(d, study)
    rec.start_task(task_id="rename")
    with pytest.raises(UsageError, match="task rename is still running"):
        rec.start_task(task_id="find-flight")
    rec.finish_task("done")
    rec.pause()
    with pytest.raises(UsageError, match="paused; resume it"):
        rec.start_task(task_id="rename")
    rec.stop()
    with pytest.raises(UsageError, match="stopped"):
        rec.start_task(task_id="rename")


# --- the control socket and the command line ----------------------------------------------------


@pytest.fixture
def served(both: tuple[Dirs, Study]) -> Iterator[tuple[Dirs, FakeBackend, Recorder]]:
    """A real recorder serving the control socket, as ``optin run`` does."""
    if sys.platform == "win32":
        pytest.skip("Windows has no Unix sockets: the agent serves no control socket")
    d, study = both
    backend = fake_backend()
    rec = Recorder(d, backend, study)
    with agent_lock(d), ipc.ControlServer(d, rec):
        rec.start()
        try:
            yield d, backend, rec
        finally:
            rec.stop()


def test_tasks_over_the_socket_end_to_end(
    served: tuple[Dirs, FakeBackend, Recorder],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    d, _backend, rec = served
    caplog.set_level(logging.DEBUG)
    assert cli.main(["task", "status"]) == 0
    out = capsys.readouterr().out
    assert "one of the study's tasks (--id) or an instruction of your own" in out
    assert "find-flight [2 min]: Find the cheapest flight to Rome" in out and "running: no task" in out

    assert cli.main(["task", "start", "--id", "find-flight"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("the study's task find-flight started (time limit 2m00s, until ")
    assert str(rec.session_id) in out
    assert cli.main(["status"]) == 0
    assert "task find-flight running" in capsys.readouterr().out
    assert cli.main(["task", "start", "--instruction", "another"]) == 2
    assert "task find-flight is still running" in capsys.readouterr().err
    assert cli.main(["task", "done"]) == 0
    assert capsys.readouterr().out.startswith("task find-flight done after ")

    assert cli.main(["task", "start", "--instruction", CANARY, "--json"]) == 0
    started = json.loads(capsys.readouterr().out)
    assert started["source"] == "volunteer" and "Zorblax" not in json.dumps(started)
    assert cli.main(["status", "--json"]) == 0
    status_out = capsys.readouterr().out
    assert started["id"] in status_out and "Zorblax" not in status_out
    assert cli.main(["task", "status", "--json"]) == 0
    tasks = json.loads(capsys.readouterr().out)
    assert tasks["running"]["id"] == started["id"] and "Zorblax" not in json.dumps(tasks)
    assert cli.main(["task", "fail"]) == 0
    assert capsys.readouterr().out.startswith(f"task {started['id']} failed after ")

    assert cli.main(["task", "start", "--id", "rename"]) == 0
    sid = rec.session_id
    capsys.readouterr()
    assert cli.main(["task", "abandon"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("task rename given up after ") and f"session {sid}" in out
    assert not (d.sessions / str(sid)).exists()
    assert cli.main(["task", "abandon"]) == 2
    assert "no task is running; start one with `optin task start`" in capsys.readouterr().err
    assert "Zorblax" not in caplog.text


def test_the_command_line_checks_its_arguments_before_asking(
    served: tuple[Dirs, FakeBackend, Recorder], capsys: pytest.CaptureFixture[str]
) -> None:
    _d, _backend, rec = served
    assert cli.main(["task", "start"]) == 2
    assert "--id ID" in capsys.readouterr().err
    assert cli.main(["task", "done", "--id", "rename"]) == 2
    assert "takes no --id" in capsys.readouterr().err
    with pytest.raises(SystemExit) as both:
        cli.main(["task", "start", "--id", "a", "--instruction", "b"])
    assert both.value.code == 2
    assert cli.main(["task", "start", "--instruction", "bad \u202e"]) == 2
    assert "U+202E" in capsys.readouterr().err  # named, not shown
    assert rec.task_status()["running"] is None


def _optin(*argv: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """The real command line in its own process (the test's OPTIN_HOME is in its environment)."""
    return subprocess.run(
        [sys.executable, "-m", "agent", *argv],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
        env=dict(os.environ),
    )


@pytest.mark.parametrize("ending", ["\n", "\r\n", ""])
def test_an_instruction_read_from_standard_input_starts_the_task(
    served: tuple[Dirs, FakeBackend, Recorder], caplog: pytest.LogCaptureFixture, ending: str
) -> None:
    """``--instruction -``: the words come on standard input, never on the command line (shell history,
    /proc/<pid>/cmdline); one trailing line break is dropped; they are never printed back."""
    d, _backend, rec = served
    caplog.set_level(logging.DEBUG)
    proc = _optin("task", "start", "--instruction", "-", stdin=(CANARY + ending).encode())
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode()
    assert out.startswith("your task free-") and b"Zorblax" not in proc.stdout + proc.stderr
    running = rec.task_status()["running"]
    assert running is not None and running["source"] == "volunteer"
    assert rec.finish_task("done")["id"] == running["id"]
    rec.stop()
    (start,) = [e for e in _events(d, running["session"]) if isinstance(e, TaskStart)]
    assert start.instruction == CANARY  # the line break dropped, nothing else
    assert "Zorblax" not in caplog.text


@pytest.mark.parametrize(
    ("stdin", "needle"),
    [
        (
            ("x" * (MAX_INSTRUCTION - 5) + "Zorblax").encode() + b"\n",
            f"1002 characters; at most {MAX_INSTRUCTION}",
        ),
        (b"Zorblax " * 200_000, "more than 4002 bytes"),  # refused after 4003 bytes, not read whole
        (b"first line\nZorblax\n", r"U+000A"),
        (b"Zorblax \x1b[2J\n", "U+001B"),
        (b"Zorblax \xff\xfe\n", "not UTF-8 text (byte 8)"),
        (b"\n", "the instruction is empty"),
        (b"", "the instruction is empty"),
    ],
)
def test_a_bad_instruction_on_standard_input_is_refused_unshown(
    served: tuple[Dirs, FakeBackend, Recorder], stdin: bytes, needle: str
) -> None:
    _d, _backend, rec = served
    session = rec.session_id
    proc = _optin("task", "start", "--instruction", "-", stdin=stdin)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.decode()
    assert needle in err and "Zorblax" not in err and proc.stdout == b""
    assert rec.task_status()["running"] is None and rec.session_id == session


def test_task_help_says_how_to_keep_the_instruction_out_of_history() -> None:
    proc = _optin("task", "--help")
    assert proc.returncode == 0
    help_text = " ".join(proc.stdout.decode().split())
    assert "--instruction TEXT" in help_text and "standard input" in help_text and "history" in help_text
    assert "--task ID" in help_text


def test_abandon_names_the_task_meant_on_the_command_line(
    served: tuple[Dirs, FakeBackend, Recorder], capsys: pytest.CaptureFixture[str]
) -> None:
    d, _backend, rec = served
    assert cli.main(["task", "start", "--id", "rename"]) == 0
    first = rec.session_id
    assert cli.main(["task", "done"]) == 0
    capsys.readouterr()
    assert cli.main(["task", "abandon", "--task", "find-flight"]) == 2  # not the one that ran
    assert "`optin sessions delete <session id>`" in capsys.readouterr().err
    assert cli.main(["task", "abandon", "--task", "rename"]) == 0  # ended, its session still recorded
    out = capsys.readouterr().out
    assert out.startswith("task rename had ended (done) after ") and f"session {first}" in out
    assert not (d.sessions / str(first)).exists()
    assert cli.main(["task", "start", "--id", "find-flight"]) == 0
    second = rec.session_id
    capsys.readouterr()
    assert cli.main(["task", "abandon", "--task", "rename"]) == 2  # the next task is never deleted
    assert "task rename was already given up" in capsys.readouterr().err
    assert rec.task_status()["running"]["id"] == "find-flight" and (d.sessions / str(second)).is_dir()
    assert cli.main(["task", "done", "--task", "find-flight"]) == 2
    assert "takes no --task" in capsys.readouterr().err
    assert cli.main(["task", "abandon", "--task", "find-flight"]) == 0
    assert not (d.sessions / str(second)).exists()


@pytest.mark.skipif(sys.platform == "win32", reason="no control socket on Windows")
def test_without_an_agent_task_commands_exit_3(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["task", "status"]) == 3
    assert "no optin agent is running" in capsys.readouterr().err


def test_the_socket_refuses_bad_task_arguments(served: tuple[Dirs, FakeBackend, Recorder]) -> None:
    d, _backend, rec = served
    cases: list[tuple[dict[str, Any], str]] = [
        ({"id": 5}, "non-empty string"),
        ({"id": ""}, "non-empty string"),
        ({"id": "x" * 65}, "at most 64"),
        ({"id": "a\u202eb"}, "printable ASCII"),
        ({"instruction": ["a"]}, "must be a string"),
        ({"instruction": "x" * (MAX_INSTRUCTION + 1)}, "at most"),
        ({"instruction": "a\x1b[2Jb"}, r"U\+001B"),
        ({}, "one of the two"),
        ({"id": "rename", "instruction": "b"}, "one of the two"),
    ]
    for args, needle in cases:
        with pytest.raises(ipc.AgentError, match=needle) as refused:
            ipc.request(d, "task_start", **args)
        assert refused.value.exit_code == 2
    with pytest.raises(ipc.AgentError, match="no argument named"):
        ipc.request(d, "task_done", outcome="done")
    assert rec.task_status()["running"] is None


def test_a_task_that_cannot_be_queued_is_not_started(
    both: tuple[Dirs, Study], monkeypatch: pytest.MonkeyPatch
) -> None:
    d, study = both
    _backend, rec = _start(d, study)
    monkeypatch.setattr(rec, "_put", lambda _event: False)  # the queue stays full for a second
    with pytest.raises(OptinError, match="queue is full"):
        rec.start_task(task_id="rename")
    assert rec.task_status()["running"] is None and rec.state == "recording"
    rec.stop()


# --- export ------------------------------------------------------------------------------------


def test_a_free_task_exports_redacted_and_the_study_reads_it(tmp_path: Path) -> None:
    """A task's records travel in events.jsonl as well as in the task list: the volunteer's words
    redacted like typed text, and `optin inspect` accepts the bundle."""
    from pyrage import x25519

    from agent.export.bundle import export_session
    from agent.export.inspect import open_bundle

    identity = x25519.Identity.generate()
    path = tmp_path / "study.toml"
    path.write_text(demo_study_toml(str(identity.to_public())) + '\n[tasks]\nmode = "free"\n')
    d = dirs()
    study = install_study(d, path)
    consent.grant(d, study, study.terms_sha256)
    keys.init_keys(d)
    backend, rec = _start(d, study)
    canary = "alice.canary@example.com"
    info = rec.start_task(instruction=f"mail {canary} the booking")
    hooks_of(backend).emit(KeyPress(now_ns(), "r", None, 114, ()))
    rec.finish_task("done")
    rec.stop()
    res = export_session(d, info["session"], tmp_path / "out", study, approve=True)
    bundle = open_bundle(res.path, [identity])
    events = [json.loads(line) for line in bundle.members["events.jsonl"].splitlines()]
    (start,) = [e for e in events if e["k"] == "task_start"]
    assert start["instruction"] == "mail [EMAIL] the booking" and start["source"] == "volunteer"
    assert [e["outcome"] for e in events if e["k"] == "task_end"] == ["done"]
    assert bundle.manifest["redaction"]["counts"]["instructions"] == {"EMAIL": 1}
    assert all(canary.encode() not in blob for blob in bundle.members.values())


def test_the_studys_task_done_hotkey_ends_the_task_as_done_and_is_not_recorded(tmp_path: Path) -> None:
    d, study = _study(tmp_path, "both", done_hotkey="<ctrl>+<alt>+d")
    assert study.task_done_hotkey == "<ctrl>+<alt>+d"
    backend, rec = _start(d, study)
    try:
        rec.start_task(task_id="rename")
        sid = rec.session_id
        assert _wait(lambda: not rec._denied_now)
        fake = backend.last_input
        assert fake is not None
        fake.emit(KeyPress(now_ns(), "d", None, 100, ()))  # a plain d is typing
        fake.emit(KeyPress(now_ns(), None, "ctrl_l", 0xFFE3, ()))
        fake.emit(KeyPress(now_ns(), None, "alt_l", 0xFFE9, ("ctrl",)))
        fake.emit(KeyPress(now_ns(), "d", None, 100, ("alt", "ctrl")))  # the study's done keys
        fake.emit(KeyRelease(now_ns(), "d", None, 100, ("alt", "ctrl")))
        assert _wait(lambda: rec._task is None)
        assert rec.state == "recording"  # the task ended; recording goes on
    finally:
        rec.stop()
    events = _events(d, sid)
    assert _ends(events) == ["done"]
    assert [(e.char, e.modifiers) for e in events if isinstance(e, KeyPress) and e.char] == [("d", ())]
    assert not any(isinstance(e, KeyRelease) and e.char == "d" for e in events)
