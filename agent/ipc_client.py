"""The command line's side of the control socket: send one request to this user's running agent.

:func:`request` is what ``optin status|pause|resume|delete-last|exclude`` call;
:func:`exchange` is one connection (connect, send a line, read the one-line reply).
The protocol is in :mod:`agent.ipc_protocol`, the agent's side in :mod:`agent.ipc`.
"""

from __future__ import annotations

import contextlib
import json
import socket
from pathlib import Path
from typing import Any

from agent.backends import platform_calls
from agent.errors import EnvironmentProblem, OptinError
from agent.ipc_protocol import (
    MAX_DEPTH,
    MAX_REPLY,
    PROTOCOL_VERSION,
    REPLY_TIMEOUT_S,
    AgentError,
    AgentNotRunning,
    control_unavailable,
    encode,
    json_depth,
    short_address,
    socket_path,
)
from agent.paths import Dirs


def request(dirs: Dirs, op: str, *, timeout: float | None = None, **args: Any) -> dict[str, Any]:
    """Send one request to this user's running agent and return its (successful) reply.

    :raises AgentNotRunning: no socket, or nobody listens on it (exit 3).
    :raises AgentError: the agent answered with an error (its message and exit code).
    :raises EnvironmentProblem: the socket cannot be reached (permissions).
    :raises OptinError: the agent did not answer in time, or answered nonsense.
    """
    message = {"v": PROTOCOL_VERSION, "op": op, **args}
    wait = REPLY_TIMEOUT_S.get(op, 15.0) if timeout is None else timeout
    reply = exchange(socket_path(dirs), encode(message), timeout=wait)
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

    :raises ControlUnavailable: this platform serves no control socket (Windows).
    """
    if not platform_calls.peer_credentials_available():
        raise control_unavailable()
    sock = platform_calls.unix_stream_socket()
    try:
        sock.settimeout(min(timeout, 5.0))
        try:
            with short_address(path) as address:
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
