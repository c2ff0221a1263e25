"""The ``optin`` argument parser: every command, its arguments, help text and exit codes.

Each command's handler lives in the module of its area (:mod:`agent.cli.recording`,
:mod:`agent.cli.tasks`, :mod:`agent.cli.consent`, :mod:`agent.cli.sessions`, :mod:`agent.cli.export`,
:mod:`agent.cli.keys`, :mod:`agent.cli.maintenance`); the parser names it as ``func``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from agent import __version__
from agent.cli.consent import cmd_consent
from agent.cli.dataset import add_dataset_commands
from agent.cli.export import cmd_export, cmd_inspect, cmd_redact_text, cmd_review, cmd_unpack
from agent.cli.keys import cmd_keys
from agent.cli.maintenance import cmd_autostart, cmd_demo, cmd_doctor, cmd_uninstall
from agent.cli.recording import cmd_exclude, cmd_pause, cmd_resume, cmd_run, cmd_status
from agent.cli.sessions import cmd_delete_last, cmd_purge, cmd_sessions, cmd_verify
from agent.cli.tasks import cmd_task
from agent.cli.upload import add_upload_command

__all__ = ["build_parser"]


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

    sp = add("task", cmd_task, "start, end or give up a task (what you set out to do), or see the study's")
    sp.add_argument("action", choices=["start", "done", "fail", "abandon", "status"])
    which = sp.add_mutually_exclusive_group()
    which.add_argument(
        "--id", metavar="ID", help="start: one of the study's tasks (`optin task status` lists them)"
    )
    which.add_argument(
        "--instruction",
        metavar="TEXT",
        help=(
            "start: what you are about to do, in your words (if the study asks); - reads them from "
            "standard input (one line), which keeps them out of your shell's history and the process list"
        ),
    )
    sp.add_argument(
        "--task",
        metavar="ID",
        help="abandon: the task you mean (its id); one that ended meanwhile is never confused with the next",
    )
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.epilog = (
        "A task starts a new session and ends done, failed or given up (abandon deletes its recording, "
        "crypto-shredded); quitting ends it as interrupted, and a study's time limit as timed out. Pausing "
        "keeps it. Your instruction is recorded like typed text (redacted at export) and never shown in "
        "status or logs; with --instruction - it is read from standard input and stays out of your shell's "
        "history. Exit codes: 0 ok, 1 failure, 2 refused (the message says why), 3 no agent runs."
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
    add_upload_command(add)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="optin",
        description="Record computer-use demonstrations with consent: encrypted, pausable, exported only "
        "to the study's key.",
        epilog="Environment: OPTIN_HOME, OPTIN_LOG_LEVEL, OPTIN_BACKEND. Exit codes: 0 ok, 1 failure, "
        "2 bad usage or environment, 3 no optin agent is running (status, pause, resume, exclude, task).",
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

    add_dataset_commands(add)

    sp = add("demo", cmd_demo, "the whole chain on a private virtual display")
    sp.add_argument("--seconds", type=float, default=8.0, metavar="N", help="length of the scripted session")
    sp.add_argument(
        "--keep",
        metavar="DIR",
        help="keep the bundle, the study file and the study identity in DIR (a new folder), e.g. for "
        "optin dataset build",
    )
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    return p
