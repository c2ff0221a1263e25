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
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest
from pyrage import x25519

from agent import cli, consent
from agent.errors import StudyError
from agent.paths import dirs
from agent.study import (
    MAX_STUDY_BYTES,
    MAX_TASKS,
    demo_study_toml,
    install_study,
    load_study_file,
    parse_study,
)
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
        "a task added": BASE + '[[task]]\nid = "send"\ninstruction = "Send your files to us"\n',
        "free tasks": BASE + '[tasks]\nmode = "free"\n',
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


# --- tasks (issue 16 item 1): [[task]] entries and the [tasks] mode ----------------------------------------

#: A task's instruction: its words must never appear in an error message.
TASK_WORDS = "Transfer the savings"
#: The line of the first key of the [[task]] that _with_task appends.
TASK_LINE = BASE.count("\n") + 3


def _with_task(body: str) -> str:
    """BASE with one [[task]] whose first key (of ``body``) is on TASK_LINE."""
    return BASE + "\n[[task]]\n" + body


def test_p1_a_huge_task_instruction_is_refused_by_its_length_and_never_quoted(
    hostile: Tally, tmp_path: Path
) -> None:
    for size in (2_001, 100_000, MAX_STUDY_BYTES - len(BASE) - 200):
        hostile.tried("P1 oversized study tasks")
        path = tmp_path / "huge.toml"
        path.write_text(_with_task(f'id = "t"\ninstruction = "{TASK_WORDS} {"x" * size}"\n'))
        t0 = time.monotonic()
        with pytest.raises(StudyError) as info:
            load_study_file(path)
        assert time.monotonic() - t0 < 20  # generous: "does not hang", not a timing test
        message = str(info.value)
        assert message.startswith(f"{path}:{TASK_LINE + 1}: task[1].instruction has {size + 21:,} characters")
        assert TASK_WORDS not in message and "xxxx" not in message and len(message) < 300
        hostile.held("P1 oversized study tasks")


def test_p1_thousands_of_tasks_are_one_problem_and_do_not_hang(hostile: Tally, tmp_path: Path) -> None:
    shapes: dict[str, Callable[[int], str]] = {
        "good": lambda i: f'[[task]]\nid = "t{i}"\ninstruction = "Task {i}"\n',
        "all wrong": lambda i: f'[[task]]\nid = "T {i}"\ninstruction = {i}\nurl = "ftp://x"\nzz = 1\n',
        "all the same id": lambda _: '[[task]]\nid = "same"\ninstruction = "Again"\n',
        "inline": lambda i: f'{{ id = "t{i}", instruction = "x" }}, ',
    }
    for name, entry in shapes.items():
        for count in (MAX_TASKS + 1, 5_000, 20_000):
            if name == "inline":
                text = "task = [" + "".join(entry(i) for i in range(count)) + "]\n" + BASE
            else:
                text = BASE + "".join(entry(i) for i in range(count))
            if len(text.encode()) > MAX_STUDY_BYTES:
                continue  # the file-size limit refuses it first (test_p1_oversized_slow_and_odd_...)
            hostile.tried("P1 oversized study tasks")
            path = tmp_path / "many.toml"
            path.write_text(text)
            t0 = time.monotonic()
            message = ""
            try:
                load_study_file(path)
            except StudyError as exc:
                message = str(exc)
            assert time.monotonic() - t0 < 20, name  # generous: "does not hang", not a timing test
            assert "\n" not in message, (name, count, message[:500])  # one problem, not one per entry
            assert f"the file has {count} [[task]] entries; a study lists at most {MAX_TASKS}" in message
            hostile.held("P1 oversized study tasks")
    many_wrong = BASE + "".join(
        f'[[task]]\nid = "t{i}"\ninstruction = "\\u202e{i}"\n' for i in range(MAX_TASKS)
    )
    hostile.tried("P1 oversized study tasks")
    lines = _refused(many_wrong).split("\n")
    assert len(lines) == 21 and lines[-1] == f"s.toml: … and {MAX_TASKS - 20} more"  # the list stays short
    hostile.held("P1 oversized study tasks")


def test_p1_hidden_characters_in_task_texts_are_refused_naming_file_line_key_and_code_point(
    hostile: Tally,
) -> None:
    for key, line in (("instruction", TASK_LINE + 1), ("app", TASK_LINE + 2), ("url", TASK_LINE + 2)):
        for ch in HIDDEN:
            for written in (ch, _escape(ch)):  # as itself, and as a TOML escape
                value = f"https://example.org/{written}x" if key == "url" else f"{TASK_WORDS}{written}"
                body = 'id = "t"\n' + (
                    f'instruction = "{value}"\n' if key == "instruction" else "instruction = 'x'\n"
                )
                if key != "instruction":
                    body += f'{key} = "{value}"\n'
                hostile.tried("P1 hidden characters in study tasks")
                message = _refused(_with_task(body))
                if "not valid TOML" in message:
                    assert written == ch  # TOML itself refuses raw C0 controls and DEL; escapes reach optin
                else:
                    assert message.startswith(f"s.toml:{line}: task[1].{key} has U+{ord(ch):04X} "), message
                    assert "Fix: delete it" in message and "\n" not in message
                assert _clean(message) and TASK_WORDS not in message
                hostile.held("P1 hidden characters in study tasks")
    for ch in ("\u202e", "\u200b", "\u2066", "\u200f", "\x85"):  # in a multi-line instruction: its line
        text = _with_task(f'id = "t"\ninstruction = """\nStep one.\nStep {ch}two.\n"""\n')
        hostile.tried("P1 hidden characters in study tasks")
        message = _refused(text)
        assert message.startswith(f"s.toml:{TASK_LINE + 3}: task[1].instruction has U+{ord(ch):04X}"), message
        assert "line breaks and tabs are fine" in message and "Step" not in message
        hostile.held("P1 hidden characters in study tasks")


