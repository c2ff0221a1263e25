"""The UI element lookups of the Windows (UI Automation) and macOS (AX) backends, on Linux.

Neither API exists here: the finders run against stand-ins for the OS calls (the COM objects
comtypes would hand back, the AX call table :class:`~agent.backends.darwin.ax_elements.AxCalls`,
user32's window answers), the way tests/unit/test_backends_win32_darwin.py drives those
backends.  What is checked is the finders' own logic: which calls they make and in what order
(the window judged before anything of the application is read), how the answers become an
:class:`~agent.elements.Element` (roles, states, bounds in pixels, the path and its bound), and
that every failure of a call is a :class:`~agent.elements.Lookup` with a reason, never an
exception, and never a name in a log line or a repr.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from ctypes import wintypes
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from agent.backends.darwin import DarwinBackend
from agent.backends.darwin import ax_model as ax
from agent.backends.darwin.ax_elements import AxElementFinder
from agent.backends.darwin.ax_elements import finder_factory as ax_finder_factory
from agent.backends.darwin.constants import RECORDING_PIXELS_PER_POINT
from agent.backends.darwin.interpret import pick_windows_of
from agent.backends.darwin.native import Cocoa
from agent.backends.win32 import uia_model as uiam
from agent.backends.win32.api import Api
from agent.backends.win32.backend import Win32Backend
from agent.backends.win32.uia import Win32UiaBackend
from agent.backends.win32.uia_com import com_initialize, create_automation
from agent.backends.win32.uia_elements import UiaElementFinder
from agent.capture.element_lookup import ElementLookup, LookupResult
from agent.elements import (
    DENIED,
    FAILED,
    MAX_PATH,
    NO_ELEMENT,
    NO_FOCUS,
    NO_PID,
    NO_WINDOW,
    NOT_ON_BUS,
    OUT_OF_TIME,
    STALLED,
    STATES,
    Element,
    Lookup,
    record_of,
    record_problem,
    result_of,
)
from agent.events import WindowFocus, now_ns

REPO = Path(__file__).resolve().parents[2]
CAPTURED = "Wire 9000 EUR to Mallory"  # a name that must never reach a log line or a repr
CAPTURED_ID = "iban-field-DE89370400440532013000"


def assert_private(lookup: Lookup, caplog: pytest.LogCaptureFixture) -> None:
    """Neither the lookup's repr nor anything logged names the captured text."""
    shown = repr(lookup) + caplog.text
    assert CAPTURED not in shown
    assert CAPTURED_ID not in shown


# =================================================================================================
# Windows: UI Automation
# =================================================================================================

DESKTOP = 0x10010
PID = 4242
ROOT = 0x5001  # the top-level window the hits below live in
OWNER = 0x5000  # the window that owns ROOT (ROOT is a dialog or menu of it)


def signed(hresult: int) -> int:
    """An HRESULT as comtypes raises it (a signed 32-bit number)."""
    return hresult - 2**32 if hresult >= 2**31 else hresult


class FakeCOMError(Exception):
    """comtypes' COMError: ``(hresult, text, details)`` and an ``hresult`` attribute."""

    def __init__(self, hresult: int) -> None:
        super().__init__(signed(hresult), "message text", None)
        self.hresult = signed(hresult)


class Log:
    """What the finder did, in order: calls and cached-property reads."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.reads: list[tuple[str, str]] = []


class FakeElement:
    """An ``IUIAutomationElement`` with a cache: ``Cached*`` properties and
    ``GetCachedPropertyValue``; a property the cache request did not ask for raises, as UI
    Automation does (``E_INVALIDARG``)."""

    def __init__(
        self,
        log: Log,
        label: str,
        *,
        control: int = 50000,
        name: str = "",
        pid: int = PID,
        handle: int = 0,
        rect: tuple[int, int, int, int] = (0, 0, 0, 0),
        automation_id: str = "",
        flags: dict[str, Any] | None = None,
        patterns: dict[int, Any] | None = None,
        parent: FakeElement | None = None,
    ) -> None:
        self._log = log
        self.label = label
        self.parent = parent
        self.parent_error: Exception | None = None
        self.cached: set[int] = set()
        self._values: dict[str, Any] = {
            "CachedControlType": control,
            "CachedName": name,
            "CachedProcessId": pid,
            "CachedNativeWindowHandle": handle,
            "CachedBoundingRectangle": wintypes.RECT(*rect),
            "CachedAutomationId": automation_id,
            "CachedHasKeyboardFocus": False,
            "CachedIsKeyboardFocusable": True,
            "CachedIsEnabled": True,
            "CachedIsPassword": False,
            "CachedIsRequiredForForm": False,
            **(flags or {}),
        }
        self._patterns = patterns or {}

    _IDS: ClassVar[dict[str, int]] = {
        "CachedControlType": uiam.UIA_CONTROL_TYPE,
        "CachedName": uiam.UIA_NAME,
        "CachedProcessId": uiam.UIA_PROCESS_ID,
        "CachedNativeWindowHandle": uiam.UIA_NATIVE_WINDOW_HANDLE,
        "CachedBoundingRectangle": uiam.UIA_BOUNDING_RECTANGLE,
        "CachedAutomationId": uiam.UIA_AUTOMATION_ID,
        "CachedHasKeyboardFocus": uiam.UIA_HAS_KEYBOARD_FOCUS,
        "CachedIsKeyboardFocusable": uiam.UIA_IS_KEYBOARD_FOCUSABLE,
        "CachedIsEnabled": uiam.UIA_IS_ENABLED,
        "CachedIsPassword": uiam.UIA_IS_PASSWORD,
        "CachedIsRequiredForForm": uiam.UIA_IS_REQUIRED_FOR_FORM,
    }

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("Cached"):
            raise AttributeError(name)
        self._log.reads.append((self.label, name))
        if self._IDS[name] not in self.cached:
            raise FakeCOMError(0x80070057)  # E_INVALIDARG: not in the cache
        return self._values[name]

    def GetCachedPropertyValue(self, prop: int) -> Any:
        self._log.reads.append((self.label, str(prop)))
        if prop not in self.cached:
            raise FakeCOMError(0x80070057)
        return self._patterns.get(prop, NOT_SUPPORTED)

    def BuildUpdatedCache(self, cache: FakeCacheRequest) -> FakeElement:
        self._log.calls.append(f"BuildUpdatedCache {self.label}")
        return self.cache_with(cache)

    def cache_with(self, cache: FakeCacheRequest) -> FakeElement:
        """This element as a call with ``cache`` hands it back (a copy holding those properties)."""
        copy = object.__new__(FakeElement)
        copy.__dict__.update(self.__dict__)
        copy.cached = set(cache.properties)
        return copy


#: UI Automation's "not supported" value: an IUnknown, which comtypes hands back as a COM pointer.
NOT_SUPPORTED = object()


class FakeCacheRequest:
    def __init__(self) -> None:
        self.properties: list[int] = []
        self.TreeScope = 0

    def AddProperty(self, prop: int) -> None:
        self.properties.append(prop)


class FakeWalker:
    def __init__(self, log: Log) -> None:
        self._log = log

    def GetParentElementBuildCache(self, element: FakeElement, cache: FakeCacheRequest) -> FakeElement | None:
        self._log.calls.append(f"parent of {element.label}")
        if element.parent_error is not None:
            raise element.parent_error
        return None if element.parent is None else element.parent.cache_with(cache)


class FakeAutomation:
    """``IUIAutomation`` over a fixed tree: ``at`` maps points to hits, ``focus`` is the focused element."""

    def __init__(self, log: Log) -> None:
        self._log = log
        self.requests: list[FakeCacheRequest] = []
        self.ControlViewWalker = FakeWalker(log)
        self.root = FakeElement(log, "desktop", control=50033, handle=DESKTOP, pid=1)
        self.root.cached = {uiam.UIA_NATIVE_WINDOW_HANDLE}
        self.at: dict[tuple[int, int], FakeElement | Exception | None] = {}
        self.focus: FakeElement | Exception | None = None
        self.delay = 0.0

    def CreateCacheRequest(self) -> FakeCacheRequest:
        request = FakeCacheRequest()
        self.requests.append(request)
        return request

    def GetRootElement(self) -> Any:
        return SimpleNamespace(CurrentNativeWindowHandle=DESKTOP)

    def ElementFromPointBuildCache(self, point: Any, cache: FakeCacheRequest) -> FakeElement | None:
        self._log.calls.append(f"ElementFromPoint {point.x},{point.y}")
        time.sleep(self.delay)
        return self._answer(self.at.get((point.x, point.y)), cache)

    def GetFocusedElementBuildCache(self, cache: FakeCacheRequest) -> FakeElement | None:
        self._log.calls.append("GetFocusedElement")
        return self._answer(self.focus, cache)

    @staticmethod
    def _answer(found: FakeElement | Exception | None, cache: FakeCacheRequest) -> FakeElement | None:
        if isinstance(found, Exception):
            raise found
        return None if found is None else found.cache_with(cache)


class FakeWindows:
    """user32/kernel32's answers (:class:`~agent.backends.win32.uia_elements.WindowsInfo`)."""

    def __init__(self) -> None:
        self.roots: dict[int, int] = {}  # any window -> its top-level window
        self.owners: dict[int, int] = {ROOT: OWNER}
        self.described: dict[int, WindowFocus] = {
            ROOT: WindowFocus(now_ns(), "Save as", "notepad.exe", PID, 10, 10, 400, 300),
            OWNER: WindowFocus(now_ns(), "Bank statement - Notepad", "notepad.exe", PID, 0, 0, 800, 600),
        }
        self.point_window: int | None = ROOT
        self.foreground: int | None = ROOT
        self.names = {PID: "notepad.exe"}

    def process_name(self, pid: int | None) -> str | None:
        return self.names.get(pid or 0)

    def root_window(self, hwnd: int) -> int | None:
        return self.roots.get(hwnd, ROOT)

    def root_owner(self, hwnd: int) -> int | None:
        return self.owners.get(hwnd, hwnd)

    def window_at(self, x: int, y: int) -> int | None:
        return self.point_window

    def foreground_window(self) -> int | None:
        return self.foreground

    def describe_window(self, hwnd: int) -> WindowFocus:
        return self.described.get(hwnd, WindowFocus(now_ns(), None, None, None))


