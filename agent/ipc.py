"""The control socket: how ``optin status|pause|resume|delete-last|exclude`` reach the running agent.

**Where.**  ``<runtime dir>/control.sock``, an ``AF_UNIX`` ``SOCK_STREAM``
socket.  The runtime dir is private (0700, :func:`agent.paths.ensure_private_dir`)
and the socket is created 0600 (a ``umask`` around ``bind``, never a chmod
afterwards), so another user cannot even connect; and each connection's peer is
checked with ``SO_PEERCRED``: a peer whose uid is not the agent's effective uid
gets a refusal and nothing else.

**Protocol (version 1).**  One request per connection.  The client sends one
JSON object on one line (UTF-8, ``\\n``-terminated, at most
:data:`MAX_REQUEST` bytes), the agent answers with one JSON object on one line
and closes::

    → {"v": 1, "op": "status"}
    ← {"v": 1, "ok": true, "status": {...}}
    → {"v": 1, "op": "pause", "seconds": 900}          (seconds null or absent: until resumed)
    ← {"v": 1, "ok": true, "status": {...}}
    → {"v": 1, "op": "resume"}
    ← {"v": 1, "ok": true, "status": {...}}
    → {"v": 1, "op": "delete_last", "seconds": 600}
    ← {"v": 1, "ok": true, "deleted": {...}}           (ids, counts, sizes, times)
    → {"v": 1, "op": "exclude", "app_class": "KeePassXC"} (or "title": PATTERN; neither: the focused app)
    ← {"v": 1, "ok": true, "rule": {...}}
    ← {"v": 1, "ok": false, "error": "what failed and the fix", "exit": 2}

``exit`` is the exit code the command line should end with.  Errors the agent
raises on purpose (:class:`agent.errors.OptinError`) travel with their message
(which by the house rules never holds captured content); anything else becomes
an opaque ``internal error``.  Log lines name the op and never the rest of a
request.

**Slow and hostile clients.**  One thread reads every connection's request with
a selector (no thread per waiting client): a client has :data:`READ_TIMEOUT_S`
*in total* to send its line, at most :data:`MAX_PENDING` may be waiting at once
(one more is answered "busy" at once), and a waiting client costs no handler.
A complete request runs on its own thread, at most :data:`MAX_CONTROL` at once
for ``status``, ``pause`` and ``resume`` and :data:`MAX_SLOW` for ``delete_last``
and ``exclude``, so slow deletions never make a pause wait; a reply gets
:data:`SEND_TIMEOUT_S` in total.  Numbers are checked (finite, positive, a pause
at most :data:`agent.pausing.MAX_PAUSE_S`, a deletion at most
:data:`agent.pausing.MAX_DELETE_S`) and JSON nested deeper than
:data:`MAX_DEPTH` is refused before it is parsed; every refusal is a reply.

**One agent per user.**  :meth:`ControlServer.start` must be called while the
agent lock (:func:`agent.paths.agent_lock`) is held; it checks that the lock is
held, and only then replaces a socket file that a dead agent left behind.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import socket
import stat
import struct
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from agent.errors import EnvironmentProblem, OptinError, UsageError
from agent.paths import Dirs, ensure_private_dir
from agent.pausing import MAX_DELETE_S, MAX_PAUSE_S, check_seconds

logger = logging.getLogger(__name__)

#: Version of the protocol spoken here (``"v"`` of every request and reply).
PROTOCOL_VERSION = 1
#: Name of the socket in the runtime dir.
SOCKET_NAME = "control.sock"
#: Largest request line, newline included (bytes).
MAX_REQUEST = 64 * 1024
#: Largest reply line the client reads (bytes): a delete report can list many sessions.
MAX_REPLY = 1024 * 1024
#: How long a connected client has, in total, to send its request (seconds).
READ_TIMEOUT_S = 2.0
#: How long the agent tries, in total, to hand a reply to a client (seconds).
SEND_TIMEOUT_S = 2.0
#: Connections waiting for their request at once; one more is answered "busy" at once.
MAX_PENDING = 64
#: ``status``, ``pause`` and ``resume`` requests running at once (each returns quickly).
MAX_CONTROL = 8
#: ``delete_last`` and ``exclude`` requests running at once (they seal, shred, write files).
MAX_SLOW = 2
#: Deepest JSON nesting accepted in a request (a request is one flat object).
MAX_DEPTH = 8
#: How long the command line waits for an answer, by op (seconds): pausing joins capture threads,
#: resuming starts them, deleting seals, shreds and reopens sessions.
REPLY_TIMEOUT_S = {"status": 5.0, "pause": 15.0, "resume": 15.0, "delete_last": 120.0, "exclude": 15.0}
#: Longest app class or title pattern accepted (characters).
MAX_PATTERN = 1024
#: The message when no agent answers.
NOT_RUNNING = "no optin agent is running for this user (start it with `optin run`)"

_OPS = frozenset(REPLY_TIMEOUT_S)
_SLOW_OPS = frozenset({"delete_last", "exclude"})
_SECONDS_LIMIT = {"pause": ("a pause", MAX_PAUSE_S), "delete_last": ("delete-last", MAX_DELETE_S)}
_ARGS = {
    "status": frozenset(),
    "pause": frozenset({"seconds"}),
    "resume": frozenset(),
    "delete_last": frozenset({"seconds"}),
    "exclude": frozenset({"app_class", "title"}),
}
_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes on Linux, NUL included
_UMASK_LOCK = threading.Lock()


class AgentNotRunning(OptinError):
    """No optin agent of this user answers on the control socket (exit 3)."""

    exit_code = 3

    def __init__(self, message: str = NOT_RUNNING) -> None:
        super().__init__(message)


class ControlUnavailable(EnvironmentProblem):
    """This platform cannot check who connects (no ``SO_PEERCRED``): no control socket is served."""


class AgentError(OptinError):
    """The running agent answered a request with an error; carries the exit code it asked for."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Controller(Protocol):
    """What the control socket drives: :class:`agent.control.Recorder` (and fakes in tests)."""

    def status(self) -> dict[str, Any]:
        """The state as plain data (no captured content)."""
        ...

    def pause(self, reason: str = "volunteer", *, seconds: float | None = None) -> None:
        """Stop capture (P3); after ``seconds`` it resumes by itself; None: until :meth:`resume`."""
        ...

    def resume(self) -> None:
        """Capture again after the volunteer's pause."""
        ...

    def delete_last(self, seconds: float) -> dict[str, Any]:
        """Delete at least the last ``seconds`` of recording; return ids, counts and sizes only."""
        ...

    def exclude(self, *, app_class: str | None = None, title: str | None = None) -> dict[str, Any]:
        """Add a deny rule and return it; both None: the focused app."""
        ...


