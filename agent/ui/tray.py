"""The tray icon: always shows whether optin records (P2).

A thin pystray view over :class:`agent.control.Recorder` (its tasks too: "Start a task…" opens the
task dialog, :func:`agent.ui.dialogs.ask_task`, and the recorder starts the task).  The icon is made
visible *before* the recorder starts, and the recorder is stopped before the
icon goes away, so capture never runs without the indicator.  pystray is
imported lazily (it fails to import without a display).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from agent.backends import Backend
from agent.backends.platform_calls import ENDING_SIGNALS, TERMINATE_SIGNALS
from agent.control import Recorder
from agent.errors import EnvironmentProblem, OptinError

logger = logging.getLogger(__name__)

#: Icon colours by recorder state ("filtered": recording, but a deny rule's window has the focus).
COLOURS = {
    "idle": (128, 128, 128),
    "recording": (200, 30, 30),
    "filtered": (40, 110, 200),
    "paused": (230, 160, 20),
    "stopped": (128, 128, 128),
    "error": (20, 20, 20),
}

#: How long the icon may take to appear before optin refuses to record (seconds).
INDICATOR_TIMEOUT_S = 5.0
#: How often the icon's visibility is checked and the tooltip refreshed while recording (seconds).
WATCH_EVERY_S = 1.0

#: Words for each state, shown in the tooltip.
WORDS = {
    "idle": "starting",
    "recording": "RECORDING",
    "filtered": "RECORDING, but nothing from the protected window that has the focus",
    "paused": "paused",
    "stopped": "stopped",
    "error": "stopped by an error",
}


def icon_image(state: str) -> Any:
    """A 64×64 icon: a filled disc in the state's colour (a ring when paused)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    colour = COLOURS.get(state, COLOURS["error"])
    if state == "paused":
        draw.ellipse((6, 6, 58, 58), outline=colour, width=10)
        draw.rectangle((22, 20, 28, 44), fill=colour)
        draw.rectangle((36, 20, 42, 44), fill=colour)
    elif state == "filtered":  # a shield: recording is on, this window is left out
        draw.ellipse((6, 6, 58, 58), fill=colour)
        draw.polygon([(32, 14), (48, 20), (46, 38), (32, 50), (18, 38), (16, 20)], fill=(255, 255, 255))
    else:
        draw.ellipse((6, 6, 58, 58), fill=colour)
    return img


def shown_state(status: dict[str, Any]) -> str:
    """The state the icon shows: the recorder's, or ``filtered`` while a denied window has the focus."""
    return "filtered" if status["state"] == "recording" and status.get("filtered") else str(status["state"])


def headline(s: dict[str, Any]) -> str:
    """The state in words, from a status: state, study, why, until when, the events and drops
    while recording or paused, and the error."""
    text = f"optin: {WORDS.get(shown_state(s), s['state'])} for study {s['study']}"
    if s["reason"]:
        text += f" ({s['reason']})"
    if s.get("paused_until") and s["paused_until"] != "resumed":
        text += f" until {s['paused_until'][11:16]} UTC"
    if s["state"] in ("recording", "paused"):
        text += f"; {s['events_written']} events saved, {s['dropped']} dropped"
    if s["error"]:
        text += f"; {s['error']}"
    return text


def tooltip(recorder: Recorder) -> str:
    """The tooltip in words: state, study, events and drops."""
    return headline(recorder.status())


def menu_view(menu: Any) -> tuple[Any, ...]:
    """What a pystray menu shows now: each item's words, whether it is shown, enabled and checked,
    and its submenu's, the callables evaluated as pystray evaluates them when it builds the menu."""
    return tuple(
        (
            item.text,
            item.visible,
            item.enabled,
            item.checked,
            None if item.submenu is None else menu_view(item.submenu),
        )
        for item in menu.items
    )


