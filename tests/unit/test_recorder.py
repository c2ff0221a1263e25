"""The recorder pipeline on the fake backend: consent gate (P1), scopes, pause (P3),
loss accounting (P9) — hooks → bounded queue → writer → encrypted store."""

from __future__ import annotations

import itertools
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from agent import consent, control, recorder_status, writer_loop
from agent.backends import select_backend
from agent.backends.fake import FakeBackend
from agent.backends.virtual_display import wait_for
from agent.control import Recorder
from agent.errors import ConsentRequired, EnvironmentProblem, UsageError
from agent.events import (
    ButtonPress,
    ButtonRelease,
    Event,
    Frame,
    KeyPress,
    KeyRelease,
    Marker,
    Paste,
    PointerMove,
    Scroll,
    WindowFocus,
    now_ns,
)
from agent.paths import Dirs
from agent.store import keys
from agent.store.reader import list_sessions, read_session
from agent.store.writer import SessionWriter
from agent.study import Study
from tests.tools import Consented, fake_backend, focus_of, hooks_of


def _events(d: Dirs, rec: Recorder) -> list[Event]:
    assert rec.session_id is not None
    return read_session(d, rec.session_id, keys.load_identity(d)).events


def _marker(event: Event) -> Marker:
    """``event``, which the test expects to be a marker (a session starts and stops with one)."""
    assert isinstance(event, Marker), f"expected a marker, got {event.KIND}"
    return event


def _started(consented: Consented) -> tuple[Dirs, Study, FakeBackend, Recorder]:
    """A recorder on a new fake backend, started under the ``consented`` study."""
    d, study = consented
    backend = fake_backend()
    rec = Recorder(d, backend, study)
    rec.start()
    return d, study, backend, rec


def _wait(pred: Callable[[], bool], timeout: float = 5.0) -> bool:
    return wait_for(pred, timeout, interval=0.01)


def _judged(rec: Recorder) -> bool:
    """The writer has judged the latest focus the hooks saw against the deny rules."""
    loop = rec._loop
    return loop is not None and rec._last_focus is not None and loop.judged[0] is rec._last_focus


def paint_and_wait_for_a_grab(backend: FakeBackend) -> None:
    """Change the fake screen and wait until the recorder's screen watcher has seen it."""
    screen = backend.last_screen
    assert screen is not None
    screen.paint((200, 10, 10))
    grabs = screen.grabs
    assert _wait(lambda: screen.grabs > grabs)


def test_pipeline_stores_what_the_hooks_deliver(consented: Consented) -> None:
    d, study, backend, rec = _started(consented)
    assert rec.state == "recording"
    fake = backend.last_input
    assert fake is not None and fake.is_alive()
    assert _wait(lambda: rec.counters.frames == 1)  # the start frame
    paint_and_wait_for_a_grab(backend)  # the screen changed before the click
    fake.emit(PointerMove(now_ns(), 5, 6))
    fake.emit(ButtonPress(now_ns(), 5, 6, "left"))
    fake.emit(KeyPress(now_ns(), "x", None, 120, ()))
    backend.focus_window("Other", "OtherApp")
    assert _wait(lambda: rec.counters.frames == 2)  # the click frame
    rec.stop()
    assert rec.state == "stopped"
    events = _events(d, rec)
    kinds = [e.KIND for e in events]
    assert kinds[0] == "marker" and kinds[-1] == "marker"
    start = _marker(events[0])
    assert start.detail["study_id"] == study.id and start.detail["consent_sha256"] == study.text_sha256
    assert [(e.x, e.y) for e in events if isinstance(e, PointerMove)] == [(5, 6)]
    assert [e.char for e in events if isinstance(e, KeyPress)] == ["x"]
    # the painted screen is stored once: before the click, or already as the settled frame of
    # the focus change at start if the paint fell within its 500 ms
    frames = sorted((f for f in events if isinstance(f, Frame)), key=lambda f: f.t_ns)
    assert len(frames) == 2 and frames[0].reason == "start"
    assert frames[1].reason in {"click", "settled"}
    titles = [e.title for e in events if isinstance(e, WindowFocus)]
    assert titles == ["Fake window", "Other"]
    assert _marker(events[-1]).detail["dropped"] == 0
    (info,) = list_sessions(d)
    assert info.state == "closed" and info.dropped == 0


def test_nothing_starts_without_consent(study_file: Path, optin_home: Path) -> None:
    from agent.paths import dirs
    from agent.study import install_study

    d = dirs()
    study = install_study(d, study_file)
    keys.init_keys(d)
    backend = fake_backend()
    with pytest.raises(ConsentRequired):
        Recorder(d, backend, study).start()
    consent.grant(d, study, study.terms_sha256)
    consent.withdraw(d)
    with pytest.raises(ConsentRequired):
        Recorder(d, backend, study).start()
    assert backend.inputs == [] and backend.screens == [] and backend.focus_watchers == []
    assert not d.sessions.exists() or not any(d.sessions.iterdir())


