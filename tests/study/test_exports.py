"""``optin dataset export``: a DEST built by the real build from synthetic bundles, exported as AgentNet
and Aguvis records into a local folder and into SeaweedFS, and read back.

The synthetic sessions (tests/study/synth.py, :func:`~tests.study.synth.variant`) hold study tasks
ending ``done``, free tasks ending ``failed`` (instruction redacted to ``[EMAIL]``), a first step
without a frame, a pause before the middle step, a typed ``[EMAIL]``, a drag, a scroll and a hotkey;
every task covers every step but the last. So the expected verdicts follow from each bundle's variant.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from agent.dataset import pyautogui_code as pc
from agent.dataset.build import BuildOptions, build
from agent.dataset.exports import EXPORT_FILE, image_key, plan_part, run_export
from agent.dataset.layout import LayoutError
from agent.dataset.manifest import Version
from agent.dataset.samples import MAX_SAMPLE_JSON
from agent.dataset.stores import open_dest
from agent.dataset.trajectories import AGUVIS_SYSTEM, LEFT_OUT
from agent.dataset.versions import read_current
from agent.errors import DestUnusable, OptinError, UsageError
from tests.servers import S3Server
from tests.study.synth import (
    STUDY_TASK_ID,
    STUDY_TASK_INSTRUCTION,
    SynthBundle,
    make_bundles,
    make_study_identity,
)

#: Every key of an AgentNet trajectory (OpenCUA cot-generate "Output Structure"), plus ``optin``.
AGENTNET_KEYS = {
    "task_id",
    "instruction",
    "traj",
    "task_completed",
    "alignment_score",
    "efficiency_score",
    "task_difficulty",
    "reason",
    "actual_task",
    "natural_language_task",
    "optin",
}
STEP_VALUE_KEYS = {
    "action",
    "code",
    "observation",
    "thought",
    "reflection",
    "last_step_correct",
    "last_step_redundant",
}
#: Steps of the bundles whose tasks are exported: click, type, key, drag, scroll, hotkey (the task's
#: steps) and a right_click after the task.
STEPS = 7
#: Steps of the few bundles whose tasks are ``not_mappable``: their right_click (step 6, in the task)
#: is a shift+right-click (``keys`` ["shift"]), which pyautogui code cannot write: its code is null.
LONG = 8


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[SynthBundle]]:
    """A local DEST of 11 bundles (2 volunteers x 4 sessions of 7 steps, 1 x 3 of 8) in several parts."""
    identity, recipient = make_study_identity(tmp_path_factory.mktemp("study"))
    src = tmp_path_factory.mktemp("src")
    bundles = make_bundles(src, recipient, volunteers=2, sessions=4, seed=11, steps=STEPS)
    bundles += make_bundles(src, recipient, volunteers=1, sessions=3, seed=12, steps=LONG)
    dest = str(tmp_path_factory.mktemp("ds") / "dest")
    report = build(
        BuildOptions(src=str(src), dest=dest, identity_file=identity, workers=1, shard_size=100_000)
    )
    assert report.ingested == len(bundles)
    return dest, bundles


def expected(bundles: list[SynthBundle]) -> tuple[set[str], Counter[str]]:
    """The sessions whose task is exported, and the left-out counts, from the bundles' variants."""
    exported: set[str] = set()
    left: Counter[str] = Counter()
    for b in bundles:
        v = b.variant
        assert v is not None
        if v.task is None:
            continue
        if not v.first_step_frame:
            left["no_image"] += 1  # step 0 is in the task (steps 0 to n - 2) and has no frame
        elif b.steps >= LONG:
            left["not_mappable"] += 1
        elif v.pause:
            left["gap"] += 1  # the pause is before step n // 2, inside the task
        else:
            exported.add(b.session)
    return exported, left


def current(where: str) -> Version:
    with open_dest(where) as dest:
        version = read_current(dest)
    assert version is not None
    return version


