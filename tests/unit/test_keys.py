"""Volunteer keys: the optin-sec2 wrapped identity, the OS keyring, passphrase sources, upgrades, secrecy."""

from __future__ import annotations

import getpass
import hashlib
import io
import logging
import os
import re
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest
from keyring.backend import KeyringBackend
from keyring.backends import fail, null
from keyring.errors import PasswordDeleteError, PasswordSetError

from agent import cli, paths
from agent.errors import EnvironmentProblem, KeyError_
from agent.store import format as fmt
from agent.store import keyfile, keys
from agent.store.format import generate_keypair
from tests.conftest import TEST_PASSPHRASE
from tests.unit.store_helpers import doc_block as store_doc_block
from tests.unit.store_helpers import doc_vector as store_doc_vector

DOC = Path(__file__).resolve().parents[2] / "docs" / "keys.md"
OPAQUE = "wrong passphrase, or the identity file is damaged"


def doc_block(marker: str) -> str:
    return store_doc_block("keys.md", marker)


def doc_vector() -> dict[str, str]:
    return store_doc_vector("keys.md", "known-answer vector")


V = doc_vector()
KAT_FILE = doc_block("known-answer file").encode("ascii")
KAT_PASSPHRASE = V["passphrase"].strip('"').encode("utf-8")
KAT_PARAMS = keyfile.ScryptParams(10, 8, 1)


@pytest.fixture
def dirs(optin_home: Path) -> paths.Dirs:
    return paths.dirs()


@pytest.fixture
def no_tty(monkeypatch: pytest.MonkeyPatch) -> None:
    """Standard input is not a terminal (as under a service manager or CI)."""
    monkeypatch.setattr(sys, "stdin", io.StringIO())


def write_passphrase(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def use_passphrase(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str, *, new: bool = False) -> Path:
    name = "new-passphrase.txt" if new else "other-passphrase.txt"
    path = write_passphrase(tmp_path / name, text)
    monkeypatch.setenv(keys.NEW_PASSPHRASE_FILE_ENV if new else keys.PASSPHRASE_FILE_ENV, str(path))
    return path


# --- the known-answer vector ----------------------------------------------------------------------------


def test_known_answer_vector_matches_docs() -> None:
    identity = bytes.fromhex(V["identity"])
    blob = keyfile.wrap_identity(
        identity,
        KAT_PASSPHRASE,
        params=KAT_PARAMS,
        _salt=bytes.fromhex(V["salt"]),
        _nonce=bytes.fromhex(V["nonce"]),
    )
    assert blob == KAT_FILE
    assert len(blob) == 298
    assert fmt.public_from_private(identity).hex() == V["public"]
    assert keys.key_id(bytes.fromhex(V["public"])) == V["key-id"]
    assert V["scrypt"] == f"ln={KAT_PARAMS.log_n} r={KAT_PARAMS.r} p={KAT_PARAMS.p}"
    assert keyfile.unwrap_identity(KAT_FILE, KAT_PASSPHRASE) == identity


def test_known_answer_follows_the_spec_independently() -> None:
    """Re-derive the vector from docs/keys.md's formulas with the primitives directly."""
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    lines = KAT_FILE.split(b"\n")
    assert lines[0] == b"optin-sec2" and lines[-1] == b"" and len(lines) == 5
    header = b"\n".join(lines[:3]) + b"\n"
    salt = bytes.fromhex(V["salt"])
    key = Scrypt(salt=b"optin-sec2" + salt, length=32, n=2**10, r=8, p=1).derive(KAT_PASSPHRASE)
    assert key.hex() == V["wrap-key"]
    sealed = bytes.fromhex(V["sealed"])
    assert lines[3] == f"chacha20poly1305 nonce={V['nonce']} sealed={V['sealed']}".encode()
    assert ChaCha20Poly1305(key).decrypt(bytes.fromhex(V["nonce"]), sealed, header).hex() == V["identity"]


# --- scrypt parameters ----------------------------------------------------------------------------------


def test_new_identities_get_the_documented_default_cost(
    dirs: paths.Dirs, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert keyfile.ScryptParams(17, 8, 1) == keyfile.DEFAULT_SCRYPT
    assert "N = 2^17, r = 8, p = 1" in DOC.read_text(encoding="utf-8")
    monkeypatch.setattr(keyfile, "SCRYPT_PARAMS", keyfile.DEFAULT_SCRYPT)  # undo the suite's fast setting
    keys.init_keys(dirs)
    lines = (dirs.keys / "identity").read_text().splitlines()
    assert lines[0] == "optin-sec2" and lines[1].startswith("scrypt ln=17 r=8 p=1 salt=")
    assert keys.key_info(dirs)["kdf"] == "scrypt N=2^17 r=8 p=1"
    assert len(keys.load_identity(dirs)) == 32


def test_parameters_recorded_in_the_file_are_honoured(dirs: paths.Dirs) -> None:
    private, _ = generate_keypair()
    blob = keyfile.wrap_identity(private, b"pw", params=keyfile.ScryptParams(11, 4, 2))
    assert b"scrypt ln=11 r=4 p=2 " in blob
    assert keyfile.unwrap_identity(blob, b"pw") == private
    assert keyfile.parse_wrapped_identity(blob).params == keyfile.ScryptParams(11, 4, 2)


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ("ln=21 r=8 p=1", "N=2^21"),
        ("ln=30 r=1 p=1", "N=2^30"),
        ("ln=9 r=8 p=1", "N=2^9"),
        ("ln=12 r=33 p=1", "r=33"),
        ("ln=12 r=8 p=17", "p=17"),
        ("ln=20 r=16 p=1", "N*r*p"),
        ("ln=20 r=8 p=2", "N*r*p"),
    ],
)
def test_absurd_parameters_are_refused_before_any_derivation(
    dirs: paths.Dirs, monkeypatch: pytest.MonkeyPatch, params: str, needle: str
) -> None:
    keys.init_keys(dirs)
    path = dirs.keys / "identity"
    text = re.sub(r"ln=\d+ r=\d+ p=\d+", params, path.read_text())
    path.write_text(text)

    def no_scrypt(*_a: object) -> bytes:
        raise AssertionError("scrypt ran on parameters that must be refused")

    monkeypatch.setattr(keyfile, "_scrypt", no_scrypt)
    with pytest.raises(KeyError_, match="unacceptable scrypt parameters") as err:
        keys.load_identity(dirs)
    assert needle in str(err.value) and str(path) in str(err.value)
    with pytest.raises(KeyError_, match="unacceptable"):
        keyfile.wrap_identity(generate_keypair()[0], b"pw", params=keyfile.ScryptParams(21, 8, 1))


