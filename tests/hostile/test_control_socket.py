"""P3 through the control socket: slow, flooding and malformed clients never make a pause wait.

A real Recorder on the fake backend serves the socket as ``optin run`` does (under the agent
lock).  Clients that connect and dribble, never send, never read their reply, flood past the
connection cap, send numbers no clock can hold (``seconds=1e308`` once broke ``status``) or
JSON nested thousands deep must each get a clear reply or be dropped, and ``pause`` from a
well-behaved client must still be answered at once.  ``OPTIN_FUZZ_ROUNDS`` sets the random rounds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import ipc
from agent.backends.fake import FakeBackend
from agent.control import Recorder
from agent.errors import OptinError
from agent.paths import Dirs, agent_lock
from agent.pausing import MAX_PAUSE_S
from tests.hostile.conftest import Tally, fuzz_rounds
from tests.tools import Consented

#: What the ``agent`` fixture gives: the store's dirs and the recorder serving the socket.
Agent = tuple[Dirs, Recorder]

PROMISE = "P3 pause never waits"
SOCKET = "P3 control socket keeps serving"
SEED = 4_212
#: A generous "does not hang" bound for one request (measured: a few milliseconds).
ANSWER_S = 1.0


@pytest.fixture
def agent(consented: Consented) -> Iterator[Agent]:
    d, study = consented
    rec = Recorder(d, FakeBackend(), study)
    with agent_lock(d), ipc.ControlServer(d, rec):
        rec.start()
        try:
            yield d, rec
        finally:
            rec.stop()


def _connect(d: Dirs) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(ipc.socket_path(d)))
    return s


def _timed(d: Dirs, op: str, **args: object) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    reply = ipc.request(d, op, timeout=5, **args)
    return reply, time.perf_counter() - started


def test_p3_slow_and_silent_clients_never_make_pause_busy(agent: Agent, hostile: Tally) -> None:
    d, rec = agent
    stop = threading.Event()
    slow: list[socket.socket] = []

    def dribble() -> None:
        while not stop.is_set():
            for s in list(slow):
                with contextlib.suppress(OSError):
                    s.send(b" ")
            time.sleep(0.05)

    try:
        for _ in range(ipc.MAX_PENDING - 8):  # many more than the four of the issue
            slow.append(_connect(d))
        for _ in range(4):
            slow.append(_connect(d))  # silent ones too
        dribbler = threading.Thread(target=dribble)
        dribbler.start()
        for op in ("pause", "resume", "pause", "status"):
            hostile.tried(PROMISE)
            reply, took = _timed(d, op)
            assert reply["ok"] is True and took < ANSWER_S, (op, took)
            hostile.held(PROMISE)
        assert rec.state == "paused"
        print(f"pause answered beside {len(slow)} slow clients in {took * 1000:.1f} ms")
    finally:
        stop.set()
        for s in slow:
            s.close()


def test_p3_a_flood_past_the_cap_is_refused_at_once_and_pause_still_answered(
    agent: Agent, hostile: Tally
) -> None:
    d, rec = agent
    held: list[socket.socket] = []
    try:
        for _ in range(ipc.MAX_PENDING):
            held.append(_connect(d))
        time.sleep(0.1)  # let the selector take them all
        hostile.tried(SOCKET)
        extra = _connect(d)
        extra.settimeout(ANSWER_S)
        started = time.perf_counter()
        reply = json.loads(extra.recv(4096))
        extra.close()
        assert reply["ok"] is False and "busy" in reply["error"]
        assert time.perf_counter() - started < ANSWER_S
        hostile.held(SOCKET)
    finally:
        for s in held:
            s.close()
    hostile.tried(PROMISE)
    deadline = time.monotonic() + 5  # the closed ones leave the selector at its next round
    while True:
        try:
            reply, _took = _timed(d, "pause")
            break
        except ipc.AgentError:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    assert reply["ok"] is True and rec.state == "paused"
    hostile.held(PROMISE)


def test_p3_clients_that_never_read_their_replies_hold_nothing(agent: Agent, hostile: Tally) -> None:
    d, _rec = agent
    deaf = []
    try:
        for _ in range(ipc.MAX_CONTROL * 2):
            s = _connect(d)
            s.sendall(b'{"v": 1, "op": "status"}\n')
            deaf.append(s)  # never reads
        hostile.tried(PROMISE)
        reply, took = _timed(d, "pause")
        assert reply["ok"] is True and took < ANSWER_S
        hostile.held(PROMISE)
    finally:
        for s in deaf:
            s.close()


@pytest.mark.parametrize(
    "line",
    [
        b'{"v": 1, "op": "pause", "seconds": 1e308}',
        b'{"v": 1, "op": "pause", "seconds": 1e309}',
        b'{"v": 1, "op": "pause", "seconds": -0.0}',
        b'{"v": 1, "op": "pause", "seconds": 1' + b"0" * 300 + b"}",
        b'{"v": 1, "op": "pause", "seconds": Infinity}',
        b'{"v": 1, "op": "delete_last", "seconds": 1e308}',
        b'{"v": 1, "op": "delete_last", "seconds": 5e-324}',
        b'{"v": 1, "op": "status", "x": ' + b"[" * 30_000 + b"]" * 30_000 + b"}",
        b'{"v": 1, "op": "exclude", "title": "(?=lookahead)"}',
        b'{"v": 1, "op": "exclude", "title": "' + b"(" * 500 + b'"}',
    ],
)
def test_p3_numbers_and_nesting_no_clock_or_parser_can_hold_get_a_clear_reply(
    agent: Agent, hostile: Tally, line: bytes
) -> None:
    d, rec = agent
    hostile.tried(SOCKET)
    reply = ipc.exchange(ipc.socket_path(d), line + b"\n", timeout=5)
    if reply["ok"] is False:
        assert reply["error"] and reply["exit"] in (1, 2) and "internal error" not in reply["error"]
    status = ipc.request(d, "status")["status"]  # the agent keeps serving, and status still works
    json.dumps(rec.status(), allow_nan=False)
    assert status["state"] in ("recording", "paused")
    if reply["ok"] is False:
        hostile.held(SOCKET)
    else:  # the tiniest positive deletion is a real (empty) request: fine, and status still works
        assert b"delete_last" in line
        hostile.held(SOCKET)


def test_p3_the_longest_allowed_pause_shows_its_end(agent: Agent, hostile: Tally) -> None:
    d, _rec = agent
    hostile.tried(SOCKET)
    status = ipc.request(d, "pause", seconds=MAX_PAUSE_S)["status"]
    assert status["state"] == "paused" and status["paused_until"].endswith("Z")
    with pytest.raises(ipc.AgentError, match="at most"):
        ipc.request(d, "pause", seconds=MAX_PAUSE_S * 2)
    hostile.held(SOCKET)


def _mutations(rng: random.Random) -> Iterator[bytes]:
    valid = [
        b'{"v": 1, "op": "status"}',
        b'{"v": 1, "op": "pause", "seconds": 900}',
        b'{"v": 1, "op": "resume"}',
        b'{"v": 1, "op": "exclude", "app_class": "KeePassXC"}',
        b'{"v": 1, "op": "task_start", "instruction": "Book a flight"}',
        b'{"v": 1, "op": "task_status"}',
    ]
    values = [b"null", b"true", b"1e308", b"-1", b'"x"', b"[]", b"{}", b'"\\ud800"', b"0", b"1e-400"]
    while True:
        base = bytearray(rng.choice(valid))
        kind = rng.randrange(5)
        if kind == 0:
            for _ in range(rng.randint(1, 4)):
                base[rng.randrange(len(base))] ^= 1 << rng.randrange(8)
        elif kind == 1:
            base = base[: rng.randrange(len(base))]
        elif kind == 2:
            base = bytearray(b'{"v": 1, "op": "pause", "seconds": ' + rng.choice(values) + b"}")
        elif kind == 3:
            depth = rng.randint(1, 5000)
            base = bytearray(b'{"v": 1, "op": "status", "x": ' + b"[" * depth + b"]" * depth + b"}")
        else:
            base = bytearray(rng.randbytes(rng.randint(0, 300)))
        yield bytes(base).replace(b"\n", b" ") + b"\n"


def test_p3_random_requests_each_get_one_reply_and_the_agent_keeps_serving(
    agent: Agent, hostile: Tally
) -> None:
    d, rec = agent
    rng = random.Random(SEED)  # noqa: S311 - reproducible test inputs, not secrets
    gen = _mutations(rng)
    for round_ in range(fuzz_rounds(120)):
        line = next(gen)
        hostile.tried(SOCKET)
        try:
            reply = ipc.exchange(ipc.socket_path(d), line, timeout=5)
        except OptinError as exc:  # only an empty line may be closed without a reply
            pytest.fail(f"round {round_}: no reply to {line[:60]!r}: {exc}")
        assert isinstance(reply.get("ok"), bool), (round_, line[:60])
        if reply["ok"] is False:
            assert "internal error" not in reply["error"], (round_, line[:60], reply)
        hostile.held(SOCKET)
    assert rec.state in ("recording", "paused")
    reply, took = _timed(d, "pause")
    assert reply["ok"] is True and took < ANSWER_S


def test_p3_a_failure_inside_the_socket_thread_never_ends_it(
    agent: Agent, monkeypatch: pytest.MonkeyPatch, hostile: Tally
) -> None:
    """An unexpected error while reading one request, or no thread for its handler, costs that
    request only: the next pause is still answered (the one selector thread must never end)."""
    d, rec = agent
    real_read = ipc.ControlServer._read
    calls = {"n": 0}

    def read_once_broken(self, item, sel, pending) -> None:  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            msg = "a bug while reading"
            raise ValueError(msg)
        real_read(self, item, sel, pending)

    monkeypatch.setattr(ipc.ControlServer, "_read", read_once_broken)
    hostile.tried(SOCKET)
    with _connect(d) as broken:
        broken.sendall(b'{"v": 1, "op": "status"}\n')
        broken.settimeout(ANSWER_S * 5)
        answer = json.loads(broken.makefile("rb").readline())
    assert not answer["ok"] and answer["error"].startswith("internal error")  # that request only
    reply, took = _timed(d, "pause")
    assert reply["ok"] and rec.state == "paused" and took < ANSWER_S
    hostile.held(SOCKET)

    real_start = threading.Thread.start

    def no_thread(self: threading.Thread) -> None:
        if self.name == "optin-control-conn":
            msg = "can't start new thread"
            raise RuntimeError(msg)
        real_start(self)

    hostile.tried(SOCKET)
    monkeypatch.setattr(threading.Thread, "start", no_thread)
    for _ in range(12):  # more than the slots: each failure gave its slot back
        with pytest.raises(ipc.AgentError, match="busy"):
            ipc.request(d, "resume", timeout=5)
    monkeypatch.setattr(threading.Thread, "start", real_start)
    reply, took = _timed(d, "resume")
    assert reply["ok"] and rec.state == "recording" and took < ANSWER_S
    hostile.held(SOCKET)


# --- tasks (issue 16): a volunteer's instruction is captured text ---------------------------------

TASK_TEXT = "P5 task instruction never echoed"
#: Stands for the volunteer's words: no reply, status or log may hold it.
WORDS = "Zorblax-4411"


@pytest.fixture
def task_agent(tmp_path: Path) -> Iterator[Agent]:
    """A recorder whose study offers its task list and free instructions, serving the socket."""
    from pyrage import x25519

    from agent import consent
    from agent.paths import dirs
    from agent.store import keys
    from agent.study import demo_study_toml, install_study

    path = tmp_path / "tasks.toml"
    text = demo_study_toml(str(x25519.Identity.generate().to_public()))
    path.write_text(
        text + '\n[tasks]\nmode = "both"\n\n[[task]]\nid = "rename"\ninstruction = "Rename a file"\n'
    )
    d = dirs()
    study = install_study(d, path)
    consent.grant(d, study, study.terms_sha256)
    keys.init_keys(d)
    rec = Recorder(d, FakeBackend(), study)
    with agent_lock(d), ipc.ControlServer(d, rec):
        rec.start()
        try:
            yield d, rec
        finally:
            rec.stop()


def _task_line(value: bytes, key: bytes = b"instruction") -> bytes:
    return b'{"v": 1, "op": "task_start", "' + key + b'": ' + value + b"}\n"


@pytest.mark.parametrize(
    "line",
    [
        _task_line(b'"' + WORDS.encode() + b" " + b"x" * (64 * 1024) + b'"'),  # past the request limit
        _task_line(b'"' + WORDS.encode() + b" " + b"x" * (60 * 1024) + b'"'),  # within it, too long
        _task_line(b'"' + WORDS.encode() + b'\\u202e"'),  # bidi override
        _task_line(b'"' + WORDS.encode() + b'\\u2028next"'),  # line separator
        _task_line(b'"' + WORDS.encode() + b'\\u001b[2J"'),  # terminal escape
        _task_line(b'"' + WORDS.encode() + b'\\u0000"'),  # NUL
        _task_line(b'"' + WORDS.encode() + b'\\ud800"'),  # a lone surrogate
        _task_line(b'"' + WORDS.encode() + b'\\u200b"'),  # zero width
        _task_line(b"123"),
        _task_line(b"true"),
        _task_line(b'["' + WORDS.encode() + b'"]'),
        _task_line(b'{"text": "' + WORDS.encode() + b'"}'),
        _task_line(b'"' + WORDS.encode() + b'"', key=b"id"),  # not one of the study's
        _task_line(b'"' + WORDS.encode() + b'\\u202e"', key=b"id"),
        _task_line(b'"' + b"a" * 5000 + b'"', key=b"id"),
        b'{"v": 1, "op": "task_start", "id": "rename", "instruction": "' + WORDS.encode() + b'"}\n',
        b'{"v": 1, "op": "task_done", "instruction": "' + WORDS.encode() + b'"}\n',
    ],
)
def test_p5_hostile_task_requests_are_refused_without_echo_and_start_nothing(
    task_agent: Agent, hostile: Tally, caplog: pytest.LogCaptureFixture, line: bytes
) -> None:
    d, rec = task_agent
    caplog.set_level(logging.DEBUG)
    hostile.tried(TASK_TEXT)
    session = rec.session_id
    reply, took = _timed_raw(d, line)
    assert reply["ok"] is False and reply["exit"] == 2, reply
    assert "internal error" not in reply["error"] and WORDS not in reply["error"]
    assert took < ANSWER_S
    assert rec.task_status()["running"] is None and rec.session_id == session  # nothing was sealed
    status = ipc.request(d, "status")["status"]
    assert status["task"] is None and WORDS not in json.dumps(status)
    assert WORDS not in caplog.text and WORDS not in (d.runtime / "status.json").read_text()
    hostile.held(TASK_TEXT)


def test_p5_a_task_started_over_the_socket_keeps_its_words_out_of_replies_and_status(
    task_agent: Agent, hostile: Tally, caplog: pytest.LogCaptureFixture
) -> None:
    d, rec = task_agent
    caplog.set_level(logging.DEBUG)
    hostile.tried(TASK_TEXT)
    words = f"{WORDS} " + "y" * 900  # near the longest allowed
    started = ipc.request(d, "task_start", instruction=words)["task"]
    assert started["source"] == "volunteer" and WORDS not in json.dumps(started)
    for op in ("status", "task_status"):
        assert WORDS not in json.dumps(ipc.request(d, op))
    assert WORDS not in (d.runtime / "status.json").read_text()
    ended = ipc.request(d, "task_abandon")["ended"]
    assert ended["outcome"] == "abandoned" and WORDS not in json.dumps(ended)
    assert WORDS not in caplog.text
    assert not (d.sessions / started["session"]).exists()
    assert rec.state == "recording"
    hostile.held(TASK_TEXT)


def _timed_raw(d: Dirs, line: bytes) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    reply = ipc.exchange(ipc.socket_path(d), line, timeout=5)
    return reply, time.perf_counter() - started


# --- task_abandon's task_id: which task the volunteer gives up --------------------------------------

GIVE_UP = "P8 a give-up deletes only the task meant"


def _abandon_line(value: bytes, op: bytes = b"task_abandon") -> bytes:
    return b'{"v": 1, "op": "' + op + b'", "task_id": ' + value + b"}\n"


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        (_abandon_line(b"5"), "task_id must be a non-empty string"),
        (_abandon_line(b"true"), "task_id must be a non-empty string"),
        (_abandon_line(b'""'), "task_id must be a non-empty string"),
        (_abandon_line(b'["rename"]'), "task_id must be a non-empty string"),
        (_abandon_line(b'{"id": "rename"}'), "task_id must be a non-empty string"),
        (_abandon_line(b'"' + WORDS.encode() + b"x" * 60 + b'"'), "at most 64 printable ASCII"),
        (_abandon_line(b'"' + WORDS.encode() + b" " + b"x" * (60 * 1024) + b'"'), "at most 64"),
        (_abandon_line(b'"' + WORDS.encode() + b" " + b"x" * (64 * 1024) + b'"'), "request too large"),
        (_abandon_line(b'"' + WORDS.encode() + b'\\u202e"'), "printable ASCII"),
        (_abandon_line(b'"' + WORDS.encode() + b'\\u001b[2J"'), "printable ASCII"),
        (_abandon_line(b'"' + WORDS.encode() + b'\\u0000"'), "printable ASCII"),
        (_abandon_line(b'"' + WORDS.encode() + b'\\ud800"'), "printable ASCII"),
        (_abandon_line(b'"' + WORDS.encode() + b'\\u00e9"'), "printable ASCII"),
        (_abandon_line(b"[" * 5000 + b"]" * 5000), "nested deeper"),
        (_abandon_line(b'"' + WORDS.encode() + b'"'), "an id of 12 characters"),  # no such task
        (_abandon_line(b'"rename"', op=b"task_done"), "no argument named"),
        (_abandon_line(b'"rename"', op=b"task_status"), "no argument named"),
    ],
)
def test_p8_hostile_give_up_requests_delete_nothing_and_echo_nothing(
    task_agent: Agent, hostile: Tally, caplog: pytest.LogCaptureFixture, line: bytes, needle: str
) -> None:
    d, rec = task_agent
    caplog.set_level(logging.DEBUG)
    hostile.tried(GIVE_UP)
    started = ipc.request(d, "task_start", id="rename")["task"]
    reply, took = _timed_raw(d, line)
    assert reply["ok"] is False and reply["exit"] == 2, reply
    assert needle in reply["error"] and WORDS not in reply["error"]
    assert took < ANSWER_S
    running = rec.task_status()["running"]
    assert running is not None and running["session"] == started["session"] == rec.session_id
    assert (d.sessions / started["session"]).is_dir()
    assert WORDS not in caplog.text
    hostile.held(GIVE_UP)


def test_p8_a_give_up_of_a_task_that_ended_never_deletes_the_next_one(
    task_agent: Agent, hostile: Tally
) -> None:
    """The race of the tray's dialog, over the socket: the task meant ended and another started."""
    d, rec = task_agent
    hostile.tried(GIVE_UP)
    first = ipc.request(d, "task_start", id="rename")["task"]
    ipc.request(d, "task_done")
    second = ipc.request(d, "task_start", instruction="another task")["task"]
    with pytest.raises(ipc.AgentError, match=f"optin sessions delete {first['session']}") as refused:
        ipc.request(d, "task_abandon", task_id="rename")
    assert refused.value.exit_code == 2
    assert rec.task_status()["running"]["id"] == second["id"]
    assert (d.sessions / first["session"]).is_dir() and (d.sessions / second["session"]).is_dir()
    ended = ipc.request(d, "task_abandon", task_id=second["id"])["ended"]  # the one meant: deleted
    assert ended["outcome"] == "abandoned" and not (d.sessions / second["session"]).exists()
    hostile.held(GIVE_UP)
