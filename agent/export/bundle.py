"""Write ``<session>.optin.tar.age``: a redacted session as steps, signed, encrypted to the study.

docs/export-format.md specifies the bundle (schema ``optin-bundle/3``).  In short: an age
file (readable with the standard ``age -d``) holding a tar in WebDataset layout — one sample
per step (``NNNNNN.json``, every one with the same keys, its task among them, + the pre-action
frame ``NNNNNN.webp``) — plus the volunteer's tasks (``tasks.jsonl``), the whole redacted
event stream (``events.jsonl``, ``frames.jsonl``, ``frames/NNNNNN.webp`` for frames no step
uses), ``manifest.json`` (canonical JSON: schema, versions, pseudonymous volunteer id,
consent receipt, redaction evidence, tasks, steps, counts, loss, the SHA-256 and size of every member)
and ``manifest.sig`` (the volunteer's Ed25519 signature over the manifest's bytes, with their key
for this study: the volunteer id is a hash of that key, agent/store/signing.py).  The counts and
summaries the manifest states are computed by agent/export/counts.py, which the collector's
reader runs again over the members; the task list and each step's task by
agent/export/task_list.py, likewise; each step's ``element`` by agent/steps.py (the ``element``
lines, redacted like window titles by agent/redact/policy.py), and ``elements`` and
``loss.elements`` by counts.py.

Export runs in three parts that the review window shares: :func:`prepare` (decrypt,
check consent, redact, find the steps — in memory), :func:`plan_tar` / :func:`build_tar`
(pure: the tar's members, or its bytes) and :func:`export_session` (approval, encryption,
the one file written, the study's after-export rule).  Decrypted data never touches the
disk; the bundle is written to a temporary name and renamed.

Export streams: its memory does not grow with the session's frames.  ``prepare`` reads the
session with its frames left in the store (only their hashes and sizes are kept), OCR
decodes one frame at a time and keeps only the boxes of a masked one and the hash of its
masked encoding (agent/export/frame_data.py); the tar is produced a member at a time
(:func:`tar_chunks`, byte for byte what :mod:`tarfile` writes) and age-encrypted into the
file as it is produced (agent/export/sealed_file.py).  The cost: each frame's segment is
decrypted again to write it, and a frame stored as a patch is rebuilt again from the store for
each pass that needs its pixels (OCR's read, the masks); it is encoded once, after its masks are
known (agent/store/reader.py, ``RebuiltFrame``), and what the export encodes waits in its
encrypted spool until the tar takes it.

No hostname, user name, MAC address or home path goes into a bundle: tar members carry no
owner names and a fixed mtime, and the redaction replaces this computer's names wherever
captured text holds them (agent/redact/local_names.py).
"""

from __future__ import annotations

import base64
import hashlib
import tarfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import __version__, consent
from agent.canonical_json import canonical
from agent.errors import ConsentRequired, ExportError, StoreCorrupt, StoreFormatError, UsageError
from agent.events import ElementSeen, Frame, Marker, Redacted, TaskEnd, TaskStart, to_dict
from agent.export import approval, counts, deliveries, frame_data, task_list
from agent.export.sealed_file import seal_to_file
from agent.paths import Dirs
from agent.redact import policy
from agent.redact.local_names import LocalNames
from agent.redact.screen import TesseractOcr
from agent.steps import STEPS_VERSION, Step, steps
from agent.store import keys, signing
from agent.store.reader import read_session
from agent.study import MAX_RECIPIENTS, Study