class Refresh:
    """Shows the recorder's state on the icon: its image, tooltip and menu (called every second,
    and after each menu action).  The image, a PNG that pystray writes to a file for GTK to load
    again, is redrawn only when the state it shows changed; the menu is rebuilt when anything it
    shows changed (:func:`menu_view`: its first line counts the events saved), not every second."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.state: str | None = None  # what the image shows
        self.menu: tuple[Any, ...] | None = None  # what the menu shows

    def __call__(self, icon: Any) -> None:
        status = self.recorder.status()
        state = shown_state(status)
        if state != self.state:
            icon.icon = icon_image(state)
            self.state = state
        icon.title = headline(status)  # pystray sets it only when it changed
        menu = getattr(icon, "menu", None)
        view = None if menu is None else menu_view(menu)
        if view is None or view != self.menu:
            icon.update_menu()
            self.menu = view


def run(
    recorder: Recorder,
    on_ready: Callable[[], None] | None = None,
    on_stopping: Callable[[], None] | None = None,
) -> None:
    """Show the icon, start the recorder, and block until Quit or a signal.

    :raises EnvironmentProblem: the icon could not be shown (nothing was recorded).
    :raises OptinError: the recorder could not start (after the icon is gone).
    """
    _choose_pystray_backend()
    import pystray

    failure: list[BaseException] = []

    refresh = Refresh(recorder)

    shown: list[Any] = []  # the icon, once made: menu actions notify through it
    menu = _menu(pystray, recorder, refresh, lambda message: shown[0].notify(message))  # noqa: PLW0108 - icon made below
    icon = pystray.Icon("optin", icon_image("idle"), "optin: starting", menu)
    shown.append(icon)
    recorder.notify = icon.notify

    gtk = type(icon).__module__.endswith(("_gtk", "_appindicator"))

    def setup(icon: Any) -> None:
        try:
            if gtk:  # pystray's GTK start-up resets SIGINT to the default: claim it again now
                _stop_on_signals(icon, (signal.SIGINT,), gtk=True)
            icon.visible = True  # P2: the indicator first, then capture
            if not wait_for(lambda: indicator_shown(icon, recorder.backend), INDICATOR_TIMEOUT_S):
                msg = (
                    f"the tray icon was not shown within {INDICATOR_TIMEOUT_S:.0f} s, and optin never "
                    "records without its indicator. Fix: check that your desktop's tray / status area "
                    "is running (optin doctor)"
                )
                raise EnvironmentProblem(msg)
            recorder.start()
            refresh(icon)
            _start_watcher(icon, recorder, refresh)
            if on_ready is not None:
                on_ready()
        except BaseException as exc:  # pystray swallows setup errors and would hang run() otherwise
            failure.append(exc)
            icon.stop()

    _stop_on_signals(icon, TERMINATE_SIGNALS if gtk else ENDING_SIGNALS, gtk=gtk)
    try:
        icon.run(setup=setup)
    finally:
        if on_stopping is not None:
            on_stopping()  # e.g. close the control socket before the recorder goes
        recorder.stop()
    if failure:
        raise failure[0]


def _menu(
    pystray: Any, recorder: Recorder, refresh: Callable[[Any], None], notify: Callable[[str], None]
) -> Any:
    """The tray menu; every action runs on a worker thread (pausing joins capture threads, which
    must not freeze the GTK main loop that also answers whether the icon is still shown)."""

    def action(fn: Callable[[], object], done: Callable[[Any], None] = refresh) -> Callable[[Any, Any], None]:
        def guarded() -> None:
            try:
                fn()
            except OptinError as exc:  # what failed and the fix; never captured content
                notify(str(exc))
            except Exception as exc:
                logger.error("a tray action failed (%s)", type(exc).__name__)
                notify("That did not work; see optin's log.")

        return lambda icon, _item: _in_background(guarded, lambda: done(icon))

    def pause_for(seconds: float | None) -> Callable[[Any, Any], None]:
        return action(lambda: recorder.pause(seconds=seconds))

    def delete_minutes(minutes: int) -> Callable[[Any, Any], None]:
        def delete() -> None:
            report = recorder.delete_last(minutes * 60)
            notify(f"Deleted the last {minutes} minutes ({report['segments']} pieces of recording).")

        return action(delete)

    def exclude_app() -> None:
        rule = recorder.exclude()
        notify(f"From now on nothing is recorded from {rule['app_class']}.")

    def withdraw() -> None:
        from agent.ui.dialogs import ask_withdraw

        choice = ask_withdraw(recorder.dirs, on_started=recorder.own_process)
        if choice is None:
            return
        if choice.delete:
            summary = recorder.opt_out()  # stops, and deletes every local recording
            notify(f"Consent withdrawn; {summary['sessions']} recordings were deleted.")
        else:
            recorder.stop()  # the consent check would stop it within a second; do it now
            notify("Consent withdrawn; recording stopped. Your recordings stay until you delete them.")

    def review() -> None:
        running = recorder.state in ("recording", "paused")
        sid = recorder.seal_for_review() if running else None  # what was recorded up to now
        open_review(sid, recorder.own_process)

    def opt_out() -> None:
        if confirm_opt_out(recorder.own_process):
            summary = recorder.opt_out()
            notify(f"You left the study; {summary['sessions']} recordings were deleted.")

    def stop_icon(icon: Any) -> None:
        if recorder.state not in ("recording", "paused"):
            icon.stop()
        else:
            refresh(icon)

    recording = lambda _i: recorder.state == "recording"  # noqa: E731 - pystray takes callables
    paused = lambda _i: recorder.state == "paused"  # noqa: E731
    running = lambda _i: recorder.state in ("recording", "paused")  # noqa: E731
    return pystray.Menu(
        pystray.MenuItem(lambda _i: tooltip(recorder), None, enabled=False),
        *_task_items(pystray, recorder, action, notify),
        pystray.MenuItem(
            "Pause",
            pystray.Menu(
                pystray.MenuItem("For 15 minutes", pause_for(15 * 60)),
                pystray.MenuItem("For 1 hour", pause_for(60 * 60)),
                pystray.MenuItem("Until I resume", pause_for(None)),
            ),
            visible=recording,
        ),
        pystray.MenuItem("Resume", action(recorder.resume), visible=paused),
        pystray.MenuItem(
            "Delete the last",
            pystray.Menu(*(pystray.MenuItem(f"{m} minutes", delete_minutes(m)) for m in (5, 15, 60))),
            visible=running,
        ),
        pystray.MenuItem("Exclude this app", action(exclude_app), visible=running),
        pystray.MenuItem("Review and export…", action(review)),
        pystray.MenuItem("Withdraw consent…", action(withdraw, stop_icon)),
        pystray.MenuItem("Opt out (stop and delete everything)…", action(opt_out, stop_icon)),
        pystray.MenuItem("Quit (stop recording)", action(recorder.stop, lambda i: i.stop())),
    )


Action = Callable[[Callable[[], object]], Callable[[Any, Any], None]]


def _task_items(pystray: Any, recorder: Recorder, action: Action, notify: Callable[[str], None]) -> list[Any]:
    """The menu's task items (study's ``[tasks] mode`` not ``off``): "Start a task…" while recording
    without a task; while one runs, which it is, "Task done", "Task failed" and "Give up…"."""
    dialog_open = threading.Lock()  # one "Start a task" dialog at a time

    def start_task() -> None:
        from agent.ui.dialogs import ask_task
        from agent.ui.task_views import task_request

        if not dialog_open.acquire(blocking=False):
            notify("The task dialog is already open.")
            return
        try:
            choice = ask_task(task_request(recorder.task_status()), on_started=recorder.own_process)
        finally:
            dialog_open.release()
        if choice is None:
            return
        task = recorder.start_task(task_id=choice.task_id, instruction=choice.instruction)
        notify(f"Started {task_name(task)}. End it from this menu: Task done, Task failed or Give up.")

    def finish(outcome: str) -> Callable[[Any, Any], None]:
        def end() -> None:
            task = running_task(recorder)
            ended = recorder.finish_task(outcome)
            name = task_name(task or ended)
            notify(f"{name[:1].upper()}{name[1:]} ended: {outcome}.")

        return action(end)

    def give_up() -> None:
        task = running_task(recorder)
        if task is not None and confirm_give_up(recorder.own_process):
            # the task shown when Give up was chosen: it may have ended while the dialog was open,
            # and another may have started; the recorder never gives up another in its place
            meant, session = str(task.get("id")), task.get("session")
            ended = recorder.abandon_task(
                meant, expected_session=session if isinstance(session, str) else None
            )
            name, was = task_name(task), ended.get("ended_as")
            if was:  # it had ended meanwhile, its session still the one being recorded
                notify(f"{name[:1].upper()}{name[1:]} had ended ({was}); its recording was deleted as asked.")
            else:
                notify(f"Gave up {name}; its recording was deleted from this computer.")

    can_start = lambda _i: (  # noqa: E731 - pystray takes callables
        recorder.state == "recording" and tasks_on(recorder) and running_task(recorder) is None
    )
    in_task = lambda _i: running_task(recorder) is not None  # noqa: E731
    return [
        pystray.MenuItem("Start a task…", action(start_task), visible=can_start),
        pystray.MenuItem(lambda _i: task_line(recorder), None, enabled=False, visible=in_task),
        pystray.MenuItem("Task done", finish("done"), visible=in_task),
        pystray.MenuItem("Task failed", finish("failed"), visible=in_task),
        pystray.MenuItem("Give up (delete this task)…", action(give_up), visible=in_task),
    ]


def tasks_on(recorder: Recorder) -> bool:
    """Does the study ask for tasks (``[tasks] mode`` is not ``off``)?"""
    return recorder.study.tasks_mode != "off"


def running_task(recorder: Recorder) -> dict[str, Any] | None:
    """The running task as the recorder tells it (id, source, times; never its instruction)."""
    if not tasks_on(recorder):
        return None
    running = recorder.task_status()["running"]
    return running if isinstance(running, dict) else None


def task_name(task: dict[str, Any]) -> str:
    """How the menu and notifications name a task: the study's id, or "your task" for the
    volunteer's own (its instruction is captured text and never shown here; nor is its id,
    which says nothing to them)."""
    from agent.untrusted_text import visible

    source = task.get("source")
    own = source == "volunteer" if source is not None else str(task.get("id", "")).startswith("free-")
    return "your task" if own else f"the task {visible(str(task.get('id')), limit=64)}"


def task_line(recorder: Recorder) -> str:
    """The menu's line while a task runs: which one."""
    task = running_task(recorder)
    return "No task runs" if task is None else f"Running {task_name(task)}"