def shard_samples(where: str) -> dict[str, tuple[dict[str, Any], bytes]]:
    """Every sample of the current version, read through the index files: key -> (JSON, image bytes)."""
    out: dict[str, tuple[dict[str, Any], bytes]] = {}
    with open_dest(where) as dest:
        for part in current(where).parts:
            shard = dest.get(part.shard.path, max_size=part.shard.size).data
            lines = dest.get(part.index.path, max_size=part.index.size).data.splitlines()
            for line in lines[1:]:
                entry = json.loads(line)
                (jo, jn), (io, n) = entry["json"], entry["webp"]
                out[entry["key"]] = (json.loads(shard[jo : jo + jn]), shard[io : io + n])
    return out


def pixel_round_trip(code: str, doc: dict[str, Any]) -> int:
    """Check every point of ``code`` maps back to the step's raw pixel; how many points there were."""
    frame, raw = doc["frame"], doc["raw"]
    points = 0
    for call in pc.parse(code):
        if "x" not in call.kwargs:
            continue
        x_key, y_key = ("to_x", "to_y") if call.name == "dragTo" else ("x", "y")
        assert pc.to_pixel(call.kwargs["x"], frame["left"], frame["width"]) == raw[x_key]
        assert pc.to_pixel(call.kwargs["y"], frame["top"], frame["height"]) == raw[y_key]
        points += 1
    return points


def out_files(out: Path) -> set[str]:
    return {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}


def test_agentnet_export_writes_each_trajectory_with_its_images(built: Any, tmp_path: Path) -> None:
    where, bundles = built
    out = tmp_path / "out"
    calls: list[tuple[str, int, int]] = []
    report = run_export(where, "agentnet", str(out), progress=lambda *a: calls.append(a))
    sessions, left = expected(bundles)
    assert len(sessions) >= 2 and left["gap"] and left["no_image"] and left["not_mappable"]
    assert report.trajectories == len(sessions)
    assert report.left_out == {r: left[r] for r in LEFT_OUT}
    assert report.samples == len(sessions) * (STEPS - 1)
    assert calls[-1] == ("export", len(current(where).parts), len(current(where).parts))

    samples = shard_samples(where)
    lines = (out / "trajectories.jsonl").read_bytes().splitlines()
    records = [json.loads(line) for line in lines]
    assert {r["optin"]["session"] for r in records} == sessions
    outcomes, points, actions = set(), 0, Counter[str]()
    for record in records:
        assert set(record) == AGENTNET_KEYS
        session = record["optin"]["session"]
        assert record["task_id"] == f"{session}/{record['optin']['task_id']}"
        assert record["optin"]["dataset_version"] == report.dataset_version
        assert record["optin"]["frame_size"] == [64, 40]
        assert record["task_completed"] is (record["optin"]["outcome"] == "done")
        outcomes.add(record["optin"]["outcome"])
        if record["optin"]["task_id"] == STUDY_TASK_ID:
            assert record["instruction"] == STUDY_TASK_INSTRUCTION
        else:
            assert "[EMAIL]" in record["instruction"] and "@" not in record["instruction"]
        assert [t["index"] for t in record["traj"]] == list(range(STEPS - 1))
        for n, t in enumerate(record["traj"]):
            assert set(t["value"]) == STEP_VALUE_KEYS
            key = f"{session}_{n:06d}"
            doc, image = samples[key]
            assert t["image"] == f"images/{session}/{n:06d}.webp"
            assert (out / t["image"]).read_bytes() == image  # the shard's bytes
            assert t["value"]["code"] == doc["norm"]["code"]
            points += pixel_round_trip(t["value"]["code"], doc)
            actions[doc["action"]] += 1
            if doc["action"] == "type":
                assert "[EMAIL]" in t["value"]["code"] and "@" not in t["value"]["code"]
    assert outcomes == {"done", "failed"}
    assert set(actions) == {"click", "type", "key", "drag", "scroll", "hotkey"}
    assert points == len(records) * 4  # click 1, drag 2, scroll 1; none for type, key, hotkey
    images = {t["image"] for r in records for t in r["traj"]}
    assert out_files(out) == images | {"trajectories.jsonl", EXPORT_FILE}  # nothing else, each once

    record = json.loads((out / EXPORT_FILE).read_bytes())
    assert record["format"] == "agentnet" and record["file"] == "trajectories.jsonl"
    assert record["dataset"]["version"] == report.dataset_version == current(where).version
    assert record["written"] == {
        "trajectories": len(records),
        "samples": report.samples,
        "images": report.samples,
    }
    assert record["left_out"] == report.left_out and list(record["left_out"]) == sorted(LEFT_OUT)
    assert record["exported_at"].endswith("Z")
    assert report.to_json()["out"] == str(out)
    assert "left out:" in report.render()

    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    for p in out.rglob("*"):
        assert stat.S_IMODE(p.stat().st_mode) == (0o700 if p.is_dir() else 0o600)


