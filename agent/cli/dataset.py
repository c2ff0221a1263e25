"""``optin dataset build | withdraw | export | stats | intake``: the study side (docs/dataset.md,
docs/upload.md).

Its modules (:mod:`agent.dataset`) and their packages (the ``study`` extra: boto3, pyarrow,
webdataset, ray, matplotlib) are imported only when one of these commands runs; the recorder
never loads them (tests/unit/test_no_network.py).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.cli.output import print_json, progress_bar
from agent.errors import UsageError
from agent.untrusted_text import visible

__all__ = ["add_dataset_commands", "parse_size"]

_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i?B|B)?\s*", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS |= {"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}


def _done(code: int) -> int:
    """End a dataset command that has done its work and printed: pyarrow's thread pools can abort
    the interpreter's teardown afterwards ("terminate called without an active exception", exit
    -6; apache/arrow#34314, seen once in CI on ``stats``), so the process ends here, its output
    flushed, without that teardown; unless Ray is still connected (its own exit hook shuts it down)."""
    ray = sys.modules.get("ray")
    if "pyarrow" not in sys.modules or (ray is not None and getattr(ray, "is_initialized", lambda: True)()):
        return code
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def parse_size(text: str) -> int:
    """``1GB`` (10^9), ``4GiB`` (2^32), ``500MB``, ``12345`` (bytes): a positive number of bytes."""
    m = _SIZE.fullmatch(text)
    size = int(float(m.group(1)) * _UNITS[(m.group(2) or "b").lower()]) if m else 0
    if size < 1:
        msg = f"{text!r} is not a size. Fix: give bytes or a number with a unit, e.g. 1GB, 500MB, 4GiB"
        raise argparse.ArgumentTypeError(msg)
    return size


def _study(module: str) -> Any:
    """``agent.dataset.<module>``, or a UsageError saying how to install the study extra it needs."""
    try:
        return importlib.import_module(f"agent.dataset.{module}")
    except ImportError as exc:
        msg = (
            f"optin dataset needs the study extra ({exc.name or exc}). Fix: pip install "
            "'optin-agent[study]' (make venv installs it)"
        )
        raise UsageError(msg) from None


def _show(args: argparse.Namespace, result: Any, text: str) -> None:
    """``--json``: the result's object; else its text."""
    if args.json:
        print_json(result.to_json())
    else:
        print(text.rstrip("\n"))