def confirm_give_up(on_started: Callable[[int], None]) -> bool:
    """Ask, in a dialog of its own process, whether to give the running task up (the focus starts
    on Cancel)."""
    from agent.ui.dialogs import confirm

    return confirm(
        "Give up this task?",
        "The task ends as given up, and its recording (everything since you started it) is deleted "
        "from this computer. Recording goes on. This cannot be undone.",
        yes="Give up and delete",
        no="Cancel",
        on_started=on_started,
    )


def open_review(session_id: str | None, on_started: Callable[[int], None]) -> int:
    """Show the review window (``optin review``) in a process of its own and wait until it closes.

    :param on_started: told the window's pid, so what is done in it is not recorded.
    :raises EnvironmentProblem: the window could not be shown (its last message says why).
    """
    import subprocess

    from agent.paths import optin_command

    args = optin_command("review", *([session_id] if session_id else []))
    proc = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    on_started(proc.pid)
    _out, err = proc.communicate()
    if proc.returncode != 0:
        lines = [line for line in err.splitlines() if line.strip()]
        msg = (
            lines[-1].removeprefix("optin: ")
            if lines
            else f"the review window failed (exit {proc.returncode})"
        )
        raise EnvironmentProblem(msg)
    return proc.returncode


def confirm_opt_out(on_started: Callable[[int], None]) -> bool:
    """Ask, in a dialog of its own process (``on_started`` gets its pid), whether to stop and
    delete everything."""
    from agent.ui.dialogs import confirm

    return confirm(
        "Opt out of the study?",
        "optin stops recording, withdraws your consent and deletes every recording on this computer. "
        "This cannot be undone.",
        yes="Opt out and delete",
        no="Cancel",
        on_started=on_started,
    )


