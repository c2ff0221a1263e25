"""The ``optin`` command line: parses, calls, prints.  Nothing else lives here.

Exit codes: 0 ok, 1 failure, 2 bad usage or environment (the message says the fix),
3 no optin agent is running (``status``, ``pause``, ``resume``, ``exclude`` of the focused app).

``status``, ``pause``, ``resume``, ``delete-last`` and ``exclude`` reach the running
agent over its control socket (:mod:`agent.ipc`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.errors import OptinError, UsageError

if TYPE_CHECKING:
    from agent.ipc import Controller, ControlServer


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True))


def _dirs() -> Any:
    from agent.paths import dirs

    return dirs()


# -- commands ------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from agent import consent
    from agent.log import setup_logging
    from agent.paths import agent_lock
    from agent.study import install_study, installed_study

    setup_logging("INFO")
    d = _dirs()
    study = install_study(d, Path(args.study)) if args.study else installed_study(d)
    receipt = consent.current_receipt(d)
    if (receipt is None or not receipt.covers(study)) and not _ask_consent(d, study):
        print("optin: no consent given; nothing was recorded")
        return 0
    consent.require(d, study)  # P1: whatever the dialog did, the receipt is what counts
    with agent_lock(d):
        return _run_agent(d, study)


def _ask_consent(d: Any, study: Any) -> bool:
    """First run, or a new consent text: show the consent dialog (its own process).

    Without a display the dialog cannot open; the error then says how to consent
    from the command line instead (``optin consent show`` / ``grant``).
    """
    from agent.errors import ConsentRequired, EnvironmentProblem
    from agent.ui.consent_dialog import ask_consent

    try:
        return ask_consent(d, study) is not None
    except EnvironmentProblem as exc:
        msg = (
            f"consent to study {study.id!r} is needed first and the consent dialog cannot open ({exc}). "
            "Fix: read it with `optin consent show`, then `optin consent grant --accept-text-sha256 HASH`"
        )
        raise ConsentRequired(msg) from None


def _run_agent(d: Any, study: Any) -> int:
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
    server = _start_control(d, recorder)
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


def _start_control(d: Any, recorder: Controller) -> ControlServer | None:
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


def cmd_consent(args: argparse.Namespace) -> int:
    from agent import consent
    from agent.study import install_study, installed_study
    from agent.untrusted_text import visible

    d = _dirs()
    study = install_study(d, Path(args.study)) if getattr(args, "study", None) else installed_study(d)
    if args.action == "show":
        _consent_show(d, study, as_json=args.json)
        return 0
    if args.action == "grant":
        if not args.accept_text_sha256:
            msg = "consent grant needs --accept-text-sha256 HASH, the consent sha256 `consent show` prints"
            raise UsageError(msg)
        receipt = consent.grant(d, study, args.accept_text_sha256, args.scopes)
        if args.json:
            _print_json(receipt.to_json())
        else:
            what = f"{visible(study.id)} version {visible(study.consent_version)}"
            print(f"consent given to {what}: {', '.join(receipt.scopes)}")
        return 0
    had = consent.withdraw(d)
    try:
        running = _running_status(d) is not None
    except OptinError:  # something answers, if strangely: the withdrawal is done either way
        running = True
    if not had:
        print("no consent was given; nothing to withdraw")
    elif running:
        print("consent withdrawn; the running agent stops recording within a second")
    else:
        print("consent withdrawn; optin will not record")
    return 0


def _consent_show(d: Any, study: Any, *, as_json: bool) -> None:
    """``optin consent show``: the study's text, what optin does in it (agent.promises), hashes, state.

    Everything from the study file is printed through ``visible()``: none of it acts on the terminal.
    """
    from agent import consent
    from agent.paths import display_path
    from agent.promises import by_section, promises
    from agent.untrusted_text import shown_text, visible

    receipt = consent.current_receipt(d)
    state = consent.state(receipt, study)
    why = receipt.renewal_reason(study) if receipt is not None else None
    said = promises(study, data_dir=display_path(d.data))
    if as_json:
        _print_json(
            {
                "study": study.id,
                "name": study.name,
                "contact": study.contact,
                "consent_version": study.consent_version,
                "text": study.consent_text,
                "text_sha256": study.text_sha256,
                "consent_sha256": study.terms_sha256,
                "terms": study.terms(),
                "scopes": list(study.scopes),
                "recipients": list(study.recipients),
                "promises": [{"key": p.key, "section": p.section, "text": p.text} for p in said],
                "granted": state == consent.GIVEN,
                "state": state,
                "renewal_reason": why,
            }
        )
        return
    lines = [
        f"Study:    {visible(study.name)} ({visible(study.id)}), "
        f"consent version {visible(study.consent_version)}",
        f"Contact:  {visible(study.contact)}",
        f"Captures: {', '.join(study.scopes)}",
        f"Exports readable only by: {', '.join(visible(r) for r in study.recipients)}",
        "",
        shown_text(study.consent_text),
    ]
    for heading, texts in by_section(said):
        lines += ["", heading, *(f"  - {text}" for text in texts)]
    lines += [
        "",
        f"consent sha256: {study.terms_sha256} "
        "(the text and the study settings the list above is written from)",
        f"text sha256: {study.text_sha256}",
    ]
    if receipt is not None and state == consent.GIVEN:
        lines.append(f"consent: GIVEN ({', '.join(receipt.scopes)}; {visible(receipt.granted_at)})")
    elif state == consent.NEEDS_RENEWAL:
        lines.append(f"consent: NEEDS RENEWAL: {why}; nothing is recorded until you agree again")
    else:
        lines.append("consent: not given")
    if state != consent.GIVEN:
        lines.append(f"To agree: optin consent grant --accept-text-sha256 {study.terms_sha256}")
    print("\n".join(lines))


def _running_status(d: Any) -> dict[str, Any] | None:
    """The running agent's status: over the control socket, else its ``status.json``; None: none runs."""
    from agent import ipc
    from agent.control import read_status

    try:
        status: dict[str, Any] = ipc.request(d, "status")["status"]
    except ipc.AgentNotRunning:
        return read_status(d)  # an agent that publishes its status but has no control socket
    return status


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
    if status.get("error"):
        line += f"; {status['error']}"
    return line