def _stage_bars(json_out: bool) -> Callable[[str, int, int], None] | None:
    """One bar per pass on a terminal's stderr: ``checking`` bundles, then ``writing`` parts."""
    if json_out and not sys.stderr.isatty():
        return None
    bars = {
        "check": progress_bar("checking bundles"),
        "write": progress_bar("writing parts   "),
        "export": progress_bar("exporting parts "),
        "rewrite": progress_bar("rewriting parts "),
    }
    if not any(bars.values()):
        return None

    def show(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is not None:
            bar(done, total)

    return show


def _local_address(address: str) -> bool:
    """Whether a Ray address names this machine (``local``, ``auto``, a loopback host)."""
    host = address.removeprefix("ray://").rsplit(":", 1)[0].strip("[]")
    return address in ("local", "auto") or host in ("localhost", "::1") or host.startswith("127.")


def cmd_dataset_build(args: argparse.Namespace) -> int:
    building = _study("build")
    options = building.BuildOptions(
        src=args.src,
        dest=args.dest,
        identity_file=Path(args.identity),
        engine=args.engine,
        workers=args.workers,
        ray_address=args.ray_address,
        shard_size=args.shard_size,
        max_bundle_size=args.max_bundle_size,
        retry_quarantined=frozenset(args.retry_quarantined or ()),
        keep_days=args.keep_days,
        study_id=args.study_id,
        break_lock=args.break_lock,
    )
    if args.engine == "ray" and args.ray_address and not _local_address(args.ray_address):
        print(
            f"optin: warning: --ray-address {visible(args.ray_address)} is not this machine: the study "
            "identity and decrypted data travel between the cluster's nodes. Use Ray's TLS "
            "(RAY_USE_TLS=1 and its certificates) on a network you do not control",
            file=sys.stderr,
        )
    report = building.build(options, progress=_stage_bars(args.json))
    _show(args, report, _study("report").render_build(report))
    for deferred in report.deferred:
        print(f"optin: deferred {visible(deferred.name)}: {deferred.message}", file=sys.stderr)
    for failure in report.purge_failures:
        print(f"optin: {failure}", file=sys.stderr)
    return _done(0 if report.ok else 1)


def _add_build(sub: Any) -> None:
    sp = sub.add_parser(
        "build",
        help="check every bundle in SRC and publish them into DEST as WebDataset shards and Parquet tables",
        description="Check every new bundle in SRC with the checks of optin inspect, and publish the good "
        "ones into DEST as a new dataset version: uniform WebDataset samples (one per step), Parquet "
        "tables and a dataset card. Bad bundles are quarantined with a reason code, never copied.",
    )
    sp.set_defaults(func=cmd_dataset_build)
    sp.add_argument(
        "src", metavar="SRC", help="a folder or s3://bucket/prefix holding .optin.tar.age bundles"
    )
    sp.add_argument("dest", metavar="DEST", help="the dataset: a folder or s3://bucket/prefix")
    sp.add_argument("--identity", required=True, metavar="FILE", help="the study's age identity file")
    sp.add_argument(
        "--engine", choices=["local", "ray"], default="local", help="who runs the tasks (default: local)"
    )
    sp.add_argument(
        "--workers", type=int, metavar="N", help="processes or Ray CPUs (default: this machine's CPUs)"
    )
    sp.add_argument(
        "--ray-address", metavar="ADDR", help="an existing Ray cluster (default: start a local one)"
    )
    sp.add_argument("--shard-size", type=parse_size, default=10**9, metavar="SIZE", help="default 1GB")
    sp.add_argument(
        "--max-bundle-size", type=parse_size, default=4 << 30, metavar="SIZE", help="default 4GiB"
    )
    sp.add_argument(
        "--retry-quarantined",
        action="append",
        metavar="REASON",
        help="check again the bundles quarantined for REASON (repeatable; all: every reason)",
    )
    sp.add_argument(
        "--keep-days", type=int, default=7, metavar="N", help="keep older versions N days (default 7)"
    )
    sp.add_argument(
        "--study-id", metavar="ID", help="the study this DEST holds (first build of mixed bundles)"
    )
    sp.add_argument(
        "--break-lock", action="store_true", help="take DEST's lock from a command known to be dead"
    )
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.epilog = (
        "Endpoint and credentials of s3:// come from boto3's configuration (AWS_ENDPOINT_URL, AWS_PROFILE, "
        "the credential chain). Exit codes: 0 every bundle ingested, skipped or quarantined; 1 a bundle "
        "deferred (could not be read: run again), or publishing failed; 2 bad usage, a held lock, "
        "SRC and DEST overlapping."
    )


def cmd_dataset_export(args: argparse.Namespace) -> int:
    run_export = _study("exports").run_export
    report = run_export(
        args.dest, args.format, args.out, version=args.version, progress=_stage_bars(args.json)
    )
    _show(args, report, report.render())
    return _done(0)


def _add_export(sub: Any) -> None:
    sp = sub.add_parser(
        "export",
        help="write a version's tasks as AgentNet trajectories or Aguvis conversations",
        description="Write every task that ended done or failed, with an instruction and steps that can be "
        "written faithfully, as AgentNet trajectories (trajectories.jsonl) or Aguvis next-action samples "
        "(aguvis.json), with their images, into OUT; the other tasks are counted by reason in "
        "OUT/optin-export.json.",
    )
    sp.set_defaults(func=cmd_dataset_export)
    sp.add_argument("dest", metavar="DEST", help="the dataset: a folder or s3://bucket/prefix")
    sp.add_argument("out", metavar="OUT", help="an absent or empty folder, or an s3:// prefix with no object")
    sp.add_argument("--format", required=True, choices=["agentnet", "aguvis"], help="the record format")
    sp.add_argument("--version", type=int, metavar="N", help="a kept version (default: the current one)")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.epilog = (
        "Exit codes: 0 done; 1 DEST unreadable or changed outside optin, or writing OUT failed (OUT then has "
        "no optin-export.json: remove it before exporting again); 2 bad usage, OUT not empty or inside "
        "DEST, no such version."
    )


def cmd_dataset_stats(args: argparse.Namespace) -> int:
    stats = _study("stats").run_stats(args.dest, args.version, args.check)
    _show(args, stats, stats.render())
    return _done(0)


def _add_stats(sub: Any) -> None:
    sp = sub.add_parser(
        "stats",
        help="a version's numbers, from its tables (never the shards)",
        description="Print the numbers of the current version (or --version N): volunteers, sessions, hours, "
        "steps by action, tasks by outcome, redactions, loss, consent versions, shards, quarantine by reason "
        "with each bundle's SHA-256 prefix and name, withdrawals, objects pending purge, bucket versioning.",
    )
    sp.set_defaults(func=cmd_dataset_stats)
    sp.add_argument("dest", metavar="DEST", help="the dataset: a folder or s3://bucket/prefix")
    sp.add_argument("--version", type=int, metavar="N", help="read versions/vN.json (while DEST keeps it)")
    sp.add_argument(
        "--check",
        action="store_true",
        help="also ask the store for every listed object's size (one request each)",
    )
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.epilog = (
        "Exit codes: 0 done; 1 a listed object is missing or of another size (--check); 2 no such DEST or "
        "version."
    )


def cmd_dataset_withdraw(args: argparse.Namespace) -> int:
    report = _study("withdraw").run_withdraw(
        args.dest,
        args.volunteer,
        dry_run=args.dry_run,
        break_lock=args.break_lock,
        progress=_stage_bars(args.json),
    )
    _show(args, report, report.render())
    return _done(0 if report.ok else 1)


def _add_withdraw(sub: Any) -> None:
    sp = sub.add_parser(
        "withdraw",
        help="remove a volunteer from DEST for good: every version, sample, row and quarantine entry",
        description="Remove every sample, table row and quarantine entry of a volunteer's pseudonym from "
        "DEST (the parts that hold them are rewritten, every older version and object version that "
        "lists them deleted), and record the withdrawal so later builds refuse the volunteer's bundles.",
    )
    sp.set_defaults(func=cmd_dataset_withdraw)
    sp.add_argument("dest", metavar="DEST", help="the dataset: a folder or s3://bucket/prefix")
    sp.add_argument("--volunteer", required=True, metavar="ID", help="the pseudonym (32 lower-case hex)")
    sp.add_argument("--dry-run", action="store_true", help="say what would be removed; write nothing")
    sp.add_argument("--break-lock", action="store_true", help="take DEST's lock from a command that is dead")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.epilog = (
        "Exit codes: 0 done (also when nothing was found); 1 a deletion failed (kept in pending_purge; the "
        "next command retries) or DEST was changed outside optin; 2 bad usage, a held lock, no dataset in "
        "DEST."
    )


def _listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6; port 0: any free port)."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        msg = f"{text!r} is not HOST:PORT. Fix: e.g. 127.0.0.1:8080, or [::1]:8080"
        raise argparse.ArgumentTypeError(msg)
    return host, int(port)


