"""P1: nothing is captured before consent to the exact, versioned text and every term shown with it;
tries to break it."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pyrage import x25519

from agent import cli, consent
from agent.backends import select_backend
from agent.control import Recorder
from agent.deny_rules import DenyRule
from agent.errors import ConsentRequired, StudyError, UsageError
from agent.paths import dirs
from agent.study import TERMS_IN_WORDS, Study, StudyTask, install_study, installed_study, parse_study
from tests.tools import Consented


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
    receipt = consent.grant(d, study, study.terms_sha256.upper())
    assert consent.require(d, study) == receipt
    assert receipt.scopes == study.scopes
    assert (d.config / "consent.json").stat().st_mode & 0o777 == 0o600


def test_changed_text_or_version_needs_new_consent(study_file: Path) -> None:
    d = dirs()
    study = install_study(d, study_file)
    consent.grant(d, study, study.terms_sha256)
    text = study_file.read_text()
    changed = parse_study(text.replace("This is the optin demo.", "This is the optin demo, changed."))
    with pytest.raises(ConsentRequired, match="consent text has changed since you agreed to version 1"):
        consent.require(d, changed)
    bumped = parse_study(text.replace('consent_version = "1"', 'consent_version = "2"'))
    with pytest.raises(ConsentRequired):
        consent.require(d, bumped)


def test_scopes_are_a_subset_of_the_study(study_file: Path) -> None:
    d = dirs()
    study = install_study(d, study_file)
    r = consent.grant(d, study, study.terms_sha256, ["screen", "pointer"])
    assert r.scopes == ("pointer", "screen")  # canonical order
    with pytest.raises(UsageError, match="not offered"):
        consent.grant(d, study, study.terms_sha256, ["microphone"])


def test_withdraw_and_tampered_receipt_fail_closed(study_file: Path) -> None:
    d = dirs()
    study = install_study(d, study_file)
    consent.grant(d, study, study.terms_sha256)
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
def test_invalid_study_files_name_the_problem(
    study_file: Path, mutation: Callable[[str], str], message: str
) -> None:
    with pytest.raises(StudyError, match=message):
        parse_study(mutation(study_file.read_text()), source="s.toml")


# --- the receipt binds every term the dialog shows ------------------------------------------------


def _swap_recipient(study_file: Path) -> Path:
    """The same study file (id, version, text) with another recipient key: what an attacker would hand out."""
    other = str(x25519.Identity.generate().to_public())
    text = re.sub(r'recipients = \["age1[0-9a-z]+"\]', f'recipients = ["{other}"]', study_file.read_text())
    swapped = study_file.with_name("swapped.toml")
    swapped.write_text(text)
    return swapped


def test_a_changed_recipient_needs_new_consent_and_nothing_records(
    consented: Consented, study_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 14 item 3: same id, version and text, another recipient key: no longer "consent: GIVEN"."""
    d, study = consented
    swapped = _swap_recipient(study_file)
    evil = install_study(d, swapped)
    assert (evil.id, evil.consent_version, evil.text_sha256) == (
        study.id,
        study.consent_version,
        study.text_sha256,
    )
    assert evil.recipients != study.recipients
    receipt = consent.current_receipt(d)
    assert receipt is not None and receipt.covers(study) and not receipt.covers(evil)
    assert consent.state(receipt, evil) == consent.NEEDS_RENEWAL
    assert receipt.renewal_reason(evil) == "the study has changed since you agreed: who can read exports"
    with pytest.raises(
        ConsentRequired, match="needs renewal: the study has changed since you agreed: who can"
    ):
        consent.require(d, evil)
    with pytest.raises(ConsentRequired):  # the recorder asks the same gate before anything starts
        Recorder(d, select_backend("fake"), evil).start()
    assert cli.main(["consent", "show"]) == 0
    out = capsys.readouterr().out
    assert "consent: GIVEN" not in out
    assert "consent: NEEDS RENEWAL: the study has changed since you agreed: who can read exports" in out
    assert f"To agree: optin consent grant --accept-text-sha256 {evil.terms_sha256}" in out
    assert cli.main(["run"]) == 2  # no display here: the dialog cannot ask again, so nothing runs
    assert "needed first" in capsys.readouterr().err
    assert not d.sessions.exists() or not any(d.sessions.iterdir())


