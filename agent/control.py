"""The running agent: owns the capture threads and the recording state.

Data flow (see docs/architecture.md)::

    pynput hooks ─┐
    focus watch  ─┼─> sink (O(1): bounded queue, drops counted) ─> writer thread ─> encrypted store
    grabber      ─┘          │
                             └─ a button press asks the grabber for a frame (O(1))

Nothing starts before consent (P1): :meth:`Recorder.start` asks the consent
gate first, then the backend whether this machine can capture at all, and
only then starts the writer, the grabber and the hooks, each only for the
scopes the volunteer granted.  :meth:`pause` stops the hooks and the grabber
themselves (P3), not merely a filter.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from agent import consent
from agent.backends import Backend
from agent.capture import Hooks
from agent.capture.screen import FrameTaker
from agent.consent import Receipt
from agent.errors import EnvironmentProblem, OptinError
from agent.events import ButtonPress, ClockAnchor, Event, Marker, now_ns
from agent.paths import Dirs, ensure_private_dir, write_private_file
from agent.store import keys
from agent.store.writer import SessionWriter
from agent.study import Study

logger = logging.getLogger(__name__)

#: Capacity of the queue between hooks and the writer.
QUEUE_SIZE = 65536
#: The writer wakes at least this often to flush (seconds).
WRITER_TICK_S = 0.2
#: Most events written in one encrypted record.
BATCH_MAX = 4096


@dataclass
class Counters:
    """Loss and volume counters (P9: loss is measured, never silent)."""

    dropped: int = 0  #: events refused by the full queue
    frame_failures: int = 0  #: screen grabs that failed
    frames_skipped: int = 0  #: frame requests still pending when capture stopped or paused
    written: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)

    def loss(self) -> dict[str, int]:
        """The loss counters, as stored with the session (P9)."""
        return {
            "events": self.dropped,
            "frame_failures": self.frame_failures,
            "frames_skipped": self.frames_skipped,
        }


class Recorder:
    """One recording session: hooks → queue → writer → encrypted segments.

    States: ``idle`` → ``recording`` ⇄ ``paused`` → ``stopped`` (or ``error``).
    Methods are called from one controlling thread (the tray or the CLI).
    """

    def __init__(self, dirs: Dirs, backend: Backend, study: Study) -> None:
        self.dirs = dirs
        self.backend = backend
        self.study = study
        self.state = "idle"
        self.error: str | None = None
        self.counters = Counters()
        self.session_id: str | None = None
        self._receipt: Receipt | None = None
        self._queue: queue.Queue[Event | None] = queue.Queue(QUEUE_SIZE)
        self._writer: SessionWriter | None = None
        self._writer_thread: threading.Thread | None = None
        self._hooks: list[Hooks] = []
        self._taker: FrameTaker | None = None
        self._accepting = False
        self._want_frames = False

    # -- the sink: runs on hook threads, O(1) ----------------------------------------------------

    def _sink(self, event: Event) -> None:
        if not self._accepting:
            return
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.counters.dropped += 1
            return
        if self._want_frames and type(event) is ButtonPress and self._taker is not None:
            self._taker.request("click")

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def scopes(self) -> tuple[str, ...]:
        return self._receipt.scopes if self._receipt else ()

    def start(self) -> None:
        """Check consent and the environment, open a session and start capturing.

        :raises ConsentRequired: no valid consent to this study's text.
        :raises EnvironmentProblem: this machine cannot capture.
        """
        self._receipt = consent.require(self.dirs, self.study)  # P1: before anything else
        self.backend.check_environment()
        recipient = keys.load_recipient(self.dirs)
        ensure_private_dir(self.dirs.data)
        self._writer = SessionWriter.create(self.dirs, recipient)
        self.session_id = self._writer.session_id
        anchor = ClockAnchor.now()
        self._accepting = True
        self._put_marker(
            "session_start",
            mono_ns=anchor.mono_ns,
            wall_ns=anchor.wall_ns,
            study_id=self.study.id,
            consent_version=self._receipt.consent_version,
            consent_sha256=self._receipt.text_sha256,
            scopes=list(self._receipt.scopes),
            backend=self.backend.name,
        )
        self._writer_thread = threading.Thread(target=self._write_loop, name="optin-writer", daemon=True)
        self._writer_thread.start()
        try:
            self._start_capture()
        except OptinError as exc:
            self._fail(str(exc))
            raise
        self.state = "recording"
        self._publish()

    def _start_capture(self) -> None:
        scopes = self.scopes
        if "screen" in scopes:
            self._taker = FrameTaker(self.backend.screen_grabber(), self._sink)
            self._want_frames = True
            self._taker.start()
            self._taker.request("start")
        if "window_titles" in scopes:
            self._hooks.append(self.backend.focus_watcher(self._sink))
        if "pointer" in scopes or "keyboard" in scopes:
            self._hooks.append(
                self.backend.input_hooks(
                    self._sink, pointer="pointer" in scopes, keyboard="keyboard" in scopes
                )
            )
        for hook in self._hooks:
            hook.start()

    def _stop_capture(self) -> None:
        for hook in reversed(self._hooks):
            hook.stop()
        self._hooks = []
        self._want_frames = False
        if self._taker is not None:
            self._taker.stop()
            self.counters.frame_failures += self._taker.failures
            self.counters.frames_skipped += self._taker.skipped
            self._taker = None

    def pause(self) -> None:
        """Stop the hooks and the grabber themselves (P3)."""
        if self.state != "recording":
            return
        t0 = now_ns()
        self._stop_capture()
        self._put_marker("pause", stop_ms=(now_ns() - t0) / 1e6)
        self.state = "paused"
        self._publish()

    def resume(self) -> None:
        if self.state != "paused":
            return
        self._put_marker("resume")
        self._start_capture()
        self.state = "recording"
        self._publish()

    def stop(self) -> None:
        """Stop capturing, write everything queued, seal the session."""
        if self.state in ("stopped", "idle"):
            return
        self._stop_capture()
        self._put_marker("session_stop", dropped=self.counters.dropped, loss=self.counters.loss())
        self._accepting = False
        self._queue.put(None)  # wakes and ends the writer; blocks only if the queue is full
        if self._writer_thread is not None:
            self._writer_thread.join()
        if self._writer is not None:
            self._writer.close(self.counters.loss())
        if self.state != "error":
            self.state = "stopped"
        self._publish()

    def _fail(self, reason: str) -> None:
        self.error = reason
        self.state = "error"
        self.stop()

    def _put_marker(self, name: str, **detail: Any) -> None:
        ev = Marker(now_ns(), name, detail)
        try:
            self._queue.put(ev, timeout=1.0)
        except queue.Full:
            self.counters.dropped += 1

    # -- writer thread ---------------------------------------------------------------------------

    def _write_loop(self) -> None:
        writer = self._writer
        if writer is None:
            return
        last_publish = 0.0
        while True:
            batch, done = self._next_batch()
            if batch:
                try:
                    writer.write_events(batch)
                except OSError as exc:
                    self._accepting = False
                    self.error = f"writing the encrypted store failed: {exc.strerror}"
                    self.state = "error"
                    logger.error("capture stopped: %s", self.error)
                    return
                self._count(batch)
            writer.flush()
            now = time.monotonic()
            if now - last_publish >= 1.0:
                last_publish = now
                self._publish()
            if done:
                return

    def _next_batch(self) -> tuple[list[Event], bool]:
        """Wait up to one tick for events; return ``(batch, writer_should_end)``.

        The writer ends once the recorder no longer accepts events and the
        queue is drained (``stop()`` queues its marker before it flips the flag).
        """
        batch: list[Event] = []
        try:
            item = self._queue.get(timeout=WRITER_TICK_S)
        except queue.Empty:
            return batch, not self._accepting
        while True:
            if item is not None:
                batch.append(item)
                if len(batch) >= BATCH_MAX:
                    return batch, False
            elif not self._accepting:
                return batch, True
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, False

    def _count(self, batch: list[Event]) -> None:
        c = self.counters
        c.written += len(batch)
        for ev in batch:
            c.by_kind[ev.KIND] = c.by_kind.get(ev.KIND, 0) + 1

    # -- state for `optin status` ----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The state as plain data (no captured content)."""
        return {
            "state": self.state,
            "error": self.error,
            "pid": os.getpid(),
            "session": self.session_id,
            "study": self.study.id,
            "scopes": list(self.scopes),
            "events_written": self.counters.written,
            "events_by_kind": dict(sorted(self.counters.by_kind.items())),
            "dropped": self.counters.dropped,
            "loss": self.counters.loss(),
        }

    def _publish(self) -> None:
        """Write the status file in the runtime dir (atomic; 0600)."""
        try:
            ensure_private_dir(self.dirs.runtime)
            write_private_file(
                self.dirs.runtime / "status.json", json.dumps(self.status()).encode(), durable=False
            )
        except (OSError, EnvironmentProblem) as exc:
            logger.warning("could not write status file: %s", exc)


def read_status(dirs: Dirs) -> dict[str, Any] | None:
    """The running agent's published status, or None when no agent runs."""
    path = dirs.runtime / "status.json"
    try:
        status: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    pid = status.get("pid")
    if not isinstance(pid, int) or not _pid_alive(pid):
        return None
    return status


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