def test_environment_problem_starts_nothing(consented: Consented) -> None:
    d, study = consented
    backend = FakeBackend(problem="no display here")
    with pytest.raises(EnvironmentProblem, match="no display here"):
        Recorder(d, backend, study).start()
    assert backend.inputs == [] and backend.screens == []
    assert not d.sessions.exists() or not any(d.sessions.iterdir())


def test_only_consented_scopes_are_captured(consented: Consented) -> None:
    d, study = consented
    consent.grant(d, study, study.terms_sha256, ["pointer"])
    backend = fake_backend()
    rec = Recorder(d, backend, study)
    rec.start()
    assert backend.screens == []  # not even started
    # the focus is watched for the deny rules, but without the titles scope it is never stored
    backend.focus_window("Inbox", "Thunderbird")
    hooks_of(backend).emit(KeyPress(now_ns(), "k", None, 107, ()))
    hooks_of(backend).emit(PointerMove(now_ns(), 1, 2))
    rec.stop()
    kinds = {e.KIND for e in _events(d, rec)}
    assert kinds == {"marker", "pointer_move"}


def test_pause_stops_the_hooks_themselves(consented: Consented) -> None:
    d, _study, backend, rec = _started(consented)
    first = hooks_of(backend)
    rec.pause()
    assert rec.state == "paused"
    assert not first.is_alive()
    assert first.emit(PointerMove(now_ns(), 9, 9)) is False  # the hook itself is stopped
    assert not focus_of(backend).is_alive()
    rec.resume()
    second = hooks_of(backend)
    assert second is not first and second.is_alive()
    second.emit(PointerMove(now_ns(), 7, 7))
    rec.stop()
    events = _events(d, rec)
    assert [e.marker for e in events if isinstance(e, Marker) and e.marker != "screen_layout"] == [
        "session_start",
        "pause",
        "resume",
        "session_stop",
    ]
    assert [(e.x, e.y) for e in events if isinstance(e, PointerMove)] == [(7, 7)]


def test_a_full_queue_drops_and_counts_never_silently(
    consented: Consented, monkeypatch: pytest.MonkeyPatch
) -> None:
    d, study = consented
    monkeypatch.setattr(control, "QUEUE_SIZE", 8)
    gate = threading.Event()
    original = SessionWriter.write_events

    def slow_write(self: SessionWriter, events: Iterable[Event]) -> None:
        gate.wait(5)
        return original(self, events)

    monkeypatch.setattr(SessionWriter, "write_events", slow_write)
    backend = fake_backend()
    consent.grant(d, study, study.terms_sha256, ["pointer"])
    rec = Recorder(d, backend, study)
    rec.start()
    emitted = 200
    for i in range(emitted):
        hooks_of(backend).emit(PointerMove(now_ns(), i, i))
    gate.set()
    rec.stop()
    stored = [e for e in _events(d, rec) if isinstance(e, PointerMove)]
    assert rec.counters.dropped > 0
    # every event is stored, merged by the 50 Hz cap, or counted as dropped
    assert len(stored) + rec.counters.coalesced + rec.counters.dropped == emitted
    assert _marker(_events(d, rec)[-1]).detail["dropped"] == rec.counters.dropped
    (info,) = list_sessions(d)
    assert info.dropped == rec.counters.dropped
    assert rec.status()["dropped"] == rec.counters.dropped


def test_a_frame_the_full_queue_drops_is_never_the_base_of_a_stored_patch(consented: Consented) -> None:
    """Frames are stored as patches on the frame before (docs/format.md, Frame patches): one the
    full queue drops is counted, and the frame after it is a keyframe, so no stored patch is lost."""
    import io
    import queue

    from PIL import Image

    from agent.events import FramePatch

    d, _study, backend, rec = _started(consented)
    assert _wait(lambda: rec.counters.frames == 1)  # the start frame
    put, dropped = rec._queue.put_nowait, list[Event | None]()

    def full_once_for_a_frame(event: Event | None) -> None:
        if isinstance(event, (Frame, FramePatch)) and not dropped:
            dropped.append(event)
            raise queue.Full
        put(event)

    rec._queue.put_nowait = full_once_for_a_frame  # type: ignore[assignment]
    screen, fake = backend.last_screen, hooks_of(backend)
    assert screen is not None
    for colour in ((200, 10, 10), (10, 200, 10), (10, 10, 200)):  # a small change, then a click: a patch
        screen.paint(colour, (0, 0, 16, 16))
        grabs = screen.grabs
        assert _wait(lambda: screen.grabs > grabs + 1)  # noqa: B023 - one that started after the paint
        fake.emit(ButtonPress(now_ns(), 5, 6, "left"))
        assert _wait(lambda: bool(dropped))
    assert _wait(lambda: rec._screen is not None and rec._screen.frames >= 4)  # start, dropped, 2 more
    time.sleep(0.7)  # the last click's settled frame
    rec.stop()
    assert rec.counters.dropped >= 1 and len(dropped) == 1
    raw = read_session(d, str(rec.session_id), keys.load_identity(d), raw=True).events
    images = [e for e in raw if isinstance(e, (Frame, FramePatch))]
    after = images[1]  # the first image stored after the dropped one
    assert isinstance(after, Frame) or after.base is None, "a patch on a frame that was never stored"
    data = read_session(d, str(rec.session_id), keys.load_identity(d))
    assert not data.problems
    frames = [e for e in data.events if isinstance(e, Frame)]
    assert len(frames) == len(images)
    with Image.open(io.BytesIO(max(frames, key=lambda f: f.t_ns).data)) as last:
        assert last.getpixel((5, 5)) == (10, 10, 200)  # what the screen showed last is stored


