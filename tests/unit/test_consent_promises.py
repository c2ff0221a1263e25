"""What the volunteer is told is true (P1, issue 14 item 3): every sentence agent/promises.py writes is
held by a test of the behaviour it states, on the real store and export path where it is about them.

``BACKED_BY`` names, for every key :func:`agent.promises.promises` can write, the tests that hold it:
tests here (on the fake backend, the encrypted store and a real export decrypted with the study's
key) and existing tests that already prove the behaviour.  A key without a test, or a test that
does not exist, fails :func:`test_every_promise_is_backed_by_tests_that_exist`.  The README and the
volunteer guide show exactly what optin writes for a study with its defaults.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import re
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pyrage import decrypt, x25519

from agent import cli, consent, promises, writer_loop
from agent.backends import select_backend
from agent.backends.fake import FakeBackend, FakeInput
from agent.control import Recorder
from agent.events import Frame, KeyPress, KeyRelease, Marker, WindowFocus, now_ns
from agent.export.bundle import export_session
from agent.keyboard.hotkey import hotkey_words
from agent.paths import Dirs, dirs, display_path
from agent.redact.local_names import LocalNames
from agent.redact.screen import TesseractOcr
from agent.store import keys
from agent.store.reader import list_sessions, load_meta, read_session
from agent.store.writer import utc_timestamp, write_meta
from agent.study import Study, demo_study_toml, install_study, parse_study
from agent.ui.consent_views import consent_view
from tests.tools import unavailable

REPO = Path(__file__).resolve().parents[2]
HERE = "tests/unit/test_consent_promises.py"
#: The make_study fixture: install a study of the given scopes (and extra TOML), consented as shown.
MakeStudy = Callable[..., tuple[Dirs, Study]]

#: For every promise key, the tests that hold what it says.
BACKED_BY: dict[str, list[str]] = {
    "recorded.scopes": [
        "tests/unit/test_recorder.py::test_only_consented_scopes_are_captured",
        "tests/display/test_consent_dialog.py::test_first_run_asks_in_the_dialog_and_records_only_what_was_agreed",
    ],
    "recorded.indicator": [
        "tests/unit/test_recorder.py::test_no_indicator_pauses_and_its_return_resumes",
        "tests/display/test_run_tray.py::test_no_tray_no_capture",
        "tests/display/test_run_tray.py::test_losing_the_tray_pauses_capture_until_it_is_back",
        "tests/display/test_run_tray.py::test_tray_pause_stops_capture_and_sigterm_seals",
    ],
    "recorded.pausing": [
        f"{HERE}::test_the_studys_pause_key_and_idle_limit_are_the_ones_the_volunteer_is_told",
        "tests/unit/test_recorder.py::test_idle_and_a_locked_screen_pause_and_presence_resumes",
        "tests/unit/test_recorder.py::test_the_pause_hotkey_pauses_and_is_not_recorded",
    ],
    **{
        f"recorded.tasks.{mode}": [
            "tests/unit/test_study_tasks.py::test_the_tasks_sentence_states_the_studys_mode_and_count",
            "tests/unit/test_study_tasks.py::test_the_dialog_and_consent_show_state_the_tasks",
            "tests/unit/test_study_tasks.py::test_a_changed_task_list_needs_new_consent",
            "tests/display/test_task_tray.py::test_a_study_task_from_the_tray_dialog_then_task_done",
            "tests/display/test_task_tray.py::test_a_free_task_given_up_from_the_tray_leaves_nothing",
            "tests/unit/test_tasks.py::test_a_given_up_task_leaves_nothing_in_the_store",
            "tests/unit/test_tasks.py::test_the_studys_task_done_hotkey_ends_the_task_as_done_and_is_not_recorded",
        ]
        for mode in ("list", "free", "both")
    },
    "export.upload": [
        "tests/unit/test_no_network.py::test_the_upload_folder_is_where_the_network_code_is",
        "tests/unit/test_no_network.py::test_nothing_optin_run_loads_reaches_the_study_side",
        "tests/unit/test_upload_protocol.py::test_url_rule",
        "tests/unit/test_upload_protocol.py::test_answers_the_client_accepts_and_refuses",
        "tests/study/test_upload_cli.py::test_an_exported_session_is_uploaded_and_deleted_once_the_study_has_it",
        "tests/study/test_upload_cli.py::test_upload_says_what_is_missing",
    ],
    "kept.after_upload.delete": [
        "tests/study/test_upload_cli.py::test_an_exported_session_is_uploaded_and_deleted_once_the_study_has_it",
        "tests/study/test_upload_cli.py::test_a_delivered_session_stays_when_the_study_keeps_it_and_a_refused_one_always_does",
    ],
    "kept.after_upload.keep": [
        "tests/study/test_upload_cli.py::test_a_delivered_session_stays_when_the_study_keeps_it_and_a_refused_one_always_does",
    ],
    "export.by_you": [
        "tests/unit/test_no_network.py::test_no_module_imports_a_network_library",
        "tests/unit/test_no_network.py::test_the_control_socket_is_unix_only_and_nothing_else_opens_internet_sockets",
        "tests/unit/test_export.py::test_export_needs_an_approval_of_the_session_as_it_is",
    ],
    "export.typed_text.redact": [
        f"{HERE}::test_typed_text_redact_keeps_the_words_and_replaces_what_is_found",
        "tests/unit/test_export.py::test_no_secret_and_no_name_of_this_computer_in_any_byte",
        "tests/unit/test_redaction_policy.py::test_no_key_timing_survives_inside_the_span",
    ],
    "export.typed_text.drop": [f"{HERE}::test_typed_text_drop_exports_no_character_and_no_pasted_text"],
    "export.terminal_passwords.command": [
        f"{HERE}::test_a_terminal_password_after_a_command_leaves_as_PASSWORD_and_stays_stored",
        "tests/unit/test_redaction_policy.py::test_password_after_sudo_in_a_terminal_is_redacted_whole",
    ],
    "export.terminal_passwords.screen": [
        "tests/display/test_echo_off_prompts.py::test_echo_off_passwords_never_reach_a_bundle_and_commands_stay",
        f"{HERE}::test_a_terminal_password_after_a_command_leaves_as_PASSWORD_and_stays_stored",  # no screen
    ],
    "export.terminal_passwords.no_titles": [
        f"{HERE}::test_without_window_titles_a_terminal_password_is_not_recognised",
    ],
    "export.window_titles.redact": [
        f"{HERE}::test_window_titles_are_redacted_or_dropped_as_the_study_says",
        "tests/unit/test_bundle_elements.py::test_a_canary_in_an_element_name_becomes_its_entity",
    ],
    "export.window_titles.drop": [
        f"{HERE}::test_window_titles_are_redacted_or_dropped_as_the_study_says",
        "tests/unit/test_bundle_elements.py::test_names_are_dropped_with_the_window_titles",
    ],
    "export.local_names": [
        "tests/unit/test_export.py::test_this_computers_real_names_are_redacted",
        "tests/unit/test_export.py::test_no_secret_and_no_name_of_this_computer_in_any_byte",
    ],
    "export.ocr.required": [
        f"{HERE}::test_ocr_required_reads_every_exported_frame",
        "tests/unit/test_export.py::test_export_refuses_without_the_ocr_the_study_requires",
        "tests/unit/test_redaction_policy.py::test_a_frame_the_engine_cannot_read_is_left_out_and_counted",
        "tests/unit/test_redaction_policy.py::test_ocr_masks_detected_text_and_typed_secrets",
        "tests/display/test_export_e2e.py::test_a_session_travels_from_the_screen_to_a_training_set",
    ],
    "export.ocr.if-available": [
        f"{HERE}::test_ocr_if_available_without_an_engine_exports_the_frames_as_stored_and_says_so",
        "tests/unit/test_redaction_policy.py::test_if_available_without_an_engine_exports_frames_as_captured_and_says_so",
    ],
    "export.ocr.off": [
        f"{HERE}::test_ocr_off_exports_the_frames_as_stored",
        "tests/unit/test_redaction_policy.py::test_ocr_off_never_calls_the_engine",
    ],
    "export.not_recognised": [
        "tests/redaction/test_metrics.py::test_detectors_meet_the_targets",
        "tests/unit/test_store_cut.py::test_cut_session_deletes_the_range_for_real",
        "tests/unit/test_review_model.py::test_marked_cuts_flag_rows_and_block_approval_until_applied",
    ],
    "kept.stored": [
        "tests/display/test_recording_e2e.py::test_no_plaintext_of_typed_text_or_titles_on_disk",
        "tests/unit/test_keys.py::test_recording_never_needs_the_unlock",
    ],
    "kept.readers": [
        "tests/unit/test_export.py::test_only_the_study_key_decrypts",
        "tests/unit/test_consent.py::test_a_changed_recipient_needs_new_consent_and_nothing_records",
    ],
    "kept.retention": [
        f"{HERE}::test_the_studys_retention_is_what_deletes",
        "tests/unit/test_store_retention.py::test_enforce_applies_age_and_budget_but_spares_kept_and_live",
    ],
    "kept.after_export.keep": [f"{HERE}::test_after_export_keeps_or_shreds_as_the_study_says"],
    "kept.after_export.delete": [
        f"{HERE}::test_after_export_keeps_or_shreds_as_the_study_says",
        "tests/unit/test_export.py::test_the_study_decides_whether_an_exported_session_stays",
    ],
    "never.before_consent": [
        "tests/unit/test_recorder.py::test_nothing_starts_without_consent",
        "tests/unit/test_recorder.py::test_withdrawing_consent_stops_a_running_recorder",
    ],
    "never.paused": ["tests/unit/test_recorder.py::test_pause_stops_the_hooks_themselves"],
    "never.default_deny": [
        "tests/unit/test_recorder.py::test_a_denied_window_keeps_its_input_out_and_is_masked_in_every_frame",
        "tests/unit/test_deny.py::test_default_rules_deny_their_examples",
        "tests/display/test_deny_rules.py::test_typing_into_a_password_manager_is_not_stored_and_it_is_masked",
    ],
    "never.study_deny": [f"{HERE}::test_a_study_deny_rule_keeps_its_window_out_of_the_store"],
    **{
        f"recorded.elements.{kind}": [
            "tests/display/test_elements_recorded.py::test_clicks_and_typing_record_their_elements",
            "tests/unit/test_recorder_elements.py::test_names_are_kept_only_with_the_window_titles_scope",
            "tests/unit/test_recorder_elements.py::test_no_lookup_in_a_denied_or_own_window",
        ]
        for kind in ("labels", "no_labels")
    },
    "never.own_ui": [
        "tests/unit/test_recorder.py::test_clicks_scrolls_and_keys_on_optins_own_ui_are_left_out",
        "tests/display/test_xorg_backend.py::test_own_ui_covers_this_process_windows_and_not_others",
    ],
    "never.secure_input": [
        "tests/unit/test_recorder.py::test_keys_typed_under_secure_input_are_never_recorded",
        "tests/unit/test_secure_input_hold.py::test_keys_into_a_password_field_are_left_out_with_a_marker_pair",
        "tests/display/test_elements_recorded.py::test_a_password_typed_right_after_the_click_is_never_recorded",
    ],
}

#: The dialog's checkbox labels (agent.promises.SCOPE_LABELS): what ticking each lets the study record.
SCOPE_BACKED_BY: dict[str, list[str]] = {
    "pointer": [
        "tests/unit/test_recorder.py::test_pointer_moves_are_capped_but_the_position_at_each_action_is_kept",
        "tests/display/test_recording_e2e.py::test_real_input_is_recorded_exactly",
    ],
    "keyboard": [
        "tests/unit/test_recorder.py::test_pipeline_stores_what_the_hooks_deliver",
        "tests/display/test_recording_e2e.py::test_real_input_is_recorded_exactly",
    ],
    "screen": [
        "tests/unit/test_screen_watch.py::test_every_monitor_is_grabbed_and_the_layout_recorded",
        "tests/unit/test_screen_watch.py::test_pre_action_frame_is_the_screen_before_the_action",
        "tests/unit/test_screen_watch.py::test_typing_burst_costs_a_frame_before_and_one_after",
        "tests/unit/test_recorder.py::test_a_denied_window_keeps_its_input_out_and_is_masked_in_every_frame",
    ],
    "window_titles": [
        "tests/display/test_xorg_backend.py::test_active_window_reads_xterm_title_class_pid_and_geometry",
        "tests/unit/test_recorder.py::test_only_consented_scopes_are_captured",
    ],
}

#: The study the docs show: every scope, optin's defaults, the example key of docs/study.md.
DOCS_RECIPIENT = "age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq"
DOCS_DATA_DIR = "~/.local/share/optin"
#: The docs that show it, between these markers.
DOCS = ("README.md", "docs/volunteer-guide.md")
BEGIN = "<!-- promises: begin"
END = "<!-- promises: end -->"

SECRET = "alice.canary@example.com"  # noqa: S105 - a canary the detectors know (an e-mail address)
LOCAL = LocalNames(("lab-pc-7",), ("adalove",), ("/home/adalove",), ("02:42:ac:11:00:02",))
EVERY_SCOPE = ("pointer", "keyboard", "screen", "window_titles")


# --- every key is backed, every test exists, the docs say what optin says -----------------------------


def _variants() -> list[Study]:
    """Studies covering every choice that changes what is said."""
    scope_sets = [EVERY_SCOPE, ("pointer",), ("keyboard",), ("keyboard", "window_titles"), ("screen",)]
    out = []
    for scopes, ocr, typed, titles, after, deny in itertools.product(
        scope_sets,
        ("required", "if-available", "off"),
        ("redact", "drop"),
        ("redact", "drop"),
        ("keep", "delete"),
        ((), ("HR",)),
    ):
        toml = _toml(
            DOCS_RECIPIENT,
            scopes,
            f'[redaction]\nocr = "{ocr}"\ntyped_text = "{typed}"\nwindow_titles = "{titles}"\n'
            f'[retention]\nafter_export = "{after}"\n'
            + "".join(f'[[deny]]\nlabel = "{label}"\napp_class = "hr-*"\n' for label in deny),
        )
        out.append(parse_study(toml))
    for after_export, after_upload in itertools.product(("keep", "delete"), ("keep", "delete")):
        upload = (
            '[upload]\nurl = "https://intake.example.org/"\n'
            f'[retention]\nafter_export = "{after_export}"\nafter_upload = "{after_upload}"\n'
        )
        out.append(parse_study(_toml(DOCS_RECIPIENT, EVERY_SCOPE, upload)))
    task = '[[task]]\nid = "a"\ninstruction = "A"\n'
    for tasks in (task, '[tasks]\nmode = "free"\n', task + '[tasks]\nmode = "both"\n'):  # list, free, both
        out.append(parse_study(_toml(DOCS_RECIPIENT, EVERY_SCOPE, tasks)))
    return out


def _toml(recipient: str, scopes: tuple[str, ...], extra: str = "") -> str:
    text = demo_study_toml(recipient)
    listed = ", ".join(f'"{s}"' for s in scopes)
    text = re.sub(r"scopes = \[[^\]]*\]", f"scopes = [{listed}]", text)
    return text + "\n" + extra


def test_every_promise_is_backed_by_tests_that_exist() -> None:
    written = {p.key for study in _variants() for p in promises.promises(study)}
    assert written == set(BACKED_BY), (written - set(BACKED_BY), set(BACKED_BY) - written)
    for key, refs in BACKED_BY.items():
        assert refs, key
        for ref in refs:
            path, _, name = ref.partition("::")
            source = (REPO / path).read_text(encoding="utf-8")
            assert re.search(rf"^def {re.escape(name)}\(", source, re.M), f"{key}: {ref} does not exist"


def test_every_scope_label_is_backed_by_tests_that_exist() -> None:
    assert set(SCOPE_BACKED_BY) == set(promises.SCOPE_LABELS)
    for scope, refs in SCOPE_BACKED_BY.items():
        for ref in refs:
            path, _, name = ref.partition("::")
            source = (REPO / path).read_text(encoding="utf-8")
            assert re.search(rf"^def {re.escape(name)}\(", source, re.M), f"{scope}: {ref} does not exist"


def test_the_docs_show_exactly_what_optin_says_for_a_study_with_its_defaults() -> None:
    study = parse_study(demo_study_toml(DOCS_RECIPIENT))
    expected = promises.markdown(promises.promises(study, data_dir=DOCS_DATA_DIR))
    for doc in DOCS:
        text = (REPO / doc).read_text(encoding="utf-8")
        match = re.search(rf"{re.escape(BEGIN)}[^\n]*-->\n\n(.*?)\n{re.escape(END)}", text, re.S)
        assert match, f"{doc} lost its promises block"
        assert match.group(1) == expected, f"{doc}: replace the promises block with:\n\n{expected}"


def test_the_dialog_and_consent_show_say_exactly_the_promises(
    study_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = dirs()
    study = install_study(d, study_file)
    said = promises.promises(study, data_dir=display_path(d.data))
    assert consent_view(study, d).sections == promises.by_section(said)
    assert cli.main(["consent", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["promises"] == [{"key": p.key, "section": p.section, "text": p.text} for p in said]
    assert shown["consent_sha256"] == study.terms_sha256 and shown["terms"] == study.terms()
    assert cli.main(["consent", "show"]) == 0
    out = capsys.readouterr().out
    for heading, texts in promises.by_section(said):
        block = "\n".join([heading, *(f"  - {t}" for t in texts)])
        assert block in out


def test_sentences_follow_the_policy() -> None:
    """Spot checks of the wording of each choice (the behaviour tests below hold what it says)."""
    keys = {tuple(p.key for p in promises.promises(s)) for s in _variants()}
    assert len(keys) > 20
    drop = parse_study(_toml(DOCS_RECIPIENT, EVERY_SCOPE, '[redaction]\ntyped_text = "drop"\nocr = "off"\n'))
    said = {p.key: p.text for p in promises.promises(drop)}
    assert "export.typed_text.redact" not in said and "export.terminal_passwords.screen" not in said
    assert said["export.ocr.off"].startswith("Screenshots as your screen showed them")
    assert "Ctrl+Alt+P" in said["recorded.pausing"] and "after 10 minutes" in said["recorded.pausing"]
    pointer = parse_study(_toml(DOCS_RECIPIENT, ("pointer",)))
    said = {p.key: p.text for p in promises.promises(pointer)}
    assert "Ctrl+Alt+P" not in said["recorded.pausing"]  # the hotkey needs the keyboard hook
    assert not any(k.startswith(("export.typed", "export.ocr", "never.secure")) for k in said)
    assert hotkey_words("<ctrl>+<shift>+<f9>") == "Ctrl+Shift+F9"
    assert hotkey_words("<cmd_l>++") == "Cmd++"
    assert hotkey_words("<alt>+<65>") == "Alt+key code 65"


# --- the behaviour, on the store and export path ---------------------------------------------------------


@pytest.fixture
def make_study(optin_home: Path, tmp_path: Path, study_file: Path) -> MakeStudy:
    """Install a study of ``scopes`` with ``extra`` TOML (the study key beside study_file), consent
    to it as shown, and create the volunteer's keys."""
    recipient = str(
        x25519.Identity.from_str((study_file.parent / "study-identity.txt").read_text().strip()).to_public()
    )
    d = dirs()
    keys.init_keys(d)

    def make(scopes: tuple[str, ...] = EVERY_SCOPE, extra: str = "") -> tuple[Dirs, Study]:
        path = tmp_path / "this-study.toml"
        path.write_text(_toml(recipient, scopes, extra))
        study = install_study(d, path)
        consent.grant(d, study, study.terms_sha256)
        return d, study

    return make