def save_dialog(log: Log) -> dict[str, FakeElement]:
    """A Notepad "Save as" dialog: window > pane > button "Save" > text "Save", an edit, a check box."""
    window = FakeElement(log, "window", control=50032, name="Save as", handle=ROOT, rect=(10, 10, 410, 310))
    pane = FakeElement(log, "pane", control=50033, name="", parent=window, rect=(10, 40, 410, 310))
    button = FakeElement(
        log,
        "button",
        control=50000,
        name="Save",
        parent=pane,
        rect=(300, 260, 380, 290),
        automation_id="1",
        flags={"CachedHasKeyboardFocus": False},
    )
    label = FakeElement(log, "label", control=50020, name="Save", parent=button, rect=(310, 265, 370, 285))
    edit = FakeElement(
        log,
        "edit",
        control=50004,
        name=CAPTURED,
        parent=pane,
        rect=(60, 60, 360, 84),
        automation_id=CAPTURED_ID,
        flags={"CachedHasKeyboardFocus": True},
        patterns={uiam.UIA_VALUE_IS_READ_ONLY: False},
    )
    check = FakeElement(
        log,
        "check",
        control=50002,
        name="Hide extensions",
        parent=pane,
        rect=(20, 100, 160, 120),
        patterns={uiam.UIA_TOGGLE_STATE: 1},
    )
    return {"window": window, "pane": pane, "button": button, "label": label, "edit": edit, "check": check}


def uia_finder(
    allow: Callable[[WindowFocus], bool] | None = None, budget_s: float = 5.0
) -> tuple[UiaElementFinder, FakeAutomation, FakeWindows, Log, dict[str, FakeElement]]:
    log = Log()
    automation = FakeAutomation(log)
    windows = FakeWindows()
    tree = save_dialog(log)
    automation.at = {(320, 270): tree["label"], (100, 70): tree["edit"], (30, 110): tree["check"]}
    automation.focus = tree["edit"]
    module = SimpleNamespace(tagPOINT=wintypes.POINT)
    finder = UiaElementFinder(automation, module, windows, budget_s=budget_s, allow=allow)
    return finder, automation, windows, log, tree


# --- the pure half ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("control", "role"),
    [(50000, "button"), (50004, "edit"), (50002, "checkbox"), (50005, "hyperlink"), (50032, "window")],
)
def test_uia_role_is_the_control_type_name_lower_case(control: int, role: str) -> None:
    assert uiam.role_of(control) == role


def test_uia_every_control_type_is_a_valid_stored_role() -> None:
    for control in uiam.CONTROL_TYPES:
        role = uiam.role_of(control)
        element = Element(role, "", (), None, "app.exe", 1, (), "")
        assert record_problem(record_of(element)) is None, role
    assert uiam.role_of(12345) == "unknown"
    assert uiam.role_of(True) == "unknown"  # a BOOL is not a control type
    assert uiam.role_of(None) == "unknown"