def test_aguvis_export_is_one_array_of_next_action_turns(built: Any, tmp_path: Path) -> None:
    where, bundles = built
    out = tmp_path / "out"
    report = run_export(where, "aguvis", str(out), version=current(where).version)
    sessions, left = expected(bundles)
    elements = json.loads((out / "aguvis.json").read_bytes())
    assert isinstance(elements, list) and len(elements) == report.samples == len(sessions) * (STEPS - 1)
    samples = shard_samples(where)
    previous: dict[str, list[str]] = {}
    for element in elements:
        assert set(element) == {"image", "conversations", "optin"}
        key = element["optin"]["key"]
        doc, image = samples[key]
        (path,) = element["image"]
        assert (out / path).read_bytes() == image
        system, human, gpt = element["conversations"]
        assert system == {"from": "system", "value": AGUVIS_SYSTEM}
        assert human["from"] == "human" and human["value"].startswith("<image>")
        earlier = previous.setdefault(element["optin"]["task_id"], [])
        assert human["value"].endswith("Previous actions:\n" + "\n".join(earlier))
        assert gpt == {"from": "gpt", "value": doc["norm"]["code"], "recipient": "os", "end_turn": True}
        assert element["optin"]["index"] == len(earlier) == doc["step"]
        earlier.append(doc["norm"]["code"])
    assert {t.split("/")[0] for t in previous} == sessions
    assert json.loads((out / EXPORT_FILE).read_bytes())["left_out"] == {r: left[r] for r in LEFT_OUT}
    assert "trajectories.jsonl" not in out_files(out)


def test_out_that_is_not_empty_is_refused_with_exit_2(built: Any, tmp_path: Path) -> None:
    where, _ = built
    out = tmp_path / "out"
    out.mkdir()
    (out / ".keep").write_bytes(b"")
    with pytest.raises(UsageError, match="not empty") as caught:
        run_export(where, "agentnet", str(out))
    assert caught.value.exit_code == 2
    assert out_files(out) == {".keep"}


def test_out_that_is_a_link_or_inside_dest_is_refused_and_nothing_written(built: Any, tmp_path: Path) -> None:
    where, _ = built
    target = tmp_path / "target"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(DestUnusable, match="symbolic link") as caught:
        run_export(where, "agentnet", str(link))
    assert caught.value.exit_code == 2
    assert not list(target.iterdir())
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(DestUnusable, match="not a folder"):
        run_export(where, "aguvis", str(tmp_path / "file"))
    inside = Path(where) / "exports"
    with pytest.raises(UsageError, match="inside DEST") as caught_inside:
        run_export(where, "agentnet", str(inside))
    assert caught_inside.value.exit_code == 2
    assert not inside.exists()


