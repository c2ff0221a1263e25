"""The soak's driver (tests/soak, `make soak`) for a few seconds: the real agent on a private display
goes through every phase of a cycle, is sampled (itself and its children) and its status read, the
pauses take, nothing is lost and it stops cleanly.  The growth detector is tested on synthetic
series in tests/unit/test_soak_growth.py; a run this short judges no trend."""

from __future__ import annotations

from tests.display.conftest import need_tools
from tests.soak.driver import run_soak
from tests.soak.growth import PHASES, Thresholds, evaluate


def test_a_short_soak_drives_every_phase_and_samples_the_agent() -> None:
    need_tools()
    run = run_soak(0.3, width=1280, height=800, adopt_daemons=False)
    assert run.exit_code == 0
    assert run.pause_failures == []
    assert run.cycles == 2
    assert [name for _, _, name in run.phases[: len(PHASES)]] == list(PHASES)
    rows = run.rows
    assert len(rows) >= 20  # a sample every 0.5 s over 18 s
    assert {r.phase for r in rows} >= set(PHASES)
    assert all(r.agent_rss_mb > 20 and r.agent_threads > 1 and r.agent_fds > 3 for r in rows)
    assert any(r.state == "paused" for r in rows if r.phase == "paused")
    assert rows[-1].frames >= 2 and rows[-1].events_written > rows[0].events_written
    assert {p.role for p in run.procs} >= {"agent"}
    assert all(p.role == "agent" or p.role.startswith("child:") for p in run.procs)
    verdicts = {v.metric: v for v in evaluate(rows, Thresholds(warmup_s=run.minutes * 15), run.exit_code)}
    for name in ("queue drained when idle", "events dropped", "loss.frames_skipped", "agent exit code"):
        assert not verdicts[name].failed, verdicts[name].message()
    assert "not judged" in verdicts["agent RSS slope"].detail
