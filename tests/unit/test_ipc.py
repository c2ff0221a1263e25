"""The control socket (agent/ipc.py) over a real Unix socket, and the commands that use it.

A fake controller stands in for the Recorder.  The other-user tests fork a child
that becomes ``nobody`` (root only; skipped with the reason locally, failed with
CI=true) and reports what it saw through a pipe.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import shutil
import signal
import socket
import stat
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import cli, ipc
from agent.cli.recording import start_control
from agent.errors import UsageError
from agent.paths import Dirs, agent_lock, dirs
from tests.tools import unavailable

if sys.platform == "win32":
    pytest.skip("Windows has no Unix sockets: the agent serves no control socket", allow_module_level=True)

CANARY = "CANARY-TYPED-hunter2"  # stands for captured content: must never be echoed or logged


class FakeController:
    """Records every call; answers like the Recorder would, without capture."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.state = "recording"
        self.reason: str | None = None
        self.paused_until: str | None = None
        self.fail_with: BaseException | None = None
        self.resume_refused = False

    def _called(self, name: str, **kw: Any) -> None:
        self.calls.append((name, kw))
        if self.fail_with is not None:
            raise self.fail_with

    def status(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "reason": self.reason,
            "error": None,
            "pid": os.getpid(),
            "session": "20250101T000000Z-0a1b2c3d",
            "study": "demo",
            "events_written": 5,
            "dropped": 0,
            "paused_until": self.paused_until,
        }

    def pause(self, reason: str = "volunteer", *, seconds: float | None = None) -> None:
        self._called("pause", reason=reason, seconds=seconds)
        self.state, self.reason = "paused", reason
        self.paused_until = "resumed" if seconds is None else "2025-01-01T14:05:00Z"

    def resume(self) -> None:
        self._called("resume")
        if self.resume_refused:
            self.state, self.reason = "paused", "no indicator"
            return
        self.state, self.reason, self.paused_until = "recording", None, None

    def delete_last(self, seconds: float) -> dict[str, Any]:
        self._called("delete_last", seconds=seconds)
        return {
            "range_start": "2025-01-01T13:50:00Z",
            "range_end": "2025-01-01T14:00:00Z",
            "seconds": seconds,
            "segments": 3,
            "bytes": 3000,
            "deleted": [{"session_id": "S2", "reason": "delete-last", "segments": 2, "bytes": 2000}],
            "trimmed": [
                {
                    "session_id": "S1",
                    "segments": 1,
                    "bytes": 1000,
                    "kept_segments": 4,
                    "kept_until": "2025-01-01T13:49:00Z",
                }
            ],
        }

    def exclude(self, *, app_class: str | None = None, title: str | None = None) -> dict[str, Any]:
        self._called("exclude", app_class=app_class, title=title)
        if app_class is None and title is None:
            return {"app_class": "Focused-App", "title": None}
        return {"app_class": app_class, "title": title}

    def start_task(self, task_id: str | None = None, instruction: str | None = None) -> dict[str, Any]:
        self._called("start_task", task_id=task_id, instruction=instruction)
        return {"id": task_id or "free-0a1b2c3d", "source": "study" if task_id else "volunteer"}

    def finish_task(self, outcome: str) -> dict[str, Any]:
        self._called("finish_task", outcome=outcome)
        return {"id": "t", "outcome": outcome, "seconds": 1.5}

    def abandon_task(self, expected_id: str | None = None) -> dict[str, Any]:
        self._called("abandon_task", **({} if expected_id is None else {"expected_id": expected_id}))
        return {"id": "t", "outcome": "abandoned", "seconds": 2.0, "deleted": {"session_id": "S3"}}

    def task_status(self) -> dict[str, Any]:
        self._called("task_status")
        return {"mode": "both", "free": True, "tasks": [], "running": None, "last": None}


@pytest.fixture
def d() -> Dirs:
    return dirs()