@pytest.mark.parametrize(
    ("fmt", "version", "error"),
    [
        ("csv", None, "--format 'csv'"),
        ("agentnet", 0, "--version 0"),
        ("agentnet", 99, "version 99 is not in DEST"),
    ],
)
def test_bad_format_or_version_is_refused(
    built: Any, tmp_path: Path, fmt: str, version: int | None, error: str
) -> None:
    with pytest.raises(OptinError, match=error):
        run_export(built[0], fmt, str(tmp_path / "out"), version=version)
    assert not (tmp_path / "out" / EXPORT_FILE).exists()


def test_an_empty_dest_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a folder"):
        run_export(str(tmp_path / "none"), "agentnet", str(tmp_path / "out"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no published version"):
        run_export(str(tmp_path / "empty"), "agentnet", str(tmp_path / "out"))


def test_a_changed_shard_fails_and_leaves_no_record(built: Any, tmp_path: Path) -> None:
    """A byte of a shard changed in place (same size): the images read so far may be in OUT, but no
    records file and no optin-export.json, and the error says DEST was changed (exit 1)."""
    where, bundles = built
    copy = tmp_path / "dest"
    shutil.copytree(where, copy, symlinks=True)
    sessions, _ = expected(bundles)
    with open_dest(str(copy)) as dest:
        version = read_current(dest)
    assert version is not None
    key = f"{sorted(sessions)[0]}_000000"
    for part in version.parts:
        index = (copy / part.index.path).read_bytes().splitlines()[1:]
        hit = [json.loads(line) for line in index if json.loads(line)["key"] == key]
        if hit:
            shard = copy / part.shard.path
            offset = hit[0]["webp"][0] + 20
            data = bytearray(shard.read_bytes())
            data[offset] ^= 0xFF
            os.chmod(shard, 0o600)
            shard.write_bytes(bytes(data))
            break
    else:
        pytest.fail("no part holds the sample")
    out = tmp_path / "out"
    with pytest.raises(LayoutError, match="not the shard the version lists") as caught:
        run_export(str(copy), "agentnet", str(out))
    assert caught.value.exit_code == 1
    assert not (out / EXPORT_FILE).exists() and not (out / "trajectories.jsonl").exists()


def test_s3_out(built: Any, s3_env: S3Server) -> None:
    where, bundles = built
    out = s3_env.url()
    report = run_export(where, "agentnet", out)
    sessions, _ = expected(bundles)
    assert report.trajectories == len(sessions)
    samples = shard_samples(where)
    with open_dest(out) as target:
        keys = {info.key for info in target.list("")}
        lines = target.get("trajectories.jsonl", max_size=1 << 20).data.splitlines()
        for line in lines:
            record = json.loads(line)
            assert set(record) == AGENTNET_KEYS
            for n, t in enumerate(record["traj"]):
                image = target.get(t["image"], max_size=1 << 20).data
                assert image == samples[f"{record['optin']['session']}_{n:06d}"][1]
        record = json.loads(target.get(EXPORT_FILE, max_size=1 << 20).data)
    assert len(lines) == len(sessions)
    assert keys == {EXPORT_FILE, "trajectories.jsonl"} | {
        f"images/{s}/{n:06d}.webp" for s in sessions for n in range(STEPS - 1)
    }
    assert record["written"]["trajectories"] == len(sessions)
    with pytest.raises(UsageError, match="not empty") as caught:
        run_export(where, "aguvis", out)
    assert caught.value.exit_code == 2


# --- pure parts: paths and the plan from the tables ------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "../x_000001",
        "a/b_000001",
        ".h_000001",
        "a.b_000001",
        "_a_000001",
        "x_1",
        "x" * 81 + "_000001",
        "é_000001",
    ],
)
def test_hostile_keys_never_become_image_paths(key: str) -> None:
    with pytest.raises(ValueError, match="not a sample key"):
        image_key(key)


def test_image_path_of_a_key() -> None:
    assert image_key("20261127T213000Z-1a2b3c4d_000007") == "images/20261127T213000Z-1a2b3c4d/000007.webp"


