"""Suite-wide fixtures: every test gets its own OPTIN_HOME."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def optin_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private, empty OPTIN_HOME for each test."""
    home = tmp_path / "optin-home"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("OPTIN_HOME", str(home))
    monkeypatch.delenv("OPTIN_BACKEND", raising=False)
    monkeypatch.delenv("OPTIN_PASSPHRASE_FILE", raising=False)
    return home


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
def consented(optin_home: Path, study_file: Path):
    """Study installed, consent granted to every scope, volunteer keys created."""
    from agent import consent
    from agent.paths import dirs
    from agent.store import keys
    from agent.study import install_study

    d = dirs()
    study = install_study(d, study_file)
    consent.grant(d, study, study.text_sha256)
    keys.init_keys(d)
    return d, study