@pytest.fixture
def fake() -> FakeController:
    return FakeController()


@pytest.fixture
def server(d: Dirs, fake: FakeController) -> Iterator[ipc.ControlServer]:
    """A control server for ``fake``, started while holding the agent lock, as ``optin run`` does."""
    with agent_lock(d):
        srv = ipc.ControlServer(d, fake)
        srv.start()
        try:
            yield srv
        finally:
            srv.stop()


def raw(d: Dirs, data: bytes) -> dict[str, Any]:
    return ipc.exchange(ipc.socket_path(d), data, timeout=5)


# --- the protocol ----------------------------------------------------------------------------------


def test_every_op_round_trips(d: Dirs, fake: FakeController, server: ipc.ControlServer) -> None:
    reply = ipc.request(d, "status")
    assert reply["ok"] is True and reply["v"] == 1 and reply["status"]["state"] == "recording"

    assert ipc.request(d, "pause", seconds=900)["status"]["state"] == "paused"
    assert fake.calls[-1] == ("pause", {"reason": "volunteer", "seconds": 900.0})
    ipc.request(d, "pause", seconds=None)
    assert fake.calls[-1] == ("pause", {"reason": "volunteer", "seconds": None})
    ipc.request(d, "pause")
    assert fake.calls[-1] == ("pause", {"reason": "volunteer", "seconds": None})

    assert ipc.request(d, "resume")["status"]["state"] == "recording"
    assert fake.calls[-1] == ("resume", {})

    deleted = ipc.request(d, "delete_last", seconds=600)["deleted"]
    assert deleted["segments"] == 3 and fake.calls[-1] == ("delete_last", {"seconds": 600.0})

    assert ipc.request(d, "exclude", app_class="KeePassXC")["rule"]["app_class"] == "KeePassXC"
    assert fake.calls[-1] == ("exclude", {"app_class": "KeePassXC", "title": None})
    ipc.request(d, "exclude", title="*Private Browsing*")
    assert fake.calls[-1] == ("exclude", {"app_class": None, "title": "*Private Browsing*"})
    assert ipc.request(d, "exclude")["rule"] == {"app_class": "Focused-App", "title": None}
    assert fake.calls[-1] == ("exclude", {"app_class": None, "title": None})

    assert ipc.request(d, "task_start", id="find-flight")["task"]["id"] == "find-flight"
    assert fake.calls[-1] == ("start_task", {"task_id": "find-flight", "instruction": None})
    assert ipc.request(d, "task_start", instruction="Book a flight")["task"]["source"] == "volunteer"
    assert fake.calls[-1] == ("start_task", {"task_id": None, "instruction": "Book a flight"})
    assert ipc.request(d, "task_done")["ended"]["outcome"] == "done"
    assert fake.calls[-1] == ("finish_task", {"outcome": "done"})
    assert ipc.request(d, "task_fail")["ended"]["outcome"] == "failed"
    assert fake.calls[-1] == ("finish_task", {"outcome": "failed"})
    assert ipc.request(d, "task_abandon")["ended"]["deleted"] == {"session_id": "S3"}
    assert fake.calls[-1] == ("abandon_task", {})
    assert ipc.request(d, "task_abandon", task_id="free-0a1b2c3d")["ended"]["outcome"] == "abandoned"
    assert fake.calls[-1] == ("abandon_task", {"expected_id": "free-0a1b2c3d"})
    assert ipc.request(d, "task_status")["tasks"]["mode"] == "both"
    assert fake.calls[-1] == ("task_status", {})


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        (b"this is not json\n", "malformed request"),
        (b"[1, 2]\n", "malformed request"),
        (b"\xff\xfe\n", "malformed request"),
        (b"\n", "malformed request"),
        (b'{"op": "status"}\n', "protocol version 1"),
        (b'{"v": 2, "op": "status"}\n', "protocol version 1"),
        (b'{"v": true, "op": "status"}\n', "protocol version 1"),
        (b'{"v": 1, "op": "format_disk"}\n', "unknown request"),
        (b'{"v": 1}\n', "unknown request"),
        (b'{"v": 1, "op": "status", "extra": 1}\n', "no argument named"),
        (b'{"v": 1, "op": "pause", "seconds": -5}\n', "positive"),
        (b'{"v": 1, "op": "pause", "seconds": true}\n', "a number"),
        (b'{"v": 1, "op": "pause", "seconds": "15m"}\n', "a number"),
        (b'{"v": 1, "op": "pause", "seconds": NaN}\n', "malformed request"),
        (b'{"v": 1, "op": "pause", "seconds": 1e999}\n', "positive"),
        (b'{"v": 1, "op": "pause", "seconds": 1e308}\n', "at most 2.592e+06 s"),  # broke status once
        (b'{"v": 1, "op": "pause", "seconds": 1' + b"0" * 400 + b"}\n", "at most"),
        (b'{"v": 1, "op": "delete_last", "seconds": 1e308}\n', "at most"),
        (b'{"v": 1, "op": "status", "x": ' + b"[" * 20_000 + b"]" * 20_000 + b"}\n", "nested deeper"),
        (
            b'{"v": 1, "op": "status", "x": ' + b'{"a":' * 9_000 + b"1" + b"}" * 9_000 + b"}\n",
            "nested deeper",
        ),
        (b'{"v": 1, "op": "status", "x": "' + b"[" * 20_000 + b'"}\n', "no argument named"),  # in a string
        (b'{"v": 1, "op": "delete_last"}\n', "needs seconds"),
        (b'{"v": 1, "op": "exclude", "app_class": "a", "title": "b"}\n', "not both"),
        (b'{"v": 1, "op": "exclude", "title": ""}\n', "non-empty"),
        (b'{"v": 1, "op": "exclude", "title": 5}\n', "non-empty"),
        (b'{"v": 1, "op": "exclude", "title": "' + b"x" * 2000 + b'"}\n', "longer than"),
        (b'{"v": 1, "op": "task_start"}\n', "one of the two"),
        (b'{"v": 1, "op": "task_start", "id": "a", "instruction": "b"}\n', "one of the two"),
        (b'{"v": 1, "op": "task_start", "id": 7}\n', "non-empty string"),
        (b'{"v": 1, "op": "task_start", "id": "' + b"a" * 65 + b'"}\n', "at most 64"),
        (b'{"v": 1, "op": "task_start", "instruction": {"a": 1}}\n', "must be a string"),
        (b'{"v": 1, "op": "task_start", "instruction": ""}\n', "empty"),
        (b'{"v": 1, "op": "task_start", "instruction": "a\\u202eb"}\n', "U+202E"),
        (b'{"v": 1, "op": "task_start", "instruction": "a\\nb"}\n', "U+000A"),
        (b'{"v": 1, "op": "task_start", "instruction": "' + b"x" * 1001 + b'"}\n', "at most 1000"),
        (b'{"v": 1, "op": "task_done", "outcome": "won"}\n', "no argument named"),
        (b'{"v": 1, "op": "task_abandon", "id": "a"}\n', "no argument named"),
    ],
)
def test_bad_requests_get_an_error_reply_and_the_server_lives_on(
    d: Dirs, fake: FakeController, server: ipc.ControlServer, line: bytes, needle: str
) -> None:
    reply = raw(d, line)
    assert reply["ok"] is False and reply["exit"] == 2 and needle in reply["error"], reply
    assert fake.calls == []  # nothing reached the controller
    assert ipc.request(d, "status")["ok"] is True