#: Version of the bundle layout (docs/export-format.md).
BUNDLE_SCHEMA = "optin-bundle/3"
#: Version of the element rules (docs/export-format.md, the UI element of a step).
ELEMENTS_VERSION = 1
#: The keys of every step member, in optin-bundle/3 (one table for the writer and the reader).
STEP_KEYS = counts.STEP_KEYS
#: Redaction counts an optin-bundle/3 manifest always states (possibly ``{}``).
STATED_COUNTS = ("instructions", "elements")
#: Steps, and frames, a bundle can hold: member names have six digits.
MAX_NUMBERED = 1_000_000

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ExportResult:
    session_id: str
    path: Path
    bytes: int
    sha256: str
    steps: int
    events: int
    frames: int
    deleted_locally: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "session": self.session_id,
            "path": str(self.path),
            "bytes": self.bytes,
            "sha256": self.sha256,
            "steps": self.steps,
            "events": self.events,
            "frames": self.frames,
            "deleted_locally": self.deleted_locally,
        }


@dataclass(frozen=True)
class Prepared:
    """One session as it would be exported: redacted events (frames included, time order) and steps."""

    session_id: str
    events: list[Any]
    steps: list[Step]
    redaction: policy.Redaction
    receipt: dict[str, Any]
    problems: list[str]

    def summary(self) -> dict[str, Any]:
        """What the volunteer approves and the collector is told: counts, never content."""
        frames = sum(1 for e in self.events if isinstance(e, Frame))
        return {
            "session": self.session_id,
            "duration_s": duration_s(self.events),
            "steps": len(self.steps),
            "by_action": by_action(self.steps),
            "events": len(self.events) - frames,
            "frames": frames,
            "redactions": {w: sum(c.values()) for w, c in sorted(self.redaction.counts.items())},
            "loss": loss(self.events, self.problems, self.redaction.frames_left_out),
        }


def parse_recipient(text: str) -> Any:
    """An age X25519 recipient, or a UsageError that says what is wrong."""
    from pyrage import x25519

    try:
        return x25519.Recipient.from_str(text.strip())
    except Exception as exc:  # pyrage raises its own RecipientError/ValueError variants
        msg = f"--recipient {text!r} is not an age public key (it should start with age1...)"
        raise UsageError(msg) from exc


def prepare(
    dirs: Dirs,
    session_id: str,
    study: Study,
    identity: bytes,
    *,
    progress: Progress | None = None,
    local: LocalNames | None = None,
    lazy_frames: bool = False,
) -> Prepared:
    """Decrypt, check consent, redact (OCR included) and segment one session, in memory.

    :param local: this computer's names to redact (default: read from this computer).
    :param lazy_frames: keep no frame's bytes (a streaming export): each frame's ``data`` says
        where its bytes are and their hash (agent/export/frame_data.py); default: every frame's
        bytes in memory (the review window shows them).
    :raises ConsentRequired: the session's consent is no longer in force.
    :raises RedactorUnavailable: the study requires OCR and no engine is installed.
    """
    try:
        data = read_session(dirs, session_id, identity, lazy_frames=lazy_frames)
    except (StoreCorrupt, StoreFormatError) as exc:
        msg = (
            f"session {session_id} cannot be exported: {exc}. Nothing was written. Fix: `optin verify "
            f"{session_id}` lists what is damaged; restore the session from a backup, or delete it with "
            f"`optin sessions delete {session_id}`"
        )
        raise type(exc)(msg, offset=exc.offset) from None
    start = next((e for e in data.events if isinstance(e, Marker) and e.marker == "session_start"), None)
    receipt = consent.current_receipt(dirs)
    if start is None or receipt is None or start.detail.get("consent_sha256") != receipt.text_sha256:
        msg = (
            f"session {session_id} cannot be exported: the consent it was recorded under is not in force "
            "(withdrawn, replaced or unreadable). Nothing was written. Fix: if you agree to the study, agree "
            "again (optin consent show, then optin consent grant); a session recorded under an earlier "
            "consent text cannot be exported under a new one"
        )
        raise ConsentRequired(msg)
    if not receipt.covers(study):
        # The study file changed since consent (another recipient, another policy): the volunteer
        # has not agreed to send anything under these terms.
        msg = (
            f"session {session_id} cannot be exported: {receipt.renewal_reason(study)}. Nothing was written. "
            "Fix: read the study again and agree to it (optin consent show, then optin consent grant)."
        )
        raise ConsentRequired(msg)
    rules = policy.Policy.from_study(study)
    engine = TesseractOcr.find() if rules.ocr != "off" else None
    redaction = policy.redact_session(
        data.events,
        rules,
        ocr=engine,
        progress=progress,
        local=LocalNames.of_this_machine() if local is None else local,
    )
    events = task_records_kept(sorted(redaction.events, key=lambda e: e.t_ns), session_id)
    frame_data.encode_rebuilt(events)  # frames rebuilt from patches and not masked: encoded once, now
    return Prepared(session_id, events, steps(events), redaction, receipt.to_json(), data.problems)


