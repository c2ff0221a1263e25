"""``optin run`` and the commands that ask the running agent: ``status``, ``pause``, ``resume``, ``exclude``.

They reach the running agent over its control socket (:mod:`agent.ipc`); exit code 3 means
no optin agent is running.  :func:`running_status` and :func:`refuse_while_running` are
for the other commands, which must not change the store under a running agent.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.cli.durations import parse_duration
from agent.cli.output import print_json
from agent.errors import UsageError
from agent.untrusted_text import visible

if TYPE_CHECKING:
    from agent.ipc import Controller, ControlServer
    from agent.paths import Dirs
    from agent.study import Study

__all__ = [
    "cmd_exclude",
    "cmd_pause",
    "cmd_resume",
    "cmd_run",
    "cmd_status",
    "refuse_while_running",
    "running_status",
    "start_control",
]


# -- optin run -----------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from agent import consent
    from agent.log import setup_logging
    from agent.paths import agent_lock, dirs
    from agent.study import install_study, installed_study

    setup_logging("INFO")
    d = dirs()
    study = install_study(d, Path(args.study)) if args.study else installed_study(d)
    receipt = consent.current_receipt(d)
    if (receipt is None or not receipt.covers(study)) and not _ask_consent(d, study):
        print("optin: no consent given; nothing was recorded")
        return 0
    consent.require(d, study)  # P1: whatever the dialog did, the receipt is what counts
    with agent_lock(d):
        return _run_agent(d, study)


def _ask_consent(d: Dirs, study: Study) -> bool:
    """First run, or a new consent text: show the consent dialog (its own process).

    Without a display the dialog cannot open; the error then says how to consent
    from the command line instead (``optin consent show`` / ``grant``).
    """
    from agent.errors import ConsentRequired, EnvironmentProblem
    from agent.ui.dialogs import ask_consent

    try:
        return ask_consent(d, study) is not None
    except EnvironmentProblem as exc:
        msg = (
            f"consent to study {study.id!r} is needed first and the consent dialog cannot open ({exc}). "
            "Fix: read it with `optin consent show`, then `optin consent grant --accept-text-sha256 HASH`"
        )
        raise ConsentRequired(msg) from None


def _run_agent(d: Dirs, study: Study) -> int:
    from agent.backends import select_backend
    from agent.control import Recorder
    from agent.errors import EnvironmentProblem
    from agent.store import keys
    from agent.ui import tray

    backend = select_backend()
    backend.check_environment()
    if not tray.tray_available(backend):
        msg = (
            "no system tray is available, and optin never records without its indicator. "
            "Fix: enable a tray / status-notifier area in your desktop (GNOME: the AppIndicator extension)."
        )
        raise EnvironmentProblem(msg)
    keys.ensure_keys(d)
    recorder = Recorder(d, backend, study)
    server = start_control(d, recorder)
    try:
        tray.run(
            recorder,
            on_ready=lambda: print(f"optin: recording session {recorder.session_id}", flush=True),
            on_stopping=server.stop if server is not None else None,
        )
    finally:
        if server is not None:
            server.stop()  # idempotent: a failed start never reached on_stopping
    if recorder.state == "error":
        print(f"optin: session {recorder.session_id} stopped: {recorder.error}", file=sys.stderr)
        return 1
    if recorder.session_id is None:
        print("optin: stopped before recording began; nothing was recorded")
        return 0
    print(f"optin: session {recorder.session_id} saved ({recorder.counters.written} events)")
    return 0


def start_control(d: Dirs, recorder: Controller) -> ControlServer | None:
    """Serve the control socket for ``recorder`` (the caller holds the agent lock).

    Started before the tray starts the recorder, so a ``pause`` sent while the icon
    appears is kept (the recorder then starts paused); stopped once the tray has
    stopped the recorder.  Where the platform cannot check a peer's uid, the agent
    runs without it (the tray still controls it) rather than serve unchecked.
    """
    import logging

    from agent.ipc import ControlServer, ControlUnavailable

    server = ControlServer(d, recorder)
    try:
        server.start()
    except ControlUnavailable as exc:
        logging.getLogger("agent.cli").warning("no command-line control for this agent: %s", exc)
        return None
    return server


# -- the running agent ---------------------------------------------------------------------------


def running_status(d: Dirs) -> dict[str, Any] | None:
    """The running agent's status: over the control socket, else its ``status.json``; None: none runs."""
    from agent import ipc
    from agent.recorder_status import read_status

    try:
        status: dict[str, Any] = ipc.request(d, "status")["status"]
    except ipc.AgentNotRunning:
        return read_status(d)  # an agent that publishes its status but has no control socket
    return status