def test_oversized_requests_are_refused_and_the_server_lives_on(
    d: Dirs, fake: FakeController, server: ipc.ControlServer
) -> None:
    pad = b"x" * ipc.MAX_REQUEST
    for data in (pad, b'{"v": 1, "op": "status", "pad": "' + pad + b'"}\n'):
        reply = raw(d, data)
        assert reply["ok"] is False and "too large" in reply["error"] and reply["exit"] == 2
    fits = b'{"v": 1, "op": "status"' + b" " * (ipc.MAX_REQUEST - 25) + b"}\n"
    assert len(fits) == ipc.MAX_REQUEST and raw(d, fits)["ok"] is True
    assert raw(d, fits[:-2] + b" }\n")["ok"] is False  # one byte over
    assert ipc.request(d, "status")["ok"] is True and fake.calls == []


def test_a_silent_client_times_out_and_others_are_still_served(
    d: Dirs, server: ipc.ControlServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ipc, "READ_TIMEOUT_S", 0.2)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as idle:
        idle.connect(str(ipc.socket_path(d)))
        assert ipc.request(d, "status")["ok"] is True  # served while the idle one waits
        idle.settimeout(5)
        reply = json.loads(idle.recv(4096))
    assert reply["ok"] is False and "no request within" in reply["error"]


