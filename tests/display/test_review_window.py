"""The review window (``optin review``) on a real private X display, driven with xdotool.

A session is recorded from the real display (an xterm with text on it, secrets included),
then ``python -m agent review ID`` runs as the volunteer would run it.  The test waits for
its ``optin-review-state`` lines (OPTIN_DIALOG_DEBUG_GEOMETRY=1), presses its keys, and
checks the store, the approval and the bundle behind it — and that nothing decrypted
reached a file.

A second test writes two sessions with the real store writer — one plain, one holding a task
the volunteer wrote (with an address the redaction replaces) and a click whose UI element the
recorder looked up — and checks the task panel, the element shown and outlined on its frame
(read back from a screenshot with tesseract), "Cut this task" and moving between sessions.

Set OPTIN_SAVE_SCREENSHOTS=1 to (re)write docs/img/review-window.png and review-task.png; normal
runs write nothing into the repository.
"""

from __future__ import annotations

import io
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyrage import decrypt, x25519

from agent import consent
from agent.backends import select_backend
from agent.backends.fake import FakeBackend
from agent.backends.virtual_display import VirtualDisplay, stop_process, wait_for
from agent.control import Recorder
from agent.events import (
    ButtonPress,
    ButtonRelease,
    ElementSeen,
    Event,
    Frame,
    KeyPress,
    KeyRelease,
    Marker,
    PointerMove,
    TaskEnd,
    TaskStart,
    WindowFocus,
    now_ns,
)
from agent.export import approval
from agent.paths import Dirs, dirs
from agent.recorder_status import Counters
from agent.redact import policy
from agent.store import keys
from agent.store.reader import read_session
from agent.store.writer import SessionWriter
from agent.study import Study, install_study
from agent.ui.review import STATE_PREFIX
from agent.ui.tk_toolkit import DEBUG_GEOMETRY_ENV
from tests.display.conftest import SAVE_SCREENSHOTS, need_tools, screenshot_window
from tests.servers import S3Server, intake_server
from tests.study.test_upload import objects
from tests.tools import unavailable

#: Typed and left on screen; plain content that must reach no file (the e-mail is also redacted).
CANARY = "lunch-canary-7731"
SECRET = "alice.canary@example.com"  # noqa: S105 - a canary the detectors know (an e-mail address)

STUDY = '''[study]
id = "web-tasks-2026"
name = "Everyday web tasks"
contact = "Dr. A. Researcher <study@example.org>"
consent_version = "3"
scopes = ["pointer", "keyboard", "screen", "window_titles"]
recipients = ["{recipient}"]
consent_text = """
We are studying how people do everyday tasks on the web so that software agents can learn
to help with them.
"""
'''