def _record(d: Dirs, study: Study, act: Callable[[FakeBackend, FakeInput, Recorder], None]) -> str:
    backend = select_backend("fake")
    assert isinstance(backend, FakeBackend)
    rec = Recorder(d, backend, study)
    rec.start()
    fake = backend.last_input
    assert fake is not None
    act(backend, fake, rec)
    rec.stop()
    return str(rec.session_id)


def _type(fake: FakeInput, text: str, *, enter: bool = False) -> None:
    for ch in text:
        fake.emit(KeyPress(now_ns(), ch, None, ord(ch), ()))
        fake.emit(KeyRelease(now_ns(), ch, None, ord(ch), ()))
    if enter:
        fake.emit(KeyPress(now_ns(), None, "enter", 65293, ()))
        fake.emit(KeyRelease(now_ns(), None, "enter", 65293, ()))


def _wait(pred: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


def _export(
    d: Dirs, study: Study, sid: str, out: Path, study_file: Path
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Export ``sid`` for real and open the bundle with the study's key: (manifest, members)."""
    res = export_session(d, sid, out, study, approve=True, local=LOCAL)
    identity = x25519.Identity.from_str((study_file.parent / "study-identity.txt").read_text().strip())
    members: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(decrypt(res.path.read_bytes(), [identity]))) as tar:
        for info in tar:
            blob = tar.extractfile(info)
            assert blob is not None
            members[info.name.partition("/")[2]] = blob.read()
    return json.loads(members["manifest.json"]), members


def _events(members: dict[str, bytes]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in members["events.jsonl"].splitlines()]


def _said(study: Study) -> dict[str, str]:
    return {p.key: p.text for p in promises.promises(study)}


def test_typed_text_redact_keeps_the_words_and_replaces_what_is_found(
    make_study: MakeStudy, tmp_path: Path, study_file: Path
) -> None:
    d, study = make_study(("keyboard", "window_titles"), '[redaction]\nocr = "off"\n')
    assert "export.typed_text.redact" in _said(study)

    def act(backend: FakeBackend, fake: FakeInput, _rec: Recorder) -> None:
        backend.focus_window("notes.txt - gedit", "Gedit")
        _type(fake, f"mail {SECRET} today", enter=True)

    sid = _record(d, study, act)
    manifest, members = _export(d, study, sid, tmp_path / "out", study_file)
    events = _events(members)
    chars = "".join(e["char"] or "" for e in events if e["k"] == "key_press")
    assert chars == "mail  today"  # the words stay; the address's keys are gone
    assert [e["entity"] for e in events if e["k"] == "redacted"] == ["EMAIL"]
    assert SECRET.encode() not in b"".join(members.values())
    assert manifest["redaction"]["policy"]["typed_text"] == "redact"


def test_typed_text_drop_exports_no_character_and_no_pasted_text(
    make_study: MakeStudy, tmp_path: Path, study_file: Path
) -> None:
    d, study = make_study(("keyboard", "window_titles"), '[redaction]\nocr = "off"\ntyped_text = "drop"\n')
    assert "export.typed_text.drop" in _said(study)

    def act(backend: FakeBackend, fake: FakeInput, rec: Recorder) -> None:
        backend.focus_window("notes.txt - gedit", "Gedit")
        assert _wait(lambda: rec._last_focus is not None and rec._last_focus.app_class == "Gedit")
        _type(fake, "plain words", enter=True)
        backend.set_clipboard("pasted words")
        assert _wait(lambda: not rec._denied_now)  # the writer has judged the window: keys are kept
        fake.emit(KeyPress(now_ns(), "v", None, 118, ("ctrl",)))
        assert _wait(lambda: backend.clipboard_reads == ["clipboard"])
        time.sleep(0.1)

    sid = _record(d, study, act)
    stored = read_session(d, sid, keys.load_identity(d)).events
    assert any(getattr(e, "text", None) == "pasted words" for e in stored)  # captured, so drop is tested
    _manifest, members = _export(d, study, sid, tmp_path / "out", study_file)
    keys_out = [e for e in _events(members) if e["k"] in ("key_press", "key_release")]
    assert keys_out and all(e["char"] is None for e in keys_out)
    assert all(e["vk"] is None for e in keys_out if e["name"] is None)  # a key code would spell it
    assert {e["name"] for e in keys_out if e["name"]} == {"enter"}
    assert all(e.get("text") is None for e in _events(members) if e["k"] == "paste")
    blob = b"".join(members.values())
    assert b"plain" not in blob and b"pasted" not in blob


def test_a_terminal_password_after_a_command_leaves_as_PASSWORD_and_stays_stored(
    make_study: MakeStudy, tmp_path: Path, study_file: Path
) -> None:
    """The command rule (no screen): what the sentence says for a study without the screen scope."""
    d, study = make_study(("keyboard", "window_titles"), '[redaction]\nocr = "off"\n')
    said = _said(study)["export.terminal_passwords.command"]
    assert "sudo" in said and "[PASSWORD]" in said and "kept, encrypted, on this computer" in said

    def act(backend: FakeBackend, fake: FakeInput, _rec: Recorder) -> None:
        backend.focus_window("alice@host: ~", "XTerm")
        _type(fake, "sudo ls", enter=True)
        _type(fake, "Hunter2Canary", enter=True)

    sid = _record(d, study, act)
    stored = read_session(d, sid, keys.load_identity(d)).events
    assert "Hunter2Canary" in "".join(e.char or "" for e in stored if isinstance(e, KeyPress))  # kept here
    _manifest, members = _export(d, study, sid, tmp_path / "out", study_file)
    assert [e["entity"] for e in _events(members) if e["k"] == "redacted"] == ["PASSWORD"]
    assert b"Hunter2Canary" not in b"".join(members.values())


def test_without_window_titles_a_terminal_password_is_not_recognised(
    make_study: MakeStudy, tmp_path: Path, study_file: Path
) -> None:
    """The warning is true: without window titles the session has no window class, so no terminal."""
    d, study = make_study(("keyboard",), '[redaction]\nocr = "off"\n')
    assert "not recognised" in _said(study)["export.terminal_passwords.no_titles"]

    def act(backend: FakeBackend, fake: FakeInput, _rec: Recorder) -> None:
        backend.focus_window("alice@host: ~", "XTerm")
        _type(fake, "sudo ls", enter=True)
        _type(fake, "Hunter2Canary", enter=True)

    sid = _record(d, study, act)
    _manifest, members = _export(d, study, sid, tmp_path / "out", study_file)
    assert not any(e["k"] == "window_focus" for e in _events(members))
    assert "Hunter2Canary" in "".join(e["char"] or "" for e in _events(members) if e["k"] == "key_press")


@pytest.mark.parametrize("mode", ["redact", "drop"])
def test_window_titles_are_redacted_or_dropped_as_the_study_says(
    make_study: MakeStudy, tmp_path: Path, study_file: Path, mode: str
) -> None:
    d, study = make_study(
        ("pointer", "window_titles"), f'[redaction]\nocr = "off"\nwindow_titles = "{mode}"\n'
    )
    assert f"export.window_titles.{mode}" in _said(study)

    def act(backend: FakeBackend, _fake: FakeInput, rec: Recorder) -> None:
        backend.focus_window(f"Inbox - {SECRET} - Mail", "Thunderbird")
        assert _wait(lambda: rec._last_focus is not None and rec._last_focus.app_class == "Thunderbird")

    sid = _record(d, study, act)
    _manifest, members = _export(d, study, sid, tmp_path / "out", study_file)
    focus = [e for e in _events(members) if e["k"] == "window_focus" and e["app_class"] == "Thunderbird"]
    assert focus  # which application had the focus, and where, leaves either way
    expected = "Inbox - [EMAIL] - Mail" if mode == "redact" else None
    assert all(e["title"] == expected for e in focus) and all(e["width"] > 0 for e in focus)
    assert SECRET.encode() not in b"".join(members.values())


def _frames(make_study: MakeStudy, ocr: str) -> tuple[Dirs, Study, str, list[bytes]]:
    d, study = make_study(("pointer", "screen"), f'[redaction]\nocr = "{ocr}"\n')

    def act(backend: FakeBackend, _fake: FakeInput, rec: Recorder) -> None:
        assert _wait(lambda: rec.counters.frames >= 1)

    sid = _record(d, study, act)
    stored = [e.data for e in read_session(d, sid, keys.load_identity(d)).events if isinstance(e, Frame)]
    assert stored
    return d, study, sid, stored


def _exported_frames(members: dict[str, bytes]) -> list[bytes]:
    rows = [json.loads(line) for line in members["frames.jsonl"].splitlines()]
    return [members[row["member"]] for row in rows]


def test_ocr_off_exports_the_frames_as_stored(
    make_study: MakeStudy, tmp_path: Path, study_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d, study, sid, stored = _frames(make_study, "off")
    assert "export.ocr.off" in _said(study)
    monkeypatch.setattr(TesseractOcr, "find", classmethod(lambda cls: None))  # not needed: not asked
    manifest, members = _export(d, study, sid, tmp_path / "out", study_file)
    assert _exported_frames(members) == stored
    assert manifest["redaction"]["frames_masked_by_ocr"] is False


def test_ocr_if_available_without_an_engine_exports_the_frames_as_stored_and_says_so(
    make_study: MakeStudy, tmp_path: Path, study_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d, study, sid, stored = _frames(make_study, "if-available")
    assert "otherwise as your screen showed them" in _said(study)["export.ocr.if-available"]
    monkeypatch.setattr(TesseractOcr, "find", classmethod(lambda cls: None))  # tesseract missing
    manifest, members = _export(d, study, sid, tmp_path / "out", study_file)
    assert _exported_frames(members) == stored
    assert manifest["redaction"]["frames_masked_by_ocr"] is False


def test_ocr_required_reads_every_exported_frame(
    make_study: MakeStudy, tmp_path: Path, study_file: Path
) -> None:
    if TesseractOcr.find() is None:
        unavailable("this test needs tesseract (run: make system-deps)")
    d, study, sid, stored = _frames(make_study, "required")
    assert "exports nothing without OCR" in _said(study)["export.ocr.required"]
    manifest, members = _export(d, study, sid, tmp_path / "out", study_file)
    evidence = manifest["redaction"]
    assert evidence["frames_masked_by_ocr"] is True
    assert any(r["name"] == "tesseract" for r in evidence["redactors"])
    assert len(_exported_frames(members)) + evidence["frames_left_out_ocr_failed"] == len(stored)


@pytest.mark.parametrize("after", ["keep", "delete"])
def test_after_export_keeps_or_shreds_as_the_study_says(
    make_study: MakeStudy, tmp_path: Path, study_file: Path, after: str
) -> None:
    d, study = make_study(("pointer",), f'[retention]\nafter_export = "{after}"\n')
    assert f"kept.after_export.{after}" in _said(study)
    sid = _record(d, study, lambda _b, _f, _r: None)
    session = d.sessions / sid
    assert session.is_dir()
    _export(d, study, sid, tmp_path / "out", study_file)
    listed = [s.id for s in list_sessions(d)]
    if after == "keep":
        assert listed == [sid] and any(session.glob("*.seg"))
    else:
        assert listed == [] and not session.exists()


def test_the_studys_retention_is_what_deletes(make_study: MakeStudy) -> None:
    d, study = make_study(("pointer",), "[retention]\ndays = 3\n")
    said = _said(study)["kept.retention"]
    assert said.startswith("Deleted once 3 days old")
    old, recent = (_record(d, study, lambda _b, _f, _r: None) for _ in range(2))
    now = time.time()
    for sid, age_days in ((old, 3.5), (recent, 2.5)):
        meta = load_meta(d.sessions / sid)
        assert meta is not None
        meta["started_at"] = utc_timestamp(now - age_days * 86400)
        write_meta(d.sessions / sid, meta)
    rec = Recorder(d, select_backend("fake"), study)
    rec.start()  # retention runs before the new session
    rec.stop()
    left = {s.id for s in list_sessions(d)}
    assert old not in left and recent in left and rec.session_id in left
    # the budget is the study's too: a study allowing (almost) nothing keeps only the live session
    writer_loop.enforce_retention(d, dataclasses.replace(study, retention_max_gib=1e-9), keep=set())
    assert list_sessions(d) == []


def test_a_study_deny_rule_keeps_its_window_out_of_the_store(make_study: MakeStudy) -> None:
    d, study = make_study(
        EVERY_SCOPE, '[redaction]\nocr = "off"\n[[deny]]\nlabel = "Our HR system"\napp_class = "hr-client*"\n'
    )
    assert _said(study)["never.study_deny"].endswith(": Our HR system.")

    def act(backend: FakeBackend, fake: FakeInput, rec: Recorder) -> None:
        _type(fake, "a")
        backend.focus_window("Salaries 2026", "hr-client-web")
        assert _wait(lambda: rec._denied_now)
        _type(fake, "salary")
        backend.focus_window("Inbox", "Thunderbird")
        assert _wait(lambda: not rec._denied_now)
        _type(fake, "b")

    sid = _record(d, study, act)
    events = read_session(d, sid, keys.load_identity(d)).events
    assert [e.char for e in events if isinstance(e, KeyPress)] == ["a", "b"]
    assert not any(isinstance(e, WindowFocus) and e.app_class == "hr-client-web" for e in events)
    gaps = [e.detail for e in events if isinstance(e, Marker) and e.marker == "deny"]
    assert [g["label"] for g in gaps] == ["Our HR system", "Our HR system"]
    assert gaps[1]["events_left_out"] == 12


@pytest.mark.parametrize(("idle", "hotkey"), [(3, "<ctrl>+<alt>+q"), (0, "")])
def test_the_studys_pause_key_and_idle_limit_are_the_ones_the_volunteer_is_told(
    make_study: MakeStudy, monkeypatch: pytest.MonkeyPatch, idle: int, hotkey: str
) -> None:
    monkeypatch.setattr(writer_loop, "CHECK_EVERY_S", 0.02)
    d, study = make_study(EVERY_SCOPE, f'[capture]\nidle_pause_minutes = {idle}\npause_hotkey = "{hotkey}"\n')
    said = _said(study)["recorded.pausing"]
    backend = select_backend("fake")
    assert isinstance(backend, FakeBackend)
    rec = Recorder(d, backend, study)
    rec.start()
    try:
        backend.idle = idle * 60 - 5.0 if idle else 10**6
        time.sleep(0.2)
        assert rec.state == "recording"
        if idle:
            assert f"after {idle} minutes without input" in said
            backend.idle = idle * 60 + 5.0
            assert _wait(lambda: rec.state == "paused" and rec.reason == "idle")
            backend.idle = 0.5
            assert _wait(lambda: rec.state == "recording")
            assert _wait(lambda: backend.last_input is not None and backend.last_input.is_alive())
        else:
            assert "without input" not in said
        fake = backend.last_input
        assert fake is not None
        fake.emit(KeyPress(now_ns(), None, "ctrl_l", 0xFFE3, ()))
        fake.emit(KeyPress(now_ns(), None, "alt_l", 0xFFE9, ("ctrl",)))
        fake.emit(KeyPress(now_ns(), "q", None, 113, ("alt", "ctrl")))
        if hotkey:
            assert "with Ctrl+Alt+Q" in said
            assert _wait(lambda: rec.state == "paused" and rec.reason == "volunteer")
        else:
            assert "with Ctrl" not in said
            time.sleep(0.2)
            assert rec.state == "recording"  # no key pauses, as the dialog said
    finally:
        if rec.state == "paused":
            rec.resume()
        rec.stop()
    presses = [
        e
        for e in read_session(d, str(rec.session_id), keys.load_identity(d)).events
        if isinstance(e, KeyPress)
    ]
    assert [e.char for e in presses if e.char] == ([] if hotkey else ["q"])  # the pause key is never recorded


def test_the_upload_sentence_names_the_intake_and_what_happens_after() -> None:
    base = _toml(DOCS_RECIPIENT, EVERY_SCOPE)
    plain = {p.key: p.text for p in promises.promises(parse_study(base))}
    assert "export.by_you" in plain and "export.upload" not in plain
    assert not any(k.startswith("kept.after_upload") for k in plain)
    url = "https://intake.example.org/study-7/"
    upload = base + f'[upload]\nurl = "{url}"\n'
    said = {p.key: p.text for p in promises.promises(parse_study(upload))}
    assert url in said["export.upload"] and "export.by_you" not in said
    assert "kept.after_upload.keep" in said
    deleting = {
        p.key for p in promises.promises(parse_study(upload + '[retention]\nafter_upload = "delete"\n'))
    }
    assert "kept.after_upload.delete" in deleting
    exported = upload + '[retention]\nafter_export = "delete"\nafter_upload = "delete"\n'
    assert not any(p.key.startswith("kept.after_upload") for p in promises.promises(parse_study(exported)))