def test_a_dribbling_client_gets_its_total_read_time_not_one_per_byte(
    d: Dirs, server: ipc.ControlServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ipc, "READ_TIMEOUT_S", 0.3)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as slow:
        slow.connect(str(ipc.socket_path(d)))
        slow.settimeout(5)
        got = b""
        for _ in range(40):  # one byte every 50 ms would keep a per-recv timeout waiting forever
            try:
                slow.send(b" ")
            except OSError:
                break
            threading.Event().wait(0.05)
            with contextlib.suppress(BlockingIOError, TimeoutError):
                slow.setblocking(False)
                got += slow.recv(4096)
            slow.setblocking(True)
            slow.settimeout(5)
            if got:
                break
    assert b"no request within" in got


def test_json_depth_is_counted_outside_strings_only() -> None:
    assert ipc.json_depth('{"a": [1, {"b": 2}]}') == 3
    assert ipc.json_depth('{"a": "[[[{{{"}') == 1
    assert ipc.json_depth('{"a": "\\"[[["}') == 1  # an escaped quote does not end the string
    assert ipc.json_depth("[" * 10_000) == 10_000


def test_eof_without_a_newline_is_one_request(d: Dirs, server: ipc.ControlServer) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(ipc.socket_path(d)))
        s.sendall(b'{"v": 1, "op": "status"}')
        s.shutdown(socket.SHUT_WR)
        s.settimeout(5)
        assert json.loads(s.recv(65536))["ok"] is True


