"""A child for tests/unit/test_element_process.py: the real wire (agent.capture.element_process.serve)
over a finder whose answers the test chooses by the point asked (never imported by the agent).

x = 1: an element; x = 2: asks ``allow`` about a window titled "secret-window" first;
x = 3: sleeps 5 s (a stalled lookup); x = 4: exits at once (a crash); x = 5: prints garbage.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script: find the agent

from agent.capture.element_lookup import WindowCheck
from agent.capture.element_process import serve
from agent.elements import DENIED, NO_FOCUS, Element, Lookup
from agent.events import WindowFocus

ELEMENT = Element(
    role="push button",
    name="Sign in ✓",
    states=("enabled", "focusable"),
    bounds=(10, 20, 120, 40),
    app="stub",
    pid=os.getpid(),
    path=(("frame", "Form"), ("panel", "")),
    automation_id="signin",
)


class StubFinder:
    def __init__(self, allow: WindowCheck) -> None:
        self._allow = allow

    def element_at(self, x: int, y: int) -> Lookup:
        if x == 2:
            window = WindowFocus(0, "secret-window", "Secret", 4242, 0, 0, 100, 100)
            if not self._allow(window):
                return Lookup(None, DENIED, 7, 4242)
        elif x == 3:
            time.sleep(5)
        elif x == 4:
            os._exit(3)
        elif x == 5:
            sys.stdout.buffer.write(b"not json\n")
            sys.stdout.buffer.flush()
        return Lookup(ELEMENT, "", 7, os.getpid())

    def focused_element(self) -> Lookup:
        return Lookup(None, NO_FOCUS, None, None)

    def close(self) -> None:
        pass


if __name__ == "__main__":
    sys.exit(serve(StubFinder))