def _changes(study: Study) -> dict[str, Study]:
    """One study per term, each differing from ``study`` in that term alone."""
    other = str(x25519.Identity.generate().to_public())
    return {
        "id": dataclasses.replace(study, id="another-study"),
        "name": dataclasses.replace(study, name=study.name + " 2"),
        "contact": dataclasses.replace(study, contact="someone@else.example"),
        "consent_version": dataclasses.replace(study, consent_version="2"),
        "text_sha256": dataclasses.replace(study, consent_text=study.consent_text + "More.\n"),
        "scopes": dataclasses.replace(study, scopes=("pointer",)),
        "recipients": dataclasses.replace(study, recipients=(*study.recipients, other)),
        "deny": dataclasses.replace(study, deny=(DenyRule("HR", app_class="hr-*"),)),
        "retention": dataclasses.replace(study, retention_days=study.retention_days + 1),
        "capture": dataclasses.replace(study, pause_hotkey=""),
        "redaction": dataclasses.replace(study, redaction_ocr="off"),
        "tasks": dataclasses.replace(study, tasks_mode="free"),
        "upload": dataclasses.replace(study, upload_url="https://intake.example.org/"),
    }


def test_every_term_shown_is_bound(consented: Consented) -> None:
    d, study = consented
    receipt = consent.require(d, study)
    changes = _changes(study)
    assert set(changes) == set(TERMS_IN_WORDS)
    for term, changed in changes.items():
        assert not receipt.covers(changed), term
        reason = receipt.renewal_reason(changed)
        assert reason is not None
        if term not in ("id", "consent_version", "text_sha256"):
            assert reason.endswith(TERMS_IN_WORDS[term]), (term, reason)
    for more in (
        dataclasses.replace(study, retention_max_gib=0.5),
        dataclasses.replace(study, retention_after_export="delete"),
        dataclasses.replace(study, idle_pause_minutes=0),
        dataclasses.replace(study, redaction_typed_text="drop"),
        dataclasses.replace(study, redaction_window_titles="drop"),
        dataclasses.replace(study, deny=(DenyRule("HR", title="payroll"),)),
    ):
        assert not receipt.covers(more)
    # where exports go, and what happens to a delivered recording, are agreed to like the rest
    uploading = dataclasses.replace(study, upload_url="https://intake.example.org/")
    for more in (
        dataclasses.replace(uploading, upload_url="https://elsewhere.example.org/"),
        dataclasses.replace(uploading, retention_after_upload="delete"),
    ):
        assert uploading.terms_sha256 != more.terms_sha256
    # recipients written in capitals or in another order are the same keys
    same = dataclasses.replace(study, recipients=tuple(r.upper() for r in reversed(study.recipients)))
    assert receipt.covers(same)


def test_every_study_field_is_in_the_terms(study_file: Path) -> None:
    """A field added to Study must be bound (or consciously left out here): the dialog may come to show it."""
    study = parse_study(study_file.read_text())
    fields = {f.name for f in dataclasses.fields(Study)}
    terms = study.terms()
    written = {"consent_text"}  # bound by its SHA-256
    flat = set(terms) | {f"retention_{k}" for k in terms["retention"]} | set(terms["capture"])
    flat |= {f"redaction_{k}" for k in terms["redaction"]} | {"retention_after_export"}
    # tasks are bound when the study has them (a study without keeps its terms from before tasks)
    with_tasks = dataclasses.replace(
        study, tasks_mode="list", tasks=(StudyTask("a", "Do a"),), task_done_hotkey="<ctrl>+<alt>+d"
    )
    tasks = with_tasks.terms()["tasks"]
    flat |= ({"tasks"} if "list" in tasks else set()) | ({"tasks_mode"} if "mode" in tasks else set())
    flat |= {"task_done_hotkey"} if tasks.get("done_hotkey") == "<ctrl>+<alt>+d" else set()
    # the intake is bound when the study has one (a study without keeps its terms from before uploads)
    uploading = dataclasses.replace(
        study, upload_url="https://i.example.org/", retention_after_upload="delete"
    )
    upload = uploading.terms()["upload"]
    flat |= {"upload_url"} if upload["url"] == "https://i.example.org/" else set()
    flat |= {"retention_after_upload"} if upload["after_upload"] == "delete" else set()
    assert fields - written <= flat, fields - written - flat


