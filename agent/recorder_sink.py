"""The recorder's sink: what the capture sources call with each event, on their own threads.

O(1) and before any lock: the sink reads a gate (:class:`agent.recorder_states.Intake`) and
the count of pauses under way, leaves out the pause hotkey, keys in a password field and
input to optin's own windows, and queues the rest for the writer; a full queue counts the
event as dropped.  It then asks for a paste's clipboard read and a frame where one is due
(never from a denied window, fail closed).  The hooks never judge deny rules: the writer
does, and publishes its verdict (:attr:`agent.writer_loop.WriterLoop.judged`).

:class:`RecorderSink` is a part of :class:`agent.control.Recorder`, which holds the state
it reads (declared below).
"""

from __future__ import annotations

import queue
import threading
from typing import TYPE_CHECKING

from agent.capture import deny
from agent.capture.screen import action_reason
from agent.events import ButtonPress, Event, Frame, FramePatch, KeyPress, KeyRelease, PointerMove, WindowFocus
from agent.keyboard.hotkey import Hotkey
from agent.keyboard.names import key_action, paste_chord
from agent.recorder_pauses import PAUSED_BY_VOLUNTEER
from agent.recorder_states import Intake
from agent.recorder_status import Counters

if TYPE_CHECKING:
    from agent.capture.sources import CaptureSources
    from agent.recorder_elements import RecorderElements
    from agent.writer_loop import WriterLoop

__all__ = ["RecorderSink"]


class RecorderSink:
    """The hook-thread side of :class:`agent.control.Recorder`: every method is O(1)."""

    counters: Counters
    _intake: Intake
    _pauses_pending: int
    _hotkey: Hotkey | None
    _done_hotkey: Hotkey | None
    _hotkeys_down: set[str]
    _sources: CaptureSources
    _queue: queue.Queue[Event | None]
    _drop_lock: threading.Lock
    _loop: WriterLoop | None
    _last_focus: WindowFocus | None
    _elements: RecorderElements | None

    if TYPE_CHECKING:  # agent.recorder_pauses.RecorderPauses provides it

        def _pause_soon(self, reason: str, name: str) -> None: ...

        def _task_done_soon(self) -> None: ...

    def _sink(self, event: Event) -> None:
        intake = self._intake
        if intake is not Intake.OPEN or self._pauses_pending:
            if intake is Intake.FAILED:
                self._count_drops(1)  # capture is being torn down after a failure: still counted
            return  # a pause was asked for: nothing more is taken, even before the hooks stop
        if isinstance(event, (KeyPress, KeyRelease)) and self._is_hotkey(event):
            return  # the pause and task-done hotkeys are never recorded
        sources = self._sources
        secure = sources.secure
        if secure is not None and type(event) in (WindowFocus, ButtonPress):
            secure.poke()  # the focus may move: ask the OS again (and, where it tells late, hold keys)
        if sources.own_input(event):
            with self._drop_lock:  # a count only: what was done on optin's own UI is not kept
                self.counters.own_ui += 1
            return
        if secure is not None and isinstance(event, (KeyPress, KeyRelease)):
            # a password field: the key is not recorded at all; focus unknown: held until it is known
            secure.admit(event, self._queue_event)
            if type(event) is KeyPress and key_action(event) == "hotkey":
                secure.poke()  # Tab, Enter, a shortcut: the next key goes where the focus went
            return
        self._queue_event(event)

    def _queue_event(self, event: Event) -> None:
        """Queue ``event`` for the writer (a full queue counts it as dropped) and do what follows."""
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self._count_drops(1)
            screen = self._sources.screen
            if screen is not None and isinstance(event, (Frame, FramePatch)):
                screen.frame_lost()  # on the encoder thread: the next frame must not be a patch on it
            return
        self._after_queued(event)

    @property
    def _denied_now(self) -> bool:
        """A denied window has the focus, or the writer has not judged the latest focus yet
        (fail closed).  O(1), no rule is evaluated here: hook threads ask it."""
        loop = self._loop
        if loop is None:
            return False
        focus, denied = loop.judged
        return denied or (focus is not self._last_focus and self._last_focus is not None)

    def _after_queued(self, event: Event) -> None:
        """Follow-ups of a queued event (hook threads, O(1)): focus state, paste, frame timing."""
        if isinstance(event, WindowFocus):
            self._last_focus = event  # judged by the writer, which wakes for it
        elif isinstance(event, KeyPress):
            paste = self._sources.paste  # the clipboard is read only where the keys are kept
            if (
                paste is not None
                and paste_chord(event)
                and not self._denied_now
                and deny.focus_known(self._last_focus)
            ):
                paste.request(event.t_ns)
        elements = self._elements
        if elements is not None and not self._denied_now:
            elements.after_queued(event)  # the UI element aimed at, looked up on its own thread
        screen = self._sources.screen
        # No frame timing from a denied window (its rhythm would show).  A focus change is asked
        # for before the writer has judged the new window: its one frame is masked like any other
        # (the screen watcher paints every window a rule matches, fail closed).
        if screen is not None and (type(event) is WindowFocus or not self._denied_now):
            reason = action_reason(event)
            if reason is not None:
                screen.action(event.t_ns, reason)
            elif type(event) is PointerMove:
                screen.activity(event.t_ns)

    def _is_hotkey(self, event: KeyPress | KeyRelease) -> bool:
        """A study hotkey's key press (it pauses, or ends the task as done) or the release that
        follows it (O(1))."""
        for which, hotkey in (("pause", self._hotkey), ("done", self._done_hotkey)):
            if hotkey is None or not hotkey.matches(event):
                continue
            if isinstance(event, KeyPress):
                self._hotkeys_down.add(which)
                if which == "pause":
                    self._pause_soon(PAUSED_BY_VOLUNTEER, "optin-hotkey")
                else:
                    self._task_done_soon()
                return True
            if which in self._hotkeys_down:
                self._hotkeys_down.discard(which)
                return True
        return False

    def _count_drops(self, n: int) -> None:
        with self._drop_lock:  # only on the slow path: a full queue or a failed store
            self.counters.dropped += n
