"""The soak's growth detector (tests/soak/growth.py) on synthetic series: flat passes, every kind of
growth or leak fails and says which metric, by how much and the threshold; and its CSV and PNGs."""

from __future__ import annotations

import math
from pathlib import Path

from tests.soak.__main__ import main, plots, read_rows, write_rows
from tests.soak.growth import PHASES, Row, Thresholds, Verdict, evaluate, failures, theil_sen, thirds_growth
from tests.soak.plot import nice_ticks

TH = Thresholds(warmup_s=60.0)
#: a short cycle: 10 s of each phase, one sample a second
CYCLE_S = 10 * len(PHASES)


def series(
    minutes: float = 20.0,
    *,
    rss_per_h: float = 0.0,
    fds_every_cycle: int = 0,
    threads_every_cycle: int = 0,
    stuck_idle: bool = False,
    drop_at: float | None = None,
    idle_cpu_per_h: float = 0.0,
    uss_per_h: float = 0.0,
    shared_until: float | None = None,
) -> list[Row]:
    """A healthy agent (flat, with an encode spike every 7 s and lower memory while paused),
    plus whatever is asked for."""
    rows = []
    written = 0
    for t in range(int(minutes * 60)):
        cycle, at = divmod(t, CYCLE_S)
        phase = PHASES[at // 10]
        busy = phase not in ("idle", "paused", "animation")
        if busy or (stuck_idle and phase == "idle"):
            written += 7
        spike = 16.0 if t % 7 == 0 else 0.0
        base = 100.0 if phase == "paused" else 120.0
        rss = base + spike + 2 * math.sin(t / 5) + rss_per_h * t / 3600
        rows.append(
            Row(
                t_s=float(t),
                phase=phase,
                cycle=cycle + 1,
                agent_rss_mb=rss,
                # until ``shared_until`` another process maps the same libraries: PSS counts half of them
                agent_pss_mb=rss - (42.0 if shared_until is not None and t < shared_until else 30.0),
                agent_uss_mb=rss - 50 + uss_per_h * t / 3600,
                agent_cpu_pct=(8.0 if busy else 0.5)
                + (idle_cpu_per_h * t / 3600 if phase == "idle" else 0.0),
                agent_threads=(7 if phase == "paused" else 15) + threads_every_cycle * cycle,
                agent_fds=34 + (t % 3 if busy else 0) + fds_every_cycle * cycle,
                children=2,
                children_rss_mb=70.0,
                children_pss_mb=41.0,
                children_uss_mb=20.0,
                children_threads=2,
                children_fds=14,
                state="paused" if phase == "paused" else "recording",
                events_written=written,
                frames=written // 10,
                dropped=1 if drop_at is not None and t >= drop_at else 0,
                loss={"frames_skipped": 0, "events": 0},
            )
        )
    return rows


def failed(rows: list[Row], **kw: object) -> dict[str, Verdict]:
    return {v.metric: v for v in failures(evaluate(rows, TH, **kw))}  # type: ignore[arg-type]


def test_a_flat_healthy_run_passes() -> None:
    verdicts = evaluate(series(), TH)
    assert failures(verdicts) == []
    assert {"agent RSS growth", "agent USS slope", "agent threads", "queue drained when idle"} <= {
        v.metric for v in verdicts
    }


def test_memory_growth_fails_and_names_the_metric_the_growth_and_the_threshold() -> None:
    got = failed(series(minutes=25, rss_per_h=60.0))
    assert {"agent RSS growth", "agent RSS slope", "agent USS growth", "agent USS slope"} <= set(got)
    message = got["agent RSS slope"].message()
    assert message.startswith("FAIL agent RSS slope: +")
    assert "(threshold 10 MB/h)" in message
    assert 50 < got["agent RSS slope"].value < 70  # the slope put in, through the spikes
    assert 12 < got["agent RSS growth"].value < 20  # two thirds of the 24 MB put in


def test_private_memory_growth_alone_fails() -> None:
    """Pages the agent shared turning private (copy-on-write) leave RSS flat and grow USS."""
    got = failed(series(minutes=25, uss_per_h=60.0))
    assert {"agent USS growth", "agent USS slope"} == set(got)


def test_another_process_sharing_the_agents_libraries_is_not_a_leak() -> None:
    """PSS rises by 12 MB when another program that mapped the same libraries quits: not judged, so
    a soak does not fail on what the rest of the machine does (as the second hour's soak did)."""
    verdicts = evaluate(series(minutes=25, shared_until=600.0), TH)
    assert failures(verdicts) == []
    assert not any("PSS" in v.metric for v in verdicts)


def test_slow_growth_below_the_thresholds_passes() -> None:
    assert failed(series(rss_per_h=4.0)) == {}


def test_a_short_run_judges_growth_but_not_the_slope() -> None:
    verdicts = {v.metric: v for v in evaluate(series(minutes=4, rss_per_h=600.0), TH)}
    assert verdicts["agent RSS growth"].failed
    assert not verdicts["agent RSS slope"].failed
    assert "not judged" in verdicts["agent RSS slope"].detail


def test_a_leaked_file_or_thread_per_cycle_fails() -> None:
    got = failed(series(fds_every_cycle=1))
    assert set(got) == {"agent open files"}
    assert got["agent open files"].value >= 2
    assert "agent threads" in failed(series(threads_every_cycle=1))


def test_fewer_threads_while_paused_is_not_a_leak() -> None:
    rows = series()
    assert {r.agent_threads for r in rows if r.phase == "paused"} == {7}
    assert failed(rows) == {}


def test_a_queue_still_moving_at_the_end_of_idle_fails() -> None:
    got = failed(series(stuck_idle=True))
    assert "queue drained when idle" in got
    assert "no queue depth reported" in got["queue drained when idle"].detail


def test_one_keyframe_at_the_end_of_idle_is_not_a_backlog() -> None:
    rows = series()
    stretches = [i for i in range(1, len(rows)) if rows[i].phase == "idle" and rows[i + 1].phase != "idle"]
    for i in stretches:  # the last sample of each idle stretch: one more frame written
        for r in rows[i:]:
            r.events_written += 1
            r.frames += 1
    assert failed(rows) == {}
    for r in rows[stretches[-1] :]:  # a second frame, or any other event, is a backlog
        r.events_written += 1
        r.frames += 1
    assert failed(rows)["queue drained when idle"].value == 1


def test_a_reported_queue_depth_is_used_when_present() -> None:
    rows = series()
    for r in rows:
        r.queue_events, r.queue_frames = 0, 0
    assert failed(rows) == {}
    for r in rows[-CYCLE_S:]:
        if r.phase == "idle":
            r.queue_frames = 3
    got = failed(rows)["queue drained when idle"]
    assert got.value == 3
    assert "reported by the agent" in got.detail


def test_any_drop_fails() -> None:
    got = failed(series(drop_at=900.0))
    assert set(got) == {"events dropped"}
    rows = series()
    rows[-1].loss = {"frames_skipped": 2, "events": 0}
    assert failed(rows)["loss.frames_skipped"].value == 2


def test_idle_cpu_growth_fails() -> None:
    got = failed(series(idle_cpu_per_h=6.0))
    assert set(got) == {"agent idle CPU"}
    assert 1.0 < got["agent idle CPU"].value < 2.0  # 6 pp/h over two thirds of 19 minutes


def test_idle_cpu_is_not_judged_on_two_stretches() -> None:
    rows = series(minutes=3.2, idle_cpu_per_h=600.0)
    verdict = next(v for v in evaluate(rows, TH) if v.metric == "agent idle CPU")
    assert not verdict.failed and "not judged: 2 idle" in verdict.detail


def test_life_failures() -> None:
    rows = series()
    assert "agent exit code" in failed(rows, exit_code=1)
    assert "agent exit code" in failed(rows, exit_code=None)
    assert "pauses not taken" in failed(
        rows, pause_failures=["cycle 3: state 'recording' after `optin pause`"]
    )
    rows[100].state = "error"
    assert "agent error states" in failed(rows)


def test_a_gap_in_the_samples_or_before_the_end_fails() -> None:
    rows = series()
    assert failed(rows, ran_s=rows[-1].t_s + 5) == {}
    got = failed(rows, ran_s=rows[-1].t_s + 60)["longest gap between samples"]
    assert got.value == 60 and got.threshold == 20
    del rows[300:330]
    assert failed(rows)["longest gap between samples"].value == 31


def test_too_few_samples_after_the_warmup_fails_rather_than_passes() -> None:
    assert "agent RSS growth" in failed(series(minutes=1.05))


def test_theil_sen_and_thirds() -> None:
    ts = [float(t) for t in range(100)]
    ys = [2.0 * t + (50.0 if t % 10 == 0 else 0.0) for t in range(100)]
    assert theil_sen(ts, ys) == 2.0
    assert theil_sen([0.0], [1.0]) == 0.0
    assert thirds_growth([1.0, 1.0, 1.0, 5.0, 5.0, 5.0, 9.0, 9.0, 9.0]) == 8.0
    assert thirds_growth([1.0, 2.0]) == 0.0


def test_csv_round_trip_and_plots(tmp_path: Path) -> None:
    rows = series(minutes=6)
    rows[10].queue_events = 4
    write_rows(tmp_path / "samples.csv", rows)
    back = read_rows(tmp_path / "samples.csv")
    assert len(back) == len(rows)
    assert back[10].queue_events == 4 and back[11].queue_events is None
    assert back[-1].loss == rows[-1].loss and back[-1].events_written == rows[-1].events_written
    assert abs(back[5].agent_rss_mb - rows[5].agent_rss_mb) < 1e-3
    phases = [(float(a), float(a + 10), PHASES[(a // 10) % len(PHASES)]) for a in range(0, 360, 10)]
    one, two = plots(back, phases, 60.0), plots(back, phases, 60.0)
    assert set(one) == {"memory.png", "cpu.png", "threads-files.png", "activity.png"}
    assert one == two  # deterministic bytes
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in one.values())


def test_samples_recorded_before_uss_read_back_and_say_it_is_not_judged(tmp_path: Path) -> None:
    write_rows(tmp_path / "samples.csv", series(minutes=25))
    lines = (tmp_path / "samples.csv").read_text().splitlines()
    header = lines[0].split(",")
    drop = {header.index("agent_uss_mb"), header.index("children_uss_mb")}
    old = [",".join(c for i, c in enumerate(line.split(",")) if i not in drop) for line in lines]
    (tmp_path / "samples.csv").write_text("\n".join(old) + "\n")
    verdicts = {v.metric: v for v in evaluate(read_rows(tmp_path / "samples.csv"), TH)}
    assert "not sampled" in verdicts["agent USS"].detail and not verdicts["agent USS"].failed
    assert "children USS growth" not in verdicts and not verdicts["agent RSS slope"].failed


def test_ticks_cover_the_data() -> None:
    for lo, hi in ((0.0, 1.5), (0.0, 225.2), (101.0, 225.0), (0.0, 0.0), (3.0, 3.0)):
        ticks = nice_ticks(lo, hi)
        assert ticks[0] <= lo and ticks[-1] >= hi and len(ticks) >= 2


def _recorded(tmp_path: Path, rows: list[Row], first_line: str) -> Path:
    tmp_path.mkdir()
    write_rows(tmp_path / "samples.csv", rows)
    (tmp_path / "phases.csv").write_text("start_s,end_s,phase\n0,10,typing\n40,50,idle\n")
    (tmp_path / "summary.txt").write_text(first_line + "\n")
    return tmp_path


def test_check_judges_recorded_samples_and_exits_1_on_a_leak(tmp_path: Path) -> None:
    flat = _recorded(tmp_path / "flat", series(minutes=25), "optin soak: minutes 25, agent_exit 0")
    assert main(["--check", str(flat)]) == 0
    leak = _recorded(
        tmp_path / "leak", series(minutes=30, rss_per_h=60.0), "optin soak: minutes 30, agent_exit 0"
    )
    assert main(["--check", str(leak)]) == 1
    summary = (leak / "summary.txt").read_text()
    assert summary.startswith("optin soak: minutes 30, agent_exit 0\n")
    assert "FAIL agent RSS slope: +" in summary and "(threshold 10 MB/h)" in summary
    assert (leak / "memory.png").read_bytes().startswith(b"\x89PNG")
    killed = _recorded(tmp_path / "killed", series(minutes=25), "optin soak: minutes 25, agent_exit None")
    assert main(["--check", str(killed)]) == 1
    assert "FAIL agent exit code" in (killed / "summary.txt").read_text()
