"""``optin upload [ID...|--all-exported] [--json]``: send exported bundles to the study's intake
(docs/upload.md; docs/volunteer-guide.md, "Uploading to the study").

The network code (:mod:`agent.upload`) is imported only inside :func:`cmd_upload`: the command line's
shell, and so ``optin run``, never loads it (tests/unit/test_no_network.py).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from agent.cli.output import byte_bar, print_json
from agent.errors import UsageError

__all__ = ["add_upload_command", "cmd_upload"]

#: States ``--all-exported`` sends: not yet delivered, and not refused by the intake.
PENDING = ("exported", "uploading")


def cmd_upload(args: argparse.Namespace) -> int:
    from agent import consent
    from agent.export import deliveries
    from agent.paths import dirs
    from agent.store import keys
    from agent.study import installed_study
    from agent.upload.http import Client
    from agent.upload.sender import Sender, UploadFailed, delete_delivered, one_upload, signer_for

    d = dirs()
    study = installed_study(d)
    if not study.upload_url:
        msg = (
            f"study {study.id!r} names no place to upload to ([upload] url in its study file). Fix: hand the "
            "export files over as the study asked you to (optin sessions shows where they are)"
        )
        raise UsageError(msg)
    chosen = _chosen(d, args)
    consent.require(d, study)  # the upload address is part of what the volunteer agreed to
    results: list[dict[str, Any]] = []
    with one_upload(d):
        signer = signer_for(keys.load_identity(d), study.id)
        with Client() as client:
            sender = Sender(d, client, study.upload_url, signer)
            for delivery in chosen:
                if delivery.state == "delivered":
                    results.append(_row(delivery, "delivered", already=True))
                    continue
                bar = None if args.json else byte_bar(f"uploading {delivery.session}")
                try:
                    done = sender.send(delivery, bar)
                except UploadFailed as exc:
                    results.append(
                        _row(deliveries.load(d, delivery.session) or delivery, "failed", error=str(exc))
                    )
                    print(f"optin: {exc}", file=sys.stderr)
                    continue
                row = _row(done, "delivered")
                if study.deletes_after_upload:
                    row["deleted_locally"] = delete_delivered(d, done)
                results.append(row)
    if args.json:
        print_json(results)
    else:
        for row in results:
            print(_line(row))
    return 0 if all(r["result"] == "delivered" for r in results) else 1


def _chosen(d: Any, args: argparse.Namespace) -> list[Any]:
    """The deliveries to send: the ids named, or every pending one (``--all-exported``)."""
    from agent.export import deliveries

    if bool(args.ids) == bool(args.all_exported):
        msg = "name the sessions to upload, or --all-exported (not both). Fix: optin upload --all-exported"
        raise UsageError(msg)
    if args.all_exported:
        pending = [x for x in deliveries.load_all(d) if x.state in PENDING]
        if not pending:
            msg = (
                "no export is waiting to be uploaded (optin sessions shows each export's upload). Fix: "
                "export a session first (the review window, or optin export ID --out DIR)"
            )
            raise UsageError(msg)
        return pending
    out = []
    for sid in dict.fromkeys(args.ids):
        try:
            found = deliveries.load(d, sid)
        except ValueError:
            found = None
        if found is None:
            msg = (
                f"session {sid!r} has no export optin knows of. Fix: export it first (the review window, or "
                f"optin export {sid} --out DIR); optin sessions lists the ids"
            )
            raise UsageError(msg)
        out.append(found)
    return out


def _row(delivery: Any, result: str, *, already: bool = False, error: str = "") -> dict[str, Any]:
    row: dict[str, Any] = {
        "session": delivery.session,
        "result": result,
        "state": delivery.state,
        "shown": delivery.shown_state(),
        "sent": delivery.sent,
        "size": delivery.size,
        "already": already,
    }
    if delivery.reason:
        row["reason"] = delivery.reason
    if error:
        row["error"] = error
    return row


def _line(row: dict[str, Any]) -> str:
    if row["result"] == "delivered":
        again = " (it was already)" if row["already"] else ""
        gone = "; deleted from this computer" if row.get("deleted_locally") else ""
        return f"{row['session']}: delivered, {row['size']} bytes{again}{gone}"
    return f"{row['session']}: not delivered ({row['shown']})"


def add_upload_command(add: Any) -> None:
    """``optin upload``."""
    sp = add(
        "upload", cmd_upload, "send exported bundles to the study's intake ([upload] url in its study file)"
    )
    sp.add_argument("ids", nargs="*", metavar="ID", help="sessions whose exports to send")
    sp.add_argument("--all-exported", action="store_true", help="every export not yet delivered")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.epilog = (
        "Each bundle is checked against what the export wrote, sent in parts with their checksums, and "
        "stored by the study only once its SHA-256 matches; an interrupted upload resumes where it stopped. "
        "optin sessions shows each export's upload. Exit codes: 0 every bundle delivered; 1 one was not "
        "(the reason and the fix on stderr; run again to resume); 2 bad usage, no [upload] url, no consent."
    )
