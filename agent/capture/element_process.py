"""Element lookups in a child process: the finder runs apart from the recorder.

Why a process: measured in the agent with the tray's GTK main loop running, each AT-SPI lookup
took a p50 of 18-70 ms instead of 2.7 ms alone (libatspi's D-Bus connection is dispatched on
the default GLib context, which the tray's main loop iterates on another thread, and the agent's
threads share one interpreter), so most lookups ran over their budget; and a fault inside the
accessibility library (one aborted a test process) must never take the recording with it.  The
child has its own interpreter and main context, and only its own lookups.

:class:`ProcessFinder` is an :class:`~agent.capture.element_lookup.ElementFinder` for the
worker of :class:`~agent.capture.element_lookup.ElementLookup`: it starts the child, sends one
request per lookup and reads the answer within the budget.  The child asks back about the
window it resolved before it reads anything of the application (``allow``), so the deny rules
and optin's own windows are judged here, where they live.  A child that does not answer in
time is killed and started again at the next lookup (that lookup is ``late``); one that died
is ``failed``.

The wire (one JSON object per line, each at most :data:`MAX_LINE` bytes, UTF-8):
parent → child ``{"op": "point", "x": X, "y": Y}``, ``{"op": "focus"}``, ``{"allow": BOOL}``;
child → parent ``{"window": W}`` (the window to judge: :func:`window_to_wire`) or
``{"lookup": L}`` (:func:`lookup_to_wire`).  Names cross the pipe between two optin processes,
never a file or a log.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

from agent.capture.element_lookup import ElementFinder, WindowCheck
from agent.elements import FAILED, LATE, Element, Lookup
from agent.events import WindowFocus

logger = logging.getLogger(__name__)

#: Longest line either side writes (bytes); a longer one ends the child.
MAX_LINE = 64 * 1024
#: Time the child may take to start and say it is ready (seconds).
START_TIMEOUT_S = 10.0
#: Extra time past the budget before an answer counts as never coming (the pipe, scheduling).
SLACK_S = 0.05
#: What :meth:`ProcessFinder._read` answers for a line that is not a message.
_MALFORMED: Any = object()


def _window_fields(window: WindowFocus) -> dict[str, Any]:
    return {k: getattr(window, k) for k in ("title", "app_class", "pid", "x", "y", "width", "height")}


def window_to_wire(window: WindowFocus) -> dict[str, Any]:
    """A window to judge, as the child sends it."""
    return _window_fields(window)


def window_from_wire(obj: Any) -> WindowFocus | None:
    """The window the child sent, or None when it is not one (then the window is refused)."""
    if not isinstance(obj, Mapping):
        return None
    title, app_class = obj.get("title"), obj.get("app_class")
    numbers = [obj.get(k) for k in ("pid", "x", "y", "width", "height")]
    if (title is not None and not isinstance(title, str)) or (
        app_class is not None and not isinstance(app_class, str)
    ):
        return None
    if any(v is not None and (isinstance(v, bool) or not isinstance(v, int)) for v in numbers):
        return None
    pid, x, y, width, height = numbers
    return WindowFocus(0, title, app_class, pid, x, y, width, height)


def lookup_to_wire(lookup: Lookup) -> dict[str, Any]:
    """A lookup's answer, as the child sends it."""
    element = lookup.element
    out: dict[str, Any] = {"reason": lookup.reason, "window_id": lookup.window_id, "pid": lookup.pid}
    if element is not None:
        out["element"] = {
            "role": element.role,
            "name": element.name,
            "states": list(element.states),
            "bounds": list(element.bounds) if element.bounds is not None else None,
            "app": element.app,
            "pid": element.pid,
            "path": [list(step) for step in element.path],
            "automation_id": element.automation_id,
        }
    return out


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _strs(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _bounds(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 4 and all(_int(v) is not None for v in value)


def lookup_from_wire(obj: Any) -> Lookup:
    """The child's answer (a malformed one is a failed lookup)."""
    if not isinstance(obj, Mapping) or not isinstance(obj.get("reason"), str):
        return Lookup(None, FAILED, None, None)
    window_id, pid = _int(obj.get("window_id")), _int(obj.get("pid"))
    raw = obj.get("element")
    if raw is None:
        return Lookup(None, obj["reason"], window_id, pid)
    try:
        bounds = raw["bounds"]
        path = raw["path"]
        if not (
            isinstance(raw["role"], str)
            and isinstance(raw["name"], str)
            and _strs(raw["states"])
            and (
                bounds is None
                or (
                    isinstance(bounds, list) and len(bounds) == 4 and all(_int(v) is not None for v in bounds)
                )
            )
            and isinstance(raw["app"], str)
            and isinstance(path, list)
            and all(_strs(step) and len(step) == 2 for step in path)
            and isinstance(raw["automation_id"], str)
        ):
            return Lookup(None, FAILED, window_id, pid)
        element = Element(
            role=raw["role"],
            name=raw["name"],
            states=tuple(raw["states"]),
            bounds=(bounds[0], bounds[1], bounds[2], bounds[3]) if bounds is not None else None,
            app=raw["app"],
            pid=_int(raw.get("pid")) or 0,
            path=tuple((step[0], step[1]) for step in path),
            automation_id=raw["automation_id"],
        )
    except (KeyError, TypeError, IndexError):
        return Lookup(None, FAILED, window_id, pid)
    return Lookup(element, "", window_id, pid)


class ProcessFinder:
    """The parent's side: a finder whose lookups run in a child process ``argv``.

    :param argv: the child's command line (it speaks the wire above on stdin and stdout and
        prints ``{"ready": true}`` once it can answer).
    :param budget_s: the time one lookup may take before it is ``late``.
    :param allow: judges each window the child resolves (None: every window is allowed).
    """

    def __init__(self, argv: Sequence[str], budget_s: float, allow: WindowCheck | None) -> None:
        self._argv = list(argv)
        self._budget_s = budget_s
        self._allow = allow
        self._child: subprocess.Popen[bytes] | None = None
        self._buffer = b""
        self.restarts = 0
        self._spawn()

    # -- the finder --------------------------------------------------------------------------------

    def element_at(self, x: int, y: int) -> Lookup:
        return self._ask({"op": "point", "x": int(x), "y": int(y)})

    def focused_element(self) -> Lookup:
        return self._ask({"op": "focus"})

    def close(self) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        with contextlib.suppress(OSError):
            if child.stdin is not None:
                child.stdin.close()
        try:
            child.wait(1.0)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        for stream in (child.stdout,):
            if stream is not None:
                stream.close()

    # -- the child ---------------------------------------------------------------------------------

    def _spawn(self) -> None:
        """Start the child and wait for it to be ready.

        :raises OSError: it could not start or did not say it was ready (lookups then do not run).
        """
        env = dict(os.environ)
        child = subprocess.Popen(
            self._argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # its log lines (counts and types only) join the agent's
            env=env,
            close_fds=True,
        )
        self._child = child
        self._buffer = b""
        ready = self._read(time.monotonic() + START_TIMEOUT_S)
        if not isinstance(ready, Mapping) or ready.get("ready") is not True:
            self.close()
            msg = "the element lookup process did not start"
            raise OSError(msg)

    def _ask(self, request: dict[str, Any]) -> Lookup:
        if not self._running():
            return Lookup(None, FAILED, None, None)
        deadline = time.monotonic() + self._budget_s + SLACK_S
        sent = self._send(request)
        while sent:
            reply = self._read(deadline)
            if reply is None:  # no answer in time: this child is replaced at the next lookup
                self._kill()
                return Lookup(None, LATE, None, None)
            if isinstance(reply, Mapping) and "lookup" in reply:
                return lookup_from_wire(reply["lookup"])
            if not (isinstance(reply, Mapping) and "window" in reply):
                break  # a line that is no message: this child is not trusted further
            window = window_from_wire(reply["window"])
            allowed = window is not None and (self._allow is None or self._allow(window))
            sent = self._send({"allow": allowed})
        self._kill()
        return Lookup(None, FAILED, None, None)

    def _running(self) -> bool:
        """Whether a child is there to ask, starting a new one when the last one ended."""
        if self._child is not None and self._child.poll() is None:
            return True
        try:
            self.close()
            self.restarts += 1
            self._spawn()
        except OSError:
            return False
        return True

    def _kill(self) -> None:
        child = self._child
        if child is not None and child.poll() is None:
            child.kill()
        self.close()

    def _send(self, obj: dict[str, Any]) -> bool:
        child = self._child
        if child is None or child.stdin is None:
            return False
        try:
            child.stdin.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")
            child.stdin.flush()
        except OSError:
            return False
        return True

    def _read(self, deadline: float) -> Any:
        """The next line from the child as JSON; None when no line came by ``deadline``;
        :data:`_MALFORMED` when the child closed its end or wrote a line too long or not JSON."""
        child = self._child
        if child is None or child.stdout is None:
            return None
        fd = child.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if len(self._buffer) > MAX_LINE:
                return _MALFORMED
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return _MALFORMED  # the child closed its end: it died or quit
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            return json.loads(line) if len(line) <= MAX_LINE else _MALFORMED
        except ValueError:
            return _MALFORMED


def serve(
    make_finder: Callable[[WindowCheck], ElementFinder],
    stdin: IO[bytes] | None = None,
    stdout: IO[bytes] | None = None,
) -> int:
    """The child's side: answer requests on ``stdin`` until it closes; returns the exit status.

    :param make_finder: the platform's finder, given the ``allow`` that asks the parent.
    """
    reader = stdin if stdin is not None else sys.stdin.buffer
    writer = stdout if stdout is not None else sys.stdout.buffer

    def send(obj: dict[str, Any]) -> None:
        writer.write(json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()[:MAX_LINE] + b"\n")
        writer.flush()

    def receive() -> Any:
        line = reader.readline(MAX_LINE + 1)
        if not line:
            raise EOFError
        return json.loads(line)

    def allow(window: WindowFocus) -> bool:
        send({"window": window_to_wire(window)})
        answer = receive()
        return isinstance(answer, Mapping) and answer.get("allow") is True

    try:
        finder = make_finder(allow)
    except Exception as exc:  # no display, no typelib: the type only
        logger.info("element lookups unavailable (%s)", type(exc).__name__)
        return 1
    send({"ready": True})
    try:
        while True:
            try:
                request = receive()
            except EOFError:
                return 0
            if not isinstance(request, Mapping):
                return 1
            op = request.get("op")
            if op == "point" and _int(request.get("x")) is not None and _int(request.get("y")) is not None:
                found = finder.element_at(request["x"], request["y"])
            elif op == "focus":
                found = finder.focused_element()
            else:
                return 1
            send({"lookup": lookup_to_wire(found)})
    except (EOFError, ValueError, OSError):
        return 1
    finally:
        finder.close()


__all__ = [
    "MAX_LINE",
    "ProcessFinder",
    "lookup_from_wire",
    "lookup_to_wire",
    "serve",
    "window_from_wire",
    "window_to_wire",
]
