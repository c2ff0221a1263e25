"""Every refusal of a bundle carries one reason code of docs/dataset.md "Reason codes" (issue 17).

Three holds:

* the table itself: :data:`agent.export.reasons.REASONS` is exactly the spec's table (read from
  docs/dataset.md), and agent/dataset/samples.py's ``STAGES`` agrees with it;
* every raise site: the checking modules are parsed (never imported for this) and every
  ``ExportError(...)`` (or subclass), ``refuse(...)`` and ``_same(...)`` call must pass
  ``reason=`` a string literal from the table; the few other forms allowed are named below with
  their reason.  The scanner is also run over planted violations, so it cannot pass by finding
  nothing;
* real bundles (tests/unit/test_inspect.py's and tests/hostile/test_bundles.py's builders, from the
  spec's words): each broken one is refused with the code the table's "when" column gives, its
  stage, and — only once the signature and the volunteer id were checked — the manifest's
  session and volunteer id.  The messages are the ones those files' tests match.
"""

from __future__ import annotations

import ast
import base64
import io
import json
import pickle
import re
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyrage
import pytest
from pyrage import x25519

from agent.canonical_json import canonical
from agent.dataset import samples
from agent.errors import ExportError
from agent.export import inspect
from agent.export.reasons import NOT_A_REFUSAL, REASONS, STAGE_ORDER, stage_of
from agent.store import signing
from tests.hostile.test_bundles import (
    ELEMENT,
    FOCUSED,
    e_bundle,
    e_events,
    e_steps,
    v3_bundle,
    v3_events,
    v3_steps,
    v3_task,
)
from tests.unit.test_inspect import (
    FRESH_SEED,
    SAMPLE_COUNTS,
    SAMPLE_LOSS,
    SESSION,
    STUDY,
    STUDY_KEY,
    VOLUNTEER,
    Entry,
    entries_for,
    forged_volunteer,
    lines,
    manifest_for,
    sample_events,
    sample_members,
    seal,
    tar_of,
    v1_manifest_for,
)

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "docs" / "dataset.md"
#: The modules whose raises refuse a bundle (task_list.py and counts.py raise ValueError, which
#: recount.py turns into a refusal with a code; they are scanned so a new ExportError there is held too).
CHECKED = [
    "agent/export/inspect.py",
    "agent/export/bundle_checks.py",
    "agent/export/recount.py",
    "agent/export/task_list.py",
    "agent/export/counts.py",
]
#: Calls that refuse a bundle and take its code as ``reason=``: the error tree's ExportError and its
#: subclasses, the tar reader's ``refuse`` (and the Recount callback of that name), and Recount's
#: ``_same`` (stated against recomputed).
REFUSING_HELPERS = frozenset({"refuse", "_same"})
#: Functions that forward their own ``reason`` parameter (their callers are scanned instead).
FORWARDERS = {("agent/export/bundle_checks.py", "refuse"), ("agent/export/recount.py", "_same")}
#: ExportErrors that refuse no bundle's bytes (a path that is no regular file, an output directory
#: that cannot be written): ``reason=NOT_A_REFUSAL``, never reached by ``open_bundle_stream``.
NOT_REFUSALS = {
    ("agent/export/inspect.py", "__enter__"),  # _RegularFile: optin inspect's path is no regular file
    ("agent/export/inspect.py", "unpack"),
    ("agent/export/inspect.py", "_check_existing_session_dir"),
    ("agent/export/inspect.py", "_check_inside"),
}
#: Where the reason is computed: recount.py's ``_loss`` asks ``_loss_reason`` (element loss or not),
#: whose returned literals are checked here too.
COMPUTED = {("agent/export/recount.py", "_loss"): "_loss_reason"}


# --- the table ----------------------------------------------------------------------------------------


def spec_table() -> dict[str, str]:
    """docs/dataset.md "Reason codes": reason -> stage, every code of every row."""
    text = SPEC.read_text(encoding="utf-8")
    section = text.split("\n## Reason codes\n", 1)[1].split("\n## ", 1)[0]
    table: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not re.fullmatch(r"`[a-z]+`", cells[0]):
            continue
        for code in re.findall(r"`([a-z_]+)`", cells[1]):
            assert code not in table, f"{code} twice in the spec's table"
            table[code] = cells[0].strip("`")
    return table


