"""A task's samples as an AgentNet trajectory or Aguvis conversations (docs/dataset.md, Exports).

Pure: JSON-ready dicts, no I/O (the exporter writes them).  Instructions, typed text and
element names are captured content: nothing here logs them or puts them into a message.

One **trajectory** is one task whose ``outcome`` is ``done`` or ``failed`` and whose
``instruction`` is not null, with all its steps in order.  :func:`trajectory` returns it, or
the reason it is left out, the first of :data:`LEFT_OUT` that applies:

- ``unfinished``: ``outcome`` ``interrupted`` or ``timed out`` (not known to have succeeded or failed);
- ``no_instruction``: ``instruction`` null (a volunteer's, dropped under ``typed_text = "drop"``);
- ``no_steps``: the task has no step;
- ``no_image``: a step has no frame (the sample's image is the placeholder);
- ``not_mappable``: a step's ``norm.code`` is null;
- ``gap``: a step after the first has ``after_gap`` true.

:func:`left_out_reason` applies the same rule to :class:`StepFacts` (from the ``steps``
table), so an exporter can choose tasks before it reads a shard.

:func:`agentnet` makes the ``trajectories.jsonl`` object of a trajectory, :func:`aguvis` the
``aguvis.json`` elements (one per step); images are referenced as
``images/<session>/<NNNNNN>.webp``, a path built from the sample key only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent.dataset.pyautogui_code import coordinate, key_name
from agent.dataset.samples import parse_key

#: Why a task is not exported, in the order they are tested.
LEFT_OUT = ("unfinished", "no_instruction", "no_steps", "no_image", "not_mappable", "gap")
#: Outcomes that make a trajectory, and ``task_completed`` for each.
COMPLETED = {"done": True, "failed": False}
#: The Aguvis system turn.
AGUVIS_SYSTEM = (
    "You are a GUI agent. You are given a task and a screenshot of the screen. "
    "You need to perform a series of pyautogui actions to complete the task."
)
#: The Aguvis human turn; ``previous`` is the earlier steps' codes, one per line, oldest first.
AGUVIS_HUMAN = (
    "<image>Please generate the next move according to the UI screenshot, instruction and previous actions."
    "\n\nInstruction: {instruction}\n\nPrevious actions:\n{previous}"
)
#: AgentNet fields that OpenCUA generates after collection: null here.
_GENERATED = (
    "alignment_score",
    "efficiency_score",
    "task_difficulty",
    "reason",
    "actual_task",
    "natural_language_task",
)
_STEP_GENERATED = ("observation", "thought", "reflection", "last_step_correct", "last_step_redundant")
_CLICK_VERBS = {
    "click": "Click",
    "double_click": "Double-click",
    "right_click": "Right-click",
    "middle_click": "Middle-click",
}


@dataclass(frozen=True)
class Trajectory:
    """A task's samples (sample JSONs, in step order), all of them exportable."""

    session: str
    task: Mapping[str, Any]
    samples: tuple[Mapping[str, Any], ...]

    @property
    def task_id(self) -> str:
        """``<session>/<task id>``."""
        return f"{self.session}/{self.task['id']}"


@dataclass(frozen=True)
class LeftOut:
    """A task that is not exported, and why (one of :data:`LEFT_OUT`)."""

    session: str
    task_id: str
    reason: str


def image_path(key: str) -> str:
    """``images/<session>/<NNNNNN>.webp`` of a sample key (:raises ValueError: not a sample key)."""
    session, step = parse_key(key)
    return f"images/{session}/{step:06d}.webp"


def by_task(samples: Iterable[Mapping[str, Any]]) -> Iterator[list[Mapping[str, Any]]]:
    """Consecutive samples of one (session, task id), in the order given; steps outside a task are skipped."""
    group: list[Mapping[str, Any]] = []
    current: tuple[str, str] | None = None
    for sample in samples:
        task = sample.get("task")
        ident = (sample["session"], task["id"]) if isinstance(task, Mapping) else None
        if ident != current and group:
            yield group
            group = []
        current = ident
        if ident is not None:
            group.append(sample)
    if group:
        yield group


@dataclass(frozen=True)
class StepFacts:
    """What decides whether a step can be exported, from a sample JSON (:meth:`of_sample`) or a row
    of the ``steps`` table (:meth:`of_row`), so that an exporter can choose tasks before it reads
    a shard, by the same rule as :func:`trajectory`."""

    has_image: bool
    code: str | None
    after_gap: bool

    @classmethod
    def of_sample(cls, sample: Mapping[str, Any]) -> StepFacts:
        return cls(sample["has_image"], sample["norm"]["code"], sample["after_gap"])

    @classmethod
    def of_row(cls, row: Mapping[str, Any]) -> StepFacts:
        """From a ``steps`` row (``has_image``, ``code``, ``after_gap``)."""
        return cls(row["has_image"], row["code"], row["after_gap"])


def left_out_reason(task: Mapping[str, Any], steps: Sequence[StepFacts]) -> str | None:
    """The first of :data:`LEFT_OUT` that applies to a task (``outcome``, ``instruction``) and its
    steps in order, or None when it is exported (tested lazily, in that order)."""
    tests: tuple[Callable[[], bool], ...] = (
        lambda: task.get("outcome") not in COMPLETED,
        lambda: task.get("instruction") is None,
        lambda: not steps,
        lambda: not all(s.has_image for s in steps),
        lambda: any(s.code is None for s in steps),
        lambda: any(s.after_gap for s in steps[1:]),
    )
    return next((reason for reason, test in zip(LEFT_OUT, tests, strict=True) if test()), None)