def cmd_dataset_intake(args: argparse.Namespace) -> int:
    from agent.log import setup_logging

    setup_logging("INFO")  # a service: one line per request (action, status, reason code; never a body)
    service = _study("intake_service")
    settings = service.Settings(
        study=args.study_id,
        max_bundle_size=args.max_bundle_size,
        part_size=args.part_size,
        url_ttl_s=args.url_ttl,
        rate_per_minute=args.rate,
    )
    if args.part_size < 5 << 20 or args.rate <= 0 or not 60 <= args.url_ttl <= 7 * 86400:
        msg = (
            f"--part-size {args.part_size}, --rate {args.rate:g}, --url-ttl {args.url_ttl}: a part is at "
            "least 5MiB (S3's smallest), the rate above 0, presigned URLs live 60 s to 7 days (S3's "
            "longest). "
            "Fix: e.g. --part-size 8MiB --rate 60 --url-ttl 3600"
        )
        raise UsageError(msg)
    if bool(args.tls_cert) != bool(args.tls_key):
        msg = "--tls-cert and --tls-key go together. Fix: give both, or neither (TLS in a proxy in front)"
        raise UsageError(msg)
    if not args.tls_cert and not _local_address(args.listen[0]):
        print(
            f"optin: warning: listening on {visible(args.listen[0])} without TLS: volunteers' clients "
            "accept only https:// (or http:// to 127.0.0.1). Fix: --tls-cert/--tls-key, or a TLS proxy "
            "in front",
            file=sys.stderr,
        )
    _study("intake_app").run(
        args.bucket,
        settings,
        listen=args.listen,
        dest_url=args.dest or "",
        tls_cert=args.tls_cert or "",
        tls_key=args.tls_key or "",
        ready=lambda url: print(
            f"optin: intake of study {visible(args.study_id)} listening on {url}", file=sys.stderr, flush=True
        ),
    )
    return 0


