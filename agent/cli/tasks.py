"""``optin task start|done|fail|abandon|status``: the volunteer's tasks, asked of the running agent.

A task is what the volunteer sets out to do: one of the study's (``--id``) or an instruction
of their own (``--instruction``), as the study allows; it ends done, failed or given up
(``abandon``: its recording is deleted; ``--task ID`` names the task meant, so that a task that
ended meanwhile is never confused with the next).  Every action goes over the control socket
(:mod:`agent.ipc`); exit code 3 means no optin agent is running.  A volunteer's instruction is
captured text: it is sent to the agent and never printed back (the task is named by its id).
``--instruction -`` reads it from standard input (one line, at most
:data:`agent.events.MAX_INSTRUCTION` characters), keeping it out of the shell's history and the
process's command line (``/proc/<pid>/cmdline``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, BinaryIO

from agent.cli.output import print_json
from agent.errors import UsageError
from agent.events import MAX_INSTRUCTION, instruction_problem
from agent.untrusted_text import visible

__all__ = ["MAX_STDIN_BYTES", "STDIN", "cmd_task", "read_instruction"]

#: The ``--instruction`` value that reads the instruction from standard input.
STDIN = "-"
#: The most bytes read from standard input: the longest instruction in 4-byte characters, and a
#: line break (``\r\n``) after it; more is refused unread.
MAX_STDIN_BYTES = 4 * MAX_INSTRUCTION + 2

#: What each action asks the agent, and the key of its reply.
_OPS = {
    "start": ("task_start", "task"),
    "done": ("task_done", "ended"),
    "fail": ("task_fail", "ended"),
    "abandon": ("task_abandon", "ended"),
    "status": ("task_status", "tasks"),
}


def cmd_task(args: argparse.Namespace) -> int:
    from agent import ipc
    from agent.paths import dirs

    action = args.action
    given = {k: v for k, v in (("id", args.id), ("instruction", args.instruction)) if v is not None}
    meant = getattr(args, "task", None)
    if action == "start" and len(given) != 1:
        msg = (
            "optin task start needs --id ID (one of the study's tasks) or --instruction TEXT (one of the "
            "two; --instruction - reads it from standard input)"
        )
        raise UsageError(msg)
    if action != "start" and given:
        msg = f"optin task {action} takes no --id or --instruction (they are for `optin task start`)"
        raise UsageError(msg)
    if meant is not None and action != "abandon":
        msg = f"optin task {action} takes no --task (it is for `optin task abandon`)"
        raise UsageError(msg)
    if given.get("instruction") == STDIN:
        given["instruction"] = read_instruction(getattr(sys.stdin, "buffer", None))
    if meant is not None:
        given["task_id"] = meant
    op, key = _OPS[action]
    reply: dict[str, Any] = ipc.request(dirs(), op, **given)[key]
    if args.json:
        print_json(reply)
    elif action == "start":
        print(_started(reply, args.id is not None))
    elif action == "status":
        print(_status(reply))
    else:
        print(_ended(reply))
    return 0


def read_instruction(stream: BinaryIO | None) -> str:
    """The instruction from ``stream`` (standard input): one line of UTF-8, its line break dropped.

    At most :data:`MAX_STDIN_BYTES` are read (from a terminal, up to the first line break; from a
    pipe or file, to its end), so a longer input is refused without being read whole.  It is
    checked as the agent checks an instruction (:func:`agent.events.instruction_problem`); what is
    read is never shown: a refusal names lengths and code points.

    :raises UsageError: no standard input, too long, not UTF-8, empty, or more than one line.
    """
    if stream is None:
        msg = "--instruction - reads the instruction from standard input, and there is none"
        raise UsageError(msg)
    if stream.isatty():
        print("Your instruction (one line; Enter ends it):", file=sys.stderr, flush=True)
        data = stream.readline(MAX_STDIN_BYTES + 1)
    else:
        data = stream.read(MAX_STDIN_BYTES + 1)
    if len(data) > MAX_STDIN_BYTES:
        msg = (
            f"the instruction on standard input has more than {MAX_STDIN_BYTES} bytes; at most "
            f"{MAX_INSTRUCTION} characters are kept"
        )
        raise UsageError(msg)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        msg = (
            f"the instruction on standard input is not UTF-8 text (byte {exc.start}). Fix: write it as UTF-8"
        )
        raise UsageError(msg) from None
    if text.endswith("\n"):
        text = text[:-2] if text.endswith("\r\n") else text[:-1]
    problem = instruction_problem(text)  # as the agent says it, before anything is sent
    if problem is not None:
        raise UsageError(problem)
    return text


def _duration(seconds: Any) -> str:
    total = int(seconds) if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) else 0
    minutes, secs = divmod(max(total, 0), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _limit(task: dict[str, Any]) -> str:
    limit, ends = task.get("time_limit_s"), task.get("ends_at")
    if not isinstance(limit, int) or isinstance(limit, bool):
        return ""
    until = f", until {str(ends)[11:16]} UTC" if ends else ""
    return f" (time limit {_duration(limit)}{until})"


def _started(task: dict[str, Any], from_study: bool) -> str:
    name = visible(str(task.get("id")), limit=64)
    whose = "the study's task" if from_study else "your task"
    return (
        f"{whose} {name} started{_limit(task)}; recording goes on in a new session, "
        f"{task.get('session')}. End it with `optin task done`, `optin task fail` or `optin task abandon`"
    )


def _ended(ended: dict[str, Any]) -> str:
    name = visible(str(ended.get("id")), limit=64)
    took = _duration(ended.get("seconds"))
    outcome = ended.get("outcome")
    deleted = ended.get("deleted")
    if outcome == "abandoned" and isinstance(deleted, dict):
        was = ended.get("ended_as")
        how = f"had ended ({visible(str(was), limit=20)}) after {took}" if was else f"given up after {took}"
        return (
            f"task {name} {how}; its recording was deleted "
            f"(session {deleted.get('session_id', '-')}, {deleted.get('segments', 0)} segments shredded)"
        )
    return f"task {name} {visible(str(outcome), limit=20)} after {took}"


def _status(tasks: dict[str, Any]) -> str:
    mode = tasks.get("mode")
    if mode == "off":
        head = "this study asks for no tasks"
    else:
        ways = []
        if tasks.get("tasks"):
            ways.append("one of the study's tasks (--id)")
        if tasks.get("free"):
            ways.append("an instruction of your own (--instruction)")
        head = "start " + " or ".join(ways) if ways else "the study lists no tasks"
    lines = [f"tasks: {head}"]
    running = tasks.get("running")
    if isinstance(running, dict):
        name = visible(str(running.get("id")), limit=64)
        lines.append(f"running: {name}, for {_duration(running.get('seconds'))}{_limit(running)}")
    else:
        lines.append("running: no task")
    last = tasks.get("last")
    if isinstance(last, dict):
        lines.append(f"last: {_ended(last)}")
    for task in tasks.get("tasks") or []:
        if not isinstance(task, dict):
            continue
        minutes = task.get("time_limit_minutes")
        limit = f" [{minutes} min]" if isinstance(minutes, int) and not isinstance(minutes, bool) else ""
        text = visible(str(task.get("instruction", "")), limit=200)
        lines.append(f"  {visible(str(task.get('id')), limit=64)}{limit}: {text}")
    return "\n".join(lines)
