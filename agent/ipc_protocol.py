"""The control socket's wire: where it lives, what a request and a reply are, and how a request is checked.

Shared by the agent's side (:mod:`agent.ipc`) and the command line's side
(:mod:`agent.ipc_client`); nothing here opens a socket or logs.  The ops, their
arguments and the :class:`Controller` method each one calls are stated here.

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
    → {"v": 1, "op": "task_start", "id": "find-flight"}   (or "instruction": TEXT, one of the two)
    ← {"v": 1, "ok": true, "task": {"id": ..., "source": ..., "started_at": ..., ...}}
    → {"v": 1, "op": "task_done"}                        (task_fail alike)
    ← {"v": 1, "ok": true, "ended": {"id": ..., "outcome": "done", "seconds": 42.1}}
    → {"v": 1, "op": "task_abandon", "task_id": "find-flight"}   (task_id optional: the task
                                                         the volunteer means; absent: the running one)
    ← {"v": 1, "ok": true, "ended": {"id": ..., "outcome": "abandoned", ..., "deleted": {...}}}
    → {"v": 1, "op": "task_status"}
    ← {"v": 1, "ok": true, "tasks": {"mode": ..., "tasks": [...], "running": ..., "last": ...}}
    ← {"v": 1, "ok": false, "error": "what failed and the fix", "exit": 2}

``exit`` is the exit code the command line should end with.  Errors the agent
raises on purpose (:class:`agent.errors.OptinError`) travel with their message
(which by the house rules never holds captured content); anything else becomes
an opaque ``internal error``.

Numbers are checked (finite, positive, a pause at most
:data:`agent.pausing.MAX_PAUSE_S`, a deletion at most
:data:`agent.pausing.MAX_DELETE_S`), a task id is at most
:data:`agent.events.MAX_TASK_ID` characters, an instruction at most
:data:`agent.events.MAX_INSTRUCTION`, on one line, without control, bidi or
zero-width characters (:func:`agent.events.instruction_problem`; a refusal names
code points and lengths, never the text), and JSON nested deeper than
:data:`MAX_DEPTH` is refused before it is parsed (:func:`parse_request`).

**Replies** are UTF-8 JSON with non-ASCII characters written as themselves
(``ensure_ascii`` off: an escaped CJK character takes 6 bytes, an escaped emoji
12), and at most :data:`MAX_REPLY` bytes: room for the largest reply a valid
study can make, ``task_status`` listing every task of a study file of
:data:`agent.study.MAX_STUDY_BYTES`.  The agent refuses to send a longer one
(an error reply instead, :mod:`agent.ipc`), so a client never meets a
line it cannot read.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from agent.backends import platform_calls
from agent.errors import EnvironmentProblem, OptinError, UsageError
from agent.events import MAX_TASK_ID, instruction_problem
from agent.paths import Dirs
from agent.pausing import MAX_DELETE_S, MAX_PAUSE_S, check_seconds
from agent.study import MAX_STUDY_BYTES

#: Version of the protocol spoken here (``"v"`` of every request and reply).
PROTOCOL_VERSION = 1
#: Name of the socket in the runtime dir.
SOCKET_NAME = "control.sock"
#: Largest request line, newline included (bytes).
MAX_REQUEST = 64 * 1024
#: Room in a reply for what is not the study's text: the envelope, a running and a last task, status.
REPLY_ENVELOPE = 64 * 1024
#: Largest reply line (bytes, newline included) the agent sends and the client reads.  The largest
#: one a valid study makes is ``task_status``: the study's tasks as JSON.  Each character of a task's
#: text costs at most twice its bytes in the study file (``"``, ``\``, a tab or a line break take
#: 1 byte in a TOML literal string and 2 in JSON; any other character as many bytes as in the file,
#: as :func:`encode` leaves non-ASCII unescaped), and each task's keys and punctuation less than
#: twice their shortest TOML form; so a study file of at most :data:`MAX_STUDY_BYTES` makes at most
#: twice that (tests/unit/test_task_replies.py builds the largest ones).
MAX_REPLY = 2 * MAX_STUDY_BYTES + REPLY_ENVELOPE
#: Deepest JSON nesting accepted in a request (a request is one flat object).
MAX_DEPTH = 8
#: How long the command line waits for an answer, by op (seconds): pausing joins capture threads,
#: resuming starts them, deleting seals, shreds and reopens sessions.
REPLY_TIMEOUT_S = {
    "status": 5.0,
    "pause": 15.0,
    "resume": 15.0,
    "delete_last": 120.0,
    "exclude": 15.0,
    # starting a task seals the session and opens one; giving it up also shreds it
    "task_start": 30.0,
    "task_done": 15.0,
    "task_fail": 15.0,
    "task_abandon": 120.0,
    "task_status": 5.0,
}
#: Longest app class or title pattern accepted (characters).
MAX_PATTERN = 1024
#: The message when no agent answers.
NOT_RUNNING = "no optin agent is running for this user (start it with `optin run`)"
#: The ops the agent answers.
OPS = frozenset(REPLY_TIMEOUT_S)

_SECONDS_LIMIT = {"pause": ("a pause", MAX_PAUSE_S), "delete_last": ("delete-last", MAX_DELETE_S)}
_ARGS = {
    "status": frozenset(),
    "pause": frozenset({"seconds"}),
    "resume": frozenset(),
    "delete_last": frozenset({"seconds"}),
    "exclude": frozenset({"app_class", "title"}),
    "task_start": frozenset({"id", "instruction"}),
    "task_done": frozenset(),
    "task_fail": frozenset(),
    "task_abandon": frozenset({"task_id"}),
    "task_status": frozenset(),
}


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

    def start_task(self, task_id: str | None = None, instruction: str | None = None) -> dict[str, Any]:
        """Start the study's task ``task_id`` or the volunteer's ``instruction``; return it (no text)."""
        ...

    def finish_task(self, outcome: str) -> dict[str, Any]:
        """End the running task as ``done`` or ``failed``; return how it ended."""
        ...

    def abandon_task(self, expected_id: str | None = None) -> dict[str, Any]:
        """Give the running task up (its session is deleted); return how it ended and what was deleted.

        ``expected_id``: the task the volunteer means; another one is never deleted in its place.
        """
        ...

    def task_status(self) -> dict[str, Any]:
        """The study's tasks, the running one and the last one's end (no volunteer's instruction)."""
        ...


class AgentNotRunning(OptinError):
    """No optin agent of this user answers on the control socket (exit 3)."""

    exit_code = 3

    def __init__(self, message: str = NOT_RUNNING) -> None:
        super().__init__(message)


class ControlUnavailable(EnvironmentProblem):
    """This platform cannot check who connects (no ``SO_PEERCRED`` or ``LOCAL_PEERCRED``): no control
    socket is served."""


def control_unavailable() -> ControlUnavailable:
    """The error for a platform without a peer-credential check (Windows)."""
    msg = (
        "the command-line control of a running agent needs Unix sockets with SO_PEERCRED "
        f"(Linux); not available on {sys.platform}. Use the tray menu instead"
    )
    return ControlUnavailable(msg)


class AgentError(OptinError):
    """The running agent answered a request with an error; carries the exit code it asked for."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def socket_path(dirs: Dirs) -> Path:
    """Where the running agent listens."""
    return dirs.runtime / SOCKET_NAME


@contextlib.contextmanager
def short_address(path: Path) -> Iterator[str]:
    """An address for ``path`` that fits ``sun_path``.

    A long runtime dir (a deep ``OPTIN_HOME``) is reached through
    ``/proc/self/fd/N`` of the directory, opened for the duration (Linux).
    """
    if len(os.fsencode(path)) <= platform_calls.UNIX_PATH_MAX:
        yield str(path)
        return
    if not Path("/proc/self/fd").is_dir():
        msg = (
            f"the control socket path {path} is longer than {platform_calls.UNIX_PATH_MAX} bytes. "
            "Fix: set a shorter OPTIN_HOME"
        )
        raise EnvironmentProblem(msg)
    fd = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


# -- requests --------------------------------------------------------------------------------------


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
    if not isinstance(op, str) or op not in OPS:
        msg = f"unknown request; the agent answers {', '.join(sorted(OPS))}"
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
    if op == "task_start":
        if len(args) != 1:
            msg = "task_start takes a study task's id or an instruction (one of the two)"
            raise UsageError(msg)
        if "id" in args:
            args["id"] = _task_id(args["id"])
        else:
            args["instruction"] = _instruction(args["instruction"])
    if op == "task_abandon" and "task_id" in args:
        args["task_id"] = _task_id(args["task_id"], key="task_id")
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


def _task_id(value: Any, *, key: str = "id") -> str:
    if not isinstance(value, str) or not value:
        msg = f"{key} must be a non-empty string"
        raise UsageError(msg)
    if len(value) > MAX_TASK_ID or not value.isprintable() or not value.isascii():
        msg = f"{key} must be a task's id: at most {MAX_TASK_ID} printable ASCII characters"
        raise UsageError(msg)
    return value


def _instruction(value: Any) -> str:
    if not isinstance(value, str):
        msg = "instruction must be a string"
        raise UsageError(msg)
    problem = instruction_problem(value)
    if problem is not None:
        raise UsageError(problem)
    return value


# -- replies and lines -----------------------------------------------------------------------------


def error_reply(message: str, exit_code: int) -> dict[str, Any]:
    """The reply refusing a request with ``message``; the command line ends with ``exit_code``."""
    return {"v": PROTOCOL_VERSION, "ok": False, "error": message, "exit": exit_code}


def encode(obj: dict[str, Any]) -> bytes:
    """``obj`` as one compact UTF-8 JSON line (request or reply), non-ASCII written as itself; NaN and
    infinities are refused.  A string with a lone surrogate (a request may carry one as ``\\ud800``;
    UTF-8 cannot) makes the whole line ASCII-escaped instead: valid JSON that reads back the same."""
    try:
        text = json.dumps(obj, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
        return text.encode("utf-8") + b"\n"
    except UnicodeEncodeError:
        return json.dumps(obj, allow_nan=False, separators=(",", ":")).encode("ascii") + b"\n"
