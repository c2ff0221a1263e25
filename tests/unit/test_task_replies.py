"""The largest replies a valid study can make fit the control socket (issue 16, review finding 4).

``optin task status`` lists the study's tasks over the socket.  A study file may have
:data:`agent.study.MAX_STUDY_BYTES` and :data:`agent.study.MAX_TASKS` tasks; as JSON, a ``"``, ``\\``,
tab or line break written as one byte in a TOML literal string takes two, and an ASCII-escaped CJK
character six bytes (an astral one twelve).  The studies built here are the largest the study check
accepts, filled with each of those, and served by a real recorder on a real socket: the command line
must show every task (its text escaped where a terminal would act on it), and the reply must fit
:data:`agent.ipc.MAX_REPLY`.  A reply that would not fit is refused by the agent with a message, not
cut or dropped.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent import cli, consent, ipc
from agent.control import Recorder
from agent.ipc_protocol import encode
from agent.paths import Dirs, agent_lock, dirs
from agent.store import keys
from agent.study import (
    MAX_STUDY_BYTES,
    MAX_TASK_APP,
    MAX_TASK_INSTRUCTION,
    MAX_TASKS,
    Study,
    demo_study_toml,
    install_study,
)
from tests.tools import fake_backend

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="Windows serves no control socket")

#: The old bound, which a valid study's task list could pass.
OLD_MAX_REPLY = 1024 * 1024


def _escapes(n: int, seed: int) -> str:
    """``n`` characters that cost 1 byte in a TOML literal string and 2 in JSON."""
    cycle = '\\"\t\n'
    return "".join(cycle[(seed + i) % 4] for i in range(n))


def _cjk(n: int, seed: int) -> str:
    return "".join(chr(0x4E00 + (seed * 7 + i) % 0x5000) for i in range(n))


def _astral(n: int, seed: int) -> str:  # CJK Extension B: letters, 4 bytes in UTF-8
    return "".join(chr(0x20000 + (seed * 7 + i) % 0xA000) for i in range(n))


#: filler name -> (characters for a task's instruction, UTF-8 bytes per character, TOML quote)
FILLERS: dict[str, tuple[Callable[[int, int], str], int, str]] = {
    "escapes": (_escapes, 1, "'''"),
    "cjk": (_cjk, 3, '"'),
    "astral": (_astral, 4, '"'),
}


def _largest_study_text(recipient: str, filler: str) -> str:
    """A study file of almost exactly :data:`MAX_STUDY_BYTES` with :data:`MAX_TASKS` tasks whose text
    is all ``filler``; the ``escapes`` filler also fills each task's ``app`` hint."""
    make, width, quote = FILLERS[filler]
    head = demo_study_toml(recipient) + '\n[tasks]\nmode = "list"\n'
    frame = "\n[[task]]\nid = 't{i:03d}'\ninstruction = {q}{text}{q}\ntime_limit_minutes = 1440\n"
    overhead = len(frame.format(i=0, q=quote, text="").encode())
    room = (MAX_STUDY_BYTES - len(head.encode())) // MAX_TASKS - overhead
    chars = min(MAX_TASK_INSTRUCTION, room // width)
    app_chars = 0
    if filler == "escapes":  # what is left goes into app = '\"\"…' (no tab or line break there)
        app_chars = min(MAX_TASK_APP, room - chars - len("app = ''\n"))
    parts = [head]
    for i in range(MAX_TASKS):
        text = make(chars, i)
        if filler == "escapes" and text.startswith("\n"):
            text = "\\" + text[1:]  # a line break right after ''' is dropped by TOML
        parts.append(frame.format(i=i, q=quote, text=text))
        if app_chars > 0:
            parts.append("app = '" + '\\"' * (app_chars // 2) + "'\n")
    return "".join(parts)


@pytest.fixture(params=sorted(FILLERS))
def largest(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Dirs, Study, Recorder, str]]:
    """A recorder serving the socket with the largest study of one filler, a task done and one running."""
    from pyrage import x25519

    # A consent receipt holds the study's terms, tasks included: the largest study's receipt must be
    # written and read back unchanged (it once was refused on reading, past 256 KiB).

    filler = str(request.param)
    path = tmp_path / f"largest-{filler}.toml"
    path.write_text(
        _largest_study_text(str(x25519.Identity.generate().to_public()), filler), encoding="utf-8"
    )
    assert MAX_STUDY_BYTES - 4096 < path.stat().st_size <= MAX_STUDY_BYTES
    d = dirs()
    study = install_study(d, path)  # the study check accepts it
    assert len(study.tasks) == MAX_TASKS
    consent.grant(d, study, study.terms_sha256)
    keys.init_keys(d)
    rec = Recorder(d, fake_backend(), study)
    with agent_lock(d), ipc.ControlServer(d, rec):
        rec.start()
        try:
            rec.start_task(task_id="t000")
            rec.finish_task("done")  # "last" is filled in
            rec.start_task(task_id="t499")  # and "running"
            yield d, study, rec, filler
        finally:
            rec.stop()


def test_task_status_of_the_largest_valid_study_fits_the_socket(
    largest: tuple[Dirs, Study, Recorder, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _d, study, rec, filler = largest
    reply = {"v": ipc.PROTOCOL_VERSION, "ok": True, "tasks": rec.task_status()}
    line = encode(reply)
    assert len(line) <= ipc.MAX_REPLY
    escaped = json.dumps(reply, separators=(",", ":")).encode() + b"\n"  # as the wire was
    if filler == "escapes":
        assert len(line) > OLD_MAX_REPLY  # the old bound could not carry it
    else:
        assert len(escaped) > OLD_MAX_REPLY  # nor the old escaping
    if filler == "astral":
        assert len(escaped) > ipc.MAX_REPLY  # escaped, no bound of twice the file would do

    assert cli.main(["task", "status", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["tasks"] == [t.to_json() for t in study.tasks]
    assert shown["running"]["id"] == "t499" and shown["last"]["id"] == "t000"

    assert cli.main(["task", "status"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[1].startswith("running: t499") and lines[2].startswith("last: task t000 done")
    task_lines = lines[3:]
    assert len(task_lines) == MAX_TASKS  # one line each: a line break in an instruction is escaped
    assert "\t" not in out
    for task, shown_line in zip(study.tasks, task_lines, strict=True):
        assert shown_line.startswith(f"  {task.id} [1440 min]: ")
        assert len(shown_line) <= len(f"  {task.id} [1440 min]: ") + 200  # cut for the terminal
    if filler == "escapes":
        assert "\\u0009" in out and "\\u000a" in out  # shown, not acted on


def test_a_reply_longer_than_the_bound_is_refused_by_the_agent_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should a reply ever outgrow the bound, the agent says so instead of sending a line the command
    line cannot read."""
    from pyrage import x25519

    path = tmp_path / "study.toml"
    path.write_text(
        demo_study_toml(str(x25519.Identity.generate().to_public())) + '\n[tasks]\nmode = "free"\n'
    )
    d = dirs()
    study = install_study(d, path)
    consent.grant(d, study, study.terms_sha256)
    keys.init_keys(d)
    rec = Recorder(d, fake_backend(), study)
    with agent_lock(d), ipc.ControlServer(d, rec):
        rec.start()
        try:
            huge = {"mode": "free", "free": True, "tasks": [], "running": None, "last": "a" * ipc.MAX_REPLY}
            with monkeypatch.context() as patched:
                patched.setattr(rec, "task_status", lambda: huge)
                assert cli.main(["task", "status"]) == 1
            err = capsys.readouterr().err
            assert f"more than the {ipc.MAX_REPLY} a reply may have" in err and "aaaa" not in err
            assert cli.main(["task", "status"]) == 0  # the agent serves on
        finally:
            rec.stop()


def test_a_reply_is_utf8_and_a_lone_surrogate_falls_back_to_escapes() -> None:
    reply = {"v": 1, "ok": True, "tasks": {"tasks": [{"id": "t", "instruction": "飛行機を予約する 𠀀"}]}}
    line = encode(reply)
    assert "飛行機".encode() in line and b"\\u" not in line  # 3 bytes a character, not 6
    assert json.loads(line) == reply
    odd = {"v": 1, "ok": True, "rule": {"title": "a\ud800b"}}  # a request can carry one as \ud800
    line = encode(odd)
    assert line.isascii() and b"\\ud800" in line and json.loads(line) == odd
