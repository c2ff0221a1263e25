"""Steps: the raw event stream turned into normalised actions, one training sample each.

Pure: no I/O, no display, no logging.  Typed text is captured content: nothing here
prints, logs or puts it into an exception message.

:func:`steps` walks the exported (redacted) stream in time order and returns one
:class:`Step` per action, in the action space computer-use agents use: ``click(x, y)``,
``double_click``, ``right_click``, ``middle_click``, ``drag(from, to)``, ``scroll(dx, dy)``,
``type("...")``, ``hotkey("ctrl", "c")`` and ``key("enter")``.  Each step names its
pre-action frame, the window in force, its start and end times and the raw events it
came from (indices into the sequence given).

**Pointer.**  A button press starts a *gesture* that ends at the release of the same
button.  If the pointer never moved more than :data:`CLICK_SLOP_PX` from the press position
while the button was held (pointer moves and the release position count), it is a click
at the press position: left ``click``, right ``right_click``, middle ``middle_click``;
otherwise a ``drag`` from the press to the release position (any of those buttons, named in
``button``).  Other buttons (back/forward...) make no step: they have no action in this
action space.  Two left clicks whose presses are at most :data:`DOUBLE_CLICK_NS` apart and
:data:`CLICK_SLOP_PX` from each other, with no other step between them, are one
``double_click``.  Clicks pair greedily: a third quick click is a ``click`` of its own (a
``double_click`` and a ``click`` replayed quickly make the triple click that selects a
line), a fourth pairs with the third.  While a button is held, every other input event
(other buttons, keys, scrolls, pastes) is absorbed into the gesture: it is listed in the
gesture's events and makes no step of its own.  A press whose release never comes (a
marker, a second press of the same button, the end of the stream) makes no step.

**Scroll.**  Scroll events at most :data:`SCROLL_GAP_NS` after the previous one, within
:data:`SCROLL_SLOP_PX` of the first one's position, with the same modifiers held and not
reversing direction on either axis are one ``scroll`` step with the summed ``dx``/``dy``
(as recorded: on X11 ``dy`` = 1 is one notch up) at the first one's position.

**Typing.**  A *burst* is a run of text input: character keys without ctrl, alt or super
(shift and AltGr are text; on Windows ctrl+alt+character is AltGr; on macOS option+key
types a character), space, :class:`~agent.events.Paste` events (with the paste key that
asked for them: ctrl+V and the like are not a hotkey when their Paste follows), and
``Redacted`` records (:class:`~agent.events.Redacted`).  Once a burst is open, backspace,
delete, left, right, home and end (with shift and ctrl; on macOS shift, option and cmd)
edit inside it.  The burst becomes one ``type`` step whose text is replayed with
:func:`agent.keyboard.replay.reconstruct` (caret, selection, word deletion, caps lock, dead
keys, readline keys in terminals), each ``Redacted`` record inserting its placeholder
``[ENTITY]`` at the caret as a paste would.  A burst ends at any key that is not text or
editing (Enter, Tab, Escape, up/down, a hotkey...: that key is a step of its own), a button
press, a scroll, a change of the focused window (class, pid or geometry; a title-only
change, as editors make while one types, keeps the burst), a marker, or a pause of more than
:data:`TYPE_GAP_NS` between two of its text inputs.  Enter is its own ``key`` step
(``("enter",)``), never appended as ``"\\n"``: its pre-action frame shows the filled-in field.
A consumer wanting ``type("...\\n")`` joins a ``type`` step with the ``enter`` step right
after it.  Known limit: a burst's field starts empty, as in the reconstruction, so
deleting text that was there before the burst (more backspaces than characters typed) is
not represented.

**Text that is not known is never invented**: a burst's ``text`` is None when one of its
keys had its character removed (``char``, ``name`` and ``vk`` all None: the focused window
was unknown, or the study's ``typed_text = "drop"``), when a Paste's text is None, or when
the reconstruction is uncertain (X11 AltGr reports the base character, an unknown dead-key
pair...).  ``to_json`` then has no ``text``.  A stripped key with ctrl, alt or super held
is a hotkey whose key is unknown: it makes no step (it does end a burst).

**Keys.**  ctrl, alt or super with a key is a ``hotkey``: ``keys`` are the modifiers in the
order ctrl, alt, shift, super, then the key (a character lower-cased; Windows' control
characters ``"\\x01"``-``"\\x1a"`` read as their letters; named keys by their recorded name).
shift alone with a character is text, but shift with a named key is a ``hotkey``
(``("shift", "tab")``).  AltGr never makes a hotkey.  Any other named key alone (enter,
escape, tab, arrows, page_up, f5, delete or backspace outside a burst...) is a ``key``:
``("enter",)``.  Modifier keys (and keys with a code but no name or character, such as X11's
level-3 shift) make no step.
Key repeat (presses without releases) makes one step per press: each press is an action
and has its own pre-action frame.  A key step takes its release when it comes before the
next step starts.

**Pointer steps and modifiers.**  The modifiers held at a gesture's press or a scroll
(ctrl+click, shift+click, ctrl+scroll) are its ``keys``, in the same canonical order,
from the ``modifiers`` of the latest key event and the modifier keys since.

**Markers and tasks.**  Every marker but ``screen_layout``, and every ``task_start`` and
``task_end`` record, ends the step in progress (a gesture whose button is held is dropped),
ends any pending double click and forgets held keys: no step spans a pause, a deny gap,
secure input or a task's start or end (so a task's steps are consecutive, docs/export-format.md).

**Events.**  Each input event belongs to at most one step: a gesture's press, release, and
the pointer moves and other input while held; a scroll's events; a key step's press and its
release; a burst's key presses, releases, pastes and ``Redacted`` records.  Modifier key
events are in no step (they appear in ``keys``).  A step starts at its first event and ends
at its last; steps are in time order and do not overlap.

**Context.**  ``frame`` is the last Frame with ``t_ns <= t_start_ns`` (the pre-action frame
:mod:`agent.capture.screen` takes for every action, or the screen as it stood), ``window``
the last WindowFocus with ``t_ns <= t_start_ns``.

**Elements.**  ``element`` records (:class:`~agent.events.ElementSeen`) are in no step's
events; a step's ``element`` is the element of one of them (docs/export-format.md, "Which
element a step has"): for a click, double click, drag or scroll the ``point`` record whose
``t_ns`` is the step's ``t_start_ns`` (its press, its first scroll event); for ``type``, ``key``
and ``hotkey`` the latest ``focus`` record with ``t_ns <= t_start_ns``, unless a button press,
focused-window change, marker, task start or task end comes after it and at most at
``t_start_ns``.  Of records with the same ``t_ns`` the first in the stream counts; when none
qualifies or its result is not ``found`` the step has no element.  :class:`ElementIndex` is
that rule, shared with the bundle reader (agent/export/recount.py).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from agent.elements import FOUND
from agent.events import (
    ButtonPress,
    ButtonRelease,
    ElementSeen,
    Event,
    ExportEvent,
    Frame,
    KeyPress,
    KeyRelease,
    Marker,
    Paste,
    PointerMove,
    Redacted,
    Scroll,
    WindowFocus,
)
from agent.keyboard.names import COMMAND_MODIFIERS, EDIT_NAMES, MODIFIER_KEYS, MODIFIER_NAMES, paste_chord
from agent.keyboard.replay import reconstruct

#: Version of the step rules; bump when the same events give different steps.
#: 2: a task's start and end end the step in progress, as a marker does; each step has its element.
STEPS_VERSION = 2

#: A press and release at most this far apart (Euclidean, pixels) is a click; farther, a drag.
#: Also the largest distance between the two presses of a double click.
CLICK_SLOP_PX = 5
#: The second press of a double click comes at most this long after the first (500 ms).
DOUBLE_CLICK_NS = 500_000_000
#: Scroll events at most this long apart are one scroll step (300 ms).
SCROLL_GAP_NS = 300_000_000
#: ... when at most this far from the first one's position (pixels).
SCROLL_SLOP_PX = 20
#: A pause longer than this between two text inputs ends a type step (2 s; longer than the
#: screen watcher's typing burst, 1 s, so every type step starts where a pre-action frame was taken).
TYPE_GAP_NS = 2_000_000_000
#: A paste key is a ``type`` step when its Paste (stamped 1 ns after it) comes within this (50 ms).
PASTE_WAIT_NS = 50_000_000

#: Canonical modifier order in ``keys``.
MODIFIER_ORDER = ("ctrl", "alt", "shift", "super")
#: Action names.
ACTIONS = frozenset(
    {"click", "double_click", "right_click", "middle_click", "drag", "scroll", "type", "hotkey", "key"}
)

_CLICKS = {"left": "click", "right": "right_click", "middle": "middle_click"}
#: Modifiers an editing key may carry inside a burst (word and selection moves).
_EDIT_MODS = frozenset({"shift", "ctrl"})
_EDIT_MODS_MAC = frozenset({"shift", "alt", "super"})
#: Kinds that end the search for a paste key's Paste.
_PASTE_STOPS = frozenset({"key_press", "button_press", "scroll", "marker"})
#: Actions whose element is the one at their point (the press, the first scroll event) ...
POINT_ACTIONS = frozenset({"click", "double_click", "right_click", "middle_click", "drag", "scroll"})
#: ... and those whose element had the keyboard focus.
FOCUS_ACTIONS = frozenset({"type", "key", "hotkey"})
#: Kinds after which a ``focus`` element no longer counts (the focus it describes may be gone).
FOCUS_ENDERS = frozenset({"button_press", "window_focus", "marker", "task_start", "task_end"})


class ElementIndex:
    """Which ``element`` line is each step's element (docs/export-format.md, steps.version 2).

    Give it the element lines (:meth:`line`) and the lines of :data:`FOCUS_ENDERS` kinds
    (:meth:`ender`) in stream order, which is time order; then :meth:`of` answers per step in
    O(log n).  Memory: a few integers per element line, one per ender.  Lines are numbered by
    :meth:`line` from 0; what each line holds is the caller's.
    """

    def __init__(self) -> None:
        self._point: dict[int, int] = {}  # t_ns -> the first point line at it
        self._focus_t: list[int] = []  # distinct t_ns of focus lines, increasing
        self._focus_n: list[int] = []  # ... the first focus line at each
        self._found: list[bool] = []
        self._enders: list[int] = []
        self._last = -1

    def _in_order(self, t_ns: int) -> None:
        if t_ns < self._last:
            msg = "element and focus-ending lines are not in time order"
            raise ValueError(msg)
        self._last = t_ns

    def line(self, t_ns: int, at: str, found: bool) -> int:
        """Add an element line (``at`` ``point`` or ``focus``; ``found``: its result is ``found``);
        its number."""
        self._in_order(t_ns)
        number = len(self._found)
        self._found.append(found)
        if at == "point":
            self._point.setdefault(t_ns, number)
        elif at == "focus" and (not self._focus_t or self._focus_t[-1] != t_ns):
            self._focus_t.append(t_ns)
            self._focus_n.append(number)
        return number

    def ender(self, t_ns: int) -> None:
        """Add a line after which an earlier ``focus`` line no longer counts."""
        self._in_order(t_ns)
        self._enders.append(t_ns)

    def of(self, action: str, t_start_ns: int) -> int | None:
        """The number of the line whose element a step of ``action`` from ``t_start_ns`` has, or None."""
        chosen: int | None = None
        if action in POINT_ACTIONS:
            chosen = self._point.get(t_start_ns)
        elif action in FOCUS_ACTIONS:
            k = bisect_right(self._focus_t, t_start_ns) - 1
            if k >= 0:
                e = bisect_right(self._enders, t_start_ns) - 1
                if e < 0 or self._enders[e] <= self._focus_t[k]:
                    chosen = self._focus_n[k]
        return chosen if chosen is not None and self._found[chosen] else None


@dataclass(frozen=True)
class Step:
    """One normalised action (see the module docstring for the rules).

    :ivar action: one of :data:`ACTIONS`.
    :ivar x: where (pointer steps; for a drag its start).
    :ivar to_x: a drag's end.
    :ivar button: the button of a pointer gesture.
    :ivar dx: a scroll's summed horizontal steps (``dy`` vertical; X11: 1 is up).
    :ivar text: a type step's text after redaction (``[EMAIL]``...), None when not known.
    :ivar keys: hotkey ``("ctrl", "c")``, key ``("enter",)``, pointer steps the modifiers held.
    :ivar frame: index of the pre-action Frame (last with ``t_ns <= t_start_ns``), or None.
    :ivar window: index of the WindowFocus in force at ``t_start_ns``, or None.
    :ivar events: indices of the raw events this step came from.
    :ivar element: the UI element the action was aimed at (an ``element`` record's
        :func:`agent.elements.record_of` object, names as exported), or None.
    """

    action: str
    t_start_ns: int
    t_end_ns: int
    x: int | None = None
    y: int | None = None
    to_x: int | None = None
    to_y: int | None = None
    button: str | None = None
    dx: int = 0
    dy: int = 0
    text: str | None = None
    keys: tuple[str, ...] = ()
    frame: int | None = None
    window: int | None = None
    events: tuple[int, ...] = ()
    element: Mapping[str, Any] | None = None

    def to_json(self, events: Sequence[ExportEvent]) -> dict[str, Any]:
        """A JSON-ready dict: the action's fields (None and empty left out), times, window, frame time.

        :param events: the sequence given to :func:`steps` (``window`` and ``frame`` index it).
        """
        out: dict[str, Any] = {"action": self.action}
        for name in ("x", "y", "to_x", "to_y", "button", "text"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.action == "scroll":
            out["dx"], out["dy"] = self.dx, self.dy
        if self.keys:
            out["keys"] = list(self.keys)
        out["t_start_ns"], out["t_end_ns"] = self.t_start_ns, self.t_end_ns
        if self.window is not None:
            win = events[self.window]
            out["window"] = {
                name: getattr(win, name, None) for name in ("title", "app_class", "x", "y", "width", "height")
            }
        if self.frame is not None:
            out["frame_t_ns"] = events[self.frame].t_ns
        out["events"] = list(self.events)
        if self.element is not None:
            out["element"] = self.element
        return out


def steps(events: Sequence[ExportEvent]) -> list[Step]:
    """The steps of ``events`` (the exported, redacted stream; sorted by ``t_ns`` defensively).

    Indices in the result refer to ``events``.  Objects without an integer ``t_ns`` or of an
    unknown kind are ignored.  Never raises on well-typed events.
    """
    seg = _Segmenter(events, _time_order(events))
    return seg.run()


# --- internals ---------------------------------------------------------------------------------------


def _time_order(events: Sequence[ExportEvent]) -> list[int]:
    """Indices of the events with an integer ``t_ns``, in time order (stable)."""
    order: list[int] = []
    ordered = True
    last = None
    for i, ev in enumerate(events):
        t = getattr(ev, "t_ns", None)
        if type(t) is not int:
            continue
        if last is not None and t < last:
            ordered = False
        last = t
        order.append(i)
    if not ordered:
        order.sort(key=lambda i: events[i].t_ns)
    return order


def _far(ax: Any, ay: Any, bx: Any, by: Any, slop: int) -> bool:
    """Whether two positions are more than ``slop`` pixels apart (unknown positions are not)."""
    if type(ax) is not int or type(ay) is not int or type(bx) is not int or type(by) is not int:
        return False
    dx, dy = ax - bx, ay - by
    return dx * dx + dy * dy > slop * slop


def _combo(mods: Any, key: str | None = None) -> tuple[str, ...]:
    """Modifiers in canonical order, then ``key``."""
    held = tuple(m for m in MODIFIER_ORDER if m in mods)
    return (*held, key) if key is not None else held


def _key_of_char(char: str) -> str | None:
    """A character key's name in ``keys``: lower-cased; Windows' ctrl+letter control characters as letters."""
    if len(char) == 1 and "\x01" <= char <= "\x1a":
        return chr(ord(char) + 96)
    if char and char.isprintable():
        return char.lower()
    return None


def _text_char(char: str) -> bool:
    """Whether a character key's ``char`` is text (not empty, not a control character)."""
    return bool(char) and char.isprintable()