def test_the_reasons_are_exactly_the_specs_table() -> None:
    table = spec_table()
    assert len(table) == 30  # the spec's 28 rows, one of them with three codes
    assert table == REASONS
    assert list(REASONS) == list(table)  # in the spec's order, too
    assert tuple(dict.fromkeys(REASONS.values())) == STAGE_ORDER


def test_samples_stages_are_the_tables() -> None:
    assert {reason: REASONS[reason] for reason in samples.STAGES} == samples.STAGES
    refused = samples.SampleRefused("image_invalid", "step 3's image is not its frame")
    assert (refused.reason, refused.stage, refused.session, refused.volunteer) == (
        "image_invalid",
        "dataset",
        None,
        None,
    )
    assert isinstance(refused, ExportError) and str(refused) == "step 3's image is not its frame"


def test_an_export_error_without_a_code_is_no_refusal() -> None:
    plain = ExportError("cannot write the bundle")
    assert (plain.reason, plain.stage, plain.session, plain.volunteer) == (NOT_A_REFUSAL, "", None, None)
    assert NOT_A_REFUSAL not in REASONS and stage_of(NOT_A_REFUSAL) == ""
    assert ExportError("x", reason="member_hash").stage == "tar"
    assert ExportError("x", reason="member_hash", stage="other").stage == "other"


def test_a_refusal_crosses_a_process_boundary_whole() -> None:
    """A build's worker hands the refusal to its driver pickled: code, stage, session, volunteer."""
    error = ExportError("b is not a valid optin bundle: ...", reason="member_hash")
    error.session, error.volunteer = SESSION, "ab" * 16
    back = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object
    assert (str(back), back.reason, back.stage, back.session, back.volunteer) == (
        str(error),
        "member_hash",
        "tar",
        SESSION,
        "ab" * 16,
    )
    sample = samples.SampleRefused("step_invalid", "step 2 ...")
    sample.session = SESSION
    again = pickle.loads(pickle.dumps(sample))  # noqa: S301 - our own object
    assert type(again) is samples.SampleRefused
    assert (str(again), again.reason, again.stage, again.session) == (
        "step 2 ...",
        "step_invalid",
        "recount",
        SESSION,
    )


# --- every raise site ---------------------------------------------------------------------------------