def test_uia_states_map_properties_and_patterns_onto_the_vocabulary() -> None:
    assert uiam.states_of(focused=True, enabled=1, focusable=True) == ("enabled", "focusable", "focused")
    assert uiam.states_of(password=True, read_only=False) == ("editable", "password")
    assert uiam.states_of(read_only=True) == ("read-only",)
    assert uiam.states_of(toggle=1) == ("checked",)
    assert uiam.states_of(toggle=2) == ("indeterminate",)
    assert uiam.states_of(toggle=0) == ()
    assert uiam.states_of(expand=1) == ("expanded",)
    assert uiam.states_of(expand=2) == ("expanded",)  # partially expanded
    assert uiam.states_of(expand=3) == ()  # a leaf node
    assert uiam.states_of(selected=True, required=True) == ("required", "selected")
    # the pattern is not supported: UI Automation's "not supported" object adds nothing
    assert uiam.states_of(read_only=NOT_SUPPORTED, toggle=NOT_SUPPORTED, expand=NOT_SUPPORTED) == ()
    everything = uiam.states_of(
        focused=1, enabled=1, focusable=1, password=1, required=1, read_only=0, toggle=1, selected=1, expand=1
    )
    assert set(everything) <= STATES
    assert list(everything) == sorted(everything)


def test_uia_bounding_rectangle_becomes_x_y_width_height() -> None:
    assert uiam.rect_bounds(wintypes.RECT(-1920, 20, -1820, 60)) == (-1920, 20, 100, 40)  # a left monitor
    assert uiam.rect_bounds(wintypes.RECT(0, 0, 0, 0)) is None  # "no rectangle": off screen
    assert uiam.rect_bounds(wintypes.RECT(50, 50, 40, 60)) is None  # inside out
    assert uiam.rect_bounds(None) is None
    assert uiam.rect_bounds(NOT_SUPPORTED) is None
    assert uiam.rect_bounds(SimpleNamespace(left="a", top=0, right=1, bottom=1)) is None


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (FakeCOMError(uiam.UIA_E_TIMEOUT), STALLED),
        (FakeCOMError(uiam.E_ACCESSDENIED), NOT_ON_BUS),  # an elevated application
        (FakeCOMError(uiam.UIA_E_ELEMENTNOTAVAILABLE), NO_ELEMENT),  # it went away
        (FakeCOMError(0x800706BA), NO_ELEMENT),  # RPC server unavailable: the application exited
        (FakeCOMError(0x80004005), FAILED),  # E_FAIL
        (OSError(22, "bad"), FAILED),
        (RuntimeError("no hresult"), FAILED),
    ],
)
def test_uia_hresults_become_lookup_reasons(error: Exception, reason: str) -> None:
    assert uiam.reason_of_hresult(uiam.hresult_of(error), NO_ELEMENT) == reason


def test_uia_hresult_is_read_from_comerror_winerror_or_the_first_argument() -> None:
    assert uiam.hresult_of(FakeCOMError(uiam.UIA_E_TIMEOUT)) == uiam.UIA_E_TIMEOUT
    windows_error: Any = OSError(5, "denied")
    windows_error.winerror = signed(uiam.E_ACCESSDENIED)  # as OSError carries it on Windows
    assert uiam.hresult_of(windows_error) == uiam.E_ACCESSDENIED
    assert uiam.hresult_of(Exception(signed(uiam.UIA_E_TIMEOUT), "text")) == uiam.UIA_E_TIMEOUT
    assert uiam.hresult_of(Exception("text")) is None
    assert uiam.hresult_of(Exception(True)) is None


# --- the finder ---------------------------------------------------------------------------------