def _choose_pystray_backend() -> None:
    """Pick pystray's Linux backend unless PYSTRAY_BACKEND says otherwise.

    pystray tries appindicator first and lets the ValueError of a missing
    AyatanaAppIndicator3 typelib escape instead of falling back, so decide
    here: appindicator if its typelib is there, else GTK (XEmbed, full menus),
    else pystray's plain X backend (no clickable menu: see platform-lab).
    """
    if not sys.platform.startswith("linux"):
        return
    # The tray draws a 22-pixel icon and a menu: no OpenGL. Without this, importing Gtk maps Mesa's
    # GL stack (libLLVM alone is 43 MB) into the recorder: 53 MB of its RSS (issue 18, measured).
    os.environ.setdefault("GDK_GL", "disable")
    if os.environ.get("PYSTRAY_BACKEND"):
        return
    try:
        import gi
    except ImportError:
        os.environ["PYSTRAY_BACKEND"] = "xorg"
        return
    for backend, namespace, version in (
        ("appindicator", "AyatanaAppIndicator3", "0.1"),
        ("gtk", "Gtk", "3.0"),
    ):
        try:
            gi.require_version(namespace, version)
        except ValueError:
            continue
        os.environ["PYSTRAY_BACKEND"] = backend
        return
    os.environ["PYSTRAY_BACKEND"] = "xorg"


