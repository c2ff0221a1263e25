"""Tasks from the real tray menu (issue 16): "Start a task…" opens the task dialog (its own
process, left out of the recording), "Task done" ends it, "Give up…" deletes its recording.

Set OPTIN_SAVE_SCREENSHOTS=1 to (re)write docs/img/task-dialog.png.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from pyrage import x25519

from agent import consent
from agent.backends.virtual_display import VirtualDisplay, stop_process, wait_for
from agent.control import read_status
from agent.events import Event, Frame, KeyPress, TaskEnd, TaskStart
from agent.paths import Dirs, dirs
from agent.store import keys
from agent.store.reader import read_session
from agent.study import Study, demo_study_toml, install_study
from tests.display.conftest import DOCS_IMG, SAVE_SCREENSHOTS, screenshot_window
from tests.display.desktop import right_click_icon, start_agent, tray_menu, wait_window

#: The study's tasks: a list to pick from, and the volunteer's own ("both").
TASKS = """
[tasks]
mode = "both"

[[task]]
id = "book-flight"
instruction = "Book the cheapest flight from Paris to Rome next Friday."
url = "https://example.org/flights"
time_limit_minutes = 15

[[task]]
id = "write-note"
instruction = "Write a short note in the terminal saying what you did today."
app = "XTerm"
"""

DIALOG = "optin — start a task"
GIVE_UP = "optin — Give up this task?"


@pytest.fixture
def task_study(optin_home: Path, tmp_path: Path) -> tuple[Dirs, Study]:
    """A study with tasks (mode both) installed, consent to every scope, volunteer keys."""
    identity = x25519.Identity.generate()
    (tmp_path / "study-identity.txt").write_text(str(identity) + "\n")  # the study's, to open the bundle
    path = tmp_path / "study.toml"
    path.write_text(demo_study_toml(str(identity.to_public())) + TASKS)
    d = dirs()
    study = install_study(d, path)
    assert study.tasks_mode == "both" and len(study.tasks) == 2
    consent.grant(d, study, study.terms_sha256)
    keys.init_keys(d)
    return d, study


def _task(d: Dirs) -> dict[str, object] | None:
    status = read_status(d) or {}
    task = status.get("task")
    return task if isinstance(task, dict) else None


def _open_task_dialog(xdisplay: VirtualDisplay) -> str:
    """Tray menu > "Start a task…" (first after the status line); the dialog's window, focused."""
    for _ in range(3):
        tray_menu(xdisplay, "Down", "Return")
        if wait_for(lambda: bool(xdisplay.search(DIALOG)), 20):
            return wait_window(xdisplay, DIALOG)
        xdisplay.xdotool("key", "Escape")
    pytest.fail("the tray menu did not open the task dialog")


def _window_box(xdisplay: VirtualDisplay, window: int) -> list[int]:
    """The window's content in root coordinates (x, y, width, height), as X tells it."""
    from Xlib import display as xlib_display

    conn = xlib_display.Display(xdisplay.display)
    try:
        win = conn.create_resource_object("window", window)
        geometry = win.get_geometry()
        origin = conn.screen().root.translate_coords(win, 0, 0)
        return [int(origin.x), int(origin.y), int(geometry.width), int(geometry.height)]
    finally:
        conn.close()


def _menu_screenshot(xdisplay: VirtualDisplay) -> None:
    """Open the tray menu while the task runs and look at it: something is drawn there; saved as
    docs/img/tray-task-menu.png with OPTIN_SAVE_SCREENSHOTS=1."""
    import mss
    from PIL import Image

    right_click_icon(xdisplay)
    time.sleep(0.8)
    with mss.MSS() as m:
        shot = m.grab({"left": 0, "top": 0, "width": xdisplay.width, "height": xdisplay.height})
    xdisplay.xdotool("key", "Escape")
    image = Image.frombytes("RGB", shot.size, shot.bgra, "raw", "BGRX")
    menu = image.crop((max(0, xdisplay.width - 560), 0, xdisplay.width, 280))
    assert len(menu.getcolors(maxcolors=1 << 16) or ()) > 10  # the menu was drawn
    if SAVE_SCREENSHOTS:
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        menu.save(DOCS_IMG / "tray-task-menu.png")


def _keys(*names: str, xdisplay: VirtualDisplay) -> None:
    for name in names:
        xdisplay.xdotool("key", name)
        time.sleep(0.05)  # Tk handles each key before the next arrives