def test_uia_element_at_a_point_is_described_with_its_path(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    finder, automation, _, log, _ = uia_finder()
    found = finder.element_at(320, 270)
    element = found.element
    assert element is not None, found
    # the hit is the label inside the button: the button is what was clicked
    assert element.role == "button"
    assert element.name == "Save"
    assert element.automation_id == "1"
    assert element.states == ("enabled", "focusable")
    assert element.bounds == (300, 260, 80, 30)
    assert element.app == "notepad.exe"
    assert element.pid == PID
    assert element.path == (("window", "Save as"), ("pane", ""))  # outermost first, the desktop left out
    assert (found.window_id, found.pid, found.reason) == (ROOT, PID, "")
    assert record_problem(record_of(element)) is None
    # one small request for the hit, then the full one: two cache requests, as documented
    probe, full = automation.requests[1], automation.requests[0]
    assert sorted(probe.properties) == sorted([uiam.UIA_PROCESS_ID, uiam.UIA_NATIVE_WINDOW_HANDLE])
    assert full.properties == list(uiam.CACHED_PROPERTIES)
    assert probe.TreeScope == full.TreeScope == uiam.TREE_SCOPE_ELEMENT
    assert log.calls[0] == "ElementFromPoint 320,270"


def test_uia_states_of_an_edit_and_a_check_box() -> None:
    finder, *_ = uia_finder()
    edit = finder.element_at(100, 70).element
    assert edit is not None
    assert (edit.role, edit.states) == ("edit", ("editable", "enabled", "focusable", "focused"))
    check = finder.element_at(30, 110).element
    assert check is not None
    assert (check.role, check.states) == ("checkbox", ("checked", "enabled", "focusable"))


def test_uia_password_field_with_the_focus() -> None:
    finder, automation, _, log, tree = uia_finder()
    password = FakeElement(
        log,
        "password",
        control=50004,
        name="Password",
        parent=tree["pane"],
        flags={"CachedIsPassword": True, "CachedHasKeyboardFocus": True},
        patterns={uiam.UIA_VALUE_IS_READ_ONLY: False},
    )
    automation.focus = password
    found = finder.focused_element()
    assert found.element is not None
    assert found.element.is_password
    assert found.element.role == "edit"
    assert log.calls[0] == "GetFocusedElement"


def test_uia_no_focus_no_element_no_pid_and_the_desktop() -> None:
    finder, automation, _, log, _ = uia_finder()
    automation.focus = None
    assert finder.focused_element() == Lookup(None, NO_FOCUS, None, None)
    assert finder.element_at(999, 999) == Lookup(None, NO_ELEMENT, None, None)
    automation.at[(1, 1)] = FakeElement(log, "nopid", pid=0)
    assert finder.element_at(1, 1).reason == NO_PID
    automation.at[(2, 2)] = FakeElement(log, "desktop", control=50033, handle=DESKTOP, pid=1)
    assert finder.element_at(2, 2).reason == NO_WINDOW
    automation.focus = FakeElement(log, "desktop", control=50033, handle=DESKTOP, pid=1)
    assert finder.focused_element().reason == NO_FOCUS


def test_uia_path_has_at_most_eight_ancestors_the_nearest() -> None:
    finder, automation, _, log, tree = uia_finder()
    parent = tree["window"]
    for level in range(20):
        parent = FakeElement(log, f"pane {level}", control=50033, name=f"level {level}", parent=parent)
    deep = FakeElement(log, "deep", control=50000, name="deep", parent=parent)
    automation.at[(5, 5)] = deep
    element = finder.element_at(5, 5).element
    assert element is not None
    assert len(element.path) == MAX_PATH
    assert [name for _, name in element.path] == [f"level {n}" for n in range(12, 20)]
    assert sum(call.startswith("parent of") for call in log.calls) <= MAX_PATH + uiam.ACTIONABLE_LEVELS


def test_uia_a_stalled_application_is_a_miss_then_skipped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    finder, automation, _, log, tree = uia_finder()
    automation.at[(7, 7)] = FakeCOMError(uiam.UIA_E_TIMEOUT)
    assert finder.element_at(7, 7) == Lookup(None, STALLED, None, None)
    # a timeout while walking up: the element stays, with the path it got; the app is skipped after
    tree["pane"].parent_error = FakeCOMError(uiam.UIA_E_TIMEOUT)
    found = finder.element_at(100, 70)
    assert found.element is not None
    assert found.element.path == (("pane", ""),)
    log.calls.clear()
    skipped = finder.element_at(100, 70)
    assert skipped == Lookup(None, STALLED, None, PID)
    assert not any(call.startswith("BuildUpdatedCache") for call in log.calls)  # nothing read
    assert_private(found, caplog)
    assert_private(skipped, caplog)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (FakeCOMError(uiam.E_ACCESSDENIED), NOT_ON_BUS),
        (FakeCOMError(uiam.UIA_E_ELEMENTNOTAVAILABLE), NO_ELEMENT),
        (FakeCOMError(0x80004005), FAILED),
        (RuntimeError(CAPTURED), FAILED),  # even an unexpected error: a miss, its text never logged
        (MemoryError(), FAILED),
    ],
)
def test_uia_an_erroring_call_is_a_miss_not_an_exception(
    error: Exception, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    finder, automation, *_ = uia_finder()
    automation.at[(7, 7)] = error
    found = finder.element_at(7, 7)
    assert (found.element, found.reason) == (None, reason)
    automation.focus = error
    assert finder.focused_element().reason == (NO_FOCUS if reason == NO_ELEMENT else reason)
    assert_private(found, caplog)


def test_uia_a_late_lookup_makes_no_more_calls() -> None:
    finder, automation, _, log, _ = uia_finder(budget_s=0.01)
    automation.delay = 0.05  # the hit test alone takes longer than the budget
    assert finder.element_at(320, 270) == Lookup(None, OUT_OF_TIME, ROOT, PID)
    assert not any(call.startswith("BuildUpdatedCache") for call in log.calls)


def test_uia_a_point_out_of_range_is_a_failed_lookup() -> None:
    finder, *_ = uia_finder()
    assert finder.element_at(2**40, 0) == Lookup(None, FAILED, None, None)


def test_uia_optins_own_windows_are_never_described() -> None:
    finder, automation, _, log, _ = uia_finder()
    automation.at[(3, 3)] = FakeElement(log, "tray", name=CAPTURED, pid=os.getpid(), handle=0x77)
    assert finder.element_at(3, 3) == Lookup(None, DENIED, None, os.getpid())
    assert ("tray", "CachedName") not in log.reads


def test_uia_a_denied_window_is_judged_before_anything_is_read(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    judged: list[WindowFocus] = []

    def allow(window: WindowFocus) -> bool:
        judged.append(window)
        return "Bank" not in (window.title or "")

    finder, _, windows, log, _ = uia_finder(allow)
    found = finder.element_at(100, 70)  # in the dialog, which a "Bank" window owns
    assert found == Lookup(None, DENIED, ROOT, PID)
    assert [w.title for w in judged] == ["Save as", "Bank statement - Notepad"]
    # only the hit's process id and window handle were read; no name, no full read
    assert {prop for _, prop in log.reads} <= {"CachedProcessId", "CachedNativeWindowHandle"}
    assert not any(call.startswith("BuildUpdatedCache") for call in log.calls)
    assert_private(found, caplog)
    windows.owners[ROOT] = ROOT  # no owner: the dialog alone is judged, and allowed
    assert finder.element_at(100, 70).element is not None


def test_uia_window_of_a_hit_without_a_handle() -> None:
    judged: list[int | None] = []

    def allow(window: WindowFocus) -> bool:
        judged.append(window.pid)
        return True

    finder, _, windows, log, tree = uia_finder(allow)
    # the hit has no window handle: the window at the point is the hit's process's
    found = finder.element_at(100, 70)
    assert found.window_id == ROOT and found.element is not None
    # the window at the point is another process's (the hit is in a window it cannot see):
    # the nearest ancestor with a handle decides, read with the small request only
    windows.point_window = OWNER + 99
    windows.described[OWNER + 99] = WindowFocus(now_ns(), "Other", "other.exe", 1)
    log.calls.clear()
    found = finder.element_at(100, 70)
    assert found.window_id == ROOT and found.element is not None
    assert log.calls.index("parent of pane") < log.calls.index("BuildUpdatedCache edit")
    # no window at all and an allow to ask: fail closed, nothing read
    tree["window"].parent = None
    tree["window"]._values["CachedNativeWindowHandle"] = 0
    windows.point_window = None
    log.calls.clear()
    assert finder.element_at(100, 70) == Lookup(None, FAILED, None, PID)
    assert not any(call.startswith("BuildUpdatedCache") for call in log.calls)


def test_uia_focus_window_is_the_foreground_when_it_is_the_hit_process() -> None:
    finder, _, windows, log, _ = uia_finder(lambda w: True)
    windows.foreground = ROOT
    found = finder.focused_element()
    assert found.window_id == ROOT and found.element is not None and found.element.role == "edit"
    full_read = log.calls.index("BuildUpdatedCache edit")
    assert not any(call.startswith("parent of") for call in log.calls[:full_read])  # no walk needed
    windows.foreground = OWNER + 99  # another process's window has the focus: walk up instead
    windows.described[OWNER + 99] = WindowFocus(now_ns(), "Other", "other.exe", 1)
    log.calls.clear()
    assert finder.focused_element().window_id == ROOT
    assert log.calls.index("parent of edit") < log.calls.index("BuildUpdatedCache edit")


def test_uia_names_never_in_reprs_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    finder, _, _, _, tree = uia_finder()
    found = finder.element_at(100, 70)
    assert found.element is not None and found.element.name == CAPTURED
    assert found.element.automation_id == CAPTURED_ID
    assert_private(found, caplog)
    tree["edit"].parent_error = RuntimeError(CAPTURED)
    assert_private(finder.element_at(100, 70), caplog)


# --- COM set-up, the backend and the worker ------------------------------------------------------


class FakeComtypes:
    """comtypes and comtypes.client as :func:`create_automation` uses them."""

    COINIT_MULTITHREADED = 0

    def __init__(self, *, has_uia8: bool = True, init_error: bool = False) -> None:
        self.init_error = init_error
        self.initialised: list[int] = []
        self.made: list[tuple[str, str]] = []
        self.has_uia8 = has_uia8
        self.client = SimpleNamespace(GetModule=self.get_module, CreateObject=self.create_object)
        self.module = SimpleNamespace(
            CUIAutomation="CUIAutomation",
            CUIAutomation8="CUIAutomation8",
            IUIAutomation="IUIAutomation",
            IUIAutomation2="IUIAutomation2",
        )

    def CoInitializeEx(self, flags: int) -> None:
        if self.init_error:
            msg = "RPC_E_CHANGED_MODE"
            raise OSError(msg)
        self.initialised.append(flags)

    def get_module(self, name: str) -> Any:
        assert name == "UIAutomationCore.dll"
        return self.module

    def create_object(self, cls: str, interface: str) -> Any:
        if cls == "CUIAutomation8" and not self.has_uia8:
            raise FakeCOMError(0x80040154)  # REGDB_E_CLASSNOTREG
        self.made.append((cls, interface))
        return SimpleNamespace(kind=cls)

    def import_module(self, name: str) -> Any:
        return {"comtypes": self, "comtypes.client": self.client}[name]


def test_uia_client_is_made_with_the_call_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeComtypes()
    monkeypatch.setattr("agent.backends.win32.uia_com.importlib.import_module", fake.import_module)
    com_initialize()
    assert fake.initialised == [fake.COINIT_MULTITHREADED]
    module, automation = create_automation(25)
    assert module is fake.module
    assert fake.made == [("CUIAutomation8", "IUIAutomation2")]
    assert (automation.ConnectionTimeout, automation.TransactionTimeout) == (25, 25)
    fake.has_uia8 = False  # an older Windows: the plain client, without timeouts
    _, automation = create_automation(25)
    assert fake.made[-1] == ("CUIAutomation", "IUIAutomation")
    assert not hasattr(automation, "TransactionTimeout")
    fake.init_error = True
    com_initialize()  # a thread already in another apartment: fine for a client


def test_win32_backends_element_api(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Win32Backend.ELEMENT_API is None  # no comtypes: no lookups
    assert Win32UiaBackend.ELEMENT_API == "uia"
    backend = Win32UiaBackend(object.__new__(Api))  # the Windows API cannot load here
    lookup = backend.element_lookup(lambda _r: None, lambda _w: True)
    assert isinstance(lookup, ElementLookup)
    if sys.platform != "win32":
        # the worker makes its finder on its own thread; there is no comtypes (no UI Automation)
        # here, so it cannot start: a clear "unavailable", requests dropped and counted
        assert lookup.start(timeout=5.0) is False
        assert lookup.request(now_ns(), 1, 1) is False
    lookup.stop()


def test_uia_finder_answers_through_the_element_lookup_worker() -> None:
    finder, *_ = uia_finder(lambda w: True)
    made_on: list[str] = []
    allowed: list[object] = []

    def make(call_timeout_s: float, budget_s: float, allow: Any) -> UiaElementFinder:
        made_on.append(threading.current_thread().name)
        allowed.append(allow)
        return finder

    results: list[LookupResult] = []
    done = threading.Event()

    def answered(result: LookupResult) -> None:
        results.append(result)
        done.set()

    def allow(window: WindowFocus) -> bool:
        return True

    lookup = ElementLookup(answered, make, budget_s=5.0, allow=allow)
    assert lookup.start()
    try:
        assert lookup.request(123, 320, 270)
        assert done.wait(10)
    finally:
        lookup.stop()
    assert made_on == ["optin-a11y"]  # COM is joined on the worker thread
    assert allowed == [allow]
    assert results[0].t_ns == 123 and results[0].hit
    assert result_of(results[0].lookup) == "found"


def test_win32_api_window_at_and_owner_ask_user32(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[Any] = []

    class User32:
        def WindowFromPoint(self, point: Any) -> int:
            asked.append(("point", point.x, point.y))
            return 0x7002 if point.x >= 0 else 0

        def GetAncestor(self, hwnd: int, flag: int) -> int:
            asked.append(("ancestor", hwnd, flag))
            return {2: ROOT, 3: OWNER}[flag]

        def GetForegroundWindow(self) -> int:
            return 0

    api: Any = object.__new__(Api)
    api.user32, api.POINT = User32(), wintypes.POINT
    assert api.window_at(15, -20) == ROOT
    assert api.window_at(-1, 0) is None
    assert api.root_owner(ROOT) == OWNER
    assert api.foreground_window() is None
    assert asked == [("point", 15, -20), ("ancestor", 0x7002, 2), ("point", -1, 0), ("ancestor", ROOT, 3)]


# =================================================================================================
# macOS: AX
# =================================================================================================

APP_PID = 5151


class AxNode:
    """An AX element: attributes, and the error one call about it answers (0: none)."""

    def __init__(
        self, label: str, attributes: dict[str, Any], *, pid: int = APP_PID, value: Any = None
    ) -> None:
        self.label = label
        self.attributes = attributes
        self.pid = pid
        self.value = value
        self.settable = True
        self.error = 0

    def __repr__(self) -> str:
        return f"AxNode({self.label})"


class FakeAx:
    """The AX call table (:class:`~agent.backends.darwin.ax_elements.AxCalls`)."""

    def __init__(self) -> None:
        self.system = AxNode("system-wide", {}, pid=0)
        self.calls: list[tuple[Any, ...]] = []
        self.at: dict[tuple[float, float], AxNode] = {}
        self.at_error = 0
        self.focus: AxNode | None = None
        self.focus_error = 0
        self.timeout: float | None = None
        self.ended = 0
        self.closed = False
        self.names = {APP_PID: "Safari"}

    def system_wide(self) -> Any:
        return self.system

    def set_timeout(self, element: Any, seconds: float) -> int:
        assert element is self.system
        self.timeout = seconds
        return 0

    def element_at(self, element: Any, x: float, y: float) -> tuple[int, Any]:
        self.calls.append(("element_at", x, y))
        if self.at_error:
            return self.at_error, None
        found = self.at.get((x, y))
        return (0, found) if found is not None else (ax.AX_NO_VALUE, None)

    def attribute(self, element: AxNode, name: str) -> tuple[int, Any]:
        self.calls.append(("attribute", element.label, name))
        if element is self.system and name == ax.FOCUSED_UI_ELEMENT:
            if self.focus_error:
                return self.focus_error, None
            return (0, self.focus) if self.focus is not None else (ax.AX_NO_VALUE, None)
        if element.error:
            return element.error, None
        if name == ax.VALUE:
            return 0, element.value
        return (0, element.attributes[name]) if name in element.attributes else (ax.AX_NO_VALUE, None)

    def attributes(self, element: AxNode, names: tuple[str, ...]) -> tuple[int, dict[str, Any]]:
        self.calls.append(("attributes", element.label))
        if element.error:
            return element.error, {}
        return 0, {name: element.attributes.get(name) for name in names}

    def settable(self, element: AxNode, name: str) -> tuple[int, bool]:
        self.calls.append(("settable", element.label, name))
        return 0, element.settable

    def pid(self, element: AxNode) -> tuple[int, int]:
        return 0, element.pid

    def process_name(self, pid: int) -> str | None:
        return self.names.get(pid)

    def end_lookup(self) -> None:
        self.ended += 1

    def close(self) -> None:
        self.closed = True


def ax_node(label: str, role: str, title: str = "", parent: AxNode | None = None, **more: Any) -> AxNode:
    attributes = {ax.ROLE: role, ax.TITLE: title, ax.PARENT: parent, ax.ENABLED: True, **more}
    value = attributes.pop("value", None)
    return AxNode(label, attributes, value=value)


def safari_tree() -> dict[str, AxNode]:
    """Safari: application > window > group > button "Reload" > image; a text field, a password
    field, a check box, a text area."""
    app = ax_node("app", "AXApplication", "Safari")
    window = ax_node("window", "AXWindow", "Online banking", app, **{ax.POSITION: (0.0, 25.0)})
    group = ax_node("group", "AXGroup", "", window)
    button = ax_node(
        "button",
        "AXButton",
        "",
        group,
        **{
            ax.DESCRIPTION: "Reload",
            ax.POSITION: (100.5, 40.25),
            ax.SIZE: (20.0, 18.0),
            ax.IDENTIFIER: "reload",
        },
    )
    image = ax_node("image", "AXImage", "", button, **{ax.POSITION: (102.0, 42.0), ax.SIZE: (16.0, 14.0)})
    field = ax_node(
        "field",
        "AXTextField",
        "",
        group,
        **{ax.DESCRIPTION: CAPTURED, ax.IDENTIFIER: CAPTURED_ID, ax.FOCUSED: True},
    )
    secure = ax_node(
        "secure", "AXTextField", "Password", group, **{ax.SUBROLE: ax.SECURE_TEXT_FIELD, "value": CAPTURED}
    )
    check = ax_node("check", "AXCheckBox", "Remember me", group, value=1)
    area = ax_node("area", "AXTextArea", "Notes", group)
    return {
        "app": app,
        "window": window,
        "group": group,
        "button": button,
        "image": image,
        "field": field,
        "secure": secure,
        "check": check,
        "area": area,
    }


def ax_finder(
    *,
    allow: Callable[[WindowFocus], bool] | None = None,
    windows: Any = None,
    scale: float = 1.0,
    budget_s: float = 5.0,
) -> tuple[AxElementFinder, FakeAx, dict[str, AxNode]]:
    fake = FakeAx()
    tree = safari_tree()
    fake.at = {(110.0, 50.0): tree["image"], (60.0, 80.0): tree["field"], (60.0, 120.0): tree["check"]}
    fake.focus = tree["field"]
    finder = AxElementFinder(
        fake, call_timeout_s=0.025, budget_s=budget_s, pixels_per_point=scale, windows=windows, allow=allow
    )
    return finder, fake, tree


# --- the pure half ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ax_role", "role"),
    [
        ("AXButton", "button"),
        ("AXTextField", "textfield"),
        ("AXStaticText", "statictext"),
        ("AXWebArea", "webarea"),
        ("CustomRole", "customrole"),
        ("AX", "unknown"),
        ("", "unknown"),
        (None, "unknown"),
        (42, "unknown"),
    ],
)
def test_ax_role_is_the_role_without_ax_lower_case(ax_role: object, role: str) -> None:
    assert ax.role_of(ax_role) == role


def test_ax_states_map_attributes_onto_the_vocabulary() -> None:
    base = {ax.ROLE: "AXTextField", ax.ENABLED: True, ax.FOCUSED: True}
    assert ax.states_of(base, settable=True) == ("editable", "enabled", "focused")
    assert ax.states_of(base, settable=False) == ("enabled", "focused", "read-only")
    assert ax.states_of({**base, ax.SUBROLE: ax.SECURE_TEXT_FIELD}) == ("enabled", "focused", "password")
    assert ax.states_of({ax.ROLE: "AXTextArea"}, settable=True) == ("editable", "multi-line")
    assert ax.states_of({ax.ROLE: "AXCheckBox"}, toggle=1) == ("checked",)
    assert ax.states_of({ax.ROLE: "AXCheckBox"}, toggle=2) == ("indeterminate",)
    assert ax.states_of({ax.ROLE: "AXCheckBox"}, toggle=0) == ()
    assert ax.states_of({ax.ROLE: "AXButton", ax.SUBROLE: "AXSwitch"}, toggle=1) == ("checked",)
    # a text field's value is text, never a state
    assert ax.states_of({ax.ROLE: "AXTextField"}, toggle=1) == ()
    assert ax.states_of({ax.ROLE: "AXRow", ax.SELECTED: True, ax.EXPANDED: True}) == ("expanded", "selected")
    assert ax.states_of({ax.ENABLED: 1, ax.FOCUSED: "yes"}) == ()  # only a real boolean counts
    everything = ax.states_of(
        {ax.ROLE: "AXTextArea", ax.SUBROLE: ax.SECURE_TEXT_FIELD, ax.ENABLED: True, ax.FOCUSED: True},
        settable=True,
    )
    assert set(everything) <= STATES


def test_ax_points_become_pixels_both_ways() -> None:
    assert ax.to_points(200, 100, 2.0) == (100.0, 50.0)
    assert ax.bounds_in_pixels((10.5, 20.25), (100.0, 50.0), 2.0) == (21, 40, 200, 100)
    assert ax.bounds_in_pixels((10.5, 20.25), (100.0, 50.0), 1.0) == (10, 20, 100, 50)
    assert ax.bounds_in_pixels((-1440.0, 0.0), (10.0, 10.0), 2.0) == (-2880, 0, 20, 20)  # a left display
    assert ax.bounds_in_pixels(None, (1.0, 1.0), 1.0) is None
    assert ax.bounds_in_pixels((0.0, 0.0), (-1.0, 5.0), 1.0) is None
    assert ax.bounds_in_pixels((float("nan"), 0.0), (1.0, 1.0), 1.0) is None
    assert ax.bounds_in_pixels((1e12, 0.0), (1.0, 1.0), 1.0) is None  # beyond 32 bits
    assert ax.bounds_in_pixels((0.0, 0.0, 0.0), (1.0, 1.0), 1.0) is None
    assert RECORDING_PIXELS_PER_POINT == 1.0  # frames are grabbed at nominal resolution (points)


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (ax.AX_CANNOT_COMPLETE, STALLED),
        (ax.AX_API_DISABLED, NOT_ON_BUS),  # not trusted for accessibility
        (ax.AX_NOT_IMPLEMENTED, NOT_ON_BUS),
        (ax.AX_NO_VALUE, NO_ELEMENT),
        (ax.AX_INVALID_UI_ELEMENT, NO_ELEMENT),
        (ax.AX_FAILURE, FAILED),
        (ax.AX_ILLEGAL_ARGUMENT, FAILED),
        (-1, FAILED),
    ],
)
def test_ax_errors_become_lookup_reasons(code: int, reason: str) -> None:
    assert ax.reason_of_ax_error(code, NO_ELEMENT) == reason


def cg(pid: int, number: int, bounds: tuple[float, float, float, float], layer: int = 0) -> dict[str, Any]:
    x, y, w, h = bounds
    return {
        "kCGWindowOwnerPID": pid,
        "kCGWindowNumber": number,
        "kCGWindowBounds": {"X": x, "Y": y, "Width": w, "Height": h},
        "kCGWindowLayer": layer,
        "kCGWindowAlpha": 1.0,
        "kCGWindowName": f"window {number}",
    }


def test_pick_windows_of_takes_the_window_at_the_point_and_the_front_window() -> None:
    menu = cg(APP_PID, 90, (100, 40, 200, 300), layer=101)
    other = cg(77, 80, (0, 0, 1000, 1000))
    front = cg(APP_PID, 70, (0, 25, 800, 600))
    back = cg(APP_PID, 60, (0, 25, 800, 600))
    windows = [menu, other, front, back]
    assert pick_windows_of(windows, APP_PID, (150.0, 60.0)) == [menu, front]  # a menu, and its window
    assert pick_windows_of(windows, APP_PID, (10.0, 30.0)) == [front]
    assert pick_windows_of(windows, APP_PID) == [front]
    assert pick_windows_of(windows, 12345, (10.0, 30.0)) == []


def test_cocoa_windows_of_reports_windows_as_the_focus_watcher_does() -> None:
    listed = [cg(APP_PID, 90, (100, 40, 200, 300), layer=101), cg(APP_PID, 70, (0, 25, 800, 600))]
    app = SimpleNamespace(bundleIdentifier=lambda: "com.apple.Safari")
    cocoa: Any = object.__new__(Cocoa)
    cocoa.objc = SimpleNamespace(autorelease_pool=contextlib.nullcontext)
    cocoa.quartz = SimpleNamespace(CGWindowListCopyWindowInfo=lambda options, window: listed)
    cocoa.appkit = SimpleNamespace(
        NSRunningApplication=SimpleNamespace(runningApplicationWithProcessIdentifier_=lambda pid: app)
    )
    judged = cocoa.windows_of(APP_PID, (150.0, 60.0))
    assert [(n, f.title, f.app_class, f.pid) for n, f in judged] == [
        (90, "window 90", "com.apple.Safari", APP_PID),
        (70, "window 70", "com.apple.Safari", APP_PID),
    ]
    alone = cocoa.windows_of(999)  # no window on screen: the application alone is judged
    assert [(n, f.title, f.app_class, f.pid) for n, f in alone] == [(None, None, "com.apple.Safari", 999)]


# --- the finder ---------------------------------------------------------------------------------


def test_ax_element_at_a_point_is_described_with_its_path() -> None:
    finder, fake, _ = ax_finder()
    assert fake.timeout == 0.025  # AXUIElementSetMessagingTimeout on the system-wide element
    found = finder.element_at(110, 50)
    element = found.element
    assert element is not None, found
    # the hit is the image inside the button: the button is what was clicked
    assert (element.role, element.name, element.automation_id) == ("button", "Reload", "reload")
    assert element.states == ("enabled",)
    assert element.bounds == (100, 40, 20, 18)
    assert (element.app, element.pid) == ("Safari", APP_PID)
    assert element.path == (("window", "Online banking"), ("group", ""))  # the application left out
    assert (found.window_id, found.pid, found.reason) == (None, APP_PID, "")
    assert record_problem(record_of(element)) is None
    assert fake.calls[0] == ("element_at", 110.0, 50.0)
    assert fake.ended == 1  # the lookup's elements are released


def test_ax_retina_scale_converts_the_point_and_the_bounds() -> None:
    finder, fake, _ = ax_finder(scale=2.0)
    found = finder.element_at(220, 100)
    assert fake.calls[0] == ("element_at", 110.0, 50.0)  # pixels to points
    assert found.element is not None
    assert found.element.bounds == (201, 80, 40, 36)  # points to pixels


def test_ax_focus_states_and_which_values_are_read(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    finder, fake, tree = ax_finder()
    found = finder.focused_element()
    assert found.element is not None
    assert (found.element.role, found.element.states) == ("textfield", ("editable", "enabled", "focused"))
    assert found.element.name == CAPTURED and found.element.automation_id == CAPTURED_ID
    fake.focus = tree["secure"]
    secure = finder.focused_element().element
    assert secure is not None and secure.is_password
    check = finder.element_at(60, 120).element
    assert check is not None and check.states == ("checked", "enabled")
    fake.focus = tree["area"]
    area = finder.focused_element().element
    assert area is not None and area.states == ("editable", "enabled", "multi-line")
    # AXValue was asked of the check box only: never of a text or password field
    asked = [call[1] for call in fake.calls if call[0] == "attribute" and call[2] == ax.VALUE]
    assert asked == ["check"]
    assert_private(found, caplog)


def test_ax_path_has_at_most_eight_ancestors_the_nearest() -> None:
    finder, fake, tree = ax_finder()
    parent = tree["window"]
    for level in range(20):
        parent = ax_node(f"group {level}", "AXSplitGroup", f"level {level}", parent)
    fake.at[(1.0, 1.0)] = ax_node("deep", "AXButton", "deep", parent)
    element = finder.element_at(1, 1).element
    assert element is not None
    assert len(element.path) == MAX_PATH
    assert [name for _, name in element.path] == [f"level {n}" for n in range(12, 20)]
    assert len(fake.calls) <= ax.MAX_CALLS


def test_ax_path_without_a_window_leaves_the_application_out() -> None:
    finder, fake, tree = ax_finder()
    menu_bar = ax_node("menu bar", "AXMenuBar", "", tree["app"])
    fake.at[(4.0, 4.0)] = ax_node("file", "AXMenuBarItem", "File", menu_bar)
    element = finder.element_at(4, 4).element
    assert element is not None
    assert (element.role, element.path) == ("menubaritem", (("menubar", ""),))


def test_ax_no_element_no_focus_no_pid() -> None:
    finder, fake, _ = ax_finder()
    assert finder.element_at(999, 999) == Lookup(None, NO_ELEMENT, None, None)
    fake.focus = None
    assert finder.focused_element() == Lookup(None, NO_FOCUS, None, None)
    fake.at[(2.0, 2.0)] = AxNode("nopid", {ax.ROLE: "AXButton"}, pid=0)
    assert finder.element_at(2, 2).reason == NO_PID
    assert fake.ended == 3


def test_ax_a_stalled_application_is_a_miss_then_skipped() -> None:
    finder, fake, tree = ax_finder()
    tree["field"].error = ax.AX_CANNOT_COMPLETE
    assert finder.element_at(60, 80) == Lookup(None, STALLED, None, APP_PID)
    tree["field"].error = 0
    fake.calls.clear()
    assert finder.element_at(60, 80) == Lookup(None, STALLED, None, APP_PID)  # skipped for a while
    assert not any(call[0] == "attributes" for call in fake.calls)
    fake.at_error = ax.AX_CANNOT_COMPLETE  # the hit test itself: no process to skip
    assert finder.element_at(1, 1) == Lookup(None, STALLED, None, None)


def test_ax_a_stall_while_walking_up_keeps_the_element() -> None:
    finder, _, tree = ax_finder()
    tree["window"].error = ax.AX_CANNOT_COMPLETE
    element = finder.element_at(60, 80).element
    assert element is not None and element.path == (("group", ""),)


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (ax.AX_API_DISABLED, NOT_ON_BUS),  # this process lost the Accessibility permission
        (ax.AX_NOT_IMPLEMENTED, NOT_ON_BUS),
        (ax.AX_FAILURE, FAILED),
        (ax.AX_NO_VALUE, NO_ELEMENT),
    ],
)
def test_ax_an_erroring_call_is_a_miss_not_an_exception(code: int, reason: str) -> None:
    finder, fake, tree = ax_finder()
    fake.at_error = code
    assert finder.element_at(60, 80) == Lookup(None, reason, None, None)
    fake.focus_error = code
    assert finder.focused_element().reason == (NO_FOCUS if reason == NO_ELEMENT else reason)
    fake.at_error = 0
    tree["field"].error = code  # the element's own read
    assert finder.element_at(60, 80).reason == reason
    assert fake.ended == 3