class Window:
    """A running ``optin review`` process: its state lines (read on a thread) and its keys."""

    def __init__(self, xdisplay: VirtualDisplay, proc: subprocess.Popen[str]) -> None:
        self.xdisplay = xdisplay
        self.proc = proc
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.other: list[str] = []  #: stderr lines that are not state lines
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if line.startswith(STATE_PREFIX):
                self.lines.put(json.loads(line[len(STATE_PREFIX) :]))
            else:
                self.other.append(line.rstrip("\n"))

    def wait(self, state: str, timeout: float = 30) -> dict[str, Any]:
        """The next state line, which must say ``state`` (``selected`` lines, which the step list
        sends whenever its selection changes, are passed over unless asked for)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                found = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(
                    f"no {state!r} from the review window in {timeout} s (exit {self.proc.poll()}): "
                    f"{self.other}"
                )
            if found["state"] == "selected" and state != "selected":
                continue
            assert found["state"] == state, json.dumps(found)
            return found

    def keys(self, *names: str) -> None:
        for name in names:
            self.xdisplay.xdotool("key", name)
            time.sleep(0.05)  # Tk handles each key before the next arrives

    def type(self, text: str) -> None:
        self.xdisplay.xdotool("type", "--delay", "10", text)

    def exit_code(self, timeout: float = 15) -> int:
        code = self.proc.wait(timeout)
        self.thread.join(5)
        return code

    def message(self) -> str:
        return "\n".join(self.other)


def _start(xdisplay: VirtualDisplay, *args: str, env: dict[str, str] | None = None) -> Window:
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "review", *args],
        env=dict(env if env is not None else os.environ, **{DEBUG_GEOMETRY_ENV: "1"}),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    return Window(xdisplay, proc)


@pytest.fixture
def window_procs() -> Iterator[list[Window]]:
    """Every window started is stopped at the end, whatever happened."""
    started: list[Window] = []
    yield started
    for w in started:
        stop_process(w.proc)


@pytest.fixture
def volunteer(optin_home: Path, tmp_path: Path) -> tuple[Dirs, Study, x25519.Identity]:
    """The documentation's study installed and agreed to, the volunteer's keys made."""
    identity = x25519.Identity.generate()
    path = tmp_path / "web-tasks.toml"
    path.write_text(STUDY.format(recipient=identity.to_public()))
    d = dirs()
    study = install_study(d, path)
    consent.grant(d, study, study.terms_sha256)
    keys.init_keys(d)
    return d, study, identity


def _record_xterm(xdisplay: VirtualDisplay, d: Dirs, study: Study) -> str:
    """A short session of the real display: a terminal with text (secrets included) being used."""
    term = xdisplay.spawn(
        [
            *("xterm", "-T", "Terminal", "-fa", "DejaVu Sans Mono", "-fs", "15", "-geometry", "72x16+30+30"),
            *("-e", "bash", "--norc", "--noprofile"),
        ],
        env={**xdisplay.env, "PS1": "~ $ "},  # a plain prompt: no user or host name in the picture
    )
    try:
        assert wait_for(lambda: bool(xdisplay.search("Terminal")), 10)
        wid = xdisplay.search("Terminal")[0]
        xdisplay.xdotool("windowactivate", "--sync", wid)
        time.sleep(0.5)  # the shell's prompt is up: what is typed is not echoed twice
        xdisplay.xdotool("type", "--delay", "5", f"echo 'Booking for {SECRET}: table for 2'")
        xdisplay.xdotool("key", "Return")
        rec = Recorder(d, select_backend("xorg"), study)
        rec.start()
        try:
            time.sleep(0.3)
            xdisplay.xdotool("mousemove", "--sync", "300", "200")
            xdisplay.xdotool("click", "1")  # click
            time.sleep(0.4)
            xdisplay.xdotool("type", "--delay", "10", f"echo {CANARY} booked")  # type
            xdisplay.xdotool("key", "Return")  # key
            time.sleep(0.6)
            xdisplay.xdotool("type", "--delay", "10", "ls -l /usr")
            xdisplay.xdotool("key", "Return")
            time.sleep(0.6)
            xdisplay.xdotool("click", "5")  # scroll
            time.sleep(0.5)
            xdisplay.xdotool("type", "--delay", "10", f"mail -s lunch {SECRET}")
            time.sleep(0.4)
            xdisplay.xdotool("mousemove", "--sync", "460", "260")
            xdisplay.xdotool("click", "1")  # click
            time.sleep(0.8)
        finally:
            rec.stop()
        assert rec.state == "stopped", rec.error
    finally:
        term.terminate()
        term.wait()
    return str(rec.session_id)


def _record_fake(d: Dirs, study: Study) -> str:
    """A tiny session from the fake backend (no OCR cost): two frames, some typing."""
    backend = select_backend("fake")
    assert isinstance(backend, FakeBackend)
    rec = Recorder(d, backend, study)
    rec.start()
    assert wait_for(lambda: rec.counters.frames >= 1, 5)
    fake, screen = backend.last_input, backend.last_screen
    assert fake is not None and screen is not None
    for ch in "hello":
        fake.emit(KeyPress(now_ns(), ch, None, ord(ch), ()))
        fake.emit(KeyRelease(now_ns(), ch, None, ord(ch), ()))
    fake.emit(KeyPress(now_ns(), None, "enter", 65293, ()))
    fake.emit(KeyRelease(now_ns(), None, "enter", 65293, ()))
    grabs = screen.grabs
    screen.paint((200, 10, 10))  # the screen changes, then a click: one more frame
    assert wait_for(lambda: screen.grabs > grabs, 5)
    fake.emit(PointerMove(now_ns(), 3, 4))
    fake.emit(ButtonPress(now_ns(), 3, 4, "left"))
    fake.emit(ButtonRelease(now_ns(), 3, 4, "left"))
    assert wait_for(lambda: rec.counters.frames >= 2, 5)
    rec.stop()
    return str(rec.session_id)


def _stored(d: Dirs, sid: str) -> list[Any]:
    return read_session(d, sid, keys.load_identity(d)).events


def _screenshot(xdisplay: VirtualDisplay, window_id: str, window: list[int], name: str) -> None:
    """Grab the window as a person sees it (with its title bar); check it is not blank; save it
    under docs/img when asked."""
    screenshot_window(xdisplay.display, int(window_id), window, name, min_colours=40, what="review window")


def _files(root: Path) -> dict[Path, tuple[int, int]]:
    """Every file under ``root`` with its (mtime_ns, size); unreadable corners are skipped."""
    found: dict[Path, tuple[int, int]] = {}
    for base, _dirs, names in os.walk(root, onerror=lambda _e: None):
        for name in names:
            path = Path(base) / name
            try:
                st = path.lstat()
            except OSError:
                continue
            found[path] = (st.st_mtime_ns, st.st_size)
    return found


def _new_or_changed(before: dict[Path, tuple[int, int]], after: dict[Path, tuple[int, int]]) -> list[Path]:
    return sorted(p for p, stamp in after.items() if before.get(p) != stamp)


def _holds_plaintext(path: Path) -> bool:
    try:
        data = path.read_bytes()[: 64 * 1024 * 1024]
    except OSError:
        return False
    return CANARY.encode() in data or SECRET.encode() in data


def test_review_cut_approve_export_and_close(
    xdisplay: VirtualDisplay,
    volunteer: tuple[Dirs, Study, x25519.Identity],
    optin_home: Path,
    tmp_path: Path,
    window_procs: list[Window],
) -> None:
    need_tools("xterm")
    d, study, study_identity = volunteer
    painted = SAVE_SCREENSHOTS and shutil.which("xsetroot") is not None
    if painted:  # a desktop colour for the documentation's picture (the display is shared: undone below)
        subprocess.run(["xsetroot", "-solid", "#4a6b82"], env=xdisplay.env, check=False)
    try:
        sid = _record_xterm(xdisplay, d, study)
    finally:
        if painted:
            subprocess.run(["xsetroot", "-solid", "black"], env=xdisplay.env, check=False)
    stored_frames = [e for e in _stored(d, sid) if isinstance(e, Frame)]
    assert len(stored_frames) >= 4, "the recording should have several frames"

    home = tmp_path / "home"  # the window shows the export folder as ~/optin-exports
    home.mkdir()
    out = home / "optin-exports"
    private_tmp = tmp_path / "tmpdir"
    private_tmp.mkdir()
    home_before = _files(optin_home)
    tmp_before = _files(Path("/tmp"))
    env = dict(os.environ, TMPDIR=str(private_tmp), HOME=str(home))
    win = _start(xdisplay, sid, "--out", str(out), env=env)
    window_procs.append(win)

    # (1) ready: the title says so, the counts are the session's, it looks like a window
    ready = win.wait("ready", 60)
    titled = xdisplay.search(f"optin review — {sid}")
    assert len(titled) == 1, "the title does not say the window is ready"
    assert ready["approval"] == "not approved"
    assert ready["frames"] == len(stored_frames) and ready["steps"] >= 5
    assert ready["frame"] == 0 and ready["cuts_marked"] == 0

    # (2) mark frames 2 and 3 (indices 1..2), then cut them for real
    win.keys("Right", "alt+s")
    assert win.wait("marked")["cut_start"] == 1
    win.keys("Right", "alt+t")
    marked = win.wait("marked")
    assert (marked["cuts_marked"], marked["frames_marked"], marked["frame"]) == (1, 2, 2)
    win.keys("Right")  # a frame that stays, beside the marked ones: the documentation's picture
    time.sleep(0.3)
    _screenshot(xdisplay, titled[0], ready["window"], "review-window.png")
    win.keys("alt+a")  # refused while cuts are marked (the button is disabled): no approval
    win.keys("alt+c")
    win.wait("confirm")
    win.keys("Return")  # the focus starts on Cancel
    assert win.wait("cancelled")["cuts_marked"] == 1
    assert approval.state(d, sid) == "not approved"
    win.keys("alt+c")
    win.wait("confirm")
    win.keys("Tab", "Return")  # Cancel → Delete them
    cut = win.wait("cut", 60)
    assert (cut["frames"], cut["cuts_marked"], cut["frames_marked"]) == (len(stored_frames) - 2, 0, 0)
    after = _stored(d, sid)
    kept = [e for e in after if isinstance(e, Frame)]
    assert [f.t_ns for f in kept] == [f.t_ns for i, f in enumerate(stored_frames) if i not in (1, 2)]
    assert any(isinstance(e, Marker) and e.marker == "cut" for e in after)

    # (3) approve
    win.keys("alt+a")
    assert win.wait("approved")["approval"] == "approved"
    assert approval.state(d, sid, policy.Policy.from_study(study).sha256()) == "approved"

    # (4) export: the bundle holds the cut session, encrypted to the study
    win.keys("alt+e")
    exported = win.wait("exported", 60)
    bundle = out / f"{sid}.optin.tar.age"
    assert exported["bundle"] == bundle.name and bundle.is_file()
    with tarfile.open(fileobj=io.BytesIO(decrypt(bundle.read_bytes(), [study_identity]))) as tar:
        frames_jsonl = tar.extractfile(f"{sid}/frames.jsonl")
        assert frames_jsonl is not None
        assert len(frames_jsonl.read().splitlines()) == len(kept)

    # (5) Escape closes, exit 0
    win.keys("Escape")
    assert win.exit_code() == 0, win.message()
    assert win.message() == ""  # no stray output: no warning, no traceback

    # (6) no plaintext reached a file: the private TMPDIR stayed empty, the store changed only in its
    # own encrypted segments, metadata and review.json, nothing new under /tmp holds typed text
    assert list(private_tmp.iterdir()) == []
    assert sorted(p.name for p in out.iterdir()) == [bundle.name]
    changed = _new_or_changed(home_before, _files(optin_home))
    # ... and the export's delivery record (data/exports/<id>.json: path, size, SHA-256, state)
    store_files = re.compile(r"(\d{6}\.seg|meta\.json|review\.json|\d{8}T\d{6}Z-[0-9a-f]{8}\.json)")
    assert changed and all(store_files.fullmatch(p.name) for p in changed), changed
    leaked = [p for p in _new_or_changed(tmp_before, _files(Path("/tmp"))) if _holds_plaintext(p)]
    assert leaked == []


def test_review_window_unlocks_with_its_passphrase_dialog(
    xdisplay: VirtualDisplay,
    volunteer: tuple[Dirs, Study, x25519.Identity],
    monkeypatch: pytest.MonkeyPatch,
    window_procs: list[Window],
) -> None:
    """No passphrase file: the window asks; a wrong passphrase asks again, the right one opens it,
    and the window approves and exports with that one unlock."""
    d, study, _identity = volunteer
    sid = _record_fake(d, study)
    passphrase = Path(os.environ["OPTIN_PASSPHRASE_FILE"]).read_text().splitlines()[0]
    monkeypatch.delenv("OPTIN_PASSPHRASE_FILE")
    out = Path(os.environ["OPTIN_HOME"]).parent / "exports"
    win = _start(xdisplay, sid, "--out", str(out))
    window_procs.append(win)
    win.wait("passphrase")
    win.type("not the passphrase")
    win.keys("Return")
    win.wait("passphrase")  # asked again
    win.type(passphrase)
    win.keys("Return")
    ready = win.wait("ready", 30)
    assert ready["frames"] >= 2 and ready["steps"] >= 1
    win.keys("alt+a")
    win.wait("approved")
    win.keys("alt+e")
    win.wait("exported", 60)
    assert (out / f"{sid}.optin.tar.age").is_file()
    win.keys("alt+q")
    assert win.exit_code() == 0, win.message()

    win = _start(xdisplay, sid)  # Cancel: nothing is shown, the command says why
    window_procs.append(win)
    win.wait("passphrase")
    win.keys("Escape")
    assert win.exit_code() == 1
    assert "optin: no passphrase was entered" in win.message()


def test_review_window_says_what_is_wrong(
    xdisplay: VirtualDisplay,
    volunteer: tuple[Dirs, Study, x25519.Identity],
    tmp_path: Path,
    window_procs: list[Window],
) -> None:
    d, study, _identity = volunteer
    sid = _record_fake(d, study)

    # a wrong passphrase file: the window says so in plain words; closed, the command fails
    wrong = tmp_path / "wrong-passphrase.txt"
    wrong.write_text("not the passphrase\n")
    wrong.chmod(0o600)
    win = _start(xdisplay, sid, env=dict(os.environ, OPTIN_PASSPHRASE_FILE=str(wrong)))
    window_procs.append(win)
    error = win.wait("error", 30)
    assert "passphrase" in error["message"] and "Fix:" in error["message"]
    assert xdisplay.search(f"optin review — {sid} (cannot be shown)")
    win.keys("Escape")
    assert win.exit_code() == 1
    assert "passphrase" in win.message()

    # a session that does not exist: the same, with its own message
    win = _start(xdisplay, "20990101T000000Z-00000000")
    window_procs.append(win)
    error = win.wait("error", 30)
    win.keys("Escape")
    assert win.exit_code() != 0
    assert error["message"] and error["message"] in win.message()

    # no display: exit 2 and the fix, before anything is read
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    done = subprocess.run(
        [sys.executable, "-m", "agent", "review", sid],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "cannot show the review window: no graphical display" in done.stderr
    assert f"optin export {sid} --approve" in done.stderr


# --- a session with a task, and a step's element ---------------------------------------------------

#: The volunteer's own instruction: the address is redacted in the window as in the bundle.
INSTRUCTION = f"Book a table for 2 and send the booking to {SECRET}"
SHOWN = "Book a table for 2 and send the booking to [EMAIL]"
TASK_ID = "free-1a2b3c4d"
#: The button the click hits (screen coordinates; the frame is at LEFT, TOP on the screen).
LEFT, TOP = 40, 30
BUTTON = (LEFT + 560, TOP + 380, 140, 48)
MS = 1_000_000


def _form_png(title: str, button: bool) -> bytes:
    """A frame: a booking form (and its OK button), drawn with a real font."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (800, 500), (246, 246, 246))
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype("DejaVuSans.ttf", 26)
    small = ImageFont.truetype("DejaVuSans.ttf", 20)
    draw.rectangle((0, 0, 800, 56), fill=(52, 101, 164))
    draw.text((20, 12), title, fill=(255, 255, 255), font=font)
    draw.text((40, 110), "Guests", fill=(20, 20, 20), font=small)
    draw.rectangle((180, 100, 460, 140), outline=(120, 120, 120), width=2, fill=(255, 255, 255))
    draw.text((190, 108), "2", fill=(20, 20, 20), font=small)
    draw.text((40, 190), "Restaurant: Trattoria Verde, 19:30", fill=(20, 20, 20), font=small)
    if button:
        x, y, w, h = BUTTON
        box = (x - LEFT, y - TOP, x - LEFT + w, y - TOP + h)
        draw.rounded_rectangle(box, radius=6, fill=(46, 125, 50))
        draw.text((box[0] + 52, box[1] + 10), "OK", fill=(255, 255, 255), font=font)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _write_session(d: Dirs, events: list[Event]) -> str:
    """``events`` (after a session_start marker under the consent in force) as a closed session,
    written by the store's own writer."""
    receipt = consent.current_receipt(d)
    assert receipt is not None
    t0 = events[0].t_ns - MS
    start = Marker(
        t0,
        "session_start",
        {
            "mono_ns": t0,
            "wall_ns": time.time_ns(),
            "study_id": receipt.study_id,
            "consent_version": receipt.consent_version,
            "consent_sha256": receipt.text_sha256,
            "scopes": list(receipt.scopes),
            "backend": "xorg",
            "elements": "atspi",
        },
    )
    stop = Marker(
        events[-1].t_ns + MS,
        "session_stop",
        {"reason": "quit", "dropped": 0, "loss": Counters().loss()},
    )
    writer = SessionWriter.create(d, keys.load_recipient(d))
    writer.write_events([start, *events, stop])
    writer.close({})
    return writer.session_id


