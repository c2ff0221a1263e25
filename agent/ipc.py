"""The control socket: how ``optin status|pause|resume|delete-last|exclude|task`` reach the running agent.

This module is the agent's side (:class:`ControlServer`) and the public entry: the
protocol's names (:mod:`agent.ipc_protocol`: what a request and a reply are, how a
request is checked) and the command line's client (:mod:`agent.ipc_client`:
:func:`request`, :func:`exchange`) are importable from here too.

**Where.**  ``<runtime dir>/control.sock``, an ``AF_UNIX`` ``SOCK_STREAM``
socket.  The runtime dir is private (0700, :func:`agent.paths.ensure_private_dir`)
and the socket is created 0600 (a ``umask`` around ``bind``, never a chmod
afterwards), so another user cannot even connect; and each connection's peer is
checked with ``SO_PEERCRED`` (``LOCAL_PEERCRED`` on macOS): a peer whose uid is not
the agent's effective uid gets a refusal and nothing else.  Windows has neither, so no
control socket is served there (:class:`ControlUnavailable`).  The per-OS calls are in
:mod:`agent.backends.platform_calls`.

**Protocol (version 1)** (:mod:`agent.ipc_protocol`).  One request per connection: one
JSON object on one line each way.  Log lines name the op and never the rest of a request.

**Slow and hostile clients.**  One thread reads every connection's request with
a selector (no thread per waiting client): a client has :data:`READ_TIMEOUT_S`
*in total* to send its line, at most :data:`MAX_PENDING` may be waiting at once
(one more is answered "busy" at once), and a waiting client costs no handler.
A complete request runs on its own thread, at most :data:`MAX_CONTROL` at once
for ``status``, ``pause``, ``resume``, ``task_done``, ``task_fail`` and ``task_status``
and :data:`MAX_SLOW` for ``delete_last``, ``exclude``, ``task_start`` and ``task_abandon``
(they seal sessions), so slow deletions never make a pause wait; a reply gets
:data:`SEND_TIMEOUT_S` in total.  Every request is checked first
(:func:`agent.ipc_protocol.parse_request`: bounded numbers, bounded nesting), and
every refusal is a reply.

**One agent per user.**  :meth:`ControlServer.start` must be called while the
agent lock (:func:`agent.paths.agent_lock`) is held; it checks that the lock is
held, and only then replaces a socket file that a dead agent left behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import stat
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from agent.backends import platform_calls
from agent.errors import EnvironmentProblem, OptinError, UsageError
from agent.ipc_client import exchange, request
from agent.ipc_protocol import (
    MAX_DEPTH,
    MAX_PATTERN,
    MAX_REPLY,
    MAX_REQUEST,
    NOT_RUNNING,
    PROTOCOL_VERSION,
    REPLY_TIMEOUT_S,
    SOCKET_NAME,
    AgentError,
    AgentNotRunning,
    Controller,
    ControlUnavailable,
    control_unavailable,
    encode,
    error_reply,
    json_depth,
    parse_request,
    short_address,
    socket_path,
)
from agent.paths import Dirs, ensure_private_dir

__all__ = [
    "MAX_CONTROL",
    "MAX_DEPTH",
    "MAX_PATTERN",
    "MAX_PENDING",
    "MAX_REPLY",
    "MAX_REQUEST",
    "MAX_SLOW",
    "NOT_RUNNING",
    "PROTOCOL_VERSION",
    "READ_TIMEOUT_S",
    "REPLY_TIMEOUT_S",
    "SEND_TIMEOUT_S",
    "SOCKET_NAME",
    "AgentError",
    "AgentNotRunning",
    "ControlServer",
    "ControlUnavailable",
    "Controller",
    "agent_lock_held",
    "exchange",
    "json_depth",
    "parse_request",
    "request",
    "socket_path",
]

logger = logging.getLogger(__name__)

#: How long a connected client has, in total, to send its request (seconds).
READ_TIMEOUT_S = 2.0
#: How long the agent tries, in total, to hand a reply to a client (seconds).
SEND_TIMEOUT_S = 2.0
#: Connections waiting for their request at once; one more is answered "busy" at once.
MAX_PENDING = 64
#: ``status``, ``pause``, ``resume``, ``task_done``, ``task_fail`` and ``task_status`` requests running
#: at once (each returns quickly).
MAX_CONTROL = 8
#: ``delete_last``, ``exclude``, ``task_start`` and ``task_abandon`` requests running at once (they
#: seal, shred, write files).
MAX_SLOW = 2

_SLOW_OPS = frozenset({"delete_last", "exclude", "task_start", "task_abandon"})
_UMASK_LOCK = threading.Lock()


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
        if not platform_calls.peer_credentials_available():
            raise control_unavailable()
        ensure_private_dir(self.dirs.runtime)
        if not agent_lock_held(self.dirs):
            msg = "the control socket is served only while the agent lock is held (internal order error)"
            raise UsageError(msg)
        self._remove_stale_socket()
        self._identity = None
        listener = platform_calls.unix_stream_socket()
        try:
            with short_address(self.path) as address, _UMASK_LOCK:
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
        probe = platform_calls.unix_stream_socket()
        probe.settimeout(1.0)
        try:
            with short_address(self.path) as address:
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
                _reply_now(what.conn, error_reply("internal error in the optin agent (its log says so)", 1))

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
                pid, uid = platform_calls.peer_credentials(conn)
            except OSError:
                conn.close()
                continue
            if uid != platform_calls.effective_user_id():
                logger.warning("refused a control connection from another user (uid %d, pid %d)", uid, pid)
                _reply_now(conn, error_reply("refused: an optin agent answers only the user who runs it", 2))
                continue
            if len(pending) >= MAX_PENDING:
                logger.warning("refused a control connection: %d others are still sending", len(pending))
                _reply_now(conn, error_reply("the agent is busy with other requests; try again", 1))
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
                _reply_now(item.conn, error_reply(f"request too large (limit {MAX_REQUEST} bytes)", 2))
            return
        if newline >= 0:
            item.buf += chunk[:newline]
        self._forget(item, sel, pending)
        if len(item.buf) + 1 > MAX_REQUEST:
            _reply_now(item.conn, error_reply(f"request too large (limit {MAX_REQUEST} bytes)", 2))
            return
        self._dispatch(item.conn, bytes(item.buf))

    def _expire(self, sel: selectors.BaseSelector, pending: dict[int, _Pending]) -> None:
        now = time.monotonic()
        for item in [p for p in pending.values() if p.deadline <= now]:
            self._forget(item, sel, pending)
            _reply_now(item.conn, error_reply(f"no request within {READ_TIMEOUT_S:g} s", 2))

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
            _reply_now(conn, error_reply(str(exc), exc.exit_code))
            return
        slots = self._slow_slots if op in _SLOW_OPS else self._control_slots
        if not slots.acquire(blocking=False):
            _reply_now(conn, error_reply(f"the agent is busy with other {op} requests; try again", 1))
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
            _reply_now(conn, error_reply(f"the agent is busy with other {op} requests; try again", 1))

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
            return error_reply(str(exc), exc.exit_code)
        return self._answer(op, args)

    def _answer(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """The reply to a parsed request; never raises."""
        logger.info("control request: %s", op)
        try:
            result = self._call(op, args)
        except OptinError as exc:
            return error_reply(str(exc), exc.exit_code)
        except Exception as exc:  # never echo: the text could quote captured content
            logger.error("control request %s failed: %s", op, type(exc).__name__)
            return error_reply("internal error in the optin agent (its log says which request failed)", 1)
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
        if op.startswith("task_"):
            return self._task_call(op, args)
        return {"status": c.status()}

    def _task_call(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        c = self.controller
        if op == "task_start":
            return {"task": c.start_task(args.get("id"), args.get("instruction"))}
        if op == "task_abandon":
            meant = args.get("task_id")
            return {"ended": c.abandon_task() if meant is None else c.abandon_task(meant)}
        if op == "task_status":
            return {"tasks": c.task_status()}
        return {"ended": c.finish_task("done" if op == "task_done" else "failed")}

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
    """``reply`` as its line; one that is not JSON, or longer than :data:`MAX_REPLY` (the client would
    not read it), becomes an error reply that says so."""
    try:
        line = encode(reply)
    except (TypeError, ValueError) as exc:  # a controller returned something that is not JSON
        logger.error("control reply could not be encoded (%s)", type(exc).__name__)
        return encode(error_reply("internal error in the optin agent (an unencodable reply)", 1))
    if len(line) > MAX_REPLY:
        logger.error("control reply of %d bytes not sent: more than %d", len(line), MAX_REPLY)
        msg = (
            f"internal error in the optin agent: its reply has {len(line)} bytes, more than the "
            f"{MAX_REPLY} a reply may have"
        )
        return encode(error_reply(msg, 1))
    return line


def agent_lock_held(dirs: Dirs) -> bool:
    """Whether some process (normally this one) holds the one-agent-per-user lock.

    Probes with a second lock on a new open file description; taking it
    means nobody held it, so it is released at once.  (The lock belongs to
    the open file description, so the probe never disturbs the holder's lock:
    :func:`agent.backends.platform_calls.probe_lock`.)
    """
    fd = os.open(dirs.runtime / "agent.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        return platform_calls.probe_lock(fd)
    finally:
        os.close(fd)
