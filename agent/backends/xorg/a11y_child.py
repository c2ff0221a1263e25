"""The X11 element lookup process (:mod:`agent.capture.element_process` says why a process).

``optin _element-lookup DISPLAY CALL_TIMEOUT_S BUDGET_S`` (``a11y.LOOKUP_COMMAND``; or ``python -m
agent.backends.xorg.a11y_child`` with the same arguments): an
:class:`~agent.backends.xorg.a11y.ElementFinder` on ``DISPLAY`` answering the recorder on stdin
and stdout.  Crash dumps are off like in every optin process; it logs counts and types only.
"""

from __future__ import annotations

import sys

from agent.capture.element_lookup import ElementFinder, WindowCheck
from agent.capture.element_process import serve
from agent.hardening import harden_process


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        sys.stderr.write("usage: optin _element-lookup DISPLAY CALL_TIMEOUT_S BUDGET_S\n")
        return 2
    display, call_timeout_s, budget_s = args[0] or None, float(args[1]), float(args[2])
    harden_process()

    def make_finder(allow: WindowCheck) -> ElementFinder:
        from agent.backends.xorg.a11y import ElementFinder as AtspiFinder

        return AtspiFinder(display, call_timeout_s=call_timeout_s, budget_s=budget_s, allow=allow)

    return serve(make_finder)


if __name__ == "__main__":
    sys.exit(main())