def _add_intake(sub: Any) -> None:
    sp = sub.add_parser(
        "intake",
        help="receive volunteers' uploads (optin upload) into an S3 bucket",
        description="Serve the study's intake (docs/upload.md): check each volunteer's signed request, hand "
        "out presigned multipart URLs for a write-once key, check the completed bundle's size and SHA-256, "
        "and answer stored or refused with a reason. Bundles stay encrypted; build from "
        "s3://BUCKET/PREFIX/bundles/. Runs until interrupted (SIGINT or SIGTERM).",
    )
    sp.set_defaults(func=cmd_dataset_intake)
    sp.add_argument(
        "--bucket", required=True, metavar="s3://BUCKET/PREFIX", help="where bundles and records go"
    )
    sp.add_argument(
        "--study-id", required=True, metavar="ID", help="the study's id (its study file's [study] id)"
    )
    sp.add_argument(
        "--listen",
        type=_listen,
        default=("127.0.0.1", 8080),
        metavar="HOST:PORT",
        help="default 127.0.0.1:8080",
    )
    sp.add_argument("--dest", metavar="DEST", help="the dataset whose withdrawal register the intake obeys")
    sp.add_argument(
        "--max-bundle-size", type=parse_size, default=8 << 30, metavar="SIZE", help="default 8GiB"
    )
    sp.add_argument(
        "--part-size", type=parse_size, default=8 << 20, metavar="SIZE", help="default 8MiB (at least 5MiB)"
    )
    sp.add_argument(
        "--url-ttl", type=int, default=3600, metavar="SECONDS", help="presigned URLs live this long"
    )
    sp.add_argument(
        "--rate",
        type=float,
        default=60.0,
        metavar="N",
        help="requests a minute per volunteer and per address",
    )
    sp.add_argument("--tls-cert", metavar="FILE", help="serve https with this certificate (PEM)")
    sp.add_argument("--tls-key", metavar="FILE", help="and this private key (PEM)")
    sp.epilog = (
        "Endpoint and credentials of s3:// come from boto3's configuration (AWS_ENDPOINT_URL, AWS_PROFILE). "
        "GET /healthz and GET /metrics (Prometheus text). Exit codes: 0 stopped by a signal; 2 bad usage, "
        "the bucket not there or the credentials refused."
    )


def add_dataset_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
    """``optin dataset`` and its subcommands."""

    def usage(args: argparse.Namespace) -> int:
        args.dataset_parser.print_help()
        return 2

    sp = add(
        "dataset", usage, "the study side: build a training dataset from bundles (needs the study extra)"
    )
    sp.set_defaults(dataset_parser=sp)
    sub = sp.add_subparsers(dest="dataset_command", metavar="COMMAND")
    _add_build(sub)
    _add_export(sub)
    _add_stats(sub)
    _add_withdraw(sub)
    _add_intake(sub)