def test_the_bounds_themselves_are_allowed() -> None:
    keyfile.check_scrypt_params(keyfile.ScryptParams(20, 8, 1))  # N*r*p = 2^23, 1 GiB of memory
    keyfile.check_scrypt_params(keyfile.ScryptParams(10, 32, 16))
    with pytest.raises(KeyError_, match=r"N\*r\*p"):
        keyfile.check_scrypt_params(keyfile.ScryptParams(20, 9, 1))


# --- wrong passphrase, tampering, swapped files ---------------------------------------------------------


def _tampered(text: str) -> Iterator[tuple[str, str]]:
    lines = text.splitlines(keepends=True)

    def flip_hex(line: str, field: str) -> str:
        match = re.search(rf"{field}=([0-9a-f]+)", line)
        assert match
        value = match.group(1)
        flipped = value[:-1] + ("0" if value[-1] != "0" else "1")
        return line.replace(f"{field}={value}", f"{field}={flipped}")

    _, other_public = generate_keypair()
    yield "salt", "".join([lines[0], flip_hex(lines[1], "salt"), *lines[2:]])
    yield "params", "".join([lines[0], lines[1].replace("r=8", "r=7"), *lines[2:]])
    yield "public", "".join([*lines[:2], keys.encode_recipient(other_public) + "\n", lines[3]])
    yield "nonce", "".join([*lines[:3], flip_hex(lines[3], "nonce")])
    yield "sealed", "".join([*lines[:3], flip_hex(lines[3], "sealed")])


