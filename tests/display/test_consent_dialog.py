"""The consent and withdrawal dialogs on a real (private) X display, driven with xdotool.

Set OPTIN_SAVE_SCREENSHOTS=1 to (re)write docs/img/consent-dialog.png and
docs/img/withdraw-dialog.png; normal runs write nothing into the repository.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pyrage import x25519

from agent import consent
from agent.backends.virtual_display import VirtualDisplay, stop_process, wait_for
from agent.paths import Dirs, dirs
from agent.study import Study, install_study
from agent.ui.dialogs import ask_consent, ask_withdraw, confirm
from agent.ui.tk_toolkit import DEBUG_GEOMETRY_ENV
from tests.display.conftest import screenshot_window
from tests.display.desktop import wait_window

#: A study as an operator would write one (docs/study.md), for the documentation screenshot.
EXAMPLE_STUDY = '''[study]
id = "web-tasks-2026"
name = "Everyday web tasks"
contact = "Dr. A. Researcher <study@example.org>"
consent_version = "3"
scopes = ["pointer", "keyboard", "screen", "window_titles"]
recipients = ["{recipient}"]
consent_text = """
We are studying how people do everyday tasks on the web (booking, shopping, filling in forms) so
that software agents can learn to help with them.

If you agree, optin records what you tick below while its tray icon is red. You choose when to
record, can pause at any time, and can delete any part of your recordings before you export them.
Only you hand an export over to us; it is encrypted so that only this study can read it.

We keep exported recordings for two years and use them only for research. You can withdraw at
any time, without giving a reason, from the tray menu or with `optin consent withdraw`.
Questions: study@example.org.
"""

[[deny]]
label = "Our HR system"
app_class = "hr-client*"

[retention]
days = 14
'''


class Dialog:
    """A running dialog process: its window, its widgets' centres, its answer."""

    def __init__(
        self, xdisplay: VirtualDisplay, proc: subprocess.Popen[str], geometry: dict[str, Any], window: str
    ) -> None:
        self.xdisplay = xdisplay
        self.window_id = int(window)
        self.proc = proc
        self.window = geometry["window"]
        self.widgets: dict[str, list[int]] = geometry["widgets"]

    def click(self, widget: str) -> None:
        x, y = self.widgets[widget]
        here = dict(kv.split("=") for kv in self.xdisplay.xdotool("getmouselocation", "--shell").split())
        if (int(here["X"]), int(here["Y"])) != (x, y):  # --sync waits for a move that would not come
            self.xdisplay.xdotool("mousemove", "--sync", str(x), str(y))
        self.xdisplay.xdotool("click", "1")
        time.sleep(0.05)

    def keys(self, *names: str) -> None:
        for name in names:
            self.xdisplay.xdotool("key", name)
            time.sleep(0.05)  # Tk handles each key before the next arrives

    def answer(self, timeout: float = 10) -> tuple[int, dict[str, Any]]:
        out, _err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, json.loads(out.strip().splitlines()[-1])


