"""optin-bundle/3's UI elements, written and read back (agent/redact/policy.py, agent/steps.py,
agent/export/bundle.py, counts.py, recount.py, bundle_report.py).

The known answers are docs/export-format.md's ("Known answers", optin-bundle/3): the spec's minimal
session with the recorder's element lines in it — the ``point`` line of the click on the Username
field, and a ``focus`` line at the first typed key — redacted with the real policy, written by the
real writer and read back by the real reader.  The element lines are given out of time order, after
their action, as the recorder writes them.  A round trip through the store, ``optin export`` and
``optin inspect`` is at the end.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from agent import consent
from agent.errors import ExportError
from agent.events import ElementSeen, Event, KeyPress, KeyRelease, Marker
from agent.export import bundle, inspect
from agent.redact.local_names import LocalNames
from agent.redact.policy import Policy, redact_session
from agent.store import keys
from agent.store.writer import SessionWriter
from tests.tools import Consented
from tests.unit.test_bundle_tasks import S, session_events, study_task, written

#: docs/export-format.md's element (the Username field of a Firefox page) and its line.
USERNAME: dict[str, Any] = {
    "app": "Firefox",
    "automation_id": "user",
    "bounds": [412, 262, 240, 28],
    "name": "Username",
    "path": [
        {"name": "Staff portal — Mozilla Firefox", "role": "frame"},
        {"name": "Staff portal", "role": "document web"},
        {"name": None, "role": "form"},
    ],
    "role": "entry",
    "states": ["editable", "enabled", "focusable"],
}
ELEMENT = (
    '{"app":"Firefox","automation_id":"user","bounds":[412,262,240,28],"name":"Username","path":[{"name":'
    '"Staff portal — Mozilla Firefox","role":"frame"},{"name":"Staff portal","role":"document web"},{"name":'
    'null,"role":"form"}],"role":"entry","states":["editable","enabled","focusable"]}'
).encode()
ELEMENT_SIZE_SHA256 = (285, "e8a2c8ff0cb501a8bab452dde21437f82728a050f0d23f98f46d9e8abef49154")
DROPPED = (
    b'{"app":"Firefox","automation_id":null,"bounds":[412,262,240,28],"name":null,"path":[{"name":null,'
    b'"role":"frame"},{"name":null,"role":"document web"},{"name":null,"role":"form"}],"role":"entry",'
    b'"states":["editable","enabled","focusable"]}'
)
DROPPED_SIZE_SHA256 = (237, "f46950ebba70cc621763bcdb942a3148da53ce0452f3b67041e8e9d9b8519e07")
LINE = b'{"at":"point","element":' + ELEMENT + b',"k":"element","result":"found","t_ns":6000000000,"v":1}'
LINE_SIZE_SHA256 = (365, "bf7d4a7ae134db0f87eb3d29efc3061d574cf93db2a3cf03687c43a6fd86cbea")
#: Step 000000.json with its element (the element line is events.jsonl line 4, between the press
#: and the release).
FIRST_STEP = (
    b'{"action":"click","button":"left","dx":null,"dy":null,"element":' + ELEMENT + b',"events":[3,5],'
    b'"frame":null,"keys":[],"t_end_ns":6080000000,"t_start_ns":6000000000,"task":"sign-in","text":null,'
    b'"to_x":null,"to_y":null,"window":{"app_class":"firefox","height":800,"title":"Staff portal '
    b'\xe2\x80\x94 Mozilla Firefox","width":1280,"x":0,"y":0},"x":530,"y":276}'
)
FIRST_STEP_SIZE_SHA256 = (617, "170e2e98050646a13531d31a27344848ede68631bb9f79b92e50711ec4db1fd8")
FOCUSED = {**USERNAME, "states": ["editable", "enabled", "focusable", "focused"]}
CANARY = "alice.canary@example.com"


def with_elements(
    events: list[Event],
    *,
    point: dict[str, Any] | None = USERNAME,
    focus: dict[str, Any] | None = FOCUSED,
    api: str | None = "atspi",
    element_lookups: int | None = 0,
) -> list[Event]:
    """The spec's session with the recorder's element lines (after their actions, out of time order)
    and what the recorder says of lookups in its ``session_start`` and ``session_stop`` markers."""
    out: list[Event] = []
    for given in events:
        ev = given
        if isinstance(ev, Marker) and ev.marker == "session_start" and api is not None:
            ev = Marker(ev.t_ns, ev.marker, {**ev.detail, "elements": api})
        if isinstance(ev, Marker) and ev.marker == "session_stop" and element_lookups is not None:
            loss = {**ev.detail["loss"], "element_lookups": element_lookups}
            ev = Marker(ev.t_ns, ev.marker, {**ev.detail, "loss": loss})
        out.append(ev)
        if ev.t_ns == 6_080_000_000:  # after the release: the lookup of the press answered late
            out.append(ElementSeen(6 * S, "point", "found" if point else "no_element", point))
        if isinstance(ev, KeyRelease) and ev.t_ns == 7 * S + 50_000_000:  # the first key's release
            out.append(ElementSeen(7 * S, "focus", "found" if focus else "late", focus))
    return out


def lines(members: dict[str, bytes]) -> list[dict[str, Any]]:
    return [json.loads(x) for x in members["events.jsonl"].splitlines()]


def step_elements(members: dict[str, bytes]) -> list[Any]:
    count = sum(1 for name in members if name.endswith(".json") and name[:6].isdigit())
    return [json.loads(members[f"{n:06d}.json"])["element"] for n in range(count)]


# --- known answers -------------------------------------------------------------------------------------


def test_the_element_known_answers() -> None:
    members, read = written(with_elements(session_events(study_task())))
    assert (len(ELEMENT), hashlib.sha256(ELEMENT).hexdigest()) == ELEMENT_SIZE_SHA256
    assert (len(LINE), hashlib.sha256(LINE).hexdigest()) == LINE_SIZE_SHA256
    events = members["events.jsonl"].splitlines()
    assert events[4] == LINE
    assert [e["k"] for e in lines(members)][3:6] == ["button_press", "element", "button_release"]
    assert members["000000.json"] == FIRST_STEP
    assert (len(FIRST_STEP), hashlib.sha256(FIRST_STEP).hexdigest()) == FIRST_STEP_SIZE_SHA256
    assert step_elements(members) == [USERNAME, FOCUSED, FOCUSED]  # the typing and the Enter share a line
    manifest = json.loads(members["manifest.json"])
    assert manifest["elements"] == {"version": 1, "api": "atspi"}
    assert manifest["loss"]["elements"] == {
        "found": 2,
        "not_accessible": 0,
        "no_element": 0,
        "failed": 0,
        "late": 0,
        "dropped": 0,
        "steps_without": 0,
    }
    assert manifest["counts"]["element"] == 2
    assert manifest["redaction"]["counts"]["elements"] == {}
    assert read.manifest == manifest


def test_names_are_dropped_with_the_window_titles() -> None:
    """window_titles = "drop": every name, ancestor name and id null, each counted as ALL_TEXT;
    role, states, bounds and app stay."""
    members, read = written(
        with_elements(session_events(study_task())), Policy(ocr="off", window_titles="drop")
    )
    first = json.loads(members["000000.json"])["element"]
    from agent.canonical_json import canonical

    assert canonical(first) == DROPPED
    assert (len(DROPPED), hashlib.sha256(DROPPED).hexdigest()) == DROPPED_SIZE_SHA256
    # four texts in each of the two lines (the path's form has no name)
    assert read.manifest["redaction"]["counts"]["elements"] == {"ALL_TEXT": 8}
    assert not any(b"Username" in blob or b"Staff portal" in blob for blob in members.values())


def test_a_canary_in_an_element_name_becomes_its_entity() -> None:
    named = {
        **USERNAME,
        "name": f"Send to {CANARY}",
        "automation_id": CANARY,
        "path": [{"role": "frame", "name": f"Inbox - {CANARY}"}],
    }
    members, read = written(with_elements(session_events(study_task()), point=named))
    element = json.loads(members["000000.json"])["element"]
    assert element["name"] == "Send to [EMAIL]" and element["automation_id"] == "[EMAIL]"
    assert element["path"] == [{"role": "frame", "name": "Inbox - [EMAIL]"}]
    assert read.manifest["redaction"]["counts"]["elements"] == {"EMAIL": 3}
    assert not any(b"canary" in blob for blob in members.values())


def test_this_computers_names_in_an_element_are_redacted() -> None:
    local = LocalNames(("lab-pc-7",), ("adalove",), ("/home/adalove",), ("02:42:ac:11:00:02",))
    named = {**USERNAME, "name": "Open /home/adalove/notes on lab-pc-7"}
    events = with_elements(session_events(study_task()), point=named)
    redaction = redact_session(events, Policy(ocr="off"), ocr=None, local=local)
    (seen,) = [e for e in redaction.events if isinstance(e, ElementSeen) and e.at == "point"]
    assert seen.element is not None and seen.element["name"] == "Open [HOME_PATH]/notes on [HOSTNAME]"
    assert redaction.counts["elements"] == {"HOME_PATH": 1, "HOSTNAME": 1}


def test_a_name_is_cut_to_its_bound_after_redaction_and_an_odd_role_reads_unknown() -> None:
    """A stored name within its bound can outgrow it by a placeholder ("a@b.co" is one character
    shorter than "[EMAIL]"): it is cut to the bundle's bound.  A role the bundle cannot spell
    (an application's own role name) reads ``unknown``."""
    long = {
        **USERNAME,
        "name": "x" * 1017 + " a@b.co",
        "automation_id": "y" * 249 + " a@b.co",
        "role": "Custom Widget!",
        "path": [{"role": "frame", "name": "z" * 1017 + " a@b.co"}],
    }
    events = [e for e in with_elements(session_events(study_task()), point=long)]
    redaction = redact_session(events, Policy(ocr="off"), ocr=None)
    (seen,) = [e for e in redaction.events if isinstance(e, ElementSeen) and e.at == "point"]
    assert seen.element is not None and seen.element["role"] == "unknown"
    assert seen.element["name"] == "x" * 1017 + " [EMAIL"  # 1,024 characters
    assert len(seen.element["automation_id"]) == 256 and len(seen.element["path"][0]["name"]) == 1024
    assert redaction.counts["elements"] == {"EMAIL": 3}


def test_a_focus_line_inside_a_redacted_span_moves_to_the_spans_record() -> None:
    """Its time would say when a key of the span was pressed: it takes the Redacted record's."""
    out: list[Event] = [Marker(1 * S, "session_start", {"backend": "xorg", "elements": "atspi"})]
    for n, ch in enumerate(f"to {CANARY}"):
        t = 2 * S + n * 100_000_000
        out += [KeyPress(t, ch, None, ord(ch), ()), KeyRelease(t + 50_000_000, ch, None, ord(ch), ())]
        if n == 10:  # inside the e-mail address
            out.append(ElementSeen(t, "focus", "found", FOCUSED))
    out.append(Marker(9 * S, "session_stop", {"loss": {"element_lookups": 0}}))
    redaction = redact_session(out, Policy(ocr="off"), ocr=None)
    ordered = sorted(redaction.events, key=lambda e: e.t_ns)
    (record,) = [e for e in ordered if e.KIND == "redacted"]
    (seen,) = [e for e in ordered if isinstance(e, ElementSeen)]
    assert seen.t_ns == record.t_ns == 2 * S + 3 * 100_000_000
    assert ordered.index(seen) == ordered.index(record) + 1


# --- loss ----------------------------------------------------------------------------------------------


def test_loss_counts_lines_by_result_the_dropped_lookups_and_the_steps_without() -> None:
    events = with_elements(session_events(study_task()), point=None, focus=None, element_lookups=3)
    members, read = written(events)
    assert step_elements(members) == [None, None, None]
    assert read.manifest["loss"]["elements"] == {
        "found": 0,
        "not_accessible": 0,
        "no_element": 1,
        "failed": 0,
        "late": 1,
        "dropped": 3,
        "steps_without": 3,
    }


def test_dropped_is_null_without_the_count_or_without_a_stop() -> None:
    events = with_elements(session_events(study_task()), element_lookups=None)
    assert written(events)[1].manifest["loss"]["elements"]["dropped"] is None
    no_stop = [e for e in events if not (isinstance(e, Marker) and e.marker == "session_stop")]
    assert written(no_stop)[1].manifest["loss"]["elements"]["dropped"] is None


def test_a_session_without_lookups_states_none() -> None:
    members, read = written(
        with_elements(session_events(study_task()), point=None, focus=None, api=None)[:0]
        or session_events(study_task())
    )
    assert (
        read.manifest["elements"] == {"version": 1, "api": None} and read.manifest["loss"]["elements"] is None
    )
    assert "element" not in read.manifest["counts"] and step_elements(members) == [None, None, None]


def test_element_lines_without_an_api_are_not_exported() -> None:
    with pytest.raises(ExportError, match="names no element API"):
        written(with_elements(session_events(study_task()), api=None))


# --- the report ----------------------------------------------------------------------------------------


def test_the_report_shows_the_element_counts_and_no_name() -> None:
    _members, read = written(with_elements(session_events(study_task()), element_lookups=1))
    summary = inspect.summarise(read)
    assert summary["elements"] == {"version": 1, "api": "atspi"}
    assert summary["loss"]["elements"]["found"] == 2
    text = inspect.render_summary(summary)
    assert (
        "\nelements:   atspi: found 2, not_accessible 0, no_element 0, failed 0, late 0, dropped 1; "
        "0 steps without an element\n"
    ) in text
    assert "Username" not in text and "Staff portal —" not in text.split("\nloss:")[1]


# --- round trip: the store, optin export, optin inspect ------------------------------------------------


def test_elements_round_trip_from_the_store_through_export_and_inspect(
    consented: Consented, study_file: Path, tmp_path: Path
) -> None:
    d, study = consented
    receipt = consent.current_receipt(d)
    assert receipt is not None
    events = with_elements(session_events(None))
    start = events[0]
    assert isinstance(start, Marker)
    events[0] = Marker(start.t_ns, start.marker, {**start.detail, "consent_sha256": receipt.text_sha256})
    named = [e for e in events if isinstance(e, ElementSeen)]
    assert len(named) == 2
    writer = SessionWriter.create(d, keys.load_recipient(d))
    writer.write_events(events)
    writer.close()
    result = bundle.export_session(d, writer.session_id, tmp_path / "out", study, approve=True)
    identities = inspect.load_identity_file(study_file.parent / "study-identity.txt")
    opened = inspect.open_bundle(result.path, identities)
    assert opened.manifest["elements"] == {"version": 1, "api": "atspi"}
    assert opened.manifest["loss"]["elements"]["found"] == 2
    assert [json.loads(opened.members[f"{n:06d}.json"])["element"]["role"] for n in range(3)] == ["entry"] * 3
    assert inspect.summarise(opened)["loss"]["elements"]["steps_without"] == 0


def test_the_spec_prints_these_vectors() -> None:
    """docs/export-format.md and this file agree on every element vector, its size and its hash."""
    spec = (Path(__file__).resolve().parents[2] / "docs" / "export-format.md").read_text(encoding="utf-8")
    for blob, (size, digest) in (
        (ELEMENT, ELEMENT_SIZE_SHA256),
        (DROPPED, DROPPED_SIZE_SHA256),
        (LINE, LINE_SIZE_SHA256),
        (FIRST_STEP, FIRST_STEP_SIZE_SHA256),
    ):
        assert f"\n{blob.decode()}\n" in spec
        assert f"({size} bytes, SHA-256\n`{digest}`" in spec or f"({size} bytes, SHA-256 `{digest}`" in spec
