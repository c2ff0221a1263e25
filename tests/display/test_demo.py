"""`optin demo` end to end, as a new user runs it: exit 0, a summary, nothing left behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.dataset.build import build
from tests.display.conftest import need_tools
from tests.servers import S3Server


def _our_stack() -> dict[int, str]:
    """PID → command line of every process of the kinds the demo starts, the agent included."""
    out = subprocess.run(["ps", "-eo", "pid=,comm=,args="], capture_output=True, text=True, check=True).stdout
    names = {"Xvfb", "openbox", "trayer", "dunst", "dbus-daemon", "xterm"}
    pids = {}
    for line in out.splitlines():
        pid, comm, args = [*line.split(None, 2), "", ""][:3]
        if comm in names or "-m agent run" in args:
            pids[int(pid)] = args
    return pids


def _left_behind(before: dict[int, str]) -> dict[int, str]:
    """The demo's kinds of process that were not there before (none, when the demo cleaned up)."""
    return {pid: args for pid, args in _our_stack().items() if pid not in before}


@pytest.mark.usefixtures("ray_local")
def test_demo_runs_the_whole_chain_and_cleans_up(
    tmp_path: Path, s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    need_tools("age")
    before = _our_stack()
    keep = tmp_path / "kept"
    out = subprocess.run(
        [sys.executable, "-m", "agent", "demo", "--seconds", "3", "--json", "--keep", str(keep)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["checks"] == "passed"
    counts = summary["events_by_kind"]
    assert counts["button_press"] >= 4 and counts["key_press"] >= 10 and counts["scroll"] >= 6
    assert summary["frames"] >= 2 and summary["bundle_bytes"] > 0 and summary["bytes_stored"] > 0
    assert summary["loss"]["dropped_events"] == 0
    assert set(summary["redaction"]["typed"]) == {"EMAIL", "CREDIT_CARD"}  # typed secrets, redacted
    assert summary["redaction"]["screen"]  # and masked where the terminal showed them
    assert summary["task"]["id"] == "sign-in" and summary["task"]["outcome"] == "done"
    assert summary["elements"]["api"] == "atspi" and summary["elements"]["steps_with"] >= 1
    assert summary["elements"]["example"].startswith("text")  # the form's entry, through AT-SPI
    assert not _left_behind(before)  # every process the demo started is gone
    assert sorted(p.name for p in keep.iterdir()) == sorted(
        [Path(summary["kept"]["bundle"]).name, "demo-study.toml", "study-identity.txt"]
    )
    _real_and_synthetic_bundles_build_the_same_dataset_with_both_engines(keep, summary, s3, monkeypatch)


def _real_and_synthetic_bundles_build_the_same_dataset_with_both_engines(
    keep: Path, summary: dict[str, Any], s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's real recording beside 200 synthetic volunteers' bundles of its study, on SeaweedFS:
    a process pool and Ray build the same shards and rows, and the real session's steps are there."""
    from agent.study import parse_study
    from tests.study.synth import make_bundles
    from tests.study.test_build import current, options, shard_digests, table_rows, upload

    s3.use(monkeypatch)
    study = parse_study((keep / "demo-study.toml").read_text(encoding="utf-8"))
    recipient = study.recipients[0]
    # without frames: the demo's study requires OCR of every frame, which would take minutes here
    synthetic = make_bundles(
        keep.parent / "synthetic",
        recipient,
        volunteers=50,
        sessions=4,
        seed=5,
        frames=False,
        tasks=False,
        study=study,
    )
    real = Path(summary["kept"]["bundle"])
    src = upload(s3, [real, *(b.path for b in synthetic)])
    identity = keep / "study-identity.txt"
    dest_local, dest_ray = s3.url(), s3.url()
    local = build(options(src, dest_local, identity, shard_size=400_000))
    ray = build(options(src, dest_ray, identity, shard_size=400_000, engine="ray"))
    assert local.ingested == ray.ingested == 201 and not local.quarantined and not ray.quarantined
    a, b = current(dest_local), current(dest_ray)
    assert shard_digests(a) == shard_digests(b) and len(a.parts) > 2
    for table in ("sessions", "steps", "events", "frames", "tasks"):
        assert table_rows(dest_local, a, table) == table_rows(dest_ray, b, table), table
    real_session = real.name.removesuffix(".optin.tar.age")
    steps = [r for r in table_rows(dest_local, a, "steps") if r["session"] == real_session]
    assert len(steps) == summary["steps"]["count"] and {r["action"] for r in steps} >= {
        "click",
        "type",
        "scroll",
    }
    assert any(r["task_id"] == "sign-in" for r in steps)  # the demo's study task
    assert any(r["element_role"] for r in steps)  # an element looked up through AT-SPI


def test_demo_rejects_a_bad_duration() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agent", "demo", "--seconds", "-1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 1
    assert "--seconds -1" in out.stderr and "between 1 and 600" in out.stderr


def test_demo_stopped_midway_leaves_nothing_behind(tmp_path: Path) -> None:
    """SIGTERM while the agent records: every process and the throwaway keys are gone."""
    import glob
    import os
    import select
    import signal

    need_tools("age")
    before = _our_stack()
    tmp_before = set(glob.glob("/tmp/optin-demo-*"))
    demo = subprocess.Popen(
        [sys.executable, "-m", "agent", "demo", "--seconds", "30"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr = demo.stderr
    assert stderr is not None
    try:
        seen = ""
        while "agent recording session" not in seen:
            ready, _, _ = select.select([stderr], [], [], 30)
            line = stderr.readline() if ready else ""
            assert line, f"the demo did not reach recording: {seen}"
            seen += line
        os.kill(demo.pid, signal.SIGTERM)
        rc = demo.wait(30)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        stderr.close()
    assert rc == 128 + signal.SIGTERM
    assert not _left_behind(before)
    assert set(glob.glob("/tmp/optin-demo-*")) <= tmp_before
