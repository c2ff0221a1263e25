"""What ``optin inspect`` reports of an opened bundle: :func:`summarise` (JSON) and :func:`render_summary`.

No member content is reported; every string that came from the bundle is shown by
:func:`render_summary` through :func:`~agent.untrusted_text.visible` and cut short.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.export.bundle_checks import Bundle
from agent.export.counts import ELEMENT_RESULTS
from agent.export.recount import EVENTS, FRAMES, SHOWN, V3, each_line, view
from agent.session_summary import pairs_text, redactions_by_place
from agent.untrusted_text import visible


def summarise(bundle: Bundle) -> dict[str, Any]:
    """What ``optin inspect`` reports of an opened bundle, JSON-ready (no member content).

    Strings are as the manifest holds them: :func:`render_summary` makes them safe to print.
    """
    m = bundle.manifest
    consent = _mapping(m.get("consent"))
    volunteer = _mapping(m.get("volunteer"))
    by_action = dict(sorted(bundle.steps_by_action.items(), key=lambda kv: (-kv[1], kv[0])))
    return {
        "path": str(bundle.path),
        "session": bundle.session,
        "schema": m["schema"],
        "agent_version": m.get("agent_version"),
        "volunteer": {
            "id": volunteer.get("id"),
            "signing_key": volunteer.get("signing_key"),
            "id_verified": bundle.id_verified,
        },
        "study": {"id": consent.get("study_id"), "name": consent.get("study_name")},
        "consent_version": consent.get("consent_version"),
        "duration_s": m.get("duration_s"),
        "steps": {"count": sum(by_action.values()), "by_action": by_action},
        "tasks": m.get("tasks") if m["schema"] == V3 else None,
        "elements": m.get("elements") if m["schema"] == V3 else None,
        "frames": _line_count(bundle.members, FRAMES),
        "events": _line_count(bundle.members, EVENTS),
        "redactions": _mapping(m.get("redaction")).get("counts", {}),
        "loss": m.get("loss"),
        "members": {"count": len(bundle.members) + 2, "bytes": bundle.size()},
        "signature": "valid",
    }


def render_summary(summary: dict[str, Any]) -> str:
    """A short terminal text of :func:`summarise`'s result: aligned ``key: value`` lines.

    Every string that came from the bundle (or its file name) is shown with
    :func:`~agent.untrusted_text.visible` and cut short, so none can move the cursor, rewrite a
    line or reorder the text around it.
    """
    volunteer, study, steps = summary["volunteer"], summary["study"], summary["steps"]
    by_action = pairs_text(steps["by_action"], key=_v)
    key = _v(volunteer["signing_key"])
    if volunteer.get("id_verified"):
        who = f"{_v(volunteer['id'])} (the id of signing key {key})"
        signed = "valid (unchanged since it was signed with that volunteer's key)"
    else:
        who = (
            f"{_v(volunteer['id'])} NOT verified: {_v(summary['schema'])} does not bind the id to its "
            f"signing key {key}; tell volunteers apart by that key"
        )
        signed = "valid (unchanged since it was signed with the key above)"
    rows = [
        ("bundle", visible(summary["path"])),
        ("session", _v(summary["session"])),
        ("schema", f"{_v(summary['schema'])}, written by optin {_v(summary['agent_version'])}"),
        ("volunteer", who),
        (
            "study",
            f"{_v(study['id'])} ({_v(study['name'])}), consent version {_v(summary['consent_version'])}",
        ),
        ("duration", "unknown" if summary["duration_s"] is None else f"{_v(summary['duration_s'])} s"),
        ("steps", f"{steps['count']}" + (f": {by_action}" if by_action else "")),
        ("tasks", _tasks_text(summary.get("tasks"))),
        ("elements", _elements_text(summary.get("elements"), summary["loss"])),
        ("frames", str(summary["frames"])),
        ("events", str(summary["events"])),
        ("redactions", _redactions_text(summary["redactions"])),
        ("loss", _flat_text(_loss_shown(summary["loss"]))),
        ("members", f"{summary['members']['count']}, {summary['members']['bytes']} bytes"),
        ("signature", signed),
    ]
    width = max(len(key) for key, _ in rows) + 2
    return "\n".join(f"{key + ':':<{width}}{value}" for key, value in rows)


#: Tasks the text summary lists one by one (``--json`` gives them all).
SHOWN_TASKS = 20


def _tasks_text(tasks: Any) -> str:
    """``sign-in (study) done, steps 0-2; ...``; ``none``; or ``unknown`` (a bundle from before tasks).

    Ids, sources and outcomes were checked against the format; they are shown visibly all the same.
    No instruction is shown here (``--json`` has them, escaped).
    """
    if not isinstance(tasks, list):
        return "unknown (this schema has no tasks)"
    parts = []
    for task in tasks[:SHOWN_TASKS]:
        steps = _mapping(task.get("steps"))
        span = steps.get("range")
        where = (
            f"steps {_v(span[0])}-{_v(span[1])}" if isinstance(span, list) and len(span) == 2 else "no steps"
        )
        parts.append(f"{_v(task.get('id'))} ({_v(task.get('source'))}) {_v(task.get('outcome'))}, {where}")
    more = f"; and {len(tasks) - SHOWN_TASKS} more" if len(tasks) > SHOWN_TASKS else ""
    return f"{len(tasks)}: " + "; ".join(parts) + more if parts else "none"


def _loss_shown(loss: Any) -> Any:
    """``loss`` without ``elements`` (the ``elements`` row shows it)."""
    if isinstance(loss, dict) and "elements" in loss:
        return {k: v for k, v in loss.items() if k != "elements"}
    return loss


def _elements_text(elements: Any, loss: Any) -> str:
    """``atspi: found 5, not_accessible 1, no_element 0, failed 0, late 0, dropped 0; 2 steps without``;
    ``no lookups``; or ``unknown`` (a bundle from before elements).  Counts only, never a name."""
    if not isinstance(elements, dict):
        return "unknown (this schema has no elements)"
    api = elements.get("api")
    lost = loss.get("elements") if isinstance(loss, dict) else None
    if api is None or not isinstance(lost, dict):
        return "no lookups"
    order = [*ELEMENT_RESULTS, "dropped"]
    counted = {k: lost[k] for k in order if k in lost}
    counted.update({k: v for k, v in lost.items() if k not in order and k != "steps_without"})
    return f"{_v(api)}: {_flat_text(counted)}; {_v(lost.get('steps_without'))} steps without an element"


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _v(value: Any) -> str:
    """A value from the bundle as the summary prints it: visible, cut short, ``unknown`` for None."""
    return "unknown" if value is None else visible(str(value), limit=SHOWN)


def _line_count(members: Mapping[str, bytes], name: str) -> int:
    """Lines of member ``name`` (0 when there is none), read where it is: no copy of the member."""
    return sum(1 for _ in each_line(view(members, name))) if name in members else 0


def _redactions_text(found: Any) -> str:
    """``typed EMAIL 1; screen EMAIL 2, TYPED 1`` (sources with no finds left out), or ``none``."""
    return redactions_by_place(_mapping(found), place=_v, entities=_flat_text, empty="none")


def _flat_text(value: Any) -> str:
    """``key value, ...`` of a flat mapping (lists as their items, or ``none``)."""
    if not isinstance(value, dict):
        return _v(value)
    return pairs_text(value, key=_v, value=_flat_item, empty="none")


def _flat_item(item: Any) -> str:
    """One value of a flat mapping: a list as its items (or ``none``)."""
    return (", ".join(_v(i) for i in item) or "none") if isinstance(item, list) else _v(item)


__all__ = ["render_summary", "summarise"]