def export_session(
    dirs: Dirs,
    session_id: str,
    out_dir: Path,
    study: Study,
    recipients: list[str] | None = None,
    *,
    approve: bool = False,
    on_approve: Callable[[dict[str, Any]], None] | None = None,
    progress: Progress | None = None,
    local: LocalNames | None = None,
    identity: bytes | None = None,
) -> ExportResult:
    """Redact, pack, sign and encrypt one session the volunteer approved.

    :param identity: the volunteer's unlocked identity (the review window has it); default: unlock.

    :param approve: approve it now, as it is (``optin export --approve``); ``on_approve``
        is called with the summary approved, before anything is written.
    :param progress: called with (frames done, frames in all) while frames are OCR-masked.
    :raises NotApproved: not approved (and ``approve`` not given), or changed since.
    :raises ConsentRequired: the session's consent is no longer in force.
    :raises RedactorUnavailable: the study requires OCR and no engine is installed.
    :raises ExportError: the output cannot be written.
    """
    age_recipients = [parse_recipient(r) for r in (recipients or list(study.recipients))]
    if len(age_recipients) > MAX_RECIPIENTS:
        msg = (
            f"a bundle can be encrypted to at most {MAX_RECIPIENTS} recipients, not {len(age_recipients)} "
            "(readers refuse larger age headers). Fix: list fewer recipients in the study file"
        )
        raise UsageError(msg)
    policy_sha = policy.Policy.from_study(study).sha256()
    if not approve:
        approval.require(dirs, session_id, policy_sha)  # before the slow part
    if identity is None:
        identity = keys.load_identity(dirs)
    prepared = prepare(dirs, session_id, study, identity, progress=progress, local=local, lazy_frames=True)
    if approve:
        summary = prepared.summary()
        if on_approve is not None:
            on_approve(summary)
        approval.approve(dirs, session_id, policy_sha, summary)
    plan = plan_tar(prepared, identity, study.id)
    from pyrage import encrypt_io

    def encrypt(reader: Any, writer: Any) -> None:  # age, streamed: the tar never whole in memory
        encrypt_io(reader, writer, age_recipients)

    path, size, digest = seal_to_file(out_dir, f"{session_id}.optin.tar.age", plan.chunks(), encrypt)
    deliveries.record_export(dirs, session_id, path, size=size, sha256=digest, study=study.id)
    delete = study.retention_after_export == "delete"
    if delete:
        from agent.store.retention import shred_session
        from agent.store.safe_fs import UnsafeEntry

        try:
            shred_session(dirs, session_id, reason="exported")
        except UnsafeEntry as exc:  # a link, FIFO or hard link in the session: left, never followed (P8)
            lead = (
                f"the bundle was written to {path}, but session {session_id} was not deleted completely "
                "as the study asks"
            )
            raise exc.with_lead(lead) from None
    else:
        approval.mark_exported(dirs, session_id, path, digest)
    frames = sum(1 for e in prepared.events if isinstance(e, Frame))
    return ExportResult(
        session_id,
        path,
        size,
        digest,
        len(prepared.steps),
        len(prepared.events) - frames,
        frames,
        delete,
    )


# --- the tar (pure) ----------------------------------------------------------------------------------