def test_controller_errors_travel_with_their_exit_code_others_are_opaque(
    d: Dirs, fake: FakeController, server: ipc.ControlServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.fail_with = UsageError("the recorder is stopped; nothing to delete")
    with pytest.raises(ipc.AgentError) as usage:
        ipc.request(d, "delete_last", seconds=60)
    assert usage.value.exit_code == 2 and "the recorder is stopped" in str(usage.value)

    fake.fail_with = RuntimeError(f"window title {CANARY}")
    with pytest.raises(ipc.AgentError) as internal:
        ipc.request(d, "exclude", title=CANARY)
    assert internal.value.exit_code == 1 and "internal error" in str(internal.value)
    assert CANARY not in str(internal.value)
    assert CANARY not in caplog.text  # neither the payload nor the exception text is logged
    assert "control request exclude failed: RuntimeError" in caplog.text


def test_logs_name_the_op_and_nothing_else(
    d: Dirs, server: ipc.ControlServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ipc.request(d, "exclude", title=CANARY)
    ipc.request(d, "pause", seconds=4321)
    raw(d, b'{"v": 1, "op": "' + CANARY.encode() + b'"}\n')
    assert "control request: exclude" in caplog.text and "control request: pause" in caplog.text
    assert CANARY not in caplog.text and "4321" not in caplog.text


def test_an_unencodable_reply_is_an_internal_error(
    d: Dirs, fake: FakeController, server: ipc.ControlServer
) -> None:
    fake.exclude = lambda **_kw: {"rule": object()}  # type: ignore[method-assign, unused-ignore]  # unreachable as win32
    with pytest.raises(ipc.AgentError, match="internal error"):
        ipc.request(d, "exclude")
    assert ipc.request(d, "status")["ok"] is True


# --- the socket file, the directory, the lock -----------------------------------------------------


def test_socket_is_0600_from_birth_and_the_dir_0700(d: Dirs, fake: FakeController) -> None:
    old = os.umask(0)  # a careless umask: the socket must still be private
    try:
        with agent_lock(d), ipc.ControlServer(d, fake):
            st = os.lstat(ipc.socket_path(d))
            assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
            assert st.st_uid == os.geteuid()
            assert stat.S_IMODE(d.runtime.stat().st_mode) == 0o700
            assert os.umask(0) == 0  # the process umask is restored
    finally:
        os.umask(old)
    assert not ipc.socket_path(d).exists()  # stop() removes it


def _stale_socket(path: Path) -> None:
    """A socket file nobody listens on, as a killed agent leaves it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(path))


def test_a_stale_socket_is_replaced_only_under_the_agent_lock(d: Dirs, fake: FakeController) -> None:
    d.runtime.mkdir(mode=0o700, parents=True)
    path = ipc.socket_path(d)
    _stale_socket(path)
    with pytest.raises(ipc.AgentNotRunning, match="no optin agent is running for this user"):
        ipc.request(d, "status")  # connection refused
    with pytest.raises(UsageError, match="agent lock"):
        ipc.ControlServer(d, fake).start()
    assert stat.S_ISSOCK(os.lstat(path).st_mode)  # untouched without the lock
    with agent_lock(d), ipc.ControlServer(d, fake):
        assert ipc.request(d, "status")["ok"] is True
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600


def test_a_live_socket_is_never_taken_over(d: Dirs, fake: FakeController) -> None:
    with agent_lock(d), ipc.ControlServer(d, fake):
        with pytest.raises(UsageError, match="another optin agent answers"):
            ipc.ControlServer(d, FakeController()).start()
        assert ipc.request(d, "status")["ok"] is True


def test_something_else_at_the_socket_path_is_refused(d: Dirs, fake: FakeController) -> None:
    d.runtime.mkdir(mode=0o700, parents=True)
    ipc.socket_path(d).write_text("not a socket")
    with agent_lock(d), pytest.raises(Exception, match="is not a socket"):
        ipc.ControlServer(d, fake).start()


def test_stop_leaves_a_newer_agents_socket_alone(d: Dirs, fake: FakeController) -> None:
    with agent_lock(d):
        srv = ipc.ControlServer(d, fake)
        srv.start()
        path = ipc.socket_path(d)
        path.unlink()
        _stale_socket(path)  # another file at the same name now
        srv.stop()
        assert stat.S_ISSOCK(os.lstat(path).st_mode)


def test_a_runtime_dir_too_long_for_sun_path_still_works(
    tmp_path: Path, fake: FakeController, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / ("h" * 60) / ("o" * 60)
    monkeypatch.setenv("OPTIN_HOME", str(home))
    long_dirs = dirs()
    assert len(str(ipc.socket_path(long_dirs))) > 108
    with agent_lock(long_dirs), ipc.ControlServer(long_dirs, fake):
        assert stat.S_IMODE(os.lstat(ipc.socket_path(long_dirs)).st_mode) == 0o600
        assert ipc.request(long_dirs, "status")["ok"] is True
    assert not ipc.socket_path(long_dirs).exists()


def test_without_a_peer_credential_check_no_socket_is_served(
    d: Dirs, fake: FakeController, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(socket, "SO_PEERCRED")
    with agent_lock(d):
        with pytest.raises(ipc.ControlUnavailable, match="SO_PEERCRED"):
            ipc.ControlServer(d, fake).start()
        assert start_control(d, fake) is None  # optin run goes on with the tray alone
    assert not ipc.socket_path(d).exists()


def test_a_slow_request_does_not_hold_up_status(
    d: Dirs, fake: FakeController, server: ipc.ControlServer
) -> None:
    release = threading.Event()
    entered = threading.Event()

    def slow_delete(seconds: float) -> dict[str, Any]:
        entered.set()
        release.wait(10)
        return {"segments": 0}

    fake.delete_last = slow_delete  # type: ignore[method-assign, unused-ignore]  # unreachable as win32
    results: list[dict[str, Any]] = []
    worker = threading.Thread(target=lambda: results.append(ipc.request(d, "delete_last", seconds=60)))
    worker.start()
    try:
        assert entered.wait(5)
        assert ipc.request(d, "status", timeout=2)["ok"] is True
    finally:
        release.set()
        worker.join(10)
    assert results and results[0]["deleted"] == {"segments": 0}


def test_no_agent_is_a_clear_error_with_exit_3(d: Dirs) -> None:
    for _ in range(2):  # no runtime dir at all; then a runtime dir without a socket
        with pytest.raises(ipc.AgentNotRunning) as exc:
            ipc.request(d, "pause")
        assert exc.value.exit_code == 3
        assert str(exc.value) == "no optin agent is running for this user (start it with `optin run`)"
        d.runtime.mkdir(mode=0o700, parents=True, exist_ok=True)


# --- a client running as another user ---------------------------------------------------------------


def _other_user() -> tuple[int, int]:
    import pwd

    why = ""
    if os.geteuid() != 0:
        why = "testing a client of another user needs root (to become nobody); run the suite as root"
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        why = why or "testing a client of another user needs the user nobody"
    if why:
        print(f"SKIP: {why}")
        unavailable(why)
    return nobody.pw_uid, nobody.pw_gid


class OtherUserClient:
    """A forked child that becomes another user and, when told, makes one request.

    Forked before the server's threads exist (forking a threaded process is unsafe);
    it waits for the socket path on a pipe and answers with what it saw:
    ``{"uid": ..., "connect_errno": ...}`` or ``{"uid": ..., "reply": {...}}``.
    """

    def __init__(self, uid: int, gid: int) -> None:
        go_r, self._go_w = os.pipe()
        self._res_r, res_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns into pytest
            code = 1
            try:
                os.close(self._go_w)
                os.close(self._res_r)
                code = self._child(go_r, res_w, uid, gid)
            finally:
                os._exit(code)
        os.close(go_r)
        os.close(res_w)

    @staticmethod
    def _child(go_r: int, res_w: int, uid: int, gid: int) -> int:
        with os.fdopen(go_r, "rb") as go:
            path = go.readline().decode().strip()
        result: dict[str, Any] = {}
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            result["uid"] = os.geteuid()
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            try:
                s.connect(path)
            except OSError as exc:
                result["connect_errno"] = exc.errno
            else:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    s.sendall(b'{"v": 1, "op": "pause", "seconds": 60}\n')
                data = b""
                while not data.endswith(b"\n"):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                result["reply"] = json.loads(data)
            finally:
                s.close()
        except Exception as exc:
            result["child_error"] = repr(exc)
        with os.fdopen(res_w, "wb") as out:
            out.write(json.dumps(result).encode())
        return 0

    def run(self, path: Path, timeout: float = 15) -> dict[str, Any]:
        reported = False
        try:
            os.write(self._go_w, str(path).encode() + b"\n")
            ready, _, _ = select.select([self._res_r], [], [], timeout)
            assert ready, "the other-user client did not report"
            with os.fdopen(self._res_r, "rb") as res:
                self._res_r = -1
                result: dict[str, Any] = json.loads(res.read())
            reported = True
        finally:
            self.close(kill=not reported)
        return result

    def close(self, *, kill: bool = True) -> None:
        for fd in (self._go_w, self._res_r):
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(ChildProcessError, ProcessLookupError):
            if kill:
                os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)


@pytest.fixture
def shared_base() -> Iterator[Path]:
    """A test-only directory another user can traverse (0711), outside pytest's private tmp."""
    base = Path(tempfile.mkdtemp(prefix="optin-ipc-", dir="/tmp"))
    base.chmod(0o711)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _base_dirs(base: Path) -> Dirs:
    return Dirs(config=base / "config", data=base / "data", runtime=base / "run")


def test_another_user_cannot_even_reach_the_socket(shared_base: Path, fake: FakeController) -> None:
    uid, gid = _other_user()
    client = OtherUserClient(uid, gid)  # forked before any server thread
    d = _base_dirs(shared_base)
    with agent_lock(d), ipc.ControlServer(d, fake):
        result = client.run(ipc.socket_path(d))
    assert result.get("uid") == uid, result
    assert result.get("connect_errno") == 13, result  # EACCES: the runtime dir is 0700
    assert fake.calls == []


def test_another_user_is_refused_by_the_peer_credential_check(
    shared_base: Path, fake: FakeController, caplog: pytest.LogCaptureFixture
) -> None:
    """File permissions opened up on purpose, so the SO_PEERCRED check is what refuses."""
    uid, gid = _other_user()
    caplog.set_level(logging.INFO)
    client = OtherUserClient(uid, gid)
    d = _base_dirs(shared_base)
    with agent_lock(d), ipc.ControlServer(d, fake):
        d.runtime.chmod(0o711)  # test only: reachable...
        ipc.socket_path(d).chmod(0o666)  # ...and connectable by anyone
        result = client.run(ipc.socket_path(d))
        assert ipc.request(d, "status")["ok"] is True  # the server lives on for its own user
    assert result.get("uid") == uid, result
    reply = result.get("reply")
    assert reply is not None, result
    assert reply["ok"] is False and reply["exit"] == 2 and "refused" in reply["error"]
    assert not [c for c in fake.calls if c[0] != "status"]  # the pause never reached the controller
    assert f"refused a control connection from another user (uid {uid}" in caplog.text
    assert '"seconds"' not in caplog.text and "control request: pause" not in caplog.text


# --- the command line over the socket -------------------------------------------------------------


def test_cli_status(
    server: ipc.ControlServer, fake: FakeController, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["status"]) == 0
    assert capsys.readouterr().out.strip() == (
        "recording: session 20250101T000000Z-0a1b2c3d, 5 events saved, 0 dropped"
    )
    assert cli.main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == fake.status()
    fake.state, fake.reason, fake.paused_until = "paused", "volunteer", "2025-01-01T14:05:00Z"
    assert cli.main(["status"]) == 0
    assert capsys.readouterr().out.startswith("paused (volunteer) until 14:05 UTC: session")


def test_cli_pause_and_resume(
    server: ipc.ControlServer, fake: FakeController, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["pause", "15m"]) == 0
    assert fake.calls[-1] == ("pause", {"reason": "volunteer", "seconds": 900.0})
    assert capsys.readouterr().out.strip() == (
        "optin is paused for 15m (until 14:05 UTC); `optin resume` records again sooner"
    )
    assert cli.main(["pause"]) == 0
    assert fake.calls[-1] == ("pause", {"reason": "volunteer", "seconds": None})
    assert "paused until you resume it" in capsys.readouterr().out
    assert cli.main(["resume"]) == 0
    assert capsys.readouterr().out.strip() == "optin is recording again"
    fake.resume_refused = True
    assert cli.main(["resume"]) == 1
    assert "stays paused: no indicator" in capsys.readouterr().err
    calls = len(fake.calls)
    assert cli.main(["pause", "15 minutes"]) == 2  # bad duration: nothing is sent
    assert "90s, 15m, 1h or 2h30m" in capsys.readouterr().err and len(fake.calls) == calls


def test_cli_delete_last_goes_to_the_running_agent(
    server: ipc.ControlServer, fake: FakeController, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["delete-last", "10m"]) == 0
    assert fake.calls[-1] == ("delete_last", {"seconds": 600.0})
    out = capsys.readouterr().out
    assert "session S2: deleted whole (2 segments, 2000 bytes)" in out
    assert "session S1: last 1 segments deleted (1000 bytes); kept until 2025-01-01T13:49:00Z" in out
    assert "3 segments, 3000 bytes shredded" in out
    assert cli.main(["delete-last", "10m", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["deleted"][0]["session_id"] == "S2"


def test_cli_exclude(
    server: ipc.ControlServer, fake: FakeController, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["exclude", "--app", "KeePassXC"]) == 0
    assert fake.calls[-1] == ("exclude", {"app_class": "KeePassXC", "title": None})
    assert "no longer records windows of the app 'KeePassXC'" in capsys.readouterr().out
    assert cli.main(["exclude", "--title", "*Private*"]) == 0
    assert fake.calls[-1] == ("exclude", {"app_class": None, "title": "*Private*"})
    assert "no longer records windows whose title matches '*Private*'" in capsys.readouterr().out
    assert cli.main(["exclude", "--json"]) == 0
    assert fake.calls[-1] == ("exclude", {"app_class": None, "title": None})
    assert json.loads(capsys.readouterr().out) == {"app_class": "Focused-App", "title": None}
    with pytest.raises(SystemExit) as both:
        cli.main(["exclude", "--app", "a", "--title", "b"])
    assert both.value.code == 2


def test_cli_passes_on_the_agents_error_and_exit_code(
    server: ipc.ControlServer, fake: FakeController, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.fail_with = UsageError("the recorder is stopped")
    assert cli.main(["delete-last", "5m"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "optin: the recorder is stopped"


@pytest.mark.parametrize("argv", [["pause"], ["pause", "1h"], ["resume"], ["exclude"]])
def test_cli_without_an_agent_says_so_and_exits_3(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 3
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == "optin: no optin agent is running for this user (start it with `optin run`)"


def test_cli_exclude_without_an_agent_is_remembered_for_the_next_start(
    d: Dirs, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent import exclusions
    from agent.paths import write_private_file

    assert cli.main(["exclude", "--app", "KeePassXC"]) == 0
    assert "from the next `optin run`" in capsys.readouterr().out
    assert cli.main(["exclude", "--title", "Private Browsing"]) == 0
    assert [(r.app_class, r.title) for r in exclusions.load(d)] == [
        ("KeePassXC", None),
        (None, "Private Browsing"),
    ]
    assert cli.main(["exclude", "--title", "(unclosed"]) == 2
    assert "not a valid regular expression" in capsys.readouterr().err
    d.runtime.mkdir(mode=0o700, parents=True, exist_ok=True)  # an agent that has no control socket
    write_private_file(
        d.runtime / "status.json", json.dumps({"state": "recording", "pid": os.getpid()}).encode()
    )
    assert cli.main(["exclude", "--app", "Other"]) == 2
    assert "does not answer on its control socket" in capsys.readouterr().err
    assert len(exclusions.load(d)) == 2


def test_cli_status_without_an_agent_shows_the_last_session(
    consented: tuple[Dirs, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.backends import select_backend
    from agent.control import Recorder

    d, study = consented
    assert cli.main(["status", "--json"]) == 3
    assert json.loads(capsys.readouterr().out) == {"state": "not running", "last_session": None}
    rec = Recorder(d, select_backend("fake"), study)
    rec.start()
    rec.stop()
    assert cli.main(["status"]) == 3
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"optin is not running (start it with `optin run`); last session {rec.session_id}")
    assert cli.main(["status", "--json"]) == 3
    assert json.loads(capsys.readouterr().out)["last_session"]["id"] == rec.session_id