# -- failures: capture never goes on silently, never claims to record when it does not ---------


def test_store_failure_stops_capture_counts_loss_and_says_why(
    consented: Consented, monkeypatch: pytest.MonkeyPatch
) -> None:
    d, study = consented
    consent.grant(d, study, study.terms_sha256, ["pointer"])

    def full_disk(self: SessionWriter, events: Iterable[Event]) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(SessionWriter, "write_events", full_disk)
    backend = fake_backend()
    rec = Recorder(d, backend, study)
    rec.start()
    hook = hooks_of(backend)
    for i in range(10):
        hook.emit(PointerMove(now_ns(), i, i))
    assert _wait(lambda: rec.state == "error")
    assert rec.error == "writing the encrypted store failed (No space left on device)"
    assert _wait(lambda: not hook.is_alive())  # the hooks themselves are stopped
    assert rec.counters.dropped >= 10  # the lost batch is counted (P9)
    rec.stop()  # returns at once; idempotent
    assert rec.state == "error"


def test_failure_messages_never_quote_what_failed(
    consented: Consented, monkeypatch: pytest.MonkeyPatch
) -> None:
    d, study = consented

    def leaky(self: SessionWriter, events: Iterable[Event]) -> None:
        raise ValueError("typed-secret-canary")

    monkeypatch.setattr(SessionWriter, "write_events", leaky)
    rec = Recorder(d, select_backend("fake"), study)
    rec.start()
    assert _wait(lambda: rec.state == "error")
    assert rec.error is not None and "ValueError" in rec.error
    assert "canary" not in rec.error


class _BrokenHooks:
    def start(self) -> None:
        raise OSError(5, "Input/output error")

    def stop(self) -> None:
        pass

    def is_alive(self) -> bool:
        return False


def test_a_source_that_fails_to_start_stops_everything(
    consented: Consented, monkeypatch: pytest.MonkeyPatch
) -> None:
    d, study = consented
    backend = fake_backend()
    monkeypatch.setattr(backend, "input_hooks", lambda *a, **k: _BrokenHooks())
    rec = Recorder(d, backend, study)
    with pytest.raises(OSError):
        rec.start()
    assert rec.state == "error" and rec.error == "capture could not start (Input/output error)"
    assert not focus_of(backend).is_alive()  # started before the failing source, stopped again
    (info,) = list_sessions(d)
    assert info.state == "closed"  # the session is sealed, not left dangling


def test_a_failed_resume_does_not_leave_half_the_capture_running(
    consented: Consented, monkeypatch: pytest.MonkeyPatch
) -> None:
    _d, _study, backend, rec = _started(consented)
    rec.pause()
    monkeypatch.setattr(backend, "input_hooks", lambda *a, **k: _BrokenHooks())
    with pytest.raises(OSError):
        rec.resume()
    assert rec.state == "error"
    assert not any(w.is_alive() for w in backend.focus_watchers)


def test_withdrawing_consent_stops_a_running_recorder(consented: Consented) -> None:
    d, _study, backend, rec = _started(consented)
    consent.withdraw(d)
    assert _wait(lambda: rec.state == "stopped")
    assert rec.reason == "consent withdrawn"
    assert not hooks_of(backend).is_alive()
    stop = _marker(_events(d, rec)[-1])
    assert stop.marker == "session_stop" and stop.detail["reason"] == "consent withdrawn"


def test_no_indicator_pauses_and_its_return_resumes(consented: Consented) -> None:
    d, _study, backend, rec = _started(consented)
    rec.indicator_changed(False)
    assert rec.state == "paused" and rec.reason == "no indicator"
    assert not hooks_of(backend).is_alive()
    rec.indicator_changed(True)
    assert rec.state == "recording" and hooks_of(backend).is_alive()
    rec.pause()  # a volunteer's pause is not undone by the indicator coming back
    rec.indicator_changed(True)
    assert rec.state == "paused"
    rec.stop()
    pauses = [e.detail["reason"] for e in _events(d, rec) if isinstance(e, Marker) and e.marker == "pause"]
    assert pauses == ["no indicator", "volunteer"]


def test_status_file_exists_only_while_running(consented: Consented) -> None:
    d, study = consented
    rec = Recorder(d, select_backend("fake"), study)
    rec.start()
    status = control.read_status(d)
    assert status is not None
    assert status["state"] == "recording"
    rec.stop()
    assert control.read_status(d) is None
    assert not (d.runtime / "status.json").exists()