SESSION = "20261127T213000Z-1a2b3c4d"
SHARD = "shards/ingest_date=2026-12-06/" + "0" * 32 + ".tar"


def task_row(**more: Any) -> dict[str, Any]:
    row = {
        "session": SESSION,
        "task_id": "sign-in",
        "source": "study",
        "instruction": "Sign in",
        "outcome": "done",
        "step_first": 0,
        "step_last": 1,
        "step_count": 2,
    }
    return row | more


def step_row(step: int, **more: Any) -> dict[str, Any]:
    base = 2048 * step
    row = {
        "key": f"{SESSION}_{step:06d}",
        "session": SESSION,
        "step": step,
        "task_id": "sign-in",
        "has_image": True,
        "code": "pyautogui.press('enter')",
        "after_gap": False,
        "shard": SHARD,
        "shard_offset": base,
        "shard_end": base + 2048,
        "json_offset": base + 512,
        "json_size": 100,
        "image_offset": base + 1536,
        "image_size": 30,
    }
    return row | more


def test_the_plan_chooses_tasks_from_the_tables() -> None:
    plan = plan_part([task_row()], [step_row(1), step_row(0)], shard=SHARD, shard_size=5120)
    assert [w.step for w in plan.steps] == [0, 1] and not plan.left_out
    left = plan_part(
        [
            task_row(task_id="a", outcome="interrupted", step_first=None, step_last=None, step_count=0),
            task_row(task_id="b", instruction=None, step_first=None, step_last=None, step_count=0),
            task_row(task_id="c", step_first=None, step_last=None, step_count=0),
            task_row(task_id="d"),
        ],
        [step_row(0, task_id="d", has_image=False), step_row(1, task_id="d", after_gap=True)],
        shard=SHARD,
        shard_size=5120,
    )
    assert dict(left.left_out) == {"unfinished": 1, "no_instruction": 1, "no_steps": 1, "no_image": 1}
    assert not left.steps and not left.tasks


@pytest.mark.parametrize(
    ("tasks", "steps"),
    [
        ([task_row()], [step_row(0)]),  # a step missing
        ([task_row()], [step_row(0), step_row(1), step_row(2)]),  # a step outside the task's range
        ([task_row()], [step_row(0), step_row(1), step_row(2, task_id="other")]),  # a task not listed
        ([task_row(), task_row()], [step_row(0), step_row(1)]),  # a task twice
        (
            [task_row()],
            [step_row(0), step_row(1, shard="shards/ingest_date=2026-12-06/" + "1" * 32 + ".tar")],
        ),
        ([task_row()], [step_row(0), step_row(1, key=f"{SESSION}_000007")]),  # key is not its step
        ([task_row()], [step_row(0), step_row(1, key="../../etc_000001", session="../../etc")]),
        ([task_row()], [step_row(0), step_row(1, shard_offset=100)]),  # overlaps step 0
        ([task_row()], [step_row(0), step_row(1, image_size=10**9)]),  # past the sample's end
        ([task_row()], [step_row(0), step_row(1, shard_end=2**31 + 1)]),  # past the shard's end
        ([task_row()], [step_row(0), step_row(1, json_size=0)]),
        (
            [task_row()],
            [
                step_row(0),
                step_row(1, json_size=MAX_SAMPLE_JSON + 1, image_offset=2**30, shard_end=2**30 + 30),
            ],
        ),
    ],
)
def test_hostile_tables_that_contradict_each_other_or_the_shard_are_refused(
    tasks: list[dict[str, Any]], steps: list[dict[str, Any]]
) -> None:
    fine = plan_part([task_row()], [step_row(0), step_row(1)], shard=SHARD, shard_size=2**31)
    assert len(fine.steps) == 2
    with pytest.raises(LayoutError, match="changed outside optin"):
        plan_part(tasks, steps, shard=SHARD, shard_size=2**31)