def _start(xdisplay: VirtualDisplay, title: str, *args: str) -> Dialog:
    """Start the dialog process, wait until its window is shown and has the keyboard focus."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.ui.dialogs", *args],
        env=dict(os.environ, **{DEBUG_GEOMETRY_ENV: "1"}),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stderr is not None
    geometry = None
    end = time.monotonic() + 20
    while geometry is None and time.monotonic() < end:
        ready, _, _ = select.select([proc.stderr], [], [], 0.5)
        line = proc.stderr.readline() if ready else ""
        if line.startswith("optin-dialog-geometry "):
            geometry = json.loads(line.split(" ", 1)[1])
        elif ready and not line:  # the process ended
            break
    try:
        if geometry is None:
            pytest.fail(f"the dialog did not show (exit code {proc.poll()})")
        windows = xdisplay.search(title)
        assert len(windows) == 1, f"expected one window titled {title!r}, found {windows}"
        (window,) = windows
        if not wait_for(lambda: xdisplay.xdotool("getwindowfocus").strip() == window, 5):
            pytest.fail("the dialog did not get the keyboard focus")
    except BaseException:
        stop_process(proc)
        raise
    return Dialog(xdisplay, proc, geometry, window)


def _still_open(dialog: Dialog, seconds: float = 0.7) -> bool:
    time.sleep(seconds)
    return dialog.proc.poll() is None


def _screenshot(dialog: Dialog, name: str) -> None:
    """Grab the dialog as a person sees it (with its title bar); save it under docs/img when asked."""
    screenshot_window(
        dialog.xdisplay.display, dialog.window_id, dialog.window, name, min_colours=20, what="dialog"
    )


@pytest.fixture
def user_home(optin_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Dirs:
    """No OPTIN_HOME: the platform's directories under a private HOME, as a volunteer has them
    (so the screenshots show ~/.local/share/optin, not a test path)."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("HOME", str(home))
    for var in ("OPTIN_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(var, raising=False)
    d = dirs()
    assert d.data.is_relative_to(home)
    return d


@pytest.fixture
def study(optin_home: Path, study_file: Path) -> tuple[Dirs, Study]:
    d = dirs()
    return d, install_study(d, study_file)


def _title(study: Study) -> str:
    return f"optin — consent to {study.name}"


def test_agree_needs_a_ticked_scope_and_records_exactly_those(
    xdisplay: VirtualDisplay, user_home: Dirs, tmp_path: Path
) -> None:
    """Mouse and keyboard together, on the study of the documentation (its screenshot is taken here)."""
    path = tmp_path / "web-tasks.toml"
    path.write_text(EXAMPLE_STUDY.format(recipient=x25519.Identity.generate().to_public()))
    d = user_home
    study = install_study(d, path)
    dialog = _start(xdisplay, _title(study))
    try:
        _screenshot(dialog, "consent-dialog.png")
        dialog.click("agree")  # nothing ticked: the button is disabled
        assert _still_open(dialog)
        dialog.keys("Return")  # Enter on the consent text agrees to nothing either
        assert _still_open(dialog)
        assert consent.current_receipt(d) is None

        dialog.keys("Tab", "Tab", "Tab", "Tab", "space")  # text → summary → pointer → keyboard → screen: tick
        dialog.click("scope:pointer")
        dialog.click("scope:keyboard")
        dialog.click("scope:keyboard")  # ticked and unticked again
        assert _still_open(dialog, 0.2)
        dialog.click("agree")
        code, answer = dialog.answer()
    finally:
        stop_process(dialog.proc)
    assert code == 0
    assert answer == {"agreed": True, "scopes": ["pointer", "screen"]}
    receipt = consent.current_receipt(d)
    assert receipt is not None
    assert receipt.scopes == ("pointer", "screen")
    assert receipt.text_sha256 == study.text_sha256
    assert receipt.covers(study)


def test_keyboard_alone_can_agree(xdisplay: VirtualDisplay, study: tuple[Dirs, Study]) -> None:
    d, s = study
    dialog = _start(xdisplay, _title(s))
    try:
        # text → summary → pointer → keyboard (tick) → screen → window titles → Not now → I agree (Enter)
        dialog.keys("Tab", "Tab", "Tab", "space", "Tab", "Tab", "Tab", "Tab", "Return")
        code, answer = dialog.answer()
    finally:
        stop_process(dialog.proc)
    assert (code, answer) == (0, {"agreed": True, "scopes": ["keyboard"]})
    receipt = consent.current_receipt(d)
    assert receipt is not None and receipt.scopes == ("keyboard",) and receipt.covers(s)


@pytest.mark.parametrize("how", ["click Not now", "Escape", "Enter on Not now"])
def test_not_now_records_no_consent(xdisplay: VirtualDisplay, study: tuple[Dirs, Study], how: str) -> None:
    d, s = study
    dialog = _start(xdisplay, _title(s))
    try:
        dialog.keys("Tab", "Tab", "space")  # a ticked scope is not consent
        if how == "click Not now":
            dialog.click("not_now")
        elif how == "Escape":
            dialog.keys("Escape")
        else:
            dialog.keys("Tab", "Tab", "Tab", "Tab", "Return")  # pointer → … → window titles → Not now
        code, answer = dialog.answer()
    finally:
        stop_process(dialog.proc)
    assert (code, answer) == (1, {"agreed": False})
    assert consent.current_receipt(d) is None


@pytest.mark.parametrize("change", ["version", "recipient"])
def test_a_new_consent_version_or_a_changed_study_is_asked_again(
    xdisplay: VirtualDisplay, study: tuple[Dirs, Study], study_file: Path, change: str
) -> None:
    d, s = study
    consent.grant(d, s, s.terms_sha256, ["pointer"])
    text = study_file.read_text()
    if change == "version":
        text = text.replace('consent_version = "1"', 'consent_version = "2"')
    else:  # same id, version and text, another key: what an attacker would hand out (issue 14)
        text = text.replace(s.recipients[0], str(x25519.Identity.generate().to_public()))
    study_file.write_text(text)
    s2 = install_study(d, study_file)
    receipt = consent.current_receipt(d)
    assert receipt is not None and not receipt.covers(s2)  # capture is stopped until they agree again
    dialog = _start(xdisplay, _title(s2))
    try:
        dialog.click("scope:screen")
        dialog.click("agree")
        code, _answer = dialog.answer()
    finally:
        stop_process(dialog.proc)
    assert code == 0
    receipt = consent.current_receipt(d)
    assert receipt is not None and receipt.covers(s2) and receipt.scopes == ("screen",)


def test_withdraw_removes_the_receipt_and_reports_the_delete_choice(
    xdisplay: VirtualDisplay, user_home: Dirs, study_file: Path
) -> None:
    d = user_home
    s = install_study(d, study_file)
    consent.grant(d, s, s.terms_sha256)
    dialog = _start(xdisplay, "optin — withdraw consent", "--withdraw")
    try:
        _screenshot(dialog, "withdraw-dialog.png")
        dialog.click("delete")
        dialog.click("withdraw")
        code, answer = dialog.answer()
    finally:
        stop_process(dialog.proc)
    assert (code, answer) == (0, {"withdrawn": True, "delete": True, "had_consent": True})
    assert consent.current_receipt(d) is None
    assert (d.config / "study.toml").exists()  # deleting is the caller's job, not the dialog's


def test_withdraw_by_keyboard_without_delete(xdisplay: VirtualDisplay, consented: tuple[Dirs, Study]) -> None:
    d, _s = consented
    dialog = _start(xdisplay, "optin — withdraw consent", "--withdraw")
    try:
        dialog.keys("Return")  # the focus starts on Withdraw
        code, answer = dialog.answer()
    finally:
        stop_process(dialog.proc)
    assert (code, answer) == (0, {"withdrawn": True, "delete": False, "had_consent": True})
    assert consent.current_receipt(d) is None


@pytest.mark.parametrize("how", ["Escape", "click Cancel"])
def test_withdraw_cancelled_keeps_consent(
    xdisplay: VirtualDisplay, consented: tuple[Dirs, Study], how: str
) -> None:
    d, _s = consented
    before = consent.current_receipt(d)
    dialog = _start(xdisplay, "optin — withdraw consent", "--withdraw")
    try:
        dialog.click("delete")
        if how == "Escape":
            dialog.keys("Escape")
        else:
            dialog.click("cancel")
        code, answer = dialog.answer()
    finally:
        stop_process(dialog.proc)
    assert (code, answer) == (1, {"withdrawn": False})
    assert consent.current_receipt(d) == before


def _in_thread(fn: Any) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    thread.start()
    return thread, result


def test_ask_consent_and_ask_withdraw_in_process(xdisplay: VirtualDisplay, study: tuple[Dirs, Study]) -> None:
    d, s = study
    pids: list[int] = []
    thread, result = _in_thread(lambda: ask_consent(d, s, timeout=60, on_started=pids.append))
    wait_window(xdisplay, _title(s))
    xdisplay.xdotool("key", "Escape")
    thread.join(15)
    assert result == [None] and len(pids) == 1

    thread, result = _in_thread(lambda: ask_consent(d, s, timeout=60))
    wait_window(xdisplay, _title(s))
    for key in ("Tab", "Tab", "space", "Tab", "space", "Tab", "Tab", "Tab", "Tab", "Return"):
        xdisplay.xdotool("key", key)
        time.sleep(0.05)
    thread.join(15)
    (receipt,) = result
    assert receipt is not None and receipt.scopes == ("pointer", "keyboard") and receipt.covers(s)
    assert consent.current_receipt(d) == receipt

    thread, result = _in_thread(lambda: ask_withdraw(d, timeout=60))
    wait_window(xdisplay, "optin — withdraw consent")
    xdisplay.xdotool("key", "Return")
    thread.join(15)
    (choice,) = result
    assert choice is not None and choice.delete is False and choice.had_consent is True
    assert consent.current_receipt(d) is None


@pytest.mark.parametrize(
    ("keys", "expected"), [(("Return",), False), (("Escape",), False), (("Tab", "Return"), True)]
)
def test_confirm_starts_on_no(xdisplay: VirtualDisplay, keys: tuple[str, ...], expected: bool) -> None:
    """The tray's "Opt out" question: the focus starts on the safe answer; only the yes button says yes."""
    pids: list[int] = []
    thread, result = _in_thread(
        lambda: confirm(
            "Opt out of the study?",
            "optin stops recording and deletes everything.",
            yes="Opt out and delete",
            no="Cancel",
            timeout=60,
            on_started=pids.append,
        )
    )
    wait_window(xdisplay, "optin — Opt out of the study?")
    for key in keys:
        xdisplay.xdotool("key", key)
        time.sleep(0.05)
    thread.join(15)
    assert result == [expected] and len(pids) == 1


def test_ask_consent_times_out_as_not_now(xdisplay: VirtualDisplay, study: tuple[Dirs, Study]) -> None:
    d, s = study
    t0 = time.monotonic()
    assert ask_consent(d, s, timeout=3) is None
    assert time.monotonic() - t0 < 10
    assert consent.current_receipt(d) is None
    assert xdisplay.search(_title(s)) == []  # the dialog was closed


def test_first_run_asks_in_the_dialog_and_records_only_what_was_agreed(
    xdisplay: VirtualDisplay, study: tuple[Dirs, Study], tmp_path: Path
) -> None:
    import signal

    from agent.control import read_status
    from agent.events import KeyPress, PointerMove
    from agent.store import keys as volunteer_keys
    from agent.store.reader import read_session

    d, s = study
    with (tmp_path / "agent-stderr.txt").open("wb") as err:
        agent = subprocess.Popen(
            [sys.executable, "-m", "agent", "run"], stdout=subprocess.PIPE, stderr=err, start_new_session=True
        )
    try:
        wait_window(xdisplay, _title(s))
        assert read_status(d) is None  # nothing runs before "I agree" (P1)
        # text -> summary -> pointer (tick) -> keyboard -> screen -> window titles -> Not now -> I agree
        for key in ("Tab", "Tab", "space", "Tab", "Tab", "Tab", "Tab", "Tab", "Return"):
            xdisplay.xdotool("key", key)
        assert wait_for(lambda: (read_status(d) or {}).get("state") == "recording", 20)
        assert (read_status(d) or {}).get("scopes") == ["pointer"]
        xdisplay.xdotool("mousemove", "--sync", "222", "111")
        xdisplay.xdotool("type", "nokeys")
        time.sleep(0.4)
        os.killpg(agent.pid, signal.SIGTERM)
        assert agent.wait(15) == 0
    finally:
        stop_process(agent)
    (sid,) = [p.name for p in d.sessions.iterdir()]
    events = read_session(d, sid, volunteer_keys.load_identity(d)).events
    assert any(isinstance(e, PointerMove) and (e.x, e.y) == (222, 111) for e in events)
    assert not any(isinstance(e, KeyPress) for e in events)  # keyboard was not agreed to
