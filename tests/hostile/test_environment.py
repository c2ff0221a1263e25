"""P5 against a hostile environment: the agent's own files, its home and its crash dumps.

* ``OPTIN_HOME`` at a file, ``/dev/null``, ``/proc``, below a file, or on a read-only file
  system: every command ends with a clear message and exit 2 (or its ordinary answer), never
  a traceback.
* Files optin trusts, opened up to others (config dir 0777, consent and study files 0666, the
  keys dir 0755, the recipient 0666, the exclusions 0666): recording refuses with the exact
  ``chmod``.
* The recipient file with any single bit flipped: recording refuses, never encrypts to another
  key (17 of 76 flips used to redirect recordings silently).
* Crash dumps: a hardened process that aborts leaves no core file, while the same process
  unhardened does (so the test can fail), and its children inherit the limit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import resource
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent import cli, exclusions
from agent.backends import process
from agent.backends.fake import FakeBackend
from agent.control import Recorder
from agent.deny_rules import DenyRule
from agent.errors import EnvironmentProblem, KeyError_, UsageError
from agent.paths import Dirs
from agent.store import keys
from agent.store.format import generate_keypair
from agent.store.reader import list_sessions
from tests.hostile.conftest import Tally, fuzz_rounds
from tests.tools import Consented, unavailable

HOME = "P5 hostile environment"
FILES = "P5 files optin trusts"
RECIPIENT = "P5 recipient integrity"
DUMPS = "P5 no crash dumps"
SEED = 7_403

#: Commands run against each unusable home (in process: the real ``cli.main``).
COMMANDS = [
    ["status"],
    ["run"],
    ["sessions"],
    ["consent", "show"],
    ["consent", "withdraw"],
    ["keys", "init"],
    ["keys", "show"],
    ["pause"],
    ["exclude", "--app", "KeePassXC"],
    ["verify"],
    ["delete-last", "1m"],
]


def _run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level  # `optin run` sets up logging to stderr
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("kind", ["file", "dev-null", "proc", "proc-self", "below-a-file"])
def test_p5_an_optin_home_that_cannot_hold_files_is_a_clear_error(
    kind: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    hostile: Tally,
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    home = {
        "file": str(a_file),
        "dev-null": "/dev/null",
        "proc": "/proc",
        "proc-self": "/proc/self/fd",
        "below-a-file": str(a_file / "optin"),
    }[kind]
    monkeypatch.setenv("OPTIN_HOME", home)
    for argv in COMMANDS:
        hostile.tried(HOME)
        code, err = _run_cli(argv, capsys)
        assert code == 2, (argv, code, err)
        assert "OPTIN_HOME" in err and "Fix:" in err and "Traceback" not in err, (argv, err)
        hostile.held(HOME)


@contextlib.contextmanager
def _read_only(path: Path) -> Iterator[None]:
    """``path`` read-only for this process: a read-only bind mount as root (chmod does not stop
    root), else mode 0555."""
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield
        finally:
            path.chmod(0o700)
        return
    try:
        subprocess.run(["mount", "--bind", str(path), str(path)], check=True, capture_output=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        unavailable(f"a read-only bind mount is needed as root and failed: {exc}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(path)], check=False, capture_output=True)


def test_p5_withdrawing_consent_in_a_read_only_home_is_a_clear_error(
    consented: Consented, optin_home: Path, capsys: pytest.CaptureFixture[str], hostile: Tally
) -> None:
    with _read_only(optin_home):
        hostile.tried(HOME)
        code, err = _run_cli(["consent", "withdraw"], capsys)
        assert code == 2 and "Fix:" in err and "Traceback" not in err, (code, err)
        hostile.held(HOME)


@pytest.mark.parametrize("populated", [False, True])
def test_p5_a_read_only_optin_home_is_a_clear_error_for_every_write(
    populated: bool,
    optin_home: Path,
    capsys: pytest.CaptureFixture[str],
    hostile: Tally,
    request: pytest.FixtureRequest,
) -> None:
    if populated:
        request.getfixturevalue("consented")  # study, consent and keys in place, then frozen
    with _read_only(optin_home):
        for argv in COMMANDS:
            if argv == ["consent", "withdraw"] and populated:
                continue  # its own test, above
            hostile.tried(HOME)
            code, err = _run_cli(argv, capsys)
            assert "Traceback" not in err and code in (0, 1, 2, 3), (argv, code, err)
            if code == 2 and (argv[0] in ("run", "exclude") or argv[:2] == ["keys", "init"]):
                assert "Fix:" in err, (argv, err)
            hostile.held(HOME)


# -- files optin trusts, opened up to others ---------------------------------------------------------


def _opened(d: Dirs) -> list[tuple[Path, int, str]]:
    exclusions.add(d, DenyRule("mine", app_class="Vault"))
    return [
        (d.config, 0o777, "chmod 700"),
        (d.config / "consent.json", 0o666, "chmod 600"),
        (d.config / "study.toml", 0o666, "chmod 600"),
        (d.config / "study.toml", 0o620, "chmod 600"),
        (d.config / "exclusions.json", 0o646, "chmod 600"),
        (d.keys, 0o755, "chmod 700"),
        (d.data, 0o750, "chmod 700"),
        (d.keys / "recipient", 0o666, "chmod 600"),
        (d.keys / "recipient", 0o660, "chmod 600"),
    ]


def test_p5_recording_refuses_files_others_can_change_with_the_exact_chmod(
    consented: Consented, hostile: Tally
) -> None:
    d, study = consented
    for path, mode, fix in _opened(d):
        hostile.tried(FILES)
        before = stat.S_IMODE(path.stat().st_mode)
        path.chmod(mode)
        try:
            rec = Recorder(d, FakeBackend(), study)
            with pytest.raises(EnvironmentProblem) as refused:
                rec.start()
            message = str(refused.value)
            assert f"{fix} {path}" in message, (path, oct(mode), message)
            assert rec.state in ("idle", "stopped") and not list_sessions(d)  # nothing recorded
        finally:
            path.chmod(before)
        hostile.held(FILES)
    rec = Recorder(d, FakeBackend(), study)  # all closed again: it records
    rec.start()
    rec.stop()


def test_p5_a_recipient_others_can_only_read_is_fine(consented: Consented, hostile: Tally) -> None:
    d, study = consented
    hostile.tried(FILES)
    (d.keys / "recipient").chmod(0o644)  # a public key: reading it is harmless
    rec = Recorder(d, FakeBackend(), study)
    rec.start()
    rec.stop()
    hostile.held(FILES)


def test_p4_an_exclusion_optin_cannot_run_stops_recording_instead_of_being_dropped(
    consented: Consented, hostile: Tally
) -> None:
    d, study = consented
    hostile.tried(FILES)
    (d.config / "exclusions.json").write_text('{"rules": [{"label": "mine", "title": "bank(?=ing)"}]}')
    (d.config / "exclusions.json").chmod(0o600)
    with pytest.raises(UsageError, match=r"rule 1 of your exclusions .* Fix:"):
        Recorder(d, FakeBackend(), study)
    assert not list_sessions(d)
    hostile.held(FILES)


# -- the recipient: every single-bit flip is refused -----------------------------------------------


def _flip_all(path: Path, hostile: Tally, *, expect_public: bytes, load: Callable[[], bytes]) -> int:
    good = path.read_bytes()
    flips = 0
    for bit in range(len(good) * 8):
        bad = bytearray(good)
        bad[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(bytes(bad))
        hostile.tried(RECIPIENT)
        try:
            got = load()
        except (KeyError_, EnvironmentProblem):
            hostile.held(RECIPIENT)
            flips += 1
            continue
        assert got == expect_public, f"bit {bit}: a flipped recipient was used as another key"
        hostile.held(RECIPIENT)
    path.write_bytes(good)
    return flips


def test_p5_every_single_bit_flip_of_the_recipient_is_refused(consented: Consented, hostile: Tally) -> None:
    d, study = consented
    public = keys.load_recipient(d)
    path = d.keys / "recipient"
    assert path.read_text().count("\n") == 2  # the recipient carries its key-id check
    refused = _flip_all(path, hostile, expect_public=public, load=lambda: keys.load_recipient(d))
    assert refused == len(path.read_bytes()) * 8  # every one of them
    # the identity kept elsewhere: the check line alone still finds every flip
    identity = d.keys / "identity"
    kept = identity.read_bytes()
    identity.unlink()
    try:
        refused = _flip_all(path, hostile, expect_public=public, load=lambda: keys.load_recipient(d))
        assert refused == len(path.read_bytes()) * 8
    finally:
        identity.write_bytes(kept)
        identity.chmod(0o600)
    # and recording refuses, with the fix, before a session exists
    good = path.read_bytes()
    bad = bytearray(good)
    bad[20] ^= 0x01
    path.write_bytes(bytes(bad))
    with pytest.raises(KeyError_, match=r"Fix: remove .* and run `optin keys init`"):
        Recorder(d, FakeBackend(), study).start()
    assert not list_sessions(d)
    path.write_bytes(good)


def test_p5_an_old_recipient_without_its_check_is_checked_against_the_identity_and_upgraded(
    consented: Consented, hostile: Tally
) -> None:
    d, _study = consented
    public = keys.load_recipient(d)
    path = d.keys / "recipient"
    path.write_text(keys.encode_recipient(public) + "\n")  # as optin 0.1 wrote it
    # the identity's public key catches every flip that changes the key (a flip of the final line
    # feed into other white space still reads as the same key: harmless)
    refused = _flip_all(path, hostile, expect_public=public, load=lambda: keys.load_recipient(d))
    assert refused >= len(path.read_bytes()) * 8 - 8
    assert keys.ensure_keys(d) == public  # `optin run` adds the check line
    assert path.read_text() == f"{keys.encode_recipient(public)}\nkey-id {keys.key_id(public)}\n"


def test_p5_random_recipient_damage_never_redirects_recordings(consented: Consented, hostile: Tally) -> None:
    d, _study = consented
    public = keys.load_recipient(d)
    path = d.keys / "recipient"
    good = path.read_bytes()
    rng = random.Random(SEED)  # noqa: S311 - reproducible test inputs, not secrets
    _, other = generate_keypair()
    for _ in range(fuzz_rounds(200)):
        bad = bytearray(good)
        for _ in range(rng.randint(1, 6)):
            bad[rng.randrange(len(bad))] = rng.randrange(256)
        if rng.random() < 0.2:  # or a whole other key, check line and all (a swap)
            bad = bytearray(f"{keys.encode_recipient(other)}\nkey-id {keys.key_id(other)}\n".encode())
        path.write_bytes(bytes(bad))
        hostile.tried(RECIPIENT)
        try:
            got = keys.load_recipient(d)
        except (KeyError_, EnvironmentProblem):
            hostile.held(RECIPIENT)
            continue
        assert got == public
        hostile.held(RECIPIENT)
    path.write_bytes(good)


# -- crash dumps -------------------------------------------------------------------------------------

_CRASH = """
import os, resource, subprocess, sys
resource.setrlimit(resource.RLIMIT_CORE, (resource.getrlimit(resource.RLIMIT_CORE)[1],) * 2)
canary = "WINDOW-TITLE-" + "CANARY-7731" * 3
if sys.argv[1] == "harden":
    from agent.hardening import harden_process
    harden_process()
    child = subprocess.run(
        [sys.executable, "-c", "import resource; print(resource.getrlimit(resource.RLIMIT_CORE)[0])"],
        capture_output=True, text=True, check=True,
    )
    print("child", child.stdout.strip(), flush=True)