def _task_sessions(d: Dirs, *, after: bool = True) -> tuple[str, str]:
    """A plain session, then a session holding the volunteer's task: Enter in the form, a click
    on OK (its element looked up), the task done; then (``after``) a click after the task.
    Their ids."""
    t = now_ns()
    plain = _write_session(
        d,
        [
            WindowFocus(t, "Notes", "gedit", 4000, LEFT, TOP, 800, 500),
            Frame(t + 5 * MS, LEFT, TOP, 800, 500, "png", "start", _form_png("Notes", False)),
            ButtonPress(t + 900 * MS, LEFT + 100, TOP + 120, "left"),
            ButtonRelease(t + 980 * MS, LEFT + 100, TOP + 120, "left"),
        ],
    )
    time.sleep(1.1)  # a later second: the task's session is the newer one
    t = now_ns()
    ok = {
        "role": "push button",
        "name": "OK",
        "states": ["focusable", "focused"],
        "bounds": list(BUTTON),
        "app": "Firefox",
        "path": [{"role": "frame", "name": "Table booking"}, {"role": "panel", "name": None}],
        "automation_id": None,
    }
    click = t + 2000 * MS
    later: list[Event] = [
        Frame(t + 3500 * MS, LEFT, TOP, 800, 500, "png", "settled", _form_png("Booked", False)),
        ButtonPress(t + 4000 * MS, LEFT + 100, TOP + 120, "left"),
        ButtonRelease(t + 4080 * MS, LEFT + 100, TOP + 120, "left"),
    ]
    task = _write_session(
        d,
        [
            TaskStart(t, TASK_ID, INSTRUCTION, "volunteer", None),
            WindowFocus(t + 2 * MS, "Table booking", "firefox", 4242, LEFT, TOP, 800, 500),
            Frame(t + 5 * MS, LEFT, TOP, 800, 500, "png", "start", _form_png("Table booking", True)),
            KeyPress(t + 1000 * MS, None, "enter", 65293, ()),
            KeyRelease(t + 1050 * MS, None, "enter", 65293, ()),
            Frame(click - 20 * MS, LEFT, TOP, 800, 500, "png", "click", _form_png("Table booking", True)),
            PointerMove(click - 5 * MS, BUTTON[0] + 70, BUTTON[1] + 24),
            ButtonPress(click, BUTTON[0] + 70, BUTTON[1] + 24, "left"),
            ElementSeen(click, "point", "found", ok),
            ButtonRelease(click + 80 * MS, BUTTON[0] + 70, BUTTON[1] + 24, "left"),
            TaskEnd(t + 3000 * MS, TASK_ID, "done"),
            *(later if after else []),
        ],
    )
    return plain, task


