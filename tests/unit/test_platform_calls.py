"""agent.backends.platform_calls: calls that differ by OS, behind one interface.

Each test runs the branch of the OS it runs on, for real: Linux here, macOS and Windows on
their CI runners.  A test of one OS's behaviour skips elsewhere, with an inline
``sys.platform`` check that mypy also reads, so each OS's tests are type-checked under
that OS's ``--platform``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.backends import platform_calls, virtual_display
from agent.backends.platform_calls import signals_held

POSIX = "a POSIX call (Linux, macOS); the Windows branch has its own test"
WINDOWS = "the Windows branch; it runs on a Windows runner"
#: Opens a file for bytes on every OS (Windows' C runtime would translate newlines otherwise).
BINARY = getattr(os, "O_BINARY", 0)


class _Ended(Exception):
    pass


@pytest.fixture
def raising_sigterm() -> Iterator[None]:
    def leave(signum: int, _frame: object) -> None:
        raise _Ended(signum)

    saved = signal.signal(signal.SIGTERM, leave)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, saved)


def test_a_signal_inside_is_handled_on_leaving_not_in_the_middle(raising_sigterm: None) -> None:
    if sys.platform == "win32":
        pytest.skip(POSIX)  # os.kill(own pid) ends a Windows process at once
    steps = []
    with pytest.raises(_Ended), signals_held():
        os.kill(os.getpid(), signal.SIGTERM)
        steps.append("after the signal")  # reached: the handler waits for the end of the block
    assert steps == ["after the signal"]
    assert signal.getsignal(signal.SIGTERM) is not None and callable(signal.getsignal(signal.SIGTERM))


def test_nothing_held_runs_nothing_and_handlers_are_put_back(raising_sigterm: None) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with signals_held():
        pass
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_child_started_while_sigterm_arrives_is_tracked_and_stopped(
    raising_sigterm: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo once left an xterm behind: SIGTERM landed between Popen and tracking it."""
    if sys.platform == "win32":
        pytest.skip(POSIX)
    real_popen = subprocess.Popen

    def popen_then_sigterm(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = real_popen(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # arrives as the child exists, before it is tracked
        return proc

    monkeypatch.setattr(subprocess, "Popen", popen_then_sigterm)  # the module virtual_display uses
    vd = virtual_display.VirtualDisplay()
    with pytest.raises(_Ended):
        vd.spawn([sys.executable, "-c", "import time; time.sleep(60)"], env=dict(os.environ))
    assert len(vd._procs) == 1  # what stop() will stop
    child = vd._procs[0]
    vd.stop()
    assert child.poll() is not None


# --- exclusive locks: a second taker is refused, in this process and in another ---------------------


def _open(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | BINARY, 0o600)


def test_a_held_lock_refuses_a_second_open_of_the_same_file(tmp_path: Path) -> None:
    first, second = _open(tmp_path / "agent.lock"), _open(tmp_path / "agent.lock")
    try:
        assert platform_calls.try_lock(first) is True
        assert platform_calls.try_lock(second) is False  # even in this process: the open file owns it
        assert platform_calls.probe_lock(second) is True
        platform_calls.release_lock(first)
        assert platform_calls.try_lock(second) is True
        assert platform_calls.try_lock(first) is False
    finally:
        os.close(first)
        os.close(second)


def test_closing_the_holder_releases_the_lock(tmp_path: Path) -> None:
    holder = _open(tmp_path / "agent.lock")
    assert platform_calls.try_lock(holder)
    os.close(holder)
    taker = _open(tmp_path / "agent.lock")
    try:
        assert platform_calls.try_lock(taker) is True
    finally:
        os.close(taker)


def test_probing_a_free_lock_leaves_it_free_and_probing_a_held_one_leaves_it_held(tmp_path: Path) -> None:
    holder, prober = _open(tmp_path / "agent.lock"), _open(tmp_path / "agent.lock")
    try:
        assert platform_calls.probe_lock(prober) is False  # nobody held it; the probe let it go again
        assert platform_calls.try_lock(holder) is True
        assert platform_calls.probe_lock(prober) is True
        assert platform_calls.probe_lock(prober) is True  # the holder's lock was not disturbed
    finally:
        os.close(holder)
        os.close(prober)


def test_a_lock_held_by_another_process_is_refused_until_it_exits(tmp_path: Path) -> None:
    path = tmp_path / "agent.lock"
    code = (
        "import os, sys\n"
        "from agent.backends.platform_calls import try_lock\n"
        f"fd = os.open({str(path)!r}, os.O_RDWR | os.O_CREAT | getattr(os, 'O_BINARY', 0), 0o600)\n"
        "print(try_lock(fd), flush=True)\n"
        "sys.stdin.read()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdin is not None and child.stdout is not None
    fd = _open(path)
    try:
        assert child.stdout.readline().strip() == "True"
        assert platform_calls.try_lock(fd) is False
        assert platform_calls.probe_lock(fd) is True
        child.stdin.close()
        assert child.wait(30) == 0
        assert platform_calls.try_lock(fd) is True
    finally:
        os.close(fd)
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()


def test_a_directory_can_be_locked_as_a_session_folder_is(tmp_path: Path) -> None:
    if sys.platform == "win32":
        pytest.skip(POSIX)  # no directory descriptors: safe_fs.WRITER_LOCK is False there
    first = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    second = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert platform_calls.try_lock(first) is True
        assert platform_calls.try_lock(second) is False
    finally:
        os.close(first)
        os.close(second)


# --- overwriting a range in place (crypto-shredding) ----------------------------------------------


@pytest.mark.parametrize("way", ["overwrite_durably", "seek_and_write"])
def test_an_overwrite_changes_exactly_its_range_and_nothing_else(tmp_path: Path, way: str) -> None:
    """``seek_and_write`` is the Windows branch, which runs anywhere."""
    path = tmp_path / "segment"
    before = bytes(range(256)) * 4  # holds b"\n": a text-mode write would show
    path.write_bytes(before)
    new = bytes(range(80))
    fd = os.open(path, os.O_RDWR | BINARY)
    try:
        os.lseek(fd, 7, os.SEEK_SET)
        if way == "overwrite_durably":
            platform_calls.overwrite_durably(fd, 60, new)
            if sys.platform != "win32":
                assert os.lseek(fd, 0, os.SEEK_CUR) == 7  # pwrite leaves the file position alone
        else:
            platform_calls._seek_and_write(fd, 60, new)
    finally:
        os.close(fd)
    after = path.read_bytes()
    assert len(after) == len(before)
    assert after[60:140] == new
    assert after[:60] == before[:60] and after[140:] == before[140:]


def test_an_overwrite_is_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    path = tmp_path / "segment"
    path.write_bytes(bytes(200))
    fd = os.open(path, os.O_RDWR | BINARY)
    try:
        platform_calls.overwrite_durably(fd, 0, b"\x01" * 10)
    finally:
        os.close(fd)
    assert synced == [fd]


def test_shredding_a_segment_overwrites_only_its_key_material(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent.store.format import KEY_MATERIAL_OFFSET, KEY_MATERIAL_SIZE
    from agent.store.retention import shred_at
    from agent.store.safe_fs import StoreDir

    path = tmp_path / "0001.seg"
    before = bytes(range(256))
    path.write_bytes(before)
    seen: list[bytes] = []
    real_unlink = os.unlink

    def keep_a_copy(name: Any, *args: Any, **kwargs: Any) -> None:
        seen.append(path.read_bytes())
        real_unlink(name, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", keep_a_copy)
    with StoreDir.open(tmp_path, expected="a folder of segments") as folder:
        assert shred_at(folder, path.name) == len(before)
    assert not path.exists()
    (shredded,) = seen
    end = KEY_MATERIAL_OFFSET + KEY_MATERIAL_SIZE
    assert shredded[:KEY_MATERIAL_OFFSET] == before[:KEY_MATERIAL_OFFSET]
    assert shredded[end:] == before[end:]
    assert shredded[KEY_MATERIAL_OFFSET:end] != before[KEY_MATERIAL_OFFSET:end]


# --- the peer of a Unix socket --------------------------------------------------------------------


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder with a short path (macOS' temporary folders are too long for a socket address)."""
    with tempfile.TemporaryDirectory(dir=None if sys.platform == "win32" else "/tmp") as name:
        yield Path(name)


def test_peer_credentials_of_a_socketpair_are_this_process() -> None:
    if sys.platform != "linux":
        pytest.skip("SO_PEERCRED of a socketpair (Linux); macOS is tested through a connection")
    assert platform_calls.peer_credentials_available() is True
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        assert platform_calls.peer_credentials(left) == (os.getpid(), os.geteuid())
        assert platform_calls.peer_credentials(right) == (os.getpid(), os.geteuid())


def test_peer_credentials_name_the_process_that_connected(short_dir: Path) -> None:
    if sys.platform == "win32":
        pytest.skip(POSIX)
    assert platform_calls.peer_credentials_available() is True
    path = short_dir / "s.sock"
    with platform_calls.unix_stream_socket() as listener:
        assert (listener.family, listener.type) == (socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        listener.listen(1)
        listener.settimeout(30)
        code = (
            "import socket, sys\n"
            "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
            f"s.connect({str(path)!r})\n"
            "sys.stdin.read()\n"
        )
        child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
        try:
            conn, _ = listener.accept()
            with conn:
                assert platform_calls.peer_credentials(conn) == (child.pid, os.geteuid())
        finally:
            assert child.stdin is not None
            child.stdin.close()
            child.wait(30)


def test_a_socket_path_of_the_longest_length_binds_and_a_longer_one_does_not(short_dir: Path) -> None:
    if sys.platform == "win32":
        pytest.skip(POSIX)
    sun_path = 104 if sys.platform == "darwin" else 108  # bytes, NUL included
    assert sun_path - 1 == platform_calls.UNIX_PATH_MAX
    longest = short_dir / ("s" * (platform_calls.UNIX_PATH_MAX - len(os.fsencode(short_dir)) - 1))
    assert len(os.fsencode(longest)) == platform_calls.UNIX_PATH_MAX
    with platform_calls.unix_stream_socket() as sock:
        sock.bind(str(longest))
    with platform_calls.unix_stream_socket() as sock, pytest.raises(OSError):
        sock.bind(str(longest) + "ss")  # past sun_path, NUL or not


def test_windows_has_no_control_socket() -> None:
    if sys.platform != "win32":
        pytest.skip(WINDOWS)
    assert platform_calls.peer_credentials_available() is False
    with pytest.raises(OSError, match="no Unix sockets"):
        platform_calls.unix_stream_socket()


# --- who owns files, where runtime files go -------------------------------------------------------


def test_user_ids_are_this_process_s_and_none_on_windows() -> None:
    if sys.platform == "win32":
        assert (platform_calls.user_id(), platform_calls.effective_user_id()) == (None, None)
    else:
        assert platform_calls.user_id() == os.getuid()
        assert platform_calls.effective_user_id() == os.geteuid()


def test_without_xdg_runtime_dir_linux_runtime_files_stay_under_the_data_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if sys.platform != "linux":
        pytest.skip("the XDG runtime dir is Linux's")
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    assert platform_calls.runtime_dir("optin", tmp_path / "data") == tmp_path / "data" / "run"
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg"))
    assert platform_calls.runtime_dir("optin", tmp_path / "data") == tmp_path / "xdg" / "optin"


# --- signals, process groups, core files ----------------------------------------------------------


def test_the_ending_signals_of_this_os() -> None:
    if sys.platform == "win32":
        assert platform_calls.TERMINATE_SIGNALS == (signal.SIGTERM,)
        assert platform_calls.ENDING_SIGNALS == (signal.SIGTERM, signal.SIGINT)
    else:
        assert platform_calls.TERMINATE_SIGNALS == (signal.SIGTERM, signal.SIGHUP)
        assert platform_calls.ENDING_SIGNALS == (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


def _group_leader(setup: str) -> subprocess.Popen[str]:
    """A child in its own process group that starts a grandchild (sleeping) and prints its pid."""
    script = (
        "import signal, subprocess, sys, time\n"
        f"{setup}\n"
        "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(g.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, start_new_session=True
    )


def _gone(pid: int) -> bool:
    """Whether ``pid`` (not our child) ends within a generous bound."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize(
    ("kill", "setup"), [(False, "pass"), (True, "signal.signal(signal.SIGTERM, signal.SIG_IGN)")]
)
def test_ending_a_process_group_reaches_the_grandchildren(kill: bool, setup: str) -> None:
    if sys.platform == "win32":
        pytest.skip(POSIX)
    leader = _group_leader(setup)
    assert leader.stdout is not None
    try:
        grandchild = int(leader.stdout.readline())
        platform_calls.end_process_group(leader.pid, kill=kill)
        assert leader.wait(30) == (-signal.SIGKILL if kill else -signal.SIGTERM)
        assert _gone(grandchild)  # once ended, init reaps it
    finally:
        if leader.poll() is None:
            leader.kill()
            leader.wait()
        leader.stdout.close()
    with pytest.raises(ProcessLookupError):
        platform_calls.end_process_group(leader.pid)


def test_ending_a_process_on_windows_ends_it() -> None:
    if sys.platform != "win32":
        pytest.skip(WINDOWS)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        platform_calls.end_process_group(child.pid)
        assert child.wait(30) == signal.SIGTERM  # TerminateProcess's exit code
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_core_files_are_forbidden_for_the_process_and_its_children_hard_limit_kept() -> None:
    if sys.platform == "win32":
        assert platform_calls.forbid_core_files() is False  # no resource limits on Windows
        return
    code = (
        "import resource, subprocess, sys\n"
        "from agent.backends.platform_calls import forbid_core_files\n"
        "hard = resource.getrlimit(resource.RLIMIT_CORE)[1]\n"
        "print(forbid_core_files(), resource.getrlimit(resource.RLIMIT_CORE) == (0, hard))\n"
        "sys.stdout.flush()\n"
        "subprocess.run([sys.executable, '-c', "
        "'import resource; print(resource.getrlimit(resource.RLIMIT_CORE)[0])'], check=True)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["True", "True", "0"]
