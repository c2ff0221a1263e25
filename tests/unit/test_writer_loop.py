"""agent.writer_loop.WriterLoop on its own: with nothing queued it sleeps until the next check
(an idle agent wakes once a second, not five times), and a change of deny rules wakes it at once."""

from __future__ import annotations

import queue
import threading
import time

import pytest

from agent import writer_loop
from agent.events import Event, KeyPress, Marker, now_ns
from agent.paths import Dirs
from agent.recorder_status import Counters
from agent.store.writer import SessionWriter
from agent.study import Study
from agent.writer_loop import CHECK_EVERY_S, WriterLoop
from tests.tools import Consented


class CountingWriter(SessionWriter):
    flushes = 0

    def flush(self, *, force_fsync: bool = False) -> None:
        self.flushes += 1
        super().flush(force_fsync=force_fsync)


def _loop(
    dirs: Dirs, study: Study, recipient: bytes
) -> tuple[WriterLoop, CountingWriter, queue.Queue[Event | None]]:
    events: queue.Queue[Event | None] = queue.Queue(64)
    writer = CountingWriter.create(dirs, recipient)
    assert isinstance(writer, CountingWriter)
    loop = WriterLoop(
        events,
        writer,
        Counters(),
        dirs=dirs,
        study=study,
        rules=(),
        keep_titles=True,
        checks=lambda: None,
        failed=lambda exc, lost: None,
    )
    return loop, writer, events


def _finish(loop: WriterLoop, events: queue.Queue[Event | None]) -> None:
    events.put(Marker(now_ns(), "session_stop", {}))
    assert loop.finish(5.0)


def test_an_idle_writer_wakes_once_a_check(consented: Consented, recipient: bytes) -> None:
    dirs, study = consented
    loop, writer, events = _loop(dirs, study, recipient)
    loop.start()
    time.sleep(0.1)
    before = writer.flushes
    time.sleep(2 * CHECK_EVERY_S)
    woke = writer.flushes - before
    assert 1 <= woke <= 3, f"{woke} wake-ups in two idle checks"
    events.put(KeyPress(now_ns(), "s", None, 115, ()))
    deadline = time.monotonic() + 2
    while writer.counts.get("key_press") != 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert writer.counts.get("key_press") == 1  # taken at once, not at the next check
    _finish(loop, events)


def test_new_deny_rules_are_judged_at_once(
    consented: Consented, recipient: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_loop, "CHECK_EVERY_S", 10.0)  # the next check is far: only a wake-up helps
    dirs, study = consented
    loop, _writer, events = _loop(dirs, study, recipient)
    loop.start()
    time.sleep(0.1)
    loop.set_rules(())
    assert loop.judged[1]  # denied until judged (fail closed)
    judged = threading.Event()
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline and not judged.is_set():
        if not loop.judged[1]:
            judged.set()
        time.sleep(0.005)
    assert judged.is_set(), "new rules waited for the next check"
    _finish(loop, events)