def task_records_kept(events: list[Any], session_id: str) -> list[Any]:
    """``events`` without the ``task_end`` records whose ``task_start`` is not before them.

    A cut that took a task's start leaves the task out (docs/export-format.md: a writer never
    writes a ``task_end`` without its ``task_start``; the task's steps have no task).

    :raises ExportError: the session holds a task that ended ``abandoned`` (its deletion failed).
    """
    if any(isinstance(e, TaskEnd) and e.outcome == "abandoned" for e in events):
        msg = (
            f"session {session_id} holds a task you gave up, which is never exported; nothing was written. "
            f"Fix: delete the session (optin sessions delete {session_id})"
        )
        raise ExportError(msg)
    running: str | None = None
    kept: list[Any] = []
    for ev in events:
        if isinstance(ev, TaskStart):
            running = ev.task_id
        elif isinstance(ev, TaskEnd):
            if ev.task_id != running:
                continue
            running = None
        kept.append(ev)
    return kept


def build_tar(prepared: Prepared, identity: bytes, study_id: str) -> bytes:
    """The bundle's plaintext tar (``optin-bundle/3``), signed with the volunteer's key for ``study_id``.

    In memory (tests, the study's synthetic bundles): :func:`export_session` writes the same
    bytes as a stream (:meth:`TarPlan.chunks`).

    :raises ExportError: the consent receipt is for another study, the session has more steps or
        frames than member names can number, or its tasks are not a list a bundle can hold.
    """
    return b"".join(plan_tar(prepared, identity, study_id).chunks())


#: A member's bytes: in memory, or a frame whose bytes are loaded when the member is written.
Blob = bytes | Frame


@dataclass(frozen=True)
class TarPlan:
    """A bundle's tar before it is written: every member in order, the frames' bytes not loaded.

    The manifest (first) lists every member's SHA-256 and size, so they are known before the
    first byte is written: the json members are small and in memory; a frame's hash is known
    without its bytes (the reader hashed them, the masker hashed its masked encoding:
    agent/export/frame_data.py), and every frame loaded to be written is checked against it.
    """

    session_id: str
    members: dict[str, Blob]

    def chunks(self) -> Iterator[bytes]:
        """The tar's bytes, a member at a time (one frame's bytes in memory at a time)."""
        return tar_chunks(self.session_id, self.members)


def plan_tar(prepared: Prepared, identity: bytes, study_id: str) -> TarPlan:
    """The members of the bundle's tar (:func:`build_tar`), manifest and signature first.

    :raises ExportError: as :func:`build_tar`.
    """
    if prepared.receipt.get("study_id") != study_id:
        msg = (
            f"session {prepared.session_id} was recorded under consent to another study than {study_id!r}; "
            "nothing was written. Fix: export it with the study it was recorded for"
        )
        raise ExportError(msg)
    events = prepared.events
    frames = sum(1 for e in events if isinstance(e, Frame))
    if max(len(prepared.steps), frames) > MAX_NUMBERED:
        msg = (
            f"session {prepared.session_id} has {len(prepared.steps)} steps and {frames} frames; a bundle "
            f"holds at most {MAX_NUMBERED} of each. Fix: cut the session into parts in the review window"
        )
        raise ExportError(msg)
    elements, element_loss = _elements(prepared)
    line_of, event_lines, frame_rows, tasks, of_step = _stream(prepared)
    members: dict[str, Blob] = {"tasks.jsonl": b"".join(canonical(t) + b"\n" for t in tasks)}
    holder: dict[int, str] = {}  # frames.jsonl line -> first member holding its pixels
    for n, step in enumerate(prepared.steps):
        frame_line = line_of[step.frame] if step.frame is not None else None
        lines_of_step = [line_of[i] for i in step.events if not isinstance(events[i], Frame)]
        record = step_record(step, events, frame_line, lines_of_step, of_step[n])
        members[f"{n:06d}.json"] = canonical(record)
        if step.frame is not None:
            frame = events[step.frame]
            members[f"{n:06d}.{frame.format}"] = frame
            holder.setdefault(line_of[step.frame], f"{n:06d}.{frame.format}")
    members["events.jsonl"] = b"".join(line + b"\n" for line in event_lines)
    frame_lines: list[bytes] = []
    unused: dict[str, Blob] = {}
    for line, (_i, frame) in enumerate(frame_rows):
        name = holder.get(line)
        if name is None:
            name = f"frames/{line:06d}.{frame.format}"
            unused[name] = frame
        fields = {k: v for k, v in to_dict(frame).items() if k != "data"}
        frame_lines.append(canonical({**fields, "member": name}) + b"\n")
    members["frames.jsonl"] = b"".join(frame_lines)
    members.update(unused)
    manifest = canonical(
        _manifest(prepared, identity, study_id, members, tasks, elements=(elements, element_loss))
    )
    signature = signing.sign(identity, study_id, manifest)
    return TarPlan(prepared.session_id, {"manifest.json": manifest, "manifest.sig": signature, **members})


