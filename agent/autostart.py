"""Start optin when the volunteer logs in: the entries, written and removed by ``optin autostart``.

One entry per platform way of starting a program at login, each rendered by a pure function
(tests compare them with the examples in packaging/):

* Linux, ``xdg`` (the default): ``$XDG_CONFIG_HOME/autostart/optin.desktop``, which every XDG
  desktop (GNOME, KDE, Xfce, LXQt, Cinnamon, MATE…) starts in the graphical session at login;
* Linux, ``systemd``: the user unit ``$XDG_CONFIG_HOME/systemd/user/optin.service``, part of
  ``graphical-session.target`` (enabled with ``systemctl --user``, which optin prints and does
  not run: the volunteer's service manager is theirs);
* macOS, ``launchagent``: ``~/Library/LaunchAgents/org.optin.agent.plist`` (``launchctl``);
* Windows, ``startup``: ``optin.cmd`` in the Startup folder of the Start menu.

The entry runs ``optin run`` with the Python (or the packaged app) that wrote it, and carries
``OPTIN_HOME`` when it is set, so the agent that starts at login finds the same study, keys and
sessions — and the state it was left in (a pause is kept across restarts).  Entries hold no
secret: a program path, arguments and a directory.
"""

from __future__ import annotations

import os
import plistlib
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.errors import EnvironmentProblem, UsageError
from agent.paths import optin_command

#: The ways this module knows, by platform; the first is the default.
KINDS: dict[str, tuple[str, ...]] = {
    "linux": ("xdg", "systemd"),
    "darwin": ("launchagent",),
    "win32": ("startup",),
}
#: Environment variables an entry carries over (when set where ``enable`` runs).
CARRIED = ("OPTIN_HOME",)
LAUNCHAGENT_LABEL = "org.optin.agent"
SYSTEMD_UNIT = "optin.service"
SYSTEMD_TARGET = "graphical-session.target"


@dataclass(frozen=True)
class Entry:
    """One autostart entry: its kind, where it lives, and how to switch the service manager on."""

    kind: str
    path: Path
    then: str = ""

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "path": str(self.path), "then": self.then}


def platform_key(platform: str = sys.platform) -> str:
    """``linux``, ``darwin`` or ``win32``; UsageError elsewhere."""
    for key in KINDS:
        if platform.startswith(key):
            return key
    msg = f"autostart is not known on this platform ({platform}); start optin with: optin run"
    raise UsageError(msg)


def command() -> list[str]:
    """What the entry runs: ``optin run`` with this Python, or the packaged app itself."""
    return optin_command("run")


def carried_env(env: Mapping[str, str] = os.environ) -> dict[str, str]:
    return {name: env[name] for name in CARRIED if env.get(name)}


def entry(kind: str, *, home: Path | None = None, env: Mapping[str, str] = os.environ) -> Entry:
    """Where an entry of ``kind`` lives for this user."""
    home = home or Path.home()
    config = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    if kind == "xdg":
        return Entry(kind, config / "autostart" / "optin.desktop", "it starts at your next login")
    if kind == "systemd":
        then = f"run: systemctl --user daemon-reload && systemctl --user enable {SYSTEMD_UNIT}"
        return Entry(kind, config / "systemd" / "user" / SYSTEMD_UNIT, then)
    if kind == "launchagent":
        plist = home / "Library" / "LaunchAgents" / f"{LAUNCHAGENT_LABEL}.plist"
        return Entry(kind, plist, f"it starts at your next login (now: launchctl load {plist})")
    if kind == "startup":
        appdata = Path(env.get("APPDATA") or home / "AppData" / "Roaming")
        startup = appdata / "Microsoft" / "Windows" / "Start Menu" / "Programs" / "Startup"
        return Entry(kind, startup / "optin.cmd", "it starts at your next login")
    msg = f"unknown autostart kind {kind!r}; known: {', '.join(k for ks in KINDS.values() for k in ks)}"
    raise UsageError(msg)


# --- rendering (pure) ------------------------------------------------------------------------------


def render(kind: str, argv: Sequence[str], env: Mapping[str, str]) -> str:
    """The file content of an entry that runs ``argv`` with ``env`` added."""
    if kind == "xdg":
        return render_desktop(argv, env)
    if kind == "systemd":
        return render_systemd(argv, env)
    if kind == "launchagent":
        return render_launchagent(argv, env)
    if kind == "startup":
        return render_startup(argv, env)
    msg = f"unknown autostart kind {kind!r}"
    raise UsageError(msg)