def trajectory(
    session: str, task: Mapping[str, Any], samples: Sequence[Mapping[str, Any]]
) -> Trajectory | LeftOut:
    """The trajectory of a task (a ``tasks`` row or a sample's ``task``: ``id``, ``outcome``,
    ``instruction``, ...), from every sample of it, or why it is left out.

    :raises ValueError: the samples are not exactly the task's steps in order (another
        session or task, a missing or repeated step).
    """
    task_id = task["id"]
    for n, s in enumerate(samples):
        st = s.get("task")
        if s.get("session") != session or not isinstance(st, Mapping) or st.get("id") != task_id:
            msg = f"sample {n} of task {task_id!r} belongs to another session or task"
            raise ValueError(msg)
        if st.get("index") != n or (n and s["step"] != samples[n - 1]["step"] + 1):
            msg = f"the samples of task {task_id!r} are not its steps in order (sample {n})"
            raise ValueError(msg)
    reason = left_out_reason(task, [StepFacts.of_sample(s) for s in samples])
    if reason is not None:
        return LeftOut(session, f"{session}/{task_id}", reason)
    return Trajectory(session, task, tuple(samples))


def describe(sample: Mapping[str, Any]) -> str:
    """``traj[i].value.action``: a plain description by a fixed template (coordinates as in the code)."""
    action = sample["action"]
    raw, norm = sample["raw"], sample["norm"]

    def at(x: str, y: str) -> str:
        return f"({coordinate(norm[x])}, {coordinate(norm[y])})"

    if action in _CLICK_VERBS:
        element = sample.get("element")
        verb = _CLICK_VERBS[action]
        if isinstance(element, Mapping) and isinstance(element.get("name"), str):
            return f'{verb} on the {element["role"]} "{element["name"]}"'
        return f"{verb} at {at('x', 'y')}"
    if action == "drag":
        return f"Drag from {at('x', 'y')} to {at('to_x', 'to_y')}"
    if action == "scroll":
        parts = []
        if raw["dy"]:
            parts.append(f"{'up' if raw['dy'] > 0 else 'down'} {abs(raw['dy'])}")
        if raw["dx"]:
            parts.append(f"{'right' if raw['dx'] > 0 else 'left'} {abs(raw['dx'])}")
        return "Scroll " + " and ".join(parts)
    if action == "type":
        return f'Type "{raw["text"]}"'
    return "Press " + "+".join(str(key_name(k)) for k in raw["keys"])


def _frame_size(sample: Mapping[str, Any]) -> list[int]:
    frame = sample["frame"]
    return [frame["width"], frame["height"]]


def agentnet(traj: Trajectory, dataset_version: int) -> dict[str, Any]:
    """The ``trajectories.jsonl`` object of a trajectory (docs/dataset.md, agentnet)."""
    steps = []
    for i, s in enumerate(traj.samples):
        value: dict[str, Any] = {"action": describe(s), "code": s["norm"]["code"]}
        value.update(dict.fromkeys(_STEP_GENERATED))
        steps.append({"index": i, "image": image_path(s["key"]), "value": value})
    first = traj.samples[0]
    out: dict[str, Any] = {
        "task_id": traj.task_id,
        "instruction": traj.task["instruction"],
        "traj": steps,
        "task_completed": COMPLETED[traj.task["outcome"]],
        **dict.fromkeys(_GENERATED),
        "optin": {
            "session": traj.session,
            "task_id": traj.task["id"],
            "source": traj.task["source"],
            "volunteer": first["volunteer"],
            "consent_version": first["consent_version"],
            "dataset_version": dataset_version,
            "outcome": traj.task["outcome"],
            "frame_size": _frame_size(first),
        },
    }
    return out


def aguvis(traj: Trajectory, dataset_version: int) -> list[dict[str, Any]]:
    """The ``aguvis.json`` elements of a trajectory, one per step (docs/dataset.md, aguvis)."""
    out = []
    previous: list[str] = []
    for i, s in enumerate(traj.samples):
        human = AGUVIS_HUMAN.format(instruction=traj.task["instruction"], previous="\n".join(previous))
        out.append(
            {
                "image": [image_path(s["key"])],
                "conversations": [
                    {"from": "system", "value": AGUVIS_SYSTEM},
                    {"from": "human", "value": human},
                    {"from": "gpt", "value": s["norm"]["code"], "recipient": "os", "end_turn": True},
                ],
                "optin": {
                    "key": s["key"],
                    "task_id": traj.task_id,
                    "index": i,
                    "volunteer": s["volunteer"],
                    "dataset_version": dataset_version,
                },
            }
        )
        previous.append(s["norm"]["code"])
    return out


__all__ = [
    "AGUVIS_HUMAN",
    "AGUVIS_SYSTEM",
    "COMPLETED",
    "LEFT_OUT",
    "LeftOut",
    "StepFacts",
    "Trajectory",
    "agentnet",
    "aguvis",
    "by_task",
    "describe",
    "image_path",
    "left_out_reason",
    "trajectory",
]