def _grab(region: list[int]) -> Any:
    """The screen's pixels in ``[x, y, width, height]`` (root coordinates), as a PIL image."""
    import mss
    from PIL import Image

    x, y, w, h = region
    with mss.MSS() as m:
        shot = m.grab({"left": x, "top": y, "width": w, "height": h})
    return Image.frombytes("RGB", shot.size, shot.rgb)


def _ocr_words(image: Any) -> str:
    from agent.redact.screen import TesseractOcr

    ocr = TesseractOcr.find()
    if ocr is None:
        unavailable("tesseract reads the review window back: apt-get install tesseract-ocr tesseract-ocr-eng")
    big = image.resize((image.width * 2, image.height * 2))
    return " ".join(w.text for w in ocr(big, [(0, 0, big.width, big.height)]))


@pytest.fixture
def task_volunteer(optin_home: Path, tmp_path: Path) -> Dirs:
    """The documentation's study, taking the volunteer's own tasks, agreed to; the keys made."""
    identity = x25519.Identity.generate()
    path = tmp_path / "web-tasks.toml"
    path.write_text(STUDY.format(recipient=identity.to_public()) + '\n[tasks]\nmode = "free"\n')
    d = dirs()
    study = install_study(d, path)
    consent.grant(d, study, study.terms_sha256)
    keys.init_keys(d)
    return d


