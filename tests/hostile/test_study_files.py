"""Hostile study files and consent receipts (P1): a study file comes from outside (the operator, or
whoever hands the volunteer a file), and what it makes the volunteer read and agree to must be what
optin does.

Each case names the promise it guards.  ``OPTIN_FUZZ_ROUNDS`` (``make fuzz``) runs the randomised
ones longer.
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
import unicodedata
from pathlib import Path
from typing import cast

import pytest
from pyrage import x25519

from agent import cli, consent
from agent.errors import StudyError
from agent.paths import dirs
from agent.study import MAX_STUDY_BYTES, demo_study_toml, install_study, load_study_file, parse_study
from agent.ui.consent_views import consent_view
from tests.hostile.conftest import Tally, fuzz_rounds

RECIPIENT = str(x25519.Identity.generate().to_public())
BASE = demo_study_toml(RECIPIENT) + '\n[[deny]]\nlabel = "Our HR system"\napp_class = "hr-*"\n'

#: Characters that hide text or reorder it: bidi embeddings, overrides, isolates and marks,
#: zero-width characters, the BOM, C0 and C1 controls, DEL, line and paragraph separators, the soft
#: hyphen, an interlinear annotation, a private-use and an unassigned code point.
HIDDEN = (
    [chr(c) for c in range(0x202A, 0x202F)]
    + [chr(c) for c in range(0x2066, 0x206A)]
    + ["\u200e", "\u200f", "\u061c", "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\ufff9"]
    + [chr(c) for c in range(0x00, 0x20) if chr(c) not in "\t\n"]
    + ["\x7f", "\x85", "\x9b", "\u2028", "\u2029", "\ue000", "\U000e0001", "\U0010ffff"]
)
#: (TOML key line prefix, dotted key in messages, line in BASE) of each text a volunteer reads.
SHOWN = {
    "id": ('id = "optin-demo"', "study.id"),
    "name": ('name = "optin demo', "study.name"),
    "contact": ('contact = "nobody', "study.contact"),
    "consent_version": ('consent_version = "1"', "study.consent_version"),
    "label": ('label = "Our HR system"', "deny[1].label"),
}


def _line_of(prefix: str) -> int:
    return next(i for i, line in enumerate(BASE.splitlines(), 1) if line.startswith(prefix))


def _escape(ch: str) -> str:
    return f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}"


def _refused(text: str, source: str = "s.toml") -> str:
    with pytest.raises(StudyError) as info:
        parse_study(text, source=source)
    return str(info.value)


def _clean(message: str) -> bool:
    """A message that is safe to print: nothing in it acts on a terminal or hides itself."""
    return not any(
        unicodedata.category(c) in ("Cc", "Cf", "Co", "Cn", "Zl", "Zp") and c != "\n" for c in message
    )


@pytest.mark.parametrize("key", list(SHOWN))
def test_p1_hidden_characters_in_study_texts_are_refused_naming_file_line_key_and_code_point(
    hostile: Tally, key: str
) -> None:
    prefix, dotted = SHOWN[key]
    line = _line_of(prefix)
    for ch in HIDDEN:
        for written in (ch, _escape(ch)):  # as itself, and as a TOML escape
            old = BASE.splitlines()[line - 1]
            cut = old.index('"') + 1
            text = BASE.replace(old, old[:cut] + written + old[cut:], 1)
            hostile.tried("P1 hidden characters in study texts")
            message = _refused(text)
            if "not valid TOML" in message:
                assert written == ch  # TOML itself refuses raw C0 controls and DEL; escapes reach optin
            else:
                assert message.startswith(f"s.toml:{line}: {dotted} has U+{ord(ch):04X} "), message
                assert "Fix: delete it" in message
            assert _clean(message)
            hostile.held("P1 hidden characters in study texts")


def test_p1_hidden_characters_in_the_consent_text_name_their_own_line(hostile: Tally) -> None:
    lines = BASE.splitlines()
    text_line = next(i for i, line in enumerate(lines, 1) if line.startswith("consent_text"))
    for offset in (1, 2, 4):
        for ch in ("\u202e", "\u200b", "\x1b", "\u2066", "\x0b", "\r"):
            for written in (ch, _escape(ch)):
                target = lines[text_line - 1 + offset]
                text = BASE.replace(target, target[:5] + written + target[5:], 1)
                hostile.tried("P1 hidden characters in study texts")
                message = _refused(text)
                if "not valid TOML" in message:
                    assert written == ch
                else:
                    expected = text_line + offset if written == ch else text_line
                    assert message.startswith(f"s.toml:{expected}: study.consent_text has U+{ord(ch):04X}")
                    assert "line breaks and tabs are fine" in message
                assert "scripted volunteer" not in message  # never the consent text itself
                hostile.held("P1 hidden characters in study texts")


def test_p1_tabs_and_line_breaks_in_the_consent_text_are_fine() -> None:
    study = parse_study(BASE.replace("It records a", "It\trecords a\n\n\tand"))
    assert "\t" in study.consent_text


def test_p1_random_texts_with_hidden_characters_are_always_refused(hostile: Tally) -> None:
    rng = random.Random(1414)  # noqa: S311 - reproducible test inputs, not secrets
    alphabet = "abcXYZ 019.,;:-_'()@éüßあ中😀" + "".join(HIDDEN[:8])
    for _ in range(fuzz_rounds(300)):
        key = rng.choice(["name", "contact", "id", "consent_version", "label", "consent_text"])
        body = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))
        hidden = rng.choice(HIDDEN)
        at = rng.randint(0, len(body))
        value = body[:at] + hidden + body[at:]
        shown = "".join(_escape(c) if c in HIDDEN or c in '"\\' else c for c in value)
        if key == "consent_text":
            text = BASE.replace('consent_text = """\n', f'consent_text = """\n{shown}\n', 1)
        elif key == "label":
            text = BASE.replace('label = "Our HR system"', f'label = "{shown}"')
        else:
            line = f'{key} = "{shown}"'
            literal = line.replace("\\", "\\\\")  # the replacement as written, not a template
            text = re.sub(rf'^{key} = "[^"]*"', literal, BASE, count=1, flags=re.M)
        hostile.tried("P1 hidden characters in study texts (random)")
        message = _refused(text)
        first = next(c for c in value if c in HIDDEN and not (key == "consent_text" and c in "\t\n"))
        assert f"U+{ord(first):04X}" in message, (key, value, message)
        assert _clean(message)
        hostile.held("P1 hidden characters in study texts (random)")


def test_p1_a_forged_study_with_another_recipient_is_not_covered(
    hostile: Tally, optin_home: Path, tmp_path: Path
) -> None:
    """Same id, version and text, and any one other term changed: never "consent: GIVEN"."""
    d = dirs()
    path = tmp_path / "study.toml"
    path.write_text(BASE)
    study = install_study(d, path)
    consent.grant(d, study, study.terms_sha256)
    forgeries = {
        "recipient": BASE.replace(RECIPIENT, str(x25519.Identity.generate().to_public())),
        "extra recipient": BASE.replace(
            f'recipients = ["{RECIPIENT}"]',
            f'recipients = ["{RECIPIENT}", "{x25519.Identity.generate().to_public()}"]',
        ),
        "deny rule dropped": BASE.split("[[deny]]")[0],
        "deny label": BASE.replace("Our HR system", "Our HR systen"),
        "retention": BASE + "[retention]\ndays = 365\n",
        "after export": BASE + '[retention]\nafter_export = "delete"\n',
        "ocr": BASE + '[redaction]\nocr = "off"\n',
        "typed text": BASE + '[redaction]\ntyped_text = "drop"\n',
        "titles": BASE + '[redaction]\nwindow_titles = "drop"\n',
        "hotkey": BASE + '[capture]\npause_hotkey = ""\n',
        "idle": BASE + "[capture]\nidle_pause_minutes = 0\n",
        "scopes": BASE.replace('"screen", ', ""),
        "name": BASE.replace("optin demo (private", "optin demo  (private"),
        "contact": BASE.replace("nobody:", "somebody:"),
    }
    for what, text in forgeries.items():
        hostile.tried("P1 forged study terms")
        forged = parse_study(text)
        same = (forged.id, forged.consent_version, forged.text_sha256)
        assert same == (study.id, study.consent_version, study.text_sha256), what
        receipt = consent.current_receipt(d)
        assert receipt is not None and not receipt.covers(forged), what
        assert consent.state(receipt, forged) == consent.NEEDS_RENEWAL
        assert (receipt.renewal_reason(forged) or "").startswith("the study has changed since you agreed: ")
        hostile.held("P1 forged study terms")


def test_p1_malformed_receipts_are_no_consent_and_no_traceback(
    hostile: Tally, optin_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = dirs()
    path = tmp_path / "study.toml"
    path.write_text(BASE)
    study = install_study(d, path)
    good = consent.grant(d, study, study.terms_sha256).to_json()
    receipt_path = d.config / "consent.json"
    rng = random.Random(7)  # noqa: S311 - reproducible test inputs, not secrets
    shapes: list[bytes] = [
        b"",
        b"null",
        b"[]",
        b'"text"',
        b"{",
        b"\xff\xfe",
        b"[" * 100_000,
        json.dumps({**good, "scopes": None}).encode(),
        json.dumps(
            {**good, "terms": {**cast("dict[str, object]", good["terms"]), "recipients": []}}
        ).encode(),
        json.dumps({k: v for k, v in good.items() if k != "terms"}).encode(),
    ]
    for _ in range(fuzz_rounds(200)):
        obj = json.loads(json.dumps(good))
        key = rng.choice(list(obj))
        obj[key] = rng.choice([None, 0, 1.5, "", "x" * 70, [], {}, ["pointer"], True, "0" * 64])
        shapes.append(json.dumps(obj).encode())
    for blob in shapes:
        receipt_path.write_bytes(blob)
        hostile.tried("P1 malformed consent receipts")
        receipt = consent.current_receipt(d)
        if receipt is not None and receipt.covers(study):  # only fields that bind nothing were changed
            assert receipt.terms == study.terms() and receipt.text_sha256 == study.text_sha256
        assert cli.main(["consent", "show"]) == 0
        out = capsys.readouterr().out
        assert ("consent: GIVEN" in out) == (receipt is not None and receipt.covers(study))
        hostile.held("P1 malformed consent receipts")


def test_p1_oversized_slow_and_odd_study_files_are_refused_without_hanging(
    hostile: Tally, optin_home: Path, tmp_path: Path
) -> None:
    big = tmp_path / "big.toml"
    big.write_bytes(BASE.encode() + b"#" * MAX_STUDY_BYTES)
    fifo = tmp_path / "study.fifo"
    os.mkfifo(fifo)
    deep = tmp_path / "deep.toml"
    deep.write_text(BASE + "x = " + "[" * 50_000 + "]" * 50_000 + "\n")
    link = tmp_path / "link.toml"
    link.symlink_to(big)
    cases = {big: "at most 1048576", fifo: "not a regular file", deep: "nested too deeply", link: "at most"}
    for path, fragment in cases.items():
        hostile.tried("P1 odd study files")
        done: list[str] = []

        def load(p: Path = path, done: list[str] = done) -> None:
            try:
                load_study_file(p)
            except StudyError as exc:
                done.append(str(exc))

        worker = threading.Thread(target=load, daemon=True)
        t0 = time.monotonic()
        worker.start()
        worker.join(20)  # generous: "does not hang", not a timing test
        assert not worker.is_alive(), f"{path.name}: reading the study file hung"
        assert done and fragment in done[0], (path.name, done)
        assert time.monotonic() - t0 < 20
        hostile.held("P1 odd study files")
    d = dirs()
    assert cli.main(["consent", "show", "--study", str(fifo)]) == 2
    assert not (d.config / "study.toml").exists()  # nothing was installed


def test_p1_the_dialog_and_consent_show_never_pass_hidden_characters_through(
    hostile: Tally, optin_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Defence in depth: a receipt (not validated like a study file) with escapes in its study name."""
    d = dirs()
    path = tmp_path / "study.toml"
    path.write_text(BASE)
    study = install_study(d, path)
    receipt = consent.grant(d, study, study.terms_sha256).to_json()
    for ch in ("\x1b]0;pwned\x07", "\u202e", "\x9b2J", "\u200b"):
        hostile.tried("P1 escapes shown to the volunteer")
        forged = {**receipt, "study_id": "other", "study_name": f"Study{ch}name", "consent_version": f"1{ch}"}
        (d.config / "consent.json").write_text(json.dumps(forged))
        view = consent_view(study, d, consent.current_receipt(d))
        assert view.notice is not None and _clean(view.notice)
        assert cli.main(["consent", "show"]) == 0
        out = capsys.readouterr().out
        assert _clean(out)
        hostile.held("P1 escapes shown to the volunteer")
    for written in ("\\u001b]0;pwned\\u0007", "\\u009b2J", "\\u202e"):  # issue 14 item 5: escapes in the name
        hostile.tried("P1 escapes shown to the volunteer")
        evil = tmp_path / "evil.toml"
        evil.write_text(BASE.replace('name = "optin demo', f'name = "{written}optin demo'))
        assert cli.main(["consent", "show", "--study", str(evil)]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and "study.name has U+" in captured.err and _clean(captured.err)
        assert parse_study((d.config / "study.toml").read_text()) == study  # the installed study stays
        hostile.held("P1 escapes shown to the volunteer")
