"""What the consent and withdrawal dialogs show and grant, decided without a display."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pyrage import x25519

from agent import consent
from agent.errors import EnvironmentProblem, UsageError
from agent.paths import Dirs, dirs, display_path
from agent.promises import SCOPE_LABELS, by_section, promises, shorten_recipient
from agent.study import SCOPES, Study, install_study, parse_study
from agent.ui.consent_views import ConsentView, consent_view, grant_request, withdraw_view
from agent.ui.dialogs import ask_consent, confirm

RECIPIENT = str(x25519.Identity.generate().to_public())
OTHER = str(x25519.Identity.generate().to_public())


def _study(
    scopes: str = '"pointer", "keyboard", "screen", "window_titles"', version: str = "3", extra: str = ""
) -> Study:
    return parse_study(
        f'''[study]
id = "web-tasks-2026"
name = "Everyday web tasks"
contact = "Dr. A. Researcher <study@example.org>"
consent_version = "{version}"
scopes = [{scopes}]
recipients = ["{RECIPIENT}", "{OTHER}"]
consent_text = """
We record what you tick.
"""
{extra}'''
    )


def _dirs(tmp_path: Path) -> Dirs:
    root = tmp_path / "root"
    return Dirs(config=root / "config", data=root / "data", runtime=root / "run")


def _section(view: ConsentView, heading: str) -> tuple[str, ...]:
    return dict(view.sections)[heading]


def test_the_view_says_who_what_where_and_for_how_long(tmp_path: Path) -> None:
    study = _study()
    view = consent_view(study, _dirs(tmp_path))
    assert view.window_title == "optin — consent to Everyday web tasks"
    assert view.heading == "Everyday web tasks"
    assert "web-tasks-2026" in view.about and "version 3" in view.about and "study@example.org" in view.about
    assert view.notice is None  # first consent: nothing to explain
    assert view.consent_text == "We record what you tick."
    assert view.text_sha256 == study.text_sha256
    assert view.consent_sha256 == study.terms_sha256  # what grant() is given binds everything shown
    # every sentence about what optin does comes from agent.promises, for this study
    assert view.sections == by_section(promises(study, data_dir=str(tmp_path / "root" / "data")))
    assert [h for h, _ in view.sections] == [
        "What is recorded",
        "What an export holds",
        "Where it is kept",
        "What is never recorded",
    ]
    kept = _section(view, "Where it is kept")
    assert kept[0] == f"Encrypted with your key, in {tmp_path / 'root' / 'data'}."
    short = [f"{r[:8]}…{r[-4:]}" for r in (RECIPIENT, OTHER)]
    assert kept[1] == f"Exports can be read only with the study's keys: {short[0]}, {short[1]}."
    assert kept[2].startswith("Deleted once 30 days old") and "pass 2 GiB" in kept[2]
    assert [s for s, _ in view.scopes] == list(study.scopes)
    assert all(label == SCOPE_LABELS[s] for s, label in view.scopes)


def test_the_dialog_no_longer_says_exports_hold_no_typed_text_or_titles(tmp_path: Path) -> None:
    """The sentence of issue 14 item 3, untrue since redaction: no policy produces it."""
    for extra in ("", '[redaction]\ntyped_text = "drop"\nwindow_titles = "drop"\nocr = "off"\n'):
        said = " ".join(
            t for _h, texts in consent_view(_study(extra=extra), _dirs(tmp_path)).sections for t in texts
        )
        assert "Exports remove every typed character" not in said
        assert "their input is left out" in said  # the deny rules' sentence stays, for windows only
        assert "password prompts" not in said  # a terminal's prompt is not a window the deny rules see


def test_every_scope_has_a_plain_language_label() -> None:
    assert set(SCOPE_LABELS) == set(SCOPES)
    assert all(label[0].isupper() and ":" in label for label in SCOPE_LABELS.values())


def test_the_view_offers_only_the_studys_scopes(tmp_path: Path) -> None:
    view = consent_view(_study('"screen", "pointer"'), _dirs(tmp_path))
    assert [s for s, _ in view.scopes] == ["screen", "pointer"]


def test_a_new_version_a_changed_study_or_another_study_is_explained(study_file: Path) -> None:
    d = dirs()
    old = _study(version="2")
    receipt = consent.Receipt(
        study_id=old.id,
        study_name=old.name,
        consent_version="2",
        text_sha256=old.text_sha256,
        scopes=("pointer",),
        granted_at="2026-01-01T00:00:00+00:00",
        agent_version="0",
        terms_sha256=old.terms_sha256,
        terms=old.terms(),
    )
    notice = consent_view(_study(version="3"), d, receipt).notice
    assert notice == (
        "The consent text has changed since you agreed to version 2. "
        "optin records nothing until you agree again."
    )
    kept_longer = dataclasses.replace(old, retention_days=90, recipients=(OTHER,))
    notice = consent_view(kept_longer, d, receipt).notice
    assert notice == (
        "The study has changed since you agreed: who can read exports, how long recordings are kept. "
        "optin records nothing until you agree again."
    )
    other = dataclasses.replace(receipt, study_id="another", study_name="Another \u202estudy")
    notice = consent_view(_study(), d, other).notice
    assert notice == "You agreed to another study (Another \\u202estudy) before; agreeing here replaces it."
    older = dataclasses.replace(receipt, terms_sha256="", terms=None)
    notice = consent_view(old, d, older).notice
    assert notice is not None and notice.startswith("Your consent was recorded by an older optin")
    installed = install_study(d, study_file)
    same = consent.grant(d, installed, installed.terms_sha256)
    assert consent_view(installed, d, same).notice is None


def test_paths_under_home_are_shown_with_a_tilde(tmp_path: Path) -> None:
    home = tmp_path / "alice"
    assert display_path(home / ".local" / "share" / "optin", home) == "~/.local/share/optin"
    assert display_path(home, home) == "~"
    assert display_path(Path("/srv/optin"), home) == "/srv/optin"
    d = Dirs(config=home / "c", data=home / ".local/share/optin", runtime=home / "r")
    kept = _section(consent_view(_study(), d, home=home), "Where it is kept")
    assert kept[0] == "Encrypted with your key, in ~/.local/share/optin."
    assert "~/.local/share/optin" in withdraw_view(None, d, home=home).delete_label


def test_shorten_recipient() -> None:
    key = "age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq"
    assert shorten_recipient(key) == "age1qyqs…90gq"
    assert shorten_recipient("age1short") == "age1short"


def test_retention_comes_from_the_study(tmp_path: Path) -> None:
    study = _study(extra="[retention]\ndays = 1\nmax_gib = 0.5\n")
    kept = _section(consent_view(study, _dirs(tmp_path)), "Where it is kept")
    assert kept[2] == (
        "Deleted once 1 day old (when optin starts, and every minute while it records); the oldest go "
        "sooner once all recordings together pass 0.5 GiB."
    )
    assert kept[3] == "A recording you export stays here until you delete it or it is 1 day old."


def test_the_consent_says_when_exported_recordings_are_deleted(tmp_path: Path) -> None:
    study = _study(extra='[retention]\ndays = 7\nafter_export = "delete"\n')
    assert _section(consent_view(study, _dirs(tmp_path)), "Where it is kept")[-1] == (
        "A recording you export is deleted from this computer (crypto-shredded) as soon as its export "
        "file is written."
    )


def test_the_studys_deny_rules_are_named_among_what_is_never_recorded(tmp_path: Path) -> None:
    study = _study(
        extra='[[deny]]\nlabel = "Our HR system"\napp_class = "hr-*"\n\n'
        '[[deny]]\nlabel = "Payroll"\ntitle = "payroll"\n'
    )
    never = _section(consent_view(study, _dirs(tmp_path)), "What is never recorded")
    assert never[3] == (
        "Windows this study excludes (input left out, greyed out in screenshots): Our HR system; Payroll."
    )
    assert not any(
        t.startswith("Windows this study excludes")
        for t in _section(consent_view(_study(), _dirs(tmp_path)), "What is never recorded")
    )


def test_grant_request_is_exactly_the_ticked_scopes_in_the_studys_order(tmp_path: Path) -> None:
    view = consent_view(_study(), _dirs(tmp_path))
    request = grant_request(view, ["screen", "pointer"])
    assert request is not None
    assert request.scopes == ("pointer", "screen")
    assert request.consent_sha256 == view.consent_sha256 == _study().terms_sha256


def test_nothing_ticked_is_no_consent(tmp_path: Path) -> None:
    """consent.grant reads an empty scope list as "every scope": the dialog must never pass one."""
    view = consent_view(_study('"pointer", "screen"'), _dirs(tmp_path))
    assert grant_request(view, []) is None
    assert grant_request(view, ["keyboard", "microphone"]) is None  # not offered: ignored


def test_the_request_grants_what_was_ticked(study_file: Path) -> None:
    d = dirs()
    study = install_study(d, study_file)
    request = grant_request(consent_view(study, d), ["window_titles", "keyboard"])
    assert request is not None
    receipt = consent.grant(d, study, request.consent_sha256, list(request.scopes))
    assert receipt.scopes == ("keyboard", "window_titles") and receipt.covers(study)


def test_withdraw_view(study_file: Path) -> None:
    d = dirs()
    study = install_study(d, study_file)
    view = withdraw_view(None, d)
    assert view.heading == "Withdraw consent? Capture stops."
    assert "not agreed" in view.body
    view = withdraw_view(consent.grant(d, study, study.terms_sha256), d)
    assert study.name in view.body and "stops recording" in view.body
    assert view.delete_label.startswith("Also delete all my local recordings")


def _no_display_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}


def test_without_a_display_the_dialog_says_so_and_exits_2(study_file: Path) -> None:
    install_study(dirs(), study_file)
    for args in ([], ["--withdraw"]):
        out = subprocess.run(
            [sys.executable, "-m", "agent.ui.dialogs", *args],
            env=_no_display_env(),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert out.returncode == 2
        assert out.stdout == ""
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "no graphical display" in lines[0] and "optin consent" in lines[0]
    assert consent.current_receipt(dirs()) is None


def test_without_a_study_the_dialog_says_how_to_install_one() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agent.ui.dialogs"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 2 and "optin run --study FILE" in out.stderr


def test_ask_consent_raises_the_dialogs_reason(study_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = dirs()
    study = install_study(d, study_file)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(EnvironmentProblem, match="no graphical display"):
        ask_consent(d, study, timeout=30)
    with pytest.raises(UsageError, match="directories"):
        ask_consent(Dirs(Path("/x"), Path("/y"), Path("/z")), study)


def test_confirm_needs_its_question_on_stdin() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agent.ui.dialogs", "--confirm"],
        input="not json",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 2 and "reads" in out.stderr and out.stdout == ""


def test_confirm_without_a_display_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(EnvironmentProblem, match="no graphical display"):
        confirm("Opt out?", "Really?", timeout=30)


def test_many_deny_rules_are_summed_up(tmp_path: Path) -> None:
    rules = "".join(f'[[deny]]\nlabel = "App {i}"\napp_class = "app{i}"\n\n' for i in range(9))
    rules += '[[deny]]\nlabel = "' + "x" * 200 + '"\napp_class = "long"\n'
    never = _section(consent_view(_study(extra=rules), _dirs(tmp_path)), "What is never recorded")
    assert never[3].endswith(": App 0; App 1; App 2; App 3; and 6 more.")
    rules = '[[deny]]\nlabel = "' + "x" * 200 + '"\napp_class = "long"\n'
    never = _section(consent_view(_study(extra=rules), _dirs(tmp_path)), "What is never recorded")
    assert never[3].endswith(": " + "x" * 47 + "….")


def test_text_from_outside_is_shown_visibly(tmp_path: Path) -> None:
    """Study files refuse hidden characters; a receipt or an object built elsewhere is shown escaped."""
    study = dataclasses.replace(
        _study(),
        name="Tasks\u202eevil",
        contact="a\x1b[2Jb",
        consent_text="\nLine one\twith a tab\nzero\u200bwidth\n",
    )
    view = consent_view(study, _dirs(tmp_path))
    assert view.heading == "Tasks\\u202eevil" and "\u202e" not in view.window_title
    assert "a\\u001b[2Jb" in view.about
    assert view.consent_text == "Line one    with a tab\nzero\\u200bwidth"
    receipt = consent.Receipt("x", "Name\u2066hidden", "1\x07", "0" * 64, ("pointer",), "t", "0")
    body = withdraw_view(receipt, _dirs(tmp_path)).body
    assert "Name\\u2066hidden" in body and "1\\u0007" in body and "\x07" not in body


def test_lines_an_editor_wrapped_are_joined_and_deliberate_ones_kept() -> None:
    from agent.ui.consent_views import reflow

    wrapped = (
        "We are studying how people do everyday tasks on the web (booking, shopping) so\nthat agents learn."
    )
    assert reflow(wrapped) == wrapped.replace(" so\nthat", " so that")
    address = "Dr. A. Researcher\nExample University\nstudy@example.org"
    assert reflow(address) == address  # short lines end on purpose
    listed = (
        "If you agree, optin records what you tick below while its tray icon is red:\n- pointer\n  indented"
    )
    assert reflow(listed) == listed  # a list item or an indented line starts its own line
    paragraphs = "x" * 60 + "\n\nNext paragraph."
    assert reflow(paragraphs) == paragraphs
    study = _study()
    assert consent_view(study, _dirs(Path("/tmp"))).text_sha256 == study.text_sha256  # shown, not hashed
