"""Reading the X11 clipboard and primary selection for real, on the private Xvfb display.

The selection owners are real X clients in their own processes: Tk (what
tkinter's ``clipboard_append`` and ``selection_own`` do, as any toolkit app
would), and raw python-xlib owners that misbehave on purpose (never answer,
answer with an INCR transfer, refuse ``UTF8_STRING``).
"""

from __future__ import annotations

import os
import select
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from agent.backends.base import CLIPBOARD_TIMEOUT_S, MAX_PASTE_CHARS
from agent.backends.virtual_display import stop_process
from agent.backends.xorg import XorgBackend
from tests.tools import unavailable

pytestmark = pytest.mark.display

#: A Tk application that owns CLIPBOARD (argv[1] == "clipboard") or PRIMARY with the text on stdin.
TK_OWNER = """
import sys, tkinter
source = sys.argv[1]
text = sys.stdin.buffer.read().decode("utf-8")
root = tkinter.Tk()
root.withdraw()
if source == "clipboard":
    root.clipboard_clear()
    root.clipboard_append(text)
else:
    root.selection_handle(lambda offset, length: text[int(offset):int(offset) + int(length)])
    root.selection_own()
root.update()  # XSync: the server has made us the owner before we say so
print("ready", flush=True)
root.mainloop()
"""

#: A python-xlib owner of CLIPBOARD or PRIMARY (argv[2]) that behaves as argv[1] says:
#: ``silent`` never reads its requests; ``incr`` starts an INCR transfer announcing as
#: many bytes as stdin has, and never sends a chunk; ``string-only`` refuses UTF8_STRING
#: and answers STRING with the stdin bytes.
RAW_OWNER = """
import signal, sys
from Xlib import X, Xatom, display as xdisplay
from Xlib.protocol import event as xevent
mode, source = sys.argv[1], sys.argv[2]
payload = sys.stdin.buffer.read()
d = xdisplay.Display()
sel = Xatom.PRIMARY if source == "primary" else d.intern_atom("CLIPBOARD")
utf8, incr = d.intern_atom("UTF8_STRING"), d.intern_atom("INCR")
window = d.screen().root.create_window(0, 0, 1, 1, 0, X.CopyFromParent)
window.set_selection_owner(sel, X.CurrentTime)
owner = d.get_selection_owner(sel)
assert getattr(owner, "id", owner) == window.id
print("ready", flush=True)
if mode == "silent":
    while True:
        signal.pause()
while True:
    e = d.next_event()
    if e.type != X.SelectionRequest:
        continue
    prop = e.property
    if mode == "incr":
        e.requestor.change_property(prop, incr, 32, [len(payload)])
    elif e.target == utf8:
        prop = X.NONE
    else:
        e.requestor.change_property(prop, Xatom.STRING, 8, payload)
    print("asked", d.get_atom_name(e.target), flush=True)
    reply = xevent.SelectionNotify(
        time=e.time, requestor=e.requestor, selection=e.selection, target=e.target, property=prop
    )
    e.requestor.send_event(reply)
    d.flush()
"""


def need_tkinter() -> None:
    """Fail (CI) or skip (locally) without tkinter, like the display tools in conftest."""
    try:
        import tkinter  # noqa: F401 - only to check that it exists
    except ImportError as exc:
        unavailable(
            f"the clipboard tests need tkinter ({exc}): apt-get install python3-tk (make system-deps)"
        )


def read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    """The next line ``proc`` printed ("" if none within ``timeout``); unbuffered, so lines
    are never hidden in a buffer where select() cannot see them."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        byte = os.read(fd, 1) if ready else b""
        if not byte:
            break
        line += byte
    return line.decode().strip()


@contextmanager
def owner(code: str, *args: str, data: bytes) -> Iterator[subprocess.Popen[bytes]]:
    """A process that owns a selection (``code`` run with ``args``, ``data`` on stdin); always stopped."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert proc.stdin is not None
        proc.stdin.write(data)
        proc.stdin.close()
        line = read_line(proc, 20.0)
        if line != "ready":
            stop_process(proc)
            err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
            pytest.fail(f"the selection owner did not start: {line!r} {err}")
        yield proc
    finally:
        stop_process(proc)


def tk_owner(source: str, text: str) -> Any:
    need_tkinter()
    return owner(TK_OWNER, source, data=text.encode("utf-8"))


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


@pytest.mark.parametrize("source", ["clipboard", "primary"])
@pytest.mark.parametrize("text", ["hello, clipboard", "Grüße 😀 — ✓\nzweite Zeile\ttab"])
def test_reads_text_from_a_real_owner(backend: XorgBackend, source: str, text: str) -> None:
    with tk_owner(source, text):
        got, elapsed = timed(lambda: backend.read_clipboard(source))
    assert got == text
    assert elapsed < CLIPBOARD_TIMEOUT_S


