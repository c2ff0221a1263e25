"""AgentNet and Aguvis records from a task's samples (docs/dataset.md, Exports).

The samples are made by the real :func:`agent.dataset.samples.samples` from the known-answer
session of tests/unit/test_dataset_samples.py, so what is exported is what a shard holds.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent.canonical_json import canonical
from agent.dataset import pyautogui_code as pc
from agent.dataset.trajectories import (
    AGUVIS_SYSTEM,
    LEFT_OUT,
    LeftOut,
    StepFacts,
    Trajectory,
    agentnet,
    aguvis,
    by_task,
    describe,
    image_path,
    left_out_reason,
    trajectory,
)
from tests.unit.test_dataset_samples import EVENTS, INSTRUCTION, PSEUDONYM, SESSION, TASK, build, step

ELEMENT = {
    "app": "Firefox",
    "automation_id": "user",
    "bounds": [412, 262, 240, 28],
    "name": "Username",
    "path": [{"name": "Staff portal", "role": "document web"}],
    "role": "entry",
    "states": ["editable", "enabled", "focusable"],
}


def task_samples(steps: list[dict[str, Any]] | None = None, **task: Any) -> list[dict[str, Any]]:
    steps = steps or [
        step("click", 6_000_000_000, x=530, y=276, button="left", element=ELEMENT),
        step("type", 7_000_000_000, text="[EMAIL]"),
        step("key", 9_000_000_000, keys=["enter"]),
    ]
    t = TASK | {"steps": {"by_action": {}, "count": len(steps), "range": [0, len(steps) - 1]}} | task
    return [s.doc for s in build(steps, tasks=[t])]


def test_agentnet_line_of_the_known_task() -> None:
    samples = task_samples()
    traj = trajectory(SESSION, samples[0]["task"], samples)
    assert isinstance(traj, Trajectory)
    line = agentnet(traj, 42)
    assert line["task_id"] == f"{SESSION}/sign-in"
    assert line["instruction"] == INSTRUCTION
    assert line["task_completed"] is True
    assert [t["index"] for t in line["traj"]] == [0, 1, 2]
    assert [t["image"] for t in line["traj"]] == [f"images/{SESSION}/{n:06d}.webp" for n in range(3)]
    assert [t["value"]["code"] for t in line["traj"]] == [
        "pyautogui.click(x=0.4141, y=0.3450)",
        "pyautogui.write(message='[EMAIL]')",
        "pyautogui.press('enter')",
    ]
    assert [t["value"]["action"] for t in line["traj"]] == [
        'Click on the entry "Username"',
        'Type "[EMAIL]"',
        "Press enter",
    ]
    for t in line["traj"]:
        assert set(t["value"]) == {
            "action", "code", "observation", "thought", "reflection",
            "last_step_correct", "last_step_redundant",
        }  # fmt: skip
        assert all(t["value"][k] is None for k in ("observation", "thought", "reflection"))
    for k in ("alignment_score", "efficiency_score", "task_difficulty", "reason", "actual_task"):
        assert line[k] is None
    assert line["natural_language_task"] is None
    assert line["optin"] == {
        "session": SESSION,
        "task_id": "sign-in",
        "source": "study",
        "volunteer": PSEUDONYM,
        "consent_version": "3",
        "dataset_version": 42,
        "outcome": "done",
        "frame_size": [1280, 800],
    }
    # one canonical JSON object a line
    blob = canonical(line)
    assert b"\n" not in blob and json.loads(blob) == line


def test_agentnet_coordinates_round_trip() -> None:
    samples = task_samples()
    line = agentnet(trajectory(SESSION, samples[0]["task"], samples), 1)  # type: ignore[arg-type]
    (call,) = pc.parse(line["traj"][0]["value"]["code"])
    frame = line["optin"]["frame_size"]
    assert (pc.to_pixel(call.kwargs["x"], 0, frame[0]), pc.to_pixel(call.kwargs["y"], 0, frame[1])) == (
        530,
        276,
    )


def test_aguvis_elements_of_the_known_task() -> None:
    samples = task_samples()
    traj = trajectory(SESSION, samples[0]["task"], samples)
    assert isinstance(traj, Trajectory)
    out = aguvis(traj, 42)
    assert len(out) == 3
    first = out[0]
    assert first == {
        "image": [f"images/{SESSION}/000000.webp"],
        "conversations": [
            {"from": "system", "value": AGUVIS_SYSTEM},
            {
                "from": "human",
                "value": "<image>Please generate the next move according to the UI screenshot, "
                f"instruction and previous actions.\n\nInstruction: {INSTRUCTION}\n\nPrevious actions:\n",
            },
            {
                "from": "gpt",
                "value": "pyautogui.click(x=0.4141, y=0.3450)",
                "recipient": "os",
                "end_turn": True,
            },
        ],
        "optin": {
            "key": f"{SESSION}_000000",
            "task_id": f"{SESSION}/sign-in",
            "index": 0,
            "volunteer": PSEUDONYM,
            "dataset_version": 42,
        },
    }
    assert out[2]["conversations"][1]["value"].endswith(
        "Previous actions:\npyautogui.click(x=0.4141, y=0.3450)\npyautogui.write(message='[EMAIL]')"
    )
    assert [o["optin"]["index"] for o in out] == [0, 1, 2]
    json.dumps(out)  # JSON-ready


def test_aguvis_matches_the_specs_example() -> None:
    """The example element of docs/dataset.md, aguvis, is what the code makes of the known task."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "dataset.md").read_text(encoding="utf-8")
    m = re.search(r'```json\n(\{"image": \["images/20261127T213000Z.*?)\n```', doc, re.S)
    assert m is not None
    samples = task_samples()
    traj = trajectory(SESSION, samples[0]["task"], samples)
    assert isinstance(traj, Trajectory)
    assert aguvis(traj, 42)[0] == json.loads(m.group(1))


