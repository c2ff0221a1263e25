"""Pointer-move coalescing: exact cases and hypothesis properties over random streams and batchings."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.capture.coalesce import DEFAULT_MAX_HZ, CoalesceState, coalesce, flush
from agent.events import (
    ButtonPress,
    ButtonRelease,
    Event,
    Frame,
    KeyPress,
    KeyRelease,
    Marker,
    PointerMove,
    Scroll,
    WindowFocus,
)

MS = 1_000_000
T0 = 7_000_000_000  # an arbitrary monotonic start, far from zero
PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run(
    chunks: Sequence[Sequence[Event]], max_hz: float | None = DEFAULT_MAX_HZ
) -> tuple[list[Event], list[Event], CoalesceState]:
    """Coalesce ``chunks`` with the state threaded through, then flush: (output, flushed tail, state)."""
    state = CoalesceState()
    out: list[Event] = []
    for chunk in chunks:
        part, state = coalesce(chunk, state, max_hz=max_hz)
        out += part
    tail, state = flush(state)
    return out + tail, tail, state


def moves_of(events: Sequence[Event]) -> list[PointerMove]:
    return [e for e in events if isinstance(e, PointerMove)]


def others_of(events: Sequence[Event]) -> list[Event]:
    return [e for e in events if not isinstance(e, PointerMove)]


def kept_mask(inp: Sequence[Event], out: Sequence[Event]) -> list[bool]:
    """Which input events are in the output; fails unless the output is a subsequence (by identity)."""
    j = 0
    mask = []
    for event in inp:
        kept = j < len(out) and out[j] is event
        mask.append(kept)
        j += kept
    assert j == len(out), "the output is not a subsequence of the input (reordered, changed or invented)"
    return mask


def last_move_before_each_other(events: Sequence[Event]) -> list[PointerMove | None]:
    """For each non-move event, in order: the last pointer move before it (None if none)."""
    last: PointerMove | None = None
    found: list[PointerMove | None] = []
    for e in events:
        if isinstance(e, PointerMove):
            last = e
        else:
            found.append(last)
    return found


def same_objects(a: Sequence[object], b: Sequence[object]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def moves_at_1khz(start_ns: int, n: int, x0: int = 0) -> list[PointerMove]:
    return [PointerMove(start_ns + i * MS, x0 + i, 2 * i) for i in range(n)]


# ---------------------------------------------------------------- exact cases


def test_1khz_for_one_second_gives_50_moves_plus_the_last() -> None:
    moves = moves_at_1khz(T0, 1000)  # 0 ms .. 999 ms
    out, state = coalesce(moves, CoalesceState())
    # emitted at 0, 20, ..., 980 ms: exactly 50, the first one first
    assert [e.t_ns - T0 for e in out] == [20 * MS * k for k in range(50)]
    assert out[0] is moves[0]
    assert all(e is moves[(e.t_ns - T0) // MS] for e in out)
    assert state.pending is moves[-1] and state.last_emitted_ns == T0 + 980 * MS
    assert state.coalesced == 1000 - 50 - 1
    tail, state = flush(state)
    assert tail == [moves[-1]] and tail[0] is moves[-1]
    assert state.pending is None and state.last_emitted_ns == moves[-1].t_ns
    assert state.coalesced == 1000 - 51


def test_drag_keeps_the_position_at_press_and_release() -> None:
    before = moves_at_1khz(T0, 7)
    press = ButtonPress(T0 + 7 * MS, 6, 12, "left")
    drag = moves_at_1khz(T0 + 8 * MS, 100, x0=100)
    release = ButtonRelease(T0 + 108 * MS, 199, 198, "left")
    after = moves_at_1khz(T0 + 109 * MS, 5, x0=500)
    out, tail, state = run([[*before, press, *drag, release, *after]])
    i_press, i_release = out.index(press), out.index(release)
    assert out[i_press - 1] is before[-1]
    at_release = out[i_release - 1]
    assert at_release is drag[-1]
    assert isinstance(at_release, PointerMove)
    assert (at_release.t_ns, at_release.x, at_release.y) == (T0 + 107 * MS, 199, 198)
    assert tail == [after[-1]] and out[-1] is after[-1]
    assert state.coalesced == len(moves_of([*before, *drag, *after])) - len(moves_of(out))


@pytest.mark.parametrize(
    "other",
    [
        ButtonPress(T0 + 5 * MS, 1, 1, "left"),
        ButtonRelease(T0 + 5 * MS, 1, 1, "right"),
        Scroll(T0 + 5 * MS, 1, 1, 0, -3),
        KeyPress(T0 + 5 * MS, "a", None, 97),
        KeyRelease(T0 + 5 * MS, None, "enter", 65293),
        Frame(T0 + 5 * MS, 0, 0, 1, 1, "png", "click", b"img"),
        WindowFocus(T0 + 5 * MS, "title", "XTerm", 42),
        Marker(T0 + 5 * MS, "pause"),
    ],
    ids=lambda e: e.KIND,
)
def test_every_other_kind_forces_out_the_pending_move(other: Event) -> None:
    moves = moves_at_1khz(T0, 5)
    out, state = coalesce([*moves, other], CoalesceState())
    assert same_objects(out, [moves[0], moves[-1], other])
    assert state == CoalesceState(last_emitted_ns=moves[-1].t_ns, pending=None, coalesced=3)


def test_without_moves_the_output_is_the_input() -> None:
    events: list[Event] = [
        KeyPress(T0, "a", None, 97),
        ButtonPress(T0 + 1, 5, 5, "left"),
        Frame(T0 + 1, 0, 0, 1, 1, "png", "click", b"img"),
        ButtonRelease(T0 + 2, 5, 5, "left"),
        Scroll(T0 + 3, 5, 5, 1, 0),
        Marker(T0 + 4, "session_stop"),
    ]
    snapshot = list(events)
    out, state = coalesce(events, CoalesceState())
    assert same_objects(out, events) and events == snapshot
    assert state == CoalesceState()
    assert flush(state) == ([], state)


def test_spacing_boundary_is_inclusive() -> None:
    a, b, c = PointerMove(T0, 0, 0), PointerMove(T0 + 20 * MS - 1, 1, 1), PointerMove(T0 + 20 * MS, 2, 2)
    out, state = coalesce([a, b, c], CoalesceState())
    assert same_objects(out, [a, c]) and state.coalesced == 1 and state.pending is None


def test_spacing_counts_from_the_last_emitted_move_so_60hz_becomes_30hz() -> None:
    moves = [PointerMove(T0 + i * 1_000_000_000 // 60, i, i) for i in range(61)]
    out, _ = coalesce(moves, CoalesceState())
    assert same_objects(out, moves[::2])


def test_a_forced_out_move_restarts_the_spacing() -> None:
    a, b = PointerMove(T0, 0, 0), PointerMove(T0 + 5 * MS, 1, 1)
    key = KeyPress(T0 + 6 * MS, "a", None, 97)
    c, d = PointerMove(T0 + 21 * MS, 2, 2), PointerMove(T0 + 25 * MS, 3, 3)
    out, state = coalesce([a, b, key, c, d], CoalesceState())
    # c is 21 ms after a but only 16 ms after b, which was emitted for the key
    assert same_objects(out, [a, b, key, d])
    assert state.coalesced == 1


def test_pending_move_carries_across_batches() -> None:
    m0, m1 = PointerMove(T0, 0, 0), PointerMove(T0 + MS, 1, 1)
    press = ButtonPress(T0 + 2 * MS, 1, 1, "left")
    out1, state = coalesce([m0, m1], CoalesceState())
    assert same_objects(out1, [m0]) and state.pending is m1
    out2, state = coalesce([press], state)
    assert same_objects(out2, [m1, press]) and state.pending is None


def test_backwards_time_emits_and_reanchors() -> None:
    a = PointerMove(T0 + 100 * MS, 0, 0)
    b = PointerMove(T0 + 50 * MS, 1, 1)  # earlier than the last emitted move: emitted, new reference
    c = PointerMove(T0 + 60 * MS, 2, 2)  # 10 ms after b: pending
    press = ButtonPress(T0 + 40 * MS, 2, 2, "left")  # out-of-order press still gets c before it
    out, state = coalesce([a, b, c, press], CoalesceState())
    assert same_objects(out, [a, b, c, press]) and state.coalesced == 0


def test_one_bogus_future_timestamp_does_not_suppress_later_moves() -> None:
    bogus = PointerMove(T0 + 10**15, 0, 0)
    normal = moves_at_1khz(T0, 100)
    out, _ = coalesce([bogus, *normal], CoalesceState())
    assert [e.t_ns - T0 for e in out[1:]] == [20 * MS * k for k in range(5)]


@pytest.mark.parametrize("max_hz", [None, math.inf])
def test_no_cap_passes_everything(max_hz: float | None) -> None:
    events: list[Event] = [*moves_at_1khz(T0, 10), KeyPress(T0 + 10 * MS, "a", None, 97)]
    out, state = coalesce(events, CoalesceState(), max_hz=max_hz)
    assert same_objects(out, events) and state.coalesced == 0 and state.pending is None


def test_other_rates() -> None:
    out, _ = coalesce(moves_at_1khz(T0, 1000), CoalesceState(), max_hz=10)
    assert [e.t_ns - T0 for e in out] == [100 * MS * k for k in range(10)]
    out, _ = coalesce(moves_at_1khz(T0, 1000), CoalesceState(), max_hz=1000)
    assert len(out) == 1000


@pytest.mark.parametrize("max_hz", [0, -1, -0.5, math.nan, -math.inf])
def test_bad_rates_are_rejected(max_hz: float) -> None:
    with pytest.raises(ValueError, match="max_hz must be a positive number"):
        coalesce([], CoalesceState(), max_hz=max_hz)


# ---------------------------------------------------------------- properties

HZ = st.sampled_from([DEFAULT_MAX_HZ, 60.0, 7.3, 1000.0, 1e9])


MAKERS: dict[str, Callable[[int, int, int], Event]] = {
    "move": PointerMove,
    "press": lambda t, x, y: ButtonPress(t, x, y, "left"),
    "release": lambda t, x, y: ButtonRelease(t, x, y, "left"),
    "scroll": lambda t, x, y: Scroll(t, x, y, 0, -1),
    "key": lambda t, x, y: KeyPress(t, "a", None, 97),
    "frame": lambda t, x, y: Frame(t, 0, 0, 1, 1, "png", "click", b"img"),
    "focus": lambda t, x, y: WindowFocus(t, "title", "XTerm", x),
    "marker": lambda t, x, y: Marker(t, "pause"),
}
#: Two moves for every other event, roughly: runs of moves between other events, as in real input.
KINDS = st.sampled_from(["move"] * 14 + sorted(set(MAKERS) - {"move"}))


@st.composite
def streams(draw: st.DrawFn, monotonic: bool = True) -> tuple[list[Event], float]:
    """Random event streams; gaps cluster around the spacing so both sides of the boundary occur."""
    max_hz = draw(HZ)
    p = int(1e9 / max_hz)
    gap = st.one_of(st.integers(0, 3 * p + 3), st.sampled_from([0, max(p - 1, 0), p, p + 1]))
    if not monotonic:
        gap = gap | gap.map(lambda g: -g)
    t = draw(st.integers(0, 2**50))
    events: list[Event] = []
    for kind, g, x, y in draw(st.lists(st.tuples(KINDS, gap, st.integers(-50, 50), st.integers(-50, 50)))):
        t += g
        events.append(MAKERS[kind](t, x, y))
    return events, max_hz


def split(events: list[Event], cuts: list[int]) -> list[list[Event]]:
    bounds = [0, *sorted(cuts), len(events)]
    return [events[a:b] for a, b in pairwise(bounds)]


def check_common(events: list[Event], max_hz: float, cuts: list[int]) -> tuple[list[Event], list[Event]]:
    """Properties that hold for any timestamps; returns (output, flushed tail)."""
    out, tail, state = run([events], max_hz)
    # (5) batch-splitting invariance: same objects and same final state
    out_c, tail_c, state_c = run(split(events, cuts), max_hz)
    assert same_objects(out_c, out) and same_objects(tail_c, tail) and state_c == state
    # (1) every non-move event appears, in order, unchanged (the very same object)
    assert same_objects(others_of(out), others_of(events))
    # (3) the output (so its moves) is a subsequence of the input
    kept_mask(events, out)
    # (2) for every non-move event, the last move before it in the output is the last move before it
    # in the input (None in both if the input has no move before it)
    assert same_objects(last_move_before_each_other(out), last_move_before_each_other(events))
    # ... and after the flush the stream's last move is in the output
    if moves_of(events):
        assert moves_of(out)[-1] is moves_of(events)[-1]
    # (6) accounting
    assert state.pending is None
    assert state.coalesced == len(moves_of(events)) - len(moves_of(out))
    return out, tail


@PROPERTY_SETTINGS
@given(stream=streams(), data=st.data())
def test_properties_on_monotonic_streams(stream: tuple[list[Event], float], data: st.DataObject) -> None:
    events, max_hz = stream
    period = 1e9 / max_hz
    cuts = data.draw(st.lists(st.integers(0, len(events))))
    out, tail = check_common(events, max_hz, cuts)

    # (4) consecutive emitted moves are >= 1/max_hz apart unless the later one was forced out:
    # directly followed by a non-move event, or emitted by the flush
    for i, b in enumerate(out):
        if not isinstance(b, PointerMove):
            continue
        prev = next((e for e in reversed(out[:i]) if isinstance(e, PointerMove)), None)
        forced = (i + 1 < len(out) and not isinstance(out[i + 1], PointerMove)) or (
            i == len(out) - 1 and same_objects(tail, [b])
        )
        assert prev is None or forced or b.t_ns - prev.t_ns >= period

    # (7) no needless drop: a dropped move was superseded by a later move before the next non-move
    # event, and was closer than 1/max_hz to the last move kept before it (so the first move is kept)
    mask = kept_mask(events, out)
    for i, e in enumerate(events):
        if not isinstance(e, PointerMove) or mask[i]:
            continue
        assert i + 1 < len(events) and isinstance(events[i + 1], PointerMove)
        last_kept = next(
            (events[j] for j in range(i - 1, -1, -1) if mask[j] and isinstance(events[j], PointerMove)), None
        )
        assert last_kept is not None and e.t_ns - last_kept.t_ns < period


@PROPERTY_SETTINGS
@given(stream=streams(monotonic=False), data=st.data())
def test_properties_hold_when_time_goes_backwards(
    stream: tuple[list[Event], float], data: st.DataObject
) -> None:
    events, max_hz = stream
    check_common(events, max_hz, data.draw(st.lists(st.integers(0, len(events)))))


@PROPERTY_SETTINGS
@given(stream=streams(monotonic=False), data=st.data())
def test_no_cap_is_the_identity(stream: tuple[list[Event], float], data: st.DataObject) -> None:
    events, _ = stream
    out, tail, state = run(split(events, data.draw(st.lists(st.integers(0, len(events))))), max_hz=None)
    assert same_objects(out, events) and tail == [] and state.coalesced == 0