def test_grant_takes_the_consent_hash_and_binds_the_terms(
    study_file: Path,
) -> None:
    d = dirs()
    study = install_study(d, study_file)
    # the text's own hash would bind recipients the volunteer never saw: refused, with the fix
    with pytest.raises(UsageError, match=f"consent text alone.*{study.terms_sha256}"):
        consent.grant(d, study, study.text_sha256)
    assert consent.current_receipt(d) is None
    for accepted in (study.terms_sha256, f"  {study.terms_sha256.upper()}\n"):
        receipt = consent.grant(d, study, accepted)
        assert receipt.terms_sha256 == study.terms_sha256 and receipt.terms == study.terms()
        assert consent.current_receipt(d) == receipt and consent.require(d, study) == receipt
    with pytest.raises(UsageError, match=f"consent sha256 {study.terms_sha256}"):
        consent.grant(d, study, "\x1b[2J" + "0" * 64)
    stored = json.loads((d.config / "consent.json").read_text())
    assert stored["terms_sha256"] == study.terms_sha256 and stored["terms"]["recipients"] == list(
        study.recipients
    )


def test_a_receipt_of_an_older_optin_is_read_and_needs_renewal(
    study_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = dirs()
    study = install_study(d, study_file)
    old = {  # what optin 0.1.0 wrote: no terms
        "study_id": study.id,
        "study_name": study.name,
        "consent_version": study.consent_version,
        "text_sha256": study.text_sha256,
        "scopes": ["pointer", "keyboard"],
        "granted_at": "2026-11-27T21:30:00+00:00",
        "agent_version": "0.1.0",
    }
    (d.config / "consent.json").write_text(json.dumps(old))
    receipt = consent.current_receipt(d)
    assert receipt is not None and receipt.terms_sha256 == "" and receipt.terms is None
    assert consent.state(receipt, study) == consent.NEEDS_RENEWAL
    assert "older optin" in (receipt.renewal_reason(study) or "")
    with pytest.raises(ConsentRequired, match="needs renewal: your consent was recorded by an older optin"):
        consent.require(d, study)
    assert cli.main(["consent", "show"]) == 0
    assert "consent: NEEDS RENEWAL: your consent was recorded by an older optin" in capsys.readouterr().out
    assert cli.main(["consent", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["state"] == "needs renewal" and shown["granted"] is False
    consent.grant(d, study, study.terms_sha256, ["pointer"])
    assert consent.state(consent.current_receipt(d), study) == consent.GIVEN


@pytest.mark.parametrize(
    "tamper",
    [
        lambda r: r["terms"].__setitem__("recipients", ["age1someoneelse"]),  # terms no longer hash to it
        lambda r: r.__setitem__("terms_sha256", "0" * 64),
        lambda r: r.__setitem__("terms", None),
        lambda r: r.__setitem__("terms", "not an object"),
        lambda r: r.__setitem__("scopes", ["microphone"]),
        lambda r: r.__setitem__("scopes", "pointer"),
        lambda r: r.__setitem__("text_sha256", "not a hash"),
        lambda r: r.__setitem__("study_id", 7),
        lambda r: r.pop("granted_at"),
    ],
)
def test_an_inconsistent_receipt_is_no_consent(
    study_file: Path, tamper: Callable[[dict[str, Any]], object]
) -> None:
    d = dirs()
    study = install_study(d, study_file)
    consent.grant(d, study, study.terms_sha256)
    path = d.config / "consent.json"
    obj = json.loads(path.read_text())
    tamper(obj)
    path.write_text(json.dumps(obj))
    assert consent.current_receipt(d) is None
    with pytest.raises(ConsentRequired, match="has not been given"):
        consent.require(d, study)


def test_a_receipt_that_is_no_regular_file_or_too_large_is_no_consent(
    study_file: Path, tmp_path: Path
) -> None:
    d = dirs()
    study = install_study(d, study_file)
    receipt = consent.grant(d, study, study.terms_sha256)
    path = d.config / "consent.json"
    real = tmp_path / "elsewhere.json"
    real.write_text(path.read_text())
    path.unlink()
    path.symlink_to(real)
    assert consent.current_receipt(d) is None  # a symlink planted in the config dir is not followed
    path.unlink()
    path.write_text(json.dumps(receipt.to_json()) + " " * consent.MAX_RECEIPT_BYTES)
    assert consent.current_receipt(d) is None
    path.unlink()
    path.mkdir()
    assert consent.current_receipt(d) is None