def test_wrong_passphrase_and_every_tampering_give_one_opaque_message(
    dirs: paths.Dirs, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    keys.init_keys(dirs)
    path = dirs.keys / "identity"
    original = path.read_text()
    (dirs.keys / "recipient").unlink()  # so only the identity file's own checks speak
    messages = set()
    for _what, text in _tampered(original):
        path.write_text(text)
        with pytest.raises(KeyError_) as err:
            keys.load_identity(dirs)
        messages.add(str(err.value))
    path.write_text(original)
    use_passphrase(monkeypatch, tmp_path, "not the passphrase")
    with pytest.raises(KeyError_) as err:
        keys.load_identity(dirs)
    assert str(err.value).startswith(OPAQUE)
    # the same words whichever check failed; only the hint on where the passphrase came from is added
    assert {m.split(" Fix:")[0] for m in messages} == {f"{OPAQUE} ({path})."}
    assert all("OPTIN_PASSPHRASE_FILE" in m for m in messages)


def test_unwrap_is_opaque_at_the_format_layer() -> None:
    identity = bytes.fromhex(V["identity"])
    for bad in (b"wrong", b"", KAT_PASSPHRASE + b" "):
        with pytest.raises(KeyError_) as err:
            keyfile.unwrap_identity(KAT_FILE, bad)
        assert str(err.value) == OPAQUE
    assert keyfile.unwrap_identity(KAT_FILE, KAT_PASSPHRASE) == identity


def test_malformed_identity_file_is_a_precise_structural_error(dirs: paths.Dirs) -> None:
    keys.init_keys(dirs)
    path = dirs.keys / "identity"
    good = path.read_text()
    for bad in (good.replace("chacha20poly1305", "aes"), good + "extra\n", good.rstrip("\n"), "garbage\n"):
        path.write_text(bad)
        with pytest.raises(KeyError_, match=r"not an (optin-sec2|optin) identity file") as err:
            keys.load_identity(dirs)
        assert OPAQUE not in str(err.value)


def test_swapped_public_key_or_identity_file_is_detected(dirs: paths.Dirs, tmp_path: Path) -> None:
    public = keys.init_keys(dirs)
    first_identity = (dirs.keys / "identity").read_bytes()
    # another pair's recipient file: the identity still opens, the pair check refuses
    _, other = generate_keypair()
    (dirs.keys / "recipient").write_text(keys.encode_recipient(other) + "\n")
    with pytest.raises(KeyError_, match="not one key pair"):
        keys.load_identity(dirs)
    # another pair's (valid) identity file under our recipient
    (dirs.keys / "recipient").write_text(keys.encode_recipient(public) + "\n")
    other_home = tmp_path / "other"
    other_dirs = paths.Dirs(config=other_home / "c", data=other_home / "d", runtime=other_home / "r")
    keys.init_keys(other_dirs)
    (dirs.keys / "identity").write_bytes((other_dirs.keys / "identity").read_bytes())
    with pytest.raises(KeyError_, match="not one key pair"):
        keys.load_identity(dirs)
    (dirs.keys / "identity").write_bytes(first_identity)
    assert fmt.public_from_private(keys.load_identity(dirs)) == public


# --- passphrase sources ---------------------------------------------------------------------------------


def test_no_passphrase_source_and_no_tty_says_the_fix(
    dirs: paths.Dirs, monkeypatch: pytest.MonkeyPatch, no_tty: None
) -> None:
    keys.init_keys(dirs)
    monkeypatch.delenv(keys.PASSPHRASE_FILE_ENV)
    with pytest.raises(KeyError_) as err:
        keys.load_identity(dirs)
    assert "set OPTIN_PASSPHRASE_FILE" in str(err.value) and "run in a terminal" in str(err.value)
    with pytest.raises(KeyError_, match="OPTIN_PASSPHRASE_FILE"):
        keys.init_keys(dirs, force=True)
    assert (dirs.keys / "recipient").exists()  # a refused --force changed nothing


def test_first_start_without_any_way_to_protect_keys_tells_to_run_keys_init(
    dirs: paths.Dirs, monkeypatch: pytest.MonkeyPatch, no_tty: None
) -> None:
    monkeypatch.delenv(keys.PASSPHRASE_FILE_ENV)
    with pytest.raises(KeyError_, match=r"run `optin keys init` in a terminal"):
        keys.ensure_keys(dirs)
    assert not dirs.keys.exists() or not any(dirs.keys.iterdir())


def test_first_start_with_a_passphrase_file_creates_a_wrapped_identity(
    dirs: paths.Dirs, no_tty: None
) -> None:
    public = keys.ensure_keys(dirs)
    assert (dirs.keys / "identity").read_text().startswith("optin-sec2\n")
    assert keys.ensure_keys(dirs) == public == keys.load_recipient(dirs)


def test_recording_never_needs_the_unlock(
    dirs: paths.Dirs, monkeypatch: pytest.MonkeyPatch, no_tty: None
) -> None:
    public = keys.init_keys(dirs)
    monkeypatch.delenv(keys.PASSPHRASE_FILE_ENV)
    assert keys.load_recipient(dirs) == public
    assert keys.ensure_keys(dirs) == public


def test_passphrase_file_is_its_first_line(
    dirs: paths.Dirs, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    keys.init_keys(dirs)
    identity = keys.load_identity(dirs)
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(TEST_PASSPHRASE.encode() + b"\r\nsecond line\n")
    crlf.chmod(0o600)
    monkeypatch.setenv(keys.PASSPHRASE_FILE_ENV, str(crlf))
    assert keys.load_identity(dirs) == identity
    no_newline = tmp_path / "bare.txt"
    no_newline.write_bytes(TEST_PASSPHRASE.encode())
    no_newline.chmod(0o600)
    monkeypatch.setenv(keys.PASSPHRASE_FILE_ENV, str(no_newline))
    assert keys.load_identity(dirs) == identity
    spaced = write_passphrase(tmp_path / "spaced.txt", TEST_PASSPHRASE + " ")
    monkeypatch.setenv(keys.PASSPHRASE_FILE_ENV, str(spaced))
    with pytest.raises(KeyError_, match=OPAQUE):  # nothing but the line ending is trimmed
        keys.load_identity(dirs)


# (an unreadable file takes the same OSError path as "directory"; as root, CI can read any file)
@pytest.mark.parametrize("case", ["missing", "directory", "empty", "not-utf8"])
def test_bad_passphrase_file_names_the_variable_never_the_content(
    dirs: paths.Dirs, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, case: str
) -> None:
    keys.init_keys(dirs)
    target = tmp_path / "pp"
    if case == "directory":
        target.mkdir()
    elif case == "empty":
        target.write_text("\nsecret-on-line-two\n")
    elif case == "not-utf8":
        target.write_bytes(b"\xff\xfesecret\n")
    monkeypatch.setenv(keys.PASSPHRASE_FILE_ENV, str(target))
    with pytest.raises(KeyError_) as err:
        keys.load_identity(dirs)
    message = str(err.value)
    assert message.startswith(f"OPTIN_PASSPHRASE_FILE={target}")
    assert "secret" not in message and "Fix" in message


def test_passphrase_file_readable_by_others_is_used_with_a_warning(
    dirs: paths.Dirs, passphrase_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keys.init_keys(dirs)
    passphrase_file.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="agent.store.keys"):
        assert len(keys.load_identity(dirs)) == 32
    assert "chmod 600" in caplog.text and TEST_PASSPHRASE not in caplog.text


# --- interactive prompts --------------------------------------------------------------------------------


class FakeTerminal:
    """Answers getpass prompts from a script and records the prompts."""

    def __init__(self, answers: list[str | None]) -> None:
        self.answers = list(answers)
        self.prompts: list[str] = []

    def __call__(self, prompt: str = "") -> str:
        self.prompts.append(prompt)
        answer = self.answers.pop(0)
        if answer is None:
            raise EOFError
        return answer


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> FakeTerminal:
    term = FakeTerminal([])
    monkeypatch.delenv(keys.PASSPHRASE_FILE_ENV)
    monkeypatch.setattr(keys, "_interactive", lambda: True)
    monkeypatch.setattr(getpass, "getpass", term)  # the module keys asks with
    return term


def test_interactive_init_asks_twice_and_unlock_retries(
    dirs: paths.Dirs, terminal: FakeTerminal, capsys: pytest.CaptureFixture[str]
) -> None:
    terminal.answers = ["typed secret", "typed secret"]
    keys.init_keys(dirs)
    assert len(terminal.prompts) == 2 and "New passphrase" in terminal.prompts[0]
    terminal.answers = ["nope", "typed secret"]
    assert len(keys.load_identity(dirs)) == 32
    assert "wrong passphrase, try again" in capsys.readouterr().err
    terminal.answers = ["a", "b", "c"]
    with pytest.raises(KeyError_, match=OPAQUE) as err:
        keys.load_identity(dirs)
    assert "as typed" in str(err.value)


@pytest.mark.parametrize(
    ("answers", "needle"),
    [(["", ""], "empty passphrase"), (["one", "two"], "differ"), ([None], "no passphrase was entered")],
)
def test_interactive_init_refuses_empty_and_mismatched(
    dirs: paths.Dirs, terminal: FakeTerminal, answers: list[str | None], needle: str
) -> None:
    terminal.answers = answers
    with pytest.raises(KeyError_, match=needle):
        keys.init_keys(dirs)
    assert not (dirs.keys / "identity").exists() and not (dirs.keys / "recipient").exists()


def test_empty_passphrase_file_is_refused_at_init(
    dirs: paths.Dirs, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_passphrase(monkeypatch, tmp_path, "")
    with pytest.raises(KeyError_, match="first line is empty"):
        keys.init_keys(dirs)
    with pytest.raises(KeyError_, match="empty passphrase"):
        keyfile.wrap_identity(generate_keypair()[0], b"")


# --- change-passphrase and the sec1 upgrade -------------------------------------------------------------


def test_change_passphrase_round_trip(
    dirs: paths.Dirs, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    keys.init_keys(dirs)
    identity = keys.load_identity(dirs)
    path = dirs.keys / "identity"
    before = path.read_text()
    use_passphrase(monkeypatch, tmp_path, "the new one", new=True)
    assert keys.change_passphrase(dirs) == path
    after = path.read_text()
    assert after != before and after.splitlines()[2] == before.splitlines()[2]  # same public key
    assert after.splitlines()[1].split("salt=")[1] != before.splitlines()[1].split("salt=")[1]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(KeyError_, match=OPAQUE):
        keys.load_identity(dirs)  # the old passphrase no longer opens it
    use_passphrase(monkeypatch, tmp_path, "the new one")
    assert keys.load_identity(dirs) == identity
    assert not [p for p in dirs.keys.iterdir() if p.name.startswith(".")]


def test_change_passphrase_without_a_new_one_changes_nothing(
    dirs: paths.Dirs, no_tty: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys.init_keys(dirs)
    before = (dirs.keys / "identity").read_bytes()
    with pytest.raises(KeyError_, match="OPTIN_NEW_PASSPHRASE_FILE"):
        keys.change_passphrase(dirs)
    assert (dirs.keys / "identity").read_bytes() == before
    monkeypatch.delenv(keys.PASSPHRASE_FILE_ENV)
    with pytest.raises(KeyError_, match="OPTIN_PASSPHRASE_FILE"):
        keys.change_passphrase(dirs)  # the old passphrase is needed first


def test_sec1_identity_is_still_read_and_change_passphrase_upgrades_it(
    dirs: paths.Dirs, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    private, public = generate_keypair()
    paths.ensure_private_dir(dirs.keys)
    paths.write_private_file(dirs.keys / "identity", f"optin-sec1:{private.hex()}\n".encode())
    paths.write_private_file(dirs.keys / "recipient", f"{keys.encode_recipient(public)}\n".encode())
    monkeypatch.delenv(keys.PASSPHRASE_FILE_ENV)
    with caplog.at_level(logging.WARNING):
        assert keys.load_identity(dirs) == private
    assert "not passphrase-protected" in caplog.text and private.hex() not in caplog.text
    assert keys.key_info(dirs)["storage"] == "file-unprotected"
    assert "change-passphrase" in keys.describe(dirs)
    use_passphrase(monkeypatch, tmp_path, "upgraded", new=True)
    keys.change_passphrase(dirs)  # no old passphrase asked: there is none
    assert (dirs.keys / "identity").read_text().startswith("optin-sec2\n")
    assert private.hex() not in (dirs.keys / "identity").read_text()
    use_passphrase(monkeypatch, tmp_path, "upgraded")
    assert keys.load_identity(dirs) == private
    assert keys.key_info(dirs)["storage"] == "file"


def test_interrupted_init_is_completed_without_the_passphrase(
    dirs: paths.Dirs, monkeypatch: pytest.MonkeyPatch, no_tty: None
) -> None:
    public = keys.init_keys(dirs)
    (dirs.keys / "recipient").unlink()
    monkeypatch.delenv(keys.PASSPHRASE_FILE_ENV)
    assert keys.ensure_keys(dirs) == public
    assert keys.load_recipient(dirs) == public


# --- the OS keyring -------------------------------------------------------------------------------------


class MemoryKeyring(KeyringBackend):
    """An in-memory keyring backend (a real one, as far as optin can tell)."""

    priority: float = 5

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # keyring has no hints
        self.entries: dict[tuple[str, str], str] = {}
        self.refuse = False

    def get_password(self, service: str, username: str) -> str | None:
        return self.entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        if self.refuse:
            raise PasswordSetError("locked: " + password)  # a careless backend echoes it
        self.entries[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if (service, username) not in self.entries:
            raise PasswordDeleteError("no such entry")
        del self.entries[(service, username)]


class WeakKeyring(MemoryKeyring):
    priority = 0.5


@pytest.fixture
def memory_keyring() -> Iterator[MemoryKeyring]:
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(fail.Keyring())  # type: ignore[no-untyped-call]  # keyring has no hints


def test_real_keyring_detection() -> None:
    assert keys.keyring_backend() is None  # the suite's fail backend
    for backend in (null.Keyring(), WeakKeyring()):  # type: ignore[no-untyped-call]  # keyring has no hints
        keyring.set_keyring(backend)
        assert keys.keyring_backend() is None
    strong = MemoryKeyring()
    keyring.set_keyring(strong)
    assert keys.keyring_backend() is strong
    keyring.set_keyring(fail.Keyring())  # type: ignore[no-untyped-call]  # keyring has no hints


def test_keyring_storage_needs_no_passphrase(
    dirs: paths.Dirs, memory_keyring: MemoryKeyring, monkeypatch: pytest.MonkeyPatch, no_tty: None
) -> None:
    monkeypatch.delenv(keys.PASSPHRASE_FILE_ENV)
    public = keys.ensure_keys(dirs)  # first start: no passphrase source needed with a keyring
    kid = keys.key_id(public)
    assert kid == hashlib.sha256(public).hexdigest()[:16]
    assert not (dirs.keys / "identity").exists()
    ref = dirs.keys / "identity.ref"
    assert ref.read_text() == (
        f"optin-keyring1\nservice optin\nuser {kid}\n{keys.encode_recipient(public)}\n"
    )
    assert stat.S_IMODE(ref.stat().st_mode) == 0o600
    stored = memory_keyring.entries[("optin", kid)]
    assert stored.startswith("optin-sec1:")
    private = keys.load_identity(dirs)
    assert stored == "optin-sec1:" + private.hex()
    info = keys.key_info(dirs)
    assert info["storage"] == "keyring" and info["key_id"] == kid and info["kdf"] is None
    assert "OS keyring" in keys.describe(dirs) and private.hex() not in keys.describe(dirs)
    with pytest.raises(KeyError_, match="OS keyring"):
        keys.change_passphrase(dirs)


def test_keyring_init_force_replaces_the_entry(dirs: paths.Dirs, memory_keyring: MemoryKeyring) -> None:
    old = keys.init_keys(dirs)
    new = keys.init_keys(dirs, force=True)
    assert list(memory_keyring.entries) == [("optin", keys.key_id(new))]
    assert old != new and keys.load_recipient(dirs) == new
    keys.init_keys(dirs, force=True, storage="file")  # moving to a file removes the ref and the entry
    assert not (dirs.keys / "identity.ref").exists() and not memory_keyring.entries
    assert (dirs.keys / "identity").read_text().startswith("optin-sec2\n")
    assert len(keys.load_identity(dirs)) == 32


def test_force_replaces_a_broken_reference(dirs: paths.Dirs, memory_keyring: MemoryKeyring) -> None:
    keys.init_keys(dirs)
    (dirs.keys / "identity.ref").write_text("damaged\n")
    new = keys.init_keys(dirs, force=True)
    assert fmt.public_from_private(keys.load_identity(dirs)) == new


def test_keyring_problems_are_clear(dirs: paths.Dirs, memory_keyring: MemoryKeyring) -> None:
    public = keys.init_keys(dirs)
    kid = keys.key_id(public)
    good = memory_keyring.entries[("optin", kid)]
    keyring.set_keyring(fail.Keyring())  # type: ignore[no-untyped-call]  # keyring has no hints
    with pytest.raises(KeyError_, match=f"OS keyring .*key id {kid}.*no OS keyring is available"):
        keys.load_identity(dirs)
    keyring.set_keyring(memory_keyring)
    del memory_keyring.entries[("optin", kid)]
    with pytest.raises(KeyError_, match=f"no optin identity for key id {kid}"):
        keys.load_identity(dirs)
    other, _ = generate_keypair()
    memory_keyring.entries[("optin", kid)] = "optin-sec1:" + other.hex()
    with pytest.raises(KeyError_, match="is not the identity of") as err:
        keys.load_identity(dirs)
    assert other.hex() not in str(err.value)
    memory_keyring.entries[("optin", kid)] = "garbage " + good
    with pytest.raises(KeyError_, match="not an optin key file") as err:
        keys.load_identity(dirs)
    assert good[11:] not in str(err.value)
    memory_keyring.entries[("optin", kid)] = good
    (dirs.keys / "identity.ref").chmod(0o644)
    with pytest.raises(KeyError_, match="chmod 600"):
        keys.load_identity(dirs)


def test_a_refusing_keyring_falls_back_to_the_file(
    dirs: paths.Dirs, memory_keyring: MemoryKeyring, caplog: pytest.LogCaptureFixture
) -> None:
    memory_keyring.refuse = True
    with pytest.raises(KeyError_, match="refused to store the identity") as err:
        keys.init_keys(dirs, storage="keyring")
    assert "locked" not in str(err.value)  # the backend's own message may echo the secret
    with caplog.at_level(logging.WARNING):
        keys.init_keys(dirs)
    assert "passphrase-protected file" in caplog.text and "locked" not in caplog.text
    assert (dirs.keys / "identity").read_text().startswith("optin-sec2\n")
    assert not (dirs.keys / "identity.ref").exists()


def test_storage_keyring_without_a_keyring_is_refused(dirs: paths.Dirs) -> None:
    with pytest.raises(KeyError_, match="--storage file"):
        keys.init_keys(dirs, storage="keyring")


# --- modes ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("storage", ["file", "keyring"])
def test_modes_under_any_umask(dirs: paths.Dirs, memory_keyring: MemoryKeyring, storage: str) -> None:
    old = os.umask(0)
    try:
        keys.init_keys(dirs, storage="keyring" if storage == "keyring" else "file")
    finally:
        os.umask(old)
    assert stat.S_IMODE(dirs.keys.stat().st_mode) == 0o700
    assert stat.S_IMODE(dirs.data.stat().st_mode) == 0o700
    for p in dirs.keys.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    names = {p.name for p in dirs.keys.iterdir()}
    assert names == {"recipient", "identity" if storage == "file" else "identity.ref"}


# --- the command line -----------------------------------------------------------------------------------


def test_cli_keys_init_show_change(
    dirs: paths.Dirs, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["keys", "init"]) == 0
    out = capsys.readouterr().out
    public = keys.load_recipient(dirs)
    assert "key pair created" in out and keys.encode_recipient(public) in out
    assert str(dirs.keys / "identity") in out and "scrypt N=2^10 r=8 p=1" in out
    assert cli.main(["keys", "init"]) == 1
    assert "--force" in capsys.readouterr().err
    assert cli.main(["keys", "show", "--json"]) == 0
    shown = capsys.readouterr().out
    assert '"storage": "file"' in shown and keys.key_id(public) in shown
    use_passphrase(monkeypatch, tmp_path, "cli new", new=True)
    assert cli.main(["keys", "change-passphrase"]) == 0
    assert "new passphrase" in capsys.readouterr().out
    identity = keys.load_identity  # the suite's passphrase no longer opens it
    with pytest.raises(KeyError_):
        identity(dirs)


def test_cli_keys_without_a_passphrase_source_exits_1_with_the_fix(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], no_tty: None
) -> None:
    monkeypatch.delenv(keys.PASSPHRASE_FILE_ENV)
    assert cli.main(["keys", "init"]) == 1
    err = capsys.readouterr().err
    assert "OPTIN_PASSPHRASE_FILE" in err and "terminal" in err


# --- no secrets in messages, logs or files --------------------------------------------------------------


@pytest.mark.usefixtures("no_tty")
def test_no_passphrase_or_key_material_in_any_message_or_log(
    dirs: paths.Dirs,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    keys.init_keys(dirs)
    private = keys.load_identity(dirs)
    sealed = (dirs.keys / "identity").read_text().split("sealed=")[1].strip()
    secrets = [TEST_PASSPHRASE, private.hex(), sealed, "NEW-CANARY-9911"]
    texts: list[str] = []

    def attempt(fn: object, *args: object) -> None:
        try:
            fn(*args)  # type: ignore[operator]
        except KeyError_ as exc:
            texts.append(str(exc))

    original = (dirs.keys / "identity").read_text()
    use_passphrase(monkeypatch, tmp_path, "NEW-CANARY-9911 wrong")
    attempt(keys.load_identity, dirs)
    attempt(keys.change_passphrase, dirs)
    for _what, text in _tampered(original):
        (dirs.keys / "identity").write_text(text)
        attempt(keys.load_identity, dirs)
    (dirs.keys / "identity").write_text(original.replace("ln=10", "ln=25"))
    attempt(keys.load_identity, dirs)
    (dirs.keys / "identity").write_text(original)
    monkeypatch.setenv(keys.PASSPHRASE_FILE_ENV, str(tmp_path / "missing"))
    attempt(keys.load_identity, dirs)
    monkeypatch.setenv(keys.PASSPHRASE_FILE_ENV, str(tmp_path / "passphrase.txt"))
    use_passphrase(monkeypatch, tmp_path, "NEW-CANARY-9911", new=True)
    keys.change_passphrase(dirs)
    texts.append(keys.describe(dirs))
    assert cli.main(["keys", "show"]) == 0
    assert len(texts) >= 9
    captured = capsys.readouterr()
    everything = "\n".join([*texts, caplog.text, captured.out, captured.err])
    for secret in secrets:
        assert secret not in everything
    assert "NEW-CANARY" not in (dirs.keys / "identity").read_text()
    assert not [p for p in dirs.keys.iterdir() if p.name.startswith(".")]  # no temp files left


# --- the recipient file: its check line, its mode, older files -----------------------------------------


def test_the_recipient_carries_the_key_id_of_its_public_key(dirs: paths.Dirs) -> None:
    public = keys.init_keys(dirs)
    text = (dirs.keys / "recipient").read_text()
    assert text == f"optin-pub1:{public.hex()}\nkey-id {hashlib.sha256(public).hexdigest()[:16]}\n"
    assert keys.load_recipient(dirs) == public


def test_a_damaged_recipient_is_refused_with_the_fix_and_rebuilt_by_init(dirs: paths.Dirs) -> None:
    public = keys.init_keys(dirs)
    path = dirs.keys / "recipient"
    good = path.read_text()
    key_line, rest = good.split("\n", 1)
    flipped = f"{int(key_line[-1], 16) ^ 1:x}"  # the last hex digit of the public key, one bit off
    path.write_text(f"{key_line[:-1]}{flipped}\n{rest}")
    with pytest.raises(KeyError_, match=r"damaged: its public key does not match its key-id line") as err:
        keys.load_recipient(dirs)
    assert "Fix: remove" in str(err.value) and "optin keys init" in str(err.value)
    path.unlink()
    assert keys.init_keys(dirs) == public  # rebuilt from the public key kept with the identity
    assert path.read_text() == good


def test_a_damaged_identity_beside_the_recipient_stops_recording(dirs: paths.Dirs) -> None:
    """Fail closed: with the identity's public key unreadable, the recipient cannot be checked."""
    keys.init_keys(dirs)
    identity = next(p for p in dirs.keys.iterdir() if p.name != "recipient")
    identity.write_bytes(identity.read_bytes()[:40])  # cut short: its public key line is gone
    with pytest.raises(KeyError_, match="cannot check that new recordings go to a key you can open") as err:
        keys.load_recipient(dirs)
    assert "Fix:" in str(err.value)


def test_a_recipient_or_keys_dir_others_can_write_is_refused_with_the_chmod(dirs: paths.Dirs) -> None:
    keys.init_keys(dirs)
    path = dirs.keys / "recipient"
    path.chmod(0o666)
    with pytest.raises(EnvironmentProblem, match=rf"Fix: chmod 600 {re.escape(str(path))}"):
        keys.load_recipient(dirs)
    path.chmod(0o644)  # readable is fine: it is a public key
    keys.load_recipient(dirs)
    dirs.keys.chmod(0o755)
    with pytest.raises(EnvironmentProblem, match=rf"chmod 700 {re.escape(str(dirs.keys))}"):
        keys.load_recipient(dirs)
    dirs.keys.chmod(0o700)


def test_an_old_recipient_alone_is_read_as_it_is(dirs: paths.Dirs, no_tty: None) -> None:
    """Without the identity on this machine there is nothing to check an optin 0.1 recipient
    against: it is read, and left as it is (a check line would only freeze what cannot be checked)."""
    _, public = generate_keypair()
    paths.ensure_private_dir(dirs.keys)
    paths.write_private_file(dirs.keys / "recipient", f"{keys.encode_recipient(public)}\n".encode())
    assert keys.ensure_keys(dirs) == public
    assert (dirs.keys / "recipient").read_text() == f"{keys.encode_recipient(public)}\n"
