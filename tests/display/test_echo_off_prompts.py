"""Passwords typed at echo-off prompts in a real terminal never reach a bundle (P4, P6).

On the private X display, xdotool answers the password prompts of Python's ``getpass``,
bash's ``read -s -p`` and ``openssl genrsa -aes256`` (twice: "Enter PEM pass phrase" and
"Verifying") in an xterm with a canary, between ordinary commands.  The recorder stores
every key (the control: the store holds the canary four times); the session is exported and
the bundle decrypted with the study's identity: the canary is in no byte of it, each answer is
one ``PASSWORD`` record, the manifest says the screen rule ran, and every ordinary command is
still there as typed text (an echoed command never becomes ``PASSWORD``).
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path

from pyrage import decrypt, x25519

from agent.backends import select_backend
from agent.backends.virtual_display import VirtualDisplay, wait_for
from agent.control import Recorder
from agent.events import KeyPress
from agent.export.bundle import export_session
from agent.store import keys
from agent.store.reader import read_session
from tests.tools import Consented, require_tool

CANARY = "Qv7canaryPw2k"
#: Ordinary terminal work: each one is echoed, so each must leave as typed text.
COMMANDS = [
    "ls -la",
    "echo hello",
    "git status",
    "python3 -c 'print(1)'",
    "pwd",
    "printf 'a b c' | wc -w",
    "date +%Y",
    "cd /tmp",
]
#: Commands whose prompt turns echo off: how many answers each asks for.
ASKING = [
    ("python3 -c 'import getpass; getpass.getpass()'", 1),
    ("read -s -p 'Passphrase: ' x", 1),
    ("openssl genrsa -aes256 -out k.pem 2048", 2),
]
#: The terminal: a monospace font OCR reads well, 20 rows.
XTERM = ["xterm", "-fa", "DejaVu Sans Mono", "-fs", "12", "-geometry", "100x20+40+40"]


def _compact(text: str) -> str:
    return "".join(c for c in text.casefold() if c.isalnum())


def _line(xdisplay: VirtualDisplay, text: str, settle: float = 0.8) -> None:
    """Type ``text`` as a quick typist would, pause, press Enter, let the screen settle."""
    xdisplay.xdotool("type", "--delay", "40", text)
    time.sleep(0.3)
    xdisplay.xdotool("key", "Return")
    time.sleep(settle)


def _record(xdisplay: VirtualDisplay, consented: Consented, workdir: Path) -> str:
    d, study = consented
    shell = f"cd {workdir} && exec bash --norc --noprofile"
    env = {**xdisplay.env, "PS1": "$ ", "HOME": str(workdir)}
    term = xdisplay.spawn(
        [*XTERM, "-T", "echo-off", "-e", "bash", "-c", shell],
        env=env,
    )
    try:
        assert wait_for(lambda: bool(xdisplay.search("echo-off")), 10)
        wid = xdisplay.search("echo-off")[0]
        rec = Recorder(d, select_backend("xorg"), study)
        rec.start()
        try:
            xdisplay.xdotool("windowactivate", "--sync", wid)
            time.sleep(0.3)
            ordinary = iter(COMMANDS)
            for command, answers in ASKING:
                _line(xdisplay, next(ordinary))
                _line(xdisplay, command, settle=1.2)  # the prompt is up before the answer
                for _ in range(answers):
                    _line(xdisplay, CANARY, settle=1.2)
            for command in ordinary:
                _line(xdisplay, command)
        finally:
            rec.stop()
        assert rec.state == "stopped", rec.error
    finally:
        term.terminate()
        term.wait()
    return str(rec.session_id)


def test_echo_off_passwords_never_reach_a_bundle_and_commands_stay(
    xdisplay: VirtualDisplay, consented: Consented, study_file: Path, tmp_path: Path
) -> None:
    require_tool("xterm", "tesseract", "openssl", hint="apt-get install xterm tesseract-ocr openssl")
    d, study = consented
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "notes.txt").write_text("one\ntwo\n")
    sid = _record(xdisplay, consented, workdir)

    stored = read_session(d, sid, keys.load_identity(d)).events
    typed = "".join(e.char or "" for e in stored if isinstance(e, KeyPress))
    assert typed.count(CANARY) == 4  # the control: the store holds every answer
    assert (workdir / "k.pem").read_text().startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")

    result = export_session(d, sid, tmp_path / "out", study, approve=True)
    identity = x25519.Identity.from_str((study_file.parent / "study-identity.txt").read_text().strip())
    tar_bytes = decrypt(result.path.read_bytes(), [identity])

    assert CANARY.encode() not in tar_bytes  # in no byte of the bundle...
    assert _compact(CANARY) not in _compact(tar_bytes.decode("latin-1"))  # ...nor spelled out by keys
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        members = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    records = [json.loads(line) for line in members["events.jsonl"].splitlines()]
    assert [r["entity"] for r in records if r["k"] == "redacted"] == ["PASSWORD"] * 4

    manifest = json.loads(members["manifest.json"])
    (rule,) = [r for r in manifest["redaction"]["redactors"] if r["name"] == "terminal-passwords"]
    assert rule["rule"] == "screen+prompt" and "no_screen" not in rule
    assert rule["fields"]["echo"] == 4  # none of the answers was on screen
    assert rule["fields"]["prompt"] >= 3  # OCR read (nearly) every prompt too

    steps = [json.loads(v) for k, v in sorted(members.items()) if k[:6].isdigit() and k.endswith(".json")]
    texts = [s["text"] for s in steps if s["action"] == "type"]
    assert texts.count("[PASSWORD]") == 4
    for command in COMMANDS + [c for c, _ in ASKING]:  # an echoed command never becomes PASSWORD
        assert command in texts, command
    assert len(texts) == len(COMMANDS) + len(ASKING) + 4