def _key_id(ev: KeyPress | KeyRelease) -> object:
    """Which physical key an event is, to match a release with its press (characters as ``("c", char)``)."""
    if ev.name is not None:
        return ev.name
    if ev.char:
        return ("c", ev.char.lower())
    return ("vk", ev.vk)


def _is_modifier(ev: KeyPress | KeyRelease) -> bool:
    """A modifier key, or a key with no name and no character but a code (X11 level-3 shift...)."""
    name = ev.name
    if name is not None:
        return name in MODIFIER_NAMES
    return ev.char is None and ev.vk is not None


@dataclass(eq=False, slots=True)
class _Draft:
    """A step being built."""

    action: str
    t_start: int
    t_end: int
    events: list[int]
    x: int | None = None
    y: int | None = None
    to_x: int | None = None
    to_y: int | None = None
    button: str | None = None
    dx: int = 0
    dy: int = 0
    keys: tuple[str, ...] = ()
    text: str | None = None
    #: gesture: the button is still held.
    held: bool = False
    #: gesture: the pointer went beyond the click slop while held.
    moved: bool = False
    #: typing: the events replayed into text (with modifier keys and placeholders).
    feed: list[Event] = field(default_factory=list)
    #: typing: some text in the burst is not known.
    unknown: bool = False
    #: typing and scroll: time of the latest input that continues the step.
    last_t: int = 0

    def take(self, i: int, t: int) -> None:
        self.events.append(i)
        self.t_end = t