def test_failed_task_is_not_completed() -> None:
    samples = task_samples(outcome="failed")
    traj = trajectory(SESSION, samples[0]["task"], samples)
    assert isinstance(traj, Trajectory)
    assert agentnet(traj, 1)["task_completed"] is False


@pytest.mark.parametrize(
    ("change", "steps", "reason"),
    [
        ({"outcome": "interrupted"}, None, "unfinished"),
        ({"outcome": "timed out"}, None, "unfinished"),
        ({"instruction": None}, None, "no_instruction"),
        ({}, [step("click", 6_000_000_000, x=1, y=1, button="left", frame=None)], "no_image"),
        ({}, [step("type", 6_000_000_000, text=None)], "not_mappable"),
        ({}, [step("click", 6_000_000_000, x=1, y=1, button="left", keys=["ctrl"])], "not_mappable"),
    ],
)
def test_left_out_trajectories_say_why(change: dict[str, Any], steps: Any, reason: str) -> None:
    kwargs: dict[str, Any] = {"images": {}} if steps and steps[0]["frame"] is None else {}
    if kwargs:
        t = TASK | {"steps": {"by_action": {}, "count": 1, "range": [0, 0]}} | change
        samples = [s.doc for s in build(steps, tasks=[t], **kwargs)]
    else:
        samples = task_samples(steps, **change)
    got = trajectory(SESSION, samples[0]["task"], samples)
    assert got == LeftOut(SESSION, f"{SESSION}/sign-in", reason)
    assert reason in LEFT_OUT
    assert left_out_reason(samples[0]["task"], [StepFacts.of_row(table_row(s)) for s in samples]) == reason


def table_row(sample: dict[str, Any]) -> dict[str, Any]:
    """The columns of a ``steps`` table row that decide an export (agent/dataset/tables.py)."""
    norm = sample["norm"]
    return {"has_image": sample["has_image"], "code": norm["code"], "after_gap": sample["after_gap"]}


def test_the_steps_table_gives_the_same_verdict_as_the_samples() -> None:
    samples = task_samples()
    task = samples[0]["task"]
    assert left_out_reason(task, [StepFacts.of_row(table_row(s)) for s in samples]) is None
    facts = [StepFacts.of_sample(s) for s in samples]
    assert facts == [StepFacts.of_row(table_row(s)) for s in samples]
    assert left_out_reason(task, []) == "no_steps"
    gap = [*facts[:1], StepFacts(True, "pyautogui.press('enter')", True)]
    assert left_out_reason(task, gap) == "gap"
    assert left_out_reason(task, [StepFacts(True, "x", True), *facts[1:]]) is None  # a gap before step 0
    # the first reason in LEFT_OUT's order wins
    worst = [StepFacts(False, None, False), StepFacts(True, None, True)]
    assert left_out_reason(task, worst) == "no_image"
    assert left_out_reason(task | {"instruction": None}, worst) == "no_instruction"
    assert left_out_reason(task | {"outcome": "interrupted", "instruction": None}, worst) == "unfinished"
    assert left_out_reason(task, [StepFacts(True, None, True), StepFacts(True, "x", True)]) == "not_mappable"


