"""The study file: every table, the defaults, and errors that name the file, the line and the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pyrage import x25519

from agent.deny_rules import DenyRule
from agent.errors import StudyError
from agent.keyboard.hotkey import hotkey_problem
from agent.paths import dirs
from agent.study import (
    DEFAULT_IDLE_PAUSE_MINUTES,
    DEFAULT_PAUSE_HOTKEY,
    DEFAULT_RETENTION_DAYS,
    DEFAULT_RETENTION_MAX_GIB,
    Study,
    demo_study_toml,
    install_study,
    installed_study,
    load_study_file,
    parse_study,
)

AGE = str(x25519.Identity.generate().to_public())
AGE2 = str(x25519.Identity.generate().to_public())
#: A sentence of the consent text: it must never appear in an error message.
CONSENT_WORDS = "We record what you do in the browser"

# Line numbers matter: the error cases below name lines of this file.
FULL = f'''# A study file with every table.
[study]
id = "web-tasks-2026"
name = "Everyday web tasks"
contact = "Dr. A. Researcher <study@example.org>"
consent_version = "3"
scopes = ["pointer", "keyboard", "screen", "window_titles"]
recipients = ["{AGE}", "{AGE2}"]
consent_text = """
{CONSENT_WORDS}.
scopes = ["microphone"]
[retention]
days = 9999
"""

[[deny]]
label = "Our HR system"
app_class = "hr-client*"

[[deny]]
label = "Payroll in any browser"
title = 'salary|payroll|\\bHR\\b'

[[deny]]
label = "Bank statements"
app_class = "*.bank.example"
title = "statement"

[retention]
days = 14
max_gib = 0.5

[capture]
idle_pause_minutes = 0
pause_hotkey = "<ctrl>+<shift>+<f9>"
'''


def with_line(n: int, text: str, base: str = FULL) -> str:
    """``base`` with its line ``n`` (from 1) replaced by ``text``."""
    lines = base.split("\n")
    lines[n - 1] = text
    return "\n".join(lines)


def error_of(text: str, source: str = "study.toml") -> str:
    with pytest.raises(StudyError) as info:
        parse_study(text, source=source)
    return str(info.value)


def test_a_full_file_parses_with_every_field() -> None:
    study = parse_study(FULL, source="study.toml")
    assert study == Study(
        id="web-tasks-2026",
        name="Everyday web tasks",
        contact="Dr. A. Researcher <study@example.org>",
        consent_version="3",
        consent_text=f'{CONSENT_WORDS}.\nscopes = ["microphone"]\n[retention]\ndays = 9999\n',
        scopes=("pointer", "keyboard", "screen", "window_titles"),
        recipients=(AGE, AGE2),
        deny=(
            DenyRule(label="Our HR system", app_class="hr-client*"),
            DenyRule(label="Payroll in any browser", title=r"salary|payroll|\bHR\b"),
            DenyRule(label="Bank statements", app_class="*.bank.example", title="statement"),
        ),
        retention_days=14,
        retention_max_gib=0.5,
        idle_pause_minutes=0,
        pause_hotkey="<ctrl>+<shift>+<f9>",
    )
    assert study.retention_max_bytes == 512 * 1024**2
    assert study.idle_pause_s == 0.0


def test_optional_tables_have_defaults() -> None:
    study = parse_study(demo_study_toml(AGE))
    assert study.deny == ()
    assert study.retention_days == DEFAULT_RETENTION_DAYS == 30
    assert study.retention_max_gib == DEFAULT_RETENTION_MAX_GIB == 2.0
    assert study.idle_pause_minutes == DEFAULT_IDLE_PAUSE_MINUTES == 10
    assert study.pause_hotkey == DEFAULT_PAUSE_HOTKEY == "<ctrl>+<alt>+p"
    assert study.idle_pause_s == 600.0


def test_empty_optional_tables_and_no_hotkey() -> None:
    text = demo_study_toml(AGE) + '\n[retention]\n[capture]\npause_hotkey = ""\n'
    study = parse_study(text)
    assert (study.retention_days, study.pause_hotkey) == (30, "")


def test_study_constructed_the_old_way_still_works() -> None:
    study = Study("i", "n", "c", "1", "text", ("screen",), (AGE,))
    assert study.deny == ()
    assert study.retention_days == 30
    assert len(study.text_sha256) == 64


# (line to replace, its new text, the line the error names, a fragment of the message)
MISTAKES = [
    pytest.param(
        7,
        'scopes = ["pointer", "microphone"]',
        7,
        "study.toml:7: study.scopes has 'microphone'; allowed scopes are pointer, keyboard, screen, "
        "window_titles",
        id="bad-scope",
    ),
    pytest.param(4, "", 2, "study.toml:2: [study] is missing name. Fix: add name = ", id="missing-key"),
    pytest.param(
        6, "consent_version = 3", 6, "study.consent_version must be a non-empty string", id="wrong-type"
    ),
    pytest.param(
        22,
        "title = 'salary(|payroll'",
        22,
        "deny[2].title 'salary(|payroll' is not a valid regular expression: "
        "missing ), unterminated subpattern",
        id="bad-regex-in-deny-2",
    ),
    pytest.param(25, "", 24, "deny[3] (a [[deny]] rule) is missing label", id="missing-deny-label"),
    pytest.param(
        19,
        'titel = "x"',
        19,
        "unknown key deny[1].titel; [[deny]] has label, app_class, title. Did you mean title?",
        id="unknown-key-in-deny",
    ),
    pytest.param(
        31, "max_gb = 2", 31, "unknown key retention.max_gb; [retention] has days, max_gib", id="unknown-key"
    ),
    pytest.param(
        1, "[stduy.extra]", 1, "unknown table or key stduy; a study file has [study]", id="unknown-table"
    ),
    pytest.param(30, "days = 400", 30, "retention.days is 400; it must be from 1 to 365", id="days-range"),
    pytest.param(
        31, "max_gib = 0.01", 31, "retention.max_gib is 0.01; it must be from 0.1 to 1024", id="gib"
    ),
    pytest.param(
        30,
        'days = "30"',
        30,
        "retention.days must be a whole number from 1 to 365, not a string",
        id="days-type",
    ),
    pytest.param(
        34,
        "idle_pause_minutes = 241",
        34,
        "capture.idle_pause_minutes is 241; it must be from 0 to 240",
        id="idle",
    ),
    pytest.param(35, 'pause_hotkey = "<ctrl>+<sup>+p"', 35, "has unknown key <sup>", id="hotkey"),
    pytest.param(
        8,
        f'recipients = ["{AGE}", "{AGE2[:-1]}{"q" if AGE2[-1] != "q" else "p"}"]',
        8,
        "is not an age public key: its checksum is wrong",
        id="bad-recipient-checksum",
    ),
    pytest.param(
        8,
        'recipients = ["ssh-ed25519 AAAAC3Nza"]',
        8,
        "is not an age public key (they start with age1",
        id="ssh-recipient",
    ),
    pytest.param(8, "recipients = []", 8, "study.recipients is empty", id="no-recipient"),
    pytest.param(
        34, "idle_pause_minutes = = 1", 34, "study.toml:34: not valid TOML: Invalid value", id="toml"
    ),
    pytest.param(15, "[[deny]", 15, "study.toml:15: not valid TOML:", id="toml-header"),
]


@pytest.mark.parametrize(("line", "text", "expected_line", "fragment"), MISTAKES)
def test_each_error_names_its_line_and_key(line: int, text: str, expected_line: int, fragment: str) -> None:
    message = error_of(with_line(line, text))
    assert "\n" not in message, message  # exactly one problem
    assert message.startswith(f"study.toml:{expected_line}: "), message
    assert fragment in message
    assert CONSENT_WORDS not in message


def test_every_problem_is_listed_in_line_order() -> None:
    text = with_line(
        34, "idle_pause_minutes = -1", with_line(7, 'scopes = ["audio"]', with_line(30, "days = 0"))
    )
    lines = error_of(text).split("\n")
    assert [re.match(r"study.toml:(\d+): ", m).group(1) for m in lines] == ["7", "30", "34"]  # type: ignore[union-attr]


def test_key_like_lines_inside_the_consent_text_are_not_keys() -> None:
    # Lines 11-13 are inside consent_text and look like a scopes key, a [retention] header and days.
    message = error_of(with_line(30, "days = 0"))
    assert message.startswith("study.toml:30: retention.days is 0"), message
    message = error_of(with_line(7, 'scopes = ["screen", "webcam"]'))
    assert message.startswith("study.toml:7: study.scopes has 'webcam'"), message


def test_multi_line_arrays_name_the_entry_line() -> None:
    text = with_line(7, 'scopes = [\n  "pointer",  # the mouse\n  "microphone",\n]')
    assert error_of(text).startswith("study.toml:9: study.scopes has 'microphone'")


@pytest.mark.parametrize(
    ("tables", "line", "fragment"),
    [
        ('"retention".days = 0\n', 1, "retention.days is 0"),
        ("retention = { days = 30, max_gib = 9999 }\n", 1, "retention.max_gib is 9999"),
        (
            'deny = [\n  { label = "a", app_class = "x" },\n  { label = "b", title = "(" },\n]\n',
            3,
            "deny[2].title '(' is not a valid regular expression",
        ),
        ("[capture]\n'idle_pause_minutes' = 1.5\n", 2, "capture.idle_pause_minutes must be a whole number"),
        ('[retention . "days"]\n', 1, "retention.days must be a whole number from 1 to 365, not a table"),
    ],
)
def test_quoted_dotted_and_inline_keys_are_found(tables: str, line: int, fragment: str) -> None:
    message = error_of(tables + demo_study_toml(AGE))
    assert message.startswith(f"study.toml:{line}: "), message
    assert fragment in message


def test_an_error_with_no_better_place_names_line_1() -> None:
    message = error_of("# nothing here\n")
    assert message == (
        "study.toml:1: missing the [study] table. "
        "Fix: start the file with [study] and its keys (see docs/study.md)"
    )


def test_toml_error_at_the_end_of_the_file() -> None:
    message = error_of(FULL + "extra =")
    assert message.startswith(f"study.toml:{FULL.count(chr(10)) + 1}: not valid TOML"), message


def test_the_file_name_is_used_as_given() -> None:
    assert error_of(with_line(30, "days = 0"), source="../studies/s.toml").startswith(
        "../studies/s.toml:30: "
    )


@pytest.mark.parametrize(
    "mistake",
    [
        # the consent text in places where messages might be tempted to show a value
        f'consent_text = ["""{CONSENT_WORDS}"""]',
        f'consent_txt = """{CONSENT_WORDS}"""',
        f'name = """{CONSENT_WORDS}""" = 1',
        'consent_text = ""',
    ],
)
def test_the_consent_text_never_appears_in_an_error(mistake: str) -> None:
    text = FULL.replace('consent_version = "3"', f'consent_version = "3"\n{mistake}')
    message = error_of(text)
    assert CONSENT_WORDS not in message
    assert "browser" not in message


def test_a_secret_key_as_recipient_is_never_echoed() -> None:
    secret = str(x25519.Identity.generate())
    message = error_of(with_line(8, f'recipients = ["{secret}"]'))
    assert "SECRET key" in message
    assert secret not in message
    assert secret[15:30] not in message


def test_recipients_in_capitals_and_duplicates() -> None:
    study = parse_study(with_line(8, f'recipients = ["{AGE.upper()}", "{AGE2}", "{AGE2}"]'))
    assert study.recipients == (AGE.upper(), AGE2)


@pytest.mark.parametrize(
    ("recipient", "fragment"),
    [
        ("age1yubikey1qgxyz", "age plugin recipient"),
        ("age1abc", "58 more letters and digits"),
        (f" {AGE}", "spaces around it"),
        (AGE[:10].upper() + AGE[10:], "mixes upper and lower case"),
    ],
)
def test_recipients_must_be_x25519(recipient: str, fragment: str) -> None:
    message = error_of(with_line(8, f'recipients = ["{recipient}"]'))
    assert message.startswith("study.toml:8: study.recipients[1] "), message
    assert fragment in message


@pytest.mark.parametrize(
    ("entry", "line", "fragment"),
    [
        ('label = "x"', 37, "deny[4] (a [[deny]] rule) needs app_class, title or both"),
        ('label = "x"\ntitle = ""', 39, "deny[4].title must be a non-empty string, not an empty one"),
        ('label = "x"\napp_class = 3', 39, "deny[4].app_class must be a non-empty string, not an integer"),
        ('label = ["x"]\napp_class = "a"', 38, "deny[4].label must be a non-empty string, not an array"),
        ('label = "' + "x" * 201 + '"\napp_class = "a"', 38, "deny[4].label has 201 characters; at most 200"),
    ],
)
def test_deny_rule_checks(entry: str, line: int, fragment: str) -> None:
    # FULL ends with a newline: line 36 is empty, [[deny]] #4 starts on line 37.
    message = error_of(FULL + f"\n[[deny]]\n{entry}\n")
    assert message.startswith(f"study.toml:{line}: {fragment}"), message


def test_deny_written_as_a_single_table_says_use_two_brackets() -> None:
    message = error_of(demo_study_toml(AGE) + '\n[deny]\nlabel = "x"\ntitle = "y"\n')
    assert "deny must be an array of tables: write [[deny]] (two brackets)" in message


def test_scopes_are_deduplicated_and_checked() -> None:
    study = parse_study(with_line(7, 'scopes = ["screen", "screen", "pointer"]'))
    assert study.scopes == ("screen", "pointer")
    assert "study.scopes is empty" in error_of(with_line(7, "scopes = []"))
    assert "study.scopes must hold only strings; entry 2 is an integer" in error_of(
        with_line(7, 'scopes = ["screen", 1]')
    )
    assert "Did you mean window_titles?" in error_of(with_line(7, 'scopes = ["window_title"]'))


@pytest.mark.parametrize(
    ("hotkey", "problem"),
    [
        ("", None),
        ("<ctrl>+<alt>+p", None),
        ("<ctrl>++", None),  # ctrl and the + key
        ("<CMD>+<F9>", None),
        ("<alt>+<65>", None),
        ("<ctrl>+", 'ends with "+"'),
        ("p", "needs <ctrl>, <alt> or <cmd>"),
        ("<shift>+a", "needs <ctrl>, <alt> or <cmd>"),
        ("<ctrl>+<alt>", "a key that is no modifier"),
        ("<ctrl>+<print_screen>", "unknown key <print_screen>"),
        ("<ctrl>+ab", "'ab', which is not a key"),
        ("<ctrl>+a+A", "names A twice"),
    ],
)
def test_hotkeys(hotkey: str, problem: str | None) -> None:
    found = hotkey_problem(hotkey)
    assert (found is None) if problem is None else (found is not None and problem in found), found


def test_files_install_and_load(optin_home: Path, tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    path.write_bytes(b"\xef\xbb\xbf" + FULL.replace("\n", "\r\n").encode())  # BOM and CRLF, as Notepad saves
    study = install_study(dirs(), path)
    assert study == parse_study(FULL)
    assert installed_study(dirs()) == study
    assert load_study_file(path).deny[1].title == r"salary|payroll|\bHR\b"


def test_a_file_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(FULL.replace("Dr. A. Researcher", "Dr. Müller").encode("latin-1"))
    with pytest.raises(StudyError, match=r"latin1.toml:5: not UTF-8 text"):
        load_study_file(path)


def test_an_invalid_file_is_not_installed(optin_home: Path, tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    path.write_text(with_line(30, "days = 0"))
    with pytest.raises(StudyError, match=r"study.toml:30: retention.days is 0"):
        install_study(dirs(), path)
    with pytest.raises(StudyError, match="no study is installed"):
        installed_study(dirs())


def test_redaction_defaults_fail_closed() -> None:
    study = parse_study(demo_study_toml(AGE))
    assert (study.redaction_ocr, study.redaction_typed_text, study.redaction_window_titles) == (
        "required",
        "redact",
        "redact",
    )


def test_redaction_choices_parse() -> None:
    text = demo_study_toml(AGE) + '\n[redaction]\nocr = "off"\ntyped_text = "drop"\nwindow_titles = "drop"\n'
    study = parse_study(text)
    assert (study.redaction_ocr, study.redaction_typed_text, study.redaction_window_titles) == (
        "off",
        "drop",
        "drop",
    )


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (
            'ocr = "sometimes"',
            'redaction.ocr is \'sometimes\'; it must be one of "required", "if-available", "off"',
        ),
        ("typed_text = true", 'redaction.typed_text is a boolean; it must be one of "redact", "drop"'),
        ('titles = "drop"', "redaction"),
    ],
)
def test_redaction_errors_name_line_and_choices(body: str, fragment: str) -> None:
    text = demo_study_toml(AGE) + f"\n[redaction]\n{body}\n"
    line = text.count("\n")
    message = error_of(text)
    assert f"study.toml:{line}:" in message
    assert fragment in message


def test_after_export_keeps_by_default_and_is_checked() -> None:
    assert parse_study(demo_study_toml(AGE)).retention_after_export == "keep"
    text = demo_study_toml(AGE) + '\n[retention]\nafter_export = "delete"\n'
    assert parse_study(text).retention_after_export == "delete"
    message = error_of(demo_study_toml(AGE) + '\n[retention]\nafter_export = "shred"\n')
    assert 'retention.after_export is \'shred\'; it must be one of "keep", "delete"' in message


def test_hidden_characters_are_listed_in_file_order_with_the_other_problems() -> None:
    text = FULL.replace('name = "Everyday web tasks"', 'name = "Everyday\\u200bweb tasks"').replace(
        'scopes = ["pointer",', 'scopes = ["microphone", "pointer",'
    )
    lines = error_of(text).splitlines()
    assert lines[0].startswith("study.toml:4: study.name has U+200B (ZERO WIDTH SPACE)")
    assert lines[1].startswith("study.toml:7: study.scopes has 'microphone'")


def test_terms_change_with_every_term_and_only_with_them() -> None:
    study = parse_study(FULL)
    assert study.terms_sha256 == parse_study(FULL + "\n# a comment\n").terms_sha256
    assert study.terms()["text_sha256"] == study.text_sha256 and "consent_text" not in study.terms()
    assert study.terms()["deny"][0] == {"label": "Our HR system", "app_class": "hr-client*"}


def test_more_recipients_than_a_bundle_can_carry_are_refused() -> None:
    """Collectors refuse age headers of more than 64 stanzas: a study cannot name more than 63 keys."""
    from agent.study import MAX_RECIPIENTS

    keys = [str(x25519.Identity.generate().to_public()) for _ in range(MAX_RECIPIENTS + 1)]
    one = demo_study_toml(keys[0])
    many = one.replace(
        f'recipients = ["{keys[0]}"]', "recipients = [" + ", ".join(f'"{k}"' for k in keys) + "]"
    )
    assert many.count("age1") == MAX_RECIPIENTS + 1
    with pytest.raises(StudyError, match="at most 63"):
        parse_study(many)
    parse_study(many.replace(f', "{keys[-1]}"', ""))  # 63 are fine