def cmd_status(args: argparse.Namespace) -> int:
    from agent.store.reader import list_sessions

    d = _dirs()
    status = _running_status(d)
    if status is None:
        infos = list_sessions(d)
        last = asdict(infos[-1]) if infos else None
        if args.json:
            _print_json({"state": "not running", "last_session": last})
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
        _print_json(status)
    else:
        print(_describe(status))
    return 0 if status.get("state") != "error" else 1


def cmd_pause(args: argparse.Namespace) -> int:
    from agent import ipc

    seconds = parse_duration(args.duration) if args.duration is not None else None
    status = ipc.request(_dirs(), "pause", seconds=seconds)["status"]
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

    status = ipc.request(_dirs(), "resume")["status"]
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

    d = _dirs()
    later = ""
    try:
        rule: dict[str, Any] = ipc.request(d, "exclude", app_class=args.app, title=args.title)["rule"]
    except ipc.AgentNotRunning:
        if args.app is None and args.title is None:
            raise  # "the focused app" needs the running agent
        rule = _exclude_offline(d, args.app, args.title)
        later = " from the next `optin run`"
    if args.json:
        _print_json(rule)
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


def _exclude_offline(d: Any, app_class: str | None, title: str | None) -> dict[str, Any]:
    """Remember a deny rule while no agent runs (the next start applies it), as the agent would."""
    from agent import exclusions
    from agent.control import read_status

    if read_status(d) is not None:
        msg = "the running optin agent does not answer on its control socket; add the rule from its tray menu"
        raise UsageError(msg)
    rule = exclusions.volunteer_rule(app_class, title)
    exclusions.add(d, rule)
    return rule.to_json()


def cmd_sessions(args: argparse.Namespace) -> int:
    from agent.export import approval
    from agent.store.reader import list_sessions

    if args.action == "delete":
        return _sessions_delete(args)
    d = _dirs()
    rows = [{**asdict(i), "review": approval.describe(d, i.id)} for i in list_sessions(d)]
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("no sessions yet")
        return 0
    print(f"{'ID':<28} {'STATE':<10} {'STARTED':<26} {'EVENTS':>8} {'FRAMES':>7} {'BYTES':>10}  REVIEW")
    for r in rows:
        review = r["review"]
        exported = f", exported {review['exports']}x" if review["exports"] else ""
        print(
            f"{r['id']:<28} {r['state']:<10} {r.get('started_at') or '-':<26} "
            f"{r.get('events', 0):>8} {r.get('frames', 0):>7} {r.get('bytes', 0):>10}  "
            f"{review['approval']}{exported}"
        )
    return 0


