"""The dialog process: optin's Tk dialogs each run in a process of their own.

Tk runs in its own process because it must not share one with the GTK tray.  The agent's side
calls :func:`ask_consent`, :func:`ask_withdraw` or :func:`confirm`; each starts ``optin _dialog
ARGS`` (:data:`DIALOG_COMMAND`, sent here by agent/__main__.py; ``python -m agent.ui.dialogs`` runs
it too), waits, and returns what the volunteer chose.  The process's side is :func:`main`:

* no option: shows the installed study's consent (``--study FILE``: that file instead, not
  installed).  **I agree** (enabled only once at least one scope is ticked) records the consent
  with :func:`agent.consent.grant` for exactly the ticked scopes and the consent SHA-256 of what was
  shown (the text and every term of the study, recipients included), prints ``{"agreed": true,
  "scopes": [...]}`` and exits 0; **Not now**, Escape or closing the window prints ``{"agreed":
  false}`` and exits 1.
* ``--withdraw`` shows "Withdraw consent? Capture stops." with a box "Also delete all my local
  recordings": **Withdraw** removes the receipt with :func:`agent.consent.withdraw`, prints
  ``{"withdrawn": true, "delete": bool, "had_consent": bool}`` and exits 0; **Cancel**/Escape/close
  prints ``{"withdrawn": false}`` and exits 1.  Deleting the recordings is the caller's job (the
  agent must stop first).
* ``--confirm`` asks a yes/no question read as JSON from stdin (``{"title", "message", "yes",
  "no"}``; the focus starts on "no"), prints ``{"confirmed": bool}`` and exits 0 (yes) or 1;
  :func:`confirm` runs it (the tray's "Opt out").
* ``--task`` shows the "Start a task" dialog for the recorder's task mode and list, read as JSON
  from stdin (:func:`agent.ui.task_views.task_request`): **Start** prints ``{"started": true,
  "id": ID}`` or ``{"started": true, "instruction": TEXT}`` and exits 0; **Cancel**/Escape/close
  prints ``{"started": false}`` and exits 1.  :func:`ask_task` runs it (the tray's "Start a
  task…"); starting the task is the caller's job.  The instruction is captured text: it goes back
  on the pipe only, never into a log.
* no display (or no Tk): one line on stderr saying the fix, exit 2.

What the dialogs say is decided by :mod:`agent.ui.consent_views` and :mod:`agent.ui.task_views`; the
Tk dialogs that render it are in :mod:`agent.ui.consent_dialog` and :mod:`agent.ui.task_dialog`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.consent import Receipt
from agent.errors import EnvironmentProblem, OptinError, UsageError
from agent.paths import Dirs, optin_command
from agent.study import Study
from agent.ui.consent_dialog import show_confirm, show_consent, show_withdraw
from agent.ui.consent_views import WithdrawChoice, consent_view, withdraw_view
from agent.ui.task_views import TaskChoice, choice_from_answer, view_from_request

#: Exit codes of the dialog process.
EXIT_YES = 0
EXIT_NO = 1
EXIT_CANNOT = 2
#: ``optin _dialog ...`` runs this module's :func:`main` in a process of its own (agent/__main__.py).
DIALOG_COMMAND = "_dialog"
#: Most characters of a request read from stdin: a study's at most 500 tasks of bounded size, as JSON
#: (non-ASCII escaped as \uXXXX, six characters each).
_MAX_REQUEST = 16_000_000


# --- running the dialog process from the agent --------------------------------------------------


def _run_dialog(
    args: list[str],
    d: Dirs | None,
    timeout: float | None,
    on_started: Callable[[int], None] | None,
    request: dict[str, Any] | None = None,
) -> tuple[int, dict[str, Any]] | None:
    """Run the dialog process; (exit code, its JSON answer), or None when it timed out.

    :param d: the directories the dialog must use (checked: the process finds them itself).
    :param request: a JSON object for its stdin (``--confirm``, ``--task``).
    """
    from agent.paths import dirs as current_dirs

    if d is not None and d != current_dirs():
        msg = "the consent dialog uses the directories of OPTIN_HOME / the platform; pass paths.dirs()"
        raise UsageError(msg)
    proc = subprocess.Popen(
        optin_command(DIALOG_COMMAND, *args),
        stdin=subprocess.DEVNULL if request is None else subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        if on_started is not None:
            on_started(proc.pid)
        out, err = proc.communicate(None if request is None else json.dumps(request), timeout=timeout)
    except BaseException as exc:  # timed out, or the caller's callback failed: no dialog left behind
        proc.kill()
        proc.communicate()
        if isinstance(exc, subprocess.TimeoutExpired):
            return None
        raise
    if proc.returncode not in (EXIT_YES, EXIT_NO):
        lines = [line for line in err.splitlines() if line.strip()]
        msg = lines[-1] if lines else f"the dialog failed (exit code {proc.returncode})"
        raise EnvironmentProblem(msg.removeprefix("optin: "))
    lines = [line for line in out.splitlines() if line.strip()]
    try:
        answer = json.loads(lines[-1]) if lines else {}
    except ValueError:
        answer = {}
    return proc.returncode, answer if isinstance(answer, dict) else {}


def confirm(
    title: str,
    message: str,
    *,
    yes: str = "OK",
    no: str = "Cancel",
    timeout: float | None = None,
    on_started: Callable[[int], None] | None = None,
) -> bool:
    """Ask a yes/no question in a dialog of its own process (Escape, closing or a timeout: no).

    The focus starts on ``no``: use it for questions whose "yes" cannot be undone.
    Blocks: call it off the GUI thread.

    :raises EnvironmentProblem: the dialog could not be shown.
    """
    request = {"title": title, "message": message, "yes": yes, "no": no}
    result = _run_dialog(["--confirm"], None, timeout, on_started, request)
    return result is not None and result[0] == EXIT_YES and result[1].get("confirmed") is True


def ask_task(
    request: dict[str, Any],
    *,
    timeout: float | None = None,
    on_started: Callable[[int], None] | None = None,
) -> TaskChoice | None:
    """Show the "Start a task" dialog for ``request`` (:func:`agent.ui.task_views.task_request`)
    and wait; the volunteer's choice, or None (Cancel, closed, timed out).

    Blocks: call it off the GUI thread.  Starting the task is the caller's job.

    :raises EnvironmentProblem: the dialog could not be shown.
    """
    result = _run_dialog(["--task"], None, timeout, on_started, request)
    if result is None or result[0] != EXIT_YES:
        return None
    return choice_from_answer(result[1])


def ask_consent(
    d: Dirs,
    study: Study,
    *,
    timeout: float | None = None,
    on_started: Callable[[int], None] | None = None,
) -> Receipt | None:
    """Show the consent dialog for the installed study and wait for the volunteer.

    Blocks: call it off the GUI thread.  ``study`` must be the installed study
    (the dialog process reads it again); the result is checked against it.

    :param timeout: seconds before the dialog is closed as "Not now".
    :param on_started: called with the dialog's PID once it runs (e.g. to treat its
        windows as optin's own).
    :returns: the new receipt, or None (Not now, closed, timed out).
    :raises EnvironmentProblem: the dialog could not be shown (no display, no Tk); the message says why.
    """
    from agent import consent

    result = _run_dialog([], d, timeout, on_started)
    if result is None or result[0] != EXIT_YES:
        return None
    receipt = consent.current_receipt(d)
    return receipt if receipt is not None and receipt.covers(study) else None


def ask_withdraw(
    d: Dirs, *, timeout: float | None = None, on_started: Callable[[int], None] | None = None
) -> WithdrawChoice | None:
    """Show the withdrawal dialog and wait; the consent is already withdrawn when this returns a choice.

    Blocks: call it off the GUI thread.  If the choice says ``delete``, deleting
    the local recordings is the caller's job.

    :returns: the choice, or None (Cancel, closed, timed out: nothing changed).
    :raises EnvironmentProblem: the dialog could not be shown.
    """
    result = _run_dialog(["--withdraw"], d, timeout, on_started)
    if result is None or result[0] != EXIT_YES or result[1].get("withdrawn") is not True:
        return None
    return WithdrawChoice(
        delete=result[1].get("delete") is True, had_consent=result[1].get("had_consent") is True
    )


# --- the dialog process ---------------------------------------------------------------------------


def _say(obj: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _consent_main(study_path: str | None) -> int:
    from agent import consent
    from agent.paths import dirs
    from agent.study import installed_study, load_study_file

    d = dirs()
    study = load_study_file(Path(study_path)) if study_path else installed_study(d)
    request = show_consent(consent_view(study, d, consent.current_receipt(d)))
    if request is None:
        _say({"agreed": False})
        return EXIT_NO
    receipt = consent.grant(d, study, request.consent_sha256, list(request.scopes))
    _say({"agreed": True, "scopes": list(receipt.scopes)})
    return EXIT_YES


def _withdraw_main() -> int:
    from agent import consent
    from agent.paths import dirs

    d = dirs()
    delete = show_withdraw(withdraw_view(consent.current_receipt(d), d))
    if delete is None:
        _say({"withdrawn": False})
        return EXIT_NO
    had = consent.withdraw(d)
    _say({"withdrawn": True, "delete": delete, "had_consent": had})
    return EXIT_YES


def _confirm_main() -> int:
    try:
        request = json.loads(sys.stdin.read())
        title, message = str(request["title"]), str(request["message"])
        yes, no = str(request.get("yes", "OK")), str(request.get("no", "Cancel"))
    except (ValueError, KeyError, TypeError) as exc:
        msg = 'the --confirm dialog reads {"title": ..., "message": ..., "yes": ..., "no": ...} from stdin'
        raise UsageError(msg) from exc
    confirmed = show_confirm(title, message, yes, no)
    _say({"confirmed": confirmed})
    return EXIT_YES if confirmed else EXIT_NO


def _task_main() -> int:
    from agent.ui.task_dialog import show_task

    raw = sys.stdin.read(_MAX_REQUEST + 1)
    if len(raw) > _MAX_REQUEST:
        msg = f"the --task dialog's request is longer than {_MAX_REQUEST} characters"
        raise UsageError(msg)
    try:
        request = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than json can follow
        msg = 'the --task dialog reads {"mode": ..., "tasks": [...]} as JSON from stdin'
        raise UsageError(msg) from exc
    choice = show_task(view_from_request(request))
    if choice is None:
        _say({"started": False})
        return EXIT_NO
    _say(choice.to_json())
    return EXIT_YES


def main(argv: list[str] | None = None) -> int:
    """``python -m agent.ui.dialogs [--study FILE | --withdraw | --confirm | --task]``.

    Exit 0: yes (agreed, withdrawn, confirmed); 1: no; 2: the dialog cannot be shown.
    """
    from agent.errors import EnvironmentProblem
    from agent.hardening import harden_process

    try:
        harden_process()  # the dialog shows a study and receives no content, but dumps nothing either
    except EnvironmentProblem as exc:
        sys.stderr.write(f"optin: {exc}\n")
        return 2
    parser = argparse.ArgumentParser(
        prog="python -m agent.ui.dialogs",
        description="Ask the volunteer for consent (or its withdrawal) in a window.",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--study", metavar="FILE", help="show this study file instead of the installed one")
    group.add_argument("--withdraw", action="store_true", help="ask whether to withdraw consent")
    group.add_argument(
        "--confirm", action="store_true", help="ask a yes/no question read as JSON from stdin (for the tray)"
    )
    group.add_argument(
        "--task", action="store_true", help="ask which task to start; its mode and list as JSON on stdin"
    )
    args = parser.parse_args(argv)
    try:
        if args.task:
            return _task_main()
        if args.confirm:
            return _confirm_main()
        return _withdraw_main() if args.withdraw else _consent_main(args.study)
    except OptinError as exc:
        sys.stderr.write(f"optin: {exc}\n")
        return EXIT_CANNOT


if __name__ == "__main__":
    sys.exit(main())
