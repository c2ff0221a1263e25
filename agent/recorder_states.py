"""The recorder's lifecycle as one explicit machine: its phases, the events between them, one table.

Pure: no I/O, no threads.  :class:`agent.control.Recorder` owns one :class:`Lifecycle`
and moves it only through :meth:`Lifecycle.fire`; a move the table does not list is
a bug and raises :class:`IllegalTransition`.  The property test
(``tests/unit/test_control_state_machine.py``) checks that every step a real recorder
takes is a path in :data:`TRANSITIONS`.

A :class:`Phase` is what ``optin status`` shows (:class:`State`, a contract the tray,
``status.json`` and the control socket read) together with whether the recorder is
*closed*: it can no longer start, pause or open a session.  The two differ while the
recorder is closing (it still shows ``recording`` or ``paused`` while it seals the
session) and when a session between two could not be sealed (it shows ``error`` and
goes on in the next session)::

    idle ─START→ recording ⇄ paused            (START_PAUSED: the volunteer's pause restored)
      │             │           │
      CLOSE       CLOSE       CLOSE
      ↓             ↓           ↓
    stopped ←SEALED─ closing ───┘ ─FAIL→ error

The sink's gate (:class:`Intake`) is the second, smaller machine: whether the hooks'
events are taken, and whether those refused are counted as lost (after the store failed).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType


class State(str, enum.Enum):
    """What ``optin status``, ``status.json`` and :attr:`Recorder.state` show (a contract)."""

    IDLE = "idle"
    RECORDING = "recording"
    PAUSED = "paused"
    STOPPED = "stopped"
    ERROR = "error"


class Phase(enum.Enum):
    """The state shown and whether the recorder is closed."""

    IDLE = (State.IDLE, False)
    RECORDING = (State.RECORDING, False)
    PAUSED = (State.PAUSED, False)
    #: A session between two (delete-last, review) could not be sealed; the next one opens.
    SEAL_FAILED = (State.ERROR, False)
    CLOSING_RECORDING = (State.RECORDING, True)
    CLOSING_PAUSED = (State.PAUSED, True)
    STOPPED = (State.STOPPED, True)
    ERROR = (State.ERROR, True)

    @property
    def state(self) -> State:
        return self.value[0]

    @property
    def closed(self) -> bool:
        """The recorder can no longer start, pause or open a session."""
        return self.value[1]


class Event(enum.Enum):
    """What moves a recorder from one phase to the next."""

    START = "start"  #: capture starts
    START_PAUSED = "start paused"  #: the volunteer paused before the last stop: start paused
    PAUSE = "pause"  #: the hooks and the grabber stop
    RESUME = "resume"  #: they start again
    REOPEN_RECORDING = "reopen recording"  #: a session between two reopened, recording
    REOPEN_PAUSED = "reopen paused"  #: ... reopened, paused
    FAIL = "fail"  #: a session could not be sealed, or capture stops for a failure
    CLOSE = "close"  #: stopping begins: nothing can start, pause or open a session any more
    SEALED = "sealed"  #: the session is sealed (or abandoned): stopping is done


P = Phase
#: Every move a recorder can make: for each event, the phase it leaves and the phase it enters.
TRANSITIONS: Mapping[Event, Mapping[Phase, Phase]] = MappingProxyType(
    {
        Event.START: {P.IDLE: P.RECORDING},
        Event.START_PAUSED: {P.IDLE: P.PAUSED},
        Event.PAUSE: {P.RECORDING: P.PAUSED},
        Event.RESUME: {P.PAUSED: P.RECORDING},
        Event.REOPEN_RECORDING: {P.RECORDING: P.RECORDING, P.SEAL_FAILED: P.RECORDING},
        Event.REOPEN_PAUSED: {P.PAUSED: P.PAUSED, P.SEAL_FAILED: P.PAUSED},
        Event.FAIL: {
            P.RECORDING: P.SEAL_FAILED,
            P.PAUSED: P.SEAL_FAILED,
            P.SEAL_FAILED: P.SEAL_FAILED,
            P.CLOSING_RECORDING: P.ERROR,
            P.CLOSING_PAUSED: P.ERROR,
            P.ERROR: P.ERROR,
        },
        Event.CLOSE: {
            P.IDLE: P.STOPPED,
            P.RECORDING: P.CLOSING_RECORDING,
            P.PAUSED: P.CLOSING_PAUSED,
            P.SEAL_FAILED: P.ERROR,
        },
        Event.SEALED: {P.CLOSING_RECORDING: P.STOPPED, P.CLOSING_PAUSED: P.STOPPED, P.ERROR: P.ERROR},
    }
)
del P


class IllegalTransition(RuntimeError):
    """A recorder tried a move :data:`TRANSITIONS` does not list (a bug in the recorder)."""


def next_phase(phase: Phase, event: Event) -> Phase:
    """The phase ``event`` leads to from ``phase``.

    :raises IllegalTransition: the table has no such move.
    """
    target = TRANSITIONS[event].get(phase)
    if target is None:
        msg = f"the recorder cannot {event.value} while {phase.name.lower()}"
        raise IllegalTransition(msg)
    return target


def reachable(start: Phase) -> frozenset[Phase]:
    """Every phase a recorder in ``start`` can reach in any number of moves (``start`` included)."""
    seen = {start}
    todo = [start]
    while todo:
        phase = todo.pop()
        for row in TRANSITIONS.values():
            target = row.get(phase)
            if target is not None and target not in seen:
                seen.add(target)
                todo.append(target)
    return frozenset(seen)


class Lifecycle:
    """A recorder's current phase, moved only along :data:`TRANSITIONS` (the caller locks)."""

    def __init__(self) -> None:
        self.phase = Phase.IDLE

    def fire(self, event: Event) -> Phase:
        """Make the move ``event`` and return the new phase.

        :raises IllegalTransition: the table has no such move from the current phase.
        """
        self.phase = next_phase(self.phase, event)
        return self.phase


class Intake(enum.Enum):
    """The sink's gate: are the hooks' events taken, and are those refused counted as lost?"""

    SHUT = "shut"  #: nothing is taken (no session, or it is being sealed); nothing counted
    OPEN = "open"  #: events are queued for the writer
    FAILED = "failed"  #: the store failed: nothing is taken, and what arrives is counted as lost

    def opened(self) -> Intake:
        """A session opens: events are taken again."""
        return Intake.OPEN

    def shut(self) -> Intake:
        """The session closes; after a store failure what arrives is still counted as lost."""
        return Intake.FAILED if self is Intake.FAILED else Intake.SHUT

    def failed(self) -> Intake:
        """The store failed."""
        return Intake.FAILED
