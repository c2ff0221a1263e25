"""Suite-wide fixtures: every test gets its own OPTIN_HOME, passphrase file and no OS keyring."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import ray_local, s3, s3_env  # noqa: F401 - the study servers, for any test that asks
from tests.tools import Consented

#: The passphrase every test's OPTIN_PASSPHRASE_FILE holds (tests of secrecy look for it).
TEST_PASSPHRASE = "CANARY-PASSPHRASE-5521 correct horse"  # noqa: S105 - a test canary
#: scrypt cost of identity files made in tests (2^10: milliseconds; the default 2^17 has its own test).
FAST_SCRYPT_LOG_N = 10


@pytest.fixture(autouse=True)
def optin_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private, empty OPTIN_HOME for each test."""
    home = tmp_path / "optin-home"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("OPTIN_HOME", str(home))
    monkeypatch.delenv("OPTIN_BACKEND", raising=False)
    return home


@pytest.fixture(autouse=True)
def logging_as_it_was() -> Iterator[None]:
    """Take off the log handlers a test added: `optin run` logs to the stderr of its moment, which
    pytest closes after the test, and a later test's log line would fail on it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture(autouse=True)
def passphrase_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """OPTIN_PASSPHRASE_FILE for every test (0600), no OS keyring, and cheap scrypt for new identities.

    The keyring is made unavailable both for subprocesses (PYTHON_KEYRING_BACKEND)
    and in this process (keyring caches its backend); keyring tests install their
    own in-memory backend.
    """
    import keyring
    from keyring.backends import fail

    from agent.store import keyfile

    path = tmp_path / "passphrase.txt"
    path.write_text(TEST_PASSPHRASE + "\n")
    path.chmod(0o600)
    monkeypatch.setenv("OPTIN_PASSPHRASE_FILE", str(path))
    monkeypatch.delenv("OPTIN_NEW_PASSPHRASE_FILE", raising=False)
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    keyring.set_keyring(fail.Keyring())  # type: ignore[no-untyped-call]  # keyring's __init__ has no hints
    monkeypatch.setattr(keyfile, "SCRYPT_PARAMS", keyfile.ScryptParams(FAST_SCRYPT_LOG_N, 8, 1))
    return path


@pytest.fixture
def study_file(tmp_path: Path) -> Path:
    """A valid study file whose recipient is a fresh throwaway age key (identity beside it)."""
    from pyrage import x25519

    from agent.study import demo_study_toml

    identity = x25519.Identity.generate()
    (tmp_path / "study-identity.txt").write_text(str(identity) + "\n")
    path = tmp_path / "study.toml"
    path.write_text(demo_study_toml(str(identity.to_public())))
    return path


@pytest.fixture
def consented(optin_home: Path, study_file: Path) -> Consented:
    """Study installed, consent granted to every scope, volunteer keys created."""
    from agent import consent
    from agent.paths import dirs
    from agent.store import keys
    from agent.study import install_study

    d = dirs()
    study = install_study(d, study_file)
    consent.grant(d, study, study.terms_sha256)
    keys.init_keys(d)
    return d, study
