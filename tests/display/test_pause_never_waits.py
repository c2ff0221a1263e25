"""Pause never waits (P3), on the real display and the real store: issue 14 item 8's case.

A study deny rule ``(a+)+$`` against a window titled with 26 ``a``s and a ``!`` froze an agent
whose rules ran on a backtracking engine: ``optin pause`` timed out after 15 s, keys typed a
second after the request were recorded, and SIGTERM took 27 s.  Here the same rule and title go
through ``optin run`` for real, with its tray, a real xterm and keys typed by xdotool; the
session is read back with the volunteer's identity.  The bounds only prove "does not hang"
(the measured figures are printed: ``pytest -s``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from agent import consent
from agent.backends.virtual_display import VirtualDisplay, stop_process, wait_for
from agent.control import read_status
from agent.events import KeyPress, Marker, WindowFocus
from agent.paths import Dirs
from agent.store import keys
from agent.store.reader import read_session
from agent.study import Study, install_study
from tests.display.desktop import start_agent
from tests.display.test_recording_e2e import _typed
from tests.tools import require_tool

RULE = "(a+)+$"
TITLE = "a" * 26 + "!"  # the rule does not match it: a backtracking engine tries 2^26 ways first
BEFORE = "hello"  # typed into that window while recording: stored
CANARY = "zq7vcanary"  # typed the moment `optin pause` has answered: never stored
#: Generous "does not hang" bounds (the bug: pause timed out after 15 s, SIGTERM took 27 s).
PAUSE_ANSWER_S = 3.0
SIGTERM_EXIT_S = 10.0


def _optin(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *argv], capture_output=True, text=True, timeout=30, check=False
    )


def _state(d: Dirs) -> str | None:
    s = read_status(d)
    return s["state"] if s else None


def test_p3_pause_answers_at_once_under_a_backtracking_rule_on_the_real_display(
    xdisplay: VirtualDisplay, consented: tuple[Dirs, Study], study_file: Path, tmp_path: Path
) -> None:
    require_tool("xterm", "xdotool")
    d, _demo = consented
    with_rule = study_file.with_name("study-with-rule.toml")
    with_rule.write_text(f"{study_file.read_text()}\n[[deny]]\nlabel = \"study rule\"\ntitle = '{RULE}'\n")
    study = install_study(d, with_rule)
    consent.grant(d, study, study.terms_sha256)

    agent = start_agent(tmp_path)
    term = None
    try:
        assert wait_for(lambda: _state(d) == "recording", 5)
        term = xdisplay.spawn(["xterm", "-T", TITLE, "-geometry", "60x10+60+60"])
        assert wait_for(lambda: bool(xdisplay.search(TITLE)), 10)
        xdisplay.xdotool("windowactivate", "--sync", xdisplay.search(TITLE)[0])
        xdisplay.xdotool("type", "--delay", "20", BEFORE)
        time.sleep(0.3)  # let the hooks deliver the keys before the pause

        asked = time.perf_counter()
        out = _optin("pause")
        pause_took = time.perf_counter() - asked
        xdisplay.xdotool("type", "--delay", "20", CANARY)  # right after the answer
        print(f"optin pause answered in {pause_took:.3f} s")
        assert pause_took < PAUSE_ANSWER_S and out.returncode == 0, (pause_took, out.stderr)
        assert "paused" in out.stdout
        assert _state(d) == "paused"
        asked = time.perf_counter()
        baseline = _optin("status")
        print(f"optin status (the same interpreter start-up) answered in {time.perf_counter() - asked:.3f} s")
        assert baseline.returncode == 0, baseline.stderr
        out = _optin("resume")
        assert out.returncode == 0 and "recording again" in out.stdout, out.stderr

        asked = time.perf_counter()
        os.killpg(agent.pid, signal.SIGTERM)
        code = agent.wait(SIGTERM_EXIT_S + 5)
        stop_took = time.perf_counter() - asked
    finally:
        stop_process(agent)
        if term is not None:
            term.terminate()
            term.wait()
    print(f"SIGTERM to exit: {stop_took:.3f} s")
    assert code == 0 and stop_took < SIGTERM_EXIT_S, (code, stop_took)
    assert read_status(d) is None  # the agent is gone

    (sid,) = [p.name for p in d.sessions.iterdir()]
    data = read_session(d, sid, keys.load_identity(d))
    assert data.all_sealed and not data.problems
    events = data.events
    # the agent saw the window, title and all, and weighed the rule against it (no match: recorded)
    assert any(isinstance(e, WindowFocus) and e.title == TITLE for e in events)
    markers = [e.marker for e in events if isinstance(e, Marker) and e.marker != "screen_layout"]
    assert markers == ["session_start", "pause", "resume", "session_stop"]
    pause = next(e for e in events if isinstance(e, Marker) and e.marker == "pause")
    resume = next(e for e in events if isinstance(e, Marker) and e.marker == "resume")
    print(f"the hooks stopped in {pause.detail['stop_ms']} ms (the pause marker's stop_ms)")
    typed = _typed(events)
    assert BEFORE in typed
    assert CANARY not in typed and not set(CANARY) & set(typed)  # not one of its keys
    assert not [e for e in events if isinstance(e, KeyPress) and pause.t_ns < e.t_ns < resume.t_ns]