def test_a_slow_stop_still_writes_the_stop_marker(
    consented: Consented, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer must drain up to session_stop even when stopping capture takes a while."""
    from agent.backends import fake

    d, study = consented
    original = fake.FakeInput.stop

    def slow_stop(self: fake.FakeInput) -> None:
        time.sleep(0.5)  # longer than the writer's tick
        original(self)

    monkeypatch.setattr(fake.FakeInput, "stop", slow_stop)
    backend = fake_backend()
    rec = Recorder(d, backend, study)
    rec.start()
    consent.withdraw(d)
    assert _wait(lambda: rec.state == "stopped")
    markers = [e.marker for e in _events(d, rec) if isinstance(e, Marker) and e.marker != "screen_layout"]
    assert markers == ["session_start", "session_stop"]


def test_the_volunteers_pause_outlasts_the_indicators_return(consented: Consented) -> None:
    d, study = consented
    rec = Recorder(d, select_backend("fake"), study)
    rec.start()
    rec.indicator_changed(False)
    rec.pause()  # clicked while already paused for the missing icon
    rec.indicator_changed(True)
    assert rec.state == "paused" and rec.reason == "volunteer"
    rec.stop()


def test_a_recorder_stopped_before_it_started_cannot_start(consented: Consented) -> None:
    d, study = consented
    backend = fake_backend()
    rec = Recorder(d, backend, study)
    rec.stop()
    assert rec.state == "stopped"
    with pytest.raises(UsageError):
        rec.start()
    assert backend.inputs == []


def test_starting_recovers_a_session_a_crash_left_open(consented: Consented) -> None:
    d, study = consented
    crashed = SessionWriter.create(d, keys.load_recipient(d))
    crashed.write_events([PointerMove(now_ns(), 1, 1)])
    crashed.abort()  # exactly what kill -9 leaves: unsealed, meta says recording
    rec = Recorder(d, select_backend("fake"), study)
    rec.start()
    rec.stop()
    assert [r.session_id for r in rec.recovered] == [crashed.session_id]
    old = read_session(d, crashed.session_id, keys.load_identity(d))
    assert old.recovered and [(e.x, e.y) for e in old.events if isinstance(e, PointerMove)] == [(1, 1)]


def test_pointer_moves_are_capped_but_the_position_at_each_action_is_kept(consented: Consented) -> None:
    d, _study, backend, rec = _started(consented)
    fake = backend.last_input
    assert fake is not None
    t0 = now_ns()
    for i in range(1000):  # 1 s of a 1,000 Hz pointer, a click every 100 ms
        fake.emit(PointerMove(t0 + i * 1_000_000, i, i))
        if i % 100 == 99:
            fake.emit(ButtonPress(t0 + i * 1_000_000, i, i, "left"))
    rec.stop()
    events = _events(d, rec)
    moves = [e for e in events if isinstance(e, PointerMove)]
    assert 50 <= len(moves) <= 61  # 50 Hz, plus the move forced out before each of the 10 clicks
    for i, event in enumerate(events):
        if isinstance(event, ButtonPress):
            before = [e for e in events[:i] if isinstance(e, PointerMove)][-1]
            assert (before.x, before.y) == (event.x, event.y)
    stop = events[-1]
    assert isinstance(stop, Marker) and stop.detail["coalesced_moves"] == 1000 - len(moves)
    assert stop.detail["dropped"] == 0


def test_clicks_scrolls_and_keys_on_optins_own_ui_are_left_out(consented: Consented) -> None:
    d, study = consented
    backend = fake_backend()
    backend.own.rects = [(100, 0, 124, 24)]  # the tray icon
    rec = Recorder(d, backend, study)
    rec.start()
    assert backend.own.is_alive() and backend.own_pids == [frozenset({os.getpid()})]
    fake = backend.last_input
    assert fake is not None
    fake.emit(ButtonPress(now_ns(), 110, 10, "left"))  # on the icon: opens the menu
    fake.emit(PointerMove(now_ns(), 300, 300))
    fake.emit(ButtonRelease(now_ns(), 300, 300, "left"))  # released elsewhere: still the icon's click
    fake.emit(Scroll(now_ns(), 105, 5, 0, 1))
    backend.own.focus = True  # the menu has the keyboard
    fake.emit(KeyPress(now_ns(), "p", None, 112, ()))
    fake.emit(KeyRelease(now_ns(), "p", None, 112, ()))
    backend.own.focus = False
    fake.emit(ButtonPress(now_ns(), 99, 10, "left"))  # just outside the icon: the volunteer's click
    fake.emit(ButtonRelease(now_ns(), 99, 10, "left"))
    fake.emit(KeyPress(now_ns(), "q", None, 113, ()))
    rec.indicator_changed(True)
    assert backend.own.rescans == 1
    assert rec.status()["own_ui_left_out"] == 5
    rec.stop()
    assert not backend.own.is_alive()
    events = _events(d, rec)
    assert [(e.x, e.y) for e in events if isinstance(e, (ButtonPress, ButtonRelease))] == [(99, 10), (99, 10)]
    assert not [e for e in events if isinstance(e, Scroll)]
    assert [e.char for e in events if isinstance(e, (KeyPress, KeyRelease))] == ["q"]
    assert [(e.x, e.y) for e in events if isinstance(e, PointerMove)] == [(300, 300)]


def test_keys_typed_under_secure_input_are_never_recorded(consented: Consented) -> None:
    d, _study, backend, rec = _started(consented)
    fake = backend.last_input
    assert fake is not None
    fake.emit(KeyPress(now_ns(), "u", None, 117, ()))
    backend.secure_input = True  # a password field took the focus
    backend.focus_window("Sign in", "Browser")  # the focus change asks the OS at once
    assert _wait(lambda: rec._sources.secure is not None and rec._sources.secure.active)
    for ch in "hunter2":
        fake.emit(KeyPress(now_ns(), ch, None, ord(ch), ()))
        fake.emit(KeyRelease(now_ns(), ch, None, ord(ch), ()))
    fake.emit(ButtonPress(now_ns(), 5, 5, "left"))  # pointer events are still recorded
    backend.secure_input = None  # "cannot tell" keeps the gap open
    time.sleep(0.3)
    fake.emit(KeyPress(now_ns(), "x", None, 120, ()))
    backend.secure_input = False
    assert _wait(lambda: rec._sources.secure is not None and not rec._sources.secure.active)
    fake.emit(KeyPress(now_ns(), "v", None, 118, ()))
    rec.stop()
    events = _events(d, rec)
    assert [e.char for e in events if isinstance(e, KeyPress)] == ["u", "v"]
    assert [e.button for e in events if isinstance(e, ButtonPress)] == ["left"]
    gaps = [e.detail for e in events if isinstance(e, Marker) and e.marker == "secure_input"]
    assert gaps == [{"active": True}, {"active": False, "keys_left_out": 15}]


def test_a_gap_still_open_at_stop_is_closed_with_its_count(consented: Consented) -> None:
    d, study = consented
    backend = fake_backend()
    backend.secure_input = True
    rec = Recorder(d, backend, study)
    rec.start()
    assert backend.last_input is not None
    backend.last_input.emit(KeyPress(now_ns(), "s", None, 115, ()))
    rec.stop()
    gaps = [e.detail for e in _events(d, rec) if isinstance(e, Marker) and e.marker == "secure_input"]
    assert gaps == [{"active": True}, {"active": False, "keys_left_out": 1, "at_stop": True}]
    assert not [e for e in _events(d, rec) if isinstance(e, KeyPress)]


def test_a_timed_pause_ends_by_itself_and_says_so(
    consented: Consented, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_loop, "CHECK_EVERY_S", 0.02)
    d, study = consented
    backend = fake_backend()
    rec = Recorder(d, backend, study)
    said: list[str] = []
    rec.notify = said.append
    rec.start()
    with pytest.raises(UsageError, match="positive"):
        rec.pause(seconds=0)
    rec.pause(seconds=0.3)
    assert rec.state == "paused" and not hooks_of(backend).is_alive()
    assert rec.status()["paused_until"].endswith("Z")
    assert _wait(lambda: said == ["optin is recording again: the pause has ended"])  # said once resumed
    assert rec.state == "recording" and hooks_of(backend).is_alive()
    assert rec.status()["paused_until"] is None
    rec.stop()


def test_the_volunteers_pause_survives_a_restart(consented: Consented) -> None:
    d, study, _backend, rec = _started(consented)
    rec.pause()  # until resumed
    rec.stop()
    again_backend = fake_backend()
    again = Recorder(d, again_backend, study)
    again.start()
    assert again.state == "paused" and again.reason == "volunteer"
    assert again_backend.last_input is None  # no hook was ever started
    assert again.status()["paused_until"] == "resumed"
    again.resume()
    assert again.state == "recording" and hooks_of(again_backend).is_alive()
    again.stop()
    third = Recorder(d, select_backend("fake"), study)
    third.start()  # resumed before the last stop: records at once
    assert third.state == "recording"
    third.stop()
    restored = [e.detail for e in _events(d, again) if isinstance(e, Marker) and e.marker == "pause"]
    assert restored == [{"reason": "volunteer", "restored": True}]


def test_idle_and_a_locked_screen_pause_and_presence_resumes(
    consented: Consented, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_loop, "CHECK_EVERY_S", 0.02)
    d, _study, backend, rec = _started(consented)
    backend.idle = 11 * 60.0  # the default idle limit is 10 minutes
    assert _wait(lambda: rec.state == "paused" and rec.reason == "idle")
    assert not hooks_of(backend).is_alive()
    backend.idle = 0.5
    assert _wait(lambda: rec.state == "recording")
    backend.locked = True
    assert _wait(lambda: rec.state == "paused" and rec.reason == "screen locked")
    rec.pause()  # the volunteer's pause takes over: unlocking does not resume it
    backend.locked = False
    time.sleep(0.2)
    assert rec.state == "paused" and rec.reason == "volunteer"
    rec.resume()
    rec.stop()
    reasons = [e.detail["reason"] for e in _events(d, rec) if isinstance(e, Marker) and e.marker == "pause"]
    assert reasons == ["idle", "screen locked"]


def test_delete_last_from_a_running_recorder_rolls_over_to_a_new_session(consented: Consented) -> None:
    d, _study, backend, rec = _started(consented)
    first = rec.session_id
    hooks_of(backend).emit(KeyPress(now_ns(), "s", None, 115, ()))
    with pytest.raises(UsageError, match="positive"):
        rec.delete_last(0)
    report = rec.delete_last(300)  # the whole session started within the last five minutes
    assert [item["session_id"] for item in report["deleted"]] == [first]
    assert rec.state == "recording" and rec.session_id != first
    assert hooks_of(backend).is_alive()
    hooks_of(backend).emit(KeyPress(now_ns(), "k", None, 107, ()))
    rec.pause()
    paused_report = rec.delete_last(300)
    assert rec.state == "paused" and paused_report["deleted"]  # still paused, in a third session
    rec.resume()
    rec.stop()
    (info,) = list_sessions(d)
    assert info.id == rec.session_id and info.state == "closed"
    start = _marker(_events(d, rec)[0])
    assert start.detail["after"] == "delete-last"


def test_opting_out_stops_withdraws_and_deletes_everything(consented: Consented) -> None:
    d, study = consented
    earlier = Recorder(d, select_backend("fake"), study)
    earlier.start()
    earlier.stop()
    backend = fake_backend()
    rec = Recorder(d, backend, study)
    rec.start()
    rec.pause(seconds=600)
    summary = rec.opt_out()
    assert summary["sessions"] == 2 and summary["bytes"] > 0
    assert rec.state == "stopped" and rec.reason == "opted out"
    assert consent.current_receipt(d) is None and list_sessions(d) == []
    assert not (d.config / "pause.json").exists()
    assert keys.load_recipient(d)  # the keys stay
    with pytest.raises(ConsentRequired):
        Recorder(d, select_backend("fake"), study).start()


def test_the_pause_hotkey_pauses_and_is_not_recorded(consented: Consented) -> None:
    d, _study, backend, rec = _started(consented)
    fake = backend.last_input
    assert fake is not None
    fake.emit(KeyPress(now_ns(), "p", None, 112, ()))  # a plain p is typing
    fake.emit(KeyRelease(now_ns(), "p", None, 112, ()))
    fake.emit(KeyPress(now_ns(), None, "ctrl_l", 0xFFE3, ()))
    fake.emit(KeyPress(now_ns(), None, "alt_l", 0xFFE9, ("ctrl",)))
    fake.emit(KeyPress(now_ns(), "p", None, 112, ("alt", "ctrl")))  # the default hotkey
    assert _wait(lambda: rec.state == "paused" and rec.reason == "volunteer")
    rec.resume()
    rec.stop()
    presses = [(e.char, e.name) for e in _events(d, rec) if isinstance(e, KeyPress)]
    assert presses == [("p", None), (None, "ctrl_l"), (None, "alt_l")]
    assert [e.char for e in _events(d, rec) if isinstance(e, KeyRelease)] == ["p"]


def _pixel(frame: Frame, x: int, y: int) -> tuple[int, ...]:
    import io

    from PIL import Image

    pixel = Image.open(io.BytesIO(frame.data)).convert("RGB").getpixel((x, y))
    assert isinstance(pixel, tuple)  # an RGB image's pixel is a tuple
    return tuple(pixel)


def test_a_denied_window_keeps_its_input_out_and_is_masked_in_every_frame(consented: Consented) -> None:
    d, study = consented
    backend = fake_backend()
    vault = WindowFocus(0, "Passwords - KeePassXC", "KeePassXC", 77, 10, 10, 20, 20)
    backend.windows = [vault]  # on screen, not focused: masked anyway
    rec = Recorder(d, backend, study)
    rec.start()
    assert _wait(lambda: rec.counters.frames == 1)
    fake = backend.last_input
    assert fake is not None
    fake.emit(KeyPress(now_ns(), "a", None, 97, ()))
    backend.focus_window("Passwords - KeePassXC", "KeePassXC")
    for ch in "s3cret":
        fake.emit(KeyPress(now_ns(), ch, None, ord(ch), ()))
    fake.emit(ButtonPress(now_ns(), 15, 15, "left"))
    backend.focus_window("Inbox", "Thunderbird")
    fake.emit(KeyPress(now_ns(), "b", None, 98, ()))
    paint_and_wait_for_a_grab(backend)
    fake.emit(ButtonPress(now_ns(), 50, 40, "left"))
    assert _wait(lambda: rec.counters.frames == 2)
    rec.stop()
    events = _events(d, rec)
    assert [e.char for e in events if isinstance(e, KeyPress)] == ["a", "b"]
    assert [(e.x, e.y) for e in events if isinstance(e, ButtonPress)] == [(50, 40)]
    assert not any(isinstance(e, WindowFocus) and e.app_class == "KeePassXC" for e in events)
    gaps = [e.detail for e in events if isinstance(e, Marker) and e.marker == "deny"]
    assert [g["active"] for g in gaps] == [True, False] and gaps[1]["events_left_out"] == 7
    for frame in (f for f in events if isinstance(f, Frame)):
        assert _pixel(frame, 15, 15) == (128, 128, 128)  # the vault's rectangle is grey
        assert _pixel(frame, 5, 5) != (128, 128, 128)  # the rest is the screen


def test_optins_own_windows_are_masked_in_every_frame(consented: Consented) -> None:
    """A task's words being written in optin's dialog, or a session shown for review (parts of it
    since cut), must not be recorded again in the frames of the session that goes on."""
    d, study = consented
    backend = fake_backend()
    rec = Recorder(d, backend, study)
    rec.start()
    assert _wait(lambda: rec.counters.frames == 1)
    own = backend.own
    own.rects = [(30, 20, 50, 40)]  # a dialog of optin's appears
    paint_and_wait_for_a_grab(backend)
    fake = backend.last_input
    assert fake is not None
    fake.emit(ButtonPress(now_ns(), 5, 5, "left"))
    assert _wait(lambda: rec.counters.frames >= 2)  # a keyframe may come first
    rec.stop()
    first, *later = [f for f in _events(d, rec) if isinstance(f, Frame)]
    assert _pixel(first, 35, 25) != (128, 128, 128)  # before the dialog: the screen
    assert later
    for frame in later:
        assert _pixel(frame, 35, 25) == (128, 128, 128)  # the dialog's rectangle is grey
        assert _pixel(frame, 5, 5) != (128, 128, 128)  # the rest is the screen


def test_exclude_this_app_applies_at_once_and_is_remembered(consented: Consented) -> None:
    d, study, backend, rec = _started(consented)
    with pytest.raises(UsageError, match=r"title pattern is not a valid regular expression.*Fix:"):
        rec.exclude(title="([unclosed")
    with pytest.raises(UsageError, match=r"lookaround.*Fix:"):  # RE2 runs titles: no backtracking
        rec.exclude(title="pay(?=roll)")
    backend.focus_window("Payroll", "HRClient")
    fake = backend.last_input
    assert fake is not None
    fake.emit(KeyPress(now_ns(), "x", None, 120, ()))
    assert rec.exclude() == {"label": "HRClient", "app_class": "HRClient"}  # no name: the focused app
    fake.emit(KeyPress(now_ns(), "y", None, 121, ()))
    rec.stop()
    assert [e.char for e in _events(d, rec) if isinstance(e, KeyPress)] == ["x"]
    again = Recorder(d, select_backend("fake"), study)
    assert any(r.app_class == "HRClient" for r in again.rules)


def test_a_new_consent_version_stops_capture_until_agreed_again(
    consented: Consented, study_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent.study import install_study

    monkeypatch.setattr(writer_loop, "CHECK_EVERY_S", 0.02)
    d, _study, backend, rec = _started(consented)
    newer = study_file.with_name("study-v4.toml")
    newer.write_text(
        re.sub(r'consent_version = "[^"]*"', 'consent_version = "v-next"', study_file.read_text())
    )
    install_study(d, newer)  # the operator's new version reaches the volunteer
    assert _wait(lambda: rec.state == "stopped")
    assert rec.reason == "the study changed: agree again to record"
    assert not hooks_of(backend).is_alive()
    with pytest.raises(ConsentRequired):
        Recorder(d, select_backend("fake"), install_study(d, newer)).start()


def test_a_study_with_another_recipient_stops_capture_until_agreed_again(
    consented: Consented, study_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """P1: the same text and version but another recipient key is not what the volunteer agreed to."""
    from pyrage import x25519

    from agent.study import install_study

    monkeypatch.setattr(writer_loop, "CHECK_EVERY_S", 0.02)
    d, _study, backend, rec = _started(consented)
    other = str(x25519.Identity.generate().to_public())
    swapped = study_file.with_name("study-swapped.toml")
    swapped.write_text(
        re.sub(r'recipients = \["[^"]*"\]', f'recipients = ["{other}"]', study_file.read_text())
    )
    assert other in swapped.read_text()
    install_study(d, swapped)
    assert _wait(lambda: rec.state == "stopped")
    assert rec.reason == "the study changed: agree again to record"
    assert not hooks_of(backend).is_alive()
    with pytest.raises(ConsentRequired):
        Recorder(d, select_backend("fake"), install_study(d, swapped)).start()


def test_a_paste_records_the_clipboard_text_only_where_keys_are_kept(consented: Consented) -> None:
    d, _study, backend, rec = _started(consented)
    fake = backend.last_input
    assert fake is not None
    backend.set_clipboard("pasted words")
    ctrl_v = ("v", None, 118, ("ctrl",))
    backend.focus_window("notes.txt - gedit", "Gedit")
    # the writer judges each focus (hooks never run rules); until it has, the window counts as denied
    assert _wait(
        lambda: _judged(rec) and rec._last_focus is not None and rec._last_focus.app_class == "Gedit"
    )
    assert not rec._denied_now
    fake.emit(KeyPress(now_ns(), *ctrl_v))
    assert _wait(lambda: backend.clipboard_reads == ["clipboard"])
    backend.focus_window("Passwords.kdbx - KeePassXC", "KeePassXC")  # denied: never read
    assert _wait(lambda: rec._denied_now)
    fake.emit(KeyPress(now_ns(), *ctrl_v))
    backend.focus_window(None, None)  # unknown: never read either
    assert _wait(lambda: rec._last_focus is not None and rec._last_focus.app_class is None)
    fake.emit(KeyPress(now_ns(), *ctrl_v))
    fake.emit(KeyPress(now_ns(), "v", None, 118, ()))  # a plain v is not a paste
    time.sleep(0.2)
    rec.stop()
    assert backend.clipboard_reads == ["clipboard"]
    events = _events(d, rec)
    pastes = [e for e in events if isinstance(e, Paste)]
    assert [p.text for p in pastes] == ["pasted words"]
    key = next(e for e in events if isinstance(e, KeyPress) and e.modifiers == ("ctrl",))
    assert pastes[0].t_ns == key.t_ns + 1
    assert rec.status()["loss"]["pastes_lost"] == 0


def test_a_pause_takes_nothing_from_the_moment_it_is_asked(consented: Consented) -> None:
    """P3: while a lifecycle step holds the lock (a delete-last sealing a big session), a pause
    asked meanwhile already keeps every event out; the hooks stop as soon as the lock is free."""
    d, _study, backend, rec = _started(consented)
    hooks = backend.last_input
    assert hooks is not None
    hooks.emit(KeyPress(now_ns(), "a", None, 97, ()))
    asked = threading.Event()
    with rec._lock:  # as a long lifecycle step would

        def ask_and_pause() -> None:
            asked.set()
            rec.pause()

        pauser = threading.Thread(target=ask_and_pause)
        pauser.start()
        assert asked.wait(5)
        assert _wait(lambda: rec._pauses_pending > 0)
        hooks.emit(KeyPress(now_ns(), "b", None, 98, ()))  # the hook still runs: the sink refuses it
        assert rec.state == "recording"
    pauser.join(5)
    assert rec.state == "paused" and not hooks.is_alive()
    rec.stop()
    assert [e.char for e in _events(d, rec) if isinstance(e, KeyPress)] == ["a"]
    assert rec.counters.dropped == 0  # asked for, not lost


def test_durations_no_clock_can_hold_are_refused(consented: Consented) -> None:
    _d, _study, _backend, rec = _started(consented)
    for bad in (1e308, float("inf"), float("nan"), -1.0, 0):
        with pytest.raises(UsageError, match=r"pause"):
            rec.pause(seconds=bad)
        with pytest.raises(UsageError, match=r"delete-last"):
            rec.delete_last(bad)
    assert rec.state == "recording"
    rec.pause(seconds=60)
    assert rec.status()["paused_until"].endswith("Z")
    rec.stop()


def test_the_writer_judges_focus_and_the_hooks_fail_closed_until_it_has(consented: Consented) -> None:
    _d, _study, backend, rec = _started(consented)
    backend.focus_window("Passwords.kdbx - KeePassXC", "KeePassXC")
    assert _wait(lambda: _judged(rec) and rec._denied_now)
    backend.focus_window("notes.txt - gedit", "Gedit")
    assert _wait(lambda: _judged(rec) and not rec._denied_now)
    rec.exclude(app_class="Gedit")
    assert rec._denied_now  # at once, before the writer has judged under the new rules
    assert _wait(lambda: rec._loop is not None and rec._loop.judged[1] and _judged(rec))
    rec.stop()


def test_the_status_is_written_when_it_changes_not_every_second(
    consented: Consented, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle agent writes no status file every second; a change is written at the next check,
    and an unchanged status is written again every REPUBLISH_S."""
    monkeypatch.setattr(writer_loop, "CHECK_EVERY_S", 0.02)
    written: list[dict[str, object]] = []
    real = recorder_status.publish

    def publish(dirs: Dirs, status: dict[str, object]) -> None:
        written.append(status)
        real(dirs, status)

    monkeypatch.setattr(recorder_status, "publish", publish)
    _d, _study, backend, rec = _started(consented)
    time.sleep(0.5)  # about 25 checks
    assert written and len(written) <= 3, f"{len(written)} status files in 25 idle checks"
    assert all(a != b for a, b in itertools.pairwise(written))
    hooks_of(backend).emit(KeyPress(now_ns(), "s", None, 115, ()))
    assert _wait(
        lambda: written[-1]["events_written"] == rec.status()["events_written"] and written[-1] != written[-2]
    )
    monkeypatch.setattr(control, "REPUBLISH_S", 0.05)
    count = len(written)
    assert _wait(lambda: len(written) >= count + 3), "an unchanged status was never written again"
    assert written[-1] == written[-2]
    rec.stop()


def test_the_status_reports_what_waits_in_the_queues(
    consented: Consented, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``queues`` in the status: events waiting for the writer (the soak's check that the agent
    caught up), frames waiting for the encoder."""
    stalled = threading.Event()
    real = SessionWriter.write_events

    def slow_write(self: SessionWriter, events: Iterable[Event]) -> None:
        stalled.wait(5)
        real(self, events)

    monkeypatch.setattr(SessionWriter, "write_events", slow_write)
    _d, _study, backend, rec = _started(consented)
    for i in range(5):
        hooks_of(backend).emit(KeyPress(now_ns(), "s", None, 115 + i, ()))
    assert _wait(lambda: rec.status()["queues"]["events"] >= 3)
    stalled.set()
    assert _wait(lambda: rec.status()["queues"] == {"events": 0, "frames": 0})
    rec.stop()