def _quote_desktop(arg: str) -> str:
    """An argument of a desktop entry's Exec key (Desktop Entry Specification, "The Exec key")."""
    if arg and not any(c in arg for c in " \t\n\"'\\><~|&;$*?#()`"):
        return arg
    escaped = "".join("\\" + c if c in '"`$\\' else c for c in arg)
    return f'"{escaped}"'.replace("\\", "\\\\")  # the string-level escape of the key's value


def render_desktop(argv: Sequence[str], env: Mapping[str, str]) -> str:
    prefix = ["env", *(f"{k}={v}" for k, v in sorted(env.items()))] if env else []
    exec_line = " ".join(_quote_desktop(a) for a in [*prefix, *argv])
    return (
        "[Desktop Entry]\n"
        "Type=Application\n"
        "Name=optin\n"
        "Comment=Record computer-use demonstrations you consented to (tray icon shows the state)\n"
        f"Exec={exec_line}\n"
        "Terminal=false\n"
        "X-GNOME-Autostart-enabled=true\n"
        "X-GNOME-Autostart-Delay=5\n"
    )


def _quote_systemd(arg: str) -> str:
    """An argument of ExecStart= (systemd.service(5), "Command lines"); ``%`` doubled."""
    arg = arg.replace("%", "%%")
    if arg and not any(c.isspace() or c in "\"'\\;$" for c in arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$") + '"'


def render_systemd(argv: Sequence[str], env: Mapping[str, str]) -> str:
    environment = "".join(f"Environment={_quote_systemd(f'{k}={v}')}\n" for k, v in sorted(env.items()))
    return (
        "[Unit]\n"
        "Description=optin: record computer-use demonstrations you consented to\n"
        f"PartOf={SYSTEMD_TARGET}\n"
        f"After={SYSTEMD_TARGET}\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        f"ExecStart={' '.join(_quote_systemd(a) for a in argv)}\n"
        f"{environment}"
        "Restart=on-failure\n"
        "RestartSec=10\n"
        "\n"
        "[Install]\n"
        f"WantedBy={SYSTEMD_TARGET}\n"
    )


def render_launchagent(argv: Sequence[str], env: Mapping[str, str]) -> str:
    plist: dict[str, object] = {
        "Label": LAUNCHAGENT_LABEL,
        "ProgramArguments": list(argv),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ProcessType": "Interactive",
    }
    if env:
        plist["EnvironmentVariables"] = dict(sorted(env.items()))
    return plistlib.dumps(plist, sort_keys=False).decode("utf-8")


def render_startup(argv: Sequence[str], env: Mapping[str, str]) -> str:
    """A Startup-folder batch file: ``start`` so no console window stays open."""
    program = argv[0]
    if program.lower().endswith("python.exe"):
        program = program[: -len("python.exe")] + "pythonw.exe"  # no console window
    sets = "".join(f'set "{k}={v}"\r\n' for k, v in sorted(env.items()))
    args = " ".join(f'"{a}"' if " " in a else a for a in argv[1:])
    return f'@echo off\r\n{sets}start "" "{program}" {args}\r\n'


# --- the files -------------------------------------------------------------------------------------


def enable(
    kind: str | None = None, *, home: Path | None = None, env: Mapping[str, str] = os.environ
) -> Entry:
    """Write the entry (replacing ours); returns it.

    :raises UsageError: a kind this platform does not have.
    :raises EnvironmentProblem: the file cannot be written (the message says where and why).
    """
    kinds = KINDS[platform_key()]
    chosen = kind or kinds[0]
    if chosen not in kinds:
        msg = f"autostart --via {chosen} is not available here; this platform has: {', '.join(kinds)}"
        raise UsageError(msg)
    found = entry(chosen, home=home, env=env)
    text = render(chosen, command(), carried_env(env))
    try:
        found.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = found.path.with_name(found.path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8", newline="")
        tmp.replace(found.path)
    except OSError as exc:
        msg = f"cannot write {found.path}: {exc.strerror}. Fix: check that {found.path.parent} is writable"
        raise EnvironmentProblem(msg) from exc
    return found


def installed(*, home: Path | None = None, env: Mapping[str, str] = os.environ) -> list[Entry]:
    """This platform's entries that exist."""
    return [e for k in KINDS[platform_key()] if (e := entry(k, home=home, env=env)).path.exists()]


def disable(*, home: Path | None = None, env: Mapping[str, str] = os.environ) -> list[Entry]:
    """Remove every entry of ours on this platform (and a systemd unit's enablement link)."""
    removed = installed(home=home, env=env)
    for found in removed:
        if found.kind == "systemd":
            wants = found.path.parent / f"{SYSTEMD_TARGET}.wants" / SYSTEMD_UNIT
            if wants.is_symlink():
                wants.unlink()
        found.path.unlink()
    return removed
