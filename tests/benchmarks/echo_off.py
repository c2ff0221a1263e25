"""The terminal password rule on a real display: false positives on ordinary work, and its catches.

``python -m tests.benchmarks.echo_off [--fast-only | --human-only]`` (needs Xvfb, openbox, xterm,
xdotool, tesseract; a few minutes).  An xterm on a private display runs a corpus of ordinary
terminal work — commands, typos fixed with backspace and arrows, answers to prompts that echo,
a Python REPL, vim, long output that scrolls the command away, ``clear`` — and the prompts
that turn echo off (``getpass``, ``read -s``, ``openssl``, ``ssh-keygen``), each answered with a
made-up password.  The real recorder stores it; :func:`agent.redact.policy.redact_session`
runs with tesseract; the table says, per typing speed, how many fields the terminal rule
looked at, how many ordinary ones became ``PASSWORD`` (false positives, by rule: ``echo`` —
the screen never showed them — and ``prompt``) and how many of the answers did (catches),
and what the screen reading cost.

Two typists: *human* (110 ms a key, 0.5 s before Enter) and *fast* (12 ms a key, 0.05 s
before Enter: a paste-like burst, which the 4-fps screen watcher may not see before Enter).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tests.benchmarks import consented_home

if TYPE_CHECKING:
    from agent.backends.virtual_display import VirtualDisplay
    from agent.events import Event
    from agent.paths import Dirs
    from agent.study import Study

PASSWORD = "Mq4benchPw9z"  # noqa: S105 - a made-up password typed at the prompts
#: The terminal: a monospace font OCR reads well, 20 rows.
XTERM = ["xterm", "-fa", "DejaVu Sans Mono", "-fs", "12", "-geometry", "100x20+40+40"]


@dataclass(frozen=True)
class Typist:
    name: str
    delay_ms: int
    before_enter_s: float


HUMAN = Typist("human", 110, 0.5)
FAST = Typist("fast", 12, 0.05)

#: (keys, kind): kind "cmd" is an ordinary echoed field; "pw" an answer at an echo-off prompt;
#: "raw" keys sent as they are (xdotool key names, no field of their own: Escape, q...).
Step = tuple[str, str]

CORPUS: list[Step] = [
    ("ls", "cmd"),
    ("ls -la", "cmd"),
    ("pwd", "cmd"),
    ("echo hello", "cmd"),
    ("cat notes.txt", "cmd"),
    ("head -2 notes.txt", "cmd"),
    ("wc -l notes.txt", "cmd"),
    ("grep two notes.txt", "cmd"),
    ("sort -r notes.txt", "cmd"),
    ("git status", "cmd"),
    ("git log --oneline", "cmd"),
    ("python3 -c 'print(1)'", "cmd"),
    ("python3 -c 'import sys; print(sys.version_info[:2])'", "cmd"),
    ("mkdir -p a/b", "cmd"),
    ("touch a/b/c.txt", "cmd"),
    ("ls a/b", "cmd"),
    ("cp notes.txt n2.txt", "cmd"),
    ("mv n2.txt n3.txt", "cmd"),
    ("rm n3.txt", "cmd"),
    ("rm -r a", "cmd"),
    ("cd /tmp", "cmd"),
    ("cd -", "cmd"),
    ("export FOO=bar", "cmd"),
    ("echo $FOO", "cmd"),
    ("which python3", "cmd"),
    ("date +%Y-%m-%d", "cmd"),
    ("uname -s", "cmd"),
    ("df -h .", "cmd"),
    ("du -sh .", "cmd"),
    ("seq 1 5", "cmd"),
    ("printf '%s\\n' a b c", "cmd"),
    ("find . -name '*.txt'", "cmd"),
    ("true", "cmd"),
    ("echo $?", "cmd"),
    ("history | tail -3", "cmd"),
    ("x", "cmd"),  # a one-letter typo of a command: "x: command not found"
    ("seq 1 300", "cmd"),  # scrolls the command off the window
    ("ls -la /usr/bin | head -40", "cmd"),
    ("clear", "cmd"),  # wipes the command
    ("echo after clear", "cmd"),
    # answers to prompts that echo
    ("read -p 'Name: ' n", "cmd"),
    ("alice", "cmd"),
    ("read -p 'Continue? [y/N] ' a", "cmd"),
    ("y", "cmd"),
    ("python3 -c \"print(input('Your city: '))\"", "cmd"),
    ("Lisbon", "cmd"),
    # a Python REPL
    ("python3 -q", "cmd"),
    ("1 + 1", "cmd"),
    ("print('hi')", "cmd"),
    ("exit()", "cmd"),
    # vim: insert a line, save and quit
    ("vim -u NONE notes.txt", "cmd"),
    ("Go", "raw-type"),
    ("three", "raw-type"),
    ("Escape", "raw-key"),
    (":wq", "cmd"),
    ("tail -1 notes.txt", "cmd"),
    # less, quit with q
    ("less notes.txt", "cmd"),
    ("q", "raw-type"),
    # echo-off prompts
    ("python3 -c 'import getpass; getpass.getpass()'", "cmd"),
    (PASSWORD, "pw"),
    ("python3 -c \"import getpass; getpass.getpass('PIN: ')\"", "cmd"),
    ("4711", "pw"),
    ("read -s -p 'Passphrase: ' x", "cmd"),
    (PASSWORD, "pw"),
    ("read -s x", "cmd"),  # no prompt at all: the echo rule alone
    (PASSWORD, "pw"),
    ("openssl genrsa -aes256 -out k.pem 2048", "cmd"),
    (PASSWORD, "pw"),
    (PASSWORD, "pw"),
    ("openssl passwd -6", "cmd"),
    (PASSWORD, "pw"),
    (PASSWORD, "pw"),
    ("ssh-keygen -q -t ed25519 -f key -C x", "cmd"),
    (PASSWORD, "pw"),
    (PASSWORD, "pw"),
    ("echo done", "cmd"),
]


def _edits(xd: VirtualDisplay, typist: Typist) -> list[tuple[str, Callable[[], None]]]:
    """Typing with fixes: a typo removed with backspace, a word fixed with the arrows."""
    key = xd.xdotool
    delay = str(typist.delay_ms)

    def backspaced() -> None:
        key("type", "--delay", delay, "eco")
        key("key", "BackSpace")
        key("type", "--delay", delay, "ho fixed typo")

    def arrowed() -> None:
        key("type", "--delay", delay, "echo wrld")
        key("key", "Left", "Left", "Left")
        key("type", "--delay", delay, "o")

    return [("echo fixed typo", backspaced), ("echo world", arrowed)]


def _session(d: Dirs, study: Study, workdir: Path, typist: Typist) -> list[Event]:
    from agent.backends import select_backend
    from agent.backends.virtual_display import VirtualDisplay, wait_for
    from agent.control import Recorder
    from agent.store import keys
    from agent.store.reader import read_session

    vd = VirtualDisplay(width=1280, height=800)
    vd.start()
    for k in ("DISPLAY", "DBUS_SESSION_BUS_ADDRESS", "NO_AT_BRIDGE", "XDG_SESSION_TYPE"):
        os.environ[k] = vd.env[k]
    os.environ.pop("WAYLAND_DISPLAY", None)
    try:
        env = {**vd.env, "PS1": "$ ", "HOME": str(workdir), "PATH": os.environ["PATH"]}
        shell = f"cd {workdir} && exec bash --norc --noprofile"
        term = vd.spawn(
            [*XTERM, "-T", "bench", "-e", "bash", "-c", shell],
            env=env,
        )
        if not wait_for(lambda: bool(vd.search("bench")), 10):
            raise SystemExit("the xterm did not appear")
        rec = Recorder(d, select_backend("xorg"), study)
        rec.start()
        try:
            vd.xdotool("windowactivate", "--sync", vd.search("bench")[0])
            time.sleep(0.5)
            delay = str(typist.delay_ms)
            for text, kind in CORPUS:
                if kind == "raw-type":
                    vd.xdotool("type", "--delay", delay, text)
                    time.sleep(0.6)
                    continue
                if kind == "raw-key":
                    vd.xdotool("key", text)
                    time.sleep(0.6)
                    continue
                vd.xdotool("type", "--delay", delay, text)
                time.sleep(typist.before_enter_s)
                vd.xdotool("key", "Return")
                time.sleep(1.2)
            for _, edit in _edits(vd, typist):
                edit()
                time.sleep(typist.before_enter_s)
                vd.xdotool("key", "Return")
                time.sleep(1.0)
        finally:
            rec.stop()
        term.terminate()
        term.wait()
        assert rec.session_id is not None
        return list(read_session(d, rec.session_id, keys.load_identity(d)).events)
    finally:
        vd.stop()


def _measure(events: list[Event]) -> dict[str, object]:
    from agent.events import Frame
    from agent.keyboard import replay
    from agent.keyboard.editing import is_terminal
    from agent.redact import terminal
    from agent.redact.screen import TesseractOcr, read_frames

    engine = TesseractOcr.find()
    if engine is None:
        raise SystemExit("tesseract with English data is needed")
    ordered = sorted(events, key=lambda e: e.t_ns)
    frames = [e for e in ordered if isinstance(e, Frame)]
    t0 = time.perf_counter()
    reads = read_frames(ordered, engine)
    read_s = time.perf_counter() - t0
    fields = replay.reconstruct(ordered)
    screen = terminal.ScreenText(reads, frames, engine)
    t0 = time.perf_counter()
    found = terminal.password_fields(fields, ordered, screen)
    rule_s = time.perf_counter() - t0
    looked = [f for f in fields if f.ended_by in terminal.ENDINGS and is_terminal(f.app_class) and f.text]
    taken = {id(f) for f in found.fields}
    pw_values = {PASSWORD, "4711"}
    fp = [f for f in looked if id(f) in taken and f.text not in pw_values]
    caught = [f for f in looked if id(f) in taken and f.text in pw_values]
    missed = [f for f in looked if id(f) not in taken and f.text in pw_values]
    return {
        "frames": len(frames),
        "read_s": read_s,
        "rule_s": rule_s,
        "looks": screen.looks,
        "looked": len(looked),
        "ordinary": len(looked) - len(caught) - len(missed),
        "fp": [f.text for f in fp],
        "caught": len(caught),
        "missed": len(missed),
        "rules": found.rules,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--fast-only", action="store_true")
    group.add_argument("--human-only", action="store_true")
    args = parser.parse_args()
    typists = [FAST] if args.fast_only else [HUMAN] if args.human_only else [HUMAN, FAST]
    print(f"{'typist':<8} {'fields':>6} {'ordinary':>8} {'false +':>8} {'caught':>7} {'missed':>7} "
          f"{'frames':>6} {'read s':>7} {'rule s':>7} {'looks':>6}  false positives")  # fmt: skip
    for typist in typists:
        with tempfile.TemporaryDirectory(prefix="optin-bench-echo-") as tmp:
            home = Path(tmp)
            d, study = consented_home(home)
            workdir = home / "work"
            workdir.mkdir()
            (workdir / "notes.txt").write_text("one\ntwo\n")
            events = _session(d, study, workdir, typist)
            m = _measure(events)
        fp = m["fp"]
        assert isinstance(fp, list)
        print(
            f"{typist.name:<8} {m['looked']:>6} {m['ordinary']:>8} {len(fp):>8} {m['caught']:>7} "
            f"{m['missed']:>7} {m['frames']:>6} {m['read_s']:>7.1f} {m['rule_s']:>7.1f} {m['looks']:>6}  "
            f"{fp}"
        )


if __name__ == "__main__":
    main()
