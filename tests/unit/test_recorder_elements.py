"""agent.recorder_elements: when the recorder asks for the UI element under an action, what an
answer becomes in the store, and where no lookup is made (issue 16, item 2).

The recorder runs on the fake backend with a real :class:`agent.capture.element_lookup.ElementLookup`
worker; its finder is an in-process stand-in for the platform's accessibility interface (the
real AT-SPI one is tests/display/test_elements_recorded.py's)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import ClassVar

import pytest

from agent import consent
from agent.backends.fake import FakeBackend
from agent.backends.virtual_display import wait_for
from agent.capture.element_lookup import ElementLookup, LookupResult, WindowCheck
from agent.control import Recorder
from agent.deny_rules import DenyRule
from agent.elements import DENIED, NO_FOCUS, Element, Lookup
from agent.events import (
    ButtonPress,
    ElementSeen,
    Event,
    KeyPress,
    Marker,
    Scroll,
    WindowFocus,
    now_ns,
)
from agent.recorder_elements import RecorderElements
from agent.store import keys
from agent.store.reader import read_session
from tests.tools import Consented, hooks_of

BUTTON = Element(
    role="push button",
    name="Send to alice.canary@example.com",
    states=("enabled", "focusable"),
    bounds=(10, 20, 120, 40),
    app="mailer",
    pid=4242,
    path=(("frame", "Inbox — alice"), ("panel", "")),
    automation_id="send",
)
FIELD = Element(
    "text", "To", ("editable", "focused"), (10, 80, 300, 30), "mailer", 4242, (("frame", "Inbox"),), ""
)
DENIED_WINDOW = WindowFocus(0, "Payroll — HR", "hr-client", 5151, 0, 0, 100, 100)


class StubFinder:
    """Answers as an accessibility interface would: a button at x < 500, a denied window at
    x >= 900 (asked about first, as the real finders do), the focused field for keys."""

    def __init__(self, allow: WindowCheck | None) -> None:
        self.allow = allow

    def element_at(self, x: int, y: int) -> Lookup:
        if x >= 900:
            if self.allow is not None and not self.allow(DENIED_WINDOW):
                return Lookup(None, DENIED, 9, 5151)
            return Lookup(BUTTON, "", 9, 5151)
        return Lookup(BUTTON, "", 7, 4242) if x < 500 else Lookup(None, NO_FOCUS, None, None)

    def focused_element(self) -> Lookup:
        return Lookup(FIELD, "", 7, 4242)

    def close(self) -> None:
        pass


class ElementsBackend(FakeBackend):
    """The fake backend with an element lookup over :class:`StubFinder`."""

    ELEMENT_API: ClassVar[str | None] = "atspi"

    def element_lookup(
        self, on_result: Callable[[LookupResult], None], allow: WindowCheck | None = None
    ) -> ElementLookup | None:
        return ElementLookup(on_result, lambda _timeout, _budget, check: StubFinder(check), allow=allow)


@pytest.fixture
def recorder(consented: Consented) -> Iterator[Recorder]:
    d, study = consented
    rec = Recorder(d, ElementsBackend(), study)
    rec.start()
    try:
        yield rec
    finally:
        rec.stop()


def _stored(rec: Recorder) -> list[Event]:
    assert rec.session_id is not None
    return read_session(rec.dirs, rec.session_id, keys.load_identity(rec.dirs)).events


def _emit(rec: Recorder, *events: Event) -> None:
    # until the writer has judged the focused window, nothing is looked up (fail closed)
    assert wait_for(lambda: not rec._denied_now, 2)
    for event in events:
        hooks_of(rec.backend).emit(event)  # type: ignore[arg-type]


def test_a_click_a_scroll_burst_and_a_typing_burst_each_ask_once(recorder: Recorder) -> None:
    t = now_ns()
    ms = 1_000_000
    _emit(
        recorder,
        ButtonPress(t, 100, 100, "left"),
        Scroll(t + 100 * ms, 100, 100, 0, -1),
        Scroll(t + 150 * ms, 100, 100, 0, -1),  # the same burst: no second ask
        Scroll(t + 900 * ms, 100, 100, 0, -1),  # after a pause: a new scroll step, asked again
        KeyPress(t + 1000 * ms, "h", None, 104, ()),
        KeyPress(t + 1100 * ms, "i", None, 105, ()),  # typing on: the focus has not moved
        KeyPress(t + 1200 * ms, None, "shift", 65505, ()),  # a modifier alone asks nothing
        KeyPress(t + 1300 * ms, None, "tab", 65289, ()),  # ...
        KeyPress(t + 1400 * ms, "x", None, 120, ()),  # ...but after Tab the focus may have moved
    )
    _wait_answers(recorder, 5)
    recorder.stop()
    seen = [e for e in _stored(recorder) if isinstance(e, ElementSeen)]
    assert sorted((e.t_ns - t) // ms for e in seen) == [0, 100, 900, 1000, 1400]
    point = [e for e in seen if e.at == "point"]
    assert {e.result for e in seen} == {"found"} and len(point) == 3
    assert point[0].element is not None and point[0].element["role"] == "push button"
    focus = [e for e in seen if e.at == "focus"]
    assert all(e.element is not None and e.element["name"] == "To" for e in focus)
    start = next(e for e in _stored(recorder) if isinstance(e, Marker) and e.marker == "session_start")
    assert start.detail["elements"] == "atspi"


def test_names_are_kept_only_with_the_window_titles_scope(consented: Consented) -> None:
    d, study = consented
    consent.grant(d, study, study.terms_sha256, ["pointer", "keyboard"])
    rec = Recorder(d, ElementsBackend(), study)
    rec.start()
    _emit(rec, ButtonPress(now_ns(), 100, 100, "left"))
    _wait_answers(rec, 1)
    rec.stop()
    seen = [e for e in _stored(rec) if isinstance(e, ElementSeen)]
    assert len(seen) == 1 and seen[0].element is not None
    element = seen[0].element
    assert element["name"] is None and element["automation_id"] is None
    assert [step["name"] for step in element["path"]] == [None, None]
    assert element["role"] == "push button" and element["bounds"] == [10, 20, 120, 40]  # the rest stays


def _wait_answers(rec: Recorder, count: int) -> None:
    """Wait until the worker has answered ``count`` lookups (answers after the stop are not kept)."""
    lookup = rec._elements._lookup if rec._elements is not None else None
    assert lookup is not None
    assert wait_for(lambda: lookup.hits + lookup.missed + lookup.denied >= count, 5)


def test_no_lookup_in_a_denied_or_own_window(recorder: Recorder) -> None:
    elements = recorder._elements
    assert elements is not None
    assert elements.allowed(WindowFocus(0, "Inbox", "mailer", 4242, 0, 0, 10, 10))
    recorder.rules = (*recorder.rules, DenyRule("HR", app_class="hr-*"))
    assert not elements.allowed(DENIED_WINDOW)  # a study or volunteer rule, read at each check
    own = WindowFocus(0, "optin — review", "optin", next(iter(recorder._sources.own_pids())), 0, 0, 10, 10)
    assert not elements.allowed(own)
    _emit(recorder, ButtonPress(now_ns(), 950, 100, "left"))  # the denied window, not focused yet
    _wait_answers(recorder, 1)
    recorder.stop()
    stored = _stored(recorder)
    assert any(isinstance(e, ButtonPress) for e in stored)
    assert not any(isinstance(e, ElementSeen) for e in stored)  # refused: not a record, not a loss


def test_a_focused_denied_window_asks_nothing(recorder: Recorder) -> None:
    recorder.rules = (*recorder.rules, DenyRule("HR", app_class="hr-*"))
    recorder.backend.focus_window("Payroll — HR", "hr-client")  # type: ignore[attr-defined]
    assert wait_for(lambda: recorder._denied_now, 2)
    for event in (ButtonPress(now_ns(), 100, 100, "left"), KeyPress(now_ns(), "s", None, 115, ())):
        hooks_of(recorder.backend).emit(event)  # type: ignore[arg-type]
    recorder.stop()
    assert not any(isinstance(e, ElementSeen) for e in _stored(recorder))


def test_an_answer_for_a_closed_session_is_not_carried_into_the_next() -> None:
    got: list[Event] = []
    elements = RecorderElements(ElementsBackend(), got.append, lambda: (), frozenset, keep_names=True)
    elements.new_session(since_ns=1_000)
    elements._answered(LookupResult(999, "point", Lookup(BUTTON, "", 7, 4242), 10))
    elements._answered(LookupResult(1_000, "point", Lookup(BUTTON, "", 7, 4242), 10))
    elements._answered(LookupResult(1_001, "point", Lookup(None, DENIED, 9, 5151), 10))
    assert [e.t_ns for e in got] == [1_000]


def test_lookups_the_full_queue_refused_are_counted_per_session() -> None:
    release = threading.Event()

    class Slow(StubFinder):
        def element_at(self, x: int, y: int) -> Lookup:
            release.wait(5)
            return super().element_at(x, y)

    class SlowBackend(ElementsBackend):
        def element_lookup(
            self, on_result: Callable[[LookupResult], None], allow: WindowCheck | None = None
        ) -> ElementLookup | None:
            return ElementLookup(on_result, lambda _t, _b, check: Slow(check), allow=allow, queue_size=2)

    elements = RecorderElements(SlowBackend(), lambda e: None, lambda: (), frozenset, keep_names=True)
    assert elements.start() == "atspi"
    try:
        elements.new_session(since_ns=0)
        for i in range(10):
            elements.after_queued(ButtonPress(now_ns(), i, i, "left"))
        dropped = elements.take_dropped()
        assert 7 <= dropped <= 8  # one being looked up, two waiting, the rest refused
        assert elements.take_dropped() == 0  # taken once, into one session's count
    finally:
        release.set()
        elements.stop()


def test_a_start_that_cannot_open_its_session_stops_the_lookups(
    consented: Consented, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lookups (and the accessibility setting they switched on) never outlive a failed start."""
    from agent.errors import StoreError
    from agent.store.writer import SessionWriter

    made: list[ElementLookup] = []

    class Recording(ElementsBackend):
        def element_lookup(
            self, on_result: Callable[[LookupResult], None], allow: WindowCheck | None = None
        ) -> ElementLookup | None:
            lookup = super().element_lookup(on_result, allow)
            assert lookup is not None
            made.append(lookup)
            return lookup

    def refuse(*_args: object, **_kw: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(SessionWriter, "create", refuse)
    d, study = consented
    rec = Recorder(d, Recording(), study)
    with pytest.raises(StoreError, match="cannot open a new session"):
        rec.start()
    assert len(made) == 1 and made[0]._thread is None  # started, then stopped
    assert rec._elements is None