def _stream(
    prepared: Prepared,
) -> tuple[dict[int, int], list[bytes], list[tuple[int, Frame]], list[dict[str, Any]], list[str | None]]:
    """The lines of ``events.jsonl`` and the frames, each event's line, the tasks and each step's task.

    :raises ExportError: the tasks are not a list a bundle can hold (task_list.py says why).
    """
    events = prepared.events
    line_of: dict[int, int] = {}  # index into events -> line of events.jsonl or frames.jsonl
    event_lines: list[bytes] = []
    frame_rows: list[tuple[int, Frame]] = []
    lines = task_list.TaskLines()
    try:
        for i, ev in enumerate(events):
            if isinstance(ev, Frame):
                line_of[i] = len(frame_rows)
                frame_rows.append((i, ev))
                continue
            line_of[i] = len(event_lines)
            record = ev.to_dict() if isinstance(ev, Redacted) else to_dict(ev)
            if isinstance(ev, TaskStart) and ev.source == "volunteer" and not ev.instruction:
                record["instruction"] = None  # dropped (typed_text = "drop"): null, never a made-up text
            lines.add(record)
            event_lines.append(canonical(record))
        last_t = max((e.t_ns for e in events), default=0)
        terms = prepared.receipt.get("terms")
        starts = [s.t_start_ns for s in prepared.steps]
        tasks, of_step = lines.tasks(last_t, terms, starts, [s.action for s in prepared.steps])
    except ValueError as exc:
        msg = (
            f"session {prepared.session_id} cannot be exported: {exc}. Nothing was written. Fix: cut the "
            "task out in the review window, or delete the session"
        )
        raise ExportError(msg) from None
    return line_of, event_lines, frame_rows, tasks, of_step