# What a key press is (:meth:`_Segmenter.classify`).
_NOTHING, _TEXT, _EDIT, _COMBO = range(4)


class _Segmenter:
    """The single pass behind :func:`steps`: at most one step is open at a time."""

    def __init__(self, events: Sequence[ExportEvent], order: list[int]) -> None:
        self.events = events
        self.order = order
        self.pos = 0
        self.out: list[_Draft] = []
        self.cur: _Draft | None = None
        #: the last left click, while a second one may still make it a double click.
        self.single: _Draft | None = None
        #: key identity -> the step that took its press.
        self.held_keys: dict[object, _Draft] = {}
        #: held keys without name or character (X11 level-3 shift...), for the replay.
        self.held_odd: dict[object, KeyPress] = {}
        self.mods: frozenset[str] = frozenset()
        self.caps = False
        self.caps_held = False
        self.backend: str | None = None
        self.focus_key: tuple[Any, ...] | None = None
        self.focus: WindowFocus | None = None
        self.frame_t: list[int] = []
        self.frame_i: list[int] = []
        self.win_t: list[int] = []
        self.win_i: list[int] = []
        self.elements = ElementIndex()
        self.element_of: list[int] = []  # element line number -> index into events
        self.handlers: dict[str, Callable[[int, Any], None]] = {
            "button_press": self.button_press,
            "button_release": self.button_release,
            "scroll": self.scroll,
            "key_press": self.key_press,
            "key_release": self.key_release,
            "paste": self.text_input,
            "redacted": self.text_input,
            "frame": self.frame,
            "window_focus": self.window_focus,
            "marker": self.marker,
            "task_start": self.task_line,
            "task_end": self.task_line,
        }

    # -- the loop ---------------------------------------------------------------------------------

    def run(self) -> list[Step]:
        events = self.events
        handlers = self.handlers
        for pos, i in enumerate(self.order):
            ev = events[i]
            kind = getattr(ev, "KIND", None)
            if kind == "pointer_move":
                cur = self.cur
                if cur is not None and cur.held:
                    self.pointer_at(cur, i, cast(PointerMove, ev))  # KIND names the record's class
                continue
            if not isinstance(kind, str):
                continue
            if kind in FOCUS_ENDERS:
                self.elements.ender(ev.t_ns)
            elif kind == "element":
                self.element_line(i, cast(ElementSeen, ev))  # KIND names the record's class
                continue
            handler = handlers.get(kind)
            if handler is not None:
                self.pos = pos
                handler(i, ev)
        self.close()
        return [self.build(d) for d in self.out]

    def build(self, d: _Draft) -> Step:
        f = bisect_right(self.frame_t, d.t_start) - 1
        w = bisect_right(self.win_t, d.t_start) - 1
        line = self.elements.of(d.action, d.t_start)
        return Step(
            action=d.action,
            t_start_ns=d.t_start,
            t_end_ns=d.t_end,
            x=d.x,
            y=d.y,
            to_x=d.to_x,
            to_y=d.to_y,
            button=d.button,
            dx=d.dx,
            dy=d.dy,
            text=d.text,
            keys=d.keys,
            frame=self.frame_i[f] if f >= 0 else None,
            window=self.win_i[w] if w >= 0 else None,
            events=tuple(d.events),
            element=None if line is None else cast(ElementSeen, self.events[self.element_of[line]]).element,
        )

    def open(self, draft: _Draft) -> _Draft:
        """Close the step in progress and make ``draft`` the open one."""
        self.close()
        self.cur = draft
        return draft

    def close(self) -> None:
        """End the open step: a held gesture is dropped, a burst gets its text."""
        d = self.cur
        if d is None:
            return
        self.cur = None
        if d.held:
            return
        if d.action == "type":
            d.text = self.burst_text(d)
            d.feed = []
        self.out.append(d)

    def absorbing(self, i: int, t: int) -> bool:
        """While a button is held every input joins its gesture."""
        cur = self.cur
        if cur is not None and cur.held:
            cur.take(i, t)
            return True
        return False

    # -- context ----------------------------------------------------------------------------------

    def element_line(self, i: int, ev: ElementSeen) -> None:
        """An element lookup: in no step, the element of the steps :class:`ElementIndex` gives it."""
        self.elements.line(ev.t_ns, ev.at, ev.result == FOUND and ev.element is not None)
        self.element_of.append(i)

    def frame(self, i: int, ev: Frame) -> None:
        self.frame_t.append(ev.t_ns)
        self.frame_i.append(i)

    def window_focus(self, i: int, ev: WindowFocus) -> None:
        self.win_t.append(ev.t_ns)
        self.win_i.append(i)
        key = (ev.app_class, ev.pid, ev.x, ev.y, ev.width, ev.height)
        if key != self.focus_key:
            cur = self.cur
            if cur is not None and cur.action == "type":
                self.close()
            self.focus_key = key
        self.focus = ev

    def marker(self, i: int, ev: Marker) -> None:
        if ev.marker == "screen_layout":
            return
        if ev.marker == "session_start":
            detail = ev.detail
            backend = detail.get("backend") if hasattr(detail, "get") else None
            self.backend = backend if isinstance(backend, str) else None
        self.task_line(i, ev)

    def task_line(self, i: int, ev: Any) -> None:
        """A marker, or a task's start or end: the step in progress ends, held keys are forgotten."""
        self.close()
        self.single = None
        # capture stops and starts at markers: a key held across one lost its release
        self.held_keys.clear()
        self.held_odd.clear()
        self.mods = frozenset()
        self.caps_held = False

    # -- pointer ----------------------------------------------------------------------------------

    def pointer_at(self, g: _Draft, i: int, ev: PointerMove | ButtonPress | ButtonRelease) -> None:
        g.take(i, ev.t_ns)
        if not g.moved and _far(ev.x, ev.y, g.x, g.y, CLICK_SLOP_PX):
            g.moved = True

    def button_press(self, i: int, ev: ButtonPress) -> None:
        cur = self.cur
        t = ev.t_ns
        if cur is not None and cur.held:
            if ev.button != cur.button:
                self.pointer_at(cur, i, ev)
                return
            self.close()  # the same button again: its release was lost, the gesture is dropped
        self.open(
            _Draft("press", t, t, [i], x=ev.x, y=ev.y, button=ev.button, keys=_combo(self.mods), held=True)
        )

    def button_release(self, i: int, ev: ButtonRelease) -> None:
        g = self.cur
        if g is None or not g.held:
            return  # a release without its press
        self.pointer_at(g, i, ev)
        if ev.button != g.button:
            return
        g.held = False
        self.cur = None
        if g.moved:
            g.action, g.to_x, g.to_y = "drag", ev.x, ev.y
        elif g.button in _CLICKS:
            g.action = _CLICKS[g.button]
        else:
            return  # another button: no action in this action space
        single = self.single
        if (
            g.action == "click"
            and single is not None
            and self.out
            and self.out[-1] is single
            and g.t_start - single.t_start <= DOUBLE_CLICK_NS
            and not _far(g.x, g.y, single.x, single.y, CLICK_SLOP_PX)
        ):
            single.action = "double_click"
            single.events += g.events
            single.t_end = g.t_end
            self.single = None
            return
        self.out.append(g)
        self.single = g if g.action == "click" else None

    def scroll(self, i: int, ev: Scroll) -> None:
        t = ev.t_ns
        if self.absorbing(i, t):
            return
        dx, dy = ev.dx, ev.dy
        if type(dx) is not int:
            dx = 0
        if type(dy) is not int:
            dy = 0
        keys = _combo(self.mods)
        cur = self.cur
        if (
            cur is None
            or cur.action != "scroll"
            or t - cur.last_t > SCROLL_GAP_NS
            or cur.keys != keys
            or _far(ev.x, ev.y, cur.x, cur.y, SCROLL_SLOP_PX)
            or cur.dx * dx < 0
            or cur.dy * dy < 0
        ):
            cur = self.open(_Draft("scroll", t, t, [], x=ev.x, y=ev.y, keys=keys))
        cur.take(i, t)
        cur.last_t = t
        cur.dx += dx
        cur.dy += dy

    # -- keys -------------------------------------------------------------------------------------

    def key_press(self, i: int, ev: KeyPress) -> None:
        t = ev.t_ns
        mods = ev.modifiers or ()
        name = ev.name
        mod = MODIFIER_KEYS.get(name) if name is not None else None
        self.mods = frozenset(mods) | {mod} if mod is not None else frozenset(mods)
        if _is_modifier(ev):
            self.modifier_press(ev)
            return
        if self.absorbing(i, t):
            return
        kind, keys = self.classify(ev, mods)
        if kind in (_TEXT, _EDIT):
            burst = self.burst(t)
            burst.take(i, t)
            burst.feed.append(ev)
            if kind == _TEXT:
                burst.last_t = t
                if ev.char is None and name is None:
                    burst.unknown = True  # its character was removed
            self.held_keys[_key_id(ev)] = burst
        elif kind == _COMBO:
            action = "key" if len(keys) == 1 else "hotkey"
            self.held_keys[_key_id(ev)] = self.open(_Draft(action, t, t, [i], keys=keys))
        else:
            self.close()  # a key we cannot name: it is an action, so a burst ends, but no step

    def classify(self, ev: KeyPress, mods: Sequence[str]) -> tuple[int, tuple[str, ...]]:
        """What a (non-modifier) key press is: text (a paste key included), an edit in the open burst,
        a key or hotkey (with its ``keys``), or nothing we can name."""
        command = COMMAND_MODIFIERS.intersection(mods)
        if ev.name is not None:
            return self.classify_named(ev, mods, command)
        char = ev.char
        if char is None:  # its character was removed
            return (_NOTHING, ()) if command else (_TEXT, ())
        if not command or self.text_despite(command, char):
            return (_TEXT, ()) if _text_char(char) else (_NOTHING, ())
        if self.paste_follows(ev):
            return _TEXT, ()
        key = _key_of_char(char)
        return (_NOTHING, ()) if key is None else (_COMBO, _combo(mods, key))

    def classify_named(
        self, ev: KeyPress, mods: Sequence[str], command: frozenset[str]
    ) -> tuple[int, tuple[str, ...]]:
        """:meth:`classify` for a named key (space, enter, backspace, f5...)."""
        name = ev.name
        if name == "space" and not command:
            return _TEXT, ()
        edit_mods = _EDIT_MODS_MAC if self.backend == "darwin" else _EDIT_MODS
        if name in EDIT_NAMES and self.open_burst(ev.t_ns) and edit_mods.issuperset(mods):
            return _EDIT, ()
        if name == "insert" and self.paste_follows(ev):
            return _TEXT, ()
        return _COMBO, _combo(mods, name)

    def text_despite(self, command: frozenset[str], char: str) -> bool:
        """Characters typed with command modifiers: Windows AltGr (ctrl+alt), macOS option."""
        if self.backend == "darwin":
            return command == {"alt"}
        if self.backend == "win32" and command == {"ctrl", "alt"}:
            return char.isprintable() and not char.isspace()
        return False

    def paste_follows(self, ev: KeyPress) -> bool:
        """Whether ``ev`` is a paste key whose Paste (or its Redacted record) follows."""
        if not paste_chord(ev):
            return False
        events = self.events
        order = self.order
        limit = ev.t_ns + PASTE_WAIT_NS
        for pos in range(self.pos + 1, len(order)):
            nxt = events[order[pos]]
            if nxt.t_ns > limit:
                return False
            kind = getattr(nxt, "KIND", None)
            if kind in ("paste", "redacted"):
                return True
            if kind in _PASTE_STOPS:
                return False
        return False

    def modifier_press(self, ev: KeyPress) -> None:
        name = ev.name
        if name == "caps_lock":
            if not self.caps_held:
                self.caps = not self.caps
            self.caps_held = True
        elif name is None:
            self.held_odd[("vk", ev.vk)] = ev
        cur = self.cur
        if cur is not None and cur.action == "type":
            cur.feed.append(ev)

    def key_release(self, i: int, ev: KeyRelease) -> None:
        t = ev.t_ns
        self.mods = frozenset(ev.modifiers or ())
        cur = self.cur
        if _is_modifier(ev):
            if ev.name == "caps_lock":
                self.caps_held = False
            self.held_odd.pop(("vk", ev.vk), None)
            if cur is not None and cur.action == "type":
                cur.feed.append(ev)
            return
        if self.absorbing(i, t):
            return
        held = self.held_keys
        owner = held.pop(_key_id(ev), None)
        if owner is None and cur is not None and ev.name is None and ev.char:
            # X11 reports a release with the state at release time (shift+2 released as "2"):
            # the newest character key of the open step
            for key in reversed(held):
                if held[key] is cur and isinstance(key, tuple) and key[0] == "c":
                    owner = held.pop(key)
                    break
        if owner is not None and owner is cur:
            owner.take(i, t)
            if owner.action == "type":
                owner.feed.append(ev)

    # -- typing -----------------------------------------------------------------------------------

    def open_burst(self, t: int) -> bool:
        """Whether a burst is open and ``t`` is not after a pause that ends it."""
        cur = self.cur
        return cur is not None and cur.action == "type" and t - cur.last_t <= TYPE_GAP_NS

    def burst(self, t: int) -> _Draft:
        """The open burst, or a new one (closing the step in progress)."""
        cur = self.cur
        if cur is not None and cur.action == "type" and t - cur.last_t <= TYPE_GAP_NS:
            return cur
        draft = self.open(_Draft("type", t, t, [], last_t=t))
        draft.feed = self.preamble(t)
        return draft

    def preamble(self, t: int) -> list[Event]:
        """What the replay must know from before a burst: the focused window, caps lock, odd held keys."""
        feed: list[Event] = []
        if self.focus is not None:
            feed.append(self.focus)
        if self.caps and self.backend != "darwin":
            feed.append(KeyPress(t, None, "caps_lock", None, ()))
            feed.append(KeyRelease(t, None, "caps_lock", None, ()))
        feed.extend(self.held_odd.values())
        return feed

    def text_input(self, i: int, ev: Paste | Redacted) -> None:
        """A Paste or a Redacted record: text at the caret."""
        t = ev.t_ns
        if self.absorbing(i, t):
            return
        burst = self.burst(t)
        burst.take(i, t)
        burst.last_t = t
        if ev.KIND == "paste":
            ev = cast(Paste, ev)  # KIND names the record's class
            if not isinstance(ev.text, str):
                burst.unknown = True
            burst.feed.append(ev)
        else:
            entity = getattr(ev, "entity", None)
            if not isinstance(entity, str) or not entity:
                entity = "REDACTED"
            burst.feed.append(Paste(t, f"[{entity}]"))

    def burst_text(self, d: _Draft) -> str | None:
        """The burst's text as the reconstruction replays it, or None when it is not known."""
        if d.unknown:
            return None
        fields = reconstruct(d.feed, backend=self.backend)
        if any(f.uncertain for f in fields):
            return None
        return "".join(f.text for f in fields)


__all__ = [
    "ACTIONS",
    "CLICK_SLOP_PX",
    "DOUBLE_CLICK_NS",
    "FOCUS_ACTIONS",
    "FOCUS_ENDERS",
    "MODIFIER_ORDER",
    "PASTE_WAIT_NS",
    "POINT_ACTIONS",
    "SCROLL_GAP_NS",
    "SCROLL_SLOP_PX",
    "STEPS_VERSION",
    "TYPE_GAP_NS",
    "ElementIndex",
    "Step",
    "steps",
]
