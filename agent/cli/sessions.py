"""The recorded sessions: ``sessions`` (list, delete), ``delete-last``, ``purge`` and ``verify``.

Deleting is crypto-shredding (:mod:`agent.store.retention`); what a refused link or FIFO left
is said on stderr, and with ``--json`` what was deleted before the refusal is printed too.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from agent.cli.durations import DURATION_FORMS, parse_duration
from agent.cli.output import print_json
from agent.cli.recording import refuse_while_running, running_status
from agent.errors import UsageError

__all__ = ["cmd_delete_last", "cmd_purge", "cmd_sessions", "cmd_verify"]


def cmd_sessions(args: argparse.Namespace) -> int:
    from agent.export import approval, deliveries
    from agent.paths import dirs
    from agent.store.reader import list_sessions

    if args.action == "delete":
        return _sessions_delete(args)
    d = dirs()
    sent = {x.session: x for x in deliveries.load_all(d)}
    rows = [
        {**asdict(i), "review": approval.describe(d, i.id), "delivery": _delivery(sent.pop(i.id, None))}
        for i in list_sessions(d)
    ]
    # exported, then deleted here (the study's after_export, retention): the bundle's delivery goes on
    rows += [{"id": sid, "state": "deleted", "delivery": _delivery(x)} for sid, x in sorted(sent.items())]
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no sessions yet")
        return 0
    print(
        f"{'ID':<28} {'STATE':<10} {'STARTED':<26} {'EVENTS':>8} {'FRAMES':>7} {'BYTES':>10}  "
        f"{'REVIEW':<24} UPLOAD"
    )
    for r in rows:
        review = r.get("review") or {"approval": "-", "exports": 0}
        exported = f", exported {review['exports']}x" if review["exports"] else ""
        delivery = r["delivery"]["shown"] if r["delivery"] else "-"
        print(
            f"{r['id']:<28} {r['state']:<10} {r.get('started_at') or '-':<26} "
            f"{r.get('events', 0):>8} {r.get('frames', 0):>7} {r.get('bytes', 0):>10}  "
            f"{review['approval'] + exported:<24} {delivery}"
        )
    return 0


def _delivery(found: Any) -> dict[str, Any] | None:
    """A session's delivery as ``sessions`` shows it (None: never exported since deliveries existed)."""
    if found is None:
        return None
    return {
        "state": found.state,
        "shown": found.shown_state(),
        "sent": found.sent,
        "size": found.size,
        "reason": found.reason,
        "bundle": found.bundle,
    }


def _sessions_delete(args: argparse.Namespace) -> int:
    from agent.paths import dirs
    from agent.store.retention import Deleted, shred_session
    from agent.store.safe_fs import UnsafeEntry

    if not args.id:
        msg = "sessions delete needs a session id. Fix: optin sessions delete ID (optin sessions lists them)"
        raise UsageError(msg)
    d = dirs()
    status = running_status(d)
    if status is not None and status.get("session") == args.id:
        msg = f"session {args.id} is being recorded; stop optin first (quit from the tray), then delete it"
        raise UsageError(msg)
    try:
        deleted = shred_session(d, args.id)
    except UnsafeEntry as exc:
        if args.json and isinstance(exc.partial, Deleted):  # what was shredded before the refusal
            print_json({**exc.partial.to_dict(), "refused": [r.to_dict() for r in exc.refused]})
        raise
    if args.json:
        print_json(deleted.to_dict())
    else:
        print(
            f"deleted session {deleted.session_id}: "
            f"{deleted.segments} segments, {deleted.bytes} bytes shredded"
        )
    return 0


def cmd_delete_last(args: argparse.Namespace) -> int:
    from agent import ipc
    from agent.paths import dirs
    from agent.store.retention import DeleteReport, delete_last
    from agent.store.safe_fs import UnsafeEntry

    if args.duration is None:
        msg = f"delete-last needs {DURATION_FORMS}, e.g. optin delete-last 15m"
        raise UsageError(msg)
    seconds = parse_duration(args.duration)
    d = dirs()
    try:  # a running agent seals its session, deletes, and records on in a new one
        report: dict[str, Any] = ipc.request(d, "delete_last", seconds=seconds)["deleted"]
    except ipc.AgentNotRunning:
        refuse_while_running(d)  # an agent without a control socket still holds its session
        try:
            report = delete_last(d, seconds).to_dict()
        except UnsafeEntry as exc:  # the message (stderr) says what was left; --json: what was deleted
            if args.json and isinstance(exc.partial, DeleteReport):
                print_json({**exc.partial.to_dict(), "refused": [r.to_dict() for r in exc.refused]})
            raise
    if args.json:
        print_json(report)
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
    from agent.paths import dirs
    from agent.store.reader import list_sessions
    from agent.store.retention import shred_all
    from agent.store.safe_fs import UnsafeEntry

    d = dirs()
    refuse_while_running(d)
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
            print_json(
                {
                    "deleted": [x.to_dict() for x in done],
                    "bytes": sum(x.bytes for x in done),
                    "refused": [r.to_dict() for r in exc.refused],
                }
            )
        raise
    shredded = sum(x.bytes for x in deleted)
    if args.json:
        print_json({"deleted": [x.to_dict() for x in deleted], "bytes": shredded})
    else:
        print(f"deleted all {len(deleted)} sessions ({shredded} bytes shredded); your keys are kept")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from agent.paths import dirs
    from agent.store import keys
    from agent.store.verify import verify

    d = dirs()
    report = verify(d, keys.load_identity(d), args.id)
    print(report.to_json() if args.json else report.render_text())
    return report.exit_code