def _elements(prepared: Prepared) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The manifest's ``elements`` and ``loss.elements`` (agent/export/counts.py, as the reader).

    :raises ExportError: the session's element records contradict its ``session_start`` marker.
    """
    events = prepared.events
    markers = [to_dict(e) for e in events if isinstance(e, Marker)]
    results = Counter(e.result for e in events if isinstance(e, ElementSeen))
    without = sum(1 for s in prepared.steps if s.element is None)
    try:
        api = counts.elements_api(markers)
        lost = counts.element_loss(api, results, markers, without)
    except ValueError as exc:
        msg = (
            f"session {prepared.session_id} cannot be exported: {exc}. Nothing was written. Fix: report this "
            "to the study (the recorder wrote element lookups it did not announce)"
        )
        raise ExportError(msg) from None
    return {"version": ELEMENTS_VERSION, "api": api}, lost


def step_record(
    step: Step, events: Sequence[Any], frame: int | None, lines: list[int], task: str | None
) -> dict[str, Any]:
    """A step member of ``optin-bundle/3``: every key of :data:`STEP_KEYS`, null where it does not apply.

    :param frame: its pre-action frame's ``frames.jsonl`` line; ``lines``: the ``events.jsonl`` lines
        of its events (frames are in none); ``task``: its task's id.
    """
    given = step.to_json(events)
    record: dict[str, Any] = dict.fromkeys(STEP_KEYS)
    record.update({k: v for k, v in given.items() if k in record})
    record["keys"] = list(step.keys)
    record["frame"] = frame
    record["events"] = lines
    record["task"] = task
    record["element"] = None if step.element is None else dict(step.element)
    return record


def _manifest(
    prepared: Prepared,
    identity: bytes,
    study_id: str,
    members: dict[str, Blob],
    tasks: list[dict[str, Any]],
    *,
    elements: tuple[dict[str, Any], dict[str, Any] | None],
) -> dict[str, Any]:
    """The manifest; ``elements``: its ``elements`` and ``loss.elements`` (:func:`_elements`)."""
    events = prepared.events
    redaction = prepared.redaction.evidence()
    redaction["counts"] = {**{where: {} for where in STATED_COUNTS}, **redaction["counts"]}
    return {
        "schema": BUNDLE_SCHEMA,
        "agent_version": __version__,
        "session": prepared.session_id,
        "volunteer": {
            "id": signing.volunteer_id(identity, study_id),
            "signing_key": base64.b64encode(signing.public_signing_key(identity, study_id)).decode("ascii"),
        },
        "consent": prepared.receipt,
        "redaction": redaction,
        "tasks": tasks,
        "elements": elements[0],
        "steps": {
            "version": STEPS_VERSION,
            "count": len(prepared.steps),
            "by_action": by_action(prepared.steps),
        },
        "counts": counts.kind_counts(e.KIND for e in events),
        "loss": {
            **loss(events, prepared.problems, prepared.redaction.frames_left_out),
            "elements": elements[1],
        },
        "duration_s": duration_s(events),
        "members": {name: _digest(blob) for name, blob in sorted(members.items())},
    }


def _digest(blob: Blob) -> dict[str, Any]:
    """A member's ``sha256`` and ``size`` for the manifest (a frame's without loading it)."""
    if isinstance(blob, bytes):
        return {"sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob)}
    sha256, size = frame_data.digest(blob)
    return {"sha256": sha256, "size": size}


def tar_chunks(session_id: str, members: dict[str, Blob]) -> Iterator[bytes]:
    """A POSIX (pax) tar of ``members`` under ``session_id/``, byte for byte what :mod:`tarfile`
    writes for them (mode 0644, mtime 0, no owner names), produced a member at a time.

    :raises ExportError: a frame's bytes are not those its hash said (it changed on the way).
    """
    offset = 0
    for name, blob in members.items():
        data = blob if isinstance(blob, bytes) else frame_data.frame_data(blob)
        info = tarfile.TarInfo(f"{session_id}/{name}")
        info.size = len(data)
        info.mode = 0o644
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        header = info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")
        padding = -len(data) % tarfile.BLOCKSIZE
        yield header
        yield data
        if padding:
            yield tarfile.NUL * padding
        offset += len(header) + len(data) + padding
    end = tarfile.NUL * (2 * tarfile.BLOCKSIZE)  # tarfile's close(): two zero blocks, then whole records
    offset += len(end)
    yield end + tarfile.NUL * (-offset % tarfile.RECORDSIZE)


def by_action(found: Sequence[Step]) -> dict[str, int]:
    """How many steps of each action, sorted by action."""
    return dict(sorted(Counter(s.action for s in found).items()))


def duration_s(events: Sequence[Any]) -> float:
    """Seconds from the first to the last event (0 for fewer than two)."""
    return counts.duration_s(e.t_ns for e in events)


def loss(events: Sequence[Any], problems: Sequence[str], frames_left_out: int) -> dict[str, Any]:
    """What the bundle lacks and why (P9): drops, gaps (pauses, cuts) and store problems.

    Counts from the ``session_stop`` marker are None when the session has no clean stop.
    """
    return counts.loss([to_dict(e) for e in events if isinstance(e, Marker)], problems, frames_left_out)