def refuse_while_running(d: Dirs) -> None:
    """:raises UsageError: an optin agent runs (it holds the store the caller would change)."""
    from agent.store.retention import AGENT_RUNNING

    if running_status(d) is not None:
        raise UsageError(AGENT_RUNNING)


def _describe(status: dict[str, Any]) -> str:
    """One line for a running agent's status."""
    state = str(status.get("state"))
    head = {"idle": "starting"}.get(state, state)
    if status.get("reason"):
        head += f" ({status['reason']})"
    until = status.get("paused_until")
    if state == "paused" and until:
        head += " until resumed" if until == "resumed" else f" until {str(until)[11:16]} UTC"
    line = (
        f"{head}: session {status.get('session') or '-'}, {status.get('events_written', 0)} events saved, "
        f"{status.get('dropped', 0)} dropped"
    )
    task = status.get("task")
    if isinstance(task, dict) and task.get("id"):
        line += f"; task {visible(str(task['id']), limit=64)} running"
    if status.get("error"):
        line += f"; {status['error']}"
    return line


def cmd_status(args: argparse.Namespace) -> int:
    from agent.paths import dirs
    from agent.store.reader import list_sessions

    d = dirs()
    status = running_status(d)
    if status is None:
        infos = list_sessions(d)
        last = asdict(infos[-1]) if infos else None
        if args.json:
            print_json({"state": "not running", "last_session": last})
            return 3
        if last is None:
            line = "optin is not running (start it with `optin run`); no session recorded yet"
        else:
            line = (
                f"optin is not running (start it with `optin run`); last session {last['id']} "
                f"({last['state']}, {last['events']} events, {last['dropped']} dropped)"
            )
        print(line)
        return 3
    if args.json:
        print_json(status)
    else:
        print(_describe(status))
    return 0 if status.get("state") != "error" else 1


def cmd_pause(args: argparse.Namespace) -> int:
    from agent import ipc
    from agent.paths import dirs

    seconds = parse_duration(args.duration) if args.duration is not None else None
    status = ipc.request(dirs(), "pause", seconds=seconds)["status"]
    state = status.get("state")
    if state == "paused":
        if seconds is None:
            print("optin is paused until you resume it (`optin resume`)")
        else:
            until = str(status.get("paused_until") or "")[11:16]
            at = f" (until {until} UTC)" if until else ""
            print(f"optin is paused for {args.duration}{at}; `optin resume` records again sooner")
        return 0
    if state == "idle":
        print("optin is starting; it will begin paused")
        return 0
    print(f"optin did not pause: it is {state}", file=sys.stderr)
    return 1


def cmd_resume(_args: argparse.Namespace) -> int:
    from agent import ipc
    from agent.paths import dirs

    status = ipc.request(dirs(), "resume")["status"]
    state = status.get("state")
    if state == "recording":
        print("optin is recording again")
        return 0
    if state == "idle":
        print("optin is starting; it will record")
        return 0
    if state == "paused":
        why = status.get("reason") or "paused"
        fix = " (optin records only while its tray icon is shown)" if why == "no indicator" else ""
        print(f"optin stays paused: {why}{fix}", file=sys.stderr)
        return 1
    print(f"optin did not resume: it is {state}", file=sys.stderr)
    return 1


def cmd_exclude(args: argparse.Namespace) -> int:
    from agent import ipc
    from agent.paths import dirs

    d = dirs()
    later = ""
    try:
        rule: dict[str, Any] = ipc.request(d, "exclude", app_class=args.app, title=args.title)["rule"]
    except ipc.AgentNotRunning:
        if args.app is None and args.title is None:
            raise  # "the focused app" needs the running agent
        rule = _exclude_offline(d, args.app, args.title)
        later = " from the next `optin run`"
    if args.json:
        print_json(rule)
        return 0
    if rule.get("title"):
        what = f"windows whose title matches {rule['title']!r}"
    elif rule.get("app_class"):
        what = f"windows of the app {args.app or rule['app_class']!r}"
    else:
        what = "the focused app"
    label = f" {rule['label']!r}" if rule.get("label") else ""
    print(f"optin no longer records {what}{later} (deny rule{label} added)")
    return 0


def _exclude_offline(d: Dirs, app_class: str | None, title: str | None) -> dict[str, Any]:
    """Remember a deny rule while no agent runs (the next start applies it), as the agent would."""
    from agent import exclusions
    from agent.recorder_status import read_status

    if read_status(d) is not None:
        msg = "the running optin agent does not answer on its control socket; add the rule from its tray menu"
        raise UsageError(msg)
    rule = exclusions.volunteer_rule(app_class, title)
    exclusions.add(d, rule)
    return rule.to_json()
