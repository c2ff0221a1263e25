"""A study's tasks (issue 16 item 1): ``[[task]]`` entries and the ``[tasks]`` mode, checked like the rest
of the study file (file, line, key, fix), bound into consent only when the study has tasks, and stated
to the volunteer from the study itself (agent/promises.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pyrage import x25519

from agent import cli, consent, promises
from agent.errors import StudyError
from agent.paths import dirs
from agent.study import (
    MAX_TASK_APP,
    MAX_TASK_INSTRUCTION,
    MAX_TASK_URL,
    MAX_TASKS,
    TASK_MODES,
    TERMS_IN_WORDS,
    StudyTask,
    changed_terms,
    demo_study_toml,
    install_study,
    parse_study,
)
from agent.ui.consent_views import consent_view

AGE = str(x25519.Identity.generate().to_public())
BASE = demo_study_toml(AGE)
#: The first line after BASE (BASE ends with a line break).
FIRST = BASE.count("\n") + 1
#: Words of an instruction: they must never appear in an error message.
SECRET_WORDS = "Open the quarterly report"  # noqa: S105 - words, not a password

GOOD = (
    BASE
    + f'''[tasks]
mode = "both"

[[task]]
id = "book-flight"
instruction = """{SECRET_WORDS}
and book\tthe cheapest flight."""
app = "Firefox"
url = "https://example.org:8443/flights?from=CDG&to=FCO#top"
time_limit_minutes = 15

[[task]]
id = "a.b_c-9"
instruction = "Rename a file"
'''
)

#: A study file from before tasks existed, and the SHA-256 of its terms as the code before tasks computed
#: them (agent/study_model.py at HEAD 6e606ed, run from an unpacked copy): studies without tasks keep
#: their consent, and every receipt given to them.
PINNED_RECIPIENT = "age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq"
PINNED = f'''[study]
id = "pinned-terms"
name = "A study from before tasks"
contact = "Study team <study@example.org>"
consent_version = "7"
scopes = ["pointer", "keyboard", "screen", "window_titles"]
recipients = ["{PINNED_RECIPIENT}"]
consent_text = """
We record what you do in the browser.
"""

[[deny]]
label = "Our HR system"
app_class = "hr-client*"
title = 'salary|payroll'

[retention]
days = 14
max_gib = 0.5
after_export = "delete"

[capture]
idle_pause_minutes = 5
pause_hotkey = "<ctrl>+<shift>+<f9>"

[redaction]
ocr = "if-available"
typed_text = "drop"
window_titles = "redact"
'''
PINNED_SHA256 = "9c4aa443f8fc78e3186a49db16464c41596e757bcc6dfa26bbb701b2c6a93cdd"
#: The same file cut before [[deny]]: only the [study] table, every optional table at its default.
PINNED_MINIMAL = PINNED.split("\n[[deny]]", maxsplit=1)[0] + "\n"
PINNED_MINIMAL_SHA256 = "5c5434405c98e9d6d33d1cc2b5f1d40fb483d03f23628ccb3e144cfb8b3e65d6"


def error_of(text: str, source: str = "study.toml") -> str:
    with pytest.raises(StudyError) as info:
        parse_study(text, source=source)
    return str(info.value)


def task(body: str = 'id = "t1"\ninstruction = "Do it"\n', mode: str | None = None) -> str:
    """BASE with one [[task]] of ``body`` (its header on line FIRST + 1) and, after it, ``[tasks] mode``."""
    text = BASE + "\n[[task]]\n" + body
    if mode is not None:
        text += f'\n[tasks]\nmode = "{mode}"\n'
    return text


# --- what parses ---------------------------------------------------------------------------------------


def test_a_file_with_tasks_parses_with_every_field() -> None:
    study = parse_study(GOOD)
    assert study.tasks_mode == "both"
    assert study.tasks == (
        StudyTask(
            id="book-flight",
            instruction=f"{SECRET_WORDS}\nand book\tthe cheapest flight.",
            app="Firefox",
            url="https://example.org:8443/flights?from=CDG&to=FCO#top",
            time_limit_minutes=15,
        ),
        StudyTask(id="a.b_c-9", instruction="Rename a file"),
    )
    assert study.terms()["tasks"] == {
        "mode": "both",
        "list": [
            {
                "id": "book-flight",
                "instruction": f"{SECRET_WORDS}\nand book\tthe cheapest flight.",
                "app": "Firefox",
                "url": "https://example.org:8443/flights?from=CDG&to=FCO#top",
                "time_limit_minutes": 15,
            },
            {"id": "a.b_c-9", "instruction": "Rename a file"},  # empty hints are left out
        ],
    }
    assert "tasks" in TERMS_IN_WORDS and TASK_MODES == ("off", "list", "free", "both")


def test_inline_tasks_parse_like_tables() -> None:
    inline = (
        'task = [{ id = "a", instruction = "A", url = "http://x.example" }, { id = "b", instruction = "B" }]'
    )
    study = parse_study(inline + "\n" + BASE)  # top-level keys come before the first table
    assert [t.id for t in study.tasks] == ["a", "b"] and study.tasks_mode == "list"
    assert study.tasks[0].url == "http://x.example"


@pytest.mark.parametrize(
    ("tables", "mode", "count"),
    [
        ("", "off", 0),
        ('\n[tasks]\nmode = "off"\n', "off", 0),
        ("\n[tasks]\n", "off", 0),
        ('\n[tasks]\nmode = "free"\n', "free", 0),
        ('\n[[task]]\nid = "a"\ninstruction = "A"\n', "list", 1),
        ('\n[[task]]\nid = "a"\ninstruction = "A"\n[tasks]\n', "list", 1),
        ('\n[[task]]\nid = "a"\ninstruction = "A"\n[tasks]\nmode = "list"\n', "list", 1),
        ('\n[tasks]\nmode = "both"\n[[task]]\nid = "a"\ninstruction = "A"\n', "both", 1),
    ],
)
def test_the_mode_defaults_to_list_with_tasks_and_off_without(tables: str, mode: str, count: int) -> None:
    study = parse_study(BASE + tables)
    assert (study.tasks_mode, len(study.tasks)) == (mode, count)
    assert ("tasks" in study.terms()) == (mode != "off")


@pytest.mark.parametrize(
    "task_id", ["a", "0", "a" * 64, "web.search-2_b", "9-lives", "a..b", "a--"], ids=lambda s: s[:12]
)
def test_task_ids_that_are_accepted(task_id: str) -> None:
    assert parse_study(task(f'id = "{task_id}"\ninstruction = "Do it"\n')).tasks[0].id == task_id


def test_the_bounds_themselves_are_accepted() -> None:
    body = (
        f'id = "t"\ninstruction = "{"i" * MAX_TASK_INSTRUCTION}"\napp = "{"a" * MAX_TASK_APP}"\n'
        f'url = "https://example.org/{"u" * (MAX_TASK_URL - 20)}"\ntime_limit_minutes = 1440\n'
    )
    (only,) = parse_study(task(body)).tasks
    assert (len(only.instruction), len(only.app), len(only.url)) == (2000, 200, 2048)
    assert only.time_limit_minutes == 1440
    assert (
        parse_study(task('id = "t"\ninstruction = "x"\ntime_limit_minutes = 1\n')).tasks[0].time_limit_minutes
        == 1
    )
    many = BASE + "".join(f'[[task]]\nid = "t{i}"\ninstruction = "Task {i}"\n' for i in range(MAX_TASKS))
    assert len(parse_study(many).tasks) == MAX_TASKS == 500


# --- consent: the terms change with the tasks, and only studies with tasks have them -------------------


def test_a_study_without_tasks_keeps_the_terms_it_had_before_tasks_existed() -> None:
    full, minimal = parse_study(PINNED), parse_study(PINNED_MINIMAL)
    assert full.terms_sha256 == PINNED_SHA256
    assert minimal.terms_sha256 == PINNED_MINIMAL_SHA256
    assert "tasks" not in full.terms() and "tasks" not in minimal.terms()
    for table in ("\n[tasks]\n", '\n[tasks]\nmode = "off"\n'):  # an explicit "off" is no task either
        assert parse_study(PINNED + table).terms_sha256 == PINNED_SHA256


def test_a_changed_task_list_needs_new_consent(optin_home: Path, tmp_path: Path) -> None:
    d = dirs()
    path = tmp_path / "study.toml"
    path.write_text(GOOD)
    study = install_study(d, path)
    receipt = consent.grant(d, study, study.terms_sha256)
    assert receipt.covers(study) and receipt.terms == study.terms()
    changes = {
        "instruction": GOOD.replace("Rename a file", "Rename a folder"),
        "id": GOOD.replace('"a.b_c-9"', '"a.b_c-8"'),
        "url": GOOD.replace("flights?from", "flight?from"),
        "app": GOOD.replace('"Firefox"', '"Chromium"'),
        "time limit": GOOD.replace("= 15", "= 16"),
        "mode": GOOD.replace('mode = "both"', 'mode = "list"'),
        "a task more": GOOD + '[[task]]\nid = "more"\ninstruction = "One more"\n',
        "a task less": GOOD.split('[[task]]\nid = "a.b_c-9"')[0],
        "order": GOOD.replace('id = "book-flight"', 'id = "x"').replace(
            'id = "a.b_c-9"', 'id = "book-flight"'
        ),
    }
    for what, text in changes.items():
        changed = parse_study(text)
        assert not receipt.covers(changed), what
        assert consent.state(receipt, changed) == consent.NEEDS_RENEWAL, what
        assert (
            receipt.renewal_reason(changed) == "the study has changed since you agreed: the tasks it asks for"
        )
    plain = parse_study(BASE)  # the same study with tasks added is a new agreement too
    assert changed_terms(plain.terms(), parse_study(task()).terms()) == ["the tasks it asks for"]
    assert changed_terms(plain.terms(), parse_study(BASE + '[tasks]\nmode = "free"\n').terms()) == [
        "the tasks it asks for"
    ]


# --- what the volunteer is told (agent/promises.py: recorded.tasks.*) ----------------------------------


def test_the_tasks_sentence_states_the_studys_mode_and_count() -> None:
    said = {
        mode: {p.key: p.text for p in promises.promises(parse_study(text))}
        for mode, text in {
            "off": BASE,
            "list": task(),
            "free": BASE + '[tasks]\nmode = "free"\n',
            "both": GOOD,
        }.items()
    }
    assert not any(k.startswith("recorded.tasks") for k in said["off"])
    how = (
        " You start and end each task from the tray menu (“Start a task…”) or with `optin task`; "
        "giving a task up deletes its recording from this computer."
    )
    assert (
        said["list"]["recorded.tasks.list"] == "This study asks you to do tasks from its list (1 task)." + how
    )
    own = "that you describe in your own words"
    assert said["free"]["recorded.tasks.free"] == f"This study asks you to do tasks {own}." + how
    assert (
        said["both"]["recorded.tasks.both"]
        == f"This study asks you to do tasks from its list (2 tasks), or tasks {own}." + how
    )
    for mode in ("list", "free", "both"):  # one sentence, of the study's own mode
        assert [k for k in said[mode] if k.startswith("recorded.tasks")] == [f"recorded.tasks.{mode}"]
    three = BASE + "".join(f'[[task]]\nid = "t{i}"\ninstruction = "T"\n' for i in range(3))
    said3 = {p.key: p.text for p in promises.promises(parse_study(three))}
    assert said3["recorded.tasks.list"] == "This study asks you to do tasks from its list (3 tasks)." + how


def test_the_dialog_and_consent_show_state_the_tasks(
    optin_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = dirs()
    path = tmp_path / "study.toml"
    path.write_text(GOOD)
    study = install_study(d, path)
    sentence = (
        "This study asks you to do tasks from its list (2 tasks), or tasks that you describe in your own "
        "words. You start and end each task from the tray menu (“Start a task…”) or with `optin task`; "
        "giving a task up deletes its recording from this computer."
    )
    shown = dict(consent_view(study, d).sections)
    assert sentence in shown["What is recorded"]
    assert cli.main(["consent", "show"]) == 0
    assert f"  - {sentence}" in capsys.readouterr().out
    assert cli.main(["consent", "show", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["terms"]["tasks"]["mode"] == "both" and len(out["terms"]["tasks"]["list"]) == 2
    assert out["consent_sha256"] == study.terms_sha256


# --- every mistake names the file, the line, the key and the fix ----------------------------------------

L = FIRST + 1  # the [[task]] header line in task(...)

# (the file, the line the error names, a fragment of the message)
MISTAKES = [
    pytest.param(
        task('instruction = "x"\n'), L, "task[1] (a [[task]] entry) is missing id. Fix: add id = ", id="no-id"
    ),
    pytest.param(
        task('id = "t"\n'),
        L,
        "task[1] (a [[task]] entry) is missing instruction. Fix: add instruction",
        id="no-instruction",
    ),
    pytest.param(
        task('id = 7\ninstruction = "x"\n'),
        L + 1,
        "task[1].id must be a string of 1 to 64 lower-case",
        id="id-type",
    ),
    pytest.param(
        task('id = "Book"\ninstruction = "x"\n'),
        L + 1,
        "task[1].id is 'Book'; a task id is 1 to 64",
        id="id-upper",
    ),
    pytest.param(
        task('id = ""\ninstruction = "x"\n'), L + 1, "task[1].id is empty; a task id is", id="id-empty"
    ),
    pytest.param(
        task('id = "-a"\ninstruction = "x"\n'),
        L + 1,
        "starting with a letter or digit. Fix: an id such as",
        id="id-start",
    ),
    pytest.param(task(f'id = "{"a" * 65}"\ninstruction = "x"\n'), L + 1, "task[1].id is 'aaaa", id="id-long"),
    pytest.param(task('id = "a b"\ninstruction = "x"\n'), L + 1, "task[1].id is 'a b'", id="id-space"),
    pytest.param(task('id = "é"\ninstruction = "x"\n'), L + 1, "task[1].id is 'é'", id="id-accent"),
    pytest.param(
        task('id = "t"\ninstruction = ""\n'),
        L + 2,
        "task[1].instruction must be a non-empty string, not an empty one",
        id="instr-empty",
    ),
    pytest.param(
        task('id = "t"\ninstruction = "  \\n "\n'),
        L + 2,
        "task[1].instruction must be a non-empty string",
        id="instr-blank",
    ),
    pytest.param(
        task('id = "t"\ninstruction = ["x"]\n'),
        L + 2,
        "task[1].instruction must be a non-empty string, not an array",
        id="instr-type",
    ),
    pytest.param(
        task(f'id = "t"\ninstruction = "{"x" * (MAX_TASK_INSTRUCTION + 1)}"\n'),
        L + 2,
        "task[1].instruction has 2,001 characters; at most 2,000. Fix: a shorter instruction",
        id="instr-long",
    ),
    pytest.param(
        task('id = "t"\ninstruction = "x"\napp = ""\n'),
        L + 3,
        "task[1].app must be a non-empty string, not an empty one; leave app out",
        id="app-empty",
    ),
    pytest.param(
        task('id = "t"\ninstruction = "x"\napp = 3\n'),
        L + 3,
        "task[1].app must be a non-empty string, not an integer",
        id="app-type",
    ),
    pytest.param(
        task(f'id = "t"\ninstruction = "x"\napp = "{"a" * 201}"\n'),
        L + 3,
        "task[1].app has 201 characters; at most 200",
        id="app-long",
    ),
    pytest.param(
        task('id = "t"\ninstruction = "x"\napp = "Fire\\nfox"\n'),
        L + 3,
        "task[1].app has U+000A",
        id="app-newline",
    ),
    pytest.param(
        task('id = "t"\ninstruction = "x"\nurl = ""\n'),
        L + 3,
        "task[1].url must be a non-empty string, not an empty one; leave url out",
        id="url-empty",
    ),
    pytest.param(
        task(f'id = "t"\ninstruction = "x"\nurl = "https://e.org/{"u" * MAX_TASK_URL}"\n'),
        L + 3,
        "task[1].url has 2,062 characters; at most 2,048",
        id="url-long",
    ),
    pytest.param(
        task('id = "t"\ninstruction = "x"\ntime_limit_minutes = 0\n'),
        L + 3,
        "task[1].time_limit_minutes is 0; it must be from 1 to 1440 minutes",
        id="limit-0",
    ),
    pytest.param(
        task('id = "t"\ninstruction = "x"\ntime_limit_minutes = 1441\n'),
        L + 3,
        "task[1].time_limit_minutes is 1441; it must be from 1 to 1440",
        id="limit-high",
    ),
    pytest.param(
        task('id = "t"\ninstruction = "x"\ntime_limit_minutes = -5\n'),
        L + 3,
        "time_limit_minutes is -5",
        id="limit-negative",
    ),
    pytest.param(
        task('id = "t"\ninstruction = "x"\ntime_limit_minutes = 1.5\n'),
        L + 3,
        "task[1].time_limit_minutes must be a whole number of minutes from 1 to 1440, not a number; "
        "leave it out for no limit",
        id="limit-float",
    ),
    pytest.param(
        task('id = "t"\ninstruction = "x"\ntime_limit_minutes = "5"\n'),
        L + 3,
        "not a string; leave it out",
        id="limit-string",
    ),
    pytest.param(
        task('id = "t"\ninstruction = "x"\ntime_limit_minutes = true\n'),
        L + 3,
        "not a boolean",
        id="limit-bool",
    ),
    pytest.param(
        task('id = "t"\ninstruction = "x"\ntitle = "x"\n'),
        L + 3,
        "unknown key task[1].title; [[task]] has id, instruction, app, url, time_limit_minutes",
        id="unknown-key",
    ),
    pytest.param(
        task('id = "t"\ninstruction = "x"\ntime_limit = 5\n'),
        L + 3,
        "Did you mean time_limit_minutes?",
        id="unknown-key-suggest",
    ),
    pytest.param(
        task(mode="free"),
        L + 5,
        'tasks.mode is "free" but the file has 1 [[task]] entry, which would never be offered. '
        'Fix: mode = "both"',
        id="free-with-tasks",
    ),
    pytest.param(
        task(mode="off"),
        L + 5,
        'tasks.mode is "off" but the file has 1 [[task]] entry, which would never be offered. '
        'Fix: mode = "list" to offer them, or delete them',
        id="off-with-tasks",
    ),
    pytest.param(
        BASE + '\n[tasks]\nmode = "list"\n',
        L + 1,
        'tasks.mode is "list" but the file has no [[task]] entries: there is no list to pick from. '
        "Fix: add [[task]] entries",
        id="list-without-tasks",
    ),
    pytest.param(
        BASE + '\n[tasks]\nmode = "both"\n',
        L + 1,
        'tasks.mode is "both" but the file has no [[task]] entries',
        id="both-without-tasks",
    ),
    pytest.param(
        BASE + '\n[tasks]\nmode = "lists"\n',
        L + 1,
        'tasks.mode is \'lists\'; it must be one of "off", "list", "free", "both". Did you mean list?',
        id="mode-unknown",
    ),
    pytest.param(
        BASE + "\n[tasks]\nmode = 1\n", L + 1, "tasks.mode is an integer; it must be one of", id="mode-type"
    ),
    pytest.param(
        BASE + '\n[tasks]\nmodes = "free"\n',
        L + 1,
        "unknown key tasks.modes; [tasks] has mode, done_hotkey. Did you mean mode?",
        id="tasks-unknown-key",
    ),
    pytest.param(
        BASE + '\n[tasks]\nmode = "free"\ndone_hotkey = "<ctrl>+<alt>+p"\n',
        L + 2,
        "tasks.done_hotkey is the pause hotkey too. Fix: choose other keys",
        id="done-hotkey-is-pause",
    ),
    pytest.param(
        BASE + '\n[tasks]\nmode = "free"\ndone_hotkey = 5\n',
        L + 2,
        'tasks.done_hotkey must be a string such as "<ctrl>+<alt>+p", not an integer',
        id="done-hotkey-type",
    ),
    pytest.param(
        BASE + '\n[tasks]\nmode = "off"\ndone_hotkey = "<ctrl>+<alt>+d"\n',
        L + 2,
        "tasks.done_hotkey is set but the study has no tasks",
        id="done-hotkey-without-tasks",
    ),
    pytest.param(
        BASE + '\n[tasks]\nmode = "free"\ndone_hotkey = "d"\n',
        L + 2,
        "tasks.done_hotkey 'd'",
        id="done-hotkey-bad-keys",
    ),
    pytest.param(
        BASE + '\n[task]\nid = "t"\ninstruction = "x"\n',
        L,
        "task must be an array of tables: write [[task]] (two brackets)",
        id="single-brackets",
    ),
    pytest.param('task = "do it"\n' + BASE, 1, "task must be an array of tables", id="task-string"),
    pytest.param(
        BASE + '\n[[tasks]]\nmode = "list"\n',
        L,
        'tasks must be a table: write [tasks] on a line of its own, then mode = one of "off", "list", '
        '"free", "both" (each task is a [[task]] entry, singular)',
        id="double-brackets",
    ),
    pytest.param('tasks = "list"\n' + BASE, 1, "tasks must be a table", id="tasks-string"),
    pytest.param(
        BASE + '\n[taks]\nmode = "list"\n',
        L,
        "unknown table or key taks; a study file has [study], [[deny]], [retention], [capture], "
        "[redaction], [[task]], [tasks] and [upload]. Did you mean task",
        id="unknown-table",
    ),
]


@pytest.mark.parametrize(("text", "line", "fragment"), MISTAKES)
def test_each_task_mistake_names_file_line_key_and_fix(text: str, line: int, fragment: str) -> None:
    message = error_of(text)
    assert "\n" not in message, message  # exactly one problem
    assert message.startswith(f"study.toml:{line}: "), message
    assert fragment in message, message


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        (
            "javascript:alert(1)",
            "must be an http:// or https:// address, not an address of scheme 'javascript'",
        ),
        ("ftp://example.org/x", "not an address of scheme 'ftp'"),
        ("file:///etc/passwd", "not an address of scheme 'file'"),
        ("example.org/page", "not an address without a scheme"),
        ("https://", "has no host name after https://"),
        ("https:///path", "has no host name after https://"),
        ("https://example.org:99999/", "is not a web address that can be read"),
        ("https://[::1/", "is not a web address that can be read"),
        ("https://:443/", "is not a web address that can be read"),
        ("https://example.org:12a/", "is not a web address that can be read"),
        ("https:example.org", "has no host name after https://"),
        ("https://exa mple.org/", "has a space or line break in it"),
        ("https://alice:hunter2@example.org/", "holds a user name or password"),
        ("https://alice@example.org/", "holds a user name or password"),
    ],
)
def test_task_urls_are_http_or_https_addresses_never_quoted(url: str, fragment: str) -> None:
    message = error_of(task(f'id = "t"\ninstruction = "x"\nurl = "{url}"\n'))
    assert message.startswith(f"study.toml:{L + 3}: task[1].url "), message
    assert fragment in message and "Fix: " in message
    told = message.replace('"https://example.org/page"', "").replace(
        "after https://", ""
    )  # the fix's example
    assert url not in told and "hunter2" not in message and "alice" not in message


@pytest.mark.parametrize(
    "url",
    [
        "http://example.org",
        "HTTPS://EXAMPLE.ORG/A?b=c",
        "https://[::1]:8080/",
        "https://xn--bcher-kva.example/",
    ],
)
def test_task_urls_that_are_accepted(url: str) -> None:
    assert parse_study(task(f'id = "t"\ninstruction = "x"\nurl = "{url}"\n')).tasks[0].url == url


def test_duplicate_ids_name_both_entries() -> None:
    text = BASE + "".join(f'\n[[task]]\nid = "{i}"\ninstruction = "x"\n' for i in ("a", "b", "a", "a"))
    message = error_of(text)
    lines = message.split("\n")
    assert lines == [
        f"study.toml:{FIRST + 10}: task[3].id 'a' is also the id of task[1]; an id names its task in every "
        "export. Fix: give each task its own id",
        f"study.toml:{FIRST + 14}: task[4].id 'a' is also the id of task[1]; an id names its task in every "
        "export. Fix: give each task its own id",
    ]


def test_a_duplicate_is_found_even_when_its_entry_has_other_mistakes() -> None:
    text = BASE + '\n[[task]]\nid = "a"\ninstruction = "x"\n\n[[task]]\nid = "a"\ninstruction = 5\n'
    message = error_of(text)
    assert "task[2].id 'a' is also the id of task[1]" in message
    assert "task[2].instruction must be a non-empty string, not an integer" in message


def test_every_problem_of_every_task_is_listed_in_line_order() -> None:
    text = task('id = "Bad"\ninstruction = ""\nurl = "ftp://x"\ntime_limit_minutes = 0\n', mode="free")
    lines = error_of(text).split("\n")
    assert [int(line.split(":")[1]) for line in lines] == [L + 1, L + 2, L + 3, L + 4, L + 7]
    assert [line.split(" ")[1] for line in lines] == [
        "task[1].id",
        "task[1].instruction",
        "task[1].url",
        "task[1].time_limit_minutes",
        "tasks.mode",
    ]


def test_too_many_tasks_is_one_problem_naming_the_count() -> None:
    many = BASE + "".join(f'[[task]]\nid = "t{i}"\ninstruction = "Task {i}"\n' for i in range(MAX_TASKS + 1))
    message = error_of(many)
    assert message == (
        f"study.toml:{FIRST}: the file has 501 [[task]] entries; a study lists at most 500 (each is shown to "
        "the volunteer and bound into their consent). Fix: list fewer tasks, or split them across studies"
    )


def test_an_instruction_is_never_quoted_in_an_error() -> None:
    for body in (
        f'id = "t"\ninstruction = "{SECRET_WORDS} {"x" * MAX_TASK_INSTRUCTION}"\n',
        f'id = "t"\ninstruction = "{SECRET_WORDS}\\u202e"\n',
        f'id = "t"\ninstruction = "{SECRET_WORDS}"\ncolour = "red"\n',
    ):
        message = error_of(task(body))
        assert SECRET_WORDS not in message and "xxxxx" not in message, message


def test_the_error_names_the_file_as_given() -> None:
    assert error_of(task('id = "T"\ninstruction = "x"\n'), source="studies/web.toml").startswith(
        f"studies/web.toml:{L + 1}: task[1].id"
    )


def test_the_example_in_the_docs_parses_as_they_say() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "study.md").read_text(encoding="utf-8")
    section = doc.split("\n## Tasks\n", 1)[1].split("\n## ", 1)[0]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    study = parse_study(BASE + "\n" + example)
    assert study.tasks_mode == "both"
    assert [(t.id, t.url, t.app, t.time_limit_minutes) for t in study.tasks] == [
        ("book-flight", "https://example.org/flights", "", 15),
        ("rename-photos", "", "Files", None),
    ]
    assert f"A study lists at most {MAX_TASKS} tasks" in section


def test_a_done_hotkey_is_bound_by_consent_only_when_set() -> None:
    """The task-done keys are part of what the volunteer agrees to; a study without them keeps the
    consent hash it had before they existed (pinned above)."""
    plain = parse_study(BASE + '\n[tasks]\nmode = "free"\n')
    keyed = parse_study(BASE + '\n[tasks]\nmode = "free"\ndone_hotkey = "<ctrl>+<alt>+d"\n')
    assert "done_hotkey" not in plain.terms()["tasks"]
    assert keyed.task_done_hotkey == "<ctrl>+<alt>+d"
    assert keyed.terms()["tasks"]["done_hotkey"] == "<ctrl>+<alt>+d"
    assert keyed.terms_sha256 != plain.terms_sha256
