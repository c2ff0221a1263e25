"""Looking after optin on this machine: ``doctor``, ``autostart``, ``uninstall`` and ``demo``."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from agent.cli.output import print_json
from agent.cli.recording import refuse_while_running
from agent.errors import UsageError

__all__ = ["cmd_autostart", "cmd_demo", "cmd_doctor", "cmd_uninstall"]


def cmd_doctor(args: argparse.Namespace) -> int:
    from agent import doctor

    checks = doctor.run_checks()
    if args.json:
        print_json([asdict(c) for c in checks])
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
        print_json({"action": args.action, verb: [e.to_json() for e in found]})
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
    from agent.paths import dirs
    from agent.store.keys import forget_keys
    from agent.store.reader import list_sessions
    from agent.store.retention import shred_all

    d = dirs()
    refuse_while_running(d)
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
        print_json(report)
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

    keep = Path(args.keep) if args.keep else None
    summary = demo.run_demo(seconds=args.seconds, progress=not args.json, keep=keep)
    if args.json:
        print_json(summary)
    else:
        print(demo.render_summary(summary))
    return 0
