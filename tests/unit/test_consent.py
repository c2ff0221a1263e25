"""P1: nothing is captured before consent to the exact, versioned text; tries to break it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent import consent
from agent.errors import ConsentRequired, StudyError, UsageError
from agent.paths import dirs
from agent.study import install_study, installed_study, parse_study


def test_no_study_installed_says_how(optin_home: Path) -> None:
    with pytest.raises(StudyError, match="optin run --study FILE"):
        installed_study(dirs())


def test_grant_needs_the_exact_hash(study_file: Path) -> None:
    d = dirs()
    study = install_study(d, study_file)
    with pytest.raises(ConsentRequired):
        consent.require(d, study)
    with pytest.raises(UsageError, match="does not match"):
        consent.grant(d, study, "0" * 64)
    with pytest.raises(ConsentRequired):
        consent.require(d, study)
    receipt = consent.grant(d, study, study.text_sha256.upper())
    assert consent.require(d, study) == receipt
    assert receipt.scopes == study.scopes
    assert (d.config / "consent.json").stat().st_mode & 0o777 == 0o600


def test_changed_text_or_version_needs_new_consent(study_file: Path) -> None:
    d = dirs()
    study = install_study(d, study_file)
    consent.grant(d, study, study.text_sha256)
    text = study_file.read_text()
    changed = parse_study(text.replace("This is the optin demo.", "This is the optin demo, changed."))
    with pytest.raises(ConsentRequired, match="different text"):
        consent.require(d, changed)
    bumped = parse_study(text.replace('consent_version = "1"', 'consent_version = "2"'))
    with pytest.raises(ConsentRequired):
        consent.require(d, bumped)


def test_scopes_are_a_subset_of_the_study(study_file: Path) -> None:
    d = dirs()
    study = install_study(d, study_file)
    r = consent.grant(d, study, study.text_sha256, ["screen", "pointer"])
    assert r.scopes == ("pointer", "screen")  # canonical order
    with pytest.raises(UsageError, match="not offered"):
        consent.grant(d, study, study.text_sha256, ["microphone"])


def test_withdraw_and_tampered_receipt_fail_closed(study_file: Path) -> None:
    d = dirs()
    study = install_study(d, study_file)
    consent.grant(d, study, study.text_sha256)
    assert consent.withdraw(d) is True
    assert consent.withdraw(d) is False
    with pytest.raises(ConsentRequired):
        consent.require(d, study)
    (d.config / "consent.json").write_text("{not json")
    assert consent.current_receipt(d) is None
    (d.config / "consent.json").write_text(json.dumps({"study_id": study.id}))
    assert consent.current_receipt(d) is None


@pytest.mark.parametrize(
    ("mutation", "message"),
    [
        (lambda t: t.replace("[study]", "[stuff]"), r"missing the \[study\] table"),
        (lambda t: t.replace('id = "optin-demo"\n', ""), "missing id"),
        (lambda t: t.replace('"screen", ', '"microphone", '), "allowed scopes"),
        (lambda t: t.replace('recipients = ["age1', 'recipients = ["ssh-rsa'), "not an age public key"),
        (lambda t: t + "\n[[[", "not valid TOML"),
        (lambda t: t.replace('consent_version = "1"', "consent_version = 1"), "non-empty string"),
    ],
)
def test_invalid_study_files_name_the_problem(study_file: Path, mutation, message: str) -> None:
    with pytest.raises(StudyError, match=message):
        parse_study(mutation(study_file.read_text()), source="s.toml")