def _sessions_delete(args: argparse.Namespace) -> int:
    from agent.store.retention import Deleted, shred_session
    from agent.store.safe_fs import UnsafeEntry

    if not args.id:
        msg = "sessions delete needs a session id. Fix: optin sessions delete ID (optin sessions lists them)"
        raise UsageError(msg)
    d = _dirs()
    status = _running_status(d)
    if status is not None and status.get("session") == args.id:
        msg = f"session {args.id} is being recorded; stop optin first (quit from the tray), then delete it"
        raise UsageError(msg)
    try:
        deleted = shred_session(d, args.id)
    except UnsafeEntry as exc:
        if args.json and isinstance(exc.partial, Deleted):  # what was shredded before the refusal
            _print_json({**exc.partial.to_dict(), "refused": [r.to_dict() for r in exc.refused]})
        raise
    if args.json:
        _print_json(deleted.to_dict())
    else:
        print(
            f"deleted session {deleted.session_id}: "
            f"{deleted.segments} segments, {deleted.bytes} bytes shredded"
        )
    return 0


_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
DURATION_FORMS = "a duration like 90s, 15m, 1h or 2h30m"


def parse_duration(text: str) -> int:
    """Seconds in ``90s``, ``15m``, ``1h``, ``2h30m``, ``1h5m10s``.

    :raises UsageError: anything else, or zero.
    """
    match = _DURATION.fullmatch(text.strip().lower())
    if not text.strip() or match is None:
        msg = f"{text!r} is not a duration; use {DURATION_FORMS}"
        raise UsageError(msg)
    hours, minutes, secs = (int(g) if g else 0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + secs
    if total <= 0:
        msg = f"{text!r} is zero; use {DURATION_FORMS}"
        raise UsageError(msg)
    return total


def _refuse_while_running(d: Any) -> None:
    from agent.store.retention import AGENT_RUNNING

    if _running_status(d) is not None:
        raise UsageError(AGENT_RUNNING)


def cmd_delete_last(args: argparse.Namespace) -> int:
    from agent import ipc
    from agent.store.retention import DeleteReport, delete_last
    from agent.store.safe_fs import UnsafeEntry

    if args.duration is None:
        msg = f"delete-last needs {DURATION_FORMS}, e.g. optin delete-last 15m"
        raise UsageError(msg)
    seconds = parse_duration(args.duration)
    d = _dirs()
    try:  # a running agent seals its session, deletes, and records on in a new one
        report: dict[str, Any] = ipc.request(d, "delete_last", seconds=seconds)["deleted"]
    except ipc.AgentNotRunning:
        _refuse_while_running(d)  # an agent without a control socket still holds its session
        try:
            report = delete_last(d, seconds).to_dict()
        except UnsafeEntry as exc:  # the message (stderr) says what was left; --json: what was deleted
            if args.json and isinstance(exc.partial, DeleteReport):
                _print_json({**exc.partial.to_dict(), "refused": [r.to_dict() for r in exc.refused]})
            raise
    if args.json:
        _print_json(report)
        return 0
    print(
        f"deleted recorded time from {report['range_start']} to {report['range_end']} "
        f"(at least {args.duration}):"
    )
    for item in report["deleted"]:
        sid, segments, size = item["session_id"], item["segments"], item["bytes"]
        print(f"  session {sid}: deleted whole ({segments} segments, {size} bytes)")
    for trim in report["trimmed"]:
        sid, segments, size, kept = trim["session_id"], trim["segments"], trim["bytes"], trim["kept_until"]
        print(f"  session {sid}: last {segments} segments deleted ({size} bytes); kept until {kept}")
    if not report["deleted"] and not report["trimmed"]:
        print("  nothing was recorded in that time")
    else:
        print(f"{report['segments']} segments, {report['bytes']} bytes shredded")
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    from agent.store.reader import list_sessions
    from agent.store.retention import shred_all
    from agent.store.safe_fs import UnsafeEntry

    d = _dirs()
    _refuse_while_running(d)
    infos = list_sessions(d)
    if not args.yes:
        total = sum(i.bytes for i in infos)
        msg = f"this deletes all {len(infos)} sessions ({total} bytes); run again with --yes"
        raise UsageError(msg)
    try:  # every session it can; links, FIFOs and hard links are left and reported together (P8)
        deleted = shred_all(d)
    except UnsafeEntry as exc:  # the message (stderr) names what was left and the fix
        if args.json:
            done = exc.partial if isinstance(exc.partial, list) else []
            _print_json(
                {
                    "deleted": [x.to_dict() for x in done],
                    "bytes": sum(x.bytes for x in done),
                    "refused": [r.to_dict() for r in exc.refused],
                }
            )
        raise
    shredded = sum(x.bytes for x in deleted)
    if args.json:
        _print_json({"deleted": [x.to_dict() for x in deleted], "bytes": shredded})
    else:
        print(f"deleted all {len(deleted)} sessions ({shredded} bytes shredded); your keys are kept")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from agent.export.bundle import export_session
    from agent.study import installed_study

    d = _dirs()
    study = installed_study(d)
    results = []
    for sid in args.ids:
        approved: dict[str, Any] = {}

        def on_approve(summary: dict[str, Any], sid: str = sid, approved: dict[str, Any] = approved) -> None:
            approved.update(summary)
            print(
                f"approving {sid} as it is: {_render_counts(summary)}", file=sys.stderr if args.json else None
            )

        res = export_session(
            d,
            sid,
            Path(args.out),
            study,
            [args.recipient] if args.recipient else None,
            approve=args.approve,
            on_approve=on_approve,
            progress=_progress_bar(f"{sid}: reading screens"),
        )
        results.append({**res.to_json(), **({"approved": approved} if approved else {})})
        if not args.json:
            kept = "deleted from this computer, as the study asks" if res.deleted_locally else "kept here"
            print(f"{sid}: {res.path} ({res.bytes} bytes, {res.steps} steps, {res.frames} frames; {kept})")
    if args.json:
        _print_json(results)
    return 0


def _render_counts(summary: dict[str, Any]) -> str:
    """``12 steps (click 5, type 3, ...), 40 frames, 2 redactions, 61.2 s`` of a prepared session."""
    actions = ", ".join(f"{k} {v}" for k, v in summary["by_action"].items()) or "none"
    redactions = sum(summary["redactions"].values())
    return (
        f"{summary['steps']} steps ({actions}), {summary['frames']} frames, {summary['events']} events, "
        f"{redactions} redactions, {summary['duration_s']} s"
    )


def cmd_review(args: argparse.Namespace) -> int:
    from agent.export.review import reviewable_sessions
    from agent.study import installed_study
    from agent.ui.review import run_review

    d = _dirs()
    study = installed_study(d)
    sessions = reviewable_sessions(d)
    if args.id is None and not sessions:
        msg = "there is no recorded session to review yet. Fix: record one with: optin run"
        raise UsageError(msg)
    return run_review(d, study, args.id or sessions[0], out_dir=Path(args.out) if args.out else None)


def _open_bundle(args: argparse.Namespace) -> Any:
    """The bundle named on the command line, decrypted with ``--identity`` and checked."""
    from agent.export import inspect

    identity = Path(args.identity)
    return inspect.open_bundle(
        Path(args.bundle), inspect.load_identity_file(identity), identity_file=identity
    )


def cmd_inspect(args: argparse.Namespace) -> int:
    from agent.export import inspect

    summary = inspect.summarise(_open_bundle(args))
    if args.json:
        _print_json(summary)
    else:
        print(inspect.render_summary(summary))
    return 0


def cmd_unpack(args: argparse.Namespace) -> int:
    from agent.export import inspect

    bundle = _open_bundle(args)
    where = inspect.unpack(bundle, Path(args.out))
    print(f"{bundle.session}: {len(bundle.members) + 2} files written to {where}")
    return 0


def cmd_redact_text(args: argparse.Namespace) -> int:
    import itertools

    from agent.redact import detectors

    stdin = sys.stdin
    if hasattr(stdin, "reconfigure"):
        stdin.reconfigure(errors="replace")  # a stray byte must not stop a long file
    if stdin.isatty():
        print("optin: reading lines to redact; end with Ctrl-D", file=sys.stderr)
    flush = sys.stdout.isatty()
    source, scanned = itertools.tee(line.rstrip("\r\n") for line in stdin)
    for number, (line, spans) in enumerate(
        zip(source, detectors.detect_lines(scanned), strict=True), start=1
    ):
        redacted = detectors.redact(line, spans)
        if args.json:
            found = [{"start": s.start, "end": s.end, "entity": s.entity} for s in spans]
            print(json.dumps({"line": number, "redacted": redacted, "spans": found}, ensure_ascii=False))
        else:
            print(redacted, flush=flush)
    return 0


def _progress_bar(label: str, width: int = 30) -> Callable[[int, int], None] | None:
    """A ``label [#####-----] n/total`` bar redrawn on the terminal's stderr (None when it is not one)."""
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        filled = width * done // total if total else width
        end = "\n" if done >= total else ""
        bar = "#" * filled + "-" * (width - filled)
        print(f"\r{label} [{bar}] {done}/{total}", end=end, file=sys.stderr, flush=True)

    return show


def cmd_verify(args: argparse.Namespace) -> int:
    from agent.store import keys
    from agent.store.verify import verify

    d = _dirs()
    report = verify(d, keys.load_identity(d), args.id)
    print(report.to_json() if args.json else report.render_text())
    return report.exit_code


def cmd_keys(args: argparse.Namespace) -> int:
    from agent.store import keys

    d = _dirs()
    if args.action == "change-passphrase":
        path = keys.change_passphrase(d)
        print(f"optin: the identity in {path} is now protected by the new passphrase")
        return 0
    if args.action == "init":
        keys.init_keys(d, force=args.force, storage=args.storage)
        if not args.json:
            print("optin: key pair created")
    info = keys.key_info(d)
    text = keys.describe(d)
    if args.volunteer_id:
        found = _volunteer_id(d)
        info["volunteer"] = found
        where = f"study {found['study']}: the id in every bundle you export to it"
        text += f"\nvolunteer id:  {found['id']} ({where})"
        text += f"\n               {found['v1_id']} (in bundles exported by optin 0.1.0)"
    if args.json:
        _print_json(info)
    else:
        print(text)
    return 0


def _volunteer_id(d: Any) -> dict[str, str]:
    """The volunteer's pseudonym for the installed study (unlocks the identity)."""
    from agent.store import keys, signing
    from agent.study import installed_study

    study = installed_study(d)
    identity = keys.load_identity(d)
    return {
        "study": study.id,
        "id": signing.volunteer_id(identity, study.id),
        # bundles of optin 0.1.0 (optin-bundle/1) carry this one: a withdrawal names both
        "v1_id": signing.v1_volunteer_id(identity, study.id),
    }


def cmd_doctor(args: argparse.Namespace) -> int:
    from agent import doctor

    checks = doctor.run_checks()
    if args.json:
        _print_json([asdict(c) for c in checks])
    else:
        print(doctor.render_text(checks))
    return doctor.exit_code(checks)


def cmd_autostart(args: argparse.Namespace) -> int:
    from agent import autostart

    if args.action == "enable":
        found = [autostart.enable(args.via)]
        verb = "written"
    elif args.action == "disable":
        found = autostart.disable()
        verb = "removed"
    else:
        found = autostart.installed()
        verb = "installed"
    if args.json:
        _print_json({"action": args.action, verb: [e.to_json() for e in found]})
        return 0
    if not found:
        print("optin does not start at login (enable it with: optin autostart enable)")
    for e in found:
        then = f"; {e.then}" if args.action == "enable" and e.then else ""
        print(f"{e.kind}: {e.path} {verb}{then}")
    if args.action == "disable" and any(e.kind == "systemd" for e in found):
        print("then run: systemctl --user daemon-reload")
    return 0


def cmd_uninstall(args: argparse.Namespace) -> int:
    from agent import autostart
    from agent.store.keys import forget_keys
    from agent.store.reader import list_sessions
    from agent.store.retention import shred_all

    d = _dirs()
    _refuse_while_running(d)
    sessions = list_sessions(d) if args.purge else []
    if args.purge and not args.yes:
        msg = (
            f"this deletes optin from this computer: its autostart entries, all {len(sessions)} recorded "
            f"sessions (crypto-shredded), your key pair, the study, your consent and settings ({d.config}, "
            f"{d.data}). Exported bundles you handed over are not touched. Run again with --yes to do it"
        )
        raise UsageError(msg)
    if args.purge:
        _check_removable((d.config, d.data, d.runtime))  # before anything is removed
    report: dict[str, Any] = {"autostart": [e.to_json() for e in autostart.disable()]}
    if args.purge:
        report["sessions"] = len(shred_all(d, reason="uninstall"))
        report["keys"] = forget_keys(d)
        report["removed"] = [str(p) for p in (d.config, d.data, d.runtime) if _remove_tree(p)]
    if args.json:
        _print_json(report)
        return 0
    for e in report["autostart"]:
        print(f"removed autostart entry {e['path']}")
    if args.purge:
        print(
            f"shredded {report['sessions']} sessions; removed your key pair and "
            f"{', '.join(report['removed'])}"
        )
    else:
        print(
            "optin no longer starts at login; your sessions, keys and settings are kept "
            "(--purge deletes them)"
        )
    print("to remove the program itself: delete its folder (or: pip uninstall optin)")
    return 0


def _check_removable(paths: Sequence[Path]) -> None:
    """Each of optin's folders is a real folder (or absent): ``uninstall --purge`` removes them whole,
    and never through a link (P8), so a link there stops it before anything is removed.

    :raises UnsafeEntry: a link (or a file) stands where one of them should be; the message says the fix.
    """
    from agent.store.safe_fs import UnsafeEntry, is_plain_dir, refusal

    refused = []
    for path in paths:
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if not is_plain_dir(st):
            refused.append(refusal(path, st, "one of its own folders"))
    if refused:
        lead = "optin uninstall --purge removed nothing (no autostart entry, session, key or setting)"
        raise UnsafeEntry(refused, lead=lead)


def _remove_tree(path: Path) -> bool:
    """Remove optin's folder ``path`` (checked by :func:`_check_removable`: links inside are removed,
    never followed)."""
    import shutil

    if not os.path.lexists(path):
        return False
    shutil.rmtree(path)
    return True


def cmd_demo(args: argparse.Namespace) -> int:
    from agent import demo

    summary = demo.run_demo(seconds=args.seconds, progress=not args.json)
    if args.json:
        _print_json(summary)
    else:
        print(demo.render_summary(summary))
    return 0


# -- parser --------------------------------------------------------------------------------------


def _add_control_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
    """``status``, ``pause``, ``resume`` and ``exclude``: they ask the running agent."""
    sp = add("status", cmd_status, "state of the running agent (exit 3: none runs)")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.epilog = "Exit codes: 0 running, 1 stopped by an error, 3 no agent runs (the last session is shown)."

    sp = add("pause", cmd_pause, "pause the running agent's capture (no DURATION: until resumed)")
    sp.add_argument("duration", nargs="?", metavar="DURATION", help="like 90s, 15m, 1h, 2h30m")
    sp.epilog = "Exit codes: 0 paused, 1 the agent could not pause, 3 no agent runs."

    sp = add("resume", cmd_resume, "resume the running agent's capture after a pause")
    sp.epilog = "Exit codes: 0 recording, 1 still paused (the message says why), 3 no agent runs."

    sp = add("exclude", cmd_exclude, "add a deny rule to the running agent (default: the focused app)")
    which = sp.add_mutually_exclusive_group()
    which.add_argument(
        "--app", metavar="CLASS", help="windows of exactly this application class (any case; X11: WM_CLASS)"
    )
    which.add_argument(
        "--title", metavar="PATTERN", help="windows whose title matches (a regular expression, any case)"
    )
    sp.add_argument("--json", action="store_true", help="machine-readable output (the rule added)")
    sp.epilog = (
        "Without a running agent, --app and --title rules are remembered for its next start; the focused "
        "app needs the agent. Exit codes: 0 rule added, 2 bad rule, 3 no agent runs (focused app)."
    )


def _add_deletion_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
    """``delete-last`` and ``purge`` (``sessions delete`` is an action of ``sessions``)."""
    sp = add("delete-last", cmd_delete_last, "delete at least the last DURATION of recorded time (shredded)")
    sp.add_argument("duration", nargs="?", metavar="DURATION", help="like 90s, 15m, 1h, 2h30m")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.epilog = (
        "With a running agent, the agent deletes (its session is sealed first; recording goes on in a "
        "new one, paused if it was paused); without one, optin deletes from the store itself."
    )

    sp = add("purge", cmd_purge, "delete every recorded session (crypto-shredding); the keys stay")
    sp.add_argument("--yes", action="store_true", help="really delete them all")
    sp.add_argument("--json", action="store_true", help="machine-readable output")


def _add_export_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
    """``review``, ``redact-text``, ``export``, ``inspect`` and ``unpack``."""
    sp = add("review", cmd_review, "a window: see exactly what would be exported; cut ranges; approve")
    sp.add_argument("id", nargs="?", metavar="ID", help="the session (default: the newest recorded one)")
    sp.add_argument(
        "--out", metavar="DIR", help="where the window's Export button writes (default: ~/optin-exports)"
    )
    sp.epilog = (
        "The window shows the session redacted, as the bundle would hold it: the frames with their masks, "
        "the steps and the counts. Cuts are deleted from this computer; Approve lets optin export send it."
    )

    sp = add("redact-text", cmd_redact_text, "redact lines from standard input with optin's text detectors")
    sp.add_argument(
        "--json", action="store_true", help="one JSON object per line: the redacted text and its spans"
    )
    sp.epilog = (
        "Each input line is printed with what the detectors find replaced by its entity, e.g. [EMAIL], "
        "[CREDIT_CARD]; a PEM private key is followed across lines. The same detectors redact typed text, "
        "pasted text, window titles and the text OCR reads on screens at export (docs/redaction.md)."
    )

    sp = add("export", cmd_export, "redact, sign and encrypt approved sessions to the study's key")
    sp.add_argument("ids", nargs="+", metavar="ID")
    sp.add_argument("--out", required=True, metavar="DIR", help="directory for <id>.optin.tar.age")
    sp.add_argument("--recipient", metavar="AGE_KEY", help="age public key (default: the study's)")
    sp.add_argument(
        "--approve",
        action="store_true",
        help="approve the sessions as they are, unseen (prints what it approves)",
    )
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.epilog = (
        "Only sessions recorded under the consent in force, and approved (optin review, or --approve), are "
        "exported; redaction always runs. Exit codes: 0 written, 1 failure, 2 not approved, consent not in "
        "force, or a redactor the study requires is missing."
    )

    sp = add(
        "inspect",
        cmd_inspect,
        "decrypt a bundle, check its signature, volunteer id and hashes, recompute its counts; summarise it",
    )
    sp.add_argument("bundle", metavar="BUNDLE", help="a <id>.optin.tar.age file")
    sp.add_argument("--identity", required=True, metavar="FILE", help="the study's age identity file")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.epilog = "Exit codes: 0 the bundle is intact, 1 wrong identity or a damaged or modified bundle."

    sp = add(
        "unpack", cmd_unpack, "check a bundle like inspect, then write its files under DIR/<session-id>/"
    )
    sp.add_argument("bundle", metavar="BUNDLE", help="a <id>.optin.tar.age file")
    sp.add_argument("--identity", required=True, metavar="FILE", help="the study's age identity file")
    sp.add_argument("--out", required=True, metavar="DIR", help="output directory")
    sp.epilog = "Nothing is written unless every check passes. Exit codes: 0 written, 1 refused (the reason)."


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="optin",
        description="Record computer-use demonstrations with consent: encrypted, pausable, exported only "
        "to the study's key.",
        epilog="Environment: OPTIN_HOME, OPTIN_LOG_LEVEL, OPTIN_BACKEND. Exit codes: 0 ok, 1 failure, "
        "2 bad usage or environment, 3 no optin agent is running (status, pause, resume, exclude).",
    )
    p.add_argument("--version", action="version", version=f"optin {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(func=func)
        return sp

    sp = add("run", cmd_run, "start the agent with its tray icon (records only after consent)")
    sp.add_argument("--study", metavar="FILE", help="install this study file first")

    sp = add("consent", cmd_consent, "show, grant or withdraw consent to the installed study")
    sp.add_argument("action", choices=["show", "grant", "withdraw"])
    sp.add_argument("--study", metavar="FILE", help="install this study file first")
    sp.add_argument(
        "--accept-text-sha256",
        metavar="HASH",
        help="grant: the consent sha256 `consent show` printed (the text's own sha256 is accepted too)",
    )
    sp.add_argument("--scopes", nargs="+", metavar="SCOPE", help="grant: only these scopes")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.epilog = (
        "show prints the study's text, what optin does in this study (written from its policy) and the "
        "consent sha256 over all of it; a receipt covers only that: a study file with another recipient, "
        "deny rule, retention or redaction choice needs a new grant. Exit codes: 0 ok, 2 no study, an "
        "invalid study file or a hash that does not match."
    )

    _add_control_commands(add)

    sp = add(
        "verify", cmd_verify, "read and check every byte of the local store (like restic check --read-data)"
    )
    sp.add_argument("id", nargs="?", metavar="ID", help="only this session")
    sp.add_argument("--json", action="store_true", help="machine-readable output")

    _add_deletion_commands(add)

    sp = add("sessions", cmd_sessions, "list recorded sessions (or: sessions delete ID, crypto-shredding)")
    sp.add_argument("action", nargs="?", choices=["list", "delete"], default="list")
    sp.add_argument("id", nargs="?", metavar="ID", help="delete: the session to delete")
    sp.add_argument("--json", action="store_true", help="machine-readable output")

    _add_export_commands(add)

    sp = add("keys", cmd_keys, "the volunteer's key pair: init, show, change-passphrase")
    sp.add_argument("action", choices=["init", "show", "change-passphrase"])
    sp.add_argument("--force", action="store_true", help="init: replace existing keys (old data unreadable)")
    sp.add_argument(
        "--storage",
        choices=["auto", "keyring", "file"],
        default="auto",
        help="init: where the identity lives (auto: the OS keyring if there is one, else a passphrase file)",
    )
    sp.add_argument("--json", action="store_true", help="init, show: machine-readable output")
    sp.add_argument(
        "--volunteer-id",
        action="store_true",
        help="show: also your pseudonym for the installed study, as its bundles carry it (unlocks the key)",
    )
    sp.epilog = (
        "Passphrases: OPTIN_PASSPHRASE_FILE (first line: the passphrase; init uses it for the new key), "
        "OPTIN_NEW_PASSPHRASE_FILE (change-passphrase: the new one); otherwise they are asked for in the "
        "terminal. PYTHON_KEYRING_BACKEND=keyring.backends.fail.Keyring never uses the OS keyring."
    )

    sp = add("autostart", cmd_autostart, "start optin when you log in: enable, disable, status")
    sp.add_argument("action", nargs="?", choices=["status", "enable", "disable"], default="status")
    sp.add_argument(
        "--via",
        choices=["xdg", "systemd", "launchagent", "startup"],
        help="enable: how (Linux: xdg, the default, or systemd; macOS: launchagent; Windows: startup)",
    )
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.epilog = "The entry runs `optin run` with this Python and OPTIN_HOME (packaging/README.md)."

    sp = add("uninstall", cmd_uninstall, "remove the autostart entries; --purge also deletes data and keys")
    sp.add_argument(
        "--purge", action="store_true", help="also shred every session and delete keys and settings"
    )
    sp.add_argument("--yes", action="store_true", help="with --purge: really delete them")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.epilog = "Refused while optin runs (quit it first). Exported bundles are never touched."

    sp = add("doctor", cmd_doctor, "what works on this machine, and how to fix what does not")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.epilog = (
        "Checks: display (X11; macOS and Windows: the desktop session), record (X11 RECORD), permissions "
        "(macOS: Accessibility, Input Monitoring, Screen Recording), tray, backend, python, packages, "
        "data-dir, keyring, age, ocr. Exit codes: 0 all fine, 1 something optin needs is missing "
        "(packages, data dir, OCR the study requires), 2 the environment cannot record (display, RECORD, "
        "permissions, backend)."
    )

    sp = add("demo", cmd_demo, "the whole chain on a private virtual display")
    sp.add_argument("--seconds", type=float, default=8.0, metavar="N", help="length of the scripted session")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    return p


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