def test_clipboard_and_primary_are_separate(backend: XorgBackend) -> None:
    with tk_owner("clipboard", "copied"), tk_owner("primary", "selected"):
        assert backend.read_clipboard("clipboard") == "copied"
        assert backend.read_clipboard() == "copied"
        assert backend.read_clipboard("primary") == "selected"
        assert backend.read_clipboard("secondary") is None  # not a source


def test_no_owner_and_empty_text_give_none(backend: XorgBackend) -> None:
    with tk_owner("clipboard", "") as proc:
        assert backend.read_clipboard() is None  # owned, but empty
        stop_process(proc)
    # the owner is gone: the server forgot the selection (asked before the request goes out)
    got, elapsed = timed(backend.read_clipboard)
    assert got is None
    assert elapsed < 0.1


@pytest.mark.parametrize(
    ("source", "text"),
    [
        ("clipboard", "a" * 3999),  # one property
        ("clipboard", ("Grüße 😀 " * 800)[:4001]),  # Tk uses an INCR transfer above 4000 bytes
        ("clipboard", ("Grüße 😀 " * 5000)[:20_000]),
        # (not non-ASCII through selection_handle: Tk counts its offsets in bytes there)
        ("primary", "p" * 20_000),
    ],
)
def test_texts_tk_sends_by_incr_are_read(backend: XorgBackend, source: str, text: str) -> None:
    with tk_owner(source, text):
        assert backend.read_clipboard(source) == text


def test_text_over_the_cap_gives_none_at_the_cap_is_kept(backend: XorgBackend) -> None:
    at_cap = "é" * (MAX_PASTE_CHARS - 1) + "x"  # 128 KiB of UTF-8
    with tk_owner("clipboard", at_cap):
        got, elapsed = timed(backend.read_clipboard)
        assert got == at_cap
        assert elapsed < CLIPBOARD_TIMEOUT_S
        print(f"read {len(at_cap)} chars ({len(at_cap.encode())} bytes, INCR) in {elapsed * 1000:.1f} ms")
    with tk_owner("clipboard", at_cap + "y"):
        assert backend.read_clipboard() is None
    with tk_owner("clipboard", "x" * (4 * MAX_PASTE_CHARS + 10)):  # over the byte cap as well
        got, elapsed = timed(backend.read_clipboard)
        assert got is None
        assert elapsed < CLIPBOARD_TIMEOUT_S


def test_owner_that_never_answers_gives_none_in_time(backend: XorgBackend) -> None:
    with owner(RAW_OWNER, "silent", "clipboard", data=b""):
        got, elapsed = timed(backend.read_clipboard)
        assert got is None
        assert CLIPBOARD_TIMEOUT_S * 0.9 <= elapsed < CLIPBOARD_TIMEOUT_S + 0.25
        # the next read is not confused by the abandoned request
        got, elapsed = timed(backend.read_clipboard)
        assert got is None
        assert elapsed < CLIPBOARD_TIMEOUT_S + 0.25
    with tk_owner("clipboard", "after a hung owner"):
        assert backend.read_clipboard() == "after a hung owner"


def test_incr_transfer_that_stalls_gives_none_in_time(backend: XorgBackend) -> None:
    with owner(RAW_OWNER, "incr", "clipboard", data=b"x" * 10) as proc:
        got, elapsed = timed(backend.read_clipboard)
        assert got is None
        assert CLIPBOARD_TIMEOUT_S * 0.9 <= elapsed < CLIPBOARD_TIMEOUT_S + 0.25
        assert read_line(proc, 5.0) == "asked UTF8_STRING"


def test_incr_transfer_announcing_more_than_the_cap_is_not_started(backend: XorgBackend) -> None:
    with owner(RAW_OWNER, "incr", "clipboard", data=b"x" * (4 * MAX_PASTE_CHARS + 2)):
        got, elapsed = timed(backend.read_clipboard)
    assert got is None
    assert elapsed < 0.2


def test_owner_without_utf8_string_is_read_as_latin1_string(backend: XorgBackend) -> None:
    with owner(RAW_OWNER, "string-only", "primary", data="Grüße".encode("latin-1")) as proc:
        assert backend.read_clipboard("primary") == "Grüße"
        assert read_line(proc, 5.0) == "asked UTF8_STRING"
        assert read_line(proc, 5.0) == "asked STRING"


def test_read_latency_is_a_few_milliseconds(backend: XorgBackend) -> None:
    with tk_owner("clipboard", "latency probe " * 20):
        times = []
        for _ in range(30):
            got, elapsed = timed(backend.read_clipboard)
            assert got is not None
            times.append(elapsed * 1000)
    median = statistics.median(times)
    print(f"read_clipboard on Xvfb: median {median:.2f} ms, max {max(times):.2f} ms (30 reads)")
    assert median < 50
