"""The tray's "Give up (delete this task)…" gives up the task it showed, never the next one (issue 16,
review finding 5), on the real tray of a real ``optin run``.

While its question is open the task can end from the command line, and another can start.  The
answer then deletes the task meant if its session is still the one being recorded, and otherwise
deletes nothing (the volunteer is told the command that deletes it).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from pyrage import x25519

from agent import cli, consent
from agent.backends.virtual_display import VirtualDisplay, stop_process, wait_for
from agent.control import read_status
from agent.paths import Dirs, dirs
from agent.store import keys
from agent.study import demo_study_toml, install_study
from tests.display.desktop import start_agent, tray_menu, wait_window

TASKS = """
[tasks]
mode = "list"

[[task]]
id = "book-flight"
instruction = "Book the cheapest flight from Paris to Rome next Friday."

[[task]]
id = "write-note"
instruction = "Write a short note saying what you did today."
"""

GIVE_UP = "optin — Give up this task?"
REFUSED = "a give-up was refused"


@pytest.fixture
def tasks_home(optin_home: Path, tmp_path: Path) -> Dirs:
    path = tmp_path / "study.toml"
    path.write_text(demo_study_toml(str(x25519.Identity.generate().to_public())) + TASKS)
    d = dirs()
    study = install_study(d, path)
    consent.grant(d, study, study.terms_sha256)
    keys.init_keys(d)
    return d


def _task(d: Dirs) -> dict[str, object] | None:
    task = (read_status(d) or {}).get("task")
    return task if isinstance(task, dict) else None


def _session(d: Dirs) -> str:
    return str((read_status(d) or {}).get("session"))


def _ask_give_up(xdisplay: VirtualDisplay, d: Dirs) -> str:
    """Tray menu > "Give up (delete this task)…" while a task runs: the question's window, focused."""
    assert wait_for(lambda: _task(d) is not None, 10)
    time.sleep(1.5)  # the menu is refreshed once a second: let it show the task's items
    for _ in range(3):  # status, "Running the task …", Task done, Task failed, Give up…
        tray_menu(xdisplay, "Down", "Down", "Down", "Return")
        if wait_for(lambda: bool(xdisplay.search(GIVE_UP)), 20):
            return wait_window(xdisplay, GIVE_UP)
        xdisplay.xdotool("key", "Escape")
    pytest.fail("the tray menu did not ask whether to give the task up")


def _answer_give_up(xdisplay: VirtualDisplay, window: str) -> None:
    xdisplay.xdotool("windowactivate", "--sync", window)
    for key in ("Tab", "Return"):  # the focus starts on Cancel
        xdisplay.xdotool("key", key)
        time.sleep(0.05)


def test_a_give_up_chosen_before_the_task_ended_deletes_only_the_task_meant(
    xdisplay: VirtualDisplay, tasks_home: Dirs, tmp_path: Path
) -> None:
    d = tasks_home
    log = tmp_path / "agent-stderr.txt"
    agent = start_agent(tmp_path)
    try:
        assert wait_for(lambda: (read_status(d) or {}).get("state") == "recording", 5)

        # 1. done from the command line while the question is open: still its session, deleted
        assert cli.main(["task", "start", "--id", "book-flight"]) == 0
        first = _session(d)
        question = _ask_give_up(xdisplay, d)
        assert cli.main(["task", "done"]) == 0
        assert _task(d) is None and _session(d) == first
        _answer_give_up(xdisplay, question)
        assert wait_for(lambda: not (d.sessions / first).exists(), 15), log.read_text()[-2000:]
        assert wait_for(lambda: _session(d) != first, 5)  # recording goes on in a new session
        assert (read_status(d) or {}).get("state") == "recording"

        # 2. done, and the next task started, while the question is open: nothing is deleted
        assert cli.main(["task", "start", "--id", "book-flight"]) == 0
        second = _session(d)
        question = _ask_give_up(xdisplay, d)
        assert cli.main(["task", "done"]) == 0
        assert cli.main(["task", "start", "--id", "write-note"]) == 0
        third = _session(d)
        _answer_give_up(xdisplay, question)
        assert wait_for(lambda: REFUSED in log.read_text(), 15), log.read_text()[-2000:]
        task = _task(d)
        assert task is not None and task["id"] == "write-note" and task["session"] == third
        assert (d.sessions / second).is_dir() and (d.sessions / third).is_dir()
        os.killpg(agent.pid, signal.SIGTERM)
        assert agent.wait(15) == 0
    finally:
        stop_process(agent)
    assert {second, third} <= {p.name for p in d.sessions.iterdir()}
    assert first not in {p.name for p in d.sessions.iterdir()}
