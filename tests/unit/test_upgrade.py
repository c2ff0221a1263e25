"""Upgrades keep volunteers' sessions readable: a store written by optin 0.1.0 (tests/data) is
read, verified and exported by this version; a format this version does not know is refused
with the fix, never misread."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pyrage import decrypt, x25519

from agent import cli
from agent.errors import StoreFormatError
from agent.events import Frame, KeyPress
from agent.paths import dirs
from agent.store import keys
from agent.store.reader import read_session

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "upgrade-0.1.0"
SESSION = "20261128T061014Z-32909a69"


@pytest.fixture
def old_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "old-home"
    shutil.copytree(FIXTURE / "optin-home", home)
    for path in [home, *home.rglob("*")]:  # git keeps no modes: make it private as optin made it
        path.chmod(0o700 if path.is_dir() else 0o600)
    secret = tmp_path / "passphrase.txt"
    shutil.copy(FIXTURE / "passphrase.txt", secret)
    secret.chmod(0o600)
    monkeypatch.setenv("OPTIN_HOME", str(home))
    monkeypatch.setenv("OPTIN_PASSPHRASE_FILE", str(secret))
    return home


def test_a_0_1_0_session_reads_verifies_and_exports(
    old_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = dirs()
    events = read_session(d, SESSION, keys.load_identity(d)).events
    typed = "".join(e.char or "" for e in events if isinstance(e, KeyPress))
    assert typed == "hello" and sum(isinstance(e, Frame) for e in events) >= 1
    assert cli.main(["verify", SESSION]) == 0
    capsys.readouterr()
    # A 0.1.0 receipt did not bind the recipients and the policy: nothing leaves until renewed.
    assert cli.main(["export", SESSION, "--approve", "--out", str(tmp_path / "out")]) == 2
    assert "recorded by an older optin" in capsys.readouterr().err
    assert cli.main(["consent", "show", "--json"]) == 0
    terms = json.loads(capsys.readouterr().out)["consent_sha256"]
    assert cli.main(["consent", "grant", "--accept-text-sha256", terms]) == 0
    capsys.readouterr()
    assert cli.main(["export", SESSION, "--approve", "--out", str(tmp_path / "out"), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    study_key = x25519.Identity.from_str((FIXTURE / "study-identity.txt").read_text().strip())
    assert decrypt(Path(row["path"]).read_bytes(), [study_key])  # the study still opens it
    assert row["steps"] >= 2


def test_a_newer_segment_format_is_refused_with_the_fix(old_store: Path) -> None:
    seg = old_store / "data" / "sessions" / SESSION / "000000.seg"
    blob = bytearray(seg.read_bytes())
    blob[7] += 1  # the format version byte of the magic
    seg.write_bytes(bytes(blob))
    d = dirs()
    with pytest.raises(
        StoreFormatError, match=r"format version \d+ is not supported.*Fix: use the optin version"
    ):
        read_session(d, SESSION, keys.load_identity(d))