def test_ax_an_exception_from_the_library_is_a_failed_lookup(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    finder, fake, _ = ax_finder()

    def broken(element: Any, names: tuple[str, ...]) -> tuple[int, dict[str, Any]]:
        raise ctypes.ArgumentError(CAPTURED)

    fake.attributes = broken  # type: ignore[method-assign]
    found = finder.element_at(60, 80)
    assert found == Lookup(None, FAILED, None, APP_PID)
    assert fake.ended == 1  # released even so
    assert_private(found, caplog)


def test_ax_a_late_lookup_makes_no_more_calls() -> None:
    finder, fake, _ = ax_finder(budget_s=0.01)
    slow = fake.element_at

    def late(element: Any, x: float, y: float) -> tuple[int, Any]:
        time.sleep(0.05)
        return slow(element, x, y)

    fake.element_at = late  # type: ignore[method-assign]
    assert finder.element_at(60, 80) == Lookup(None, OUT_OF_TIME, None, None)
    assert not any(call[0] == "attributes" for call in fake.calls)


def test_ax_optins_own_process_is_never_described() -> None:
    finder, fake, _ = ax_finder()
    fake.at[(3.0, 3.0)] = AxNode("status item", {ax.TITLE: CAPTURED}, pid=os.getpid())
    assert finder.element_at(3, 3) == Lookup(None, DENIED, None, os.getpid())
    assert not any(call[0] == "attributes" for call in fake.calls)


def test_ax_a_denied_window_is_judged_before_anything_is_read(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    asked: list[tuple[int, tuple[float, float] | None]] = []

    def windows(pid: int, at: tuple[float, float] | None) -> list[tuple[int | None, WindowFocus]]:
        asked.append((pid, at))
        return [(70, WindowFocus(now_ns(), "Online banking", "com.apple.Safari", pid))]

    def allow(window: WindowFocus) -> bool:
        return "banking" not in (window.title or "")

    finder, fake, _ = ax_finder(allow=allow, windows=windows, scale=2.0)
    found = finder.element_at(120, 160)
    assert found == Lookup(None, DENIED, 70, APP_PID)
    assert asked == [(APP_PID, (60.0, 80.0))]  # in points
    assert not any(call[0] in ("attributes", "attribute") for call in fake.calls)  # nothing read
    assert finder.focused_element() == Lookup(None, DENIED, 70, APP_PID)
    assert asked[-1] == (APP_PID, None)
    assert_private(found, caplog)

    allowed, fake, _ = ax_finder(allow=lambda w: True, windows=windows)
    found = allowed.element_at(60, 80)
    assert found.element is not None and found.window_id == 70
    blind, fake, _ = ax_finder(allow=lambda w: True, windows=None)  # cannot judge: fail closed
    assert blind.element_at(60, 80) == Lookup(None, FAILED, None, APP_PID)
    assert not any(call[0] in ("attributes", "attribute") for call in fake.calls)


def test_darwin_backend_element_api_and_a_worker_that_cannot_start_here() -> None:
    assert DarwinBackend.ELEMENT_API == "ax"
    cocoa: Any = object.__new__(Cocoa)
    backend = DarwinBackend(cocoa, native=SimpleNamespace())  # type: ignore[arg-type]  # stand-ins
    lookup = backend.element_lookup(lambda _r: None, lambda _w: True)
    assert isinstance(lookup, ElementLookup)
    if sys.platform != "darwin":
        assert lookup.start(timeout=5.0) is False  # no AX framework here: unavailable, not a crash
        assert lookup.request(now_ns(), 1, 1) is False
    lookup.stop()
    if sys.platform != "darwin":
        with pytest.raises(OSError):
            ax_finder_factory(None)(0.025, 0.05, None)


def test_ax_finder_answers_through_the_element_lookup_worker() -> None:
    finder, fake, _ = ax_finder()
    results: list[LookupResult] = []
    done = threading.Event()

    def answered(result: LookupResult) -> None:
        results.append(result)
        done.set()

    lookup = ElementLookup(answered, lambda timeout, budget, allow: finder, budget_s=5.0)
    assert lookup.start()
    try:
        assert lookup.request_focus(7)
        assert done.wait(10)
    finally:
        lookup.stop()
    assert results[0].kind == "focus" and results[0].hit
    assert fake.closed  # the worker closes its finder


def test_element_modules_import_without_platform_libraries() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    env["PYTHONPATH"] = str(REPO)
    code = (
        "import sys\n"
        "import agent.backends.win32.uia_elements, agent.backends.win32.uia_model\n"
        "import agent.backends.win32.uia_com\n"
        "import agent.backends.darwin.ax_elements, agent.backends.darwin.ax_model\n"
        "import agent.backends.darwin.ax_native\n"
        "heavy = ('comtypes', 'objc', 'Quartz', 'AppKit', 'CoreFoundation', 'pynput', 'mss', 'gi')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert done.stdout.strip() == "[]"