def _start_watcher(icon: Any, recorder: Recorder, refresh: Callable[[Any], None]) -> None:
    """Every second: tell the recorder whether the icon is shown (P2), refresh the tooltip."""

    def loop() -> None:
        tick = threading.Event()
        while recorder.state in ("recording", "paused"):
            tick.wait(WATCH_EVERY_S)
            try:
                recorder.indicator_changed(indicator_shown(icon, recorder.backend))
                refresh(icon)
            except Exception:  # a failed repaint must not take capture down
                logger.warning("tray refresh failed")
        with contextlib.suppress(Exception):  # show why it stopped by itself (error, consent withdrawn)
            refresh(icon)

    threading.Thread(target=loop, name="optin-tray-watch", daemon=True).start()


def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll ``predicate`` every 0.1 s until true or ``timeout`` seconds pass."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.1)
    return True


def tray_available(backend: Backend) -> bool:
    """Is there anywhere to show an icon: an XEmbed tray, or a StatusNotifier watcher on D-Bus?"""
    return backend.tray_host_available() is True or status_notifier_watcher()


def indicator_shown(icon: Any, backend: Backend) -> bool:
    """Is the icon visible now?  Asked of GTK where it can tell, else of the desktop."""
    embedded = _gtk_embedded(icon)
    return embedded if embedded is not None else tray_available(backend)


def _gtk_embedded(icon: Any) -> bool | None:
    """``GtkStatusIcon.is_embedded()``, asked on the GTK main loop; None for other backends."""
    status_icon = getattr(icon, "_status_icon", None)
    if status_icon is None or not hasattr(status_icon, "is_embedded"):
        return None
    from gi.repository import GLib

    answer: list[bool] = []
    done = threading.Event()

    def ask() -> bool:
        answer.append(bool(status_icon.is_embedded()))
        done.set()
        return False

    GLib.idle_add(ask)
    return answer[0] if done.wait(2.0) else False


def status_notifier_watcher() -> bool:
    """Does the session bus have a StatusNotifierWatcher (GNOME AppIndicator, KDE)?"""
    try:
        from gi.repository import Gio, GLib

        bus = Gio.bus_get_sync(Gio.BusType.SESSION, None)
        reply = bus.call_sync(
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "NameHasOwner",
            GLib.Variant("(s)", ("org.kde.StatusNotifierWatcher",)),
            GLib.VariantType("(b)"),
            Gio.DBusCallFlags.NONE,
            1000,
            None,
        )
    except Exception:  # no gi, no session bus: then there is no watcher we can use
        return False
    return bool(reply.unpack()[0])


def _in_background(*steps: Callable[[], object]) -> None:
    """Run ``steps`` in order on a new thread."""

    def run() -> None:
        for step in steps:
            step()

    threading.Thread(target=run, name="optin-tray-action", daemon=False).start()


def _stop_on_signals(icon: Any, signals: tuple[int, ...], *, gtk: bool) -> None:
    """The given signals end the icon's loop, so the session is sealed (which signals an OS has:
    :mod:`agent.backends.platform_calls`; Windows has no SIGHUP).

    Under GTK the main loop runs in C, where Python handlers would wait for it:
    GLib dispatches them instead (and may be asked from any thread).
    """
    if gtk:
        from gi.repository import GLib

        def on_signal(*_args: Any) -> bool:
            icon.stop()
            return False

        for sig in signals:
            GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, on_signal)
        return
    for sig in signals:
        signal.signal(sig, lambda *_a: icon.stop())