def _typed(d: Dirs, sid: str) -> str:
    events = read_session(d, sid, keys.load_identity(d)).events
    return "".join(e.char or "" for e in events if isinstance(e, KeyPress))


def test_a_study_task_from_the_tray_dialog_then_task_done(
    xdisplay: VirtualDisplay, task_study: tuple[Dirs, Study], tmp_path: Path
) -> None:
    d, _study = task_study
    term = xdisplay.spawn(["xterm", "-T", "task-term", "-geometry", "60x10+80+420"])
    agent = start_agent(tmp_path)
    try:
        assert wait_for(lambda: bool(xdisplay.search("task-term")), 10)
        assert wait_for(lambda: (read_status(d) or {}).get("state") == "recording", 5)
        before = str((read_status(d) or {})["session"])
        window = _open_task_dialog(xdisplay)
        box = _window_box(xdisplay, int(window))
        _keys("Down", xdisplay=xdisplay)  # the list starts on the first task: pick the second
        time.sleep(0.3)
        screenshot_window(
            xdisplay.display, int(window), box, "task-dialog.png", min_colours=8, what="task dialog"
        )
        _keys("Return", xdisplay=xdisplay)
        assert wait_for(lambda: _task(d) is not None, 10), (tmp_path / "agent-stderr.txt").read_text()[-2000:]
        task = _task(d)
        assert task is not None and task["id"] == "write-note" and task["source"] == "study"
        sid = str(task["session"])
        assert sid != before and not xdisplay.search(DIALOG)
        xdisplay.xdotool("windowactivate", "--sync", xdisplay.search("task-term")[0])
        xdisplay.xdotool("type", "--delay", "20", "hello")
        time.sleep(1.2)  # the tray refreshes its menu every second
        _menu_screenshot(xdisplay)
        for _ in range(3):  # status, "Running the task write-note" (disabled), Task done
            tray_menu(xdisplay, "Down", "Return")
            if wait_for(lambda: _task(d) is None, 5):
                break
            xdisplay.xdotool("key", "Escape")
        assert _task(d) is None
        os.killpg(agent.pid, signal.SIGTERM)
        assert agent.wait(15) == 0
    finally:
        stop_process(agent)
        stop_process(term)
    data = read_session(d, sid, keys.load_identity(d))
    assert data.all_sealed and not data.problems
    starts = [e for e in data.events if isinstance(e, TaskStart)]
    ends = [e for e in data.events if isinstance(e, TaskEnd)]
    assert [(e.task_id, e.source) for e in starts] == [("write-note", "study")]
    assert [(e.task_id, e.outcome) for e in ends] == [("write-note", "done")]
    assert starts[0].t_ns < ends[0].t_ns
    assert "hello" in _typed(d, sid)  # keys are recorded in the task...
    # ...but the dialog's keys (Down, Enter) and the menu's were optin's own: in no session
    for session in (before, sid):
        names = [
            e.name for e in read_session(d, session, keys.load_identity(d)).events if isinstance(e, KeyPress)
        ]
        assert "down" not in names and "enter" not in names, (session, names)
    _export_and_inspect(sid, tmp_path)