os.abort()
"""


def _core_files(where: Path) -> list[Path]:
    return [p for p in where.iterdir() if p.name.startswith("core")]


def test_p5_a_hardened_optin_process_leaves_no_core_dump(tmp_path: Path, hostile: Tally) -> None:
    pattern = Path("/proc/sys/kernel/core_pattern")
    plain_pattern = pattern.exists() and not pattern.read_text().startswith("|")
    hard = resource.getrlimit(resource.RLIMIT_CORE)[1]
    if hard != resource.RLIM_INFINITY and hard < 256 * 1024 * 1024:
        unavailable(f"the hard core-file limit is {hard} bytes: the control crash could not dump")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    hostile.tried(DUMPS)
    control_dir = tmp_path / "control"
    control_dir.mkdir()
    control = subprocess.run([sys.executable, "-c", _CRASH, "plain"], cwd=control_dir, env=env, check=False)
    assert control.returncode != 0
    if plain_pattern and pattern.read_text().strip().startswith("core"):
        cores = _core_files(control_dir)
        assert cores, "the unhardened control left no core: this test could not tell"
        assert b"CANARY-7731" in cores[0].read_bytes()  # what the issue found in a real dump
        for core in cores:
            core.unlink()
    hardened_dir = tmp_path / "hardened"
    hardened_dir.mkdir()
    hardened = subprocess.run(
        [sys.executable, "-c", _CRASH, "harden"],
        cwd=hardened_dir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert hardened.returncode != 0
    assert "child 0" in hardened.stdout  # children inherit the limit (the dialogs)
    assert _core_files(hardened_dir) == []
    hostile.held(DUMPS)


def test_p5_hardening_is_what_it_says_in_this_process_kind(tmp_path: Path) -> None:
    code = (
        "import resource; from agent.hardening import harden_process; from agent.backends import process; "
        "h = harden_process(); "
        "print(h.core_limit, resource.getrlimit(resource.RLIMIT_CORE), process.dumpable())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    if sys.platform.startswith("linux"):
        limit, dumpable = out.split(" (")[0], out.split()[-1]
        assert limit == "0" and out.split()[1] == "(0," and dumpable == "False", out
        assert process.dumpable() is True or process.dumpable() is False  # this process: untouched
