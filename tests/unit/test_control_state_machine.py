"""The consent/pause state machine, property-tested (issue: no sequence of actions leads to
capture without consent, or during a pause).

Hypothesis drives a real Recorder on the fake backend through random sequences of what a
volunteer, the tray, the OS and the operator can do. After every step the invariants hold:
every move the recorder made is a path in the lifecycle table
(:data:`agent.recorder_states.TRANSITIONS`); hooks run only while recording; recording only
with a valid receipt and the indicator shown; and no event stamped inside a pause, or without
consent, reaches the store.  The table itself is checked on its own too: random events drive a
:class:`~agent.recorder_states.Lifecycle`, which moves exactly as the table says.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from agent import consent
from agent.backends.fake import FakeBackend
from agent.control import Recorder
from agent.errors import ConsentRequired, UsageError
from agent.events import KeyPress, Marker, PointerMove, now_ns
from agent.paths import Dirs
from agent.recorder_states import (
    TRANSITIONS,
    Event,
    IllegalTransition,
    Lifecycle,
    Phase,
    State,
    next_phase,
    reachable,
)
from agent.store import keys
from agent.store.reader import read_session
from agent.study import Study


class RecorderMachine(RuleBasedStateMachine):
    """Each example gets a fresh store (see the test below), a study, consent and keys."""

    dirs: ClassVar[Dirs]  # set by the test before running
    study: ClassVar[Study]

    def __init__(self) -> None:
        super().__init__()
        self.backend = FakeBackend()
        consent.grant(self.dirs, self.study, self.study.terms_sha256)
        self.rec = Recorder(self.dirs, self.backend, self.study)
        self.rec.start()
        self.sessions = [self.rec.session_id]
        self.n = 0
        self.phase = Phase.IDLE  # the phase after the last step; a new recorder starts idle

    def _hooks_alive(self) -> bool:
        hooks = self.backend.last_input
        return hooks is not None and hooks.is_alive()

    @rule()
    def move(self) -> None:
        """Input arrives (only running hooks deliver it; the fake hook refuses when stopped)."""
        hooks = self.backend.last_input
        if hooks is not None:
            self.n += 1
            hooks.emit(PointerMove(now_ns(), self.n, self.n))
            hooks.emit(KeyPress(now_ns(), "k", None, 107, ()))

    @rule(seconds=st.sampled_from([None, 600.0]))
    def pause(self, seconds: float | None) -> None:
        try:
            self.rec.pause(seconds=seconds)
        except UsageError:
            assert self.rec.state in ("stopped", "error")

    @rule()
    def resume(self) -> None:
        self.rec.resume()

    @rule(shown=st.booleans())
    def indicator(self, shown: bool) -> None:
        self.rec.indicator_changed(shown)

    @rule()
    def withdraw(self) -> None:
        consent.withdraw(self.dirs)
        self.rec._check_consent()  # what the writer does every second
        self.rec.stop()  # the background stop it started, made synchronous for the invariant

    @rule()
    def delete_last(self) -> None:
        try:
            self.rec.delete_last(60)
        except UsageError:
            assert self.rec.state not in ("recording", "paused")
        else:
            self.sessions.append(self.rec.session_id)

    @rule()
    def restart(self) -> None:
        """Quit and start again (consent may be gone: then nothing starts)."""
        self.rec.stop()
        self.every_move_is_in_the_table()
        self.backend = FakeBackend()
        self.rec = Recorder(self.dirs, self.backend, self.study)
        self.phase = Phase.IDLE
        try:
            self.rec.start()
        except ConsentRequired:
            assert consent.current_receipt(self.dirs) is None
            return
        self.sessions.append(self.rec.session_id)

    @rule()
    def grant(self) -> None:
        consent.grant(self.dirs, self.study, self.study.terms_sha256)

    @invariant()
    def every_move_is_in_the_table(self) -> None:
        """The step took the recorder along the table's moves, and it shows its phase's state."""
        phase = self.rec._life.phase
        assert phase in reachable(self.phase), f"{self.phase} -> {phase} is not in the table"
        assert self.rec.state == phase.state.value and type(self.rec.state) is str
        self.phase = phase

    @invariant()
    def capture_only_while_recording_with_consent_and_indicator(self) -> None:
        if self._hooks_alive():
            assert self.rec.state == "recording"
            receipt = consent.current_receipt(self.dirs)
            assert receipt is not None and receipt.covers(self.study)
        if self.rec.state in ("paused", "stopped", "idle", "error"):
            assert not self._hooks_alive()

    def teardown(self) -> None:
        self.rec.stop()
        identity = keys.load_identity(self.dirs)
        for sid in dict.fromkeys(s for s in self.sessions if s):
            session = self.dirs.sessions / sid
            if not session.exists():
                continue  # deleted by delete-last
            events = sorted(read_session(self.dirs, sid, identity).events, key=lambda e: e.t_ns)
            paused = False
            for event in events:
                if isinstance(event, Marker) and event.marker in ("pause", "resume"):
                    paused = event.marker == "pause"
                elif not isinstance(event, Marker):
                    assert not paused, f"{event.KIND} stored inside a pause"


def test_no_sequence_records_without_consent_or_during_a_pause(
    consented: tuple[Dirs, Study], tmp_path: Path
) -> None:
    d, study = consented
    RecorderMachine.dirs, RecorderMachine.study = d, study
    run = RecorderMachine.TestCase
    run.settings = settings(
        max_examples=25,
        stateful_step_count=12,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    run().runTest()


def test_the_table_shows_only_the_public_states_and_stopping_is_for_good() -> None:
    """The strings ``optin status`` and the tray read are a contract; a closed recorder stays closed."""
    assert {p.state.value for p in Phase} == {"idle", "recording", "paused", "stopped", "error"}
    assert {s.value for s in State} == {"idle", "recording", "paused", "stopped", "error"}
    assert reachable(Phase.IDLE) == frozenset(Phase)  # every phase can happen
    for phase in Phase:
        if phase.closed:
            assert all(p.closed for p in reachable(phase)), phase
            assert Event.START not in {e for e, row in TRANSITIONS.items() if phase in row}
    for phase in (Phase.STOPPED, Phase.ERROR):
        assert reachable(phase) == {phase}  # the end: nothing leads out


@given(st.lists(st.sampled_from(list(Event)), max_size=30))
def test_a_lifecycle_moves_exactly_as_the_table_says(events: list[Event]) -> None:
    life = Lifecycle()
    for event in events:
        before = life.phase
        expected = TRANSITIONS[event].get(before)
        if expected is None:
            with pytest.raises(IllegalTransition):
                life.fire(event)
            assert life.phase is before  # a refused move changes nothing
        else:
            assert life.fire(event) is expected is next_phase(before, event)