def refusing_classes() -> frozenset[str]:
    """ExportError and every subclass the agent defines (the modules that define them are imported)."""
    names, todo = set(), [ExportError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return frozenset(names)


def _functions(tree: ast.AST) -> Iterator[tuple[str, ast.AST]]:
    """Every node with the name of the innermost function it is in (``""`` at module level)."""

    def walk(node: ast.AST, function: str) -> Iterator[tuple[str, ast.AST]]:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            yield inner, child
            yield from walk(child, inner)

    yield from walk(tree, "")


def _called(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _returned_literals(tree: ast.AST, function: str) -> list[Any]:
    """Every constant a ``return`` of ``function`` can give (through a conditional expression)."""
    found: list[Any] = []
    for name, node in _functions(tree):
        if name == function and isinstance(node, ast.Return) and node.value is not None:
            todo = [node.value]
            while todo:
                value = todo.pop()
                if isinstance(value, ast.IfExp):
                    todo += [value.body, value.orelse]
                else:
                    found.append(value.value if isinstance(value, ast.Constant) else ast.dump(value))
    return found


def problems(source: str, path: str, classes: frozenset[str]) -> list[str]:
    """What is wrong with the reason codes of ``source``'s refusals (``path`` as in :data:`CHECKED`)."""
    tree = ast.parse(source)
    out: list[str] = []
    for function, node in _functions(tree):
        where = f"{path}:{getattr(node, 'lineno', '?')} (in {function or 'the module'})"
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Name) and node.exc.id in classes:
            out.append(f"{where}: raises {node.exc.id} without a message or a reason")
        if not (isinstance(node, ast.Call) and _called(node) in classes | REFUSING_HELPERS):
            continue
        if any(k.arg is None for k in node.keywords):
            out.append(f"{where}: {_called(node)}(**...) hides its reason")
            continue
        value = next((k.value for k in node.keywords if k.arg == "reason"), None)
        if value is None:
            out.append(f"{where}: {_called(node)}(...) has no reason=")
        elif problem := _reason_problem(value, tree, path, function):
            out.append(f"{where}: {problem}")
    return out


def _reason_problem(value: ast.expr, tree: ast.AST, path: str, function: str) -> str | None:
    """Why ``reason=value`` in ``function`` is not a code (None: it is one)."""
    if isinstance(value, ast.Constant):
        return None if value.value in REASONS else f"reason={value.value!r} is not a code of docs/dataset.md"
    if isinstance(value, ast.Name) and value.id == "NOT_A_REFUSAL":
        return None if (path, function) in NOT_REFUSALS else "NOT_A_REFUSAL where a bundle is checked"
    if isinstance(value, ast.Name) and value.id == "reason":
        ok = (path, function) in FORWARDERS
        return None if ok else "reason=reason outside a function that forwards its own code"
    if isinstance(value, ast.Call) and COMPUTED.get((path, function)) == _called(value):
        literals = _returned_literals(tree, _called(value))
        ok = bool(literals) and all(v in REASONS for v in literals)
        return None if ok else f"{_called(value)} may return {literals}, not only codes"
    return f"reason={ast.unparse(value)} is not a code literal"


@pytest.mark.parametrize("path", CHECKED)
def test_every_refusal_names_a_code_from_the_spec(path: str) -> None:
    source = (ROOT / path).read_text(encoding="utf-8")
    assert problems(source, path, refusing_classes()) == []


def test_the_checked_modules_do_refuse_with_codes() -> None:
    """The scan sees the sites it is about (a scanner that finds nothing passes nothing)."""
    sites = 0
    for path in CHECKED:
        tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
        sites += sum(
            1
            for _, node in _functions(tree)
            if isinstance(node, ast.Call)
            and any(k.arg == "reason" and isinstance(k.value, ast.Constant) for k in node.keywords)
        )
    assert sites >= 80


PLANTED = {
    "no-reason": "def f():\n    raise ExportError('x')\n",
    "bare-class": "def f():\n    raise ExportError\n",
    "subclass": "def f():\n    raise SampleRefused('x')\n",
    "unknown-code": "def f():\n    raise ExportError('x', reason='bundle_bad')\n",
    "refuse-no-reason": "def f(self):\n    self.refuse('member x is odd')\n",
    "refuse-variable": "def f(self, why):\n    self.refuse('x', reason=why)\n",
    "forwarded-elsewhere": "def g(self, reason):\n    self.refuse('x', reason=reason)\n",
    "same-no-reason": "def f(self):\n    self._same('counts', 1, 2)\n",
    "not-a-refusal-in-a-check": "def _take_member(self):\n    raise ExportError('x', reason=NOT_A_REFUSAL)\n",
    "kwargs": "def f(kw):\n    raise ExportError('x', **kw)\n",
    "computed-elsewhere": "def f(self):\n    self._same('loss', 1, 2, reason=_loss_reason(1, 2))\n",
}


@pytest.mark.parametrize("source", PLANTED.values(), ids=PLANTED.keys())
def test_the_scan_finds_a_planted_refusal_without_a_code(source: str) -> None:
    assert problems(source, "agent/export/bundle_checks.py", refusing_classes()) != []


def test_the_scan_accepts_the_allowed_forms() -> None:
    source = (
        "def f(self):\n    self.refuse('x', HOSTILE_FIX, reason='member_name')\n"
        "def refuse(self, what, fix='', *, reason):\n    raise ExportError(what, reason=reason)\n"
    )
    assert problems(source, "agent/export/bundle_checks.py", refusing_classes()) == []
    computed = (
        "def _loss(self):\n    self._same('loss', 1, 2, reason=_loss_reason(1, 2))\n"
        "def _loss_reason(a, b):\n    return 'elements_invalid' if a else 'recount_mismatch'\n"
    )
    assert problems(computed, "agent/export/recount.py", refusing_classes()) == []
    wrong = computed.replace("'recount_mismatch'", "'loss_differs'")
    assert problems(wrong, "agent/export/recount.py", refusing_classes()) != []


# --- real bundles -------------------------------------------------------------------------------------

LABEL = Path("incoming") / f"{SESSION}.optin.tar.age"
V2_ID = signing.volunteer_id(VOLUNTEER, STUDY)


@dataclass(frozen=True)
class Case:
    """A broken bundle's plaintext tar, its code, a word of its message, and whether the refusal
    came after the signature and the id were checked (then it names session and volunteer)."""

    tar: Callable[[], bytes]
    reason: str
    match: str
    vouched: bool


def _tar(entries: list[Entry]) -> bytes:
    return tar_of(entries)


def _edit(name: str, entries: list[Entry], **changes: Any) -> list[Entry]:
    return [replace(e, **changes) if e.name == f"{SESSION}/{name}" else e for e in entries]


def _flipped() -> bytes:
    members = sample_members()
    data = bytearray(members["000001.json"])
    data[5] ^= 1
    return _tar(_edit("000001.json", entries_for(members), data=bytes(data)))


def _resigned(members: dict[str, bytes] | None = None, /, **fields: Any) -> bytes:
    """A bundle whose manifest says ``fields``, hashed and signed by the volunteer."""
    members = members or sample_members()
    return _tar(entries_for(members, manifest_for(members, **fields)))


def _events(records: list[dict[str, Any]]) -> dict[str, bytes]:
    return {**sample_members(), "events.jsonl": lines(records)}


def _without(name: str) -> bytes:
    return _tar([e for e in entries_for(sample_members()) if not e.name.endswith(name)])


def _first(entries: list[Entry]) -> list[Entry]:
    return [entries[2], *entries[:2], *entries[3:]]


def _overlapping_tasks() -> bytes:
    events = v3_events()
    events.insert(3, {**events[1], "task_id": "rename", "t_ns": 2_050_000_000})
    return v3_bundle(events=events)


_LOST = {"found": 2, "not_accessible": 0, "no_element": 0, "failed": 0, "late": 0, "dropped": 2}

CASES: dict[str, Case] = {
    "tar_header/symlink": Case(
        lambda: _tar(
            [
                *[e for e in entries_for(sample_members()) if not e.name.endswith("frames.jsonl")],
                Entry(f"{SESSION}/frames.jsonl", type=tarfile.SYMTYPE, linkname="/etc/passwd"),
            ]
        ),
        "tar_header",
        "is a symbolic link",
        True,
    ),
    "tar_header/sparse": Case(
        lambda: _tar(
            [
                *[e for e in entries_for(sample_members()) if not e.name.endswith("000002.webp")],
                Entry(f"{SESSION}/frames/000002.webp", b"x", pax={"GNU.sparse.realsize": str(1 << 30)}),
            ]
        ),
        "tar_header",
        "sparse member",
        True,
    ),
    "tar_header/not-a-tar": Case(lambda: b"\x01garbage" * 200, "tar_header", "not a complete tar", False),
    "member_name/dotdot": Case(
        lambda: _tar([*entries_for(sample_members()), Entry("../evil", b"x")]),
        "member_name",
        r"contains '\.\.'",
        True,
    ),
    "member_name/twice-before-the-signature": Case(
        lambda: _tar([entries_for(sample_members())[0], *entries_for(sample_members())]),
        "member_name",
        "'manifest.json' appears twice",
        False,
    ),
    "member_name/listed": Case(
        lambda: _resigned({**sample_members(), "frames": b"x"}),
        "member_name",
        "members lists 'frames', not a name",
        True,
    ),
    "member_size": Case(
        lambda: _tar(
            _edit(
                "events.jsonl",
                entries_for(sample_members()),
                data=sample_members()["events.jsonl"] + b"\n",
            )
        ),
        "member_size",
        "bytes in the tar, but the manifest says",
        True,
    ),
    "member_hash": Case(_flipped, "member_hash", "does not match its SHA-256", True),
    "member_unlisted": Case(
        lambda: _tar([*entries_for(sample_members()), Entry(f"{SESSION}/frames/000009.webp", b"abc")]),
        "member_unlisted",
        "is not listed",
        True,
    ),
    "member_missing": Case(lambda: _without("events.jsonl"), "member_missing", "is missing", True),
    "manifest_order/first": Case(
        lambda: _tar(_first(entries_for(sample_members()))),
        "manifest_order",
        "first member is '000000.json'",
        False,
    ),
    "manifest_order/third": Case(
        lambda: v3_bundle(
            order=["000000.json", "tasks.jsonl", "000001.json", "events.jsonl", "frames.jsonl"]
        ),
        "manifest_order",
        "the third member is '000000.json'",
        True,
    ),
    "manifest_json": Case(
        lambda: _tar(entries_for(sample_members(), manifest_bytes=b"[1, 2]")),
        "manifest_json",
        "not a JSON object",
        False,
    ),
    "manifest_json/duplicate-key": Case(
        lambda: _tar(entries_for(sample_members(), manifest_bytes=b'{"schema": "a", "schema": "a"}')),
        "manifest_json",
        "no duplicate keys",
        False,
    ),
    "schema_unknown": Case(
        lambda: _resigned(schema="optin-bundle/0"), "schema_unknown", "which this optin does not read", False
    ),
    "session_mismatch": Case(
        lambda: _tar(entries_for(sample_members(), session="20990101T000000Z-deadbeef")),
        "session_mismatch",
        "but the manifest's session is",
        False,
    ),
    "signature_invalid": Case(
        lambda: _tar(entries_for(sample_members(), signer=bytes(32))),
        "signature_invalid",
        "manifest.sig does not verify",
        False,
    ),
    "signature_invalid/size": Case(
        lambda: _tar(_edit("manifest.sig", entries_for(sample_members()), data=b"\0" * 65)),
        "signature_invalid",
        "manifest.sig is 65 bytes",
        False,
    ),
    "volunteer_id_mismatch": Case(
        lambda: _tar(forged_volunteer(sample_members())),
        "volunteer_id_mismatch",
        "is not the id of the key that signed it",
        False,
    ),
    "manifest_types/malformed-id": Case(
        lambda: _resigned(volunteer={**manifest_for(sample_members())["volunteer"], "id": "0" * 31}),
        "manifest_types",
        "volunteer.id is not 32",
        False,
    ),
    "manifest_types/members": Case(lambda: _resigned(members=[]), "manifest_types", "no members table", True),
    "manifest_types/stated": Case(
        lambda: _resigned(agent_version=1), "manifest_types", "agent_version is not a string", True
    ),
    "recount_mismatch/counts": Case(
        lambda: _resigned(counts={**SAMPLE_COUNTS, "button_press": 2}),
        "recount_mismatch",
        "counts is",
        True,
    ),
    "recount_mismatch/steps": Case(
        lambda: _resigned(steps={"version": 1, "count": 4, "by_action": {"click": 1, "type": 1, "key": 1}}),
        "recount_mismatch",
        "steps say 4",
        True,
    ),
    "recount_mismatch/loss": Case(
        lambda: _resigned(loss={**SAMPLE_LOSS, "pauses": 1}), "recount_mismatch", "loss is", True
    ),
    "stream_invalid": Case(
        lambda: _resigned({**sample_members(), "events.jsonl": b'{"v":1,"k":"marker"\n'}),
        "stream_invalid",
        "line 1 is not a JSON object of version 1",
        True,
    ),
    "stream_invalid/time-order": Case(
        lambda: _resigned(_events(sample_events()[::-1])),
        "stream_invalid",
        "earlier than the line before",
        True,
    ),
    "step_invalid": Case(
        lambda: _resigned({**sample_members(), "000001.json": canonical({"text": "x"})}),
        "step_invalid",
        "not a JSON object with an action",
        True,
    ),
    "step_invalid/v3-keys": Case(
        lambda: v3_bundle(steps=[{k: v for k, v in s.items() if k != "element"} for s in v3_steps()]),
        "step_invalid",
        "has not the keys of a step",
        True,
    ),
    "tasks_invalid/overlap": Case(_overlapping_tasks, "tasks_invalid", "has not ended", True),
    "tasks_invalid/manifest": Case(
        lambda: v3_bundle(tasks=[v3_task(outcome="failed")]),
        "tasks_invalid",
        r"tasks\[0\] is not the task",
        True,
    ),
    "tasks_invalid/tasks-jsonl": Case(
        lambda: v3_bundle(tasks_jsonl=canonical(v3_task(outcome="failed")) + b"\n"),
        "tasks_invalid",
        "tasks.jsonl line 1",
        True,
    ),
    "tasks_invalid/step-task": Case(
        lambda: v3_bundle(steps=v3_steps("other-task")), "tasks_invalid", "names task", True
    ),
    "elements_invalid/step": Case(
        lambda: e_bundle(steps=e_steps({**ELEMENT, "name": "Password"}, FOCUSED)),
        "elements_invalid",
        "has an element but",
        True,
    ),
    "elements_invalid/line": Case(
        lambda: e_bundle(events=[{**e, "at": "hover"} if e["k"] == "element" else e for e in e_events()]),
        "elements_invalid",
        "at or result is not one of",
        True,
    ),
    "elements_invalid/api": Case(
        lambda: e_bundle(elements={"version": 1, "api": "uia"}),
        "elements_invalid",
        "the manifest's elements is",
        True,
    ),
    "elements_invalid/loss": Case(
        lambda: e_bundle(loss={**SAMPLE_LOSS, "elements": {**_LOST, "steps_without": 1}}),
        "elements_invalid",
        "the manifest's loss is",
        True,
    ),
    "recount_mismatch/v3-loss-not-elements": Case(
        lambda: e_bundle(loss={**SAMPLE_LOSS, "pauses": 1, "elements": {**_LOST, "steps_without": 0}}),
        "recount_mismatch",
        "the manifest's loss is",
        True,
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_broken_bundle_is_refused_with_its_code(case: Case) -> None:
    tar = case.tar()
    with pytest.raises(ExportError, match=case.match) as info:
        inspect.check_tar(tar, LABEL)
    error = info.value
    assert (error.reason, error.stage) == (case.reason, REASONS[case.reason]), str(error)
    if case.vouched:
        manifest = canonical_manifest(tar)
        assert (error.session, error.volunteer) == (SESSION, manifest["volunteer"]["id"])
    else:
        assert (error.session, error.volunteer) == (None, None)


def canonical_manifest(tar: bytes) -> dict[str, Any]:
    """The manifest of a hand-made tar (its first member)."""
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        first = archive.next()
        assert first is not None
        data = archive.extractfile(first)
        assert data is not None
        manifest: dict[str, Any] = json.loads(data.read())
    return manifest


def test_the_control_bundles_open() -> None:
    """The cases above break what each names: the same builders unbroken open."""
    for tar in (_tar(entries_for(sample_members())), v3_bundle(), e_bundle()):
        assert inspect.check_tar(tar, LABEL).session == SESSION


def test_an_optin_bundle_1_refusal_names_the_id_its_signature_covers() -> None:
    """optin-bundle/1 ids cannot be bound to their key; the one the valid signature covers is named."""
    members = sample_members()
    manifest = v1_manifest_for(members, duration_s=99.0)
    tar = _tar(entries_for(members, manifest, seed=signing.v1_signing_seed(VOLUNTEER)))
    with pytest.raises(ExportError, match=r"duration_s is 99\.0") as info:
        inspect.check_tar(tar, LABEL)
    assert (info.value.reason, info.value.session, info.value.volunteer) == (
        "recount_mismatch",
        SESSION,
        manifest["volunteer"]["id"],
    )
    assert info.value.volunteer != V2_ID


def test_a_fresh_pseudonym_is_named_as_signed() -> None:
    """A bundle signed by a fresh key under its own id: a later refusal names that id."""
    members = sample_members()
    public = signing.public_key_of_seed(FRESH_SEED)
    volunteer = {"id": signing.id_of_key(STUDY, public), "signing_key": base64.b64encode(public).decode()}
    tar = _tar(
        entries_for(members, manifest_for(members, volunteer=volunteer, duration_s=1.0), seed=FRESH_SEED)
    )
    with pytest.raises(ExportError) as info:
        inspect.check_tar(tar, LABEL)
    assert (info.value.reason, info.value.volunteer) == ("recount_mismatch", volunteer["id"])


# --- the age layer, through open_bundle_stream (what a build reads) ------------------------------------


def _stream(blob: bytes, identities: list[Any] | None = None) -> ExportError:
    with pytest.raises(ExportError) as info:
        inspect.open_bundle_stream(io.BytesIO(blob), len(blob), LABEL, identities or [STUDY_KEY])
    return info.value


def _many_stanzas() -> bytes:
    others = [x25519.Identity.generate().to_public() for _ in range(63)]  # + grease: 65
    sealed: bytes = pyrage.encrypt(b"x", [*others, STUDY_KEY.to_public()])
    return sealed


AGE_CASES: dict[str, tuple[Callable[[], bytes], str, str]] = {
    "not_age/text": (lambda: b"hello, this is text\n" * 40, "not_age", "is not an age file"),
    "not_age/plain-tar": (lambda: _tar(entries_for(sample_members())), "not_age", "already decrypted"),
    "age_armored": (
        lambda: b"-----BEGIN AGE ENCRYPTED FILE-----\nYWdl\n-----END AGE ENCRYPTED FILE-----\n",
        "age_armored",
        "ASCII-armored",
    ),
    "age_header_limits/stanzas": (_many_stanzas, "age_header_limits", "65 recipient stanzas"),
    "age_header_limits/long": (
        lambda: b"age-encryption.org/v1\n-> X25519 " + b"A" * 43 + b"\n" + (b"B" * 64 + b"\n") * 400,
        "age_header_limits",
        "age header longer than",
    ),
    "not_a_recipient": (
        lambda: seal(b"x", x25519.Identity.generate().to_public()),
        "not_a_recipient",
        "not one of the bundle's recipients",
    ),
    "decrypt_failed": (lambda: seal(_tar(entries_for(sample_members())))[:-20], "decrypt_failed", "damaged"),
}


@pytest.mark.parametrize(("make", "reason", "match"), AGE_CASES.values(), ids=AGE_CASES.keys())
def test_the_age_layer_refuses_with_its_code(make: Callable[[], bytes], reason: str, match: str) -> None:
    error = _stream(make())
    assert re.search(match, str(error)), str(error)
    assert (error.reason, error.stage, error.session, error.volunteer) == (reason, "age", None, None)


def test_a_streamed_bundle_refused_after_its_signature_names_session_and_volunteer() -> None:
    error = _stream(seal(_flipped()))
    assert (error.reason, error.stage, error.session, error.volunteer) == (
        "member_hash",
        "tar",
        SESSION,
        V2_ID,
    )
    assert "does not match its SHA-256" in str(error)
    forged = _stream(seal(_tar(forged_volunteer(sample_members()))))
    assert (forged.reason, forged.session, forged.volunteer) == ("volunteer_id_mismatch", None, None)


def test_what_is_no_bundle_refusal_has_no_code(tmp_path: Path) -> None:
    """optin inspect's path that is no file, and unpack's output, refuse no bundle: no code."""
    with pytest.raises(ExportError, match="does not exist") as info:
        inspect.open_bundle(tmp_path / "gone.optin.tar.age", [STUDY_KEY])
    assert (info.value.reason, info.value.stage) == (NOT_A_REFUSAL, "")
    with pytest.raises(ExportError, match="not a regular file") as info:
        inspect.open_bundle(tmp_path, [STUDY_KEY])
    assert info.value.reason == NOT_A_REFUSAL
