"""What leaves the computer, and what a study reads: ``review``, ``export``, ``inspect``, ``unpack``,
and ``redact-text`` (optin's text detectors over standard input)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from agent.cli.output import print_json, progress_bar
from agent.errors import UsageError
from agent.session_summary import counts_line

__all__ = ["cmd_export", "cmd_inspect", "cmd_redact_text", "cmd_review", "cmd_unpack"]


def cmd_export(args: argparse.Namespace) -> int:
    from agent.export.bundle import export_session
    from agent.paths import dirs
    from agent.study import installed_study

    d = dirs()
    study = installed_study(d)
    results = []
    for sid in args.ids:
        approved: dict[str, Any] = {}

        def on_approve(summary: dict[str, Any], sid: str = sid, approved: dict[str, Any] = approved) -> None:
            approved.update(summary)
            print(f"approving {sid} as it is: {counts_line(summary)}", file=sys.stderr if args.json else None)

        res = export_session(
            d,
            sid,
            Path(args.out),
            study,
            [args.recipient] if args.recipient else None,
            approve=args.approve,
            on_approve=on_approve,
            progress=progress_bar(f"{sid}: reading screens"),
        )
        results.append({**res.to_json(), **({"approved": approved} if approved else {})})
        if not args.json:
            kept = "deleted from this computer, as the study asks" if res.deleted_locally else "kept here"
            print(f"{sid}: {res.path} ({res.bytes} bytes, {res.steps} steps, {res.frames} frames; {kept})")
    if args.json:
        print_json(results)
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    from agent.export.review import reviewable_sessions
    from agent.paths import dirs
    from agent.study import installed_study
    from agent.ui.review import run_review

    d = dirs()
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
        print_json(summary)
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
