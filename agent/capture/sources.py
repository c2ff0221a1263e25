"""The recorder's capture sources: started in order for the consented scopes, stopped together.

Order matters at start: optin's own-UI watcher and the secure-input gate run
before any hook, so the first click or key is already judged; the screen watcher
stores the screen as it is at start; the focus watcher always runs (the deny
rules need the focused window, whatever the scopes), the input hooks only for
the pointer and keyboard scopes.  :meth:`CaptureSources.stop` stops every source
even if one fails to, and adds what they lost to the session's counters.  A
source that fails to start is the caller's to clean up: :meth:`~CaptureSources.stop`
stops whatever had started.

The hook threads read :attr:`~CaptureSources.secure`, :attr:`~CaptureSources.paste`
and :attr:`~CaptureSources.screen` (each None while that source does not run) and
ask :meth:`~CaptureSources.own_input` whether input was done on optin's own UI:
all O(1), no I/O.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from agent.backends import Backend
from agent.capture import EventSink, Hooks, LossCounters, OwnUi
from agent.capture.clipboard import PasteWatch
from agent.capture.screen import ScreenWatch, Shot, polling_forced
from agent.capture.secure_input import SecureInputWatch
from agent.events import ButtonPress, ButtonRelease, Event, KeyPress, KeyRelease, Scroll
from agent.failures import describe_failure
from agent.frame_regions import RegionEncoder

logger = logging.getLogger(__name__)


class CaptureSources:
    """The sources of one recorder; :meth:`start` and :meth:`stop` are called under its lock."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._own_pids = {os.getpid()}
        self.own: OwnUi | None = None
        self.secure: SecureInputWatch | None = None
        self.paste: PasteWatch | None = None
        self.screen: ScreenWatch | None = None
        self._hooks: list[Hooks] = []
        self._own_buttons: dict[str, bool] = {}  # buttons pressed on optin's own UI, not yet released

    def own_input(self, event: Event) -> bool:
        """Whether ``event`` was done on optin's own tray, menu or windows (hook threads, O(1), no I/O).

        A release goes with its press, wherever the pointer went in between.
        """
        own = self.own
        if own is None:
            return False
        if isinstance(event, ButtonRelease):
            return self._own_buttons.pop(event.button, False)
        if isinstance(event, (ButtonPress, Scroll)):
            if not own.covers(event.x, event.y):
                return False
            if isinstance(event, ButtonPress):
                self._own_buttons[event.button] = True
            return True
        return isinstance(event, (KeyPress, KeyRelease)) and own.has_focus

    def own_pids(self) -> frozenset[int]:
        """optin's own processes: this one and the dialogs it started."""
        return frozenset(self._own_pids)

    def add_own_pid(self, pid: int) -> None:
        """Windows of process ``pid`` are optin's own too, now and after every restart."""
        self._own_pids.add(pid)
        own = self.own
        if own is not None:
            own.add_pid(pid)

    def start(self, scopes: tuple[str, ...], sink: EventSink, mask: Callable[[Shot], Shot]) -> None:
        """Start the sources ``scopes`` allow, each handing its events to ``sink``.

        :param mask: paints denied windows over in every frame (the screen watcher calls it).
        """
        backend = self._backend
        own = backend.own_ui(self._own_pids)
        own.start()  # before the hooks: optin's own windows are known when the first click comes
        self.own = own
        if "keyboard" in scopes and backend.HAS_SECURE_INPUT_DETECTION:
            secure = SecureInputWatch(
                backend.secure_input_active, sink, settle_s=backend.SECURE_INPUT_SETTLE_S
            )
            secure.start()  # before the hooks, like the own-UI answer
            self.secure = secure
        if "keyboard" in scopes:
            self.paste = PasteWatch(backend.read_clipboard, sink)
            self.paste.start()
        if "screen" in scopes:
            changes = None if polling_forced() else backend.screen_changes()
            # a new encoder per watcher: a session's (or a resumed capture's) first frame is a keyframe
            encoder = RegionEncoder()
            self.screen = ScreenWatch(
                backend.screen_grabber(), sink, mask=mask, changes=changes, encoder=encoder
            )
            self.screen.start()  # stores the screen as it is now ("start")
        # the deny rules need the focused window whatever the scopes; its title and class are
        # stored only with the window-titles scope (the writer drops them otherwise)
        self._hooks.append(backend.focus_watcher(sink))
        if "pointer" in scopes or "keyboard" in scopes:
            self._hooks.append(
                backend.input_hooks(sink, pointer="pointer" in scopes, keyboard="keyboard" in scopes)
            )
        for hook in self._hooks:
            hook.start()

    def stop(self, counters: LossCounters) -> None:
        """Stop every source; each one is stopped even if another fails to.

        The hooks and the screen grabber go first (P3 is about them); the helpers
        after, since answering the pastes already asked for may wait on the clipboard.
        """
        hooks, self._hooks = self._hooks, []
        for hook in reversed(hooks):
            try:
                hook.stop()
            except Exception as exc:  # the others must still stop
                logger.warning("a capture source failed to stop (%s)", describe_failure(exc))
        screen, self.screen = self.screen, None
        if screen is not None:
            try:
                screen.stop()
            except Exception as exc:  # the others must still stop
                logger.warning("the screen watcher failed to stop (%s)", describe_failure(exc))
            counters.frame_failures += screen.failures
            counters.frames_skipped += screen.skipped
        own, self.own = self.own, None
        if own is not None:
            own.stop()
        paste, self.paste = self.paste, None
        if paste is not None:
            paste.stop()  # answers the pastes already asked for
            counters.pastes_lost += paste.lost
        secure, self.secure = self.secure, None
        if secure is not None:
            secure.stop()
        self._own_buttons.clear()