def _export_and_inspect(sid: str, tmp_path: Path) -> None:
    """Approve and export the task's session, decrypt it with `age -d`, and read it with `optin
    inspect`: the bundle's task, its instruction (the study's own words), outcome and step range."""
    import io
    import json
    import subprocess
    import sys
    import tarfile

    optin = [sys.executable, "-m", "agent"]
    out = subprocess.run(
        [*optin, "export", sid, "--out", str(tmp_path / "out"), "--approve", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    bundle = json.loads(out.stdout)[0]["path"]
    identity = str(tmp_path / "study-identity.txt")
    plain = subprocess.run(["age", "-d", "-i", identity, bundle], capture_output=True, timeout=60, check=True)
    with tarfile.open(fileobj=io.BytesIO(plain.stdout)) as tar:
        names = [m.name.split("/", 1)[-1] for m in tar.getmembers()]
    assert "tasks.jsonl" in names
    inspected = json.loads(
        subprocess.run(
            [*optin, "inspect", bundle, "--identity", identity, "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    )
    assert inspected["signature"] == "valid"
    [task] = inspected["tasks"]
    assert (task["id"], task["source"], task["outcome"]) == ("write-note", "study", "done")
    assert task["instruction"] == "Write a short note in the terminal saying what you did today."
    assert task["steps"]["range"] is not None and task["steps"]["count"] >= 1
    assert task["steps"]["by_action"]["type"] >= 1  # the "hello" typed during the task


def _frames_text(events: list[Event]) -> str:
    """Every word tesseract reads on the frames of ``events``: optin's own windows are masked."""
    import io

    from PIL import Image

    from agent.redact.screen import TesseractOcr

    ocr = TesseractOcr.find()
    assert ocr is not None, "tesseract is needed to read the frames (make system-deps installs it)"
    words = []
    for frame in (e for e in events if isinstance(e, Frame)):
        image = Image.open(io.BytesIO(frame.data)).convert("RGB")
        words += [w.text for w in ocr(image, [(0, 0, *image.size)])]
    return " ".join(words)


def test_a_free_task_given_up_from_the_tray_leaves_nothing(
    xdisplay: VirtualDisplay, task_study: tuple[Dirs, Study], tmp_path: Path
) -> None:
    d, _study = task_study
    term = xdisplay.spawn(["xterm", "-T", "free-term", "-geometry", "60x10+80+420"])
    agent = start_agent(tmp_path)
    try:
        assert wait_for(lambda: bool(xdisplay.search("free-term")), 10)
        assert wait_for(lambda: (read_status(d) or {}).get("state") == "recording", 5)
        before = str((read_status(d) or {})["session"])
        dialog = _open_task_dialog(xdisplay)
        # book-flight, write-note, Something else (the box), then Tab into the box
        _keys("Down", "Down", "Tab", xdisplay=xdisplay)
        xdisplay.xdotool("type", "--delay", "20", "Plan a Lisbon weekend")
        time.sleep(0.6)  # grabbed with the words in the dialog: a click on the terminal stores that frame
        xdisplay.xdotool("mousemove", "--sync", "120", "560", "click", "1")
        time.sleep(0.6)
        xdisplay.xdotool("windowactivate", "--sync", str(dialog))
        _keys("Return", xdisplay=xdisplay)
        assert wait_for(lambda: _task(d) is not None, 10), (tmp_path / "agent-stderr.txt").read_text()[-2000:]
        task = _task(d)
        assert task is not None and task["source"] == "volunteer"
        assert "Lisbon" not in (d.runtime / "status.json").read_text()  # captured text: only in the store
        sid = str(task["session"])
        xdisplay.xdotool("windowactivate", "--sync", xdisplay.search("free-term")[0])
        xdisplay.xdotool("type", "--delay", "20", "gone")
        time.sleep(0.3)
        for _ in range(3):  # status, "Running your task", Task done, Task failed, Give up…
            tray_menu(xdisplay, "Down", "Down", "Down", "Return")
            if wait_for(lambda: bool(xdisplay.search(GIVE_UP)), 20):
                break
            xdisplay.xdotool("key", "Escape")
        wait_window(xdisplay, GIVE_UP)
        _keys("Tab", "Return", xdisplay=xdisplay)  # the focus starts on Cancel
        assert wait_for(lambda: _task(d) is None and not (d.sessions / sid).exists(), 15)
        # recording goes on in a new session (the status says so once it is open: a moment later)
        assert wait_for(
            lambda: (
                (read_status(d) or {}).get("session") not in (sid, before, None)
                and (read_status(d) or {}).get("state") == "recording"
            ),
            10,
        )
        after = str((read_status(d) or {})["session"])
        xdisplay.xdotool("type", "--delay", "20", "kept")
        time.sleep(0.3)
        os.killpg(agent.pid, signal.SIGTERM)
        assert agent.wait(15) == 0
    finally:
        stop_process(agent)
        stop_process(term)
    left = sorted(p.name for p in d.sessions.iterdir())
    assert sid not in left and left == sorted([before, after])  # the task's session is gone
    for session in left:
        data = read_session(d, session, keys.load_identity(d))
        assert not [e for e in data.events if isinstance(e, (TaskStart, TaskEnd))]
        typed = _typed(d, session)
        assert "gone" not in typed
        # the instruction typed into the dialog: own UI, never recorded as keys
        assert "Lisbon" not in typed and "Plan" not in typed, session
        assert "Lisbon" not in _frames_text(data.events), session  # nor seen on a frame: masked
    assert "kept" in _typed(d, after)  # recording went on, keys and all
