"""The ``optin`` command line: parses, calls, prints.  Nothing else lives here.

Exit codes: 0 ok, 1 failure, 2 bad usage or environment (the message says the fix),
3 no optin agent is running (``status``, ``pause``, ``resume``, ``exclude`` of the focused app).

``status``, ``pause``, ``resume``, ``delete-last``, ``exclude`` and ``task`` reach the running
agent over its control socket (:mod:`agent.ipc`).

:func:`main` (the ``optin`` console script) runs one command and turns its errors into
exit codes; :mod:`agent.cli.parser` holds every command's arguments and help; the
handlers live by area: :mod:`~agent.cli.recording` (run, status, pause, resume, exclude),
:mod:`~agent.cli.tasks` (task start, done, fail, abandon, status),
:mod:`~agent.cli.consent`, :mod:`~agent.cli.sessions` (sessions, delete-last, purge,
verify), :mod:`~agent.cli.export` (review, export, inspect, unpack, redact-text),
:mod:`~agent.cli.keys` and :mod:`~agent.cli.maintenance` (doctor, autostart, uninstall,
demo).  Commands import what they use when they run, so ``optin`` starts fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from agent.cli.durations import parse_duration
from agent.cli.maintenance import cmd_doctor
from agent.cli.parser import build_parser
from agent.errors import OptinError

__all__ = ["build_parser", "main", "parse_duration"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        from agent.hardening import harden_process

        if args.func is not cmd_doctor:  # doctor reads no content, and must run to diagnose a failure
            harden_process()  # no core dump of optin's memory (P5), before any command reads content
        return int(args.func(args))
    except OptinError as exc:
        print(f"optin: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("optin: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `optin ... | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:  # a file-system failure no module turned into an OptinError
        where = f" {exc.filename}" if exc.filename else ""
        print(
            f"optin: cannot use{where} ({exc.strerror or type(exc).__name__}). Fix: check that optin's "
            "directories are yours and writable, or set OPTIN_HOME to a directory of your own",
            file=sys.stderr,
        )
        return 2