def socket_path(dirs: Dirs) -> Path:
    """Where the running agent listens."""
    return dirs.runtime / SOCKET_NAME


# -- the agent's side ----------------------------------------------------------------------------


@dataclass
class _Pending:
    """A connection whose request line is still being read (by the selector thread)."""

    conn: socket.socket
    deadline: float
    buf: bytearray = field(default_factory=bytearray)


class ControlServer:
    """Answers control requests for ``controller`` on ``<runtime dir>/control.sock``.

    :meth:`start` binds and starts one thread that accepts connections and reads
    their requests with a selector (see the module docstring for the bounds);
    each complete request runs on a short-lived thread.  :meth:`stop` closes the
    socket and removes its file.
    """

    def __init__(self, dirs: Dirs, controller: Controller) -> None:
        self.dirs = dirs
        self.controller = controller
        self.path = socket_path(dirs)
        self._listener: socket.socket | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the socket file we made
        self._thread: threading.Thread | None = None
        self._wake_r = self._wake_w = -1
        self._stopping = threading.Event()
        self._control_slots = threading.BoundedSemaphore(MAX_CONTROL)
        self._slow_slots = threading.BoundedSemaphore(MAX_SLOW)
        self._handlers: set[threading.Thread] = set()
        self._handlers_lock = threading.Lock()

    def start(self) -> None:
        """Bind the socket (0600 from birth) and start answering.

        :raises UsageError: the agent lock is not held, or another agent answers on the socket.
        :raises ControlUnavailable: this platform has no peer-credential check.
        :raises EnvironmentProblem: the socket path is taken by something that is not a
            socket, or cannot be bound.
        """
        if self._listener is not None:
            msg = "the control server is already started"
            raise UsageError(msg)
        if not hasattr(socket, "AF_UNIX") or not hasattr(socket, "SO_PEERCRED"):
            msg = (
                "the command-line control of a running agent needs Unix sockets with SO_PEERCRED "
                f"(Linux); not available on {sys.platform}. Use the tray menu instead"
            )
            raise ControlUnavailable(msg)
        ensure_private_dir(self.dirs.runtime)
        if not agent_lock_held(self.dirs):
            msg = "the control socket is served only while the agent lock is held (internal order error)"
            raise UsageError(msg)
        self._remove_stale_socket()
        self._identity = None
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with _short_address(self.path) as address, _UMASK_LOCK:
                old = os.umask(0o177)  # the socket file is 0600 from the moment it exists
                try:
                    listener.bind(address)
                finally:
                    os.umask(old)
            st = os.lstat(self.path)
            self._identity = (st.st_dev, st.st_ino)
            listener.listen(64)
            listener.setblocking(False)
        except OSError as exc:
            listener.close()
            self._unlink_own_socket()
            msg = f"cannot listen on {self.path} ({exc.strerror or type(exc).__name__})"
            raise EnvironmentProblem(msg) from exc
        self._listener = listener
        self._stopping.clear()
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._serve_loop, name="optin-control", daemon=True)
        self._thread.start()
        logger.info("control socket listening")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop answering, close the socket and remove its file (only if it is still ours)."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        self._stopping.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        listener.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1
        self._unlink_own_socket()
        with self._handlers_lock:
            handlers = list(self._handlers)
        for handler in handlers:  # a request in progress may finish (its controller call is not cut)
            handler.join(timeout)

    def __enter__(self) -> ControlServer:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _remove_stale_socket(self) -> None:
        """Remove a socket file a dead agent left; the agent lock is held, so no agent can own it."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            msg = f"{self.path} exists and is not a socket. Fix: remove it (it is optin's runtime file name)"
            raise EnvironmentProblem(msg)
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            with _short_address(self.path) as address:
                probe.connect(address)
        except OSError:
            pass  # nobody listens: stale
        else:
            msg = f"another optin agent answers on {self.path}; one agent at a time (see `optin status`)"
            raise UsageError(msg)
        finally:
            probe.close()
        self.path.unlink()
        logger.info("replaced the control socket a stopped agent left behind")

    def _unlink_own_socket(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if (st.st_dev, st.st_ino) == self._identity:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    # -- the selector thread: accept, check the peer, read each request within its deadline ----------

    def _serve_loop(self) -> None:
        listener = self._listener
        if listener is None:
            return
        pending: dict[int, _Pending] = {}
        with selectors.DefaultSelector() as sel:
            sel.register(listener, selectors.EVENT_READ, "listener")
            sel.register(self._wake_r, selectors.EVENT_READ, "wake")
            try:
                while not self._stopping.is_set():
                    now = time.monotonic()
                    wait = min((p.deadline for p in pending.values()), default=now + 60.0) - now
                    try:
                        ready = sel.select(max(0.0, wait))
                    except (OSError, ValueError):
                        return  # closed under us: stopping
                    if self._stopping.is_set():
                        return
                    for key, _ in ready:
                        self._handle(key.data, listener, sel, pending)
                    self._expire(sel, pending)
            finally:
                for item in pending.values():
                    with contextlib.suppress(OSError):
                        item.conn.close()

    def _handle(
        self, what: object, listener: socket.socket, sel: selectors.BaseSelector, pending: dict[int, _Pending]
    ) -> None:
        """One ready event. Nothing may end this thread (pause is asked through it, P3): an
        unexpected failure closes that one connection and is logged by type only."""
        try:
            if what == "listener":
                self._accept(listener, sel, pending)
            elif isinstance(what, _Pending):
                self._read(what, sel, pending)
        except Exception as exc:
            logger.warning("control request failed (%s)", type(exc).__name__)
            if isinstance(what, _Pending):
                self._forget(what, sel, pending)
                _reply_now(what.conn, _error("internal error in the optin agent (its log says so)", 1))

    def _accept(
        self, listener: socket.socket, sel: selectors.BaseSelector, pending: dict[int, _Pending]
    ) -> None:
        """Accept every waiting connection: refuse another user's at once, and any beyond
        :data:`MAX_PENDING`; keep the others for reading."""
        while True:
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # out of descriptors, or closing: the next round tries again
            try:
                pid, uid = peer_credentials(conn)
            except OSError:
                conn.close()
                continue
            if uid != os.geteuid():
                logger.warning("refused a control connection from another user (uid %d, pid %d)", uid, pid)
                _reply_now(conn, _error("refused: an optin agent answers only the user who runs it", 2))
                continue
            if len(pending) >= MAX_PENDING:
                logger.warning("refused a control connection: %d others are still sending", len(pending))
                _reply_now(conn, _error("the agent is busy with other requests; try again", 1))
                continue
            conn.setblocking(False)
            item = _Pending(conn, time.monotonic() + READ_TIMEOUT_S)
            pending[conn.fileno()] = item
            sel.register(conn, selectors.EVENT_READ, item)

    def _read(self, item: _Pending, sel: selectors.BaseSelector, pending: dict[int, _Pending]) -> None:
        """Read what ``item``'s client sent; a complete (or oversized) request leaves the selector."""
        try:
            chunk = item.conn.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
            item.buf.clear()  # a reset connection: nothing to answer
            self._forget(item, sel, pending)
            item.conn.close()
            return
        newline = chunk.find(b"\n")
        if chunk and newline < 0:
            item.buf += chunk
            if len(item.buf) >= MAX_REQUEST:
                self._forget(item, sel, pending)
                _reply_now(item.conn, _error(f"request too large (limit {MAX_REQUEST} bytes)", 2))
            return
        if newline >= 0:
            item.buf += chunk[:newline]
        self._forget(item, sel, pending)
        if len(item.buf) + 1 > MAX_REQUEST:
            _reply_now(item.conn, _error(f"request too large (limit {MAX_REQUEST} bytes)", 2))
            return
        self._dispatch(item.conn, bytes(item.buf))

    def _expire(self, sel: selectors.BaseSelector, pending: dict[int, _Pending]) -> None:
        now = time.monotonic()
        for item in [p for p in pending.values() if p.deadline <= now]:
            self._forget(item, sel, pending)
            _reply_now(item.conn, _error(f"no request within {READ_TIMEOUT_S:g} s", 2))

    @staticmethod
    def _forget(item: _Pending, sel: selectors.BaseSelector, pending: dict[int, _Pending]) -> None:
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(item.conn)
        pending.pop(item.conn.fileno(), None)

    def _dispatch(self, conn: socket.socket, line: bytes) -> None:
        """Answer a bad request at once; run a good one on its own thread, or answer busy."""
        try:
            op, args = parse_request(line)
        except UsageError as exc:
            _reply_now(conn, _error(str(exc), exc.exit_code))
            return
        slots = self._slow_slots if op in _SLOW_OPS else self._control_slots
        if not slots.acquire(blocking=False):
            _reply_now(conn, _error(f"the agent is busy with other {op} requests; try again", 1))
            return
        handler = threading.Thread(
            target=self._serve, args=(conn, op, args, slots), name="optin-control-conn", daemon=True
        )
        with self._handlers_lock:
            self._handlers.add(handler)
        try:
            handler.start()
        except RuntimeError:  # no thread to be had: answer busy and give the slot back
            slots.release()
            with self._handlers_lock:
                self._handlers.discard(handler)
            _reply_now(conn, _error(f"the agent is busy with other {op} requests; try again", 1))

    def _serve(
        self, conn: socket.socket, op: str, args: dict[str, Any], slots: threading.BoundedSemaphore
    ) -> None:
        try:
            with conn:
                self._reply(conn, self._answer(op, args))
        except Exception as exc:  # a broken connection must never take the agent down
            logger.warning("control connection failed (%s)", type(exc).__name__)
        finally:
            slots.release()
            with self._handlers_lock:
                self._handlers.discard(threading.current_thread())

    def handle(self, line: bytes) -> dict[str, Any]:
        """The reply to one request line (already length-limited); never raises."""
        try:
            op, args = parse_request(line)
        except UsageError as exc:
            return _error(str(exc), exc.exit_code)
        return self._answer(op, args)

    def _answer(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """The reply to a parsed request; never raises."""
        logger.info("control request: %s", op)
        try:
            result = self._call(op, args)
        except OptinError as exc:
            return _error(str(exc), exc.exit_code)
        except Exception as exc:  # never echo: the text could quote captured content
            logger.error("control request %s failed: %s", op, type(exc).__name__)
            return _error("internal error in the optin agent (its log says which request failed)", 1)
        return {"v": PROTOCOL_VERSION, "ok": True, **result}

    def _call(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        c = self.controller
        if op == "pause":
            c.pause(seconds=args.get("seconds"))
            return {"status": c.status()}
        if op == "resume":
            c.resume()
            return {"status": c.status()}
        if op == "delete_last":
            return {"deleted": c.delete_last(args["seconds"])}
        if op == "exclude":
            return {"rule": c.exclude(app_class=args.get("app_class"), title=args.get("title"))}
        return {"status": c.status()}

    def _reply(self, conn: socket.socket, reply: dict[str, Any]) -> None:
        """Send ``reply`` within :data:`SEND_TIMEOUT_S` in total (``sendall``'s timeout is a total)."""
        conn.setblocking(True)
        conn.settimeout(SEND_TIMEOUT_S)
        with contextlib.suppress(OSError):  # the client went away or does not read: nothing to tell it
            conn.sendall(_encode_reply(reply))


def _reply_now(conn: socket.socket, reply: dict[str, Any]) -> None:
    """Send a short reply without waiting (what the socket buffer takes) and close ``conn``.

    What the client sent and nobody read is drained first (without waiting), so the
    close does not reset the connection before the client has read the reply.
    """
    try:
        conn.setblocking(False)
        conn.send(_encode_reply(reply))
        conn.shutdown(socket.SHUT_WR)
        for _ in range(16):  # at most 1 MiB: a client cannot keep the selector thread here
            if not conn.recv(65536):
                break
    except OSError:
        pass  # the client went away, does not read, or sends no more now: the agent is not held
    finally:
        conn.close()


def _encode_reply(reply: dict[str, Any]) -> bytes:
    try:
        return _encode(reply)
    except (TypeError, ValueError) as exc:  # a controller returned something that is not JSON
        logger.error("control reply could not be encoded (%s)", type(exc).__name__)
        return _encode(_error("internal error in the optin agent (an unencodable reply)", 1))


def peer_credentials(conn: socket.socket) -> tuple[int, int]:
    """``(pid, uid)`` of the process at the other end of a connected Unix socket (``SO_PEERCRED``)."""
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size)
    pid, uid, _gid = _CRED.unpack(raw)
    return pid, uid


def agent_lock_held(dirs: Dirs) -> bool:
    """Whether some process (normally this one) holds the one-agent-per-user lock.

    Probes with a second ``flock`` on a new open file description; taking it
    means nobody held it, so it is released at once.  (``flock`` locks belong to
    the open file description, so the probe never disturbs the holder's lock.)
    """
    if os.name != "posix":
        return True
    import fcntl

    fd = os.open(dirs.runtime / "agent.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def parse_request(line: bytes) -> tuple[str, dict[str, Any]]:
    """Validate one request line; return ``(op, args)``.

    :raises UsageError: not JSON, not an object, wrong version, unknown op or arguments, bad values.
    """
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        msg = "malformed request: one JSON object on one line expected"
        raise UsageError(msg) from None
    if json_depth(text) > MAX_DEPTH:
        msg = f"malformed request: JSON nested deeper than {MAX_DEPTH} levels; a request is one flat object"
        raise UsageError(msg)
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        msg = "malformed request: one JSON object on one line expected"
        raise UsageError(msg) from None
    if not isinstance(obj, dict):
        msg = "malformed request: one JSON object on one line expected"
        raise UsageError(msg)
    version = obj.pop("v", None)
    if version != PROTOCOL_VERSION or isinstance(version, bool):
        msg = (
            f"this agent speaks control protocol version {PROTOCOL_VERSION}. "
            "Fix: use the optin command of the same version as the running agent"
        )
        raise UsageError(msg)
    op = obj.pop("op", None)
    if not isinstance(op, str) or op not in _OPS:
        msg = f"unknown request; the agent answers {', '.join(sorted(_OPS))}"
        raise UsageError(msg)
    extra = set(obj) - _ARGS[op]
    if extra:
        msg = f"{op} takes no argument named {', '.join(sorted(repr(k)[:40] for k in extra))}"
        raise UsageError(msg)
    return op, _checked_args(op, {k: v for k, v in obj.items() if v is not None})


def _checked_args(op: str, args: dict[str, Any]) -> dict[str, Any]:
    """``args`` of ``op`` with their values checked (numbers bounded, patterns bounded)."""
    if op == "delete_last" and "seconds" not in args:
        msg = "delete_last needs seconds"
        raise UsageError(msg)
    if "seconds" in args:
        what, limit = _SECONDS_LIMIT[op]
        args["seconds"] = check_seconds(args["seconds"], what=what, limit=limit)
    if op == "exclude":
        for key in ("app_class", "title"):
            if key in args:
                args[key] = _pattern(key, args[key])
        if len(args) > 1:
            msg = "exclude takes an app class or a title pattern, not both"
            raise UsageError(msg)
    return args


def _reject_constant(name: str) -> Any:
    msg = f"{name} is not a number"
    raise ValueError(msg)


def json_depth(text: str) -> int:
    """How deep ``[`` and ``{`` nest in JSON ``text`` (outside strings); linear, no recursion.

    Checked before parsing, because Python's parser recurses and fails on deep nesting.
    """
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _pattern(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        msg = f"{key} must be a non-empty string"
        raise UsageError(msg)
    if len(value) > MAX_PATTERN:
        msg = f"{key} is longer than {MAX_PATTERN} characters"
        raise UsageError(msg)
    return value


def _error(message: str, exit_code: int) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "ok": False, "error": message, "exit": exit_code}


def _encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, allow_nan=False, separators=(",", ":")).encode("utf-8") + b"\n"


class _TooLong(Exception):
    """A line longer than the limit."""


def _read_line(conn: socket.socket, limit: int) -> bytes:
    """Read up to the first newline (excluded); EOF ends the line too.

    :raises _TooLong: no newline within ``limit`` bytes.
    :raises TimeoutError: the peer was too slow.
    """
    buf = bytearray()
    while True:
        chunk = conn.recv(min(65536, limit + 1 - len(buf)))
        if not chunk:
            return bytes(buf)
        newline = chunk.find(b"\n")
        if newline >= 0:
            buf += chunk[:newline]
            if len(buf) + 1 > limit:
                raise _TooLong
            return bytes(buf)
        buf += chunk
        if len(buf) >= limit:
            raise _TooLong


@contextlib.contextmanager
def _short_address(path: Path) -> Iterator[str]:
    """An address for ``path`` that fits ``sun_path``.

    A long runtime dir (a deep ``OPTIN_HOME``) is reached through
    ``/proc/self/fd/N`` of the directory, opened for the duration (Linux).
    """
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        yield str(path)
        return
    if not Path("/proc/self/fd").is_dir():
        msg = (
            f"the control socket path {path} is longer than {_SUN_PATH_MAX} bytes. "
            "Fix: set a shorter OPTIN_HOME"
        )
        raise EnvironmentProblem(msg)
    fd = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


# -- the command line's side -----------------------------------------------------------------------


def request(dirs: Dirs, op: str, *, timeout: float | None = None, **args: Any) -> dict[str, Any]:
    """Send one request to this user's running agent and return its (successful) reply.

    :raises AgentNotRunning: no socket, or nobody listens on it (exit 3).
    :raises AgentError: the agent answered with an error (its message and exit code).
    :raises EnvironmentProblem: the socket cannot be reached (permissions).
    :raises OptinError: the agent did not answer in time, or answered nonsense.
    """
    message = {"v": PROTOCOL_VERSION, "op": op, **args}
    wait = REPLY_TIMEOUT_S.get(op, 15.0) if timeout is None else timeout
    reply = exchange(socket_path(dirs), _encode(message), timeout=wait)
    if reply.get("ok") is True:
        return reply
    error = reply.get("error")
    code = reply.get("exit")
    if not isinstance(error, str):
        error = "the agent refused the request without saying why"
    if isinstance(code, bool) or not isinstance(code, int) or not 1 <= code <= 125:
        code = 1
    raise AgentError(error, code)


def exchange(path: Path, data: bytes, *, timeout: float) -> dict[str, Any]:
    """Connect to ``path``, send ``data``, return the decoded one-line reply.

    A peer that answers before reading (a refusal) is still heard: a failed send
    does not stop the reply from being read.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(min(timeout, 5.0))
        try:
            with _short_address(path) as address:
                sock.connect(address)
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            raise AgentNotRunning from None
        except PermissionError:
            msg = (
                f"permission denied on the optin control socket {path}. "
                "Fix: run optin as the user who runs the agent"
            )
            raise EnvironmentProblem(msg) from None
        except TimeoutError:
            msg = f"the optin agent did not accept the connection within {min(timeout, 5.0):g} s"
            raise OptinError(msg) from None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        sock.settimeout(timeout)
        try:
            line = _read_line(sock, MAX_REPLY)
        except TimeoutError:
            msg = f"the optin agent did not answer within {timeout:g} s; see `optin status`"
            raise OptinError(msg) from None
        except _TooLong:
            msg = f"the optin agent's answer is longer than {MAX_REPLY} bytes"
            raise OptinError(msg) from None
        except ConnectionResetError:
            line = b""
    finally:
        sock.close()
    if not line:
        msg = "the optin agent closed the connection without answering; see its log"
        raise OptinError(msg)
    try:
        text = line.decode("utf-8")
        reply = json.loads(text) if json_depth(text) <= MAX_DEPTH else None
    except (UnicodeDecodeError, ValueError, RecursionError):
        reply = None
    if not isinstance(reply, dict):
        msg = "the optin agent's answer is not a JSON object; are the command and agent the same version?"
        raise OptinError(msg)
    return reply