def test_review_a_task_its_element_cut_it_and_move_on(
    xdisplay: VirtualDisplay, task_volunteer: Dirs, tmp_path: Path, window_procs: list[Window]
) -> None:
    d = task_volunteer
    plain, sid = _task_sessions(d)
    home = tmp_path / "home"  # the window shows the export folder as ~/optin-exports
    home.mkdir()
    env = dict(os.environ, HOME=str(home))
    win = _start(xdisplay, "--out", str(home / "optin-exports"), env=env)  # no id: the newest, the task's
    window_procs.append(win)

    # (1) the task: its id, outcome and steps (the state line), its words as exported (read back)
    ready = win.wait("ready", 60)
    assert ready["session"] == sid and ready["sessions"] == 2
    assert ready["tasks"] == [{"id": TASK_ID, "outcome": "done", "steps": [0, 1]}], ready
    assert ready["steps"] == 3 and not ready["deletes_session"]
    titled = xdisplay.search(f"optin review — {sid}")
    assert len(titled) == 1

    # (2) the click's element: select its step (the list's second row) with the keyboard
    tree = ready["widgets"]["tree"]
    xdisplay.xdotool("mousemove", "--sync", str(tree[0]), str(tree[1]))
    xdisplay.xdotool("click", "1")
    win.keys("Up", "Up", "Up", "Down")
    while (line := win.wait("selected"))["selected"] != [1]:
        pass
    time.sleep(0.3)
    (outline,) = line["outlines"]
    x, y, w, h = outline
    canvas_scale = w / BUTTON[2]
    assert 0.3 < canvas_scale <= 2 and abs(h / BUTTON[3] - canvas_scale) < 0.05, outline
    picture = _grab(ready["window"])
    wx, wy = ready["window"][:2]
    edge = picture.getpixel((x - wx - 3, y - wy + h // 2))  # the outline, just left of the button
    assert abs(edge[0] - 0x00) < 40 and abs(edge[1] - 0xA2) < 40 and abs(edge[2] - 0xFF) < 40, edge
    picture.save(tmp_path / "review-task.png")
    words = _ocr_words(picture)
    for expected in ("Book a table", "[EMAIL]", "push button", '"OK"', "Approve this task for export"):
        assert expected in words, (expected, words)
    assert "canary" not in words and "example.com" not in words  # the address is redacted
    _screenshot(xdisplay, titled[0], ready["window"], "review-task.png")

    # (3) Cut this task: exactly its span (its two steps, not the click after it), then for real
    win.keys("alt+k")
    marked = win.wait("marked")
    assert marked["cuts_marked"] == 1 and not marked["deletes_session"] and marked["frames_marked"] == 2
    win.keys("alt+c")
    win.wait("confirm")
    win.keys("Tab", "Return")
    cut = win.wait("cut", 60)
    assert cut["tasks"] == [] and cut["steps"] == 1 and cut["session"] == sid
    stored = _stored(d, sid)
    assert not any(isinstance(e, (TaskStart, TaskEnd, ElementSeen)) for e in stored)
    assert sum(isinstance(e, ButtonPress) for e in stored) == 1  # the click after the task is kept

    # (4) move to the other session and back, without the command line
    win.keys("alt+n")
    assert win.wait("opening")["session"] == plain
    other = win.wait("ready", 60)
    assert other["session"] == plain and other["tasks"] == [] and other["steps"] == 1
    assert xdisplay.search(f"optin review — {plain}")
    time.sleep(0.3)
    plain_picture = _grab(other["window"])
    plain_picture.save(tmp_path / "review-plain.png")
    plain_words = _ocr_words(plain_picture)
    assert "Cut selected steps" in plain_words and "no task" in plain_words  # it was read
    assert "Cut this task" not in plain_words and "Approve this task" not in plain_words  # no task panel
    win.keys("alt+p")
    win.wait("opening")
    back = win.wait("ready", 60)
    assert back["session"] == sid and back["steps"] == 1
    win.keys("Escape")
    assert win.exit_code() == 0, win.message()
    assert win.message() == ""


def test_cutting_a_task_that_is_its_whole_session_deletes_the_session(
    xdisplay: VirtualDisplay, task_volunteer: Dirs, tmp_path: Path, window_procs: list[Window]
) -> None:
    d = task_volunteer
    plain, sid = _task_sessions(d, after=False)
    win = _start(xdisplay, sid)
    window_procs.append(win)
    ready = win.wait("ready", 60)
    assert ready["tasks"] == [{"id": TASK_ID, "outcome": "done", "steps": [0, 1]}]
    win.keys("alt+k")
    marked = win.wait("marked")
    assert marked["deletes_session"] and marked["frames_marked"] == ready["frames"]
    win.keys("alt+c")
    win.wait("confirm")
    win.keys("Tab", "Return")  # Cancel → Delete them
    deleted = win.wait("deleted", 60)
    assert deleted["deleted"] == sid and deleted["frames"] == 0 and deleted["sessions"] == 1
    assert not (d.sessions / sid).exists()
    time.sleep(0.3)
    picture = _grab(deleted["window"])
    picture.save(tmp_path / "review-deleted.png")
    assert "This session was deleted from this computer" in _ocr_words(picture)
    win.keys("alt+n")  # on to the one that is left
    assert win.wait("opening")["session"] == plain
    assert win.wait("ready", 60)["session"] == plain
    win.keys("Escape")
    assert win.exit_code() == 0, win.message()
    assert win.message() == ""


def test_review_window_uploads_an_export_to_the_study(  # noqa: PLR0917 - fixtures
    xdisplay: VirtualDisplay,
    volunteer: tuple[Dirs, Study, x25519.Identity],
    s3: S3Server,
    tmp_path: Path,
    window_procs: list[Window],
    optin_home: Path,
) -> None:
    """After an export, Upload to the study (Alt+U) sends it to the study's intake (a real one, over a
    real SeaweedFS); the study then has exactly the exported bytes, and as the study asks the session
    and its export are deleted here."""
    d, study, _identity = volunteer
    sid = _record_fake(d, study)
    bucket = f"s3://{s3.bucket()}/intake"
    with intake_server(s3, bucket, study.id, tmp_path) as intake:
        path = tmp_path / "web-tasks-upload.toml"
        path.write_text(
            STUDY.format(recipient=_identity.to_public())
            + f'\n[upload]\nurl = "{intake.url}"\n[retention]\nafter_upload = "delete"\n'
        )
        uploading = install_study(d, path)
        consent.grant(d, uploading, uploading.terms_sha256)
        out = optin_home.parent / "exports"
        win = _start(xdisplay, sid, "--out", str(out))
        window_procs.append(win)
        assert win.wait("ready", 30)["upload_pending"] is False  # nothing exported yet
        win.keys("alt+a")
        win.wait("approved")
        win.keys("alt+e")
        exported = win.wait("exported", 60)
        assert exported["upload_pending"] is True and "upload" in exported["widgets"]
        sent = (out / f"{sid}.optin.tar.age").read_bytes()
        win.keys("alt+u")
        uploaded = win.wait("uploaded", 60)
        assert uploaded["delivery"] == "delivered" and uploaded["deleted"] is True
        (titled,) = xdisplay.search(f"optin review — {sid}")
        _screenshot(xdisplay, titled, uploaded["window"], "review-uploaded.png")
        win.keys("Escape")
        assert win.exit_code() == 0, win.message()
    stored = objects(s3, bucket)
    (key,) = [k for k in stored if k.startswith("bundles/")]
    assert stored[key] == sent
    assert not (out / f"{sid}.optin.tar.age").exists() and not (d.sessions / sid).exists()