def test_p1_duplicate_task_ids_are_refused_naming_both_entries(hostile: Tally) -> None:
    rng = random.Random(1616)  # noqa: S311 - reproducible test inputs, not secrets
    for _ in range(fuzz_rounds(50)):
        count = rng.randint(2, MAX_TASKS)
        first, again = sorted(rng.sample(range(count), 2))
        ids = [f"t{i}" for i in range(count)]
        ids[again] = ids[first]
        text = BASE + "".join(f'[[task]]\nid = "{i}"\ninstruction = "Do {n}"\n' for n, i in enumerate(ids))
        hostile.tried("P1 duplicate task ids")
        message = _refused(text)
        line = BASE.count("\n") + 1 + 3 * again + 1
        assert message == (
            f"s.toml:{line}: task[{again + 1}].id {ids[first]!r} is also the id of task[{first + 1}]; an id "
            "names its task in every export. Fix: give each task its own id"
        )
        hostile.held("P1 duplicate task ids")


#: A value of every TOML kind (and empty ones).
KINDS = {
    "integer": "7",
    "float": "1.5",
    "boolean": "true",
    "array": '["x"]',
    "table": '{ a = "x" }',
    "date/time": "1979-05-27T07:32:00Z",
    "empty string": '""',
    "string": '"text"',
    "nan": "nan",
}


def test_p1_wrong_types_in_tasks_are_refused_naming_their_key(hostile: Tally) -> None:
    good = {
        "id": '"t"',
        "instruction": '"x"',
        "app": '"Firefox"',
        "url": '"https://e.org"',
        "time_limit_minutes": "5",
    }
    for key in good:
        for kind, value in KINDS.items():
            right = (kind == "string" and key in ("id", "instruction", "app")) or (
                kind == "integer" and key == "time_limit_minutes"
            )
            entry = {**good, key: value}
            body = "".join(f"{k} = {v}\n" for k, v in entry.items())
            hostile.tried("P1 wrong types in study tasks")
            if right:
                assert len(parse_study(_with_task(body)).tasks) == 1
            else:
                message = _refused(_with_task(body))
                line = TASK_LINE + list(good).index(key)
                assert message.startswith(f"s.toml:{line}: task[1].{key} "), (key, kind, message)
                assert "\n" not in message and _clean(message)
            hostile.held("P1 wrong types in study tasks")
    for kind, value in KINDS.items():  # the [tasks] mode, and task / tasks themselves
        for text, fragment in (
            (BASE + f"\n[tasks]\nmode = {value}\n", "tasks.mode is "),
            (f"task = {value}\n" + BASE, "task must be an array of tables"),
            (
                f"tasks = {value}\n" + BASE,
                "tasks must be a table" if kind != "table" else "unknown key tasks.a",
            ),
        ):
            hostile.tried("P1 wrong types in study tasks")
            message = _refused(text)
            assert fragment in message and _clean(message), (kind, message)
            hostile.held("P1 wrong types in study tasks")


def test_p1_random_task_entries_are_parsed_or_refused_never_crash(hostile: Tally) -> None:
    rng = random.Random(1617)  # noqa: S311 - reproducible test inputs, not secrets
    values = [*KINDS.values(), '"a"', '"Book-1"', '"https://x.example"', '"javascript:x"', "0", "1441", "-1"]
    values += ['"\\u202e"', '"x\\ny"', '"' + "y" * 2_500 + '"', '"https://u:p@h.example"', '"a.b_c"']
    keys = ["id", "instruction", "app", "url", "time_limit_minutes", "idd", "mode"]
    for _ in range(fuzz_rounds(300)):
        entries = []
        for _ in range(rng.randint(0, 4)):
            chosen = rng.sample(keys, rng.randint(0, len(keys)))
            entries.append("[[task]]\n" + "".join(f"{k} = {rng.choice(values)}\n" for k in chosen))
        mode = rng.choice(["", *(f'[tasks]\nmode = "{m}"\n' for m in ("off", "list", "free", "both", "x"))])
        text = BASE + "\n" + mode + "".join(entries)
        hostile.tried("P1 random study tasks")
        try:
            study = parse_study(text, source="s.toml")
        except StudyError as exc:
            message = str(exc)
            assert all(re.match(r"s\.toml(:\d+)?: ", line) for line in message.split("\n")), message
            assert _clean(message) and max(len(line) for line in message.split("\n")) < 400
        else:
            assert study.tasks_mode in ("off", "list", "free", "both")
            assert (study.tasks_mode in ("list", "both")) == bool(study.tasks)
            assert len({t.id for t in study.tasks}) == len(study.tasks)
        hostile.held("P1 random study tasks")
