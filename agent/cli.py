"""The ``optin`` command line: parses, calls, prints.  Nothing else lives here.

Exit codes: 0 ok, 1 failure, 2 bad usage or environment (the message says the fix).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from agent import __version__
from agent.errors import OptinError, UsageError

#: Commands of the contract that later issues build; they say so and exit 2.
NOT_BUILT = {
    "pause": "pausing from the command line comes with the control socket (use the tray's Pause for now)",
    "resume": "resuming from the command line comes with the control socket (use the tray's Resume)",
    "exclude": "deny rules come with the consent and control work",
    "review": "the review window comes with the review and export work",
    "inspect": "bundle inspection comes with the review and export work",
    "unpack": "bundle unpacking comes with the review and export work",
    "redact-text": "text redaction comes with the redaction work",
}


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
    consent.require(d, study)
    with agent_lock(d):
        return _run_agent(d, study)


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
    tray.run(recorder, on_ready=lambda: print(f"optin: recording session {recorder.session_id}", flush=True))
    if recorder.state == "error":
        print(f"optin: session {recorder.session_id} stopped: {recorder.error}", file=sys.stderr)
        return 1
    if recorder.session_id is None:
        print("optin: stopped before recording began; nothing was recorded")
        return 0
    print(f"optin: session {recorder.session_id} saved ({recorder.counters.written} events)")
    return 0


def cmd_consent(args: argparse.Namespace) -> int:
    from agent import consent
    from agent.study import install_study, installed_study

    d = _dirs()
    study = install_study(d, Path(args.study)) if getattr(args, "study", None) else installed_study(d)
    if args.action == "show":
        receipt = consent.current_receipt(d)
        agreed = receipt is not None and receipt.covers(study)
        if args.json:
            _print_json(
                {
                    "study": study.id,
                    "name": study.name,
                    "contact": study.contact,
                    "consent_version": study.consent_version,
                    "text": study.consent_text,
                    "text_sha256": study.text_sha256,
                    "scopes": list(study.scopes),
                    "recipients": list(study.recipients),
                    "granted": agreed,
                }
            )
            return 0
        print(f"Study:    {study.name} ({study.id}), consent version {study.consent_version}")
        print(f"Contact:  {study.contact}")
        print(f"Captures: {', '.join(study.scopes)}")
        print(f"Exports readable only by: {', '.join(study.recipients)}")
        print()
        print(study.consent_text.strip())
        print()
        print(f"text sha256: {study.text_sha256}")
        print(f"consent: {'GIVEN' if agreed else 'not given'}")
        if not agreed:
            print(f"To agree: optin consent grant --accept-text-sha256 {study.text_sha256}")
        return 0
    if args.action == "grant":
        if not args.accept_text_sha256:
            msg = "consent grant needs --accept-text-sha256 HASH (the hash `optin consent show` prints)"
            raise UsageError(msg)
        receipt = consent.grant(d, study, args.accept_text_sha256, args.scopes)
        if args.json:
            _print_json(receipt.to_json())
        else:
            print(f"consent given to {study.id} version {study.consent_version}: {', '.join(receipt.scopes)}")
        return 0
    from agent.control import read_status

    had = consent.withdraw(d)
    if not had:
        print("no consent was given; nothing to withdraw")
    elif read_status(d) is not None:
        print("consent withdrawn; the running agent stops recording within a second")
    else:
        print("consent withdrawn; optin will not record")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from agent.control import read_status

    status = read_status(_dirs())
    if status is None:
        if args.json:
            _print_json({"state": "not running"})
        else:
            print("optin is not running (start it with `optin run`)")
        return 1
    if args.json:
        _print_json(status)
    else:
        print(
            f"{status['state']}: session {status['session']}, {status['events_written']} events saved, "
            f"{status['dropped']} dropped"
        )
    return 0


def cmd_sessions(args: argparse.Namespace) -> int:
    from agent.store.reader import list_sessions

    if args.action == "delete":
        return _sessions_delete(args)
    infos = list_sessions(_dirs())
    rows = [asdict(i) for i in infos]
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("no sessions yet")
        return 0
    print(f"{'ID':<28} {'STATE':<10} {'STARTED':<26} {'EVENTS':>8} {'FRAMES':>7} {'BYTES':>10}")
    for r in rows:
        print(
            f"{r['id']:<28} {r['state']:<10} {r.get('started_at') or '-':<26} "
            f"{r.get('events', 0):>8} {r.get('frames', 0):>7} {r.get('bytes', 0):>10}"
        )
    return 0


def _sessions_delete(args: argparse.Namespace) -> int:
    from agent.control import read_status
    from agent.store.retention import shred_session

    if not args.id:
        msg = "sessions delete needs a session id. Fix: optin sessions delete ID (optin sessions lists them)"
        raise UsageError(msg)
    d = _dirs()
    status = read_status(d)
    if status is not None and status.get("session") == args.id:
        msg = f"session {args.id} is being recorded; stop optin first (quit from the tray), then delete it"
        raise UsageError(msg)
    deleted = shred_session(d, args.id)
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
    from agent.control import read_status
    from agent.store.retention import AGENT_RUNNING

    if read_status(d) is not None:
        raise UsageError(AGENT_RUNNING)


def cmd_delete_last(args: argparse.Namespace) -> int:
    from agent.store.retention import delete_last

    if args.duration is None:
        msg = f"delete-last needs {DURATION_FORMS}, e.g. optin delete-last 15m"
        raise UsageError(msg)
    seconds = parse_duration(args.duration)
    d = _dirs()
    _refuse_while_running(d)
    report = delete_last(d, seconds)
    if args.json:
        _print_json(report.to_dict())
        return 0
    print(
        f"deleted recorded time from {report.range_start} to {report.range_end} (at least {args.duration}):"
    )
    for item in report.deleted:
        print(f"  session {item.session_id}: deleted whole ({item.segments} segments, {item.bytes} bytes)")
    for trim in report.trimmed:
        print(
            f"  session {trim.session_id}: last {trim.segments} segments deleted ({trim.bytes} bytes); "
            f"kept until {trim.kept_until}"
        )
    if not report.deleted and not report.trimmed:
        print("  nothing was recorded in that time")
    else:
        print(f"{report.segments} segments, {report.bytes} bytes shredded")
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    from agent.store.reader import list_sessions
    from agent.store.retention import shred_session

    d = _dirs()
    _refuse_while_running(d)
    infos = list_sessions(d)
    total = sum(i.bytes for i in infos)
    if not args.yes:
        msg = f"this deletes all {len(infos)} sessions ({total} bytes); run again with --yes"
        raise UsageError(msg)
    deleted = [shred_session(d, i.id) for i in infos]
    if args.json:
        _print_json({"deleted": [x.to_dict() for x in deleted], "bytes": total})
    else:
        print(f"deleted all {len(deleted)} sessions ({total} bytes shredded); your keys are kept")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from agent.export.bundle import export_session
    from agent.study import installed_study

    d = _dirs()
    study = installed_study(d)
    results = []
    for sid in args.ids:
        res = export_session(d, sid, Path(args.out), study, [args.recipient] if args.recipient else None)
        results.append(res.to_json())
        if not args.json:
            print(f"{sid}: {res.path} ({res.bytes} bytes, {res.events} events, {res.frames} frames)")
    if args.json:
        _print_json(results)
    return 0


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
    if args.json:
        _print_json(keys.key_info(d))
    else:
        print(keys.describe(d))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from agent import doctor

    checks = doctor.run_checks()
    if args.json:
        _print_json([asdict(c) for c in checks])
    else:
        print(doctor.render_text(checks))
    return doctor.exit_code(checks)


def cmd_demo(args: argparse.Namespace) -> int:
    from agent import demo

    summary = demo.run_demo(seconds=args.seconds, progress=not args.json)
    if args.json:
        _print_json(summary)
    else:
        print(demo.render_summary(summary))
    return 0


def _not_built_command(name: str) -> Callable[[argparse.Namespace], int]:
    def command(_args: argparse.Namespace) -> int:
        return _not_built(name, NOT_BUILT[name])

    return command


def _not_built(name: str, why: str) -> int:
    print(f"optin {name}: not built yet in this version ({why}).", file=sys.stderr)
    return 2


# -- parser --------------------------------------------------------------------------------------


def _add_deletion_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
    """``delete-last`` and ``purge`` (``sessions delete`` is an action of ``sessions``)."""
    sp = add("delete-last", cmd_delete_last, "delete at least the last DURATION of recorded time (shredded)")
    sp.add_argument("duration", nargs="?", metavar="DURATION", help="like 90s, 15m, 1h, 2h30m")
    sp.add_argument("--json", action="store_true", help="machine-readable output")

    sp = add("purge", cmd_purge, "delete every recorded session (crypto-shredding); the keys stay")
    sp.add_argument("--yes", action="store_true", help="really delete them all")
    sp.add_argument("--json", action="store_true", help="machine-readable output")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="optin",
        description="Record computer-use demonstrations with consent: encrypted, pausable, exported only "
        "to the study's key.",
        epilog="Environment: OPTIN_HOME, OPTIN_LOG_LEVEL, OPTIN_BACKEND. Exit codes: 0 ok, 1 failure, "
        "2 bad usage or environment.",
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
    sp.add_argument("--accept-text-sha256", metavar="HASH", help="grant: the hash `consent show` printed")
    sp.add_argument("--scopes", nargs="+", metavar="SCOPE", help="grant: only these scopes")
    sp.add_argument("--json", action="store_true", help="machine-readable output")

    sp = add("status", cmd_status, "state of the running agent")
    sp.add_argument("--json", action="store_true", help="machine-readable output")

    sp = add(
        "verify", cmd_verify, "read and check every byte of the local store (like restic check --read-data)"
    )
    sp.add_argument("id", nargs="?", metavar="ID", help="only this session")
    sp.add_argument("--json", action="store_true", help="machine-readable output")

    _add_deletion_commands(add)

    for name in ("pause", "resume", "exclude", "review", "redact-text"):
        sp = add(name, _not_built_command(name), f"(not built yet) {NOT_BUILT[name]}")
        sp.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
        sp.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
        sp.add_argument("--yes", action="store_true", help=argparse.SUPPRESS)

    sp = add("sessions", cmd_sessions, "list recorded sessions (or: sessions delete ID, crypto-shredding)")
    sp.add_argument("action", nargs="?", choices=["list", "delete"], default="list")
    sp.add_argument("id", nargs="?", metavar="ID", help="delete: the session to delete")
    sp.add_argument("--json", action="store_true", help="machine-readable output")

    sp = add("export", cmd_export, "redact and encrypt sessions to the study's key")
    sp.add_argument("ids", nargs="+", metavar="ID")
    sp.add_argument("--out", required=True, metavar="DIR", help="directory for <id>.optin.tar.age")
    sp.add_argument("--recipient", metavar="AGE_KEY", help="age public key (default: the study's)")
    sp.add_argument("--json", action="store_true", help="machine-readable output")

    for name in ("inspect", "unpack"):
        sp = add(name, _not_built_command(name), f"(not built yet) {NOT_BUILT[name]}")
        sp.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
        sp.add_argument("--identity", help=argparse.SUPPRESS)
        sp.add_argument("--out", help=argparse.SUPPRESS)
        sp.add_argument("--json", action="store_true", help=argparse.SUPPRESS)

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
    sp.epilog = (
        "Passphrases: OPTIN_PASSPHRASE_FILE (first line: the passphrase; init uses it for the new key), "
        "OPTIN_NEW_PASSPHRASE_FILE (change-passphrase: the new one); otherwise they are asked for in the "
        "terminal. PYTHON_KEYRING_BACKEND=keyring.backends.fail.Keyring never uses the OS keyring."
    )

    sp = add("doctor", cmd_doctor, "what works on this machine, and how to fix what does not")
    sp.add_argument("--json", action="store_true", help="machine-readable output")

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
        return int(args.func(args))
    except OptinError as exc:
        print(f"optin: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("optin: interrupted", file=sys.stderr)
        return 130