def test_a_gap_after_the_first_step_leaves_the_task_out_but_not_before_it() -> None:
    def with_marker(t_ns: int) -> list[dict[str, Any]]:
        events = [*EVENTS, {"k": "marker", "marker": "pause", "t_ns": t_ns, "v": 1, "detail": {}}]
        steps = [
            step("click", 6_000_000_000, x=530, y=276, button="left"),
            step("key", 9_000_000_000, keys=["enter"]),
        ]
        t = TASK | {"steps": {"by_action": {}, "count": 2, "range": [0, 1]}}
        return [s.doc for s in build(steps, tasks=[t], events=events)]

    before = with_marker(5_500_000_000)
    assert before[0]["after_gap"] is True
    assert isinstance(trajectory(SESSION, before[0]["task"], before), Trajectory)
    between = with_marker(7_000_000_000)
    assert trajectory(SESSION, between[0]["task"], between) == LeftOut(SESSION, f"{SESSION}/sign-in", "gap")
    assert left_out_reason(between[0]["task"], [StepFacts.of_row(table_row(s)) for s in between]) == "gap"


def test_task_without_steps_is_left_out() -> None:
    assert trajectory(SESSION, TASK, []) == LeftOut(SESSION, f"{SESSION}/sign-in", "no_steps")


def test_samples_that_are_not_the_tasks_steps_are_refused() -> None:
    samples = task_samples()
    for bad in (samples[1:], [samples[0], samples[2]], [samples[0], samples[0]], samples[::-1]):
        with pytest.raises(ValueError, match=r"steps in order|another session"):
            trajectory(SESSION, samples[0]["task"], bad)
    with pytest.raises(ValueError, match="another session"):
        trajectory("20261127T213000Z-ffffffff", samples[0]["task"], samples)


def test_by_task_groups_consecutive_steps_of_a_task() -> None:
    steps = [
        step("click", 6_000_000_000, x=1, y=1, button="left"),
        step("key", 7_000_000_000, keys=["enter"]),
        step("key", 8_000_000_000, keys=["tab"], task=None),
    ]
    t = TASK | {"steps": {"by_action": {}, "count": 2, "range": [0, 1]}}
    docs = [s.doc for s in build(steps, tasks=[t])]
    groups = list(by_task(docs))
    assert [[d["step"] for d in g] for g in groups] == [[0, 1]]


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        ({"action": "click", "x": 530, "y": 276, "button": "left"}, "Click at (0.4141, 0.3450)"),
        ({"action": "double_click", "x": 640, "y": 400, "button": "left"},
         "Double-click at (0.5000, 0.5000)"),
        ({"action": "right_click", "x": 640, "y": 400, "button": "right"}, "Right-click at (0.5000, 0.5000)"),
        ({"action": "drag", "x": 0, "y": 0, "to_x": 640, "to_y": 400, "button": "left"},
         "Drag from (0.0000, 0.0000) to (0.5000, 0.5000)"),
        ({"action": "scroll", "x": 1, "y": 1, "dx": 0, "dy": -3}, "Scroll down 3"),
        ({"action": "scroll", "x": 1, "y": 1, "dx": 2, "dy": 1}, "Scroll up 1 and right 2"),
        ({"action": "hotkey", "keys": ["ctrl", "shift", "page_up"]}, "Press ctrl+shift+pageup"),
    ],
)  # fmt: skip
def test_action_descriptions(fields: dict[str, Any], text: str) -> None:
    action = fields.pop("action")
    (doc,) = [s.doc for s in build([step(action, 6_000_000_000, task=None, **fields)])]
    assert describe(doc) == text


def test_image_paths_come_from_keys_only() -> None:
    assert image_path(f"{SESSION}_000007") == f"images/{SESSION}/000007.webp"
    for bad in ("../x_000001", "a/b_000001", "a.b_000001", f"{SESSION}_7"):
        with pytest.raises(ValueError, match="not a sample key"):
            image_path(bad)
